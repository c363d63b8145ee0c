"""FUM: Fine-grained and Fast User Modeling for News Recommendation (Qi, Wu, Wu, Huang, SIGIR 2022).

News encoder (multi-view, each view switchable in the config; at least one must be on):

- title view: word embedding -> dropout -> multi-head self-attention -> dropout -> additive
  attention over the words (as NRMS);
- abstract view: the same over the abstract words (own attention layers, shared word embedding);
- category views: category and subcategory embeddings, each -> dense + ReLU (as NAML);
- entity view: embeddings of the news' entities (WikidataIds of the title's, then the abstract's
  entities, ``DataConfig.entity_len`` kept) -> dropout -> additive attention -> dense + ReLU.

Every view vector has ``heads * head_dim`` dims; an additive attention over the views pools them
into the news vector (NAML's scheme: a news item weighs its own views).

User encoder, two parts whose outputs are combined:

- coarse u^c: multi-head self-attention + additive attention over the clicked-news vectors (NRMS);
- fine-grained u^f: every clicked news becomes ``tokens_per_news`` token slots, in this order:
  its title words (cut to what is left of the budget), one category token, one subcategory token,
  then optionally ``fine_abstract_len`` abstract words and ``fine_entity_len`` entity tokens.
  Words, categories and entities are embedded by the tables the news encoder uses (created for the
  user model alone when a view is off) and each kind is projected by its own linear map to
  ``fastformer_dim``; a learned token-type embedding (word / category / subcategory / abstract
  word / entity) is added. The tokens of all H clicked news form one sequence that a Fastformer
  encoder reads as a whole, so tokens of one click interact with those of every other click at a
  cost linear in the number of tokens. Only real tokens are computed: they are packed into
  [B, L] (L = the most real tokens of any user in the batch), which gives exactly the result of
  the padded [B, H * T] slot grid because nothing in u^f depends on positions and all padding is
  masked. Additive attention within each news gives [B, H, fastformer_dim], additive attention
  over the clicks [B, fastformer_dim], and a linear map the news dimension (identity when the
  sizes already match). As the official Fastformer README recommends for news recommendation
  there is no position embedding and no layer normalization by default.

``combine``: u = u^c + u^f ("sum", the paper's slides) or u = W [u^c; u^f] + b ("concat", the
official code). With ``coarse`` or ``fine_grained`` off (ablations), u is the remaining part.
Score: dot product of user and candidate vectors; the user vector depends only on the history,
so evaluation encodes every news once and every user once (the cached path).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ..data.batching import NewsFeatures, UserInputs
from ..data.vocab import PAD
from ..fastformer import FastformerEncoder
from ..layers import AdditiveAttention, MultiHeadSelfAttention
from .base import ModelContext, NewsRecModel, word_embedding

# token types of the fine-grained sequence (row 0 of the type embedding is unused)
_WORD, _CATEGORY, _SUBCATEGORY, _ABSTRACT, _ENTITY = 1, 2, 3, 4, 5


@dataclass
class FUMConfig:
    word_dim: int = 300  # word embedding size without pretrained vectors (else theirs)
    heads: int = 20  # self-attention heads of the news encoder and of the coarse user model
    head_dim: int = 20  # size of each head; news and user vectors have heads * head_dim dims
    attention_hidden: int = 200  # hidden size of every additive attention pooling
    dropout: float = 0.2  # on embeddings, self-attention outputs and the Fastformer sublayer output
    category_dim: int = 100  # category and subcategory embedding size
    entity_dim: int = 100  # entity embedding size
    use_title: bool = True  # news encoder: title view
    use_abstract: bool = True  # news encoder: abstract view
    use_categories: bool = True  # news encoder: category and subcategory views
    use_entities: bool = True  # news encoder: entity view
    coarse: bool = True  # user model: coarse part u^c over clicked-news vectors
    fine_grained: bool = True  # user model: fine-grained part u^f over the clicked news' tokens
    combine: Literal["sum", "concat"] = "sum"  # u = u^c + u^f, or a linear map of [u^c; u^f]
    tokens_per_news: int = 32  # token slots per clicked news in u^f (title words + 2 category tokens + extras)
    fine_abstract: bool = False  # u^f: add abstract words to each clicked news' tokens
    fine_abstract_len: int = 10  # ... this many (taken from the tokens_per_news budget)
    fine_entities: bool = False  # u^f: add entity tokens to each clicked news' tokens
    fine_entity_len: int = 5  # ... this many (taken from the tokens_per_news budget)
    fastformer_dim: int = 400  # token size inside u^f (a multiple of fastformer_heads)
    fastformer_heads: int = 20  # Fastformer heads
    fastformer_layers: int = 1  # stacked Fastformer layers
    fastformer_layer_norm: bool = False  # post-LN around each Fastformer layer (off: official advice)


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


class FUM(NewsRecModel):
    config_class = FUMConfig
    INFERENCE_USERS = 128  # users per u^f pass when not training (bounds memory; see fine_grained_user)

    def __init__(self, config: FUMConfig, context: ModelContext):
        super().__init__()
        views = [config.use_title, config.use_abstract, config.use_categories, config.use_entities]
        if not any(views):
            raise ValueError("FUM needs at least one news view (use_title, use_abstract, use_categories, "
                             "use_entities)")
        if not (config.coarse or config.fine_grained):
            raise ValueError("FUM needs at least one user model part (coarse, fine_grained)")
        if config.combine not in ("sum", "concat"):
            raise ValueError(f"combine must be 'sum' or 'concat', got {config.combine!r}")
        extra = config.fine_abstract * config.fine_abstract_len + config.fine_entities * config.fine_entity_len
        if config.fine_grained and config.tokens_per_news - 2 - extra < 1:
            raise ValueError(f"tokens_per_news ({config.tokens_per_news}) leaves no room for title words "
                             f"after 2 category tokens and {extra} abstract/entity tokens")
        self.config = config
        dim = config.heads * config.head_dim  # news and user vectors
        self.dropout = nn.Dropout(config.dropout)
        self.words = word_embedding(context, config.word_dim)
        word_dim = self.words.embedding_dim
        vocabs = context.vocabs
        fine = config.fine_grained
        if config.use_categories or fine:
            self.categories = nn.Embedding(len(vocabs.categories), config.category_dim, padding_idx=0)
            self.subcategories = nn.Embedding(len(vocabs.subcategories), config.category_dim, padding_idx=0)
        if config.use_entities or (fine and config.fine_entities):
            self.entities = nn.Embedding(max(len(vocabs.entities), 2), config.entity_dim, padding_idx=0)

        # ---- news encoder
        if config.use_title:
            self.title_view = NewsTextView(word_dim, config)
        if config.use_abstract:
            self.abstract_view = NewsTextView(word_dim, config)
        if config.use_categories:
            self.category_dense = nn.Linear(config.category_dim, dim)
            self.subcategory_dense = nn.Linear(config.category_dim, dim)
        if config.use_entities:
            self.entity_pool = AdditiveAttention(config.entity_dim, config.attention_hidden)
            self.entity_dense = nn.Linear(config.entity_dim, dim)
        self.view_pool = AdditiveAttention(dim, config.attention_hidden)

        # ---- user encoder
        if config.coarse:
            self.click_attention = MultiHeadSelfAttention(dim, config.heads, config.head_dim)
            self.click_pool = AdditiveAttention(dim, config.attention_hidden)
        if fine:
            ff = config.fastformer_dim
            self.word_proj = nn.Linear(word_dim, ff)
            self.category_proj = nn.Linear(config.category_dim, ff)
            self.subcategory_proj = nn.Linear(config.category_dim, ff)
            if config.fine_entities:
                self.entity_proj = nn.Linear(config.entity_dim, ff)
            self.token_types = nn.Embedding(6, ff)
            self.fastformer = FastformerEncoder(ff, config.fastformer_heads, config.fastformer_layers,
                                                config.dropout, config.fastformer_layer_norm)
            self.token_pool = AdditiveAttention(ff, config.attention_hidden)
            self.fine_click_pool = AdditiveAttention(ff, config.attention_hidden)
            self.fine_out = nn.Linear(ff, dim) if ff != dim else nn.Identity()
        if config.coarse and fine and config.combine == "concat":
            self.combine = nn.Linear(2 * dim, dim)

    # ------------------------------------------------------------------ news

    def text_fields(self) -> tuple[str, ...]:
        return ("title", "abstract") if self.config.use_abstract else ("title",)

    def encode_news(self, news: NewsFeatures, users: torch.Tensor | None = None) -> torch.Tensor:
        c = self.config
        views = []
        if c.use_title:
            views.append(self.title_view(self.words(news.title), news.title != PAD))  # [N, D]
        if c.use_abstract:
            views.append(self.abstract_view(self.words(news.abstract), news.abstract != PAD))  # [N, D]
        if c.use_categories:
            views.append(torch.relu(self.category_dense(self.categories(news.category))))  # [N, D]
            views.append(torch.relu(self.subcategory_dense(self.subcategories(news.subcategory))))  # [N, D]
        if c.use_entities:
            entities = self._entities(news)  # [N, Le]
            x = self.dropout(self.entities(entities))  # [N, Le, entity_dim]
            # A news item without entities pools padding (zero vectors): its view is relu(bias).
            views.append(torch.relu(self.entity_dense(self.entity_pool(x, entities != PAD))))  # [N, D]
        return self.view_pool(torch.stack(views, dim=1))  # [N, D]

    @staticmethod
    def _entities(news: NewsFeatures) -> torch.Tensor:
        if news.entities is None:  # features built without an entity column: no entities
            return news.title.new_zeros(len(news), 1)
        return news.entities

    # ------------------------------------------------------------------ user

    def encode_user(self, user: UserInputs) -> torch.Tensor:
        parts = []
        if self.config.coarse:
            x = self.click_attention(user.history_vectors, user.history_mask)  # [B, H, D]
            parts.append(self.click_pool(x, user.history_mask))  # [B, D]
        if self.config.fine_grained:
            parts.append(self.fine_grained_user(user))  # [B, D]
        if len(parts) == 1:
            return parts[0]
        if self.config.combine == "sum":
            return parts[0] + parts[1]
        return self.combine(torch.cat(parts, dim=-1))  # [B, D]

    def fine_grained_slots(self, user: UserInputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Token slots of the clicked news: ids, token types and mask, each [B, H, T].

        Slot order within a news: title words (cut to what is left of the budget), category,
        subcategory, then the optional abstract words and entities. T is cut to the widest text of
        the batch; empty slots and padding news are masked.
        """
        c, news, rows = self.config, user.news, user.history  # rows: [B, H]
        extra = c.fine_abstract * c.fine_abstract_len + c.fine_entities * c.fine_entity_len
        ids, types = [], []

        def text(table: torch.Tensor, budget: int, kind: int) -> None:
            index = table[rows][..., :budget]  # [B, H, L]
            used = (index != PAD).flatten(0, 1).any(dim=0).nonzero()  # cut to the widest text here
            index = index[..., : int(used.max()) + 1 if len(used) else 1]
            ids.append(index)
            types.append(torch.full_like(index, kind))

        text(news.title, c.tokens_per_news - 2 - extra, _WORD)
        for table, kind in ((news.category, _CATEGORY), (news.subcategory, _SUBCATEGORY)):
            index = table[rows][..., None]  # [B, H, 1]
            ids.append(index)
            types.append(torch.full_like(index, kind))
        if c.fine_abstract:
            text(news.abstract, c.fine_abstract_len, _ABSTRACT)
        if c.fine_entities:
            text(self._entities(news), c.fine_entity_len, _ENTITY)
        index = torch.cat(ids, dim=-1)  # [B, H, T]
        mask = (index != PAD) & user.history_mask[..., None]  # [B, H, T]
        return index, torch.cat(types, dim=-1), mask

    def _embed_tokens(self, ids: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        """[N, fastformer_dim] vectors of N real tokens: each kind through its own table and linear
        map, plus the token-type embedding."""
        out = self.token_types(types)  # [N, ff]
        kinds = [(_WORD, self.words, self.word_proj), (_ABSTRACT, self.words, self.word_proj),
                 (_CATEGORY, self.categories, self.category_proj),
                 (_SUBCATEGORY, self.subcategories, self.subcategory_proj)]
        if self.config.fine_entities:
            kinds.append((_ENTITY, self.entities, self.entity_proj))
        for kind, table, proj in kinds:
            picked = (types == kind).nonzero().squeeze(1)  # [n_kind]
            if len(picked):
                out = out.index_add(0, picked, proj(self.dropout(table(ids[picked]))))  # [N, ff]
        return out

    def fine_grained_user(self, user: UserInputs) -> torch.Tensor:
        """u^f [B, D]. In inference (no autograd) users go through in groups of similar click
        count, ``INFERENCE_USERS`` at a time: an evaluation batch of 1,024 users x ~600 tokens x
        400 dims would otherwise hold several GB of Fastformer activations at once."""
        b = len(user.history)
        if torch.is_grad_enabled() or b <= self.INFERENCE_USERS:
            return self._fine_grained_user(user)
        order = torch.argsort(user.history_mask.sum(dim=1), stable=True)  # [B], similar lengths together
        out = None
        for lo in range(0, b, self.INFERENCE_USERS):
            rows = order[lo : lo + self.INFERENCE_USERS]
            part = self._fine_grained_user(user.take(rows))  # [b', D]
            if out is None:
                out = part.new_empty(b, part.shape[1])
            out[rows] = part
        return out

    def _fine_grained_user(self, user: UserInputs) -> torch.Tensor:
        """u^f [B, D]: one Fastformer over all clicked news' tokens, pooled within and over news.

        Only real tokens are computed: they are packed to the left of one [B, L] sequence (L = the
        most real tokens of any user in the batch) instead of the [B, H * T] slot grid, where most
        slots are empty (MovieLens titles fill ~5 of 26 slots). The result is exactly that of the
        slot grid: the Fastformer has no position embedding and masks padding, so it only sees the
        set of real tokens; the within-news pooling runs on the real tokens' scores, scattered back
        to their (news, slot) places for the softmax.
        """
        index, types, mask = self.fine_grained_slots(user)  # [B, H, T] each
        b, h, t = mask.shape
        flat_mask = mask.reshape(b, h * t)  # [B, H*T]
        owner, slot = flat_mask.nonzero(as_tuple=True)  # [N] user and slot of every real token
        counts = flat_mask.sum(dim=1)  # [B]
        position = (flat_mask.cumsum(dim=1) - 1)[owner, slot]  # [N] place in the packed sequence
        length = max(int(counts.max()), 1) if b else 1
        tokens = self._embed_tokens(index.reshape(b, h * t)[owner, slot], types.reshape(b, h * t)[owner, slot])
        packed = tokens.new_zeros(b, length, tokens.shape[1]).index_put((owner, position), tokens)  # [B, L, ff]
        packed_mask = torch.arange(length, device=mask.device) < counts[:, None]  # [B, L]
        x = self.fastformer(packed, packed_mask)[owner, position]  # [N, ff]

        # within-news attention pooling over each news' real tokens
        scores = self.token_pool.scores(x)  # [N]
        grid = torch.full((b, h * t), torch.finfo(scores.dtype).min, dtype=scores.dtype, device=scores.device)
        weights = torch.softmax(grid.index_put((owner, slot), scores).view(b, h, t), dim=-1)  # [B, H, T]
        news_of_token = owner * h + torch.div(slot, t, rounding_mode="floor")  # [N] row of [B*H]
        weighted = weights.view(b, h * t)[owner, slot, None] * x  # [N, ff]
        per_news = x.new_zeros(b * h, x.shape[1]).index_add(0, news_of_token, weighted).view(b, h, -1)  # [B, H, ff]
        pooled = self.fine_click_pool(per_news, user.history_mask)  # [B, ff]
        return self.fine_out(pooled)  # [B, D]
