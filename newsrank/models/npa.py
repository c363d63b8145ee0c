"""NPA: Neural News Recommendation with Personalized Attention (Wu et al., KDD 2019).

A user-ID embedding e_u (``user_dim``) feeds two dense layers that give the user's preference
queries, one for words and one for news:

    q_w = ReLU(V_w e_u + v_w),        q_d = ReLU(V_d e_u + v_d)          (both ``attention_hidden``)

News encoder: word embedding -> dropout -> CNN (``filters``, ``window``, ReLU) -> dropout ->
personalized attention over the words with q_w:  a_i = q_w . tanh(W c_i + b), r = sum softmax(a)_i c_i.
User encoder: personalized attention over the clicked-news vectors with q_d. Score: dot product.

Because q_w depends on the user, a news vector depends on who reads it: NPA sets
``user_conditioned_news`` and the trainer and evaluator encode each distinct (user, news) pair
instead of each news item once. Users unseen in training share the ``<unk>`` row of the embedding.
With ``news_encoder: plm`` the news vector is a pretrained language model's pooled title vector
(``newsrank.data.plm``: frozen, or its top ``plm_tune_last`` layers trained) -> dropout -> dense +
ReLU into ``filters`` dims. Deviation: a pooled vector has no words for q_w to attend over, so the
word-level personalized attention is gone and news vectors no longer depend on the reader
(``user_conditioned_news`` is off: each news item is encoded once); the news-level personalized
attention of the user encoder stays.
Defaults follow Microsoft Recommenders' ``npa.yaml`` (title 10 words, user dim 100, 400 filters).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..data.batching import NewsFeatures, UserInputs
from ..data.vocab import PAD
from ..layers import PersonalizedAttention, TextCNN
from .base import ModelContext, NewsRecModel, PLMOptions, PLMEncoder, adapt_plm_dim, check_news_encoder, word_embedding


@dataclass
class NPAConfig(PLMOptions):
    word_dim: int = 300  # word embedding size without pretrained vectors (else theirs)
    filters: int = 400  # CNN filters = news vector size
    window: int = 3  # CNN window (odd)
    user_dim: int = 100  # user-ID embedding size
    attention_hidden: int = 200  # size of the preference queries and of the attention projection
    dropout: float = 0.2  # on word embeddings and on CNN outputs


class NPA(NewsRecModel):
    config_class = NPAConfig
    user_conditioned_news = True

    @classmethod
    def adapt_config(cls, config: NPAConfig, context: ModelContext, table=None) -> list[str]:
        return adapt_plm_dim(config, table)

    def __init__(self, config: NPAConfig, context: ModelContext):
        super().__init__()
        check_news_encoder(config)
        self.config = config
        self.dropout = nn.Dropout(config.dropout)
        if config.news_encoder == "plm":
            # One pooled vector per news: no words left to attend over, so the news vector no longer
            # depends on its reader (the click-level personalized attention stays).
            self.user_conditioned_news = False
            self.plm_encoder = PLMEncoder(config)
            self.plm_projection = nn.Linear(config.plm_dim, config.filters)
        else:
            self.words = word_embedding(context, config.word_dim)
            self.cnn = TextCNN(self.words.embedding_dim, config.filters, config.window)
        self.user_ids = nn.Embedding(len(context.vocabs.users), config.user_dim, padding_idx=PAD)
        self.word_query = nn.Sequential(nn.Linear(config.user_dim, config.attention_hidden), nn.ReLU())
        self.news_query = nn.Sequential(nn.Linear(config.user_dim, config.attention_hidden), nn.ReLU())
        self.word_pool = PersonalizedAttention(config.filters, config.attention_hidden)
        self.click_pool = PersonalizedAttention(config.filters, config.attention_hidden)

    def encode_news(self, news: NewsFeatures, users: torch.Tensor | None = None) -> torch.Tensor:
        if self.config.news_encoder == "plm":
            return torch.relu(self.plm_projection(self.dropout(self.plm_encoder(news))))  # [N, filters]
        if users is None:
            raise ValueError("NPA reads news through a user: encode_news needs the user of every row")
        mask = news.title != PAD  # [N, L]
        x = self.dropout(self.words(news.title))  # [N, L, word_dim]
        x = self.dropout(self.cnn(x, mask))  # [N, L, filters]
        query = self.word_query(self.user_ids(users))  # [N, attention_hidden]
        return self.word_pool(x, query, mask)  # [N, filters]

    def encode_user(self, user: UserInputs) -> torch.Tensor:
        query = self.news_query(self.user_ids(user.users))  # [B, attention_hidden]
        return self.click_pool(user.history_vectors, query, user.history_mask)  # [B, filters]
