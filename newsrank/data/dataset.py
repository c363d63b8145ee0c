"""MIND splits preprocessed once into integer arrays on disk.

A split becomes a :class:`NewsTable` (one row per news item, row 0 = padding news) and a
:class:`Behaviors` (impressions in CSR form: candidates of impression ``i`` are
``candidates[offsets[i]:offsets[i+1]]``). Both are written as ``.npy`` files (memory-mappable)
under a cache folder keyed by a hash of the input files' bytes, the vocabularies and the
:class:`~newsrank.config.DataConfig`, so a second run loads them without re-tokenizing.

The cache lives in ``$NEWSRANK_CACHE`` (default ``~/.cache/newsrank``), never inside the data
folder, which may be read-only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import DataConfig
from ..core.atomic import atomic_folder
from .mind import Impression, MindFormatError, NewsRecord, iter_behaviors, read_news, stream_split
from .vocab import _TOKEN_PATTERN, PAD, Vocab, Vocabularies, tokenize

CACHE_FORMAT = 3  # bump when the arrays' layout or meaning changes


def cache_root() -> Path:
    return Path(os.environ.get("NEWSRANK_CACHE", Path.home() / ".cache" / "newsrank"))


@dataclass
class NewsTable:
    """Token arrays of every news item of a split; row 0 is the padding news (all zeros)."""

    news_ids: list[str]  # [N] row -> MIND news id ("" for row 0)
    title: np.ndarray  # [N, title_len] int32 word indices, right-padded with PAD
    abstract: np.ndarray  # [N, abstract_len] int32
    category: np.ndarray  # [N] int32
    subcategory: np.ndarray  # [N] int32
    entities: np.ndarray  # [N, entity_len] int32 entity indices (title's, then abstract's), PAD-padded
    # [N, title_len] int32 entity index of each title word (aligned with ``title``; PAD where the word
    # is no entity mention): DKN's word-entity alignment, from the title entities' OccurrenceOffsets
    title_word_entities: np.ndarray
    # [N, P] float32 frozen PLM title vectors (newsrank.data.plm.attach_plm), only for models with
    # news_encoder=plm; never part of the preprocessing cache
    plm: np.ndarray | None = None
    # news_encoder=plm with plm_tune_last > 0: [T, P] token states below the tuned layers, every row's
    # title tokens one after the other, and [N + 1] int64 offsets into them (newsrank.data.plm)
    plm_states: np.ndarray | None = None
    plm_offsets: np.ndarray | None = None
    # the same three for the abstract (NAML's body view with plm_views: title,body)
    plm_body: np.ndarray | None = None
    plm_body_states: np.ndarray | None = None
    plm_body_offsets: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.news_ids)


@dataclass
class Behaviors:
    """Impressions of a split as flat arrays."""

    impression_ids: list[str]  # [I]
    users: np.ndarray  # [I] int32 user-vocabulary index (UNK for users unseen in training)
    times: np.ndarray  # [I] int64 seconds since the epoch (naive MIND time read as UTC)
    history: np.ndarray  # [I, history_len] int32 news rows, left-padded: most recent click last
    offsets: np.ndarray  # [I + 1] int64 CSR offsets into candidates / labels
    candidates: np.ndarray  # [T] int32 news rows
    labels: np.ndarray  # [T] int8: 1 click, 0 no click, -1 unlabelled (MIND-large test)

    def __len__(self) -> int:
        return len(self.impression_ids)

    @property
    def labelled(self) -> bool:
        return bool(len(self.labels)) and bool((self.labels >= 0).all())

    def slice(self, lo: int, hi: int) -> "Behaviors":
        """Impressions [lo, hi), offsets rebased to 0."""
        start, stop = int(self.offsets[lo]), int(self.offsets[hi])
        return Behaviors(self.impression_ids[lo:hi], self.users[lo:hi], self.times[lo:hi], self.history[lo:hi],
                         np.asarray(self.offsets[lo : hi + 1]) - start, self.candidates[start:stop],
                         self.labels[start:stop])


# --------------------------------------------------------------------------- vocabularies


def build_vocabularies(train_dir: str | Path, config: DataConfig) -> Vocabularies:
    """Vocabularies from the training split only (words from titles and abstracts, entities from
    the title and abstract entity columns)."""
    train_dir = Path(train_dir)
    news = read_news(train_dir / "news.tsv")
    words: Counter = Counter()
    categories: Counter = Counter()
    subcategories: Counter = Counter()
    entities: Counter = Counter()
    for record in news.values():
        entities.update(news_entity_ids(record))
        words.update(tokenize(record.title))
        words.update(tokenize(record.abstract))
        categories[record.category] += 1
        subcategories[record.subcategory] += 1
    users: Counter = Counter(imp.user_id for imp in iter_behaviors(train_dir / "behaviors.tsv", news))
    return Vocabularies(
        words=Vocab.from_counts(words, min_count=config.min_word_count),
        categories=Vocab.from_counts(categories),
        subcategories=Vocab.from_counts(subcategories),
        users=Vocab.from_counts(users),
        entities=Vocab.from_counts(entities),
    )


# --------------------------------------------------------------------------- arrays


def news_entity_ids(record: NewsRecord) -> list[str]:
    """WikidataIds of a news item's entities: title entities first, then abstract entities, each
    in order of first occurrence, without repeats (entities lacking a WikidataId are skipped)."""
    ids = (e.get("WikidataId") for e in record.title_entities + record.abstract_entities)
    return list(dict.fromkeys(i for i in ids if isinstance(i, str) and i))


def _entity_matrix(records: list[NewsRecord], vocab: Vocab, length: int) -> np.ndarray:
    out = np.zeros((len(records) + 1, length), dtype=np.int32)  # [N, length], row 0 = padding news
    for row, record in enumerate(records, start=1):
        ids = vocab.lookup_many(news_entity_ids(record)[:length])
        out[row, : len(ids)] = ids
    return out


def title_word_entity_ids(record: NewsRecord) -> list[str | None]:
    """The WikidataId mentioned at each token of ``tokenize(record.title)`` (None where none).

    A mention is MIND's (OccurrenceOffsets[k], SurfaceForms[k]): a character span of the title; every
    token overlapping it gets the entity. An offset whose span does not hold the surface form (case
    aside) falls back to the surface form's first occurrence; a form not in the title is skipped.
    """
    title = record.title
    text = title.lower() if len(title.lower()) == len(title) else title  # spans stay in title's characters
    spans = [m.span() for m in _TOKEN_PATTERN.finditer(text)]
    out: list[str | None] = [None] * len(spans)
    for entity in record.title_entities:
        qid = entity.get("WikidataId")
        if not isinstance(qid, str) or not qid:
            continue
        for offset, form in zip(entity.get("OccurrenceOffsets") or [], entity.get("SurfaceForms") or []):
            if not isinstance(form, str) or not form:
                continue
            if not isinstance(offset, int) or text[offset : offset + len(form)] != form.lower():
                offset = text.find(form.lower())
                if offset < 0:
                    continue
            end = offset + len(form)
            for i, (lo, hi) in enumerate(spans):
                if lo < end and hi > offset and out[i] is None:
                    out[i] = qid
    return out


def _title_entity_matrix(records: list[NewsRecord], vocab: Vocab, length: int) -> np.ndarray:
    out = np.zeros((len(records) + 1, length), dtype=np.int32)  # [N, length], row 0 = padding news
    for row, record in enumerate(records, start=1):
        for i, qid in enumerate(title_word_entity_ids(record)[:length]):
            if qid is not None:
                out[row, i] = vocab.lookup(qid)
    return out


def _token_matrix(texts: list[str], vocab: Vocab, length: int) -> np.ndarray:
    out = np.zeros((len(texts), length), dtype=np.int32)  # [N, length], PAD = 0
    for row, text in enumerate(texts):
        ids = vocab.lookup_many(tokenize(text)[:length])
        out[row, : len(ids)] = ids
    return out


def build_news_table(news: dict[str, NewsRecord], vocabs: Vocabularies, config: DataConfig) -> NewsTable:
    records = list(news.values())
    cat_lookup, sub_lookup = vocabs.categories.lookup, vocabs.subcategories.lookup
    return NewsTable(
        news_ids=[""] + [r.news_id for r in records],
        title=_token_matrix([""] + [r.title for r in records], vocabs.words, config.title_len),
        abstract=_token_matrix([""] + [r.abstract for r in records], vocabs.words, config.abstract_len),
        category=np.array([PAD] + [cat_lookup(r.category) for r in records], dtype=np.int32),
        subcategory=np.array([PAD] + [sub_lookup(r.subcategory) for r in records], dtype=np.int32),
        entities=_entity_matrix(records, vocabs.entities, config.entity_len),
        title_word_entities=_title_entity_matrix(records, vocabs.entities, config.title_len),
    )


def build_behaviors(
    impressions: Iterable[Impression], news_row: dict[str, int], vocabs: Vocabularies, config: DataConfig,
    chunk: int = 8192,
) -> Behaviors:
    """Integer arrays of impressions read one at a time (``iter_behaviors``), converted ``chunk``
    impressions at a time into arrays that grow by doubling: no split's rows or per-impression
    objects are ever held at once."""
    h = config.history_len
    history = _Growing((h,), np.int32)  # [I, H] left-padded, most recent click last
    users, times, lengths = _Growing((), np.int32), _Growing((), np.int64), _Growing((), np.int64)
    candidates, labels = _Growing((), np.int32), _Growing((), np.int8)
    impression_ids: list[str] = []
    epoch = datetime(1970, 1, 1)
    rows: list[list[int]] = []
    pending: dict[str, list] = {"users": [], "times": [], "lengths": [], "candidates": [], "labels": []}

    def flush() -> None:
        block = np.zeros((len(rows), h), dtype=np.int32)
        for i, recent in enumerate(rows):
            if recent:
                block[i, h - len(recent):] = recent
        history.append(block)
        for name, target, dtype in (("users", users, np.int32), ("times", times, np.int64),
                                    ("lengths", lengths, np.int64), ("candidates", candidates, np.int32),
                                    ("labels", labels, np.int8)):
            target.append(np.array(pending[name], dtype=dtype))
            pending[name].clear()
        rows.clear()

    for imp in impressions:
        # MIND histories are oldest first: keep the newest N.
        rows.append([news_row[x] for x in imp.history[-h:]] if h and imp.history else [])
        impression_ids.append(imp.impression_id)
        pending["users"].append(vocabs.users.lookup(imp.user_id))
        pending["times"].append(int((imp.time - epoch).total_seconds()))
        pending["lengths"].append(len(imp.candidates))
        pending["candidates"].extend(news_row[x] for x in imp.candidates)
        pending["labels"].extend(imp.labels if imp.labels is not None else [-1] * len(imp.candidates))
        if len(rows) >= chunk:
            flush()
    flush()
    offsets = np.zeros(len(impression_ids) + 1, dtype=np.int64)
    np.cumsum(lengths.array(), out=offsets[1:])
    return Behaviors(impression_ids=impression_ids, users=users.array(), times=times.array(),
                     history=history.array(), offsets=offsets, candidates=candidates.array(), labels=labels.array())


class _Growing:
    """A NumPy array appended to in place, its capacity doubling (amortised O(1) per row)."""

    def __init__(self, row_shape: tuple[int, ...], dtype):
        self.data = np.empty((1024, *row_shape), dtype=dtype)
        self.size = 0

    def append(self, rows: np.ndarray) -> None:
        end = self.size + len(rows)
        if end > len(self.data):
            grown = np.empty((max(end, 2 * len(self.data)), *self.data.shape[1:]), dtype=self.data.dtype)
            grown[: self.size] = self.data[: self.size]
            self.data = grown
        self.data[self.size : end] = rows
        self.size = end

    def array(self) -> np.ndarray:
        return self.data[: self.size].copy()


# --------------------------------------------------------------------------- cache


def _file_digest(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _split_key(split_dir: Path, *parts: str) -> str:
    digest = hashlib.sha256()
    for name in ("news.tsv", "behaviors.tsv"):
        path = split_dir / name
        if not path.is_file():
            raise MindFormatError(path, None, None, "file not found")
        digest.update(_file_digest(path).encode())
    for part in (str(CACHE_FORMAT), *parts):
        digest.update(part.encode())
    return digest.hexdigest()[:24]


def load_vocabularies(train_dir: str | Path, config: DataConfig, use_cache: bool = True) -> Vocabularies:
    """Training-split vocabularies, cached by the split's bytes and the data config."""
    train_dir = Path(train_dir)
    key = _split_key(train_dir, "vocab", json.dumps(dataclasses.asdict(config), sort_keys=True))
    path = cache_root() / "vocab" / key / "vocab.json"
    if use_cache and path.is_file():
        return Vocabularies.from_json(json.loads(path.read_text(encoding="utf-8")))
    vocabs = build_vocabularies(train_dir, config)
    if use_cache:
        with atomic_folder(path.parent, keep_existing=True) as tmp:  # content-addressed: a twin is the same
            (tmp / "vocab.json").write_text(json.dumps(vocabs.to_json(), ensure_ascii=False), encoding="utf-8")
    return vocabs


