"""LSTUR: ini/con user encoders, packed GRU over left-padded histories, long-term masking,
unseen users and empty histories, fast == slow scoring, learning, category features, config."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import assert_fast_equals_slow, load_tiny_splits
from newsrank.config import ConfigError, DataConfig, apply_overrides, load_config
from newsrank.data.batching import NewsFeatures, TrainSampler, UserInputs
from newsrank.data.vocab import UNK
from newsrank.evaluate import encode_all_news
from newsrank.models import ModelContext
from newsrank.models.lstur import LSTUR, LSTURConfig

TINY = LSTURConfig(word_dim=16, filters=8, window=3, attention_hidden=8, dropout=0.2, category_dim=4)
MODES = ["ini", "con"]


@pytest.fixture(scope="module")
def tiny_data(synth_dir):
    config = DataConfig(title_len=12, history_len=10)
    return load_tiny_splits(synth_dir, config)


def make_model(vocabs, seed=0, random_users=True, **changes):
    """An eval-mode tiny LSTUR. The user embedding starts at zeros (as in Microsoft Recommenders),
    which would hide the long-term path: ``random_users`` gives every real row a random vector."""
    torch.manual_seed(seed)
    model = LSTUR(dataclasses.replace(TINY, **changes), ModelContext(vocabs))
    if random_users:
        with torch.no_grad():
            model.user_ids.weight.normal_(0.0, 0.5)
            model.user_ids.weight[0] = 0.0
    return model.eval()


def user_inputs(model, news, behaviors, rows, extra_padding=0, users=None):
    """UserInputs of impressions ``rows`` (their histories with ``extra_padding`` more zeros on the left)."""
    vectors = encode_all_news(model, news, 64)  # [N, D]
    history = torch.as_tensor(np.array(behaviors.history[rows], dtype=np.int64))  # [B, H]
    history = torch.cat([torch.zeros(len(history), extra_padding, dtype=torch.long), history], dim=1)
    if users is None:
        users = torch.as_tensor(np.array(behaviors.users[rows], dtype=np.int64))  # [B]
    return UserInputs(history, history != 0, vectors[history], users, news)


# --------------------------------------------------------------------------- shapes and modes


def test_ini_and_con_shapes_and_differ(tiny_data):
    vocabs, (table, behaviors), _ = tiny_data
    news = NewsFeatures.from_table(table)
    batch = next(TrainSampler(behaviors, npratio=4, batch_size=8, seed=1).epoch(0))
    ini, con = (make_model(vocabs, mode=mode) for mode in MODES)
    logits_ini, logits_con = ini(batch, news), con(batch, news)
    assert logits_ini.shape == logits_con.shape == (8, 5)
    assert torch.isfinite(logits_ini).all() and torch.isfinite(logits_con).all()
    # Same seed: the news encoders are identical, only the user side differs.
    torch.testing.assert_close(ini.encode_news(news), con.encode_news(news))
    inputs = user_inputs(ini, news, behaviors, slice(0, 8))
    u_ini, u_con = ini.encode_user(inputs), con.encode_user(inputs)
    assert u_ini.shape == u_con.shape == (8, 8)
    assert not torch.allclose(u_ini, u_con, atol=1e-3)
    assert not torch.allclose(logits_ini, logits_con, atol=1e-3)


def test_ini_is_a_gru_started_from_the_user_embedding(tiny_data):
    vocabs, (table, behaviors), _ = tiny_data
    model = make_model(vocabs, mode="ini")
    news = NewsFeatures.from_table(table)
    inputs = user_inputs(model, news, behaviors, slice(0, 6))
    users = model.encode_user(inputs)
    for i in range(6):
        clicks = inputs.history_vectors[i][inputs.history_mask[i]]  # [k, D], oldest first
        if len(clicks) == 0:
            continue
        h0 = model.user_ids(inputs.users[i : i + 1])[None]  # [1, 1, D]
        _, last = model.gru(clicks[None], h0)
        torch.testing.assert_close(users[i], last[0, 0], rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- padding


@pytest.mark.parametrize("mode", MODES)
def test_user_vector_ignores_history_padding(tiny_data, mode):
    vocabs, (table, behaviors), _ = tiny_data
    model = make_model(vocabs, mode=mode)
    news = NewsFeatures.from_table(table)
    plain = user_inputs(model, news, behaviors, slice(0, 12))
    assert (~plain.history_mask).any(), "the test needs histories with padding"
    padded = user_inputs(model, news, behaviors, slice(0, 12), extra_padding=6)
    a = model.encode_user(plain)
    torch.testing.assert_close(a, model.encode_user(padded), rtol=1e-5, atol=1e-6)
    # What sits in the padding positions does not matter either.
    noisy = plain.history_vectors.clone()
    noisy[~plain.history_mask] = torch.randn(int((~plain.history_mask).sum()), noisy.shape[-1]) * 100
    garbage = UserInputs(plain.history, plain.history_mask, noisy, plain.users, news)
    torch.testing.assert_close(a, model.encode_user(garbage), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- unseen users, empty histories


@pytest.mark.parametrize("mode", MODES)
def test_unseen_user_and_empty_history(tiny_data, mode):
    vocabs, (table, behaviors), _ = tiny_data
    model = make_model(vocabs, mode=mode)
    news = NewsFeatures.from_table(table)
    vectors = encode_all_news(model, news, 64)
    # Unseen users (UNK) are scored like anybody else.
    unk = torch.full((4,), UNK, dtype=torch.long)
    inputs = user_inputs(model, news, behaviors, slice(0, 4), users=unk)
    user = model.encode_user(inputs)
    scores = model.score(user, vectors[None, 1:20].expand(4, -1, -1))
    assert torch.isfinite(scores).all()
    # Empty histories (all padding), alone and mixed with non-empty ones, never fail.
    history = torch.as_tensor(np.array(behaviors.history[:4], dtype=np.int64))  # [4, H]
    history[1] = 0
    history[3] = 0
    users = torch.tensor([2, 3, UNK, 5])
    mixed = model.encode_user(UserInputs(history, history != 0, vectors[history], users, news))
    empty = torch.zeros_like(history)
    alone = model.encode_user(UserInputs(empty, empty != 0, vectors[empty], users, news))
    assert torch.isfinite(mixed).all() and torch.isfinite(alone).all()
    # An empty history leaves the GRU at its initial state: u_l (ini) or 0 (con).
    long = model.user_ids(users)
    expected = long if mode == "ini" else model.combine(torch.cat([torch.zeros_like(long), long], dim=-1))
    torch.testing.assert_close(alone, expected)
    torch.testing.assert_close(mixed[[1, 3]], expected[[1, 3]])
    # The non-empty rows do not depend on their empty neighbours.
    solo = model.encode_user(UserInputs(history[[0, 2]], history[[0, 2]] != 0, vectors[history[[0, 2]]],
                                        users[[0, 2]], news))
    torch.testing.assert_close(mixed[[0, 2]], solo, rtol=1e-5, atol=1e-6)
    # Gradients flow through a batch with empty histories in training mode.
    model.train()
    out = model.encode_user(UserInputs(history, history != 0, model.encode_news(news.take(history.reshape(-1)))
                                       .view(4, history.shape[1], -1), users, news))
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# --------------------------------------------------------------------------- long-term masking


@pytest.mark.parametrize("mode", MODES)
def test_user_masking_in_training_only(tiny_data, mode):
    vocabs, (table, behaviors), _ = tiny_data
    model = make_model(vocabs, mode=mode, dropout=0.0, user_mask_prob=1.0)
    news = NewsFeatures.from_table(table)
    alice = user_inputs(model, news, behaviors, slice(0, 5), users=torch.full((5,), 2, dtype=torch.long))
    bob = UserInputs(alice.history, alice.history_mask, alice.history_vectors, torch.full((5,), 7), news)
    model.train()
    torch.testing.assert_close(model.encode_user(alice), model.encode_user(bob))
    model.eval()
    assert not torch.allclose(model.encode_user(alice), model.encode_user(bob), atol=1e-4)


def test_user_masking_draws_once_per_sample(tiny_data):
    vocabs, (table, behaviors), _ = tiny_data
    model = make_model(vocabs, mode="ini", dropout=0.0, user_mask_prob=0.5)
    news = NewsFeatures.from_table(table)
    one = user_inputs(model, news, behaviors, slice(0, 1), users=torch.tensor([3]))
    n = 400
    many = UserInputs(one.history.expand(n, -1), one.history_mask.expand(n, -1),
                      one.history_vectors.expand(n, -1, -1), one.users.expand(n), news)
    kept = model.encode_user(one)  # eval mode: never masked
    masked = model.encode_user(UserInputs(one.history, one.history_mask, one.history_vectors,
                                          torch.tensor([0]), news))  # row 0 is all zeros
    model.train()
    torch.manual_seed(0)
    out = model.encode_user(many)  # [n, D]
    is_kept = torch.isclose(out, kept, atol=1e-6).all(dim=1)
    is_masked = torch.isclose(out, masked, atol=1e-6).all(dim=1)
    assert bool((is_kept ^ is_masked).all())  # each sample is all-or-nothing
    assert 0.4 < is_kept.float().mean() < 0.6


# --------------------------------------------------------------------------- evaluation and learning


@pytest.mark.parametrize("changes", [{"mode": "ini"}, {"mode": "con"}, {"mode": "ini", "use_categories": True}])
def test_fast_scores_equal_one_at_a_time_scores(tiny_data, changes):
    vocabs, _, (table, behaviors) = tiny_data
    model = make_model(vocabs, seed=3, **changes)
    assert_fast_equals_slow(model, table, behaviors)


@pytest.mark.parametrize("mode", MODES)
def test_lstur_overfits_one_batch(tiny_data, mode):
    vocabs, (table, behaviors), _ = tiny_data
    model = make_model(vocabs, random_users=False, mode=mode, dropout=0.0, user_mask_prob=0.0).train()
    news = NewsFeatures.from_table(table)
    batch = next(TrainSampler(behaviors, npratio=4, batch_size=16, seed=0).epoch(0))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    target = torch.zeros(16, dtype=torch.long)
    losses = []
    for _ in range(100):
        loss = F.cross_entropy(model(batch, news), target)
        losses.append(loss.item())
        if losses[-1] < 0.2:
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert losses[0] > 1.2  # about log(5) at the start
    assert losses[-1] < 0.2, f"still {losses[-1]:.3f} after {len(losses)} steps"


# --------------------------------------------------------------------------- categories, config


def test_categories_widen_the_news_vector(tiny_data):
    vocabs, (table, behaviors), _ = tiny_data
    model = make_model(vocabs, use_categories=True, mode="con")
    news = NewsFeatures.from_table(table)
    vectors = model.encode_news(news.take(torch.arange(1, 9)))
    assert vectors.shape == (8, 8 + 2 * 4)
    other = news.take(torch.arange(1, 9))
    other.category = torch.where(other.category == 2, 3, 2)
    assert not torch.allclose(model.encode_news(other)[:, 8:12], vectors[:, 8:12])
    torch.testing.assert_close(model.encode_news(other)[:, 12:], vectors[:, 12:])
    batch = next(TrainSampler(behaviors, npratio=4, batch_size=8, seed=1).epoch(0))
    assert model(batch, news).shape == (8, 5)
    assert model.encode_user(user_inputs(model, news, behaviors, slice(0, 3))).shape == (3, 16)


def test_mode_and_mask_settings_are_checked(tiny_data):
    config = load_config("lstur", LSTURConfig)
    apply_overrides(config, ["mode=con", "user_mask_prob=0"])
    assert config.model.mode == "con" and config.model.user_mask_prob == 0.0
    with pytest.raises(ConfigError):
        apply_overrides(config, ["mode=sum"])
    vocabs = tiny_data[0]
    with pytest.raises(ValueError):
        LSTUR(dataclasses.replace(TINY, user_mask_prob=1.5), ModelContext(vocabs))


@pytest.mark.parametrize("mode", MODES)
def test_stepped_gru_from_cached_projections_equals_the_packed_gru(tiny_data, mode):
    """Evaluation's hand-stepped GRU (input projections once per news) is training's packed nn.GRU."""
    vocabs, (table, behaviors), _ = tiny_data
    model = make_model(vocabs, mode=mode)
    news = NewsFeatures.from_table(table)
    vectors = encode_all_news(model, news, 64)
    history = torch.as_tensor(np.array(behaviors.history[:8], dtype=np.int64))
    history[3] = 0  # a user without clicks keeps the initial state
    mask = history != 0
    initial = torch.randn(8, vectors.shape[1], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        packed = model.packed_gru(vectors[history], mask, initial)
        stepped = model.stepped_gru(model.history_features(vectors)[history], mask, initial)
    torch.testing.assert_close(stepped, packed, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(stepped[3], initial[3])
