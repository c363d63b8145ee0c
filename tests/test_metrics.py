"""Tests for newsrank.metrics (MIND impression metrics)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from newsrank.metrics import impression_metrics, impression_ranks, per_impression_metrics

# Any RuntimeWarning (0/0, mean of an empty slice, ...) is a bug: the code must handle
# undefined metrics explicitly.
pytestmark = pytest.mark.filterwarnings("error")

INV_LOG2_3 = 1.0 / math.log2(3)  # discount of rank 2


def _csr(
    impressions: list[tuple[list[float], list[int]]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate [(scores, labels), ...] into (scores [T], labels [T], offsets [I+1])."""
    lengths = [len(s) for s, _ in impressions]
    scores = np.array([x for s, _ in impressions for x in s], dtype=np.float64)
    labels = np.array([y for _, ys in impressions for y in ys], dtype=np.int64)
    offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    return scores, labels, offsets


# Impression A: scores [0.9, 0.2, 0.5, 0.1], labels [0, 1, 1, 0].
#   Sorted by score: 0.9(neg) r1, 0.5(pos) r2, 0.2(pos) r3, 0.1(neg) r4 -> ranks [1, 3, 2, 4].
#   AUC: pos 0.5 beats 0.1 not 0.9; pos 0.2 beats 0.1 not 0.9 -> 2 / (2*2) = 0.5.
#   MRR: (1/2 + 1/3) / 2 = 5/12.
#   DCG@5 = 1/log2(3) + 1/log2(4) = 1/log2(3) + 1/2.
#   IDCG@5 = 1/log2(2) + 1/log2(3) = 1 + 1/log2(3)  (both positives on top).
#   DCG@2 = 1/log2(3) (only rank 2 is a positive in the top 2); IDCG@2 = 1 + 1/log2(3).
A = ([0.9, 0.2, 0.5, 0.1], [0, 1, 1, 0])
A_RANKS = [1, 3, 2, 4]
A_AUC = 0.5
A_MRR = 5 / 12
A_NDCG5 = (INV_LOG2_3 + 0.5) / (1 + INV_LOG2_3)
A_NDCG2 = INV_LOG2_3 / (1 + INV_LOG2_3)

# Impression B (tie between a positive and a negative): scores [0.3, 0.7, 0.3], labels [0, 0, 1].
#   Stable descending sort: 0.7 (cand 1) r1, 0.3 (cand 0) r2, 0.3 (cand 2, the positive) r3,
#   i.e. the tie keeps candidate order -> ranks [2, 1, 3].
#   AUC: the positive loses to 0.7 and ties with 0.3 (counts 1/2) -> 0.5 / (1*2) = 0.25.
#   MRR: 1/3.  DCG@5 = 1/log2(4) = 1/2, IDCG@5 = 1 -> nDCG@5 = 0.5;  DCG@2 = 0 -> nDCG@2 = 0.
B = ([0.3, 0.7, 0.3], [0, 0, 1])
B_RANKS = [2, 1, 3]
B_AUC = 0.25
B_MRR = 1 / 3
B_NDCG5 = 0.5
B_NDCG2 = 0.0

# Impression C: no positive -> no AUC, no MRR, no nDCG.
C = ([0.1, 0.2], [0, 0])
# Impression D: a single positive candidate -> no AUC (no negative); MRR = nDCG = 1.
D = ([0.4], [1])


# ----------------------------------------------------------------------------------------
# Reference implementations (one impression at a time, straight from the definitions).
# ----------------------------------------------------------------------------------------


def _ref_order(scores: np.ndarray) -> np.ndarray:
    """Candidate indices by score descending, ties in candidate order."""
    return np.argsort(-scores, kind="stable")


def _ref_mrr(scores: np.ndarray, labels: np.ndarray) -> float:
    ranked = labels[_ref_order(scores)]
    return sum(y / (r + 1) for r, y in enumerate(ranked)) / labels.sum()


