"""Per-user, time-ordered item sequences with time intervals (Time-LSTM inputs).

:func:`build_sequences` turns an event table (``user``, ``item``, ``timestamp`` from
:mod:`newsrank.seq.events`) into one :class:`UserSequence` per user:

1. the item vocabulary is built from *all* events by popularity (event count, ties by item id
   ascending); index 0 is padding, the most popular item is 1; ``max_items`` keeps the top V;
2. events of items outside the vocabulary are dropped, so the interval of a dropped event folds
   into the next kept one (intervals are computed on the kept events' timestamps);
3. each user's events are sorted by time (stable: equal times keep file order) and the most
   recent ``max_length`` are kept (``keep_events="first"``: the first ``max_length``, as the
   official Time-LSTM code cuts); users with fewer than ``min_length`` kept events are dropped;
4. intervals, on the kept events, in seconds then scaled by ``interval_scale``:
   ``delta_prev[t] = ts[t] - ts[t-1]`` (0 for the first), ``delta_next[t] = ts[t+1] - ts[t]`` (the
   time at which the next item is predicted; 0 for the last), ``since_first[t] = ts[t] - ts[0]``
   (PLSTM's time input).

Slicing a sequence (:meth:`UserSequence.head`) keeps these values, so a prefix's last
``delta_next`` is the interval to the event that follows it: the prefix fed to a model when that
event is the target carries the time at which the prediction is made.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np
import pandas as pd

IntervalScale = Literal["log1p", "hours", "days", "none"]
PAD = 0
PAD_TOKEN = "<pad>"


@dataclass
class SequenceConfig:
    """``max_items``: keep the top-V items by popularity (None: all). ``max_length``: keep each
    user's most recent N events (``keep_events="first"``: the first N). ``min_length``: drop users
    with fewer kept events. ``interval_scale``: how seconds are scaled for the model (``log1p``:
    ln(1 + s); ``hours``; ``days``; ``none``: seconds as float)."""

    max_items: int | None = None
    max_length: int = 200
    min_length: int = 3
    interval_scale: IntervalScale = "log1p"
    keep_events: Literal["last", "first"] = "last"

    def __post_init__(self) -> None:
        if self.max_items is not None and self.max_items < 1:
            raise ValueError(f"max_items must be >= 1 or None, got {self.max_items}")
        if self.max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {self.max_length}")
        if self.min_length < 1:
            raise ValueError(f"min_length must be >= 1, got {self.min_length}")
        if self.interval_scale not in ("log1p", "hours", "days", "none"):
            raise ValueError(f"unknown interval_scale {self.interval_scale!r}")
        if self.keep_events not in ("last", "first"):
            raise ValueError(f"keep_events must be 'last' or 'first', got {self.keep_events!r}")


def scale_intervals(seconds: np.ndarray, scale: IntervalScale) -> np.ndarray:
    """Scale non-negative intervals in seconds: ``log1p`` -> ln(1+s), ``hours`` -> s/3600,
    ``days`` -> s/86400, ``none`` -> s (float64)."""
    seconds = np.asarray(seconds, dtype=np.float64)
    if scale == "log1p":
        return np.log1p(seconds)
    if scale == "hours":
        return seconds / 3600.0
    if scale == "days":
        return seconds / 86400.0
    if scale == "none":
        return seconds
    raise ValueError(f"unknown interval_scale {scale!r}")


@dataclass
class ItemVocab:
    """``items[i]`` is the item id of index i (``items[0]`` is the padding token); ``counts[i]``
    its number of events in the whole log (0 for padding)."""

    items: list[str]
    counts: np.ndarray
    index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.index = {item: i for i, item in enumerate(self.items) if i != PAD}

    def __len__(self) -> int:
        return len(self.items)

    def encode(self, items: Sequence[str]) -> np.ndarray:
        """Indices of ``items``; 0 (padding) for items outside the vocabulary."""
        return np.array([self.index.get(item, PAD) for item in items], dtype=np.int64)


@dataclass
class UserSequence:
    """One user's kept events, oldest first: ``items`` (vocabulary indices, >= 1), raw
    ``timestamps`` (int64 seconds) and scaled ``delta_prev``, ``delta_next``, ``since_first``
    (float64), all of length L."""

    user: str
    items: np.ndarray
    timestamps: np.ndarray
    delta_prev: np.ndarray
    delta_next: np.ndarray
    since_first: np.ndarray

    def __len__(self) -> int:
        return len(self.items)

    def head(self, n: int) -> "UserSequence":
        """The first ``n`` events (``n`` may be negative, as in slicing). Interval values are kept
        as they are: the last ``delta_next`` is the interval to the event after the prefix."""
        return UserSequence(
            self.user,
            self.items[:n],
            self.timestamps[:n],
            self.delta_prev[:n],
            self.delta_next[:n],
            self.since_first[:n],
        )


def build_vocab(events: pd.DataFrame, max_items: int | None = None) -> ItemVocab:
    """Items by popularity (event count descending, ties by item id ascending), padding first."""
    counts = events["item"].astype(str).value_counts(sort=False)
    table = pd.DataFrame({"item": counts.index.astype(str), "count": counts.to_numpy(dtype=np.int64)})
    table = table.sort_values(["count", "item"], ascending=[False, True], kind="mergesort")
    if max_items is not None:
        table = table.head(max_items)
    return ItemVocab(
        items=[PAD_TOKEN, *table["item"].tolist()],
        counts=np.concatenate([[0], table["count"].to_numpy(dtype=np.int64)]),
    )


def build_sequences(
    events: pd.DataFrame, config: SequenceConfig | None = None, vocab: ItemVocab | None = None
) -> tuple[list[UserSequence], ItemVocab]:
    """Per-user sequences (users in order of first appearance in ``events``) and the vocabulary
    (built from ``events`` unless given). See the module docstring for the steps."""
    config = config or SequenceConfig()
    for column in ("user", "item", "timestamp"):
        if column not in events.columns:
            raise ValueError(f"events need a {column!r} column; have {list(events.columns)}")
    if vocab is None:
        vocab = build_vocab(events, config.max_items)

    frame = pd.DataFrame(
        {
            "user": events["user"].astype(str).to_numpy(),
            "item": events["item"].astype(str).map(vocab.index).fillna(PAD).to_numpy(dtype=np.int64),
            "timestamp": events["timestamp"].to_numpy(dtype=np.int64),
        }
    )
    frame["ucode"] = pd.factorize(frame["user"])[0]
    frame["order"] = np.arange(len(frame))
    frame = frame[frame["item"] != PAD]
    frame = frame.sort_values(["ucode", "timestamp", "order"], kind="mergesort")
    # position from the end (keep the most recent) or from the start (keep the first events)
    rank = frame.groupby("ucode", sort=False).cumcount(ascending=config.keep_events == "first").to_numpy()
    frame = frame[rank < config.max_length]
    lengths = frame.groupby("ucode", sort=False)["item"].transform("size").to_numpy()
    frame = frame[lengths >= config.min_length]
    if frame.empty:
        return [], vocab

    ucode = frame["ucode"].to_numpy()
    ts = frame["timestamp"].to_numpy(dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, ucode[1:] != ucode[:-1]])
    ends = np.r_[starts[1:], len(ts)]
    first = np.zeros(len(ts), dtype=bool)
    first[starts] = True
    last = np.zeros(len(ts), dtype=bool)
    last[ends - 1] = True

    gaps = np.diff(ts)  # gaps[i] = ts[i+1] - ts[i]
    prev = np.r_[0, gaps]
    prev[first] = 0
    nxt = np.r_[gaps, 0]
    nxt[last] = 0
    since = ts - np.repeat(ts[starts], ends - starts)

    scale = config.interval_scale
    prev_s, next_s, since_s = (scale_intervals(x, scale) for x in (prev, nxt, since))
    items = frame["item"].to_numpy(dtype=np.int64)
    users = frame["user"].to_numpy()
    sequences = [
        UserSequence(
            user=str(users[a]),
            items=items[a:b],
            timestamps=ts[a:b],
            delta_prev=prev_s[a:b],
            delta_next=next_s[a:b],
            since_first=since_s[a:b],
        )
        for a, b in zip(starts.tolist(), ends.tolist())
    ]
    return sequences, vocab


def training_gaps(sequences: Sequence[UserSequence]) -> np.ndarray:
    """Every gap between consecutive kept events of ``sequences``, in seconds (int64): the raw
    Δt each training step predicts across. Empty when no sequence has two events."""
    gaps = [np.diff(s.timestamps) for s in sequences if len(s) >= 2]
    return np.concatenate(gaps) if gaps else np.zeros(0, dtype=np.int64)


def pad_sequences(
    sequences: Sequence[UserSequence], max_length: int | None = None, dtype=np.float32
) -> dict[str, np.ndarray]:
    """Right-padded batch arrays of shape [B, Lmax]: ``items`` (int64, 0 = padding),
    ``timestamps`` (int64), ``delta_prev``, ``delta_next``, ``since_first`` (``dtype``), ``mask``
    (bool, True on real events) and ``lengths`` [B]. ``max_length`` keeps each sequence's last
    ``max_length`` events (default: the longest sequence's length)."""
    if max_length is not None:
        sequences = [_tail(s, max_length) if len(s) > max_length else s for s in sequences]
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    width = int(lengths.max()) if len(lengths) else 0
    batch = len(sequences)
    positions = np.arange(width)
    mask = positions[None, :] < lengths[:, None]

    def stack(name: str, kind) -> np.ndarray:
        out = np.zeros((batch, width), dtype=kind)
        if batch and width:
            out[mask] = np.concatenate([getattr(s, name) for s in sequences]).astype(kind, copy=False)
        return out

    return {
        "items": stack("items", np.int64),
        "timestamps": stack("timestamps", np.int64),
        "delta_prev": stack("delta_prev", dtype),
        "delta_next": stack("delta_next", dtype),
        "since_first": stack("since_first", dtype),
        "mask": mask,
        "lengths": lengths,
    }


def _tail(s: UserSequence, n: int) -> UserSequence:
    return UserSequence(
        s.user, s.items[-n:], s.timestamps[-n:], s.delta_prev[-n:], s.delta_next[-n:], s.since_first[-n:]
    )


@dataclass
class SequenceSplit:
    """``train``: sequences to train on (every position predicts the next item). ``test``: whole
    sequences whose *last* event is the target; use :func:`split_last` to get the model inputs
    (all but the last event) and the targets."""

    train: list[UserSequence]
    test: list[UserSequence]


def split_last(sequences: Sequence[UserSequence]) -> tuple[list[UserSequence], np.ndarray]:
    """``(prefixes, targets)``: each sequence without its last event, and that event's item. The
    prefix's last ``delta_next`` is the interval to the target (the time of the prediction)."""
    short = [s.user for s in sequences if len(s) < 2]
    if short:
        raise ValueError(f"{len(short)} sequences have fewer than 2 events (first: user {short[0]!r})")
    return [s.head(-1) for s in sequences], np.array([s.items[-1] for s in sequences], dtype=np.int64)


def reference_split(sequences: Sequence[UserSequence], test_fraction: float = 0.1) -> SequenceSplit:
    """The Time-LSTM reference protocol (Zhu et al., IJCAI 2017): users are sorted by history
    length (stable, so equal lengths keep their order) and the last ``test_fraction`` of them (the
    longest histories; ``round(test_fraction * n)``, at least 1 when ``test_fraction > 0``) are
    test users. Train users' whole sequences are training data; each test user's last item is
    predicted from the rest of that user's sequence (test users contribute nothing to training)."""
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    n = len(sequences)
    n_test = int(round(test_fraction * n))
    if test_fraction > 0 and n > 1:
        n_test = min(max(n_test, 1), n - 1)
    order = np.argsort(np.array([len(s) for s in sequences], dtype=np.int64), kind="stable")
    cut = n - n_test
    return SequenceSplit(
        train=[sequences[i] for i in order[:cut]],
        test=[sequences[i] for i in order[cut:]],
    )


def leave_last_out(sequences: Sequence[UserSequence]) -> SequenceSplit:
    """Leave-last-out: for every user, train on all but the last event; the test set is every
    user's whole sequence, whose last event is predicted from the rest (:func:`split_last`).
    Sequences need at least 2 events."""
    prefixes, _ = split_last(sequences)
    return SequenceSplit(train=prefixes, test=list(sequences))


def make_split(sequences: list[UserSequence], config) -> SequenceSplit:
    """The split ``config.split`` names (a :class:`~newsrank.seq.config.SeqDataConfig`)."""
    if config.split == "reference":
        return reference_split(sequences, config.test_fraction)
    return leave_last_out(sequences)
