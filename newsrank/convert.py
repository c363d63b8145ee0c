"""Turn any ``user, item, timestamp`` event log into MIND-format ``train/`` and ``dev/`` folders.

Every news model of the library reads MIND (:mod:`newsrank.data.mind`); this converter lets them
train on any interaction log (MovieLens, Last.FM, CiteULike, :mod:`newsrank.seq.synth`), the same
way ``../shared/data/mlsmall_mind`` was made from MovieLens. The construction
(:func:`convert_to_mind`, knobs in :class:`ConvertConfig`):

1. **Clicks.** Every event is a click, or, when ``min_rating`` is set, only the events whose
   ``rating`` is ``>= min_rating`` (the others still count as *interactions*: a user's rated-low
   item is never offered as a negative). Each user's clicks are ordered by time, ties by input
   order. By default a repeated click on an item the user already clicked is dropped (MIND news are
   clicked once; a repeat would sit in the history and be the positive at once), counted in the
   summary; ``keep_repeats=True`` keeps it.
2. **Impressions.** The first ``min_history`` clicks of a user are history only. Every later click
   becomes one impression: the clicked item (``-1``) plus ``negatives`` non-clicks (``-0``) drawn
   without replacement, with probability proportional to ``popularity ** popularity_power``
   (popularity = the item's number of events in the whole log), from the items the user never
   interacted with. The candidates are shuffled, so the position of the click says nothing. A user
   who interacted with almost every item gets fewer negatives (counted in the summary).
3. **History.** The user's earlier clicks, oldest first as in MIND, the newest ``history_len``
   kept; empty when ``min_history`` is 0 and this is the first click.
4. **Time and split.** The impression time is the click's timestamp, written as MIND does
   (``7/30/2000 6:08:43 PM``, UTC). The split boundary is the ``1 - dev_fraction`` quantile
   (``numpy.quantile``, linear) of *all* click times, history-only clicks included; impressions
   before it are ``train``, the rest (at or after it) ``dev``, so every train impression is older
   than every dev impression. With MovieLens latest-small, ``min_rating=4``, ``min_history=3`` and
   ``dev_fraction=0.2`` this reproduces the 37,315 / 9,440 split of ``mlsmall_mind``.
5. **Ids.** Users are written ``U<original id>`` and items ``N<original id>`` when *every* id of the
   kind consists of letters, digits and ``_ . : -`` (so MovieLens item 1 is ``N1``); otherwise all
   ids of that kind are numbered instead (``N1``, ``N2``, ... in sorted order of the original ids;
   a Last.FM item ``"artist<TAB>track"`` cannot be a MIND id). Either way ``news_ids.tsv`` and
   ``user_ids.tsv`` in the output folder map each MIND id to its original id.
6. **News rows.** Each split's ``news.tsv`` holds every news its behaviors reference (history and
   candidates), ordered by id. Text comes from an item table (:func:`read_item_text`); an item
   without text gets its original id as title (one word per item, so a text model can still learn
   the item), category and subcategory ``unknown`` and an empty abstract. Tabs and line breaks in
   text become spaces. The url is empty and both entity columns are ``[]``.

The output appears all at once: it is written to a temporary folder beside ``out_dir`` and renamed
into place, so a failure midway leaves no half-written folder that looks complete. An existing
non-empty ``out_dir`` is an error unless ``overwrite=True``.
"""

from __future__ import annotations

import csv
import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from .core.atomic import atomic_folder
from .data.mind import format_times, write_lines

__all__ = ["ConvertConfig", "convert_to_mind", "read_item_text"]

ITEM_ID_COLUMNS = ("item", "item_id", "movieId", "itemId", "id", "news_id")
TEXT_COLUMNS = ("title", "category", "subcategory", "abstract")
UNKNOWN = "unknown"  # category / subcategory of items without one
NO_GENRES = "(no genres listed)"  # MovieLens's "genre" of a movie without genres

