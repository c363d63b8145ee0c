"""Beyond-accuracy metrics against values worked out by hand on small cases, and their place in
evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from helpers import load_tiny_splits, tiny_run_config
from newsrank import beyond
from newsrank.beyond import beyond_metrics, train_click_counts
from newsrank.data.dataset import NewsTable

# Rows 1..6 (row 0 is padding); categories A=2, B=3, C=4.
CATEGORIES = np.array([0, 2, 2, 3, 4, 3, 2])
VECTORS = np.array([[0, 0], [1, 0], [1, 0], [0, 1], [3, 4], [0, -1], [1, 1]], dtype=np.float32)
# Impression 0: candidates 1 2 3 4 -> ranked 1, 3, 4, 2. Impression 1: candidates 5 6 2 -> ranked 6, 2, 5.
CANDIDATES = np.array([1, 2, 3, 4, 5, 6, 2])
SCORES = np.array([0.9, 0.1, 0.8, 0.5, 0.2, 0.7, 0.6])
OFFSETS = np.array([0, 4, 7])
HISTORY = np.array([[0, 1, 2], [0, 0, 0]])  # impression 0: two clicks of category A; impression 1: none
CLICKS = np.array([0, 3, 0, 1, 0, 0, 4])  # training clicks per row


def metrics(k, **kwargs):
    args = dict(scores=SCORES, offsets=OFFSETS, candidates=CANDIDATES, history=HISTORY, categories=CATEGORIES,
                click_counts=CLICKS, news_vectors=VECTORS, k=k)
    return beyond_metrics(**(args | kwargs))


def test_diversity_by_vectors_and_by_category_at_k2():
    m = metrics(2)  # impression 0 keeps rows {1, 3}, impression 1 rows {6, 2}
    # vectors: cos(v1, v3) = 0 -> ILD 1; cos(v6, v2) = 1/sqrt(2) -> ILD 1 - 1/sqrt(2)
    assert m["ild"] == pytest.approx((1 + (1 - 1 / math.sqrt(2))) / 2)
    # categories: A, B differ -> 1; A, A -> 0
    assert m["ild_category"] == pytest.approx(0.5)
    assert m["ild_impressions"] == 2 and m["k"] == 2 and m["impressions"] == 2


def test_diversity_averages_over_every_pair_at_k3():
    m = metrics(3)  # impression 0: rows {1, 3, 4}; impression 1: all of {6, 2, 5}
    # impression 0: cos(1,3) = 0, cos(1,4) = 0.6, cos(3,4) = 0.8 -> 1 - 1.4/3
    # impression 1: cos(6,2) = 1/sqrt2, cos(6,5) = -1/sqrt2, cos(2,5) = 0 -> 1 - 0/3 = 1
    assert m["ild"] == pytest.approx(((1 - 1.4 / 3) + 1.0) / 2)
    # impression 0: A, B, C -> all 3 pairs differ -> 1; impression 1: A, A, B -> 2 of 3 pairs differ
    assert m["ild_category"] == pytest.approx((1 + 2 / 3) / 2)


def test_coverage_counts_distinct_recommended_over_distinct_shown():
    assert metrics(2)["coverage"] == pytest.approx(4 / 6)  # {1, 3, 6, 2} of {1, ..., 6}
    assert metrics(3)["coverage"] == pytest.approx(6 / 6)
    assert metrics(1)["coverage"] == pytest.approx(2 / 6)  # {1, 6}


def test_novelty_is_mean_self_information_of_add_one_smoothed_train_popularity():
    # smoothed counts of rows 1..6: 4 1 2 1 1 5 (sum 14)
    imp0 = (math.log2(14 / 4) + math.log2(14 / 2)) / 2  # rows 1, 3
    imp1 = (math.log2(14 / 5) + math.log2(14 / 1)) / 2  # rows 6, 2
    assert metrics(2)["novelty"] == pytest.approx((imp0 + imp1) / 2)
    assert metrics(2, click_counts=None)["novelty"] is None


def test_calibration_is_jensen_shannon_in_bits_between_history_and_list_categories():
    m = metrics(2)
    # impression 0: history P = {A: 1}; list Q = {A: .5, B: .5}; M = {A: .75, B: .25}
    kl_p = math.log2(1 / 0.75)
    kl_q = 0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(0.5 / 0.25)
    assert m["calibration_js"] == pytest.approx(kl_p / 2 + kl_q / 2)  # ~0.311 bits
    assert m["calibration_impressions"] == 1  # impression 1 has no history
    # the same mix -> 0; disjoint categories -> 1 bit (the maximum)
    same = metrics(2, history=np.array([[1, 3], [6, 2]]))
    assert same["calibration_js"] == pytest.approx(0.0, abs=1e-12)
    disjoint = metrics(1, history=np.array([[0, 4], [0, 3]]))  # lists: row 1 (A), row 6 (A); histories C, B
    assert disjoint["calibration_js"] == pytest.approx(1.0)


def test_ties_keep_candidate_order_and_short_impressions_have_no_pairs():
    m = beyond_metrics(np.zeros(3), np.array([0, 2, 3]), np.array([1, 3, 4]), np.array([[1], [1]]), CATEGORIES,
                       news_vectors=VECTORS, k=1)
    assert m["coverage"] == pytest.approx(2 / 3)  # row 1 (the first of a tie) and row 4
    assert m["ild"] is None and m["ild_category"] is None and m["ild_impressions"] == 0  # one item: no pair
    m = beyond_metrics(np.zeros(3), np.array([0, 2, 3]), np.array([1, 3, 4]), np.array([[1], [1]]), CATEGORIES,
                       news_vectors=VECTORS, k=5)
    assert m["ild_impressions"] == 1 and m["ild_category"] == pytest.approx(1.0)  # the 1-candidate one has none


def test_zero_vectors_count_as_orthogonal_and_chunks_change_nothing(monkeypatch):
    vectors = VECTORS.copy()
    vectors[3] = 0  # row 3
    m = metrics(2, news_vectors=vectors)  # impression 0: cos(v1, 0) := 0 -> ILD 1
    assert m["ild"] == pytest.approx((1 + (1 - 1 / math.sqrt(2))) / 2)
    whole = metrics(3)["ild"]
    monkeypatch.setattr(beyond, "_CHUNK_FLOATS", 1)  # one impression per chunk
    assert metrics(3)["ild"] == pytest.approx(whole)


def test_train_click_counts_match_news_by_id():
    def table(ids):
        n = len(ids)
        z = np.zeros((n, 1), dtype=np.int32)
        return NewsTable(ids, z, z, np.zeros(n, np.int32), np.zeros(n, np.int32), z, z)

    from test_training import toy_behaviors

    train = toy_behaviors([[1, 0], [0, 1], [1, 0]])  # candidates rows 1..6, clicks on rows 1, 4, 5
    train_table = table(["", "N1", "N2", "N3", "N4", "N5", "N6"])
    dev_table = table(["", "N5", "N9", "N1", "N4"])
    assert train_click_counts(train_table, train, dev_table).tolist() == [0, 1, 0, 1, 1]


def test_evaluation_reports_beyond_from_its_own_scores_and_vectors(synth_dir):
    from newsrank.evaluate import encode_all_news, evaluate, eval_mode, score_behaviors
    from newsrank.data.batching import NewsFeatures
    from newsrank.models import ModelContext, model_class

    config = tiny_run_config("nrms")
    vocabs, (train_table, train_behaviors), (table, behaviors) = load_tiny_splits(synth_dir, config.data)
    torch.manual_seed(0)
    model = model_class("nrms")(config.model, ModelContext(vocabs))
    counts = train_click_counts(train_table, train_behaviors, table)
    result = evaluate(model, table, behaviors, 64, click_counts=counts)
    scores = score_behaviors(model, table, behaviors, 64)
    with eval_mode(model):
        vectors = encode_all_news(model, NewsFeatures.from_table(table), 64)
    expected = beyond_metrics(scores, behaviors.offsets, behaviors.candidates, behaviors.history, table.category,
                              counts, vectors, 10)
    assert result["beyond"] == pytest.approx(expected)
    assert 0 < result["beyond"]["coverage"] <= 1 and 0 <= result["beyond"]["calibration_js"] <= 1
    assert "beyond" not in evaluate(model, table, behaviors, 64, beyond_k=None)


def test_a_model_with_per_user_news_vectors_has_no_vector_diversity(synth_dir):
    from newsrank.evaluate import evaluate
    from newsrank.models import ModelContext, model_class

    config = tiny_run_config("npa")
    vocabs, _, (table, behaviors) = load_tiny_splits(synth_dir, config.data)
    model = model_class("npa")(config.model, ModelContext(vocabs))
    result = evaluate(model, table, behaviors, 64)["beyond"]
    assert result["ild"] is None and result["novelty"] is None  # no click counts given
    assert result["ild_category"] is not None and result["coverage"] is not None
