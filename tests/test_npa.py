"""NPA: news vectors depend on the reader; the (user, news) pair path trains and evaluates exactly."""

from __future__ import annotations

import pytest
import torch

from helpers import load_tiny_splits
from newsrank.config import DataConfig
from newsrank.data.batching import NewsFeatures
from newsrank.models import ModelContext
from newsrank.models.npa import NPA, NPAConfig

TINY = NPAConfig(word_dim=16, filters=8, window=3, user_dim=6, attention_hidden=8, dropout=0.0)


@pytest.fixture(scope="module")
def data(synth_dir):
    config = DataConfig(title_len=10, history_len=10)
    return load_tiny_splits(synth_dir, config)


def make(vocabs, seed=0):
    torch.manual_seed(seed)
    return NPA(TINY, ModelContext(vocabs)).eval()


def test_same_title_differs_between_users_and_not_within_a_user(data):
    vocabs, (table, _), _ = data
    model = make(vocabs)
    news = NewsFeatures.from_table(table)
    rows = torch.tensor([5, 5, 5])
    users = torch.tensor([2, 3, 2])
    vectors = model.encode_news(news.take(rows), users)  # [3, filters]
    assert not torch.allclose(vectors[0], vectors[1])
    torch.testing.assert_close(vectors[0], vectors[2])


def test_encoding_needs_the_reader(data):
    vocabs, (table, _), _ = data
    with pytest.raises(ValueError, match="user"):
        make(vocabs).encode_news(NewsFeatures.from_table(table).take(torch.tensor([1])))


def test_pairs_are_encoded_once_and_match_single_encoding(data):
    vocabs, (table, _), _ = data
    model = make(vocabs)
    news = NewsFeatures.from_table(table)
    rows = torch.tensor([4, 7, 4, 0, 7, 4])
    users = torch.tensor([2, 2, 3, 2, 3, 2])
    together = model.encode_pairs(news, rows, users)
    one_by_one = torch.cat([model.encode_news(news.take(rows[i : i + 1]), users[i : i + 1]) for i in range(6)])
    torch.testing.assert_close(together, one_by_one, rtol=1e-5, atol=1e-6)

