"""Explanations from the attention weights the models already compute.

Nothing here re-implements a model: forward hooks on a model's own attention modules capture their
inputs while the model runs its usual code, and the weights are the softmax those modules take
(``AdditiveAttention``: softmax of q . tanh(W x + b) over the masked positions; NPA's
``PersonalizedAttention``: the same with the user's query; DKN: the output of its candidate
attention layer, softmaxed over the real clicks). Per model:

| model | clicked news | title words | other |
|---|---|---|---|
| NRMS | user additive attention (after the self-attention) | news additive attention | |
| NAML | click attention | title view's attention | |
| NPA | personalized click attention | personalized word attention | |
| LSTUR, GRU | (a GRU, no attention) | news additive attention | |
| FUM | coarse u^c's additive attention | title view's attention | u^f: per clicked news, its fine-grained tokens' pooling weights |
| DKN | candidate-aware attention (depends on the candidate) | (a CNN, no attention) | |
| FIM | none: a 3-D CNN over similarity cubes | none | -> ``NotExplainable`` (HTTP 400) |

For cacheable models the click weights are the user's (the same for every candidate); DKN's are
the candidate's own. FUM's token weights come from the plain slot-grid computation of u^f (the
Fastformer's own forward, then the per-news token pooling), which a test in ``tests/test_fum.py``
shows equals the fast path's.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

import torch

from ..data.vocab import PAD
from ..layers import AdditiveAttention, PersonalizedAttention, masked_fill_min
from ..models.dkn import DKN
from ..models.fum import FUM, _ABSTRACT, _CATEGORY, _ENTITY, _SUBCATEGORY, _TEXT_KINDS, _WORD
from ..models.lstur import CNNNewsGRU
from ..models.naml import NAML
from ..models.npa import NPA
from ..models.nrms import NRMS


class NotExplainable(ValueError):
    """The model computes no attention weights to explain with (the HTTP layer answers 400)."""


def attention_modules(model) -> tuple[str | None, str | None]:
    """(submodule path of the pooling over a title's words, of the pooling over the clicked news);
    None where the model has none."""
    words, clicks = _attention_modules(model)
    if getattr(getattr(model, "config", None), "news_encoder", "words") == "plm":
        words = None  # a mean-pooled PLM title vector: no attention over the title's words
    return words, clicks


def _attention_modules(model) -> tuple[str | None, str | None]:
    if isinstance(model, NRMS):
        return "title_pool", "click_pool"
    if isinstance(model, NAML):
        return "title_view.pool", "click_pool"
    if isinstance(model, NPA):
        return "word_pool", "click_pool"
    if isinstance(model, CNNNewsGRU):  # LSTUR, GRU
        return "title_pool", None
    if isinstance(model, FUM):
        return ("title_view.pool" if model.config.use_title else None,
                "click_pool" if model.config.coarse else None)
    if isinstance(model, DKN):
        return None, "attention_out"
    return None, None


def explainable(model) -> bool:
    words, clicks = attention_modules(model)
    return words is not None or clicks is not None or (isinstance(model, FUM) and model.config.fine_grained)


def _weights(module, args: tuple, kwargs: dict, output) -> torch.Tensor:
    """The attention weights of one call of ``module``, from what it was called with."""
    def arg(i: int, name: str):
        return args[i] if len(args) > i else kwargs.get(name)

    if isinstance(module, AdditiveAttention):
        x, mask, scores = arg(0, "x"), arg(1, "mask"), arg(2, "scores")
        scores = module.scores(x) if scores is None else scores  # [..., L]
    elif isinstance(module, PersonalizedAttention):
        x, query, mask = arg(0, "x"), arg(1, "query"), arg(2, "mask")
        scores = torch.einsum("nlh,nh->nl", torch.tanh(module.proj(x)), query)  # [N, L]
    else:  # DKN's candidate attention output layer: logits [B, C, H, 1]; the mask is the clicks'
        return output.squeeze(-1)
    return torch.softmax(masked_fill_min(scores, mask), dim=-1)


@contextmanager
def captured(model, path: str | None) -> Iterator[list[torch.Tensor]]:
    """Weights of every call of the submodule at ``path`` inside the block, in call order."""
    found: list[torch.Tensor] = []
    if path is None:
        yield found
        return
    module = model.get_submodule(path)
    me = threading.get_ident()  # other requests run the same model meanwhile: keep this thread's calls only

    def hook(m, args, kwargs, out):
        if threading.get_ident() == me:
            found.append(_weights(m, args, kwargs, out))

    handle = module.register_forward_hook(hook, with_kwargs=True)
    try:
        yield found
    finally:
        handle.remove()


def explain(engine, pool, inputs, vectors: torch.Tensor, row: int, score: float) -> dict:
    """The explanation of news ``row``'s ``score`` for the user of ``inputs`` (see the module doc)."""
    model = engine.model
    if not explainable(model):
        why = ("its titles are mean-pooled PLM vectors and its user side is a GRU"
               if getattr(model.config, "news_encoder", "words") == "plm"
               else "it scores by a CNN over word-similarity cubes")
        raise NotExplainable(f"{type(model).__name__} computes no attention weights to explain with ({why})")
    words_path, clicks_path = attention_modules(model)
    history = inputs.history[0]  # [H]
    real = (history != PAD).nonzero().squeeze(1).tolist()  # history slots with a click
    out: dict = {"news_id": pool.records[row].news_id, "score": score, "model": engine.checkpoint.meta["model"],
                 "clicks": None, "words": None, "fine_tokens": None, "notes": []}

    if clicks_path is not None:
        if model.candidate_aware:  # DKN: its attention's logits for this candidate, [1, 1, H]
            weights = model.click_logits(model.features_of(inputs), model.candidate_features(vectors[[row]][None]))
        else:
            with captured(model, clicks_path) as found:
                model.encode_user(inputs)  # [1, D]
            weights = found[-1]
        if model.candidate_aware:  # [1, 1, H] logits: softmax over the real clicks
            weights = torch.softmax(masked_fill_min(weights[:, 0], inputs.history_mask), dim=-1)
            out["notes"].append("click weights are the candidate's own (candidate-aware attention)")
        else:
            out["notes"].append("click weights are the user's attention, the same for every candidate")
        out["clicks"] = [dict(engine.record_json(pool, int(history[i])), weight=float(weights[0, i])) for i in real]
    else:
        out["notes"].append(f"{type(model).__name__} has no attention over the clicked news")

    if words_path is not None:
        rows = [row] + [int(history[i]) for i in real]
        picked = torch.tensor(rows)
        readers = torch.full_like(picked, int(inputs.users[0])) if model.user_conditioned_news else None
        with captured(model, words_path) as found:
            model.encode_news(pool.features.take(picked), readers)
        weights = found[-1]  # [R, L]
        out["words"] = []
        for i, news_row in enumerate(rows):
            tokens = engine.title_words(pool, news_row)
            out["words"].append({"news_id": pool.records[news_row].news_id, "role": "candidate" if i == 0 else "click",
                                 "words": [{"word": w, "weight": float(weights[i, j])} for j, w in enumerate(tokens)
                                           if j < weights.shape[1]]})
    else:
        out["notes"].append(f"{type(model).__name__} has no attention over title words")

    if isinstance(model, FUM) and model.config.fine_grained and real:
        out["fine_tokens"] = _fum_tokens(engine, pool, model, inputs, real)
    return out


def _fum_tokens(engine, pool, model: FUM, inputs, real: list[int]) -> list[dict]:
    """Per clicked news, the weights of u^f's token pooling over its title (and abstract / entity)
    tokens, computed the plain way: each slot embedded, the Fastformer's own forward over the
    user's whole token sequence, then the additive attention within each news."""
    index, kinds, mask = model.fine_grained_slots(inputs)  # [1, H, T] each
    b, h, t = mask.shape
    tables = {_WORD: model.fine_words, _ABSTRACT: model.fine_words}
    if model.config.fine_categories:
        tables |= {_CATEGORY: model.fine_category_table, _SUBCATEGORY: model.fine_subcategory_table}
    if model.config.fine_entities:
        tables[_ENTITY] = model.fine_entity_table
    x = model.fine_words.weight.new_zeros(b, h, t, model.fine_words.embedding_dim)  # [1, H, T, word_dim]
    for kind, table in tables.items():
        picked = (kinds == kind) & mask
        x[picked] = table(index[picked])
    tokens = model.fastformer(x.view(b, h * t, -1), mask.view(b, h * t)).view(b, h, t, -1)  # [1, H, T, ff]
    text = mask & torch.isin(kinds, torch.tensor(_TEXT_KINDS))  # [1, H, T]
    weights = torch.softmax(masked_fill_min(model.token_pool.scores(tokens), text), dim=-1)  # [1, H, T]
    vocab = engine.vocabs
    names = {_WORD: "word", _ABSTRACT: "abstract", _ENTITY: "entity"}
    result = []
    for slot in real:
        news_row = int(inputs.history[0, slot])
        title = engine.title_words(pool, news_row)
        items, word_position = [], 0
        for j in range(t):
            kind = int(kinds[0, slot, j])
            if kind == _WORD:
                position, word_position = word_position, word_position + 1
            if not text[0, slot, j]:
                continue
            token_id = int(index[0, slot, j])
            if kind == _WORD and position < len(title):
                token = title[position]
            elif kind == _ENTITY:
                token = vocab.entities.tokens[token_id]
            else:
                token = vocab.words.tokens[token_id]
            items.append({"token": token, "kind": names[kind], "weight": float(weights[0, slot, j])})
        result.append({"news_id": pool.records[news_row].news_id, "tokens": items})
    return result
