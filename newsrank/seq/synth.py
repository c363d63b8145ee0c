"""Synthetic time-stamped event logs in which the interval until the next event carries the signal.

Time-LSTM (Zhu et al., IJCAI 2017) feeds the interval ``delta_next`` between the last observed
event and the moment of the prediction into its time gates. Its claim is that this interval
changes *what* comes next, which a plain LSTM over the item sequence cannot know. This module
writes a log where that is true by construction, and where it is the *only* thing a time-blind
model is missing, so a test or a benchmark can check that the time gates actually use it.

Generative story (all randomness from one ``numpy.random.Generator(PCG64(seed))``):

1. **Items.** ``items`` items are spread over ``genres`` genres (as evenly as possible, randomly
   assigned, so an item id says nothing about its genre). Within a genre, popularity is Zipf-like:
   the item of within-genre rank r is chosen with weight ``(r + 1) ** -popularity_exponent``.
2. **Users.** Each user has a long-term *favourite* genre (uniform) and a *side interest*: a
   Dirichlet(``side_concentration``) distribution over the other ``genres - 1`` genres (a small
   concentration puts most of it on one or two genres). A user has ``min_events``..``max_events``
   events (uniform); the first falls uniformly in ``[start, start + start_spread_days)``.
3. **Transitions.** After each event the user draws, independently of everything before, one of
   three kinds of transition; the kind sets both the gap to the next event and its genre:

   ========== ================== ======================== =========================================
   kind       probability        gap (log-uniform)        genre of the next event
   ========== ================== ======================== =========================================
   continue   ``continue_prob``  ``short_gap`` (minutes)  the current genre (the session goes on)
   switch     ``switch_prob``    ``medium_gap`` (hours)   side interest, never the current genre
   return     the rest           ``long_gap`` (days)      favourite with ``favourite_return_prob``,
                                                          else side interest
   ========== ================== ======================== =========================================

   The user's first event is a "return" (a visit starts with the favourite, usually). A *session*
   is a run of events joined by short gaps; since "continue" is drawn afresh each step, session
   lengths are geometric (memoryless): neither the position in a session nor its length so far
   says when it ends. About ``switch / (switch + return)`` of the sessions are of a non-favourite
   genre, so "the next event has the current genre" and "the next event has the favourite genre"
   are both often wrong; only the gap tells them apart.
4. **Items of an event.** An item of the event's genre by within-genre popularity, never the same
   item as the user's previous event (redrawn until different; consumption logs such as MovieLens
   have no immediate repeats, and "repeat the last item" would be a trivial shortcut).

The three gap ranges do not overlap (checked), so the gap alone identifies the transition kind.
Past gaps carry no information about the next one (transitions are independent), which is why
a model must use the interval *until the next event* (``delta_next`` in
:mod:`newsrank.seq.sequences`), not only the intervals between past events.

Diagnostics (in the summary of :func:`write_synthetic_events`, from :func:`genre_diagnostics`),
next-genre accuracy over every event that has a predecessor, each rule knowing the user's true
favourite genre and side interest:

* ``oracle_genre_accuracy``: the Bayes-optimal rule that also knows the gap: short -> current
  genre, medium -> most likely side genre other than the current one, long -> favourite;
* ``time_rule_genre_accuracy``: the two-case rule "short gap -> current genre, otherwise ->
  favourite" (gets every switch wrong);
* ``time_blind_oracle_genre_accuracy``: the Bayes-optimal rule without the gap (the most likely
  next genre given the current genre, mixing the three kinds by their probabilities), the ceiling
  of any model that ignores time;
* ``last_genre_accuracy`` ("same genre as the current event") and ``favourite_genre_accuracy``
  ("always the favourite"), the two simple time-blind rules;
* ``oracle_recall_at_10`` / ``time_blind_oracle_recall_at_10``: how often the true next item is
  among the 10 most likely items under the exact next-item distribution with / without the gap
  (ceilings for Recall@10 of a next-item model, e.g. Time-LSTM vs LSTM).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["KINDS", "SeqSynthConfig", "generate_events", "genre_diagnostics", "item_genres", "write_synthetic_events"]

KINDS = ("start", "continue", "switch", "return")  # values of the ``kind`` column (codes 0-3)
_START, _CONTINUE, _SWITCH, _RETURN = range(4)
_DAY = 86400


@dataclass
class SeqSynthConfig:
    """Size, seed and generative knobs of the synthetic event log (see the module docstring).

    Gaps are ``(low, high)`` in seconds, drawn log-uniformly and rounded to whole seconds; the
    three ranges must be ordered and disjoint (short < medium < long).
    """

    users: int = 1000
    items: int = 500
    genres: int = 10
    min_events: int = 20  # events per user ~ uniform integer in [min_events, max_events]
    max_events: int = 80
    seed: int = 0
    continue_prob: float = 0.55  # next event continues the session (short gap, same genre)
    switch_prob: float = 0.25  # next event starts a side-interest session (medium gap, other genre)
    # The remaining 1 - continue_prob - switch_prob: a long break, then a return to the favourite.
    favourite_return_prob: float = 0.9  # after a long break: favourite genre, else a side-interest genre
    side_concentration: float = 0.5  # Dirichlet concentration of the side interest over non-favourite genres
    popularity_exponent: float = 1.0  # within-genre Zipf exponent (0: uniform within the genre)
    short_gap: tuple[int, int] = (10, 1800)  # 10 s .. 30 min
    medium_gap: tuple[int, int] = (3600, 12 * 3600)  # 1 h .. 12 h
    long_gap: tuple[int, int] = (_DAY, 10 * _DAY)  # 1 .. 10 days
    start: int = 1_577_836_800  # 2020-01-01 00:00:00 UTC: earliest first event (epoch seconds)
    start_spread_days: float = 30.0  # users' first events are uniform over this many days from ``start``

    def __post_init__(self) -> None:
        if self.users < 1:
            raise ValueError(f"users must be >= 1, got {self.users}")
        if self.genres < 3:
            raise ValueError(f"genres must be >= 3 (a favourite and a choice of side genres), got {self.genres}")
        if self.items < 2 * self.genres:
            raise ValueError(
                f"items must be >= 2 * genres = {2 * self.genres} (at least two items per genre, so an "
                f"item can differ from the previous one), got {self.items}"
            )
        if not 2 <= self.min_events <= self.max_events:
            raise ValueError(f"need 2 <= min_events <= max_events, got {self.min_events}, {self.max_events}")
        for name in ("continue_prob", "switch_prob", "favourite_return_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if self.continue_prob + self.switch_prob > 1.0 + 1e-12:
            raise ValueError(
                f"continue_prob + switch_prob must be <= 1 (the rest are long breaks), got "
                f"{self.continue_prob} + {self.switch_prob}"
            )
        if self.side_concentration <= 0:
            raise ValueError(f"side_concentration must be > 0, got {self.side_concentration}")
        if self.popularity_exponent < 0:
            raise ValueError(f"popularity_exponent must be >= 0, got {self.popularity_exponent}")
        previous_high, previous_name = 0, None
        for name in ("short_gap", "medium_gap", "long_gap"):
            gap = tuple(getattr(self, name))
            if len(gap) != 2 or not 1 <= gap[0] <= gap[1]:
                raise ValueError(f"{name} must be (low, high) seconds with 1 <= low <= high, got {gap}")
            if gap[0] <= previous_high:
                raise ValueError(
                    f"{name} {gap} overlaps {previous_name} (ending at {previous_high} s): the gap ranges must "
                    "be disjoint and ordered, so the gap identifies the transition"
                )
            previous_high, previous_name = gap[1], name
        if self.start_spread_days < 0:
            raise ValueError(f"start_spread_days must be >= 0, got {self.start_spread_days}")

    @property
    def return_prob(self) -> float:
        """Probability of a long break (the transitions that are neither continue nor switch)."""
        return max(0.0, 1.0 - self.continue_prob - self.switch_prob)


@dataclass
class _World:
    item_genre: np.ndarray  # (I,) genre of item i (item id = i + 1)
    genre_items: np.ndarray  # (I,) item indices grouped by genre, most popular first within a genre
    genre_bounds: np.ndarray  # (G + 1,) genre g's items are genre_items[bounds[g]:bounds[g + 1]]
    item_prob: np.ndarray  # (I,) probability of item i within its genre
    favourite: np.ndarray  # (U,) favourite genre
    side: np.ndarray  # (U, G) side interest: a distribution over genres, 0 on the favourite


def _make_world(rng: np.random.Generator, cfg: SeqSynthConfig) -> _World:
    n_items, n_genres = cfg.items, cfg.genres
    item_genre = rng.permutation(np.arange(n_items) % n_genres)  # even sizes, random membership
    # Within a genre, items in id order get ranks 0, 1, ...; ids are random w.r.t. genre, so this
    # is a random popularity order.
    genre_items = np.argsort(item_genre, kind="stable")
    genre_bounds = np.searchsorted(item_genre[genre_items], np.arange(n_genres + 1))
    rank = np.empty(n_items, dtype=np.int64)
    rank[genre_items] = np.arange(n_items) - genre_bounds[item_genre[genre_items]]
    weight = (rank + 1.0) ** -cfg.popularity_exponent
    item_prob = weight / np.bincount(item_genre, weights=weight, minlength=n_genres)[item_genre]

    favourite = rng.integers(n_genres, size=cfg.users)
    side = rng.gamma(cfg.side_concentration, size=(cfg.users, n_genres)) + 1e-12  # Dirichlet via gammas
    side[np.arange(cfg.users), favourite] = 0.0
    side /= side.sum(axis=1, keepdims=True)
    return _World(item_genre, genre_items, genre_bounds, item_prob, favourite, side)


def _pick_rows(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One column index per row of ``probs`` (rows sum to 1), by inverse CDF."""
    cum = np.cumsum(probs, axis=1)
    r = rng.random(len(probs)) * cum[:, -1]
    return np.minimum((cum <= r[:, None]).sum(axis=1), probs.shape[1] - 1)