def _ref_ndcg(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    def dcg(ranked: np.ndarray) -> float:
        return sum((2.0**y - 1) / math.log2(r + 2) for r, y in enumerate(ranked[:k]))

    return dcg(labels[_ref_order(scores)]) / dcg(np.sort(labels)[::-1])


def _ref_per_impression(
    scores: np.ndarray, labels: np.ndarray, offsets: np.ndarray, ks: tuple[int, ...]
) -> dict[str, np.ndarray]:
    out: dict[str, list[float]] = {"auc": [], "mrr": []} | {f"ndcg@{k}": [] for k in ks}
    for start, end in zip(offsets[:-1], offsets[1:]):
        s, y = scores[start:end], labels[start:end]
        both = 0 < y.sum() < len(y)
        out["auc"].append(roc_auc_score(y, s) if both else math.nan)
        out["mrr"].append(_ref_mrr(s, y) if y.sum() > 0 else math.nan)
        for k in ks:
            out[f"ndcg@{k}"].append(_ref_ndcg(s, y, k) if y.sum() > 0 else math.nan)
    return {name: np.array(values) for name, values in out.items()}


def _random_impressions(
    rng: np.random.Generator, num_impressions: int, max_length: int, decimals: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random CSR data with lengths 1..max_length and a varying positive rate per impression."""
    lengths = rng.integers(1, max_length + 1, num_impressions)
    offsets = np.concatenate(([0], np.cumsum(lengths)))
    rates = rng.choice([0.0, 0.1, 0.3, 0.5, 1.0], num_impressions)  # includes single-class ones
    labels = (rng.random(offsets[-1]) < np.repeat(rates, lengths)).astype(np.int64)
    scores = rng.standard_normal(offsets[-1])
    if decimals is not None:
        scores = np.round(scores, decimals)  # many ties, including across labels
    return scores, labels, offsets


# ----------------------------------------------------------------------------------------
# Hand-computed values
# ----------------------------------------------------------------------------------------


def test_hand_computed_per_impression() -> None:
    scores, labels, offsets = _csr([A, B, C, D])
    per = per_impression_metrics(scores, labels, offsets, ks=(2, 5, 10))
    assert set(per) == {"auc", "mrr", "ndcg@2", "ndcg@5", "ndcg@10"}
    np.testing.assert_allclose(per["auc"], [A_AUC, B_AUC, np.nan, np.nan], rtol=1e-12)
    np.testing.assert_allclose(per["mrr"], [A_MRR, B_MRR, np.nan, 1.0], rtol=1e-12)
    np.testing.assert_allclose(per["ndcg@2"], [A_NDCG2, B_NDCG2, np.nan, 1.0], rtol=1e-12)
    np.testing.assert_allclose(per["ndcg@5"], [A_NDCG5, B_NDCG5, np.nan, 1.0], rtol=1e-12)
    # Every impression is shorter than 5, so @10 equals @5 (k capped at the length).
    np.testing.assert_allclose(per["ndcg@10"], per["ndcg@5"], rtol=0)


def test_hand_computed_averages() -> None:
    scores, labels, offsets = _csr([A, B, C, D])
    m = impression_metrics(scores, labels, offsets)
    assert set(m) == {
        "auc", "mrr", "ndcg@5", "ndcg@10", "impressions", "auc_impressions", "ranked_impressions"
    }
    assert m["impressions"] == 4
    assert m["auc_impressions"] == 2  # A, B
    assert m["ranked_impressions"] == 3  # A, B, D
    assert m["auc"] == pytest.approx((A_AUC + B_AUC) / 2, rel=1e-12)  # (0.5 + 0.25) / 2 = 0.375
    # (5/12 + 4/12 + 12/12) / 3 = 7/12
    assert m["mrr"] == pytest.approx((A_MRR + B_MRR + 1.0) / 3, rel=1e-12)
    assert m["ndcg@5"] == pytest.approx((A_NDCG5 + B_NDCG5 + 1.0) / 3, rel=1e-12)
    assert m["ndcg@10"] == pytest.approx(m["ndcg@5"], rel=1e-12)
    for key in ("auc", "mrr", "ndcg@5", "ndcg@10"):
        assert type(m[key]) is float
    for key in ("impressions", "auc_impressions", "ranked_impressions"):
        assert type(m[key]) is int


def test_hand_computed_ranks() -> None:
    scores, _, offsets = _csr([A, B, C, D])
    # C: 0.2 > 0.1 -> ranks [2, 1]; D: [1].
    expected = A_RANKS + B_RANKS + [2, 1] + [1]
    np.testing.assert_array_equal(impression_ranks(scores, offsets), expected)


def test_all_scores_tied_keep_candidate_order() -> None:
    # scores [1, 1, 1], labels [0, 1, 1]: stable order keeps candidates 0, 1, 2 -> ranks 1, 2, 3.
    # AUC: each positive ties the negative -> (0.5 + 0.5) / 2 = 0.5.
    # MRR: (1/2 + 1/3) / 2 = 5/12.  nDCG@5 = (1/log2 3 + 1/2) / (1 + 1/log2 3).
    scores, labels, offsets = _csr([([1.0, 1.0, 1.0], [0, 1, 1])])
    np.testing.assert_array_equal(impression_ranks(scores, offsets), [1, 2, 3])
    m = impression_metrics(scores, labels, offsets)
    assert m["auc"] == pytest.approx(0.5, rel=1e-12)
    assert m["mrr"] == pytest.approx(5 / 12, rel=1e-12)
    assert m["ndcg@5"] == pytest.approx((INV_LOG2_3 + 0.5) / (1 + INV_LOG2_3), rel=1e-12)


# ----------------------------------------------------------------------------------------
# Cross-checks on random data
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("decimals", [None, 1, 0])
def test_matches_reference_on_random_data(decimals: int | None) -> None:
    rng = np.random.default_rng(1234 + (decimals or 0))
    scores, labels, offsets = _random_impressions(rng, 250, max_length=40, decimals=decimals)
    ks = (1, 3, 5, 10, 50)
    per = per_impression_metrics(scores, labels, offsets, ks=ks)
    ref = _ref_per_impression(scores, labels, offsets, ks)
    assert set(per) == set(ref)
    for name in ref:
        np.testing.assert_allclose(per[name], ref[name], rtol=1e-12, atol=1e-12, err_msg=name)
    # The averages are the NaN-skipping means of the per-impression values.
    m = impression_metrics(scores, labels, offsets, ks=ks)
    for name in ref:
        assert m[name] == pytest.approx(np.nanmean(ref[name]), rel=1e-12)
    assert m["auc_impressions"] == np.count_nonzero(~np.isnan(ref["auc"]))
    assert m["ranked_impressions"] == np.count_nonzero(~np.isnan(ref["mrr"]))
    assert 0 < m["auc_impressions"] < m["ranked_impressions"] < m["impressions"] == len(offsets) - 1


def test_ranks_are_stable_permutations_on_random_data() -> None:
    rng = np.random.default_rng(7)
    scores, _, offsets = _random_impressions(rng, 300, max_length=70, decimals=1)
    ranks = impression_ranks(scores, offsets)
    assert ranks.shape == scores.shape
    assert ranks.dtype == np.int64
    for start, end in zip(offsets[:-1], offsets[1:]):
        r = ranks[start:end]
        np.testing.assert_array_equal(np.sort(r), np.arange(1, end - start + 1))
        expected = np.empty(end - start, dtype=np.int64)
        expected[_ref_order(scores[start:end])] = np.arange(1, end - start + 1)
        np.testing.assert_array_equal(r, expected)


def test_input_dtypes_and_lists() -> None:
    scores, labels, offsets = _csr([A, B, C, D])
    expected = impression_metrics(scores, labels, offsets)
    as_lists = impression_metrics(scores.tolist(), labels.tolist(), offsets.tolist())
    as_other = impression_metrics(
        scores.astype(np.float32), labels.astype(bool), offsets.astype(np.int32)
    )
    for m in (as_lists, as_other):
        assert m == pytest.approx(expected, rel=1e-6)
    int_scores = impression_metrics(np.array([3, 1, 2]), np.array([0, 1, 1]), np.array([0, 3]))
    assert int_scores["auc"] == 0.0  # both positives score below the negative


# ----------------------------------------------------------------------------------------
# Single-class, short, empty impressions and large k
# ----------------------------------------------------------------------------------------


def test_single_class_impressions() -> None:
    # all-negative impression: excluded everywhere; all-positive impression [0.2, 0.9, 0.5]:
    # no AUC, nDCG = 1, MRR = (1/1 + 1/2 + 1/3) / 3 = 11/18 (the formula, not 1.0).
    scores, labels, offsets = _csr([([0.3, 0.1, 0.2], [0, 0, 0]), ([0.2, 0.9, 0.5], [1, 1, 1])])
    per = per_impression_metrics(scores, labels, offsets)
    np.testing.assert_array_equal(np.isnan(per["auc"]), [True, True])
    np.testing.assert_allclose(per["mrr"], [np.nan, 11 / 18], rtol=1e-12)
    np.testing.assert_allclose(per["ndcg@5"], [np.nan, 1.0], rtol=1e-12)
    m = impression_metrics(scores, labels, offsets)
    assert math.isnan(m["auc"])
    assert m["auc_impressions"] == 0
    assert m["ranked_impressions"] == 1
    assert m["ndcg@10"] == pytest.approx(1.0, rel=1e-12)


def test_only_negative_impressions_give_nan() -> None:
    m = impression_metrics(np.array([0.5, 0.1, 0.3]), np.array([0, 0, 0]), np.array([0, 2, 3]))
    assert m["impressions"] == 2
    assert m["auc_impressions"] == m["ranked_impressions"] == 0
    for key in ("auc", "mrr", "ndcg@5", "ndcg@10"):
        assert math.isnan(m[key])


def test_length_one_impressions() -> None:
    # [pos], [neg], [pos]: no AUC anywhere; MRR = nDCG = 1 for the two positives.
    scores, labels = np.array([0.1, 0.7, -3.0]), np.array([1, 0, 1])
    offsets = np.array([0, 1, 2, 3])
    np.testing.assert_array_equal(impression_ranks(scores, offsets), [1, 1, 1])
    per = per_impression_metrics(scores, labels, offsets)
    np.testing.assert_allclose(per["mrr"], [1.0, np.nan, 1.0])
    np.testing.assert_allclose(per["ndcg@5"], [1.0, np.nan, 1.0])
    m = impression_metrics(scores, labels, offsets)
    assert (m["auc_impressions"], m["ranked_impressions"]) == (0, 2)
    assert math.isnan(m["auc"]) and m["mrr"] == 1.0


def test_k_larger_than_impression() -> None:
    # scores [0.1, 0.8, 0.6], labels [1, 0, 1] -> ranks [3, 1, 2].
    # DCG@k (k >= 3) = 1/log2(3) + 1/log2(4); IDCG = 1 + 1/log2(3); @1: DCG = 0.
    scores, labels, offsets = np.array([0.1, 0.8, 0.6]), np.array([1, 0, 1]), np.array([0, 3])
    per = per_impression_metrics(scores, labels, offsets, ks=(1, 3, 4, 1000))
    full = (INV_LOG2_3 + 0.5) / (1 + INV_LOG2_3)
    assert per["ndcg@1"][0] == 0.0
    for k in (3, 4, 1000):
        assert per[f"ndcg@{k}"][0] == pytest.approx(full, rel=1e-12)


def test_empty_impressions_and_no_impressions() -> None:
    # Empty impressions (repeated offsets) have no positive: they count in "impressions" only.
    scores, labels, offsets = np.array([0.2, 0.4]), np.array([1, 0]), np.array([0, 0, 2, 2])
    np.testing.assert_array_equal(impression_ranks(scores, offsets), [2, 1])
    m = impression_metrics(scores, labels, offsets)
    assert (m["impressions"], m["auc_impressions"], m["ranked_impressions"]) == (3, 1, 1)
    assert m["auc"] == 0.0 and m["mrr"] == 0.5
    empty = impression_metrics(np.array([]), np.array([], dtype=np.int64), np.array([0]))
    counts = (empty["impressions"], empty["auc_impressions"], empty["ranked_impressions"])
    assert counts == (0, 0, 0)
    assert math.isnan(empty["auc"]) and math.isnan(empty["ndcg@10"])
    assert impression_ranks(np.array([]), np.array([0])).shape == (0,)


def test_inputs_not_modified() -> None:
    scores, labels, offsets = _csr([A, B, C, D])
    copies = (scores.copy(), labels.copy(), offsets.copy())
    impression_metrics(scores, labels, offsets)
    impression_ranks(scores, offsets)
    for before, after in zip(copies, (scores, labels, offsets)):
        np.testing.assert_array_equal(before, after)


# ----------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------

_S = np.array([0.1, 0.2, 0.3])
_Y = np.array([0, 1, 1])
_O = np.array([0, 1, 3])


@pytest.mark.parametrize(
    ("scores", "labels", "offsets", "ks", "message"),
    [
        (_S.reshape(1, 3), _Y, _O, (5,), "scores must be 1-D"),
        (np.array(["a", "b", "c"]), _Y, _O, (5,), "real numeric"),
        (np.array([0.1, np.nan, 0.3]), _Y, _O, (5,), "finite"),
        (np.array([0.1, np.inf, 0.3]), _Y, _O, (5,), "finite"),
        (_S, _Y[:2], _O, (5,), "same shape"),
        (_S, np.array([0, 2, 1]), _O, (5,), "only 0 and 1"),
        (_S, np.array([0, -1, 1]), _O, (5,), "only 0 and 1"),
        (_S, np.array([0.0, 0.5, 1.0]), _O, (5,), "only 0 and 1"),
        (_S, _Y, np.array([[0, 1, 3]]), (5,), "offsets must be 1-D"),
        (_S, _Y, np.array([], dtype=np.int64), (5,), "offsets must be 1-D"),
        (_S, _Y, np.array([0.0, 1.0, 3.0]), (5,), "integer"),
        (_S, _Y, np.array([1, 2, 3]), (5,), r"offsets\[0\] must be 0"),
        (_S, _Y, np.array([0, 1, 2]), (5,), r"offsets\[-1\] must equal"),
        (_S, _Y, np.array([0, 2, 1, 3]), (5,), "non-decreasing"),
        (_S, _Y, _O, (0,), "positive integers"),
        (_S, _Y, _O, (2.5,), "positive integers"),
        (_S, _Y, _O, 5, "iterable"),
    ],
)
def test_invalid_inputs_raise(scores, labels, offsets, ks, message) -> None:
    with pytest.raises(ValueError, match=message):
        impression_metrics(scores, labels, offsets, ks=ks)


def test_impression_ranks_validates() -> None:
    with pytest.raises(ValueError, match="finite"):
        impression_ranks(np.array([0.1, np.nan]), np.array([0, 2]))
    with pytest.raises(ValueError, match=r"offsets\[-1\] must equal"):
        impression_ranks(np.array([0.1, 0.2]), np.array([0, 1]))


def test_star_import_names_only_what_the_module_defines():
    import newsrank.metrics as metrics

    assert all(hasattr(metrics, name) for name in metrics.__all__)
