"""Read time-stamped interaction logs into one event table.

Every reader returns a :class:`pandas.DataFrame` with the columns

* ``user`` (str), ``item`` (str): identifiers as written in the file,
* ``timestamp`` (int64): seconds since the Unix epoch (UTC; fractional seconds are floored),

in file order (sorting by time is the job of :mod:`newsrank.seq.sequences`), plus ``rating``
(float64) where the file has ratings (MovieLens, or a csv with a ``rating`` column): the log
converter uses it to decide what counts as a click.

Formats (``read_events(path, format=...)``):

``csv``
    A header naming a user column (``user``, ``user_id``, ``userId``), an item column (``item``,
    ``item_id``, ``movieId``, ``itemId``) and a time column (``timestamp``, ``time``); a
    ``rating`` column is kept (checked to be a number); other columns are ignored. Times are integer seconds or ISO-8601 strings.
``movielens``
    ``ratings.csv`` (a csv with header ``userId,movieId,rating,timestamp`` or
    ``user_id,item_id,rating,timestamp``), ``u.data`` (ML-100K: tab-separated
    ``user item rating timestamp``, no header) or ``ratings.dat`` (ML-1M/10M:
    ``user::item::rating::timestamp``). The layout is detected from the file name, then from its
    first line. ``path`` may also be a folder holding one of these files.
``lastfm``
    Last.FM-1K ``userid<TAB>ISO-time<TAB>artist-id<TAB>artist<TAB>track-id<TAB>track``. The item is
    the track id, or ``"<artist>\\t<track>"`` (the two names joined by a tab, which cannot occur
    inside a field) when the track id is empty. This file is known to be dirty: rows with the wrong
    field count, bytes that are not UTF-8, empty user/item or an unreadable time are *skipped and
    counted* in the :class:`ReadReport`.
``citeulike``
    ``item|user|time|tag`` lines, one line per tag, so duplicate ``(user, item, time)`` rows collapse
    to one event (the first). Times like ``2007-05-30 17:36:31.4396-04`` or ISO-8601.

For the clean formats (``csv``, ``movielens``, ``citeulike``) a bad row is an error: a
:class:`ValueError` names the file, the 1-based line number and the field. An empty file (no
events) is an error for every format.

The :class:`ReadReport` of a read is returned by :func:`read_events_with_report` and is also stored
in ``frame.attrs["read_report"]``.
"""

from __future__ import annotations

import csv
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

FORMATS = ("csv", "movielens", "lastfm", "citeulike")

USER_COLUMNS = ("user", "user_id", "userId")
ITEM_COLUMNS = ("item", "item_id", "movieId", "itemId")
TIME_COLUMNS = ("timestamp", "time")

#: How many skipped rows a :class:`ReadReport` keeps as examples.
MAX_EXAMPLES = 10

_INT_RE = re.compile(r"[+-]?\d+")
_EPOCH = pd.Timestamp(0, tz="UTC")


@dataclass
class ReadReport:
    """What a read did: ``rows`` events returned, ``skipped`` rows dropped (dirty formats only) and
    up to :data:`MAX_EXAMPLES` ``(line_number, reason)`` examples of skipped rows (1-based lines)."""

    path: str
    format: str
    rows: int = 0
    skipped: int = 0
    skipped_examples: list[tuple[int, str]] = field(default_factory=list)
    duplicates: int = 0  # citeulike: tag lines collapsed into an existing (user, item, time) event

    def skip(self, line: int, reason: str) -> None:
        self.skipped += 1
        if len(self.skipped_examples) < MAX_EXAMPLES:
            self.skipped_examples.append((line, reason))


def _error(path: Path, line: int, column: str, message: str) -> ValueError:
    return ValueError(f"{path}: line {line}, field {column!r}: {message}")


