"""Next-item ranking metrics: Recall@K and MRR@K, over all items or against sampled negatives.

The rank of the true item is ``1 + #(competitors scoring strictly higher)`` plus, with
``ties="pessimistic"`` (the default), ``#(competitors scoring exactly the same)``: a model that
gives many items the same score gets no credit for it (a constant scorer ranks the target last).
``ties="optimistic"`` counts only strictly higher scores. Then

* ``recall@K = mean(rank <= K)``,
* ``mrr@K = mean(1 / rank if rank <= K else 0)``.

Index 0 is padding (see :mod:`newsrank.seq.sequences`); with ``exclude_padding=True`` column 0 is
never a competitor and a target of 0 is an error. Scores may be numpy arrays or torch tensors;
everything is vectorized (rows are processed in chunks to bound memory).
"""

from __future__ import annotations

from typing import Iterable, Literal

import numpy as np

Ties = Literal["pessimistic", "optimistic"]
_CHUNK_CELLS = 1 << 24  # about 16M score cells per chunk


def _as_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _check(scores: np.ndarray, targets: np.ndarray, exclude_padding: bool) -> None:
    if scores.ndim != 2:
        raise ValueError(f"scores must be [N, V], got shape {scores.shape}")
    if targets.shape != (scores.shape[0],):
        raise ValueError(f"targets must be [N] = [{scores.shape[0]}], got shape {targets.shape}")
    if not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(f"targets must be integer item indices, got {targets.dtype}")
    if len(targets) and (targets.min() < 0 or targets.max() >= scores.shape[1]):
        raise ValueError(f"targets must be in [0, {scores.shape[1]}), got [{targets.min()}, {targets.max()}]")
    if exclude_padding and len(targets) and (targets == 0).any():
        raise ValueError("a target is 0 (padding) while exclude_padding=True")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")


def _summarize(ranks: np.ndarray, ks: Iterable[int]) -> dict[str, float]:
    out: dict[str, float] = {}
    ranks = np.asarray(ranks, dtype=np.float64)
    for k in ks:
        if k < 1:
            raise ValueError(f"K must be >= 1, got {k}")
        hit = ranks <= k
        out[f"recall@{k}"] = float(hit.mean()) if len(ranks) else float("nan")
        out[f"mrr@{k}"] = float(np.where(hit, 1.0 / ranks, 0.0).mean()) if len(ranks) else float("nan")
    return out


def summarize_ranks(ranks, ks: Iterable[int] = (10,)) -> dict[str, float]:
    """Recall@K and MRR@K of ranks [N] (1 = best)."""
    return _summarize(ranks, ks)