def _save_arrays(folder: Path, news: NewsTable, behaviors: Behaviors) -> None:
    for prefix, obj in (("news", news), ("behaviors", behaviors)):
        strings = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if f.name.startswith("plm"):  # attached after loading, cached on its own
                continue
            if isinstance(value, np.ndarray):
                np.save(folder / f"{prefix}.{f.name}.npy", value)
            else:
                strings[f.name] = value
        (folder / f"{prefix}.json").write_text(json.dumps(strings), encoding="utf-8")


def _load_arrays(folder: Path) -> tuple[NewsTable, Behaviors]:
    loaded = []
    for prefix, cls in (("news", NewsTable), ("behaviors", Behaviors)):
        values = json.loads((folder / f"{prefix}.json").read_text(encoding="utf-8"))
        for f in dataclasses.fields(cls):
            if f.name not in values and f.default is dataclasses.MISSING:
                values[f.name] = np.load(folder / f"{prefix}.{f.name}.npy", mmap_mode="r")
        loaded.append(cls(**values))
    return loaded[0], loaded[1]


def load_split(
    split_dir: str | Path, vocabs: Vocabularies, config: DataConfig, use_cache: bool = True
) -> tuple[NewsTable, Behaviors]:
    """A split's arrays: from the cache when the same files and settings were seen before."""
    split_dir = Path(split_dir)
    key = _split_key(split_dir, vocabs.digest(), json.dumps(dataclasses.asdict(config), sort_keys=True))
    folder = cache_root() / "splits" / key
    if use_cache and (folder / "behaviors.json").is_file():
        return _load_arrays(folder)
    news, impressions = stream_split(split_dir)  # behaviors as a stream: one row at a time
    table = build_news_table(news, vocabs, config)
    news_row = {news_id: row for row, news_id in enumerate(table.news_ids) if row}
    behaviors = build_behaviors(impressions, news_row, vocabs, config)
    if use_cache:
        with atomic_folder(folder, keep_existing=True) as tmp:  # content-addressed: a twin is the same
            _save_arrays(tmp, table, behaviors)
    return table, behaviors
