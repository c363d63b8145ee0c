"""Beyond-accuracy metrics of the top-k recommendations of every impression.

An impression's recommendation list R is its ``min(k, candidates)`` best-scored candidates (the
ranking of :mod:`newsrank.metrics`: score descending, ties in candidate order). All five metrics
depend only on the set R. With n = |R|, per impression:

* **ILD** (intra-list diversity, news vectors): ``1 - mean over pairs i < j in R of cos(v_i, v_j)``,
  v = the model's news vector of the item (``encode_news``, the vectors scoring used; a zero vector
  counts as orthogonal to every other). Defined for n >= 2.
* **ILD by category**: the same with ``cos`` replaced by ``1[cat_i == cat_j]``: the share of pairs
  of R in different categories. Defined for n >= 2.
* **coverage** (over the whole split, not per impression): ``|union of all R| / |distinct
  candidates shown|``.
* **novelty**: ``mean over i in R of -log2 p(i)``, p = the item's share of the training clicks,
  add-one smoothed over the news of the evaluated split: ``p(i) = (c_i + 1) / sum_j (c_j + 1)``
  (c = clicked impressions of the item in the train split's ``behaviors.tsv``), so that an item
  never clicked in training is finite and the most novel. In bits.
* **calibration**: Jensen-Shannon divergence, log base 2 (so in [0, 1]), between the category
  distribution of the user's history H (the impression's kept clicks) and of R:
  ``JS(P, Q) = KL(P || M) / 2 + KL(Q || M) / 2``, ``M = (P + Q) / 2``. 0 = the list has exactly
  the history's category mix. Defined for a non-empty history.

Each is averaged over the impressions where it is defined; ``*_impressions`` say how many. Unknown
categories (not in the training vocabulary) are one category, ``<unk>``.

Vectorised: one ``impression_ranks`` sort (the metrics' own), then segment sums over the
selected candidates (category counts with ``bincount``, vector sums with ``index_add_`` in chunks
of impressions, as one sparse [impressions, N] x [N, D] product: ``sum over pairs of cos =
(|sum of unit vectors|^2 - sum of their squared norms) / 2``, so no pairwise matrix is built).
"""

from __future__ import annotations

import numpy as np
import torch

from .data.dataset import Behaviors, NewsTable
from .data.vocab import PAD
from .metrics import impression_ranks

DEFAULT_K = 10
# Floats of the per-impression vector sums [impressions, D] per chunk: FIM's news "vector" has ~9,000 dims.
_CHUNK_FLOATS = 1 << 24


def train_click_counts(train_table: NewsTable, train_behaviors: Behaviors, table: NewsTable) -> np.ndarray:
    """[N] how many training impressions clicked each news row of ``table`` (matched by news id; 0
    for news the training split never clicked, and for row 0, the padding)."""
    labels = np.asarray(train_behaviors.labels)
    clicked_rows = np.asarray(train_behaviors.candidates)[labels == 1]  # [clicks] train-table rows
    per_train_row = np.bincount(clicked_rows, minlength=len(train_table))  # [N_train]
    by_id = {news_id: int(per_train_row[row]) for row, news_id in enumerate(train_table.news_ids) if row}
    return np.array([0] + [by_id.get(news_id, 0) for news_id in table.news_ids[1:]], dtype=np.int64)  # [N]


def _mean(values: np.ndarray, defined: np.ndarray) -> float | None:
    return float(values[defined].mean()) if defined.any() else None


def _category_counts(impression: np.ndarray, categories: np.ndarray, impressions: int, width: int) -> np.ndarray:
    """[I, width] count of each category per impression, from parallel flat arrays."""
    flat = np.bincount(impression * width + categories, minlength=impressions * width)
    return flat.reshape(impressions, width)


