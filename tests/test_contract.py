"""The model contract, checked on every registered model (cacheable and candidate-aware alike) at
its tiny settings: shapes, fast evaluation == one-at-a-time, padding invariance (extra padding and
junk in padded slots), batch-order invariance, candidate independence, overfitting one batch and a
checkpoint round trip. A new model gets all of it by registering; the per-model test files keep only
what is specific to their model (here: GRU, DKN and FIM's own checks)."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
import torch

from helpers import assert_fast_equals_slow, load_tiny_splits, overfit_losses, tiny_run_config
from newsrank.data.batching import NewsFeatures, TrainBatch, TrainSampler, UserInputs
from newsrank.data.entities import CONTEXT_FILE, ENTITY_FILE, load_entity_vectors
from newsrank.evaluate import encode_all_news, impression_chunks, padded_candidates
from newsrank.models import MODELS, ModelContext
from newsrank.models.base import length_bounds

ALL = sorted(MODELS)


@pytest.fixture(scope="module")
def built(synth_dir):
    """name -> (model, vocabs, train split, dev split): every model at its tiny settings, eval mode,
    with the synthetic entity and context vectors."""
    out = {}
    for name in ALL:
        config = tiny_run_config(name)
        vocabs, train, dev = load_tiny_splits(synth_dir, config.data)
        context = ModelContext(vocabs,
                               pretrained_entities=load_entity_vectors(synth_dir / "train", vocabs.entities)[0],
                               pretrained_contexts=load_entity_vectors(synth_dir / "train", vocabs.entities,
                                                                       CONTEXT_FILE)[0])
        cls = MODELS[name]
        cls.adapt_config(config.model, context)
        torch.manual_seed(3)
        model = cls(config.model, context).eval()
        if hasattr(model, "user_ids"):  # LSTUR starts its user table at zeros: make it matter
            with torch.no_grad():
                model.user_ids.weight.normal_(0.0, 0.5)
                model.user_ids.weight[0] = 0.0
        out[name] = (model, vocabs, train, dev)
    return out


def test_candidate_aware_models_are_declared():
    assert {name for name, cls in MODELS.items() if cls.candidate_aware} == {"dkn", "fim"}


@pytest.mark.parametrize("name", ALL)
def test_fast_scores_equal_one_at_a_time_scores(built, name):
    model, _, _, (table, behaviors) = built[name]
    # Some impressions share their user and history (as in MIND): the fast path encodes those once.
    keys = np.concatenate([np.asarray(behaviors.users)[:, None], np.asarray(behaviors.history)], axis=1)
    assert len(np.unique(keys, axis=0)) < len(keys)
    assert_fast_equals_slow(model, table, behaviors)


@pytest.mark.parametrize("name", ALL)
def test_scores_ignore_history_and_title_padding(built, name):
    model, _, (table, behaviors), _ = built[name]
    news = NewsFeatures.from_table(table)
    batch = next(TrainSampler(behaviors, npratio=3, batch_size=8, seed=1).epoch(0))
    logits = model(batch, news)
    padded = TrainBatch(torch.cat([torch.zeros(8, 5, dtype=torch.long), batch.history], dim=1), batch.candidates,
                        batch.users)
    torch.testing.assert_close(model(padded, news), logits, rtol=1e-5, atol=1e-5)
    # News vectors do not depend on how wide their batch's token columns are.
    rows = torch.arange(1, 12)
    users = torch.ones(len(rows), dtype=torch.long)
    wide = {f.name: getattr(news, f.name)[rows] for f in dataclasses.fields(news) if getattr(news, f.name) is not None}
    wide = NewsFeatures(**{k: torch.cat([v, torch.zeros(len(rows), 3, dtype=v.dtype)], dim=1) if v.dim() == 2 else v
                           for k, v in wide.items()})
    torch.testing.assert_close(model.encode_news(wide, users), model.encode_news(news.take(rows), users),
                               rtol=1e-5, atol=1e-5)


def test_length_groups_are_powers_of_two_or_exact_up_to_16_tokens():
    assert length_bounds(30, exact=False) == [4, 8, 16, 32] and length_bounds(3, exact=False) == [4]
    assert length_bounds(1, exact=True) == [1] and length_bounds(5, exact=True) == [1, 2, 3, 4, 5]
    bounds = length_bounds(300, exact=True)
    assert bounds[:16] == list(range(1, 17)) and bounds[-1] >= 300
    for lower, upper in zip(bounds[15:], bounds[16:]):  # above 16 tokens, under 25% padding
        assert lower < upper and (upper - (lower + 1)) / (lower + 1) < 0.25
    assert {name for name, cls in MODELS.items() if cls.exact_length_groups} == {"nrms", "fum"}


def test_fum_and_naml_have_several_word_views(built):
    assert {name for name in ALL if len(built[name][0].word_views()) > 1} == {"fum", "naml"}


@pytest.mark.parametrize("name", ALL)
def test_news_encoded_in_length_groups_equal_each_encoded_alone(built, name, monkeypatch):
    """With gradients (training: one grouping, by the longest text) and without (evaluation: a model
    with several word views runs each in groups of its own text length)."""
    model, _, (table, _), _ = built[name]
    news = NewsFeatures.from_table(table)
    rows = torch.arange(len(news)).flip(0)
    users = torch.ones(len(rows), dtype=torch.long)
    alone = torch.cat([model.encode_news(news.take(rows[i : i + 1]), users[i : i + 1]) for i in range(len(rows))])
    grouped = model.encode_news_rows(news, rows, max_batch=7, users=users)
    torch.testing.assert_close(grouped, alone, rtol=1e-5, atol=1e-5)

    views, masks = model.word_views(), []
    spied = {field: (lambda ids, view=view: masks.append(ids != 0) or view(ids)) for field, view in views.items()}
    monkeypatch.setattr(model, "word_views", lambda: spied)
    with torch.no_grad():
        grouped = model.encode_news_rows(news, rows, max_batch=7, users=users)
    torch.testing.assert_close(grouped, alone, rtol=1e-5, atol=1e-5)
    if len(views) > 1:
        assert sum(len(mask) for mask in masks) == len(views) * len(rows)
        for mask in masks:
            width, shortest = mask.shape[1], int(mask.sum(1).min())
            if model.exact_length_groups:  # a group's rows as long as the group up to 16 words (empty
                # texts: width 1), beyond that at most a quarter padding
                assert width == 1 or mask.all() or (width > 16 and 4 * shortest >= 3 * width)
            else:  # power-of-two groups: (4, 8], (8, 16], ...
                assert width <= 4 or 2 * shortest > width


@pytest.mark.parametrize("name", ALL)
def test_gathered_lookups_give_the_plain_lookups_gradients(built, name, monkeypatch):
    """A training batch's loss has the same gradients whether the length groups' embedding lookups
    read one gathered block of rows (``LookupTable.gathered``) or the whole tables each time."""
    import contextlib

    from newsrank.layers import LookupTable

    model, _, (table, behaviors), _ = built[name]
    news = NewsFeatures.from_table(table)
    batch = next(TrainSampler(behaviors, npratio=3, batch_size=8, seed=2).epoch(0))

    def gradients():
        model.zero_grad(set_to_none=True)
        model(batch, news).logsumexp(dim=1).sum().backward()  # eval mode: no dropout draws
        return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}

    gathered = gradients()
    if any(isinstance(m, LookupTable) and m.weight.requires_grad for m in model.modules()):
        calls = []
        original = LookupTable.gathered
        monkeypatch.setattr(LookupTable, "gathered", lambda self, ids: calls.append(1) or original(self, ids))
        gradients()
        assert calls, "the lookups were not gathered"
    monkeypatch.setattr(type(model), "gathered_lookups", lambda self, news, rows: contextlib.nullcontext())
    plain = gradients()
    model.zero_grad(set_to_none=True)
    assert gathered.keys() == plain.keys()
    for key in plain:
        torch.testing.assert_close(gathered[key], plain[key], rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.parametrize("name", ALL)
def test_scores_do_not_depend_on_batch_order(built, name):
    model, _, (table, behaviors), _ = built[name]
    news = NewsFeatures.from_table(table)
    batch = next(TrainSampler(behaviors, npratio=3, batch_size=8, seed=2).epoch(0))
    logits = model(batch, news)
    assert logits.shape == (8, 4) and torch.isfinite(logits).all()
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(0))
    shuffled = TrainBatch(batch.history[perm], batch.candidates[perm], batch.users[perm])
    torch.testing.assert_close(model(shuffled, news), logits[perm], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["dkn", "fim"])
def test_a_candidate_score_ignores_the_other_candidates(built, name):
    model, _, (table, behaviors), _ = built[name]
    news = NewsFeatures.from_table(table)
    vectors = encode_all_news(model, news, 64)
    history = torch.as_tensor(np.array(behaviors.history[:3], dtype=np.int64))
    inputs = UserInputs(history, history != 0, vectors[history], torch.ones(3, dtype=torch.long), news)
    cands = torch.tensor([[5, 6, 7], [8, 9, 0], [10, 0, 0]])
    mask = cands != 0
    full = model.score_candidates(inputs, vectors[cands], mask)
    garbage = vectors[cands].clone()
    garbage[~mask] = torch.randn(int((~mask).sum()), garbage.shape[-1]) * 10
    torch.testing.assert_close(model.score_candidates(inputs, garbage, mask)[mask], full[mask])
    alone = model.score_candidates(inputs.take(torch.tensor([0])), vectors[cands[:1, 1:2]])  # one candidate
    torch.testing.assert_close(alone[0, 0], full[0, 1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ALL)
def test_every_model_overfits_one_batch(synth_dir, name):
    config = tiny_run_config(name)
    if hasattr(config.model, "dropout"):
        config.model.dropout = 0.0
    vocabs, (table, behaviors), _ = load_tiny_splits(synth_dir, config.data)
    torch.manual_seed(0)
    model = MODELS[name](config.model, ModelContext(vocabs))
    first, last = overfit_losses(model, table, behaviors, steps=60)
    assert first > 1.2  # about log(5) at the start
    assert last < 0.2


@pytest.mark.parametrize("name", ALL)
def test_user_side_ignores_junk_in_padded_history_slots(built, name):
    """Whatever sits in the vectors of padded history slots (zeros, or garbage) changes nothing."""
    model, _, _, (table, behaviors) = built[name]
    news = NewsFeatures.from_table(table)
    history = torch.as_tensor(np.array(behaviors.history[:5], dtype=np.int64))  # [5, H], some padding
    real = history != 0
    assert (~real).any()
    users = torch.as_tensor(np.array(behaviors.users[:5], dtype=np.int64))
    if model.user_conditioned_news:  # NPA: news vectors exist per (reader, news) pair
        h = history.shape[1]
        clean = model.encode_pairs(news, history.reshape(-1), users.repeat_interleave(h)).view(5, h, -1)
    else:
        vectors = encode_all_news(model, news, 64)
        clean = vectors[history]  # [5, H, D]
    junk = clean.clone()
    junk[~real] = torch.randn(int((~real).sum()), junk.shape[-1], generator=torch.Generator().manual_seed(1)) * 5
    if model.candidate_aware:
        cands = vectors[torch.as_tensor(np.array(behaviors.candidates[:10], dtype=np.int64)).view(5, 2)]
        a = model.score_candidates(UserInputs(history, real, clean, users, news), cands)
        b = model.score_candidates(UserInputs(history, real, junk, users, news), cands)
    else:
        a = model.encode_user(UserInputs(history, real, clean, users, news))
        b = model.encode_user(UserInputs(history, real, junk, users, news))
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ALL)
def test_cached_history_features_equal_the_uncached_path(built, name):
    """What the user side computes from each clicked news alone (``history_features``), computed
    once per news item and handed over, gives the user side's own result, junk in padded slots too."""
    model, _, _, (table, behaviors) = built[name]
    news = NewsFeatures.from_table(table)
    history = torch.as_tensor(np.array(behaviors.history[:6], dtype=np.int64))  # [6, H]
    real = history != 0
    users = torch.as_tensor(np.array(behaviors.users[:6], dtype=np.int64))
    if model.user_conditioned_news:
        h = history.shape[1]
        vectors = model.encode_pairs(news, history.reshape(-1), users.repeat_interleave(h)).view(6, h, -1)
        table_features = None
    else:
        all_vectors = encode_all_news(model, news, 64)
        vectors = all_vectors[history]  # [6, H, D]
        table_features = model.history_features(all_vectors)  # [N, F] or None
    if table_features is None:
        assert model.history_features(vectors.reshape(-1, vectors.shape[-1])) is None
        return
    features = table_features[history]  # [6, H, F], as the evaluator gathers them
    junk_vectors, junk_features = vectors.clone(), features.clone()
    g = torch.Generator().manual_seed(2)
    junk_vectors[~real] = torch.randn(int((~real).sum()), vectors.shape[-1], generator=g) * 5
    junk_features[~real] = torch.randn(int((~real).sum()), features.shape[-1], generator=g) * 5
    cands = all_vectors[torch.as_tensor(np.array(behaviors.candidates[:12], dtype=np.int64)).view(6, 2)]

    def run(v, f):
        inputs = UserInputs(history, real, v, users, news, f)
        return model.score_candidates(inputs, cands) if model.candidate_aware else model.encode_user(inputs)

    with torch.no_grad():
        reference = run(vectors, None)
        cases = [(vectors, features), (junk_vectors, junk_features), (junk_vectors, None)]
        if not model.needs_history_vectors:  # the evaluator then hands over the features alone
            cases.append((None, junk_features))
        for v, f in cases:
            torch.testing.assert_close(run(v, f), reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ALL)
