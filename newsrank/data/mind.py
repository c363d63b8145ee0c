"""Reading MIND-format files exactly: ``news.tsv`` and ``behaviors.tsv``.

``news.tsv`` has 8 tab-separated columns::

    news id, category, subcategory, title, abstract, url, title entities (JSON), abstract entities (JSON)

``behaviors.tsv`` has 5::

    impression id, user id, time (M/D/YYYY h:mm:ss AM), history (space-separated news ids, oldest
    first), impressions (space-separated ``N123-1`` / ``N456-0``; the MIND-large test set has bare
    ``N123`` without labels)

Handling of the cases MIND itself has (documented, never silent):

* An empty history column (new users) is an empty history.
* Empty abstracts and empty entity columns (``""`` or ``[]``) are empty.
* An impressions column is either fully labelled or fully unlabelled; a mix is an error.
* A trailing ``\\r`` (files saved on Windows) is stripped.

Everything else that does not parse (wrong column count, bad impression token, bad time, news id
in a history or impression list that ``news.tsv`` lacks, an empty file, bytes that are not UTF-8,
a repeated news or impression id) raises :class:`MindFormatError` naming the file, the 1-based
line and the field.
"""

from __future__ import annotations

from collections.abc import Container, Iterator

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

NEWS_COLUMNS = (
    "news_id",
    "category",
    "subcategory",
    "title",
    "abstract",
    "url",
    "title_entities",
    "abstract_entities",
)
BEHAVIOR_COLUMNS = ("impression_id", "user_id", "time", "history", "impressions")
TIME_FORMAT = "%m/%d/%Y %I:%M:%S %p"


class MindFormatError(ValueError):
    """A MIND-format file that does not parse: names the file, the 1-based line and the field."""

    def __init__(self, path: str | Path, line: int | None, field_name: str | None, message: str):
        self.path = str(path)
        self.line = line
        self.field = field_name
        where = self.path
        if line is not None:
            where += f", line {line}"
        if field_name is not None:
            where += f", field '{field_name}'"
        super().__init__(f"{where}: {message}")


@dataclass
class NewsRecord:
    news_id: str
    category: str
    subcategory: str
    title: str
    abstract: str
    url: str
    # Each entity is MIND's dict: Label, Type, WikidataId, Confidence, OccurrenceOffsets, SurfaceForms.
    title_entities: list[dict] = field(default_factory=list)
    abstract_entities: list[dict] = field(default_factory=list)


@dataclass
class Impression:
    impression_id: str
    user_id: str
    time: datetime
    history: list[str]  # clicked news ids, oldest first
    candidates: list[str]
    labels: list[int] | None  # None for the unlabelled MIND-large test set


def _read_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 text file; a clear error for a missing, empty or non-UTF-8 file."""
    if not path.is_file():
        raise MindFormatError(path, None, None, "file not found")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise MindFormatError(path, line, None, f"not valid UTF-8 (byte offset {err.start})") from None
    if text.startswith("\ufeff"):  # tolerate a byte-order mark written by some editors
        text = text[1:]
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise MindFormatError(path, None, None, "file is empty")
    return lines


def _split_row(path: Path, lineno: int, line: str, columns: tuple[str, ...]) -> list[str]:
    if line.endswith("\r"):
        line = line[:-1]
    parts = line.split("\t")
    if len(parts) != len(columns):
        raise MindFormatError(
            path, lineno, None, f"expected {len(columns)} tab-separated columns ({', '.join(columns)}), found {len(parts)}"
        )
    return parts


def _parse_entities(path: Path, lineno: int, field_name: str, text: str) -> list[dict]:
    if text.strip() == "":
        return []
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise MindFormatError(path, lineno, field_name, f"invalid JSON ({err.msg} at char {err.pos})") from None
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise MindFormatError(path, lineno, field_name, "expected a JSON list of entity objects")
    return value


def read_news(path: str | Path) -> dict[str, NewsRecord]:
    """All rows of a ``news.tsv``, keyed by news id, in file order."""
    path = Path(path)
    news: dict[str, NewsRecord] = {}
    for lineno, line in enumerate(_read_lines(path), start=1):
        parts = _split_row(path, lineno, line, NEWS_COLUMNS)
        news_id = parts[0]
        if not news_id:
            raise MindFormatError(path, lineno, "news_id", "empty news id")
        if news_id in news:
            raise MindFormatError(path, lineno, "news_id", f"news id {news_id!r} appears twice")
        news[news_id] = NewsRecord(
            news_id=news_id,
            category=parts[1],
            subcategory=parts[2],
            title=parts[3],
            abstract=parts[4],
            url=parts[5],
            title_entities=_parse_entities(path, lineno, "title_entities", parts[6]),
            abstract_entities=_parse_entities(path, lineno, "abstract_entities", parts[7]),
        )
    return news


def _parse_time(path: Path, lineno: int, text: str) -> datetime:
    try:
        return datetime.strptime(text, TIME_FORMAT)
    except ValueError:
        raise MindFormatError(path, lineno, "time", f"{text!r} is not a time like '11/15/2019 8:55:22 AM'") from None


def _parse_impressions(path: Path, lineno: int, text: str) -> tuple[list[str], list[int] | None]:
    tokens = text.split()
    if not tokens:
        raise MindFormatError(path, lineno, "impressions", "no candidates")
    candidates: list[str] = []
    labels: list[int] = []
    for token in tokens:
        news_id, dash, label = token.rpartition("-")
        if not dash:  # unlabelled (MIND-large test set)
            candidates.append(token)
            continue
        if label not in ("0", "1") or not news_id:
            raise MindFormatError(path, lineno, "impressions", f"bad token {token!r}: expected N<id>-0 or N<id>-1")
        candidates.append(news_id)
        labels.append(int(label))
    if labels and len(labels) != len(candidates):
        raise MindFormatError(path, lineno, "impressions", "mixes labelled (N1-0) and unlabelled (N1) tokens")
    return candidates, (labels or None)


def _stream_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) of a UTF-8 text file, one at a time (bounded memory), with the errors of
    ``_read_lines``: missing, empty or not UTF-8 (naming the line)."""
    if not path.is_file():
        raise MindFormatError(path, None, None, "file not found")
    lineno, offset = 0, 0
    with open(path, "rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise MindFormatError(path, lineno, None,
                                      f"not valid UTF-8 (byte offset {offset + err.start})") from None
            offset += len(raw)
            if lineno == 1 and line.startswith("\ufeff"):  # tolerate a byte-order mark
                line = line[1:]
            yield lineno, line[:-1] if line.endswith("\n") else line
    if lineno == 0:
        raise MindFormatError(path, None, None, "file is empty")


