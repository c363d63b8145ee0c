"""FUM: shapes, u^f against the plain slot grid and its padding, ablations, entity view, init (the model contract is test_contract.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from helpers import load_tiny_splits
from newsrank.config import DataConfig
from newsrank.data.batching import NewsFeatures, TrainSampler, UserInputs
from newsrank.data.dataset import build_news_table, news_entity_ids
from newsrank.data.mind import NewsRecord
from newsrank.data.vocab import Vocab, Vocabularies
from newsrank.evaluate import encode_all_news
from newsrank.models.base import ModelContext
from newsrank.models.fum import FUM, FUMConfig

TINY = FUMConfig(word_dim=16, heads=2, head_dim=4, attention_hidden=8, dropout=0.2, category_dim=4, entity_dim=4,
                 fastformer_dim=8, fastformer_heads=2, tokens_per_news=14, fine_news_dim=6, fine_user_dim=3)
DIM = TINY.heads * TINY.head_dim


@pytest.fixture(scope="module")
def tiny_data(synth_dir):
    config = DataConfig(title_len=12, abstract_len=20, history_len=10, entity_len=4)
    return load_tiny_splits(synth_dir, config)


def make_model(vocabs, seed=0, config=TINY, **changes):
    torch.manual_seed(seed)
    return FUM(dataclasses.replace(config, **changes), ModelContext(vocabs)).eval()


def user_inputs(model, news, history):
    vectors = encode_all_news(model, news, 64)
    return UserInputs(history, history != 0, vectors[history], torch.zeros(len(history), dtype=torch.long), news)


def histories(behaviors, n=4):
    history = torch.as_tensor(np.array(behaviors.history, dtype=np.int64))
    full = history[(history != 0).sum(dim=1) >= 3][:n]  # impressions with at least 3 clicks
    assert len(full) == n
    return full


def test_entity_column_and_vocabulary(tiny_data):
    vocabs, (table, _), _ = tiny_data
    assert len(vocabs.entities) > 2 and vocabs.entities.tokens[2].startswith("Q")
    assert table.entities.shape == (len(table), 4) and table.entities.dtype == np.int32
    assert not table.entities[0].any()  # padding news
    assert (table.entities[:, 0] != 0).sum() > 10  # the synthetic data mentions entities
    news = NewsFeatures.from_table(table)
    assert news.entities.dtype == torch.long and news.entities.shape == (len(table), 4)


def entity(qid: str) -> dict:
    return {"Label": qid.lower(), "Type": "P", "WikidataId": qid, "Confidence": 1.0}


def test_news_entity_ids_title_first_deduplicated_and_cut():
    record = NewsRecord("N1", "news", "politics", "t", "a", "u",
                        title_entities=[entity("Q2"), entity("Q1"), entity("Q2")],
                        abstract_entities=[entity("Q3"), entity("Q1"), {"Label": "no id"}, entity("Q4")])
    assert news_entity_ids(record) == ["Q2", "Q1", "Q3", "Q4"]
    words = Vocab(["t", "a"])
    vocabs = Vocabularies(words, Vocab(["news"]), Vocab(["politics"]), Vocab(["U1"]), Vocab(["Q1", "Q3", "Q2"]))
    empty = NewsRecord("N2", "news", "politics", "t", "", "u")
    table = build_news_table({"N1": record, "N2": empty}, vocabs, DataConfig(title_len=2, abstract_len=2, entity_len=3))
    e = vocabs.entities.lookup
    assert table.entities.tolist() == [[0, 0, 0], [e("Q2"), e("Q1"), e("Q3")], [0, 0, 0]]
    assert table.entities.dtype == np.int32
    table = build_news_table({"N1": record}, vocabs, DataConfig(entity_len=5))
    assert table.entities[1].tolist() == [e("Q2"), e("Q1"), e("Q3"), 1, 0]  # Q4 unseen in train: UNK


def test_vocabularies_json_with_and_without_entities():
    base = dict(words=Vocab(["a"]), categories=Vocab(["c"]), subcategories=Vocab(["s"]), users=Vocab(["U1"]))
    old = Vocabularies(**base)
    assert "entities" not in old.to_json() and "entities" not in old.sizes()  # older JSON, same digest
    assert len(Vocabularies.from_json(old.to_json()).entities) == 2  # tolerant of JSON without the key
    new = Vocabularies(**base, entities=Vocab(["Q1", "Q2"]))
    back = Vocabularies.from_json(new.to_json())
    assert back.entities.tokens == new.entities.tokens and back.digest() == new.digest() != old.digest()
    assert new.sizes()["entities"] == 4


def test_shapes(tiny_data):
    vocabs, (table, behaviors), _ = tiny_data
    model = make_model(vocabs)
    news = NewsFeatures.from_table(table)
    batch = next(TrainSampler(behaviors, npratio=4, batch_size=8, seed=1).epoch(0))
    logits = model(batch, news)
    assert logits.shape == (8, 5) and torch.isfinite(logits).all()
    assert model.encode_news(news.take(torch.arange(1, 6))).shape == (5, DIM)
    history = histories(behaviors)
    inputs = user_inputs(model, news, history)
    assert model.encode_user(inputs).shape == (4, DIM)
    index, types, mask = model.fine_grained_slots(inputs)
    assert index.shape[:2] == (4, history.shape[1]) and index.shape[2] <= TINY.tokens_per_news
    assert types.shape == mask.shape == index.shape
    assert not mask[history == 0].any()  # padding news: every token masked
    assert mask[history != 0].any(dim=-1).all()  # a clicked news always has its category tokens



def plain_fine_grained_user(model, user, junk_seed=None):
    """u^f the plain way, as the paper draws it: every slot of the padded [B, H * T] grid embedded on
    its own (junk ids in the padded slots when ``junk_seed`` is given), the Fastformer layer's own
    forward over the grid, masked additive attention over each news' text slots (a news without
    text pools to 0), its category and subcategory token outputs, then the dense map and the
    attention over the clicks."""
    c = model.config
    index, kinds, mask = model.fine_grained_slots(user)
    b, h, t = mask.shape
    if junk_seed is not None:
        junk = torch.randint(2, 20, index.shape, generator=torch.Generator().manual_seed(junk_seed))
        index = torch.where(mask, index, junk)
    tables = {1: model.fine_words, 4: model.fine_words}
    if c.fine_categories:
        tables |= {2: model.fine_category_table, 3: model.fine_subcategory_table}
    if c.fine_entities:
        tables[5] = model.fine_entity_table
    x = torch.zeros(b, h, t, model.fine_words.embedding_dim)
    for kind, table in tables.items():
        picked = kinds == kind
        x[picked] = table(index[picked].clamp(max=table.num_embeddings - 1))
    out = model.fastformer(x.view(b, h * t, -1), mask.view(b, h * t)).view(b, h, t, -1)  # [B, H, T, ff]
    text = mask & ((kinds == 1) | (kinds == 4) | (kinds == 5))
    pooled = model.token_pool(out, text) * text.any(dim=-1, keepdim=True)  # [B, H, ff]
    parts = [pooled]
    if c.fine_categories:
        for kind in (2, 3):
            slot = (kinds[0, 0] == kind).nonzero().item()
            parts.append(out[:, :, slot] * mask[:, :, slot, None])
    per_news = model.fine_news(torch.cat(parts, dim=-1))  # [B, H, fine_news_dim]
    return model.fine_click_pool(per_news, user.history_mask)


@pytest.mark.parametrize("changes", [{}, {"fine_abstract": True, "fine_abstract_len": 3, "fine_entities": True,
                                          "fine_entity_len": 2, "fastformer_value": "separate"},
                                     {"fine_categories": False}])
def test_fine_grained_user_equals_the_plain_slot_grid(tiny_data, changes):
    """Distinct-token projection, flat segments and (in evaluation) each user's distinct tokens
    with their counts and the folded per-user matrices give the plain per-slot computation,
    whatever sits in the padded slots."""
    vocabs, (table, behaviors), _ = tiny_data
    model = make_model(vocabs, coarse=False, dropout=0.0, **changes)
    news = NewsFeatures.from_table(table)
    history = histories(behaviors, n=6)
    history[1, :-1] = 0  # one click only: a short sequence next to long ones
    history[2] = 0  # no click at all
    history[3, -3:-1] = history[3, -1]  # one news clicked three times: every token repeats
    news.title[history[0, -1], 1:3] = news.title[history[0, -1], 0]  # a word three times in one title
    inputs = user_inputs(model, news, history)
    with torch.no_grad():
        expected = plain_fine_grained_user(model, inputs, junk_seed=0)
        torch.testing.assert_close(plain_fine_grained_user(model, inputs, junk_seed=1), expected)
        torch.testing.assert_close(model.fine_grained_user(inputs), expected, rtol=1e-5, atol=1e-5)  # folded
        model.train()  # dropout 0: the training path (explicit W_o per token) gives the same
        torch.testing.assert_close(model.fine_grained_user(inputs), expected, rtol=1e-5, atol=1e-5)


def test_fine_grained_user_ignores_padding(tiny_data):
    vocabs, (table, behaviors), _ = tiny_data
    model = make_model(vocabs, coarse=False)  # u = u^f alone
    news = NewsFeatures.from_table(table)
    history = histories(behaviors)
    base = model.encode_user(user_inputs(model, news, history))
    # more left-padded history news
    extra = torch.cat([torch.zeros(4, 6, dtype=torch.long), history], dim=1)
    torch.testing.assert_close(model.encode_user(user_inputs(model, news, extra)), base, rtol=1e-5, atol=1e-6)
    # wider (more padded) token columns in the news table
    wide = NewsFeatures(
        torch.cat([news.title, torch.zeros(len(news), 9, dtype=torch.long)], dim=1),
        torch.cat([news.abstract, torch.zeros(len(news), 5, dtype=torch.long)], dim=1),
        news.category, news.subcategory,
        torch.cat([news.entities, torch.zeros(len(news), 3, dtype=torch.long)], dim=1),
    )
    torch.testing.assert_close(model.encode_user(user_inputs(model, wide, history)), base, rtol=1e-5, atol=1e-6)
    # and so is the whole model (u^c + u^f, with abstract and entity tokens in u^f)
    full = make_model(vocabs, fine_abstract=True, fine_abstract_len=3, fine_entities=True, fine_entity_len=2)
    a = full.encode_user(user_inputs(full, news, history))
    torch.testing.assert_close(full.encode_user(user_inputs(full, news, extra)), a, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(full.encode_user(user_inputs(full, wide, history)), a, rtol=1e-5, atol=1e-6)
    # a user with no clicks gets a finite vector
    assert torch.isfinite(full.encode_user(user_inputs(full, news, torch.zeros(1, 10, dtype=torch.long)))).all()


def test_fine_grained_user_reads_the_clicked_tokens(tiny_data):
    vocabs, (table, behaviors), _ = tiny_data
    model = make_model(vocabs, coarse=False)
    news = NewsFeatures.from_table(table)
    history = histories(behaviors)
    base = model.encode_user(user_inputs(model, news, history))
    changed = NewsFeatures(news.title.clone(), news.abstract, news.category, news.subcategory, news.entities)
    row = int(history[0, -1])
    changed.title[row, :3] = (changed.title[row, :3] + 5) % (len(vocabs.words) - 2) + 2
    other = model.encode_user(user_inputs(model, changed, history))
    assert (other[0] - base[0]).abs().max() > 1e-6
    clicked_elsewhere = (history[1:] == row).any(dim=1)
    torch.testing.assert_close(other[1:][~clicked_elsewhere], base[1:][~clicked_elsewhere])


@pytest.mark.parametrize("changes", [
    {"fine_grained": False}, {"coarse": False}, {"combine": "concat"}, {"combine": "sum"},
    {"use_title": False, "use_abstract": False}, {"use_categories": False, "use_entities": False},
    {"fine_abstract": True, "fine_entities": True, "fine_abstract_len": 3, "fine_entity_len": 2},
    {"fine_categories": False}, {"fastformer_value": "separate"}, {"view_combine": "attention"},
    {"init": "torch"},
])
def test_ablations_run(tiny_data, changes):
    vocabs, (table, behaviors), _ = tiny_data
    model = make_model(vocabs, **changes).train()
    news = NewsFeatures.from_table(table)
    batch = next(TrainSampler(behaviors, npratio=4, batch_size=8, seed=1).epoch(0))
    logits = model(batch, news)
    assert logits.shape == (8, 5) and torch.isfinite(logits).all()
    logits.logsumexp(dim=1).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_user_parts_and_combinations(tiny_data):
    vocabs, (table, behaviors), _ = tiny_data
    news = NewsFeatures.from_table(table)
    history = histories(behaviors)
    block = make_model(vocabs)
    inputs = user_inputs(block, news, history)
    with torch.no_grad():
        coarse = make_model(vocabs, fine_grained=False)
        coarse.load_state_dict(block.state_dict(), strict=False)
        u_c = coarse.encode_user(inputs)  # [B, D]
        u_f = block.fine_grained_user(inputs)  # [B, fine_news_dim]
        # block: the coarse part mapped to D - 30 dims, then the fine part mapped to 30
        expected = torch.cat([block.coarse_out(u_c), block.fine_out(u_f)], dim=-1)
        torch.testing.assert_close(block.encode_user(inputs), expected, rtol=1e-5, atol=1e-6)
        assert block.fine_out.out_features == TINY.fine_user_dim
        summed = make_model(vocabs, combine="sum")
        shared = {k: v for k, v in block.state_dict().items() if not k.startswith(("fine_out.", "coarse_out."))}
        missing, unexpected = summed.load_state_dict(shared, strict=False)
        assert missing == ["fine_out.weight", "fine_out.bias"] and not unexpected  # the sum maps u^f to D dims
        torch.testing.assert_close(summed.encode_user(inputs), u_c + summed.fine_out(u_f), rtol=1e-5, atol=1e-6)
        concat = make_model(vocabs, combine="concat")
        assert isinstance(concat.combine, torch.nn.Linear) and not hasattr(concat, "coarse_out")
        assert concat.encode_user(inputs).shape == (4, DIM)
    assert not hasattr(coarse, "fine_out") and not hasattr(coarse, "coarse_out")  # u = u^c as it is


def test_entity_view_uses_the_entity_column(tiny_data):
    vocabs, (table, _), _ = tiny_data
    news = NewsFeatures.from_table(table)
    rows = torch.arange(1, 9)
    base = NewsFeatures(news.title[rows], news.abstract[rows], news.category[rows], news.subcategory[rows],
                        news.entities[rows])
    changed = dataclasses.replace(base, entities=base.entities.clone())
    changed.entities[0] = 0
    changed.entities[0, :2] = torch.tensor([2, 3]) if int(base.entities[0, 0]) != 2 else torch.tensor([4, 5])
    model = make_model(vocabs)
    a, b = model.encode_news(base), model.encode_news(changed)
    assert (a[0] - b[0]).abs().max() > 1e-6
    torch.testing.assert_close(a[1:], b[1:])
    # with the entity view off, entities do not matter
    off = make_model(vocabs, use_entities=False)
    torch.testing.assert_close(off.encode_news(base), off.encode_news(changed))
    # features without an entity column behave as news without entities
    none = dataclasses.replace(base, entities=None)
    zero = dataclasses.replace(base, entities=torch.zeros_like(base.entities))
    torch.testing.assert_close(model.encode_news(none), model.encode_news(zero))


def test_config_validation(tiny_data):
    vocabs = tiny_data[0]
    with pytest.raises(ValueError, match="news view"):
        make_model(vocabs, use_title=False, use_abstract=False, use_categories=False, use_entities=False)
    with pytest.raises(ValueError, match="user model part"):
        make_model(vocabs, coarse=False, fine_grained=False)
    with pytest.raises(ValueError, match="tokens_per_news"):
        make_model(vocabs, tokens_per_news=6, fine_entities=True, fine_entity_len=4)
    with pytest.raises(ValueError, match="combine"):
        make_model(vocabs, combine="product")
    with pytest.raises(ValueError, match="fine_user_dim"):
        make_model(vocabs, fine_user_dim=DIM)
    with pytest.raises(ValueError, match="fastformer_value"):
        make_model(vocabs, fastformer_value="key")
    with pytest.raises(ValueError, match="multiple"):
        make_model(vocabs, fastformer_dim=9)
    # every single view is enough
    for view in ("use_title", "use_abstract", "use_categories", "use_entities"):
        only = {v: v == view for v in ("use_title", "use_abstract", "use_categories", "use_entities")}
        assert make_model(vocabs, **only) is not None


def test_inference_in_token_groups_equals_one_pass(tiny_data, monkeypatch):
    vocabs, (table, behaviors), _ = tiny_data
    model = make_model(vocabs, coarse=False)
    news = NewsFeatures.from_table(table)
    history = torch.as_tensor(np.array(behaviors.history[:40], dtype=np.int64))
    inputs = user_inputs(model, news, history)
    with torch.no_grad():
        whole = model.fine_grained_user(inputs)
        monkeypatch.setattr(FUM, "INFERENCE_TOKENS", 50)  # many groups of a few users each
        grouped = model.fine_grained_user(inputs)
    torch.testing.assert_close(grouped, whole, rtol=1e-5, atol=1e-6)


def test_views_the_data_lacks_are_switched_off(tiny_data):
    vocabs, (table, _), _ = tiny_data
    config = FUMConfig(use_abstract=True, fine_entities=True)
    assert FUM.adapt_config(config, ModelContext(vocabs), table) == [] and config.use_entities  # data has both
    bare = dataclasses.replace(table, entities=np.zeros_like(table.entities), abstract=np.zeros_like(table.abstract))
    notes = FUM.adapt_config(config, ModelContext(vocabs), bare)
    assert not (config.use_entities or config.fine_entities or config.use_abstract or config.fine_abstract)
    assert notes == ["the training news have no entity tokens: use_entities=false, fine_entities=false",
                     "the training news have no abstract tokens: use_abstract=false"]


def test_official_init(tiny_data):
    vocabs = tiny_data[0]
    model = make_model(vocabs, init="official")
    for table in (model.words, model.fine_words, model.categories, model.fine_category_table):
        assert table.weight.abs().max() <= 0.05 and not table.weight[0].any()
    assert not model.view_dense.bias.any()
    pretrained = np.random.default_rng(0).normal(size=(len(vocabs.words), 16)).astype(np.float32)
    model = FUM(dataclasses.replace(TINY, init="official"), ModelContext(vocabs, pretrained))
    np.testing.assert_allclose(model.words.weight.detach().numpy(), pretrained)
    np.testing.assert_allclose(model.fine_words.weight.detach().numpy(), pretrained)  # its own copy
    assert model.fine_words.weight.data_ptr() != model.words.weight.data_ptr()


def test_entity_view_starts_from_the_entity_vectors(tiny_data):
    vocabs = tiny_data[0]
    vectors = np.random.default_rng(1).normal(size=(len(vocabs.entities), 7)).astype(np.float32)
    context = ModelContext(vocabs, pretrained_entities=vectors)
    config = dataclasses.replace(TINY)
    assert FUM.adapt_config(config, context) == ["entity_dim = 7 (the entity vectors' dimension)"]
    model = FUM(dataclasses.replace(config, init="official"), context)
    np.testing.assert_allclose(model.entities.weight[1:].detach().numpy(), vectors[1:])  # kept by the init
    assert not model.entities.weight[0].any()


def test_coarse_part_in_user_groups_equals_one_pass(tiny_data, monkeypatch):
    """u^c a few users at a time (evaluation on the CPU), features gathered from the evaluator's
    table per pass, equals one pass over given features."""
    vocabs, (table, behaviors), _ = tiny_data
    model = make_model(vocabs, fine_grained=False).eval()
    news = NewsFeatures.from_table(table)
    history = torch.as_tensor(np.array(behaviors.history[:40], dtype=np.int64))
    with torch.no_grad():
        feature_table = model.history_features(model.encode_news(news))  # [N, 3 D]
        given = UserInputs(history, history != 0, None, torch.zeros(len(history), dtype=torch.long), news,
                           feature_table[history])
        whole = model.encode_user(given)
        monkeypatch.setattr(FUM, "CPU_COARSE_USERS", 3)
        lazy = UserInputs(history, history != 0, None, torch.zeros(len(history), dtype=torch.long), news,
                          feature_table=feature_table)
        grouped = model.encode_user(lazy)
    torch.testing.assert_close(grouped, whole, rtol=1e-5, atol=1e-6)