def test_checkpoint_round_trip_gives_identical_scores(built, synth_dir, tmp_path, name):
    from newsrank.checkpoint import load_checkpoint, save_checkpoint
    from newsrank.evaluate import score_behaviors

    model, vocabs, _, (table, behaviors) = built[name]
    config = tiny_run_config(name)
    config.model = model.config
    save_checkpoint(tmp_path / "ck", model, config, vocabs, epoch=1, metrics={"auc": 0.5})
    loaded = load_checkpoint(tmp_path / "ck")
    assert loaded.meta["kind"] == "news" and loaded.meta["model"] == name
    np.testing.assert_allclose(score_behaviors(loaded.model, table, behaviors),
                               score_behaviors(model, table, behaviors), rtol=1e-5, atol=1e-6)


def test_evaluator_chunks_whole_impressions_by_candidates():
    offsets = np.array([0, 3, 5, 12, 13, 15])
    assert impression_chunks(offsets, 2, by_candidates=False) == [(0, 2), (2, 4), (4, 5)]
    # At most 5 candidates per chunk, whole impressions, at least one impression each.
    assert impression_chunks(offsets, 5, by_candidates=True) == [(0, 2), (2, 3), (3, 5)]
    padded, mask = padded_candidates(torch.tensor([4, 5, 6, 7, 8]), torch.tensor([2, 3]))
    assert padded.tolist() == [[4, 5, 0], [6, 7, 8]] and mask.tolist() == [[True, True, False], [True] * 3]


