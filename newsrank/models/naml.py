"""NAML: Neural News Recommendation with Attentive Multi-View Learning (Wu et al., IJCAI 2019).

News encoder, four views of a news item, each a vector of ``filters`` dims:

- title view: word embedding -> dropout -> CNN -> dropout -> additive attention over the words;
- body view: the same over the abstract words (own CNN and attention, shared word embedding);
- category view: category embedding -> dense + ReLU;
- subcategory view: subcategory embedding -> dense + ReLU.

With ``news_encoder: plm`` the title view is a pretrained language model's pooled title vector
(``newsrank.data.plm``: frozen and cached once per news item, or with ``plm_tune_last: N`` its top N
layers trained over cached lower-layer states) -> dropout -> dense + ReLU; the body view stays on
words, or with ``plm_views: title,body`` reads the abstract through the same PLM (and the same tuned
layers) the same way.

An additive attention over the four view vectors pools them into the news vector.
User encoder: additive attention over the clicked-news vectors.
Score: dot product of user and candidate vectors. Padding is masked at every attention, so an
empty title or abstract (all padding) gives a finite, width-independent view vector.

Defaults follow Microsoft Recommenders' ``naml.yaml`` (400 filters of window 3, attention hidden
200, category embeddings 100, dropout 0.2); the word dimension is that of the pretrained vectors
when some are given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..data.batching import NewsFeatures, UserInputs
from ..layers import AdditiveAttention, TextCNN
from ..data.plm import plm_views
from .base import ModelContext, NewsRecModel, PLMOptions, PLMEncoder, adapt_plm_dim, check_news_encoder, word_embedding


@dataclass
class NAMLConfig(PLMOptions):
    word_dim: int = 300  # word embedding size without pretrained vectors (else theirs)
    filters: int = 400  # CNN filters; every view vector and the news/user vectors have this size
    window: int = 3  # CNN window (odd: 'same' padding)
    attention_hidden: int = 200  # hidden size of every additive attention (words, views, clicks)
    category_dim: int = 100  # category and subcategory embedding size
    dropout: float = 0.2  # on word embeddings and on CNN outputs
    plm_views: str = "title"  # news_encoder=plm: the views read through the PLM, "title" or "title,body"
    plm_body_len: int = 64  # news_encoder=plm with the body view: PLM tokens kept per abstract


class TextView(nn.Module):
    """One text view (title or body): dropout -> CNN -> dropout -> masked additive attention."""

    def __init__(self, word_dim: int, config: NAMLConfig):
        super().__init__()
        self.dropout = nn.Dropout(config.dropout)
        self.cnn = TextCNN(word_dim, config.filters, config.window)
        self.pool = AdditiveAttention(config.filters, config.attention_hidden)

    def forward(self, embedded: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # embedded: [N, L, word_dim], mask: [N, L] bool
        x = self.dropout(embedded)  # [N, L, word_dim]
        x = self.dropout(self.cnn(x, mask))  # [N, L, filters]
        return self.pool(x, mask)  # [N, filters]


class CategoryView(nn.Module):
    """A category view: embedding (row 0 = padding) -> dense + ReLU."""

    def __init__(self, size: int, config: NAMLConfig):
        super().__init__()
        self.embedding = nn.Embedding(size, config.category_dim, padding_idx=0)
        self.dense = nn.Linear(config.category_dim, config.filters)

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        # index: [N] long -> [N, filters]
        return torch.relu(self.dense(self.embedding(index)))


class PLMView(nn.Module):
    """A text view with ``news_encoder: plm``: the PLM's pooled vector (frozen, or from the top layers
    NAML's one ``plm_encoder`` tunes for both views) -> dropout -> dense + ReLU."""

    def __init__(self, config: NAMLConfig):
        super().__init__()
        self.dropout = nn.Dropout(config.dropout)
        self.dense = nn.Linear(config.plm_dim, config.filters)

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        # vectors: [N, plm_dim] -> [N, filters]
        return torch.relu(self.dense(self.dropout(vectors)))


class NAML(NewsRecModel):
    config_class = NAMLConfig

    @classmethod
    def adapt_config(cls, config: NAMLConfig, context: ModelContext, table=None) -> list[str]:
        return adapt_plm_dim(config, table)

    def __init__(self, config: NAMLConfig, context: ModelContext):
        super().__init__()
        check_news_encoder(config)
        self.config = config
        self.words = word_embedding(context, config.word_dim)
        dim = self.words.embedding_dim
        plm = config.news_encoder == "plm"
        self.body_on_plm = plm and "body" in plm_views(config)
        if plm:
            self.plm_encoder = PLMEncoder(config)  # frozen vectors, or the top plm_tune_last layers (both views)
        self.title_view = PLMView(config) if plm else TextView(dim, config)
        self.body_view = PLMView(config) if self.body_on_plm else TextView(dim, config)
        self.category_view = CategoryView(len(context.vocabs.categories), config)
        self.subcategory_view = CategoryView(len(context.vocabs.subcategories), config)
        self.view_pool = AdditiveAttention(config.filters, config.attention_hidden)
        self.click_pool = AdditiveAttention(config.filters, config.attention_hidden)

    def text_fields(self) -> tuple[str, ...]:
        return ("title", "abstract")

    def word_views(self) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
        views = {"title": None if self.config.news_encoder == "plm" else self.title_view,
                 "abstract": None if self.body_on_plm else self.body_view}
        return {field: self.on_word_ids(view) for field, view in views.items() if view is not None}  # -> [N, filters]

    def encode_news(self, news: NewsFeatures, users: torch.Tensor | None = None,
                    texts: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """[N, filters]; ``texts``: {"title", "abstract": [N, filters]} word views the caller already has."""
        texts, words = dict(texts or {}), self.word_views()
        for field, view in words.items():
            if field not in texts:
                texts[field] = view(getattr(news, field))  # [N, filters]
        views = torch.stack(
            [
                texts["title"] if "title" in words else self.title_view(self.plm_encoder(news, "title")),  # [N, filters]
                texts["abstract"] if "abstract" in words else self.body_view(self.plm_encoder(news, "body")),
                self.category_view(news.category),  # [N, filters]
                self.subcategory_view(news.subcategory),  # [N, filters]
            ],
            dim=1,
        )  # [N, 4, filters]
        return self.view_pool(views)  # [N, filters]

    def history_features(self, vectors: torch.Tensor) -> torch.Tensor:
        """[N, 1] the click pooling's attention score of each news vector (it reads the vector alone)."""
        return self.click_pool.scores(vectors).unsqueeze(-1)

    def encode_user(self, user: UserInputs) -> torch.Tensor:
        scores = self.features_of(user).squeeze(-1)  # [B, H]
        return self.click_pool(user.history_vectors, user.history_mask, scores)  # [B, filters]