def _log_uniform(rng: np.random.Generator, gap: tuple[int, int], size: int) -> np.ndarray:
    low, high = np.log(gap[0]), np.log(gap[1])
    return np.clip(np.rint(np.exp(rng.uniform(low, high, size=size))), gap[0], gap[1]).astype(np.int64)


def _simulate(cfg: SeqSynthConfig) -> tuple[pd.DataFrame, _World]:
    rng = np.random.Generator(np.random.PCG64(cfg.seed))
    # The world must stay the generator's first use: item_genres and genre_diagnostics rebuild it
    # from the seed alone.
    world = _make_world(rng, cfg)
    n_users = cfg.users
    lengths = rng.integers(cfg.min_events, cfg.max_events + 1, size=n_users)
    first_time = cfg.start + (rng.random(n_users) * cfg.start_spread_days * _DAY).astype(np.int64)
    cum_item = np.cumsum(world.item_prob[world.genre_items])  # for inverse-CDF item draws within a genre
    cum_item = np.concatenate([[0.0], cum_item])

    def draw_items(genre: np.ndarray) -> np.ndarray:
        lo, hi = world.genre_bounds[genre], world.genre_bounds[genre + 1]
        r = cum_item[lo] + rng.random(genre.size) * (cum_item[hi] - cum_item[lo])
        pos = np.clip(np.searchsorted(cum_item, r, side="right") - 1, lo, hi - 1)
        return world.genre_items[pos]

    width = int(lengths.max())
    genre = np.zeros((n_users, width), dtype=np.int64)
    item = np.zeros((n_users, width), dtype=np.int64)
    kind = np.zeros((n_users, width), dtype=np.int8)
    gap = np.zeros((n_users, width), dtype=np.int64)  # gap[u, t]: seconds from event t - 1 to event t
    # Position by position, all users at once (a user's next genre depends on the current one).
    for t in range(width):
        users = np.flatnonzero(lengths > t)
        fav = world.favourite[users]
        if t == 0:
            k = np.full(users.size, _START, dtype=np.int8)
            g = np.where(rng.random(users.size) < cfg.favourite_return_prob, fav, -1)
            current = None
        else:
            current = genre[users, t - 1]
            u = rng.random(users.size)
            k = np.where(u < cfg.continue_prob, _CONTINUE,
                         np.where(u < cfg.continue_prob + cfg.switch_prob, _SWITCH, _RETURN)).astype(np.int8)
            g = np.where(k == _CONTINUE, current, -1)
            back = k == _RETURN
            g[back] = np.where(rng.random(int(back.sum())) < cfg.favourite_return_prob, fav[back], -1)
            switch = k == _SWITCH
            if switch.any():  # side interest without the current genre
                probs = world.side[users[switch]].copy()
                probs[np.arange(int(switch.sum())), current[switch]] = 0.0
                empty = probs.sum(axis=1) <= 0  # all side mass on the current genre: any other non-favourite
                if empty.any():
                    probs[empty] = 1.0
                    probs[empty, current[switch][empty]] = 0.0
                    probs[empty, fav[switch][empty]] = 0.0
                g[switch] = _pick_rows(rng, probs / probs.sum(axis=1, keepdims=True))
        side = g < 0  # a side-interest draw (start or return that did not go to the favourite)
        if side.any():
            g[side] = _pick_rows(rng, world.side[users[side]])
        items = draw_items(g)
        if t > 0:  # never the previous item again: redraw until different (>= 2 items per genre)
            previous = item[users, t - 1]
            same = np.flatnonzero(items == previous)
            while same.size:
                items[same] = draw_items(g[same])
                same = same[items[same] == previous[same]]
        genre[users, t], item[users, t], kind[users, t] = g, items, k
        if t > 0:
            d = np.empty(users.size, dtype=np.int64)
            for code, name in ((_CONTINUE, "short_gap"), (_SWITCH, "medium_gap"), (_RETURN, "long_gap")):
                sel = k == code
                d[sel] = _log_uniform(rng, getattr(cfg, name), int(sel.sum()))
            gap[users, t] = d

    mask = np.arange(width)[None, :] < lengths[:, None]
    times = first_time[:, None] + np.cumsum(gap, axis=1)
    user_index = np.broadcast_to(np.arange(n_users)[:, None], mask.shape)[mask]
    frame = pd.DataFrame(
        {
            "user": (user_index + 1).astype(str).astype(object),
            "item": (item[mask] + 1).astype(str).astype(object),
            "timestamp": times[mask].astype(np.int64),
            "genre": genre[mask],
            "favourite": world.favourite[user_index],
            "kind": pd.Categorical.from_codes(kind[mask], KINDS),
        }
    )
    return frame, world


