"""newsrank.seq.metrics against straightforward per-row Python references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from newsrank.seq import full_ranking_metrics, full_ranks, sample_negatives, sampled_metrics, sampled_ranks


def _reference_rank(row, target, competitors, ties):
    rank = 1
    for j in competitors:
        if j == target:
            continue
        if row[j] > row[target] or (ties == "pessimistic" and row[j] == row[target]):
            rank += 1
    return rank


def _reference_metrics(ranks, k):
    recall = sum(1 for r in ranks if r <= k) / len(ranks)
    mrr = sum(1.0 / r for r in ranks if r <= k) / len(ranks)
    return recall, mrr


def _random(n=40, v=30, seed=0, integer=True):
    rng = np.random.default_rng(seed)
    # small integer scores: many ties
    scores = rng.integers(0, 6, size=(n, v)).astype(np.float32) if integer else rng.normal(size=(n, v))
    targets = rng.integers(1, v, size=n)
    return scores, targets


@pytest.mark.parametrize("ties", ["pessimistic", "optimistic"])
@pytest.mark.parametrize("exclude_padding", [True, False])
def test_full_ranking_matches_reference(ties, exclude_padding):
    scores, targets = _random()
    scores[:, 0] = 100.0  # padding scores highest: only matters when it is not excluded
    v = scores.shape[1]
    competitors = range(1, v) if exclude_padding else range(v)
    expected = [_reference_rank(scores[i], targets[i], competitors, ties) for i in range(len(targets))]
    ranks = full_ranks(scores, targets, exclude_padding=exclude_padding, ties=ties)
    assert ranks.tolist() == expected
    metrics = full_ranking_metrics(scores, targets, ks=(1, 5, 10), exclude_padding=exclude_padding, ties=ties)
    for k in (1, 5, 10):
        recall, mrr = _reference_metrics(expected, k)
        assert metrics[f"recall@{k}"] == pytest.approx(recall)
        assert metrics[f"mrr@{k}"] == pytest.approx(mrr)


def test_full_ranking_chunks_and_torch(monkeypatch):
    import newsrank.seq.metrics as m

    scores, targets = _random(n=25, v=20, seed=3, integer=False)
    whole = full_ranks(scores, targets)
    monkeypatch.setattr(m, "_CHUNK_CELLS", 45)  # 2 rows per chunk
    assert full_ranks(scores, targets).tolist() == whole.tolist()
    assert full_ranks(torch.from_numpy(scores), torch.from_numpy(targets)).tolist() == whole.tolist()


def test_ties_constant_scores():
    scores = np.zeros((3, 11))
    targets = np.array([1, 5, 10])
    assert full_ranks(scores, targets).tolist() == [10, 10, 10]  # pessimistic: last of 10 real items
    assert full_ranks(scores, targets, ties="optimistic").tolist() == [1, 1, 1]
    assert full_ranking_metrics(scores, targets)["recall@10"] == 1.0
    assert full_ranking_metrics(scores, targets, ks=(9,))["recall@9"] == 0.0


def test_hand_example():
    scores = np.array([[9.0, 0.1, 0.5, 0.3], [9.0, 0.9, 0.5, 0.3]])
    targets = np.array([3, 1])
    # row 0: item 3 (0.3) is below item 2 (0.5): rank 2; row 1: rank 1
    assert full_ranking_metrics(scores, targets, ks=(1, 2)) == {
        "recall@1": 0.5,
        "mrr@1": 0.5,
        "recall@2": 1.0,
        "mrr@2": 0.75,
    }


def test_bad_inputs():
    scores = np.zeros((2, 5))
    with pytest.raises(ValueError, match="padding"):
        full_ranks(scores, np.array([0, 1]))
    with pytest.raises(ValueError, match="in \\[0, 5\\)"):
        full_ranks(scores, np.array([1, 5]))
    with pytest.raises(ValueError, match="\\[N\\]"):
        full_ranks(scores, np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="NaN"):
        full_ranks(np.full((2, 5), np.nan), np.array([1, 2]))


@pytest.mark.parametrize("exclude_padding", [True, False])
def test_sample_negatives_distinct_and_valid(exclude_padding):
    rng = np.random.default_rng(0)
    targets = rng.integers(1, 12, size=200)
    negatives = sample_negatives(targets, 12, 9, rng, exclude_padding=exclude_padding)
    assert negatives.shape == (200, 9)
    low = 1 if exclude_padding else 0
    assert negatives.min() >= low and negatives.max() <= 11
    assert not (negatives == targets[:, None]).any()
    assert all(len(set(row)) == 9 for row in negatives.tolist())
    # 9 of 10 (or 11) candidates: every candidate is drawn about equally often
    counts = np.bincount(negatives.ravel(), minlength=12)[low:]
    assert counts.min() > 0.7 * counts.mean()
    with pytest.raises(ValueError, match="distinct"):
        sample_negatives(targets, 12, 12, rng)


@pytest.mark.parametrize("ties", ["pessimistic", "optimistic"])
def test_sampled_ranks_match_reference(ties):
    scores, targets = _random(n=30, v=50, seed=5)
    negatives = sample_negatives(targets, 50, 20, np.random.default_rng(1))
    expected = [_reference_rank(scores[i], targets[i], negatives[i], ties) for i in range(len(targets))]
    assert sampled_ranks(scores, targets, negatives, ties=ties).tolist() == expected


def test_sampled_metrics_protocol():
    scores, targets = _random(n=30, v=300, seed=2, integer=False)
    a = sampled_metrics(scores, targets, num_negatives=100, repeats=4, rng=7, ks=(10,))
    b = sampled_metrics(scores, targets, num_negatives=100, repeats=4, rng=np.random.default_rng(7), ks=(10,))
    assert a == b  # seeded: reproducible
    # reference: the same draws, per row in Python, averaged over repeats
    rng = np.random.default_rng(7)
    recalls, mrrs = [], []
    for _ in range(4):
        negatives = sample_negatives(targets, 300, 100, rng)
        ranks = [_reference_rank(scores[i], targets[i], negatives[i], "pessimistic") for i in range(30)]
        recall, mrr = _reference_metrics(ranks, 10)
        recalls.append(recall)
        mrrs.append(mrr)
    assert a["recall@10"] == pytest.approx(np.mean(recalls))
    assert a["mrr@10"] == pytest.approx(np.mean(mrrs))
    assert a["recall@10_std"] == pytest.approx(np.std(recalls))
    # sampled ranking is easier than the full ranking
    assert a["recall@10"] >= full_ranking_metrics(scores, targets)["recall@10"]


def test_sampled_metrics_with_too_few_items_is_the_full_ranking():
    scores, targets = _random(n=20, v=15, seed=4)
    sampled = sampled_metrics(scores, targets, num_negatives=100, ks=(5,))
    full = full_ranking_metrics(scores, targets, ks=(5,))
    assert {k: sampled[k] for k in full} == full
    assert sampled["recall@5_std"] == 0.0