# --------------------------------------------------------------------------- GRU


def test_gru_user_is_the_last_state_over_the_real_clicks(built):
    model, _, (table, behaviors), _ = built["gru"]
    news = NewsFeatures.from_table(table)
    vectors = encode_all_news(model, news, 64)
    history = torch.as_tensor(np.array(behaviors.history[:6], dtype=np.int64))
    users = model.encode_user(UserInputs(history, history != 0, vectors[history], torch.ones(6, dtype=torch.long),
                                         news))
    for i in range(6):
        clicks = vectors[history[i][history[i] != 0]]  # [k, D], oldest first
        state = torch.zeros(1, 1, vectors.shape[1])
        if len(clicks):
            _, state = model.gru(clicks[None], state)
        torch.testing.assert_close(users[i], state[0, 0], rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- DKN


def test_dkn_reads_entity_and_context_vectors(built, synth_dir):
    model, vocabs, _, _ = built["dkn"]
    assert model.config.use_entities and model.config.use_context and model.entities.embedding_dim == 100
    vectors, coverage = load_entity_vectors(synth_dir / "train", vocabs.entities)
    assert coverage.found == coverage.total > 0
    np.testing.assert_allclose(model.entities.weight[2:].detach().numpy(), vectors[2:], atol=1e-6)
    contexts, _ = load_entity_vectors(synth_dir / "train", vocabs.entities, CONTEXT_FILE)
    np.testing.assert_allclose(model.contexts.weight[2:].detach().numpy(), contexts[2:], atol=1e-6)


def test_dkn_entity_channel_changes_the_news_vector(built):
    model, _, (table, _), _ = built["dkn"]
    news = NewsFeatures.from_table(table)
    rows = torch.as_tensor(np.flatnonzero((np.asarray(table.title_word_entities) != 0).any(axis=1))[:5])
    assert len(rows) == 5  # synthetic titles mention entities, aligned with their words
    plain = dataclasses.replace(news, title_word_entities=torch.zeros_like(news.title_word_entities))
    assert not torch.allclose(model.encode_news(news.take(rows)), model.encode_news(plain.take(rows)))


def test_dkn_without_entity_data_runs_on_words_and_says_so(synth_dir, caplog):
    config = tiny_run_config("dkn")
    vocabs, _, _ = load_tiny_splits(synth_dir, config.data)
    empty = dataclasses.replace(vocabs, entities=type(vocabs.entities)([]))
    notes = MODELS["dkn"].adapt_config(config.model, ModelContext(empty))
    assert not config.model.use_entities and not config.model.use_context
    assert any("word channel only" in n for n in notes)
    model = MODELS["dkn"](config.model, ModelContext(empty))
    assert model.convs[0].in_channels == 1
    # Entities but no context file: the context channel alone goes.
    config = tiny_run_config("dkn")
    notes = MODELS["dkn"].adapt_config(config.model, ModelContext(vocabs))
    assert config.model.use_entities and not config.model.use_context
    assert any("context channel off" in n for n in notes)


def test_trainer_logs_dkn_channels_and_entity_coverage(synth_dir, tmp_path, caplog):
    from newsrank.cli import main

    from helpers import TINY_OVERRIDES

    args = [arg for item in TINY_OVERRIDES["dkn"] + ["epoch_batches=2"] for arg in ("--set", item)]
    with caplog.at_level(logging.INFO, logger="newsrank"):
        assert main(["train", "--model", "dkn", "--data", str(synth_dir), "--out", str(tmp_path / "run"),
                     "--epochs", "1", *args]) == 0
    text = caplog.text
    assert ENTITY_FILE in text and "(100.0%) have 100-d vectors" in text
    assert "channels: words, entities, contexts" in text


# --------------------------------------------------------------------------- FIM


def test_fim_news_vector_is_the_flattened_hdc_stack(built):
    model, _, (table, _), _ = built["fim"]
    cfg = model.config
    news = NewsFeatures.from_table(table)
    out = model.encode_news(news.take(torch.arange(0, 4)))
    assert out.shape == (4, len(cfg.dilations) * cfg.title_words * cfg.filters)
    assert torch.count_nonzero(out[0]) == 0  # the padding news: every level zeroed


def test_fim_rejects_shapes_the_pooling_cannot_take(synth_dir):
    config = tiny_run_config("fim")
    vocabs, _, _ = load_tiny_splits(synth_dir, config.data)
    with pytest.raises(ValueError, match="history_clicks must be >= "):
        MODELS["fim"](dataclasses.replace(config.model, history_clicks=5), ModelContext(vocabs))


def test_fim_match_equals_the_plain_3d_cnn_on_cubes_zero_outside_a_box(built):
    """The fast 3-D CNN (only the windows a cube's non-zero box reaches computed, the rest the zero
    cube's output) equals the plain Conv3d -> ReLU -> MaxPool3d stack, values and weight gradients,
    on cubes whose padded click slots and padded word rows and columns are zero."""
    model, _, _, _ = built["fim"]
    cfg = model.config
    lv, k, length = len(cfg.dilations), cfg.history_clicks, cfg.title_words
    g = torch.Generator().manual_seed(0)
    cubes = torch.randn(9, lv, k, length, length, generator=g)
    empty = torch.tensor([0, 1, 2, 3, 5, 9, 10, 0, 4])  # leading padded click slots; 10 = no click at all
    words = torch.tensor([length, 1, 2, 5, length, 3, 4, 0, 7])  # real words of the candidate
    click_words = torch.tensor([length, 4, length, 1, 6, 2, 3, 5, 0])  # of the longest click
    slots, positions = torch.arange(k), torch.arange(length)
    keep = ((slots[None, :] >= empty[:, None])[:, :, None, None]
            & (positions[None, :] < words[:, None])[:, None, :, None]
            & (positions[None, :] < click_words[:, None])[:, None, None, :])  # [9, K, L, L]
    cubes = cubes * keep[:, None]
    weights = torch.randn(9, model.dense.in_features, generator=g)
    grads = []
    for forward in (model.match, model.cnn3d):
        model.zero_grad()
        out = forward(cubes)
        (out * weights).sum().backward()
        grads.append([p.grad.clone() for p in model.cnn3d.parameters()])
        if forward == model.match:
            fast = out.detach()
        else:
            torch.testing.assert_close(fast, out.detach(), rtol=1e-5, atol=1e-5)
    for fast_grad, plain_grad in zip(*grads):
        torch.testing.assert_close(fast_grad, plain_grad, rtol=1e-4, atol=1e-4)
    model.zero_grad()


def test_dkn_dot_score_is_the_attended_user_times_the_candidate(built):
    model, vocabs, _, (table, behaviors) = built["dkn"]
    dot = MODELS["dkn"](dataclasses.replace(model.config, score="dot"), ModelContext(vocabs)).eval()
    missing, unexpected = dot.load_state_dict(model.state_dict(), strict=False)
    assert not missing and unexpected == ["dnn.0.weight", "dnn.0.bias", "dnn.2.weight", "dnn.2.bias"]
    assert_fast_equals_slow(dot, table, behaviors)
    news = NewsFeatures.from_table(table)
    history = torch.as_tensor(np.array(behaviors.history[:3], dtype=np.int64))
    vectors = encode_all_news(dot, news, 64)
    candidates = vectors[torch.as_tensor(np.array(behaviors.candidates[:6], dtype=np.int64)).view(3, 2)]  # [3, 2, D]
    user = UserInputs(history, history != 0, vectors[history], torch.zeros(3, dtype=torch.long), news)
    with torch.no_grad():
        weights = torch.softmax(dot.attention_out(torch.relu(
            dot.attention(torch.cat([vectors[history][:, None].expand(-1, 2, -1, -1),
                                     candidates[:, :, None].expand(-1, -1, history.shape[1], -1)], dim=-1)))
        ).squeeze(-1).masked_fill(~(history != 0)[:, None], torch.finfo(torch.float32).min), dim=-1)  # [3, 2, H]
        expected = (torch.einsum("bch,bhd->bcd", weights, vectors[history]) * candidates).sum(-1)
        torch.testing.assert_close(dot.score_candidates(user, candidates), expected, rtol=1e-5, atol=1e-5)