def _js_divergence_base2(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Row-wise Jensen-Shannon divergence in bits of the distributions ``p``, ``q`` [I, C]."""
    m = (p + q) / 2  # [I, C]; m > 0 wherever p > 0 or q > 0

    def kl(a: np.ndarray) -> np.ndarray:
        ratio = np.divide(a, m, out=np.ones_like(a), where=a > 0)  # 0 * log 0 = 0
        return (a * np.log2(ratio)).sum(axis=1)

    return np.clip(kl(p) / 2 + kl(q) / 2, 0.0, 1.0)  # [I]; clip: rounding only


def _vector_ild(news_vectors: torch.Tensor, rows: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """[I] 1 - mean pairwise cosine of the vectors of each impression's selected ``rows`` (flat,
    grouped by impression, ``sizes`` [I] of them each); NaN where fewer than 2 are selected."""
    vectors = news_vectors.reshape(len(news_vectors), -1).float()  # [N, D] (FIM: its flattened levels)
    norms = torch.linalg.vector_norm(vectors, dim=1)  # [N]
    inverse = torch.where(norms > 0, 1.0 / norms, torch.zeros_like(norms))  # zero vectors stay zero
    impressions = len(sizes)
    starts = np.concatenate([[0], np.cumsum(sizes)])  # [I + 1] CSR offsets of the selection
    rows_t = torch.as_tensor(rows, dtype=torch.long, device=vectors.device)  # [S]
    weights = inverse[rows_t]  # [S] 1/|v| of each selected vector
    # |sum of the unit vectors|^2 = sum over ordered pairs of cos + sum of |unit|^2 (1, or 0 for a zero vector)
    pair_cos_sum = -np.bincount(np.repeat(np.arange(impressions), sizes), weights=(weights > 0).double().cpu().numpy(),
                                minlength=impressions)  # [I], minus the diagonal
    step = max(1, _CHUNK_FLOATS // max(1, vectors.shape[1]))  # impressions per chunk ([step, D] sums)
    for lo in range(0, impressions, step):  # impressions [lo, hi)
        hi = min(lo + step, impressions)
        a, b = int(starts[lo]), int(starts[hi])
        # [i, N] sparse rows of 1/|v| at the selected news: one product sums each impression's unit vectors
        local = torch.as_tensor(np.repeat(np.arange(hi - lo), sizes[lo:hi]), dtype=torch.long, device=vectors.device)
        selection = torch.sparse_coo_tensor(torch.stack([local, rows_t[a:b]]), weights[a:b], (hi - lo, len(vectors)),
                                            check_invariants=False)  # valid by construction
        sums = torch.sparse.mm(selection, vectors)  # [i, D]
        pair_cos_sum[lo:hi] += (sums * sums).sum(1).double().cpu().numpy()
    pairs = sizes * (sizes - 1)  # [I] ordered pairs
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sizes >= 2, 1.0 - pair_cos_sum / pairs, np.nan)


def beyond_metrics(
    scores: np.ndarray,
    offsets: np.ndarray,
    candidates: np.ndarray,
    history: np.ndarray,
    categories: np.ndarray,
    click_counts: np.ndarray | None = None,
    news_vectors: torch.Tensor | np.ndarray | None = None,
    k: int = DEFAULT_K,
) -> dict:
    """The module's metrics at ``k``, averaged over impressions (see the module docstring).

    Args:
        scores: [T] candidate scores, CSR by ``offsets`` [I + 1] (as :mod:`newsrank.metrics`).
        candidates: [T] news rows of the candidates.
        history: [I, H] news rows of each impression's history, PAD (0) where empty.
        categories: [N] category index of every news row.
        click_counts: [N] training clicks per news row (``train_click_counts``); None: no novelty.
        news_vectors: [N, ...] news vectors per row; None: no vector ILD (NPA: per-user vectors).
    """
    if k < 1:
        raise ValueError(f"beyond-accuracy k must be >= 1, got {k}")
    offsets = np.asarray(offsets, dtype=np.int64)
    candidates = np.asarray(candidates)
    categories = np.asarray(categories, dtype=np.int64)
    impressions = len(offsets) - 1
    lengths = np.diff(offsets)  # [I]
    ranks = impression_ranks(scores, offsets)  # [T] 1-based, ties in candidate order
    selected = np.flatnonzero(ranks <= k)  # [S] ascending: grouped by impression
    owner = np.repeat(np.arange(impressions), lengths)[selected]  # [S] impression of each
    rows = candidates[selected].astype(np.int64)  # [S] news rows of the recommendations
    sizes = np.minimum(lengths, k)  # [I] n = |R|
    result: dict = {"k": int(k), "impressions": int(impressions)}

    width = int(categories.max(initial=0)) + 1
    top_counts = _category_counts(owner, categories[rows], impressions, width)  # [I, C]
    has_pairs = sizes >= 2  # [I]
    same_pairs = (top_counts * (top_counts - 1)).sum(axis=1)  # [I] ordered same-category pairs
    with np.errstate(invalid="ignore", divide="ignore"):
        category_ild = 1.0 - same_pairs / (sizes * (sizes - 1))  # [I]
    if news_vectors is not None:
        vectors = torch.as_tensor(news_vectors)
        result["ild"] = _mean(_vector_ild(vectors, rows, sizes), has_pairs)
    else:
        result["ild"] = None
    result["ild_category"] = _mean(category_ild, has_pairs)
    result["ild_impressions"] = int(has_pairs.sum())

    shown = np.count_nonzero(np.bincount(candidates))  # distinct candidates (bincount: no sort)
    recommended = np.count_nonzero(np.bincount(rows))
    result["coverage"] = float(recommended / shown) if shown else None

    if click_counts is not None:
        smoothed = np.asarray(click_counts, dtype=np.float64) + 1.0  # [N]
        smoothed[PAD] = 0.0  # the padding row is no news
        self_information = -np.log2(np.maximum(smoothed, 1.0) / smoothed.sum())  # [N] bits (row 0: never used)
        per_impression = np.bincount(owner, weights=self_information[rows], minlength=impressions)  # [I]
        with np.errstate(invalid="ignore", divide="ignore"):
            result["novelty"] = _mean(per_impression / sizes, sizes > 0)
    else:
        result["novelty"] = None

    history = np.asarray(history)
    real = history != PAD  # [I, H]
    history_owner = np.broadcast_to(np.arange(impressions)[:, None], history.shape)[real]  # [clicks]
    history_counts = _category_counts(history_owner, categories[history[real]], impressions, width)  # [I, C]
    history_sizes = real.sum(axis=1)  # [I]
    calibrated = (history_sizes > 0) & (sizes > 0)  # [I]
    p = history_counts[calibrated] / history_sizes[calibrated, None]  # [I', C]
    q = top_counts[calibrated] / sizes[calibrated, None]  # [I', C]
    js = _js_divergence_base2(p, q)  # [I']
    result["calibration_js"] = float(js.mean()) if len(js) else None
    result["calibration_impressions"] = int(calibrated.sum())
    return result