def parse_timestamps(raw: list[str] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Parse time strings to int64 seconds since the epoch.

    Each value is either an integer (seconds) or an ISO-8601 time (a time without offset is
    taken as UTC; fractions of a second are floored). Returns ``(seconds, ok)`` where ``ok`` is
    False for values that are neither (their ``seconds`` entry is 0).
    """
    values = pd.Series(np.asarray(raw, dtype=object), dtype=object).str.strip()
    n = len(values)
    seconds = np.zeros(n, dtype=np.int64)
    ok = np.zeros(n, dtype=bool)
    if n == 0:
        return seconds, ok
    is_int = values.str.fullmatch(_INT_RE.pattern).fillna(False).to_numpy(dtype=bool)
    if is_int.any():
        ints = values[is_int]
        try:
            seconds[is_int] = ints.astype("int64").to_numpy()
            ok[is_int] = True
        except (OverflowError, ValueError):  # out of int64 range: check one by one
            for pos, text in zip(np.flatnonzero(is_int), ints):
                try:
                    seconds[pos] = np.int64(int(text))
                    ok[pos] = True
                except OverflowError:
                    pass
    rest = ~is_int
    if rest.any():
        parsed = pd.to_datetime(values[rest], utc=True, format="ISO8601", errors="coerce")
        good = parsed.notna().to_numpy()
        if good.any():
            delta = (parsed[good] - _EPOCH) // pd.Timedelta(seconds=1)
            where = np.flatnonzero(rest)[good]
            seconds[where] = delta.to_numpy(dtype=np.int64)
            ok[where] = True
    return seconds, ok


def _frame(users: list[str], items: list[str], seconds: np.ndarray, ratings: list[float] | None = None) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "user": pd.Series(users, dtype=object),
            "item": pd.Series(items, dtype=object),
            "timestamp": np.asarray(seconds, dtype=np.int64),
        }
    )
    if ratings is not None:  # kept for `newsrank convert --min-rating` (what counts as a click)
        frame["rating"] = np.asarray(ratings, dtype=np.float64)
    return frame


def _strict_times(path: Path, raw: list[str], lines: list[int], column: str) -> np.ndarray:
    seconds, ok = parse_timestamps(raw)
    if not ok.all():
        bad = int(np.flatnonzero(~ok)[0])
        raise _error(path, lines[bad], column, f"cannot read time {raw[bad]!r}")
    return seconds


def _check_id(path: Path, line: int, column: str, value: str) -> str:
    value = value.strip()
    if not value:
        raise _error(path, line, column, "empty value")
    return value


def _pick_column(path: Path, header: list[str], names: tuple[str, ...], kind: str) -> int:
    for name in names:
        if name in header:
            return header.index(name)
    raise ValueError(f"{path}: line 1: no {kind} column (expected one of {', '.join(names)}); header is {header}")


def _read_csv(path: Path) -> pd.DataFrame:
    users: list[str] = []
    items: list[str] = []
    times: list[str] = []
    lines: list[int] = []
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        while header is not None and not any(cell.strip() for cell in header):
            header = next(reader, None)
        if header is None:
            raise ValueError(f"{path}: empty file")
        header = [cell.strip().lstrip("\ufeff") for cell in header]
        ucol = _pick_column(path, header, USER_COLUMNS, "user")
        icol = _pick_column(path, header, ITEM_COLUMNS, "item")
        tcol = _pick_column(path, header, TIME_COLUMNS, "time")
        rcol = header.index("rating") if "rating" in header else None
        ratings: list[float] | None = [] if rcol is not None else None
        width = len(header)
        for row in reader:
            line = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            if len(row) != width:
                missing = header[len(row)] if len(row) < width else f"<extra field {width + 1}>"
                raise _error(path, line, missing, f"expected {width} fields, got {len(row)}")
            users.append(_check_id(path, line, header[ucol], row[ucol]))
            items.append(_check_id(path, line, header[icol], row[icol]))
            if ratings is not None:
                ratings.append(_check_rating(path, line, header[rcol], row[rcol]))
            times.append(row[tcol])
            lines.append(line)
    if not users:
        raise ValueError(f"{path}: no events (empty file)")
    return _frame(users, items, _strict_times(path, times, lines, header[tcol]), ratings)


def _check_rating(path: Path, line: int, column: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise _error(path, line, column, f"not a number: {value!r}") from None


_ML_FIELDS = ("user", "item", "rating", "timestamp")


def _read_movielens_split(path: Path, sep: str) -> pd.DataFrame:
    users: list[str] = []
    items: list[str] = []
    times: list[str] = []
    lines: list[int] = []
    ratings: list[float] = []
    with open(path, encoding="utf-8", errors="strict", newline="") as handle:
        for line, text in enumerate(handle, start=1):
            text = text.rstrip("\r\n")
            if not text.strip():
                continue
            parts = text.split(sep)
            if len(parts) != 4:
                column = _ML_FIELDS[len(parts)] if len(parts) < 4 else "<extra field 5>"
                raise _error(path, line, column, f"expected 4 fields, got {len(parts)}")
            users.append(_check_id(path, line, "user", parts[0]))
            items.append(_check_id(path, line, "item", parts[1]))
            ratings.append(_check_rating(path, line, "rating", parts[2]))
            times.append(parts[3])
            lines.append(line)
    if not users:
        raise ValueError(f"{path}: no events (empty file)")
    return _frame(users, items, _strict_times(path, times, lines, "timestamp"), ratings)


def _movielens_file(path: Path) -> Path:
    if path.is_dir():
        for name in ("ratings.csv", "ratings.dat", "u.data"):
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"{path}: no ratings.csv, ratings.dat or u.data in this folder")
    return path


def _read_movielens(path: Path) -> pd.DataFrame:
    path = _movielens_file(path)
    name = path.name.lower()
    if name.endswith(".dat"):
        return _read_movielens_split(path, "::")
    if name == "u.data":
        return _read_movielens_split(path, "\t")
    if name.endswith(".csv"):
        return _read_csv(path)
    with open(path, encoding="utf-8", errors="replace") as handle:
        first = ""
        for first in handle:
            if first.strip():
                break
    if not first.strip():
        raise ValueError(f"{path}: empty file")
    if "::" in first:
        return _read_movielens_split(path, "::")
    if "\t" in first:
        return _read_movielens_split(path, "\t")
    if "," in first:
        return _read_csv(path)
    raise ValueError(f"{path}: line 1: cannot tell the MovieLens layout (ratings.csv, u.data or ratings.dat)")


def _read_lastfm(path: Path, report: ReadReport) -> pd.DataFrame:
    users: list[str] = []
    items: list[str] = []
    times: list[str] = []
    lines: list[int] = []
    with open(path, "rb") as handle:
        for line, raw in enumerate(handle, start=1):
            raw = raw.rstrip(b"\r\n")
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                report.skip(line, f"bytes that are not UTF-8 at column {exc.start + 1}")
                continue
            if "\x00" in text:
                report.skip(line, "NUL byte")
                continue
            parts = text.split("\t")
            if len(parts) != 6:
                report.skip(line, f"expected 6 fields, got {len(parts)}")
                continue
            user, time, _artist_id, artist, track_id, track = (p.strip() for p in parts)
            if not user:
                report.skip(line, "empty user")
                continue
            item = track_id or (f"{artist}\t{track}" if (artist or track) else "")
            if not item:
                report.skip(line, "no track id and no artist/track name")
                continue
            users.append(user)
            items.append(item)
            times.append(time)
            lines.append(line)
    seconds, ok = parse_timestamps(times)
    if not ok.all():
        for pos in np.flatnonzero(~ok):
            report.skip(lines[pos], f"cannot read time {times[pos]!r}")
        keep = np.flatnonzero(ok)
        users = [users[i] for i in keep]
        items = [items[i] for i in keep]
        seconds = seconds[keep]
        report.skipped_examples.sort()
    if not users:
        raise ValueError(f"{path}: no events (empty file, or every row skipped: {report.skipped} skipped)")
    return _frame(users, items, seconds)


def _read_citeulike(path: Path, report: ReadReport) -> pd.DataFrame:
    users: list[str] = []
    items: list[str] = []
    times: list[str] = []
    lines: list[int] = []
    names = ("item", "user", "time", "tag")
    with open(path, encoding="utf-8", newline="") as handle:
        for line, text in enumerate(handle, start=1):
            text = text.rstrip("\r\n")
            if not text.strip():
                continue
            parts = text.split("|", 3)
            if len(parts) < 4:
                raise _error(path, line, names[len(parts)], f"expected 4 '|'-separated fields, got {len(parts)}")
            items.append(_check_id(path, line, "item", parts[0]))
            users.append(_check_id(path, line, "user", parts[1]))
            times.append(parts[2])
            lines.append(line)
    if not users:
        raise ValueError(f"{path}: no events (empty file)")
    frame = _frame(users, items, _strict_times(path, times, lines, "time"))
    before = len(frame)
    frame = frame.drop_duplicates(["user", "item", "timestamp"], keep="first").reset_index(drop=True)
    report.duplicates = before - len(frame)
    return frame


def read_events_with_report(path: str | Path, format: str = "csv") -> tuple[pd.DataFrame, ReadReport]:
    """Like :func:`read_events`, returning ``(events, report)``."""
    path = Path(path)
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; expected one of {', '.join(FORMATS)}")
    if not path.exists():
        raise FileNotFoundError(path)
    report = ReadReport(path=str(path), format=format)
    if format == "csv":
        frame = _read_csv(path)
    elif format == "movielens":
        frame = _read_movielens(path)
    elif format == "lastfm":
        frame = _read_lastfm(path, report)
    else:
        frame = _read_citeulike(path, report)
    report.rows = len(frame)
    if report.skipped:
        log.warning(
            "%s: skipped %d bad rows (kept %d); first: %s", path, report.skipped, report.rows, report.skipped_examples[:3]
        )
    frame.attrs["read_report"] = report
    return frame, report


def read_events(path: str | Path, format: str = "csv") -> pd.DataFrame:
    """Read an event log (see the module docstring for the formats) into a frame with columns
    ``user`` (str), ``item`` (str), ``timestamp`` (int64 seconds), in file order.

    The :class:`ReadReport` (rows, skipped rows and examples) is in ``frame.attrs["read_report"]``.
    """
    return read_events_with_report(path, format)[0]