_SAFE_ID = re.compile(r"[A-Za-z0-9_.:\-]+")
# Everything str.splitlines() breaks on, plus the tab: none may appear inside a TSV field.
_BREAKS = re.compile("[\t\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
_EPOCH = datetime(1970, 1, 1)
_MIN_TIME, _MAX_TIME = -30_610_224_000, 253_402_300_799  # 1000-01-01 .. 9999-12-31 23:59:59 (4-digit years)


@dataclass
class ConvertConfig:
    """Knobs of :func:`convert_to_mind` (see the module docstring)."""

    negatives: int = 19  # non-clicks per impression (fewer only when the user's unseen items run out)
    min_history: int = 3  # a user's first N clicks are history only (no impression)
    history_len: int = 100  # newest clicks kept in an impression's history
    dev_fraction: float = 0.2  # clicks at or after the (1 - f) quantile of click times -> dev
    min_rating: float | None = None  # with a ``rating`` column: only events rated >= this are clicks
    keep_repeats: bool = False  # keep a user's repeated clicks on the same item (default: first click only)
    popularity_power: float = 1.0  # negatives ~ popularity ** power (0: uniform over unseen items)
    seed: int = 0  # negative sampling and candidate order

    def __post_init__(self) -> None:
        if self.negatives < 1:
            raise ValueError(f"negatives must be >= 1, got {self.negatives}")
        if self.min_history < 0:
            raise ValueError(f"min_history must be >= 0, got {self.min_history}")
        if self.history_len < 0:
            raise ValueError(f"history_len must be >= 0, got {self.history_len}")
        if not 0.0 < self.dev_fraction < 1.0:
            raise ValueError(f"dev_fraction must be in (0, 1), got {self.dev_fraction}")
        if self.min_rating is not None and not np.isfinite(self.min_rating):
            raise ValueError(f"min_rating must be a finite number or None, got {self.min_rating}")
        if not (self.popularity_power >= 0 and np.isfinite(self.popularity_power)):
            raise ValueError(f"popularity_power must be finite and >= 0, got {self.popularity_power}")


# ------------------------------------------------------------------------------------------ item text


def _clean(text: str) -> str:
    return _BREAKS.sub(" ", text).strip()


def _delimiter(path: Path, first_line: str) -> str:
    suffix = path.suffix.lower()
    if suffix in (".tsv", ".tab"):
        return "\t"
    if suffix == ".csv":
        return ","
    return "\t" if "\t" in first_line else ","


def read_item_text(path: str | Path) -> pd.DataFrame:
    """Item text for :func:`convert_to_mind`: a frame with str columns ``item``, ``title``,
    ``category``, ``subcategory``, ``abstract``, one row per item, in file order.

    Accepted files (comma-separated, or tab-separated for ``.tsv``/``.tab`` or a tab in the header):

    * MovieLens ``movies.csv`` (a ``genres`` column of ``|``-separated genres and no ``category``
      column): category = first genre, subcategory = second genre (the first if there is only
      one), both lower-cased as MIND's categories are; abstract = the genres joined by spaces. A
      movie without genres (``(no genres listed)``) gets category ``unknown``.
    * Any table whose header names an item id column (one of ``item``, ``item_id``, ``movieId``,
      ``itemId``, ``id``, ``news_id``) and optionally ``title``, ``category``, ``subcategory``,
      ``abstract``; other columns are ignored.

    Missing or empty values: title = the item id, category = ``unknown``, subcategory = the
    category, abstract = empty. Tabs and line breaks in text become spaces. A row with the wrong
    field count, an empty or repeated item id raises :class:`ValueError` naming the file, the
    1-based line and the field.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(path)
    with open(path, encoding="utf-8-sig", newline="") as handle:
        first = handle.readline()
        handle.seek(0)
        if handle.read(1) != "\ufeff":
            handle.seek(0)
        reader = csv.reader(handle, delimiter=_delimiter(path, first))
        header = next(reader, None)
        if header is None or not any(cell.strip() for cell in header):
            raise ValueError(f"{path}: line 1: empty file (expected a header naming an item id column)")
        header = [cell.strip().lstrip("\ufeff") for cell in header]
        id_name = next((name for name in ITEM_ID_COLUMNS if name in header), None)
        if id_name is None:
            raise ValueError(
                f"{path}: line 1: no item id column (expected one of {', '.join(ITEM_ID_COLUMNS)}); header is {header}"
            )
        id_col = header.index(id_name)
        movielens = "genres" in header and "category" not in header
        cols = {name: header.index(name) for name in TEXT_COLUMNS if name in header}
        genre_col = header.index("genres") if movielens else None
        width = len(header)
        rows: dict[str, tuple[str, str, str, str]] = {}
        first_line: dict[str, int] = {}
        for row in reader:
            line = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != width:
                field = header[len(row)] if len(row) < width else f"<extra field {width + 1}>"
                raise ValueError(f"{path}: line {line}, field {field!r}: expected {width} fields, got {len(row)}")
            item = row[id_col].strip()
            if not item:
                raise ValueError(f"{path}: line {line}, field {id_name!r}: empty item id")
            if item in rows:
                raise ValueError(
                    f"{path}: line {line}, field {id_name!r}: item {item!r} appears twice "
                    f"(first on line {first_line[item]})"
                )
            title = _clean(row[cols["title"]]) if "title" in cols else ""
            if movielens:
                genres = [g.strip() for g in row[genre_col].split("|")]
                genres = [_clean(g) for g in genres if g and g != NO_GENRES]
                category = genres[0].lower() if genres else ""
                subcategory = genres[1].lower() if len(genres) > 1 else ""
                abstract = " ".join(genres)
            else:
                category = _clean(row[cols["category"]]) if "category" in cols else ""
                subcategory = _clean(row[cols["subcategory"]]) if "subcategory" in cols else ""
                abstract = _clean(row[cols["abstract"]]) if "abstract" in cols else ""
            category = category or UNKNOWN
            rows[item] = (title or _clean(item), category, subcategory or category, abstract)
            first_line[item] = line
    if not rows:
        raise ValueError(f"{path}: no items (only a header)")
    frame = pd.DataFrame(list(rows.values()), columns=list(TEXT_COLUMNS), dtype=object)
    frame.insert(0, "item", pd.Series(list(rows), dtype=object))
    return frame


def _item_text_table(items: pd.DataFrame | str | Path | None, names: np.ndarray) -> tuple[list[list[str]], int]:
    """(title, category, subcategory, abstract) per item of ``names`` and how many had text."""
    table = [[_clean(name), UNKNOWN, UNKNOWN, ""] for name in names.tolist()]
    if items is None:
        return table, 0
    if not isinstance(items, pd.DataFrame):
        items = read_item_text(items)
    if "item" not in items.columns:
        raise ValueError(f"the item table needs an 'item' column; has {list(items.columns)}")
    ids = items["item"].astype(str).str.strip()
    repeated = ids[ids.duplicated()]
    if len(repeated):
        raise ValueError(f"the item table lists item {repeated.iloc[0]!r} more than once")
    position = pd.Index(names).get_indexer(ids)
    found = position >= 0

    def column(name: str) -> list[str]:
        if name not in items.columns:
            return [""] * len(items)
        return ["" if pd.isna(v) else _clean(str(v)) for v in items[name].tolist()]

    title, category, subcategory, abstract = (column(name) for name in TEXT_COLUMNS)
    for row, pos in enumerate(position.tolist()):
        if pos < 0:
            continue
        cat = category[row] or UNKNOWN
        table[pos] = [title[row] or table[pos][0], cat, subcategory[row] or cat, abstract[row]]
    return table, int(found.sum())


# ---------------------------------------------------------------------------------------------- ids


def _sorted_ids(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(codes, names): names are the distinct ids, numerically sorted when all are integers, else
    by string; codes index into names."""
    names = pd.unique(values)
    numeric = pd.Series(names, dtype=object).str.fullmatch(r"\d{1,18}").all()
    order = np.argsort(names.astype(np.int64) if numeric else names.astype(str), kind="stable")
    names = names[order]
    codes = pd.Index(names).get_indexer(values)
    return codes.astype(np.int64), names


def _mind_ids(names: np.ndarray, prefix: str) -> tuple[np.ndarray, str]:
    """MIND ids for ``names`` and the scheme used: ``original`` or ``index`` (module docstring)."""
    if all(_SAFE_ID.fullmatch(name) for name in names.tolist()):
        return np.array([prefix + name for name in names.tolist()], dtype=object), "original"
    return np.array([f"{prefix}{i + 1}" for i in range(names.size)], dtype=object), "index"


# ------------------------------------------------------------------------------------------ sampling


def _sample_negatives(rng: np.random.Generator, weights: np.ndarray, seen: np.ndarray, n_users: int,
                      imp_user: np.ndarray, want: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For impression ``i`` (of user ``imp_user[i]``), ``want[i]`` distinct items the user never
    interacted with (``seen``: sorted ``user * n_items + item`` keys), by successive sampling
    proportional to ``weights``. Returns (impression index, item code) rows grouped by impression.

    Draws with replacement from all items, drops seen items and repeats and keeps the first
    ``want[i]`` (the same distribution as successive sampling). The number of draws is sized from
    the weight mass of the user's unseen items; impressions left short are redrawn with twice as
    many draws, and after a few rounds (users who have seen nearly all of the popular items)
    sampled exactly with Efraimidis-Spirakis keys over the user's unseen items."""
    n_items = weights.size
    cum = np.cumsum(weights)
    seen_user, seen_item = np.divmod(seen, n_items)
    unseen_mass = np.maximum(cum[-1] - np.bincount(seen_user, weights=weights[seen_item], minlength=n_users), 0.0)
    accept = unseen_mass / cum[-1]  # chance that one draw is an item the user has not seen
    if n_users * n_items <= 64_000_000:  # a dense (user, item) table is cheaper than binary searches
        table = np.zeros(n_users * n_items, dtype=bool)
        table[seen] = True
        is_seen = lambda keys: table[keys]  # noqa: E731
    else:
        def is_seen(keys: np.ndarray) -> np.ndarray:
            pos = np.minimum(np.searchsorted(seen, keys), seen.size - 1)
            return seen[pos] == keys
    out_imp, out_item = [], []
    todo = np.flatnonzero(want > 0)
    expected = want[todo] / np.maximum(accept[imp_user[todo]], 1e-12)  # draws needed, about
    exact = todo[expected > 50 * want[todo] + 100]  # rejection would take too long: sample these exactly
    todo = todo[expected <= 50 * want[todo] + 100]
    mult = 1.25
    for _ in range(5):
        if not todo.size:
            break
        need = (np.ceil(mult * want[todo] / np.maximum(accept[imp_user[todo]], 1e-12)) + 4).astype(np.int64)
        imp = np.repeat(todo, need)
        item = np.minimum(np.searchsorted(cum, rng.random(imp.size) * cum[-1], side="right"), n_items - 1)
        fresh = ~is_seen(imp_user[imp] * n_items + item)
        imp, item = imp[fresh], item[fresh]
        _, first = np.unique(imp * n_items + item, return_index=True)
        first.sort()  # first occurrences, in draw order, still grouped by impression
        imp, item = imp[first], item[first]
        found = np.bincount(imp, minlength=want.size)
        rank = np.arange(imp.size) - (np.cumsum(found) - found)[imp]
        done = found >= want
        keep = done[imp] & (rank < want[imp])
        out_imp.append(imp[keep])
        out_item.append(item[keep])
        todo, mult = todo[~done[todo]], 2 * mult
    todo = np.concatenate([todo, exact])
    if todo.size:  # exact: per user, keys log(U) / w over the unseen items
        users = imp_user[todo]
        for user in np.unique(users).tolist():
            rows = todo[users == user]
            lo, hi = np.searchsorted(seen, [user * n_items, (user + 1) * n_items])
            pool = np.setdiff1d(np.arange(n_items), seen[lo:hi] - user * n_items, assume_unique=True)
            pool = pool[weights[pool] > 0]
            k = int(want[rows].max())
            for start in range(0, rows.size, 256):
                chunk = rows[start:start + 256]
                keys = np.log1p(-rng.random((chunk.size, pool.size))) / weights[pool]
                top = np.argsort(-keys, axis=1, kind="stable")[:, :k]
                take = np.arange(top.shape[1])[None, :] < want[chunk, None]
                out_imp.append(np.broadcast_to(chunk[:, None], top.shape)[take])
                out_item.append(pool[top][take])
    if not out_imp:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    imp, item = np.concatenate(out_imp), np.concatenate(out_item)
    order = np.argsort(imp, kind="stable")
    return imp[order], item[order]


# ------------------------------------------------------------------------------------------- writing


def _check_target(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty; pass overwrite=True to replace it")


# ----------------------------------------------------------------------------------------- conversion


def _event_columns(events: pd.DataFrame, config: ConvertConfig) -> tuple[pd.Series, pd.Series, np.ndarray, np.ndarray]:
    """(user, item, timestamp, is_click) of ``events``, checked."""
    for column in ("user", "item", "timestamp"):
        if column not in events.columns:
            raise ValueError(f"events need a {column!r} column; have {list(events.columns)}")
    if len(events) == 0:
        raise ValueError("events are empty")
    user = events["user"].astype(str).str.strip()
    item = events["item"].astype(str).str.strip()
    for name, values in (("user", user), ("item", item)):
        empty = np.flatnonzero((values == "").to_numpy() | events[name].isna().to_numpy())
        if empty.size:
            raise ValueError(f"events row {empty[0]} (0-based position), field {name!r}: empty id")
    ts = pd.to_numeric(events["timestamp"], errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(ts) | (ts < _MIN_TIME) | (ts > _MAX_TIME))
    if bad.size:
        raise ValueError(
            f"events row {bad[0]} (0-based position), field 'timestamp': {events['timestamp'].iloc[bad[0]]!r} is not "
            "epoch seconds between years 1000 and 9999"
        )
    if events["timestamp"].dtype.kind in "iu":
        ts = events["timestamp"].to_numpy().astype(np.int64)  # exact, whatever the magnitude
    else:
        ts = np.floor(ts).astype(np.int64)  # fractional seconds are floored, as the readers do
    if config.min_rating is None:
        return user, item, ts, np.ones(len(events), dtype=bool)
    if "rating" not in events.columns:
        raise ValueError(f"min_rating={config.min_rating} needs a 'rating' column; events have {list(events.columns)}")
    rating = pd.to_numeric(events["rating"], errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(np.isnan(rating))
    if bad.size:
        value = events["rating"].iloc[bad[0]]
        raise ValueError(f"events row {bad[0]} (0-based position), field 'rating': {value!r} is not a number")
    return user, item, ts, rating >= config.min_rating


def convert_to_mind(events: pd.DataFrame, out_dir: str | Path, items: pd.DataFrame | str | Path | None = None,
                    config: ConvertConfig | None = None, overwrite: bool = False) -> dict:
    """Write ``out_dir/train`` and ``out_dir/dev`` (``news.tsv``, ``behaviors.tsv``) and
    ``out_dir/news_ids.tsv``, ``out_dir/user_ids.tsv`` (MIND id -> original id) from ``events``
    (columns ``user``, ``item``, ``timestamp`` in epoch seconds, and ``rating`` when
    ``config.min_rating`` is set; e.g. from :func:`newsrank.seq.read_events`). ``items`` is an
    item text table (:func:`read_item_text`'s frame, or a path to read with it). See the module
    docstring for the construction.

    Returns a summary: ``events``, ``users``, ``items``, ``clicks`` (click events),
    ``non_click_events`` (rated below ``min_rating``), ``repeat_clicks_dropped``,
    ``history_only_clicks`` (each user's first ``min_history``), ``users_without_impressions``,
    ``impressions_short_of_negatives``, ``items_with_text``, ``split_time`` (epoch seconds) and
    ``split_time_utc``, ``ids`` (``{"users": scheme, "news": scheme}``), ``seconds`` (wall time)
    and per split (``train``, ``dev``) ``impressions``, ``users``, ``news`` (rows of its news.tsv),
    ``candidates``.

    Raises :class:`FileExistsError` when ``out_dir`` exists and is not empty (unless
    ``overwrite``), and :class:`ValueError` for bad events or a split left empty.
    """
    started = time.perf_counter()
    cfg = config or ConvertConfig()
    out = Path(out_dir)
    _check_target(out, overwrite)
    user, item, ts, is_click = _event_columns(events, cfg)
    rng = np.random.Generator(np.random.PCG64(cfg.seed))

    ucode, user_names = _sorted_ids(user)
    icode, item_names = _sorted_ids(item)
    text, with_text = _item_text_table(items, item_names)  # early: a bad item file fails before the work
    n_items = item_names.size
    seen = np.unique(ucode * n_items + icode)  # every (user, item) interaction, clicked or not

    clicks = _ordered_clicks(ucode, icode, ts, is_click, n_items, cfg.keep_repeats)
    imp, split_time, is_dev = _impressions(clicks, cfg, len(events))
    imp_user = clicks.user[imp]
    cand_imp, cand_item, label, got = _candidates(rng, clicks, imp, icode, n_items, seen, user_names.size, cfg)

    news_ids, news_scheme = _mind_ids(item_names, "N")
    user_ids, user_scheme = _mind_ids(user_names, "U")
    history, referenced, users_with_impressions = _histories(clicks, imp, is_dev, cand_imp, cand_item, news_ids,
                                                             n_items, cfg.history_len)
    summary: dict = {
        "events": len(events),
        "users": int(user_names.size),
        "items": int(n_items),
        "clicks": clicks.total,
        "non_click_events": int((~is_click).sum()),
        "repeat_clicks_dropped": clicks.total - int(clicks.index.size),
        "history_only_clicks": int(clicks.index.size - imp.size),
        "users_without_impressions": int(user_names.size - users_with_impressions),
        "impressions_short_of_negatives": int((got < cfg.negatives).sum()),
        "items_with_text": with_text,
        "split_time": split_time,
        "split_time_utc": (_EPOCH + timedelta(seconds=split_time)).isoformat(sep=" ") + " UTC",
        "ids": {"users": user_scheme, "news": news_scheme},
    }
    tokens = np.where(label, (news_ids + "-1")[cand_item], (news_ids + "-0")[cand_item]).tolist()
    bounds = np.r_[0, np.cumsum(np.bincount(cand_imp, minlength=imp.size))].tolist()
    times = format_times(clicks.time[imp])
    news_lines = [f"{nid}\t{t[1]}\t{t[2]}\t{t[0]}\t{t[3]}\t\t[]\t[]" for nid, t in zip(news_ids.tolist(), text)]
    line_order = np.lexsort((imp, clicks.time[imp]))  # behaviors in time order (ties: user, then click order)
    with atomic_folder(out) as tmp:  # all at once; an existing folder stays until the swap
        for split in ("train", "dev"):
            rows = line_order[is_dev[line_order] == (split == "dev")].tolist()
            lines = [
                f"{number}\t{user_ids[imp_user[j]]}\t{times[j]}\t{history[j]}\t"
                + " ".join(tokens[bounds[j]:bounds[j + 1]])
                for number, j in enumerate(rows, start=1)
            ]
            news_rows = np.flatnonzero(referenced[split])
            (tmp / split).mkdir()
            write_lines(tmp / split / "news.tsv", [news_lines[i] for i in news_rows.tolist()])
            write_lines(tmp / split / "behaviors.tsv", lines)
            summary[split] = {
                "impressions": len(rows),
                "users": int(np.unique(imp_user[rows]).size),
                "news": int(news_rows.size),
                "candidates": int(np.isin(cand_imp, rows).sum()),
            }
        for name, ids, names in (("news_ids.tsv", news_ids, item_names), ("user_ids.tsv", user_ids, user_names)):
            write_lines(tmp / name, [f"{m}\t{_escape(o)}" for m, o in zip(ids.tolist(), names.tolist())])
        _check_target(out, overwrite)  # again: something may have appeared while converting
    summary["out_dir"] = str(out)
    summary["seconds"] = round(time.perf_counter() - started, 3)
    return summary


@dataclass
class _Clicks:
    """The kept clicks, grouped by user in time order: event ``index``, ``user`` / ``item`` codes,
    ``time``, ``rank`` (0 for a user's first click), and ``total`` clicks before repeats were dropped."""

    index: np.ndarray
    user: np.ndarray
    item: np.ndarray
    time: np.ndarray
    rank: np.ndarray
    total: int


def _ordered_clicks(ucode: np.ndarray, icode: np.ndarray, ts: np.ndarray, is_click: np.ndarray, n_items: int,
                    keep_repeats: bool) -> _Clicks:
    """Clicks per user in time order (ties: input order); repeats of an already clicked item dropped."""
    click = np.flatnonzero(is_click)
    click = click[np.lexsort((click, ts[click], ucode[click]))]
    total = int(click.size)
    if not keep_repeats and click.size:
        _, first = np.unique(ucode[click] * n_items + icode[click], return_index=True)
        click = click[np.sort(first)]
    c_user = ucode[click]
    starts = np.flatnonzero(np.r_[True, c_user[1:] != c_user[:-1]]) if click.size else np.zeros(0, dtype=np.int64)
    rank = np.arange(click.size) - np.repeat(starts, np.diff(np.r_[starts, click.size]))
    return _Clicks(click, c_user, icode[click], ts[click], rank, total)


def _impressions(clicks: _Clicks, cfg: ConvertConfig, n_events: int) -> tuple[np.ndarray, float, np.ndarray]:
    """(positions in the click arrays that become impressions, split time, is-dev per impression)."""
    imp = np.flatnonzero(clicks.rank >= cfg.min_history)
    if imp.size == 0:
        raise ValueError(
            f"no impressions: no user has more than min_history={cfg.min_history} clicks "
            f"({clicks.total} clicks in {n_events} events)"
        )
    split_time = float(np.quantile(clicks.time, 1.0 - cfg.dev_fraction))
    is_dev = clicks.time[imp] >= split_time
    for name, count in (("train", int((~is_dev).sum())), ("dev", int(is_dev.sum()))):
        if count == 0:
            raise ValueError(
                f"the {name} split is empty: the {1 - cfg.dev_fraction:g} quantile of click times leaves no "
                f"impression on that side ({imp.size} impressions); change dev_fraction"
            )
    return imp, split_time, is_dev


def _candidates(rng: np.random.Generator, clicks: _Clicks, imp: np.ndarray, icode: np.ndarray, n_items: int,
                seen: np.ndarray, n_users: int, cfg: ConvertConfig):
    """Each impression's click plus its sampled non-clicks, shuffled: (impression, item, is-click) per
    candidate, grouped by impression, and the number of negatives each impression got."""
    weights = np.bincount(icode, minlength=n_items).astype(np.float64) ** cfg.popularity_power
    imp_user = clicks.user[imp]
    unseen = n_items - np.bincount(seen // n_items, minlength=n_users)
    want = np.minimum(cfg.negatives, unseen[imp_user])  # every item occurs, so every weight is > 0
    neg_imp, neg_item = _sample_negatives(rng, weights, seen, n_users, imp_user, want)
    got = np.bincount(neg_imp, minlength=imp.size)
    cand_imp = np.concatenate([np.arange(imp.size), neg_imp])
    cand_item = np.concatenate([clicks.item[imp], neg_item])
    label = np.concatenate([np.ones(imp.size, dtype=bool), np.zeros(neg_imp.size, dtype=bool)])
    order = np.lexsort((rng.random(cand_imp.size), cand_imp))
    return cand_imp[order], cand_item[order], label[order], got


def _histories(clicks: _Clicks, imp: np.ndarray, is_dev: np.ndarray, cand_imp: np.ndarray, cand_item: np.ndarray,
               news_ids: np.ndarray, n_items: int, history_len: int):
    """(history text per impression: the newest ``history_len`` earlier clicks; per split, a mask of
    the items its news.tsv must hold (candidates and histories); users with an impression)."""
    click_ids = news_ids[clicks.item].tolist()
    history = [""] * imp.size
    referenced = {"train": np.zeros(n_items, dtype=bool), "dev": np.zeros(n_items, dtype=bool)}
    for split, mask in referenced.items():
        mask[cand_item[is_dev[cand_imp] == (split == "dev")]] = True
    imp_user = clicks.user[imp]
    imp_starts = np.searchsorted(imp_user, np.unique(imp_user))  # impressions are grouped by user too
    imp_ends = np.r_[imp_starts[1:], imp.size]
    for a, b in zip(imp_starts.tolist(), imp_ends.tolist()):
        first = int(imp[a] - clicks.rank[imp[a]])  # the user's first click
        for j in range(a, b):
            pos = int(imp[j])
            history[j] = " ".join(click_ids[max(first, pos - history_len):pos])
        for split, sel in (("train", ~is_dev[a:b]), ("dev", is_dev[a:b])):
            positions = imp[a:b][sel]
            if positions.size and history_len:
                referenced[split][clicks.item[max(first, int(positions.min()) - history_len):int(positions.max())]] = True
    return history, referenced, int(imp_starts.size)


def _escape(name: str) -> str:
    """An original id as one TSV field: backslash, tab and line breaks escaped (``\\t``, ``\\n``...),
    so ids such as Last.FM's ``"artist<TAB>track"`` can be recovered exactly."""
    return name.encode("unicode_escape").decode("ascii") if _BREAKS.search(name) or "\\" in name else name