def generate_events(config: SeqSynthConfig | None = None) -> pd.DataFrame:
    """The synthetic log as a frame sorted by user (``"1"``, ``"2"``, ... in numeric order), then
    time (strictly increasing within a user).

    Columns: ``user``, ``item`` (str ids ``"1"``..; item ids are random with respect to genre),
    ``timestamp`` (int64 epoch seconds), and the hidden truth for diagnostics: ``genre`` (int,
    0-based genre of the item), ``favourite`` (int, the user's favourite genre) and ``kind``
    (categorical: how the event was reached: ``start`` for a user's first event, else
    ``continue``, ``switch`` or ``return``)."""
    return _simulate(config or SeqSynthConfig())[0]


def item_genres(config: SeqSynthConfig | None = None) -> pd.DataFrame:
    """``item`` (str id) and ``genre`` (int) of every item of the log ``config`` generates."""
    cfg = config or SeqSynthConfig()
    world = _make_world(np.random.Generator(np.random.PCG64(cfg.seed)), cfg)
    return pd.DataFrame({"item": (np.arange(cfg.items) + 1).astype(str).astype(object), "genre": world.item_genre})


def _next_genre_probs(cfg: SeqSynthConfig, world: _World, users: np.ndarray, current: np.ndarray,
                      kind: np.ndarray | None) -> np.ndarray:
    """(E, G) exact distribution of the next genre given the user, the current genre and, when
    ``kind`` is given, the transition kind (known from the gap); without it the kinds are mixed."""
    n, n_genres = users.size, cfg.genres
    rows = np.arange(n)
    same = np.zeros((n, n_genres))
    same[rows, current] = 1.0
    side = world.side[users]
    fav = np.zeros((n, n_genres))
    fav[rows, world.favourite[users]] = 1.0
    switch = side.copy()
    switch[rows, current] = 0.0
    total = switch.sum(axis=1, keepdims=True)
    fallback = np.ones((n, n_genres))
    fallback[rows, current] = 0.0
    fallback[rows, world.favourite[users]] = 0.0
    fallback /= fallback.sum(axis=1, keepdims=True)  # all side mass on the current genre (as in _simulate)
    switch = np.where(total > 0, switch / np.where(total > 0, total, 1.0), fallback)
    back = cfg.favourite_return_prob * fav + (1.0 - cfg.favourite_return_prob) * side
    if kind is None:
        return cfg.continue_prob * same + cfg.switch_prob * switch + cfg.return_prob * back
    return np.where((kind == _CONTINUE)[:, None], same, np.where((kind == _SWITCH)[:, None], switch, back))


