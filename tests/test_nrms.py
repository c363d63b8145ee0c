"""NRMS and the shared layers: attention masks, pretrained vectors (the model contract is test_contract.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import load_tiny_splits
from newsrank.config import DataConfig
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


def test_pretrained_vectors_set_the_word_dimension(tiny_data):
    vocabs = tiny_data[0]
    vectors = np.random.default_rng(0).normal(size=(len(vocabs.words), 6)).astype(np.float32)
    model = NRMS(TINY, ModelContext(vocabs, vectors, freeze_words=True))
    assert model.words.embedding_dim == 6
    assert not model.words.weight.requires_grad
    np.testing.assert_allclose(model.words.weight[2].detach().numpy(), vectors[2])
