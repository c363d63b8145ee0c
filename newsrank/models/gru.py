"""GRU: the recurrent user model of Okura et al., "Embedding-based News Recommendation for Millions
of Users" (KDD 2017), as the FUM paper's GRU baseline.

News encoder: LSTUR's (word embedding -> dropout -> CNN -> dropout -> additive attention over the
real words; optional topic embeddings), shared code, see :class:`~newsrank.models.lstur.CNNNewsGRU`.

User encoder, over the clicked-news vectors e_1..e_k, oldest first:

    h_t = GRU(h_{t-1}, e_t),   h_0 = 0,   u = h_k

Score: the inner product u . e_c (the paper's), raw in evaluation, softmax over 1 + npratio
candidates in training (the shared trainer's loss).

Deviations and why:
* Okura et al. encode articles with a denoising autoencoder over bag-of-words and train the GRU on
  a pairwise loss; as the FUM paper's baseline does, news are encoded by a CNN on the title words
  and trained end to end with the same loss as every other model here, so that only the user model
  differs from LSTUR.
* Histories are left-padded; the real clicks are packed (LSTUR's approach), so padding never enters
  the recurrence. A user without clicks gets h_0 = 0, whose scores are all 0.

Defaults follow LSTUR's (400 filters, window 3, attention hidden 200, dropout 0.2); the GRU size
is the news dimension.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..data.batching import UserInputs
from .base import ModelContext
from .lstur import CNNNewsConfig, CNNNewsGRU


@dataclass
class GRUConfig(CNNNewsConfig):
    """Only the news encoder's settings: the user model (a GRU of the news dimension) has none."""


class GRU(CNNNewsGRU):
    config_class = GRUConfig

    def __init__(self, config: GRUConfig, context: ModelContext):
        super().__init__()
        self.config = config
        dim = self.build_news_encoder(config, context)
        self.gru = nn.GRU(dim, dim, batch_first=True)

    def encode_user(self, user: UserInputs) -> torch.Tensor:
        initial = torch.zeros(len(user.history), self.news_dim, device=user.history.device)  # [B, D]
        return self.short_term(user, initial)  # [B, D]