def full_ranks(scores, targets, exclude_padding: bool = True, ties: Ties = "pessimistic") -> np.ndarray:
    """Rank (1 = best) of each row's target among all items, [N] int64 (see the module docstring
    for ties)."""
    scores = _as_numpy(scores)
    targets = _as_numpy(targets)
    _check(scores, targets, exclude_padding)
    if ties not in ("pessimistic", "optimistic"):
        raise ValueError(f"ties must be 'pessimistic' or 'optimistic', got {ties!r}")
    n, v = scores.shape
    ranks = np.empty(n, dtype=np.int64)
    step = max(1, _CHUNK_CELLS // max(v, 1))
    for start in range(0, n, step):
        block = scores[start : start + step]
        rows = np.arange(len(block))
        tgt = targets[start : start + step]
        own = block[rows, tgt][:, None]
        if exclude_padding:
            block = block[:, 1:]
        above = (block > own).sum(axis=1)
        if ties == "pessimistic":
            above = above + (block == own).sum(axis=1) - 1  # the target equals itself
        ranks[start : start + step] = 1 + above
    return ranks


def full_ranking_metrics(
    scores, targets, ks: Iterable[int] = (10,), exclude_padding: bool = True, ties: Ties = "pessimistic"
) -> dict[str, float]:
    """Recall@K and MRR@K with the target ranked among all items: ``{"recall@K": ..., "mrr@K":
    ...}`` for each K in ``ks``. ``scores`` [N, V], ``targets`` [N] (item indices)."""
    return _summarize(full_ranks(scores, targets, exclude_padding, ties), ks)


def sample_negatives(
    targets, num_items: int, num_negatives: int, rng: np.random.Generator, exclude_padding: bool = True
) -> np.ndarray:
    """[N, num_negatives] item indices, per row distinct, drawn uniformly (without replacement)
    from all items except the row's target and (with ``exclude_padding``) index 0."""
    targets = _as_numpy(targets).astype(np.int64)
    base = 1 if exclude_padding else 0
    candidates = num_items - base - 1
    if num_negatives > candidates:
        raise ValueError(f"cannot draw {num_negatives} distinct negatives from {candidates} candidates")
    n = len(targets)
    draws = rng.integers(0, candidates, size=(n, num_negatives))
    # Redraw duplicates until every row is distinct (few rounds when candidates >> num_negatives).
    while num_negatives > 1:
        draws.sort(axis=1)
        dup = np.zeros_like(draws, dtype=bool)
        dup[:, 1:] = draws[:, 1:] == draws[:, :-1]
        count = int(dup.sum())
        if count == 0:
            break
        draws[dup] = rng.integers(0, candidates, size=count)
    # Map 0..candidates-1 onto the items, skipping padding and the target.
    items = draws + base
    items += items >= targets[:, None]
    return rng.permuted(items, axis=1)


def sampled_ranks(scores, targets, negatives, ties: Ties = "pessimistic") -> np.ndarray:
    """Rank (1 = best) of each row's target against that row's ``negatives`` [N, M] item indices."""
    scores = _as_numpy(scores)
    targets = _as_numpy(targets)
    negatives = _as_numpy(negatives)
    _check(scores, targets, exclude_padding=False)
    if ties not in ("pessimistic", "optimistic"):
        raise ValueError(f"ties must be 'pessimistic' or 'optimistic', got {ties!r}")
    rows = np.arange(len(targets))
    own = scores[rows, targets][:, None]
    other = np.take_along_axis(scores, negatives, axis=1)
    above = (other > own).sum(axis=1)
    if ties == "pessimistic":
        above = above + (other == own).sum(axis=1)
    return 1 + above


def sampled_metrics(
    scores,
    targets,
    num_negatives: int = 100,
    repeats: int = 10,
    rng: np.random.Generator | int | None = 0,
    ks: Iterable[int] = (10,),
    exclude_padding: bool = True,
    ties: Ties = "pessimistic",
) -> dict[str, float]:
    """The Time-LSTM paper's protocol: each target is ranked against ``num_negatives`` items drawn
    uniformly without replacement (never the target, never padding with ``exclude_padding``);
    drawn ``repeats`` times, the mean over repeats is reported, with ``"<metric>_std"`` the
    standard deviation over repeats. ``rng`` is a Generator or a seed (default 0, reproducible).
    If ``num_negatives`` is at least the number of candidates, every candidate is used once
    (the result is then the full ranking)."""
    scores = _as_numpy(scores)
    targets = _as_numpy(targets)
    _check(scores, targets, exclude_padding)
    ks = tuple(ks)
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if num_negatives < 1:
        raise ValueError(f"num_negatives must be >= 1, got {num_negatives}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    draws = sampled_rank_draws(scores, targets, num_negatives, repeats, rng, exclude_padding, ties)
    return summarize_draws(draws, ks)


def sampled_rank_draws(scores, targets, num_negatives: int, repeats: int, rng: np.random.Generator,
                       exclude_padding: bool = True, ties: Ties = "pessimistic") -> np.ndarray:
    """[repeats, N] ranks of each target against ``num_negatives`` uniform negatives, one row per
    draw (all rows the full ranking when ``num_negatives`` covers every candidate)."""
    scores = _as_numpy(scores)
    targets = _as_numpy(targets)
    candidates = scores.shape[1] - (1 if exclude_padding else 0) - 1
    if num_negatives >= candidates:
        return full_ranks(scores, targets, exclude_padding, ties)[None, :]
    return np.stack([
        sampled_ranks(scores, targets, sample_negatives(targets, scores.shape[1], num_negatives, rng, exclude_padding),
                      ties)
        for _ in range(repeats)
    ])


def summarize_draws(draws: np.ndarray, ks: Iterable[int]) -> dict[str, float]:
    """Mean over draws (rows of ``draws`` [R, N]) of Recall@K / MRR@K, with ``"<metric>_std"`` the
    standard deviation over draws."""
    ks = tuple(ks)
    runs = [_summarize(row, ks) for row in draws]
    out: dict[str, float] = {}
    for key in runs[0]:
        values = np.array([run[key] for run in runs])
        out[key] = float(values.mean())
        out[f"{key}_std"] = float(values.std())
    return out


#: target-gap buckets of ``by_gap`` metrics: (name, lower bound in seconds inclusive, upper exclusive)
GAP_BUCKETS: tuple[tuple[str, float, float], ...] = (
    ("<1min", 0.0, 60.0),
    ("1min-1h", 60.0, 3600.0),
    ("1h-1d", 3600.0, 86400.0),
    (">1d", 86400.0, float("inf")),
)


def by_gap(full: np.ndarray, draws: np.ndarray, gaps: np.ndarray, ks: Iterable[int]) -> dict[str, dict]:
    """Recall@K / MRR@K per bucket of the gap to the target (:data:`GAP_BUCKETS`): for each bucket
    ``{"count": n, "full": {...}, "sampled": {...}}`` from the full ranks [N], the sampled rank
    draws [R, N] and the gaps in seconds [N]; an empty bucket has count 0 and NaN metrics."""
    gaps = np.asarray(gaps, dtype=np.float64)
    ks = tuple(ks)
    out = {}
    for name, low, high in GAP_BUCKETS:
        inside = (gaps >= low) & (gaps < high)
        out[name] = {"count": int(inside.sum()), "full": _summarize(full[inside], ks),
                     "sampled": summarize_draws(draws[:, inside], ks)}
    return out
