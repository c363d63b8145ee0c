"""NAML: shapes, every view used, an empty abstract, pretrained vectors (the model contract is test_contract.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import load_tiny_splits
from newsrank.config import DataConfig
from newsrank.data.batching import NewsFeatures, TrainSampler
from newsrank.models.base import ModelContext
from newsrank.models.naml import NAML, NAMLConfig

TINY = NAMLConfig(word_dim=16, filters=8, window=3, attention_hidden=8, category_dim=4, dropout=0.2)


@pytest.fixture(scope="module")
def tiny_data(synth_dir):
    config = DataConfig(title_len=12, abstract_len=20, history_len=10)
    return load_tiny_splits(synth_dir, config)


def make_model(vocabs, seed=0, config=TINY):
    torch.manual_seed(seed)
    return NAML(config, ModelContext(vocabs)).eval()


def rows_of(news: NewsFeatures, rows: torch.Tensor) -> NewsFeatures:
    """The rows at the table's full widths (no trimming, unlike ``take``)."""
    return NewsFeatures(news.title[rows], news.abstract[rows], news.category[rows], news.subcategory[rows])


def test_logits_shape(tiny_data):
    vocabs, (table, behaviors), _ = tiny_data
    model = make_model(vocabs)
    news = NewsFeatures.from_table(table)
    batch = next(TrainSampler(behaviors, npratio=4, batch_size=8, seed=1).epoch(0))
    logits = model(batch, news)
    assert logits.shape == (8, 5)
    assert torch.isfinite(logits).all()
    assert model.encode_news(news.take(torch.arange(1, 6))).shape == (5, TINY.filters)


@pytest.mark.parametrize("view", ["title", "abstract", "category", "subcategory"])
def test_every_view_changes_the_news_vector(tiny_data, view):
    vocabs, (table, _), _ = tiny_data
    model = make_model(vocabs)
    news = NewsFeatures.from_table(table)
    rows = torch.arange(1, 9)
    base = rows_of(news, rows)
    changed = rows_of(news, rows)
    field = getattr(changed, view)
    if field.dim() == 2:  # replace row 0's text by other words
        field[0] = 0
        field[0, :5] = (getattr(base, view)[0, :5] + 7) % (len(vocabs.words) - 2) + 2
    else:  # another category / subcategory (not padding)
        assert len(vocabs.categories if view == "category" else vocabs.subcategories) > 3
        field[0] = 2 if int(field[0]) != 2 else 3
    assert not torch.equal(getattr(changed, view), getattr(base, view))
    a, b = model.encode_news(base), model.encode_news(changed)
    assert (a[0] - b[0]).abs().max() > 1e-6  # the changed item moves
    torch.testing.assert_close(a[1:], b[1:])  # the others do not


def test_empty_abstract_gives_a_finite_width_independent_vector(tiny_data):
    vocabs, (table, _), _ = tiny_data
    model = make_model(vocabs)
    news = NewsFeatures.from_table(table)
    rows = torch.arange(1, 5)
    base = rows_of(news, rows)
    for width in (1, base.abstract.shape[1]):
        empty = NewsFeatures(base.title, torch.zeros(4, width, dtype=torch.long), base.category, base.subcategory)
        out = model.encode_news(empty)
        assert torch.isfinite(out).all()
        if width == 1:
            first = out
    torch.testing.assert_close(out, first, rtol=1e-5, atol=1e-6)
    # The padding row itself (no title, no abstract, padding categories) is finite as well.
    assert torch.isfinite(model.encode_news(news.take(torch.tensor([0])))).all()
    # And with gradients: no NaN flows back from an all-padding row.
    model.train()
    loss = model.encode_news(NewsFeatures(base.title, torch.zeros(4, 3, dtype=torch.long), base.category,
                                          base.subcategory)).sum()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_pretrained_vectors_set_the_word_dimension(tiny_data):
    vocabs = tiny_data[0]
    vectors = np.random.default_rng(0).normal(size=(len(vocabs.words), 6)).astype(np.float32)
    model = NAML(TINY, ModelContext(vocabs, vectors, freeze_words=True))
    assert model.words.embedding_dim == 6
    assert not model.words.weight.requires_grad
    assert model.title_view.cnn.conv.in_channels == model.body_view.cnn.conv.in_channels == 6

