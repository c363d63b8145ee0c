"""FUM: Fine-grained and Fast User Modeling for News Recommendation (Qi, Wu, Wu, Huang, SIGIR 2022).

The architecture follows the official code (taoqi98/FUM, ``Codes/Models.py``); each switch below
was measured on ``mlsmall_mind`` (README, "FUM: what each choice buys"). One default differs from
the official code because of it: torch's initialisation (``init``; the official Keras one, glorot
dense weights and U(-0.05, 0.05) embeddings, learned slower: 0.683 vs 0.707 mean AUC over two
seeds at 300 batches). The abstract view is the expensive part (about 4x the training time of
FUM without it, for +0.028 AUC after one epoch there); ``use_abstract=false`` is the cheap FUM.

News encoder (views switchable; a view the training data cannot feed is switched off by the
trainer with one log line, see ``adapt_config``):

- title view: word embedding -> dropout -> multi-head self-attention -> dropout -> additive
  attention over the words (as NRMS), ``heads * head_dim`` dims;
- abstract view: the same over the abstract words (own attention layers, shared word embedding);
- category views: category and subcategory embeddings -> dense (linear) -> dropout,
  ``category_dim`` dims each (official: Dense(128) without activation);
- entity view: entity embeddings (MIND's TransE vectors when the data has them) -> dropout ->
  additive attention, ``entity_dim`` dims (official: a 5 x 40 self-attention first; left out).

``view_combine=concat`` (official): n = ReLU(W [title; abstract; category; subcategory; entity] + b),
``heads * head_dim`` dims. ``attention``: each view mapped to that size (+ ReLU for the
non-text views) and pooled by an additive attention over the views (NAML's scheme).

User encoder, two parts:

- coarse u^c: multi-head self-attention + additive attention over the clicked-news vectors (NRMS).
- fine-grained u^f: every clicked news contributes its tokens: its title words (up to
  ``tokens_per_news`` - 2 - extras), optionally ``fine_abstract_len`` abstract words and
  ``fine_entity_len`` entities, and (``fine_categories``) one category and one subcategory token.
  All tokens are embedded by u^f's own tables (``word_dim`` each; the word table starts from the
  same pretrained vectors as the news encoder's), and the tokens of all H clicks form one sequence
  that a Fastformer (``fastformer_heads`` x ``fastformer_dim / heads``, value = query by default)
  reads as a whole. Per clicked news, an additive attention pools its text tokens' outputs t; with
  the category and subcategory token outputs c, s: e = W_n [t; c; s] + b_n (``fine_news_dim``).
  An additive attention over the clicks gives u^f (``fine_news_dim``).

``combine``: ``block`` (official): u = [W_c u^c + b_c; W_f u^f + b_f], the fine part
``fine_user_dim`` (30) of the ``heads * head_dim`` (400) dims; ``sum``: u = u^c + W_f u^f + b_f;
``concat``: u = W [u^c; u^f] + b. With ``coarse`` or ``fine_grained`` off (ablations) u is
u^c, or W_f u^f + b_f. Score: dot product. The user vector depends on the history only, so
evaluation encodes every news once and every user once (the cached path).

How u^f stays cheap (all exact; a test compares with the plain slot-grid computation):

* No positions and no layer norm, so a token's q, k, v depend on its id alone: they are computed
  once per distinct token id of a batch (``Fastformer.project``), not once per occurrence.
* Only real tokens are computed: each user's tokens are packed to the left of one [B, L] row
  (text tokens first, then the category tokens), users sorted by length in evaluation, so there
  is no [B, H * T] slot grid; the Fastformer's poolings are batched matrix products.
* In evaluation (no dropout, ``_folded_fine_grained_user``) each user's distinct tokens are kept
  once with their count (a token's outputs depend on its id and the user's global key only), and
  the output map W_o, the per-news pooling's first layer W_p and the per-news dense map W_n fold
  into per-user matrices: W_p out_i + b_p = (W_p W_o diag(g_k) + W_p) q_i + (W_p b_o + b_p) (value =
  query), and likewise W_n's share of each text token and category token; W_o runs per user, not
  per token.

Deviations from the official code: masks everywhere (the official code has none, so padding
tokens enter its Fastformer); dropout on u^f's token embeddings is drawn per distinct token id of
a batch (a consequence of projecting each once); candidate news vectors get no extra dropout;
the official title and abstract views have separate word tables (here one, as NAML).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal, NamedTuple

import torch
from torch import nn

from ..data.batching import NewsFeatures, UserInputs, cut_padding
from ..data.dataset import NewsTable
from ..data.vocab import PAD
from ..fastformer import Fastformer
from ..layers import AdditiveAttention, MultiHeadSelfAttention, segment_softmax, segment_weighted_sum
from .base import ModelContext, NewsRecModel, adapt_entity_dim, entity_embedding, word_embedding

# token kinds of the fine-grained sequence
_WORD, _CATEGORY, _SUBCATEGORY, _ABSTRACT, _ENTITY = 1, 2, 3, 4, 5
_TEXT_KINDS = (_WORD, _ABSTRACT, _ENTITY)  # pooled within a news; category tokens are kept apart


@dataclass
class FUMConfig:
    word_dim: int = 300  # word embedding size without pretrained vectors (else theirs)
    heads: int = 20  # self-attention heads of the news encoder and of the coarse user model
    head_dim: int = 20  # size of each head; news and user vectors have heads * head_dim dims
    attention_hidden: int = 200  # hidden size of every additive attention pooling
    dropout: float = 0.2  # on embeddings, attention outputs, u^f's token outputs and news vectors
    category_dim: int = 100  # category and subcategory embedding (and view) size
    entity_dim: int = 100  # entity embedding size (MIND's TransE vectors have 100)
    use_title: bool = True  # news encoder: title view
    use_abstract: bool = True  # news encoder: abstract view (+0.028 AUC after one epoch here, ~4x the training time)
    use_categories: bool = True  # news encoder: category and subcategory views
    use_entities: bool = True  # news encoder: entity view
    view_combine: Literal["concat", "attention"] = "concat"  # views -> news vector: dense over the concatenation, or attention
    coarse: bool = True  # user model: coarse part u^c over clicked-news vectors
    fine_grained: bool = True  # user model: fine-grained part u^f over the clicked news' tokens
    combine: Literal["block", "sum", "concat"] = "block"  # how u^c and u^f make the user vector
    fine_user_dim: int = 30  # block: dims of the user vector that come from u^f
    tokens_per_news: int = 32  # u^f token slots per clicked news (title words + category tokens + extras)
    fine_categories: bool = True  # u^f: a category and a subcategory token per clicked news
    fine_abstract: bool = False  # u^f: add abstract words to each clicked news' tokens ...
    fine_abstract_len: int = 10  # ... this many (taken from the tokens_per_news budget)
    fine_entities: bool = False  # u^f: add entity tokens to each clicked news' tokens ...
    fine_entity_len: int = 5  # ... this many (taken from the tokens_per_news budget)
    fastformer_dim: int = 120  # token size inside u^f (a multiple of fastformer_heads)
    fastformer_heads: int = 3
    fastformer_value: Literal["query", "separate"] = "query"  # official: value = query; paper: own W_v
    fine_news_dim: int = 40  # per-clicked-news vector inside u^f, and u^f itself
    init: Literal["official", "torch"] = "torch"  # torch defaults (measured better here), or Keras glorot + U(-0.05, 0.05)


class NewsTextView(nn.Module):
    """Title or abstract view: dropout -> self-attention -> dropout -> masked additive attention."""

    def __init__(self, word_dim: int, config: FUMConfig):
        super().__init__()
        self.dropout = nn.Dropout(config.dropout)
        self.attention = MultiHeadSelfAttention(word_dim, config.heads, config.head_dim)
        self.pool = AdditiveAttention(self.attention.out_dim, config.attention_hidden)

    def forward(self, embedded: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # embedded: [N, L, word_dim], mask: [N, L] bool -> [N, heads * head_dim]
        x = self.dropout(self.attention(self.dropout(embedded), mask))  # [N, L, D]
        return self.pool(x, mask)


class _FoldingMaps(NamedTuple):
    """``FUM._folding_maps``: [ff, m] maps M of the Fastformer's outputs, each with W_o^T M."""

    text: torch.Tensor  # [ff, hid + n]: [W_p; W_n^t]^T
    text_value: torch.Tensor  # [ff, hid + n]
    text_bias: torch.Tensor  # [hid + n]
    query: torch.Tensor  # [hid, 1]: u, the token pooling's query vector
    tag: torch.Tensor | None  # [ff, 2n]: W_n's category and subcategory halves (None without tags)
    tag_value: torch.Tensor | None  # [ff, 2n]
    tag_bias: torch.Tensor | None  # [2n]
    news_bias: torch.Tensor  # [n]: W_n^t b_o, each news's share of b_o per unit of text weight


