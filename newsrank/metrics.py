"""Impression-level ranking metrics for news recommendation (MIND protocol).

All metrics are computed per impression and then averaged over impressions.
Inputs use a CSR layout: ``scores`` and ``labels`` hold the candidates of all
impressions concatenated (shape ``[T]``), and impression ``i`` owns
``scores[offsets[i]:offsets[i + 1]]`` (``offsets`` has shape ``[I + 1]``,
``offsets[0] == 0``, ``offsets[-1] == T``, non-decreasing).

Definitions, for one impression with ``P`` positives and ``N`` negatives:

* **AUC**: ROC AUC of the scores against the 0/1 labels, i.e. the probability
  that a random positive scores higher than a random negative, with ties
  counting 1/2 (identical to ``sklearn.metrics.roc_auc_score``). It is computed
  exactly with the Mann-Whitney U statistic: ``2U`` is an integer and
  ``AUC = 2U / (2 P N)``.
* **MRR**: ``sum_i label_i / rank_i / P``, where ``rank_i`` is the 1-based
  position of candidate ``i`` when the impression is sorted by score
  descending.
* **nDCG@k**: ``DCG@k / IDCG@k`` with ``DCG@k = sum over the top-k ranked
  candidates of (2**label - 1) / log2(rank + 1)``. Labels are binary, so the
  gain is the label itself, and the ideal ordering puts all positives first:
  ``IDCG@k = sum_{r=1..min(P, k)} 1 / log2(r + 1)``. ``k`` is effectively capped
  at the impression length.

Ranking ties: candidates are ranked by score descending with a *stable* sort,
so candidates with equal scores keep their original order within the
impression (``np.argsort(-score, kind="stable")``). MRR and nDCG depend on this
choice when scores tie; AUC does not (ties count 1/2). Microsoft Recommenders
and the MIND ``evaluate.py`` script rank with ``np.argsort(y_score)[::-1]``,
which orders tied candidates differently (reversed / unspecified), so the two
can disagree on MRR/nDCG for impressions with tied scores. The official MIND
scorer receives ranks (``impression_ranks`` below), which are a permutation
without ties: MRR/nDCG recomputed from those ranks equal ours, while its AUC
breaks score ties by our candidate order instead of counting them 1/2.

Undefined values: an impression without a positive or without a negative
(including empty and length-1 impressions) has no AUC; an impression without a
positive has no MRR/nDCG (``sum(labels) == 0`` / ``IDCG == 0``). Such values are
NaN per impression and are excluded from the averages. An impression with only
positives is kept for MRR/nDCG: its nDCG is 1.0 and its MRR is what the formula
gives, the mean of ``1 / rank`` over all ranks (1.0 for a single candidate, 0.75
for two), as in Recommenders' ``mrr_score``. ``impression_metrics`` reports
how many impressions entered each average (``auc_impressions``,
``ranked_impressions``) and returns NaN for a metric no impression qualifies
for.

Everything is vectorised with NumPy: the only Python loop runs over
power-of-two length buckets (about ``log2(max impression length)``
iterations), never over impressions.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

__all__ = ["impression_metrics", "impression_ranks", "per_impression_metrics"]


def _check_scores(scores: np.ndarray) -> np.ndarray:
    """Return ``scores`` as a 1-D float64 array [T]; raise ValueError if invalid."""
    scores = np.asarray(scores)
    if scores.ndim != 1:
        raise ValueError(f"scores must be 1-D of shape [T], got shape {scores.shape}")
    if not (np.issubdtype(scores.dtype, np.integer) or np.issubdtype(scores.dtype, np.floating)):
        raise ValueError(f"scores must be a real numeric array, got dtype {scores.dtype}")
    scores = scores.astype(np.float64, copy=False)
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite (found NaN or inf)")
    return scores


def _check_labels(labels: np.ndarray, num_candidates: int) -> np.ndarray:
    """Return ``labels`` as a 1-D int64 array [T] of 0/1; raise ValueError if invalid."""
    labels = np.asarray(labels)
    if labels.shape != (num_candidates,):
        raise ValueError(
            f"labels must have the same shape as scores ({num_candidates},), got {labels.shape}"
        )
    if not (
        labels.dtype == np.bool_
        or np.issubdtype(labels.dtype, np.integer)
        or np.issubdtype(labels.dtype, np.floating)
    ):
        raise ValueError(f"labels must be a bool or numeric array, got dtype {labels.dtype}")
    if labels.dtype != np.bool_ and not ((labels == 0) | (labels == 1)).all():
        raise ValueError("labels must contain only 0 and 1")
    return labels.astype(np.int64)


def _check_offsets(offsets: np.ndarray, num_candidates: int) -> np.ndarray:
    """Return ``offsets`` as a 1-D int64 array [I+1]; raise ValueError if invalid."""
    offsets = np.asarray(offsets)
    if offsets.ndim != 1 or offsets.shape[0] < 1:
        raise ValueError(f"offsets must be 1-D of shape [I+1], got shape {offsets.shape}")
    if not np.issubdtype(offsets.dtype, np.integer):
        raise ValueError(f"offsets must be an integer array, got dtype {offsets.dtype}")
    offsets = offsets.astype(np.int64)
    if offsets[0] != 0:
        raise ValueError(f"offsets[0] must be 0, got {offsets[0]}")
    if offsets[-1] != num_candidates:
        raise ValueError(
            f"offsets[-1] must equal the number of scores ({num_candidates}), got {offsets[-1]}"
        )
    if (np.diff(offsets) < 0).any():
        raise ValueError("offsets must be non-decreasing")
    return offsets


def _check_ks(ks: Iterable[int]) -> tuple[int, ...]:
    """Return the nDCG cut-offs as a tuple of positive ints; raise ValueError if invalid."""
    if isinstance(ks, (int, np.integer)):
        raise ValueError(f"ks must be an iterable of cut-offs such as (5, 10), got {ks!r}")
    ks = tuple(ks)
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"ks must be positive integers, got {k!r}")
    return tuple(int(k) for k in ks)


def _segment_sum(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Sum ``values`` [n] over the CSR segments ``offsets`` [m+1]; empty segments sum to 0."""
    out = np.zeros(offsets.shape[0] - 1, dtype=values.dtype)  # [m]
    nonempty = offsets[:-1] < offsets[1:]  # [m]
    if nonempty.any():
        # reduceat needs strictly increasing starts; each non-empty segment then runs
        # up to the next non-empty start (empty segments in between hold nothing).
        out[nonempty] = np.add.reduceat(values, offsets[:-1][nonempty])
    return out


