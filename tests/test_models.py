"""NRMS and the shared model machinery: masks, invariances, learning, fast == slow scoring."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import assert_fast_equals_slow, load_tiny_splits, overfit_losses
from newsrank.config import DataConfig
from newsrank.data.batching import NewsFeatures, TrainBatch, TrainSampler, UserInputs
from newsrank.evaluate import encode_all_news
from newsrank.layers import AdditiveAttention, MultiHeadSelfAttention
from newsrank.models import ModelContext
from newsrank.models.nrms import NRMS, NRMSConfig

TINY = NRMSConfig(word_dim=16, heads=2, head_dim=4, attention_hidden=8, dropout=0.2)


@pytest.fixture(scope="module")
def tiny_data(synth_dir):
    config = DataConfig(title_len=12, history_len=10)
    return load_tiny_splits(synth_dir, config)


def make_model(vocabs, seed=0, config=TINY):
    torch.manual_seed(seed)
    return NRMS(config, ModelContext(vocabs)).eval()


# --------------------------------------------------------------------------- layers


def test_self_attention_ignores_padding_positions():
    torch.manual_seed(0)
    layer = MultiHeadSelfAttention(6, heads=2, head_dim=3)
    x = torch.randn(2, 4, 6)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    out = layer(x, mask)
    # Changing what sits in padded positions must not change the real positions' outputs.
    x2 = x.clone()
    x2[0, 2:] = torch.randn(2, 6) * 100
    out2 = layer(x2, mask)
    torch.testing.assert_close(out[0, :2], out2[0, :2])
    # And the result equals running on the unpadded sequence alone.
    torch.testing.assert_close(out[0, :2], layer(x[:1, :2], None)[0])


def test_additive_attention_masks_and_never_nans():
    torch.manual_seed(0)
    pool = AdditiveAttention(5, 7)
    x = torch.randn(3, 4, 5)
    mask = torch.tensor([[True, False, False, False], [True, True, False, False], [False] * 4])
    out = pool(x, mask)
    torch.testing.assert_close(out[0], x[0, 0])  # one real position: it gets all the weight
    torch.testing.assert_close(out[1], pool(x[1:2, :2])[0])
    assert torch.isfinite(out[2]).all()  # all padding: uniform weights, finite


# --------------------------------------------------------------------------- NRMS


def test_news_vector_does_not_depend_on_title_padding_width(tiny_data):
    vocabs, (table, _), _ = tiny_data
    model = make_model(vocabs)
    news = NewsFeatures.from_table(table)
    rows = torch.arange(1, 9)
    narrow = model.encode_news(news.take(rows))
    wide = model.encode_news(NewsFeatures(news.title[rows], news.abstract[rows], news.category[rows],
                                          news.subcategory[rows]))
    padded_title = torch.cat([news.title[rows], torch.zeros(8, 7, dtype=torch.long)], dim=1)
    wider = model.encode_news(NewsFeatures(padded_title, news.abstract[rows], news.category[rows],
                                           news.subcategory[rows]))
    torch.testing.assert_close(narrow, wide, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(narrow, wider, rtol=1e-5, atol=1e-6)


def test_user_vector_ignores_history_padding(tiny_data):
    vocabs, (table, behaviors), _ = tiny_data
    model = make_model(vocabs)
    news = NewsFeatures.from_table(table)
    vectors = encode_all_news(model, news, 64)
    history = torch.as_tensor(np.array(behaviors.history[:4], dtype=np.int64))  # [4, H]
    extra = torch.cat([torch.zeros(4, 6, dtype=torch.long), history], dim=1)  # more left padding
    users = torch.zeros(4, dtype=torch.long)
    a = model.encode_user(UserInputs(history, history != 0, vectors[history], users, news))
    b = model.encode_user(UserInputs(extra, extra != 0, vectors[extra], users, news))
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_scores_do_not_depend_on_batch_order(tiny_data):
    vocabs, (table, behaviors), _ = tiny_data
    model = make_model(vocabs)
    news = NewsFeatures.from_table(table)
    batch = next(TrainSampler(behaviors, npratio=3, batch_size=8, seed=1).epoch(0))
    logits = model(batch, news)
    perm = torch.randperm(len(batch.users))
    shuffled = TrainBatch(batch.history[perm], batch.candidates[perm], batch.users[perm])
    torch.testing.assert_close(model(shuffled, news), logits[perm], rtol=1e-5, atol=1e-5)
    assert logits.shape == (8, 4)


def test_nrms_overfits_one_batch(tiny_data):
    vocabs, (table, behaviors), _ = tiny_data
    model = make_model(vocabs, config=NRMSConfig(word_dim=16, heads=2, head_dim=4, attention_hidden=8,
                                                 dropout=0.0))
    first, last = overfit_losses(model, table, behaviors, steps=80)
    assert first > 1.2  # about log(5) at the start
    assert last < 0.1


def test_fast_scores_equal_one_at_a_time_scores(tiny_data):
    vocabs, _, (table, behaviors) = tiny_data
    model = make_model(vocabs, seed=3)
    # Some impressions share their user and history (as in MIND): the fast path encodes those once.
    keys = np.concatenate([np.asarray(behaviors.users)[:, None], np.asarray(behaviors.history)], axis=1)
    assert len(np.unique(keys, axis=0)) < len(keys)
    assert_fast_equals_slow(model, table, behaviors)


def test_pretrained_vectors_set_the_word_dimension(tiny_data):
    vocabs = tiny_data[0]
    vectors = np.random.default_rng(0).normal(size=(len(vocabs.words), 6)).astype(np.float32)
    model = NRMS(TINY, ModelContext(vocabs, vectors, freeze_words=True))
    assert model.words.embedding_dim == 6
    assert not model.words.weight.requires_grad
    np.testing.assert_allclose(model.words.weight[2].detach().numpy(), vectors[2])