class FUM(NewsRecModel):
    config_class = FUMConfig
    needs_history_vectors = False  # its user side reads the clicks' Q/K/V only
    exact_length_groups = True  # word self-attention: groups of one title length, no padding
    INFERENCE_TOKENS = 1 << 13  # packed u^f tokens per pass when not training (memory, CPU caches)
    CPU_COARSE_USERS = 32  # u^c's users per pass in evaluation on the CPU (0.31 -> 0.21 ms per user)

    def __init__(self, config: FUMConfig, context: ModelContext):
        super().__init__()
        c = config
        if not (c.use_title or c.use_abstract or c.use_categories or c.use_entities):
            raise ValueError("FUM needs at least one news view (use_title, use_abstract, use_categories, "
                             "use_entities)")
        if not (c.coarse or c.fine_grained):
            raise ValueError("FUM needs at least one user model part (coarse, fine_grained)")
        for key, allowed in (("combine", ("block", "sum", "concat")), ("view_combine", ("concat", "attention")),
                             ("fastformer_value", ("query", "separate")), ("init", ("official", "torch"))):
            if getattr(c, key) not in allowed:
                raise ValueError(f"{key} must be one of {', '.join(allowed)}; got {getattr(c, key)!r}")
        dim = c.heads * c.head_dim  # news and user vectors
        if c.fine_grained and c.tokens_per_news - 2 * c.fine_categories - self._extra_tokens(c) < 1:
            raise ValueError(f"tokens_per_news ({c.tokens_per_news}) leaves no room for title words after "
                             f"the category and {self._extra_tokens(c)} abstract/entity tokens")
        if c.coarse and c.fine_grained and c.combine == "block" and not 0 < c.fine_user_dim < dim:
            raise ValueError(f"fine_user_dim must be between 1 and {dim - 1} (heads * head_dim - 1), "
                             f"got {c.fine_user_dim}")
        self.config = c
        self.dropout = nn.Dropout(c.dropout)
        self.words = word_embedding(context, c.word_dim)
        word_dim = self.words.embedding_dim
        vocabs = context.vocabs

        # ---- news encoder
        sizes = []  # each view's size, in the order of encode_news
        if c.use_title:
            self.title_view = NewsTextView(word_dim, c)
            sizes.append(dim)
        if c.use_abstract:
            self.abstract_view = NewsTextView(word_dim, c)
            sizes.append(dim)
        attention = c.view_combine == "attention"
        if c.use_categories:
            self.categories = nn.Embedding(len(vocabs.categories), c.category_dim, padding_idx=0)
            self.subcategories = nn.Embedding(len(vocabs.subcategories), c.category_dim, padding_idx=0)
            self.category_dense = nn.Linear(c.category_dim, dim if attention else c.category_dim)
            self.subcategory_dense = nn.Linear(c.category_dim, dim if attention else c.category_dim)
            sizes += [c.category_dim] * 2
        if c.use_entities:
            self.entities = entity_embedding(context, c.entity_dim)  # MIND's TransE vectors when given
            self.entity_pool = AdditiveAttention(c.entity_dim, c.attention_hidden)
            if attention:
                self.entity_dense = nn.Linear(c.entity_dim, dim)
            sizes.append(c.entity_dim)
        if attention:
            self.view_pool = AdditiveAttention(dim, c.attention_hidden)
        else:
            self.view_dense = nn.Linear(sum(sizes), dim)

        # ---- user encoder
        if c.coarse:
            self.click_attention = MultiHeadSelfAttention(dim, c.heads, c.head_dim)
            self.click_pool = AdditiveAttention(dim, c.attention_hidden)
        if c.fine_grained:
            ff = c.fastformer_dim
            self.fine_words = word_embedding(context, word_dim)  # u^f's own tables, as the official code
            if c.fine_categories:
                self.fine_category_table = nn.Embedding(len(vocabs.categories), word_dim, padding_idx=0)
                self.fine_subcategory_table = nn.Embedding(len(vocabs.subcategories), word_dim, padding_idx=0)
            if c.fine_entities:
                self.fine_entity_table = nn.Embedding(max(len(vocabs.entities), 2), word_dim, padding_idx=0)
            self.fastformer = Fastformer(ff, c.fastformer_heads, in_dim=word_dim,
                                         value=c.fastformer_value == "separate")
            self.token_pool = AdditiveAttention(ff, c.attention_hidden)
            self.fine_news = nn.Linear(ff * (1 + 2 * c.fine_categories), c.fine_news_dim)
            self.fine_click_pool = AdditiveAttention(c.fine_news_dim, c.attention_hidden)
            if not c.coarse or c.combine == "sum":  # u^f mapped to the user vector's size
                self.fine_out = nn.Linear(c.fine_news_dim, dim)
            elif c.combine == "block":
                self.coarse_out = nn.Linear(dim, dim - c.fine_user_dim)
                self.fine_out = nn.Linear(c.fine_news_dim, c.fine_user_dim)
            else:
                self.combine = nn.Linear(dim + c.fine_news_dim, dim)
        if c.init == "official":
            pretrained = [self.words, getattr(self, "fine_words", None)] if context.pretrained_words is not None else []
            if context.pretrained_entities is not None and c.use_entities:
                pretrained.append(self.entities)
            self._official_init(keep=pretrained)

    @staticmethod
    def _extra_tokens(c: FUMConfig) -> int:
        return c.fine_abstract * c.fine_abstract_len + c.fine_entities * c.fine_entity_len

    def _official_init(self, keep: list[nn.Module]) -> None:
        """Keras' defaults, as the official code gets them: glorot-uniform dense weights (each of
        q, k, v on its own), zero biases, embeddings U(-0.05, 0.05) except the pretrained ones in ``keep``."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, MultiHeadSelfAttention):
                for part in module.qkv.weight.data.chunk(3, dim=0):
                    nn.init.xavier_uniform_(part)
            elif isinstance(module, Fastformer):
                for w in (module.query_att, module.key_att):  # the official Wa / Wb: [dim, heads]
                    bound = math.sqrt(6.0 / (module.dim + module.heads))
                    nn.init.uniform_(w, -bound, bound)
            elif isinstance(module, nn.Embedding):
                if any(module is kept for kept in keep):
                    continue
                nn.init.uniform_(module.weight, -0.05, 0.05)
                with torch.no_grad():
                    module.weight[0].zero_()  # padding row

    @classmethod
    def adapt_config(cls, config: FUMConfig, context: ModelContext, table: NewsTable | None = None) -> list[str]:
        """Switch off the views the training news cannot feed (no entities, no abstracts); the
        entity view takes the dimension of MIND's entity vectors when the data has them."""
        notes = adapt_entity_dim(config, context) if config.use_entities else []
        if table is None:
            return notes
        has_entities = table.entities is not None and bool((table.entities > 1).any())
        has_abstracts = bool((table.abstract != PAD).any())
        for what, present, keys in (("entity", has_entities, ("use_entities", "fine_entities")),
                                    ("abstract", has_abstracts, ("use_abstract", "fine_abstract"))):
            switched = [key for key in keys if getattr(config, key) and not present]
            for key in switched:
                setattr(config, key, False)
            if switched:
                notes.append(f"the training news have no {what} tokens: {', '.join(k + '=false' for k in switched)}")
        return notes

    # ------------------------------------------------------------------ news

    def text_fields(self) -> tuple[str, ...]:
        return ("title", "abstract") if self.config.use_abstract else ("title",)

    def lookup_fields(self) -> dict[str, tuple[str, ...]]:
        words = ("title", "abstract") if self.config.use_abstract or self.config.fine_abstract else ("title",)
        return {"words": words, "entities": ("entities",)}  # u^f's tables read the clicks' tokens too

    def encode_news(self, news: NewsFeatures, users: torch.Tensor | None = None,
                    texts: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """[N, D]; ``texts``: {"title", "abstract": [N, D]} text views the caller already has."""
        c, texts = self.config, texts or {}
        views = [texts[field] if field in texts else view(getattr(news, field))
                 for field, view in self.word_views().items()]  # title, abstract: each [N, D]
        attention = c.view_combine == "attention"
        if c.use_categories:
            for table, dense, ids in ((self.categories, self.category_dense, news.category),
                                      (self.subcategories, self.subcategory_dense, news.subcategory)):
                x = dense(table(ids))  # [N, Dc]
                views.append(torch.relu(x) if attention else self.dropout(x))
        if c.use_entities:
            entities = self._entities(news)  # [N, Le]
            x = self.entity_pool(self.dropout(self.entities(entities)), entities != PAD)  # [N, entity_dim]
            views.append(torch.relu(self.entity_dense(x)) if attention else x)
        if attention:
            return self.view_pool(torch.stack(views, dim=1))  # [N, D]
        return torch.relu(self.view_dense(torch.cat(views, dim=-1)))  # [N, D]

    def word_views(self) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
        views = {"title": self.title_view if self.config.use_title else None,
                 "abstract": self.abstract_view if self.config.use_abstract else None}
        return {field: self.on_word_ids(view) for field, view in views.items() if view is not None}  # -> [N, D]

    @staticmethod
    def _entities(news: NewsFeatures) -> torch.Tensor:
        if news.entities is None:  # features built without an entity column: no entities
            return news.title.new_zeros(len(news), 1)
        return news.entities

    # ------------------------------------------------------------------ user

    def history_features(self, vectors: torch.Tensor) -> torch.Tensor | None:
        """[N, 3 * D] u^c's self-attention queries, keys and values of each news vector (NRMS's)."""
        return self.click_attention.project(vectors) if self.config.coarse else None

    def encode_user(self, user: UserInputs) -> torch.Tensor:
        c = self.config
        coarse = fine = None
        if c.coarse:
            coarse = self.coarse_user(user)  # [B, D]
        if c.fine_grained:
            fine = self.fine_grained_user(user)  # [B, fine_news_dim]
        if fine is None:
            return coarse
        if coarse is None or c.combine == "sum":
            fine = self.fine_out(fine)  # [B, D]
            return fine if coarse is None else coarse + fine
        if c.combine == "block":
            return torch.cat([self.coarse_out(coarse), self.fine_out(fine)], dim=-1)  # [B, D]
        return self.combine(torch.cat([coarse, fine], dim=-1))  # [B, D]

    def coarse_user(self, user: UserInputs) -> torch.Tensor:
        """u^c [B, D]: NRMS's user model over the clicks' Q/K/V. In evaluation on the CPU
        ``CPU_COARSE_USERS`` users at a time, their features gathered per pass when the evaluator
        hands over its feature table, as NRMS's ``cpu_users_per_pass`` (u^f keeps whole batches:
        it projects each distinct token of a batch once)."""
        b, step = len(user.history), self.CPU_COARSE_USERS
        if self.training or user.history.device.type != "cpu" or b <= step:
            x = self.click_attention.attend(self.features_of(user), user.history_mask)  # [B, H, D]
            return self.click_pool(x, user.history_mask)  # [B, D]
        return torch.cat([self.coarse_user(user.take(slice(i, i + step))) for i in range(0, b, step)])  # [B, D]

    def fine_grained_slots(self, user: UserInputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Token slots of the clicked news: ids, token kinds and mask, each [B, H, T].

        Slot order within a news: title words (cut to what is left of the budget), the optional
        abstract words and entities, then the category and subcategory. T is cut to the widest text
        of the batch; empty slots and padding news are masked.
        """
        c, news, rows = self.config, user.news, user.history  # rows: [B, H]
        ids, kinds = [], []

        def add(index: torch.Tensor, kind: int) -> None:
            index = cut_padding(index)  # cut to the widest text here
            ids.append(index)
            kinds.append(torch.full_like(index, kind))

        budget = c.tokens_per_news - 2 * c.fine_categories - self._extra_tokens(c)
        add(news.title[rows][..., :budget], _WORD)  # [B, H, <= budget]
        if c.fine_abstract:
            add(news.abstract[rows][..., : c.fine_abstract_len], _ABSTRACT)
        if c.fine_entities:
            add(self._entities(news)[rows][..., : c.fine_entity_len], _ENTITY)
        if c.fine_categories:
            add(news.category[rows][..., None], _CATEGORY)  # [B, H, 1]
            add(news.subcategory[rows][..., None], _SUBCATEGORY)
        index = torch.cat(ids, dim=-1)  # [B, H, T]
        mask = (index != PAD) & user.history_mask[..., None]  # [B, H, T]
        return index, torch.cat(kinds, dim=-1), mask

    def _project_tokens(self, ids: torch.Tensor, kinds: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """q, k, v [U + 1, fastformer_dim] of the U distinct (table, id) pairs among N real tokens,
        each embedded and projected once, with a zero row last (what padding gathers), and the map
        [N] from every token to its row there (v is q itself when the value is the query)."""
        tables = {_WORD: self.fine_words, _ABSTRACT: self.fine_words}
        if self.config.fine_categories:
            tables |= {_CATEGORY: self.fine_category_table, _SUBCATEGORY: self.fine_subcategory_table}
        if self.config.fine_entities:
            tables[_ENTITY] = self.fine_entity_table
        shared = torch.where(kinds == _ABSTRACT, _WORD, kinds)  # abstract words share the word table
        keys = shared * (1 << 40) + ids  # one integer per (table, id)
        distinct, inverse = torch.unique(keys, return_inverse=True)  # [U], [N]
        kind_of, id_of = distinct >> 40, distinct & ((1 << 40) - 1)
        embedded = self.fine_words.weight.new_zeros(len(distinct), self.fine_words.embedding_dim)  # [U, word_dim]
        for kind in (_WORD, _CATEGORY, _SUBCATEGORY, _ENTITY):
            picked = (kind_of == kind).nonzero().squeeze(1)
            if len(picked):
                embedded = embedded.index_copy(0, picked, tables[kind](id_of[picked]))
        q, k, v = self.fastformer.project(self.dropout(embedded))  # each [U, ff]; v is q without W_v

        def pad(x: torch.Tensor) -> torch.Tensor:  # a zero row last: what padding slots gather
            return torch.cat([x, x.new_zeros(1, x.shape[1])])

        padded_q = pad(q)
        return padded_q, pad(k), padded_q if v is q else pad(v), inverse  # each [U + 1, ff], [N]

    def fine_grained_user(self, user: UserInputs) -> torch.Tensor:
        """u^f [B, fine_news_dim]. When not training, users go through sorted by token count, in
        groups of at most ``INFERENCE_TOKENS`` packed tokens (bounded memory, little padding, and
        groups small enough to stay in the CPU caches)."""
        index, kinds, mask = self.fine_grained_slots(user)  # [B, H, T] each
        # Each distinct token of the whole batch projected once; every real slot's row among them.
        real = mask.nonzero(as_tuple=True)
        tokens = self._project_tokens(index[real], kinds[real])  # q, k, v [U + 1, ff] (last row: padding)
        rows = torch.full_like(index, -1)
        rows[real] = tokens[3]  # [B, H, T]
        tokens = tokens[:3]
        if self.training:
            return self._fine_grained_user(tokens, rows, kinds, mask, user.history_mask)
        counts = mask.flatten(1).sum(dim=1)  # [B] real tokens per user
        order = torch.argsort(counts, stable=True)
        groups, lo = [], 0
        for i, n in enumerate(counts[order].tolist()):  # padded size of a group: its users x its longest
            if i > lo and (i - lo + 1) * max(n, 1) > self.INFERENCE_TOKENS:
                groups.append(order[lo:i])
                lo = i
        groups.append(order[lo:])
        out, maps = None, self._folding_maps()
        for users in groups:
            part = self._folded_fine_grained_user(tokens, rows[users], kinds[users], mask[users],
                                                  user.history_mask[users], maps)
            if out is None:
                out = part.new_empty(len(counts), part.shape[1])
            out[users] = part.to(out.dtype)
        return out

    def _folding_maps(self) -> _FoldingMaps:
        """The matrices ``_folded_fine_grained_user`` derives from the weights alone (once per batch,
        not per group of users). For a map M [ff, m] of the Fastformer's output out_i = W_o (g * v_i)
        + b_o + q_i, (out_i - b_o) M = (g * v_i) (W_o^T M) + q_i M: each M comes with W_o^T M."""
        c, pool = self.config, self.token_pool
        w_p, w_o, b_o = pool.proj.weight, self.fastformer.transform.weight, self.fastformer.transform.bias
        ff = w_p.shape[1]
        w_n = self.fine_news.weight  # [n, ff * (1 + 2 * fine_categories)]
        # Text tokens: the per-news pooling's hidden layer and their share of e, in one product.
        text_map = torch.cat([w_p, w_n[:, :ff]]).T  # [ff, hid + n]
        text_bias = torch.cat([w_p @ b_o + pool.proj.bias, w_n.new_zeros(len(w_n))])  # [hid + n]
        tag_map = tag_bias = None
        if c.fine_categories:  # both halves of W_n^c: category, subcategory
            tag_map = torch.cat([w_n[:, ff : 2 * ff].T, w_n[:, 2 * ff :].T], dim=1)  # [ff, 2n]
            tag_bias = b_o @ tag_map  # [2n]
        return _FoldingMaps(text_map, w_o.T @ text_map, text_bias, pool.query.weight.T, tag_map,
                            None if tag_map is None else w_o.T @ tag_map, tag_bias,
                            w_n[:, :ff] @ b_o)

    def _folded_fine_grained_user(self, tokens: tuple[torch.Tensor, ...], rows: torch.Tensor, kinds: torch.Tensor,
                                  mask: torch.Tensor, history_mask: torch.Tensor, maps: _FoldingMaps) -> torch.Tensor:
        """u^f [B, fine_news_dim] without dropout (evaluation): ``_fine_grained_user``'s values,
        computed once per thing they depend on (arguments as there; ``maps``: ``_folding_maps()``).

        * A token's q, k, v depend on its id alone, so each user's distinct tokens are kept once,
          with their count: the Fastformer's poolings weight a distinct token by its count
          (``multiplicity``), and the per-news pooling's score of a token, which depends on the id
          and the user's global key g only, is computed once per (user, distinct token).
        * Between the Fastformer and the per-news vector e = W_n [t; c; s] + b_n everything is
          linear but the pooling's tanh. With value = query, out_i = (W_o diag(g) + I) q_i + b_o,
          so the pooling's hidden layer W_p out_i + b_p and the text part of e, W_n^t t with
          t = sum_i w_i out_i, come from one per-user matrix [W_p; W_n^t] (W_o diag(g) + I) applied
          to each distinct text token's q_i; the category and subcategory outputs' part of e from
          W_n^c (W_o diag(g) + I) applied to their q. W_o never runs per token, nor W_n per news.
        """
        c, layer = self.config, self.fastformer
        b, h, t = mask.shape
        q_tok, k_tok, v_tok = tokens  # [U + 1, ff] each; the last row is zero (what padding gathers)
        span, ff = q_tok.shape
        device = mask.device
        owner, where = mask.reshape(b, h * t).nonzero(as_tuple=True)  # [N] user and slot of every real token
        click_of = owner * h + torch.div(where, t, rounding_mode="floor")  # [N] its (user, click) row of [B*H]
        row = rows.reshape(b, h * t)[owner, where]  # [N] its row among the distinct tokens
        kind = kinds.reshape(b, h * t)[owner, where]  # [N]
        is_text = torch.isin(kind, torch.tensor(_TEXT_KINDS, device=device))  # [N]

        # Each user's distinct tokens, packed to the left of one [B, L] row, text tokens first (only
        # they are scored by the per-news pooling): sorting the keys (user, not text, row) gives that order.
        key = (owner * 2 + (~is_text).long()) * span + row  # [N]
        distinct, pair_of, count = torch.unique(key, return_inverse=True, return_counts=True)  # [P], [N], [P]
        pair_owner = torch.div(distinct, 2 * span, rounding_mode="floor")  # [P]
        pair_text = torch.div(distinct, span, rounding_mode="floor") % 2 == 0  # [P]
        pairs = torch.bincount(pair_owner, minlength=b)  # [B] distinct tokens per user
        place = torch.arange(len(distinct), device=device) - (torch.cumsum(pairs, 0) - pairs)[pair_owner]  # [P]
        length = max(int(pairs.max()), 1) if b else 1
        text_counts = torch.bincount(pair_owner[pair_text], minlength=b)  # [B] distinct text tokens per user
        text_length = max(int(text_counts.max()), 1) if b else 1
        packed = torch.full((b, length), span - 1, dtype=torch.long, device=device)  # padding -> the zero row
        packed[pair_owner, place] = distinct % span  # [B, L]
        multiplicity = torch.ones(b, length, dtype=q_tok.dtype, device=device)
        multiplicity[pair_owner, place] = count.to(q_tok.dtype)  # [B, L]
        packed_mask = torch.arange(length, device=device) < pairs[:, None]  # [B, L]
        q, k = (x.index_select(0, packed.flatten()).view(b, length, -1) for x in (q_tok, k_tok))  # [B, L, ff]
        split = (b, length, layer.heads, layer.head_dim)
        g = layer.global_key(q.view(split), k.view(split), packed_mask, padding_is_zero=True,
                             multiplicity=multiplicity).flatten(1)  # [B, ff]

        hid = maps.query.shape[0]
        n = len(self.fine_news.weight)

        def fold(places: torch.Tensor, query_map: torch.Tensor, value_map: torch.Tensor, bias: torch.Tensor,
                 x_q: torch.Tensor | None = None) -> torch.Tensor:
            """[B, W, m] (out_i - b_o) M + bias of the distinct tokens in ``places`` [B, W] (rows of
            ``tokens``), for a map M [ff, m] (``query_map``) with W_o^T M (``value_map``):
            (g * v_i) (W_o^T M) + q_i M, one [ff, m] matrix per user, built transposed so that the
            product reads it as it lies; W_o itself never runs per token."""
            if x_q is None:  # (the caller may have them)
                x_q = q_tok.index_select(0, places.flatten()).view(*places.shape, ff)  # [B, W, ff]
            if v_tok is q_tok:
                return torch.baddbmm(bias, x_q, torch.addcmul(query_map, g[:, :, None], value_map))  # [B, W, m]
            x_v = v_tok.index_select(0, places.flatten()).view(*places.shape, ff)  # [B, W, ff]
            return torch.baddbmm(bias, x_v, g[:, :, None] * value_map) + x_q @ query_map

        # Text tokens: the per-news pooling's hidden layer and their share of e
        mapped = fold(packed[:, :text_length], maps.text, maps.text_value, maps.text_bias,
                      q[:, :text_length])  # [B, Lt, hid + n] (places past a user's text unread)
        # (tanh in place: the hidden part is read once; on this CPU tanh_ is 25% cheaper than sigmoid_)
        scores = (mapped[..., :hid].tanh_() @ maps.query).flatten()  # [B*Lt]
        text_e = mapped[..., hid:].flatten(0, 1)  # [B*Lt, n]: W_n^t (out_i - b_o), per distinct text token

        # per-news pooling: a softmax over each (user, click)'s text tokens, repeats included, and each
        # click's weighted sum of its tokens' rows of text_e (occurrences are in (user, click) order)
        text = is_text.nonzero().squeeze(1)  # [Nt]
        pair = pair_of[text]  # [Nt]
        at = pair_owner[pair] * text_length + place[pair]  # [Nt] its distinct token's row of [B*Lt]
        segment = click_of[text]  # [Nt] (user, click), ascending
        weights = segment_softmax(scores[at], segment, b * h)  # [Nt]
        text_tokens = torch.bincount(segment, minlength=b * h)  # [B*H]: 0 for a news without text (its t is 0)
        per_news = segment_weighted_sum(text_tokens, at, weights, text_e)  # [B*H, n]
        per_news += (text_tokens > 0).to(per_news.dtype)[:, None] * maps.news_bias + self.fine_news.bias
        if c.fine_categories:
            # The category and subcategory tokens' share of e, W_n^c out_i, once per (user, distinct
            # token) with both halves of W_n^c, then the right half added to every click that has it.
            tag_place = place - text_counts[pair_owner]  # [P] place among the user's tag tokens (for tag pairs)
            tag_pairs = (~pair_text).nonzero().squeeze(1)  # [Pc]
            tag_length = max(int((pairs - text_counts).max()), 1) if b else 1
            tag_packed = torch.full((b, tag_length), span - 1, dtype=torch.long, device=device)
            tag_packed[pair_owner[tag_pairs], tag_place[tag_pairs]] = distinct[tag_pairs] % span  # [B, Lc]
            tag_e = fold(tag_packed, maps.tag, maps.tag_value, maps.tag_bias).view(-1, n)  # [B*Lc*2, n]
            tags = (~is_text).nonzero().squeeze(1)  # [Nc] every click's category and subcategory token
            pair = pair_of[tags]
            at = (pair_owner[pair] * tag_length + tag_place[pair]) * 2 + (kind[tags] == _SUBCATEGORY).long()  # [Nc]
            segment = click_of[tags]  # [Nc], ascending
            per_news += segment_weighted_sum(torch.bincount(segment, minlength=b * h), at,
                                             per_news.new_ones(len(at)), tag_e)  # [B*H, n]
        return self.fine_click_pool(per_news.view(b, h, -1), history_mask)  # [B, fine_news_dim]

    def _fine_grained_user(self, tokens: tuple[torch.Tensor, ...], rows: torch.Tensor, kinds: torch.Tensor,
                           mask: torch.Tensor, history_mask: torch.Tensor) -> torch.Tensor:
        """u^f [B, fine_news_dim] of token slots with kinds ``kinds`` and mask ``mask`` [B, H, T],
        whose real slots are the ``rows`` [B, H, T] of the distinct tokens' q, k, v ``tokens``.

        The real tokens of each user are packed to the left of one [B, L] sequence (L = the most
        real tokens of any user here; the Fastformer has no positions and masks padding, so this is
        exactly the slot grid's result), as rows of the distinct tokens' projections (padding: the
        zero row). The Fastformer's poolings are then batched matrix products; the per-news pooling
        is a softmax within (user, click) segments. Used in training (dropout on the token outputs);
        without dropout ``_folded_fine_grained_user`` gives the same values for less work.
        """
        c, layer, pool = self.config, self.fastformer, self.token_pool
        b, h, t = mask.shape
        flat = mask.reshape(b, h * t)
        kinds = kinds.reshape(b, h * t)
        is_text = flat & torch.isin(kinds, torch.tensor(_TEXT_KINDS, device=kinds.device))  # [B, H*T]
        # Packed order: each user's text tokens first (the only ones the per-news pooling scores),
        # then its category tokens, then padding.
        text_counts, counts = is_text.sum(dim=1), flat.sum(dim=1)  # [B]
        places = torch.where(is_text, is_text.cumsum(dim=1), text_counts[:, None] + (flat & ~is_text).cumsum(dim=1)) - 1
        owner, where = flat.nonzero(as_tuple=True)  # [N] user and slot of every real token
        click = torch.div(where, t, rounding_mode="floor")  # [N]
        position = places[owner, where]  # [N] place in the packed sequence
        length, text_length = (max(int(x.max()), 1) if b else 1 for x in (counts, text_counts))
        kind = kinds[owner, where]  # [N]
        q_tok, k_tok, v_tok = tokens  # [U + 1, ff] each
        packed = torch.full((b, length), len(q_tok) - 1, dtype=torch.long, device=mask.device)
        packed[owner, position] = rows.reshape(b, h * t)[owner, where]  # [B, L]; padding -> the zero row
        packed_mask = torch.arange(length, device=mask.device) < counts[:, None]  # [B, L]
        q, k = q_tok[packed], k_tok[packed]  # [B, L, ff]
        v = q if v_tok is q_tok else v_tok[packed]
        split = (b, length, layer.heads, layer.head_dim)
        g = layer.global_key(q.view(split), k.view(split), packed_mask, padding_is_zero=True).flatten(1)  # [B, ff]

        # per-news pooling over the text tokens (the first text_length packed places): segment
        # (user, click) of each place; padding goes to a spare segment b * h that is dropped
        text = is_text[owner, where]  # [N]
        segment = torch.full((b, text_length), b * h, dtype=torch.long, device=mask.device)
        segment[owner[text], position[text]] = (owner * h + click)[text]
        segment = segment.flatten()  # [B*Lt]
        out = self.dropout(layer.transform(g[:, None] * v) + q)  # [B, L, ff]
        x = out[:, :text_length].flatten(0, 1)  # [B*Lt, ff]
        weights = segment_softmax(pool.scores(x), segment, b * h + 1)  # [B*Lt]
        weighted = weights[:, None] * x  # [B*Lt, ff] (fp32 under CUDA autocast: the softmax is)
        pooled = weighted.new_zeros(b * h + 1, x.shape[-1]).index_add(0, segment, weighted)[: b * h]
        parts = [pooled]
        if c.fine_categories:  # the category and subcategory token outputs of every clicked news
            picked = ((kind == _CATEGORY) | (kind == _SUBCATEGORY)).nonzero().squeeze(1)  # two per real click
            o, at = owner[picked], position[picked]
            states = out[o, at]  # [n, ff]
            slot = (o * h + click[picked]) * 2 + (kind[picked] == _SUBCATEGORY).long()  # [n] row of [B*H*2]
            tags = states.new_zeros(b * h * 2, states.shape[-1]).index_copy(0, slot, states)
            parts.append(tags.view(b * h, 2 * states.shape[-1]))  # [B*H, 2*ff]: category, subcategory
        per_news = self.dropout(self.fine_news(torch.cat(parts, dim=-1))).view(b, h, -1)  # [B, H, fine_news_dim]
        return self.dropout(self.fine_click_pool(per_news, history_mask))  # [B, fine_news_dim]
