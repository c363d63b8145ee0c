"""LSTUR: Neural News Recommendation with Long- and Short-term User Representations
(An et al., ACL 2019).

News encoder: word embedding -> dropout -> CNN (``filters``, ``window``, ReLU) -> dropout ->
additive attention over the real words -> title vector e_t (``filters`` dims). With
``use_categories`` the topic and subtopic embeddings are concatenated, as in the paper:
e = [e_t; e_c; e_sc], so news vectors have D = filters + 2 * category_dim dims.

User encoder, with D the news dimension (also the GRU size):

    long-term    u_l = W_u[u]          (user-ID embedding; users unseen in training share <unk>)
    short-term   h_k = GRU(h_{k-1}, e_k)   over the clicked news e_1..e_k, oldest first
    ini          h_0 = u_l,  u = h_k                       (the long-term vector starts the GRU)
    con          h_0 = 0,    u = W [h_k; u_l] + b          (a dense layer back to D dims)

Score: dot product of u and the candidate news vector.

Choices:
* Long-term masking (the paper's p = 0.5): during training each sample's u_l is replaced by zeros
  with probability ``user_mask_prob`` (one Bernoulli draw per sample), so the model also learns to
  serve users whose long-term vector is uninformative (new users). Never applied in eval mode.
* The user embedding starts at zeros (Microsoft Recommenders' choice), so an untrained model reads
  every user like a masked one; row 0 (padding) is never a real user and stays zero.
* Histories are left-padded (most recent click last). Each row's real clicks are moved to the
  front, in order, and the GRU runs on a packed sequence, so padding never enters the recurrence
  and a history's vector does not depend on how much padding it has. A row with no click at all
  cannot be packed: its short-term state is the GRU's initial state (u_l in ``ini``, 0 in ``con``).

With ``news_encoder: plm`` the title vector e_t is a pretrained language model's pooled title vector
(``newsrank.data.plm``: frozen, or its top ``plm_tune_last`` layers trained) -> dropout -> dense +
ReLU into ``filters`` dims; the rest is unchanged (GRU too, which shares this news encoder).

Defaults follow Microsoft Recommenders' ``lstur.yaml`` (400 filters, window 3, GRU size 400,
attention hidden 200, dropout 0.2, ``ini``); the word dimension is that of the pretrained vectors
when some are given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from ..data.batching import NewsFeatures, UserInputs
from ..data.vocab import PAD
from ..layers import AdditiveAttention, TextCNN
from .base import ModelContext, NewsRecModel, PLMOptions, PLMEncoder, adapt_plm_dim, check_news_encoder, word_embedding


@dataclass
class CNNNewsConfig(PLMOptions):
    """The news encoder settings of :class:`CNNNewsGRU` models (LSTUR and the GRU baseline)."""

    word_dim: int = 300  # word embedding size without pretrained vectors (else theirs)
    filters: int = 400  # CNN filters = title vector size
    window: int = 3  # CNN window (odd)
    attention_hidden: int = 200  # hidden size of the additive attention over title words
    dropout: float = 0.2  # on word embeddings and on CNN outputs
    use_categories: bool = False  # concatenate topic and subtopic embeddings to the title vector
    category_dim: int = 100  # size of each of the topic / subtopic embeddings


@dataclass
class LSTURConfig(CNNNewsConfig):
    mode: Literal["ini", "con"] = "ini"  # ini: long-term vector starts the GRU; con: concatenate both
    user_mask_prob: float = 0.5  # training only: chance that a sample's long-term vector is zeroed


class CNNNewsGRU(NewsRecModel):
    """What LSTUR and the GRU baseline share: the CNN title encoder (with optional topic embeddings)
    and a GRU over the real clicks (packed). Subclasses call ``build_news_encoder`` in ``__init__``
    with a config derived from :class:`CNNNewsConfig`."""

    needs_history_vectors = False  # evaluation steps the GRU from the input projections alone

    @classmethod
    def adapt_config(cls, config: CNNNewsConfig, context: ModelContext, table=None) -> list[str]:
        return adapt_plm_dim(config, table)

    def build_news_encoder(self, config: CNNNewsConfig, context: ModelContext) -> int:
        """Create the news encoder's layers; returns the news dimension D."""
        check_news_encoder(config)
        self.dropout = nn.Dropout(config.dropout)
        if config.news_encoder == "plm":  # the PLM's pooled title vector -> dropout -> dense + ReLU
            self.plm_encoder = PLMEncoder(config)
            self.plm_projection = nn.Linear(config.plm_dim, config.filters)
        else:
            self.words = word_embedding(context, config.word_dim)
            self.cnn = TextCNN(self.words.embedding_dim, config.filters, config.window)
            self.title_pool = AdditiveAttention(config.filters, config.attention_hidden)
        dim = config.filters
        if config.use_categories:
            self.categories = nn.Embedding(len(context.vocabs.categories), config.category_dim, padding_idx=PAD)
            self.subcategories = nn.Embedding(len(context.vocabs.subcategories), config.category_dim,
                                              padding_idx=PAD)
            dim += 2 * config.category_dim
        self.news_dim = dim
        return dim

    def encode_news(self, news: NewsFeatures, users: torch.Tensor | None = None) -> torch.Tensor:
        if self.config.news_encoder == "plm":
            title = torch.relu(self.plm_projection(self.dropout(self.plm_encoder(news))))  # [N, filters]
        else:
            mask = news.title != PAD  # [N, L]
            x = self.dropout(self.words(news.title))  # [N, L, word_dim]
            x = self.dropout(self.cnn(x, mask))  # [N, L, filters]
            title = self.title_pool(x, mask)  # [N, filters]
        if not self.config.use_categories:
            return title
        return torch.cat(
            [title, self.categories(news.category), self.subcategories(news.subcategory)], dim=-1
        )  # [N, filters + 2 * category_dim]

    def history_features(self, vectors: torch.Tensor) -> torch.Tensor | None:
        """[N, 3D] the GRU's input projections W_ih x + b_ih (reset, update, new) of each news vector;
        None in training, where the packed ``nn.GRU`` projects its inputs itself."""
        if self.training:
            return None
        return F.linear(vectors, self.gru.weight_ih_l0, self.gru.bias_ih_l0)

    def short_term(self, user: UserInputs, initial: torch.Tensor) -> torch.Tensor:
        """[B, D] final GRU state over the real clicks of each row (in order), from ``initial`` [B, D];
        rows without any click keep ``initial``.

        Training runs ``nn.GRU`` over the packed clicks (its fused backward is the fast one there).
        Evaluation steps the same GRU by hand from the input projections computed once per news
        item (``history_features``), so per step only the recurrent product W_hh h remains: half
        the GRU's work. The two are the same function (a test compares them)."""
        if self.training:
            return self.packed_gru(user.history_vectors, user.history_mask, initial)
        return self.stepped_gru(self.features_of(user), user.history_mask, initial)

    def stepped_gru(self, inputs: torch.Tensor, mask: torch.Tensor, initial: torch.Tensor) -> torch.Tensor:
        """``short_term`` from input projections [B, H, 3D]: padded steps leave the state as it is."""
        w_hh, b_hh = self.gru.weight_hh_l0, self.gru.bias_hh_l0
        state = initial  # [B, D]
        real = mask.any(dim=0).nonzero()  # steps where some row has a click
        if not len(real):
            return state
        for t in range(int(real[0]), mask.shape[1]):
            i_r, i_z, i_n = inputs[:, t].chunk(3, dim=-1)  # each [B, D]
            h_r, h_z, h_n = F.linear(state, w_hh, b_hh).chunk(3, dim=-1)  # each [B, D]
            r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
            new = torch.tanh(i_n + r * h_n)
            state = torch.where(mask[:, t, None], (1 - z) * new + z * state, state)  # [B, D]
        return state

    def packed_gru(self, vectors: torch.Tensor, mask: torch.Tensor, initial: torch.Tensor) -> torch.Tensor:
        """``short_term`` with ``nn.GRU`` over the packed real clicks of news vectors [B, H, D]."""
        b, h, d = vectors.shape
        lengths = mask.sum(dim=1)  # [B]
        # Real clicks first, in their order (a stable sort of "is padding"), padding after them.
        order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)  # [B, H]
        clicks = vectors.gather(1, order.unsqueeze(-1).expand(b, h, d))  # [B, H, D]
        rows = (lengths > 0).nonzero().squeeze(1)  # [B'] rows with at least one click
        if len(rows) == 0:
            return initial
        packed = pack_padded_sequence(clicks[rows], lengths[rows].cpu(), batch_first=True, enforce_sorted=False)
        _, last = self.gru(packed, initial[rows].unsqueeze(0).contiguous())  # last: [1, B', D]
        if len(rows) == b:
            return last[0]
        return initial.index_copy(0, rows, last[0])  # [B, D]