def iter_behaviors(path: str | Path, news: Container[str] | None = None) -> Iterator[Impression]:
    """The rows of a ``behaviors.tsv`` one at a time, read as a stream (MIND-large's 2.2M rows never
    sit in memory at once); with ``news`` (ids), every referenced id must be one of them. Errors
    name the file, line and field."""
    path = Path(path)
    seen_ids: set[str] = set()
    for lineno, line in _stream_lines(path):
        imp_id, user_id, time_text, history_text, imp_text = _split_row(path, lineno, line, BEHAVIOR_COLUMNS)
        if not imp_id:
            raise MindFormatError(path, lineno, "impression_id", "empty impression id")
        if imp_id in seen_ids:
            raise MindFormatError(path, lineno, "impression_id", f"impression id {imp_id!r} appears twice")
        seen_ids.add(imp_id)
        if not user_id:
            raise MindFormatError(path, lineno, "user_id", "empty user id")
        history = history_text.split()
        candidates, labels = _parse_impressions(path, lineno, imp_text)
        if news is not None:
            for field_name, ids in (("history", history), ("impressions", candidates)):
                for news_id in ids:
                    if news_id not in news:
                        raise MindFormatError(path, lineno, field_name, f"news id {news_id!r} is not in news.tsv")
        yield Impression(imp_id, user_id, _parse_time(path, lineno, time_text), history, candidates, labels)


def read_behaviors(path: str | Path, news: dict[str, NewsRecord] | None = None) -> list[Impression]:
    """All rows of a ``behaviors.tsv``; with ``news``, every referenced id must be one of its keys."""
    return list(iter_behaviors(path, news))


def stream_split(split_dir: str | Path) -> tuple[dict[str, NewsRecord], Iterator[Impression]]:
    """``news.tsv`` of one split folder, and its ``behaviors.tsv`` as a stream checked against it."""
    split_dir = Path(split_dir)
    news = read_news(split_dir / "news.tsv")
    return news, iter_behaviors(split_dir / "behaviors.tsv", news)


def read_split(split_dir: str | Path) -> tuple[dict[str, NewsRecord], list[Impression]]:
    """``news.tsv`` and ``behaviors.tsv`` of one split folder, cross-checked."""
    split_dir = Path(split_dir)
    news = read_news(split_dir / "news.tsv")
    return news, read_behaviors(split_dir / "behaviors.tsv", news)


# ------------------------------------------------------------------------------------ writing


def format_times(seconds: np.ndarray, start: datetime = datetime(1970, 1, 1)) -> list[str]:
    """MIND time strings (``11/9/2019 9:05:58 AM``) of ``seconds`` after ``start`` (default: epoch
    seconds, UTC). Vectorised: each distinct day is formatted once."""
    day, rest = np.divmod(np.asarray(seconds).astype(np.int64), 86400)
    hour, rest = np.divmod(rest, 3600)
    minute, sec = np.divmod(rest, 60)
    dates = {d: f"{x.month}/{x.day}/{x.year}" for d in np.unique(day).tolist() for x in [start + timedelta(days=d)]}
    return [f"{dates[d]} {(h + 11) % 12 + 1}:{m:02d}:{s:02d} {'AM' if h < 12 else 'PM'}"
            for d, h, m, s in zip(day.tolist(), hour.tolist(), minute.tolist(), sec.tolist())]


def write_lines(path: Path, lines: list[str]) -> None:
    """A MIND file: one row per line, ``\n`` endings, UTF-8."""
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        handle.write("".join(line + "\n" for line in lines))