def _recall_at(cfg: SeqSynthConfig, world: _World, genre_probs: np.ndarray, previous: np.ndarray,
               target: np.ndarray, k: int) -> float:
    """Share of targets among the k most likely items: P(item) = P(genre(item)) * P(item | genre),
    where the previous item is excluded and its genre's other items renormalised (the redraw).

    The rank of a target is the number of items scored strictly higher (ties favour the target),
    counted genre by genre with a binary search in the genre's sorted within-genre probabilities,
    so no (transitions x items) score matrix is built."""
    rows = np.arange(target.size)
    prev_genre = world.item_genre[previous]
    boost = 1.0 / (1.0 - world.item_prob[previous])  # the previous item's genre, renormalised without it
    factor = genre_probs.copy()  # (E, G) score of an item = factor[genre(item)] * item_prob[item]
    factor[rows, prev_genre] *= boost
    score = factor[rows, world.item_genre[target]] * world.item_prob[target]
    higher = np.zeros(target.size, dtype=np.int64)
    for g in range(cfg.genres):
        probs = np.sort(world.item_prob[world.genre_items[world.genre_bounds[g]:world.genre_bounds[g + 1]]])
        f = factor[:, g]
        live = f > 0
        threshold = score[live] / f[live] * (1.0 + 1e-9)  # the slack keeps the target's own tie a tie
        higher[live] += probs.size - np.searchsorted(probs, threshold, side="right")
    # The previous item scores 0 (never repeated), not what the genre-wise count assumed.
    higher -= factor[rows, prev_genre] * world.item_prob[previous] > score * (1.0 + 1e-9)
    return float(np.mean(higher < min(k, cfg.items))) if target.size else 0.0