class LSTUR(CNNNewsGRU):
    config_class = LSTURConfig

    def __init__(self, config: LSTURConfig, context: ModelContext):
        super().__init__()
        if config.mode not in ("ini", "con"):
            raise ValueError(f"mode must be 'ini' or 'con', got {config.mode!r}")
        if not 0.0 <= config.user_mask_prob <= 1.0:
            raise ValueError(f"user_mask_prob must be in [0, 1], got {config.user_mask_prob}")
        self.config = config
        dim = self.build_news_encoder(config, context)
        self.user_ids = nn.Embedding(len(context.vocabs.users), dim, padding_idx=PAD)
        nn.init.zeros_(self.user_ids.weight)
        self.gru = nn.GRU(dim, dim, batch_first=True)
        if config.mode == "con":
            self.combine = nn.Linear(2 * dim, dim)

    def long_term(self, users: torch.Tensor) -> torch.Tensor:
        """[B, D] long-term vectors; in training each is zeroed with probability user_mask_prob."""
        long = self.user_ids(users)  # [B, D]
        p = self.config.user_mask_prob
        if self.training and p > 0:
            keep = torch.rand(long.shape[0], 1, device=long.device) >= p  # [B, 1], one draw per sample
            long = long * keep.to(long.dtype)
        return long

    def encode_user(self, user: UserInputs) -> torch.Tensor:
        long = self.long_term(user.users)  # [B, D]
        if self.config.mode == "ini":
            return self.short_term(user, long)  # [B, D]
        short = self.short_term(user, torch.zeros_like(long))  # [B, D]
        return self.combine(torch.cat([short, long], dim=-1))  # [B, D]
