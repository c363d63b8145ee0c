"""NRMS: Neural News Recommendation with Multi-Head Self-Attention (Wu et al., EMNLP-IJCNLP 2019).

News encoder: word embedding -> dropout -> multi-head self-attention over the title words ->
dropout -> additive attention -> news vector (heads x head_dim).
User encoder: multi-head self-attention over the clicked-news vectors -> additive attention. The
self-attention's Q/K/V projections read each news vector alone, so they are computed once per news
item (``history_features``), not once per history slot.
Score: dot product of user and candidate vectors. Padding is masked at every attention.

With ``news_encoder: plm`` the title view is a pretrained language model's pooled title vector
(``newsrank.data.plm``: frozen and cached once per news item, or with ``plm_tune_last: N`` its top N
layers trained over cached lower-layer states) -> dropout -> linear -> tanh into the same
heads x head_dim news vector; the user encoder is unchanged.

Defaults follow Microsoft Recommenders' ``nrms.yaml`` (20 heads x 20, attention hidden 200,
dropout 0.2); the word dimension is that of the pretrained vectors when some are given.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..data.batching import NewsFeatures, UserInputs
from ..data.vocab import PAD
from ..layers import AdditiveAttention, MultiHeadSelfAttention
from .base import ModelContext, NewsRecModel, PLMOptions, PLMEncoder, adapt_plm_dim, check_news_encoder, word_embedding


@dataclass
class NRMSConfig(PLMOptions):
    word_dim: int = 300  # word embedding size without pretrained vectors (else theirs)
    heads: int = 20  # self-attention heads, news and user level
    head_dim: int = 20  # size of each head; news vectors have heads * head_dim dims
    attention_hidden: int = 200  # hidden size of the additive attention pooling
    dropout: float = 0.2  # on word embeddings and on self-attention outputs


class NRMS(NewsRecModel):
    config_class = NRMSConfig
    needs_history_vectors = False  # its user side reads the clicks' Q/K/V only
    cpu_users_per_pass = 32  # evaluation: the users' gathered Q/K/V stay in the CPU caches
    exact_length_groups = True  # word self-attention: groups of one title length, no padding

    @classmethod
    def adapt_config(cls, config: NRMSConfig, context: ModelContext, table=None) -> list[str]:
        return adapt_plm_dim(config, table)

    def __init__(self, config: NRMSConfig, context: ModelContext):
        super().__init__()
        check_news_encoder(config)
        self.config = config
        self.dropout = nn.Dropout(config.dropout)
        dim = config.heads * config.head_dim
        if config.news_encoder == "plm":
            self.plm_encoder = PLMEncoder(config)  # frozen vectors, or the top plm_tune_last layers
            self.plm_projection = nn.Linear(config.plm_dim, dim)
        else:
            self.words = word_embedding(context, config.word_dim)
            self.title_attention = MultiHeadSelfAttention(self.words.embedding_dim, config.heads, config.head_dim)
            self.title_pool = AdditiveAttention(dim, config.attention_hidden)
        self.click_attention = MultiHeadSelfAttention(dim, config.heads, config.head_dim)
        self.click_pool = AdditiveAttention(dim, config.attention_hidden)

    def encode_news(self, news: NewsFeatures, users: torch.Tensor | None = None) -> torch.Tensor:
        if self.config.news_encoder == "plm":
            return torch.tanh(self.plm_projection(self.dropout(self.plm_encoder(news))))  # [N, heads * head_dim]
        mask = news.title != PAD  # [N, L]
        x = self.dropout(self.words(news.title))  # [N, L, word_dim]
        x = self.dropout(self.title_attention(x, mask))  # [N, L, heads * head_dim]
        return self.title_pool(x, mask)  # [N, heads * head_dim]

    def history_features(self, vectors: torch.Tensor) -> torch.Tensor:
        """[N, 3 * D] the user self-attention's queries, keys and values of each news vector."""
        return self.click_attention.project(vectors)

    def encode_user(self, user: UserInputs) -> torch.Tensor:
        x = self.click_attention.attend(self.features_of(user), user.history_mask)  # [B, H, D]
        return self.click_pool(x, user.history_mask)  # [B, D]