def genre_diagnostics(events: pd.DataFrame, config: SeqSynthConfig | None = None) -> dict:
    """Next-genre accuracies of the rules in the module docstring, and oracle Recall@10 with and
    without the gap, over every event of ``events`` (a frame from :func:`generate_events` for
    ``config``) that has a predecessor of the same user."""
    cfg = config or SeqSynthConfig()
    world = _make_world(np.random.Generator(np.random.PCG64(cfg.seed)), cfg)
    user = events["user"].astype(np.int64).to_numpy() - 1
    item = events["item"].astype(np.int64).to_numpy() - 1
    genre = events["genre"].to_numpy(dtype=np.int64)
    ts = events["timestamp"].to_numpy(dtype=np.int64)
    has_prev = np.r_[False, user[1:] == user[:-1]]
    nxt = np.flatnonzero(has_prev)
    cur = nxt - 1
    u, g_cur, g_next = user[nxt], genre[cur], genre[nxt]
    gap = ts[nxt] - ts[cur]
    # The gap ranges are disjoint: the gap alone gives the transition kind.
    kind = np.where(gap <= cfg.short_gap[1], _CONTINUE, np.where(gap <= cfg.medium_gap[1], _SWITCH, _RETURN))
    with_gap = _next_genre_probs(cfg, world, u, g_cur, kind)
    blind = _next_genre_probs(cfg, world, u, g_cur, None)
    fav = world.favourite[u]
    time_rule = np.where(kind == _CONTINUE, g_cur, fav)
    favourite_next = g_next == fav
    sessions_start = np.r_[True, ~has_prev[1:] | (events["kind"].to_numpy()[1:] != "continue")]
    session_genre = genre[sessions_start]
    return {
        "transitions": int(nxt.size),
        "sessions": int(sessions_start.sum()),
        "favourite_session_fraction": float(np.mean(session_genre == world.favourite[user[sessions_start]])),
        "next_is_favourite_fraction": float(favourite_next.mean()),
        "oracle_genre_accuracy": float(np.mean(with_gap.argmax(axis=1) == g_next)),
        "time_rule_genre_accuracy": float(np.mean(time_rule == g_next)),
        "time_blind_oracle_genre_accuracy": float(np.mean(blind.argmax(axis=1) == g_next)),
        "last_genre_accuracy": float(np.mean(g_cur == g_next)),
        "favourite_genre_accuracy": float(favourite_next.mean()),
        "oracle_recall_at_10": _recall_at(cfg, world, with_gap, item[cur], item[nxt], 10),
        "time_blind_oracle_recall_at_10": _recall_at(cfg, world, blind, item[cur], item[nxt], 10),
    }