def _ranking_order(scores: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Candidate indices [T] sorted by (impression, score descending), ties in candidate order.

    ``order[offsets[i] + r]`` is the index of the candidate ranked ``r + 1`` in impression ``i``.
    Impressions are grouped into buckets of similar length (lengths in ``(2**(b-1), 2**b]``),
    each bucket is padded into a dense ``[B, W]`` matrix (at most 2x padding) and sorted
    row-wise, which is much faster than a global lexsort on (impression, score).
    """
    num_candidates = scores.shape[0]
    lengths = np.diff(offsets)  # [I]
    neg_scores = -scores  # [T] ascending sort of -score == descending sort of score
    order = np.empty(num_candidates, dtype=np.int64)  # [T]
    nonempty = np.flatnonzero(lengths)  # [I'] impressions with at least one candidate
    buckets = np.ceil(np.log2(lengths[nonempty])).astype(np.int64)  # [I']
    for bucket in np.unique(buckets):
        imps = nonempty[buckets == bucket]  # [B]
        starts = offsets[imps][:, None]  # [B, 1]
        cols = np.arange(lengths[imps].max())  # [W]
        valid = cols < lengths[imps][:, None]  # [B, W] True on real candidates, False on padding
        idx = np.minimum(starts + cols, num_candidates - 1)  # [B, W] global candidate index
        keys = neg_scores[idx]  # [B, W]
        keys[~valid] = np.inf  # padding sorts last (scores are finite)
        perm = np.argsort(keys, axis=1, kind="stable")  # [B, W] column of the r-th ranked candidate
        # The first len(row) sorted entries of each row are its real candidates, so the same
        # `valid` mask selects them; idx[valid] are the target slots offsets[i] + r.
        order[idx[valid]] = (starts + perm)[valid]
    return order


def impression_ranks(scores: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """1-based rank [T] of each candidate within its impression (score descending, stable ties).

    Each impression's ranks form a permutation of ``1..n``; this is what the MIND
    leaderboard prediction file expects.
    """
    scores = _check_scores(scores)
    offsets = _check_offsets(offsets, scores.shape[0])
    order = _ranking_order(scores, offsets)  # [T]
    imp_ids = np.repeat(np.arange(offsets.shape[0] - 1), np.diff(offsets))  # [T]
    ranks = np.empty(scores.shape[0], dtype=np.int64)  # [T]
    ranks[order] = np.arange(scores.shape[0]) - offsets[imp_ids] + 1
    return ranks


def per_impression_metrics(
    scores: np.ndarray,
    labels: np.ndarray,
    offsets: np.ndarray,
    ks: Iterable[int] = (5, 10),
) -> dict[str, np.ndarray]:
    """Per-impression ``auc``, ``mrr`` and ``ndcg@k`` (one per k), each a float64 array [I].

    Values are NaN where the metric is undefined (see the module docstring).
    """
    scores = _check_scores(scores)
    num_candidates = scores.shape[0]
    labels = _check_labels(labels, num_candidates)
    offsets = _check_offsets(offsets, num_candidates)
    ks = _check_ks(ks)

    num_impressions = offsets.shape[0] - 1
    lengths = np.diff(offsets)  # [I]

    order = _ranking_order(scores, offsets)  # [T]
    sorted_scores = scores[order]  # [T] descending within each impression
    sorted_labels = labels[order]  # [T]

    # Only positives contribute to the sums below, so the work after the sort is O(#positives).
    # "Slots" are positions in the sorted arrays; positives stay grouped by impression, so
    # pos_offsets is the CSR layout of the positives.
    pos_slots = np.flatnonzero(sorted_labels)  # [Q] Q = total number of positives
    pos_offsets = np.searchsorted(pos_slots, offsets)  # [I+1]
    positives = np.diff(pos_offsets)  # [I] P
    negatives = lengths - positives  # [I] N
    pos_imp = np.repeat(np.arange(num_impressions), positives)  # [Q] impression of each positive
    ranks = pos_slots - offsets[pos_imp] + 1  # [Q] 1-based rank of each positive

    # --- AUC via the Mann-Whitney U statistic, exact in integers -----------------------
    # Tie groups: maximal runs of equal scores inside an impression (adjacent after sorting).
    group_start = np.ones(num_candidates, dtype=bool)  # [T]
    group_start[1:] = sorted_scores[1:] != sorted_scores[:-1]
    group_start[offsets[:-1][lengths > 0]] = True
    group_starts = np.flatnonzero(group_start)  # [G]
    group = np.searchsorted(group_starts, pos_slots, side="right") - 1  # [Q] positive's tie group
    tie_start = group_starts[group]  # [Q] first slot of the positive's tie group
    tie_end = np.append(group_starts, num_candidates)[group + 1]  # [Q] one past its last slot

    def negatives_before(slots: np.ndarray) -> np.ndarray:
        """Number of negatives in sorted slots [0, slot) for each slot."""
        return slots - np.searchsorted(pos_slots, slots)

    # A positive beats the negatives ranked after its tie group (weight 1) and ties with the
    # negatives inside it (weight 1/2); twice its contribution to U is therefore
    # 2 * (neg(impression end) - neg(tie_end)) + (neg(tie_end) - neg(tie_start)).
    imp_end_negatives = negatives_before(offsets[1:])  # [I]
    u2 = _segment_sum(
        2 * imp_end_negatives[pos_imp] - negatives_before(tie_end) - negatives_before(tie_start),
        pos_offsets,
    )  # [I] 2U
    has_auc = (positives > 0) & (negatives > 0)  # [I]
    auc = np.full(num_impressions, np.nan)  # [I]
    auc[has_auc] = u2[has_auc] / (2.0 * positives[has_auc] * negatives[has_auc])

    # --- MRR and nDCG@k ------------------------------------------------------------------
    has_rank = positives > 0  # [I]
    mrr = np.full(num_impressions, np.nan)  # [I]
    mrr[has_rank] = _segment_sum(1.0 / ranks, pos_offsets)[has_rank] / positives[has_rank]

    max_length = int(lengths.max(initial=0))
    discounts = 1.0 / np.log2(np.arange(2, max_length + 2))  # [L] discount of ranks 1..L
    ideal_dcg = np.concatenate(([0.0], np.cumsum(discounts)))  # [L+1] DCG of p positives on top
    gains = discounts[ranks - 1]  # [Q] (2**1 - 1) / log2(rank + 1)

    result = {"auc": auc, "mrr": mrr}
    for k in ks:
        dcg = _segment_sum(np.where(ranks <= k, gains, 0.0), pos_offsets)  # [I]
        ndcg = np.full(num_impressions, np.nan)  # [I]
        ndcg[has_rank] = dcg[has_rank] / ideal_dcg[np.minimum(positives[has_rank], k)]
        result[f"ndcg@{k}"] = ndcg
    return result


def impression_metrics(
    scores: np.ndarray,
    labels: np.ndarray,
    offsets: np.ndarray,
    ks: Iterable[int] = (5, 10),
) -> dict[str, float | int]:
    """Average AUC, MRR and nDCG@k over impressions (MIND protocol).

    Args:
        scores: float array [T], candidate scores of all impressions concatenated.
        labels: 0/1 int or bool array [T].
        offsets: int array [I+1]; impression ``i`` owns ``scores[offsets[i]:offsets[i+1]]``.
        ks: nDCG cut-offs.

    Returns:
        ``{"auc", "mrr", "ndcg@k" for k in ks}`` as floats (NaN when no impression
        qualifies), plus ints ``"impressions"`` (I), ``"auc_impressions"`` (impressions
        with both classes) and ``"ranked_impressions"`` (impressions with a positive).
    """
    per_impression = per_impression_metrics(scores, labels, offsets, ks)
    result: dict[str, float | int] = {}
    for name, values in per_impression.items():
        defined = values[~np.isnan(values)]
        result[name] = float(defined.mean()) if defined.size else float("nan")
    result["impressions"] = int(per_impression["auc"].shape[0])
    result["auc_impressions"] = int(np.count_nonzero(~np.isnan(per_impression["auc"])))
    result["ranked_impressions"] = int(np.count_nonzero(~np.isnan(per_impression["mrr"])))
    return result