def write_synthetic_events(path: str | Path, config: SeqSynthConfig | None = None,
                           items_path: str | Path | None = None) -> dict:
    """Write the log of :func:`generate_events` as a CSV with header ``user,item,timestamp``
    (sorted by user, then time; readable by ``read_events(path, "csv")``), and, with
    ``items_path``, a CSV ``item,title,category`` (title ``item17``, category the item's genre
    ``genre3``; readable by
    :func:`newsrank.convert.read_item_text`, so a MIND conversion gets genres as categories).

    Returns a summary: ``path``, ``users``, ``items`` (distinct items that occur), ``genres``,
    ``events``, ``first_time``/``last_time`` (epoch seconds), ``kinds`` (event count per
    transition kind) and the diagnostics of :func:`genre_diagnostics`.
    """
    cfg = config or SeqSynthConfig()
    frame, _ = _simulate(cfg)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame[["user", "item", "timestamp"]].to_csv(path, index=False, lineterminator="\n")
    if items_path is not None:
        genres = item_genres(cfg)
        names = "genre" + genres["genre"].astype(str)
        table = pd.DataFrame({"item": genres["item"], "title": "item" + genres["item"], "category": names})
        Path(items_path).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(items_path, index=False, lineterminator="\n")
    counts = frame["kind"].value_counts()
    return {
        "path": str(path),
        "users": cfg.users,
        "items": int(frame["item"].nunique()),
        "genres": cfg.genres,
        "events": len(frame),
        "first_time": int(frame["timestamp"].min()),
        "last_time": int(frame["timestamp"].max()),
        "kinds": {name: int(counts.get(name, 0)) for name in KINDS},
        **genre_diagnostics(frame, cfg),
    }
