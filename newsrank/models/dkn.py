"""DKN: Deep Knowledge-Aware Network for News Recommendation (Wang et al., WWW 2018).

Knowledge-aware CNN (KCNN) news encoder. For a title w_1..w_L with word vectors w_{1:L}, the entity
mentioned at each word e_{1:L} (zero where none) and that entity's context vector ebar_{1:L} (the
mean of its knowledge-graph neighbours' vectors):

    g(e) = tanh(M e + b),   g'(ebar) = tanh(M' ebar + b')           ("transform" into word space)
    W = [ w_{1:L} ; g(e_{1:L}) ; g'(ebar_{1:L}) ]                   (a 3-channel L x d image)
    c^h_i = ReLU(h * W_{i:i+h-1} + b_h)                              (per filter size h in 1, 2, 3)
    e(t) = [ max_i c^{h}_i ]_h                                       (max over time, all filters concatenated)

Candidate-aware attention over the clicked news t_1..t_K with candidate t_j:

    s_{k,j} = softmax_k( H([e(t_k); e(t_j)]) ),   e(i) = sum_k s_{k,j} e(t_k)

with H a DNN (one hidden layer). Score: a DNN over [e(i); e(t_j)] (the paper's), one hidden layer.
The user vector depends on the candidate, so DKN is ``candidate_aware``: news are encoded once,
the attention and the score run per (impression, candidate) in one batched call.

Data: the word-entity alignment is the news table's ``title_word_entities`` (from MIND's title
entity OccurrenceOffsets); entity vectors come from the training split's ``entity_embedding.vec``
(MIND's 100-d TransE; ``ModelContext.pretrained_entities``), context vectors from
``context_embedding.vec`` when there is one (MIND ships none: Microsoft Recommenders computes it from
the WikiData graph; ``newsrank synth`` writes one). ``adapt_config`` switches the context channel
off without context vectors, and the entity channel too when the training data has no entities
(the word channel alone is then a plain Kim CNN), and logs it.

Deviations and why:
* Defaults follow Microsoft Recommenders' DKN on MINDsmall (``dkn_MINDsmall.yaml``: 10-word titles,
  50 clicks, word and entity dim 100, TransE entities, transform on, filter sizes 1, 2, 3 with 100
  filters each, attention hidden 100 with ReLU, one DNN layer of 300, dropout 0, Adam lr 3e-4).
  That code scores with a sigmoid and log loss on single (impression, candidate) rows, uses a
  sigmoid hidden layer with batch normalisation, and keeps the context channel off on MIND; here,
  like every model in newsrank, training takes a softmax over 1 + npratio candidates (batch 32),
  evaluation ranks by the raw score, and the scoring DNN's hidden layer is a plain ReLU (no batch
  statistics, so a candidate's score never depends on the rest of its batch, which the fast ==
  one-at-a-time guarantee needs).
* Padding: words past the title's end are masked to zero in every channel, and windows that start
  past the last window fitting in the title are excluded from the max (a title shorter than h keeps
  its one window, padded with zeros), so the news vector does not depend on the padding width;
  the attention masks padded clicks, so a user's scores do not depend on history padding. A user
  with no click attends uniformly over padding news (finite, deterministic).
* ``score=dot`` (an option, not the paper's) replaces the scoring DNN by the dot product of the
  candidate-attended user vector and the candidate: a DNN over [user; candidate] can learn a score
  from the candidate alone, which on MovieLens-derived data reverses between the training and the
  later dev period (README, Results).
* Entity vectors are fine-tuned (trainable), as are the context vectors; words without an entity
  use entity row 0 (zeros), which the transform maps to tanh(b) (the padding words themselves are
  zeroed in every channel).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..data.batching import NewsFeatures, UserInputs
from ..data.vocab import PAD
from ..layers import masked_fill_min
from .base import ModelContext, NewsRecModel, adapt_entity_dim, entity_embedding, word_embedding


@dataclass
class DKNConfig:
    word_dim: int = 100  # word embedding size without pretrained vectors (else theirs)
    entity_dim: int = 100  # entity / context embedding size without entity vectors (else theirs)
    filter_sizes: list[int] = field(default_factory=lambda: [1, 2, 3])  # KCNN window sizes h
    filters: int = 100  # filters per window size; news vector = len(filter_sizes) * filters
    transform: bool = True  # map entity/context vectors to word space by tanh(M e + b) (else entity_dim = word_dim)
    use_entities: bool = True  # entity channel (turned off when the training data has no entities)
    use_context: bool = True  # context channel (turned off without context vectors)
    attention_hidden: int = 100  # hidden size of the candidate attention DNN over [clicked; candidate]
    dnn_hidden: int = 300  # hidden size of the scoring DNN over [user; candidate]
    score: Literal["dnn", "dot"] = "dnn"  # dnn: the paper's DNN over [user; candidate]; dot: their dot product
    dropout: float = 0.0  # on the channels' embeddings (the reference uses none)


class DKN(NewsRecModel):
    config_class = DKNConfig
    candidate_aware = True

    @classmethod
    def adapt_config(cls, config: DKNConfig, context: ModelContext, table=None) -> list[str]:
        notes = adapt_entity_dim(config, context)
        if config.use_entities and len(context.vocabs.entities) <= 2:
            config.use_entities = False
            notes.append("the training data has no entities: word channel only (use_entities = false)")
        if config.use_context and (not config.use_entities or context.pretrained_contexts is None):
            config.use_context = False
            notes.append("no context vectors (context_embedding.vec): context channel off (use_context = false)")
        if config.use_entities:
            notes.append(f"channels: words, entities{', contexts' if config.use_context else ''}")
        return notes

    def __init__(self, config: DKNConfig, context: ModelContext):
        super().__init__()
        if config.score not in ("dnn", "dot"):
            raise ValueError(f"score must be dnn or dot, got {config.score!r}")
        if not config.filter_sizes or min(config.filter_sizes) < 1:
            raise ValueError(f"filter_sizes must be positive window sizes, got {config.filter_sizes}")
        self.config = config
        self.words = word_embedding(context, config.word_dim)
        d = self.words.embedding_dim
        channels = 1
        if config.use_entities:
            self.entities = entity_embedding(context, config.entity_dim)
            if not config.transform and self.entities.embedding_dim != d:
                raise ValueError(f"transform = false needs entity_dim = word_dim ({self.entities.embedding_dim} "
                                 f"!= {d})")
            self.entity_transform = nn.Linear(self.entities.embedding_dim, d) if config.transform else None
            channels += 1
            if config.use_context:
                if context.pretrained_contexts is not None:
                    self.contexts = entity_embedding(context, config.entity_dim, context.pretrained_contexts)
                else:  # rebuilt from a checkpoint (its weights follow), or built by hand without vectors
                    self.contexts = nn.Embedding(len(self.entities.weight), config.entity_dim, padding_idx=PAD)
                self.context_transform = nn.Linear(self.contexts.embedding_dim, d) if config.transform else None
                channels += 1
        self.dropout = nn.Dropout(config.dropout)
        self.convs = nn.ModuleList(nn.Conv2d(channels, config.filters, (h, d)) for h in config.filter_sizes)
        self.news_dim = dim = len(config.filter_sizes) * config.filters
        self.attention = nn.Linear(2 * dim, config.attention_hidden)
        self.attention_out = nn.Linear(config.attention_hidden, 1)
        if config.score == "dnn":
            self.dnn = nn.Sequential(nn.Linear(2 * dim, config.dnn_hidden), nn.ReLU(), nn.Linear(config.dnn_hidden, 1))

    def lookup_fields(self) -> dict[str, tuple[str, ...]]:
        return {"words": ("title",), "entities": ("title_word_entities",)}  # entities: one per title word

    def _channel(self, table: nn.Embedding, transform: nn.Linear | None, ids: torch.Tensor) -> torch.Tensor:
        x = self.dropout(table(ids))  # [N, L, entity_dim]
        return torch.tanh(transform(x)) if transform is not None else x  # [N, L, d]

    def encode_news(self, news: NewsFeatures, users: torch.Tensor | None = None) -> torch.Tensor:
        width = max(news.title.shape[1], max(self.config.filter_sizes))
        title = F.pad(news.title, (0, width - news.title.shape[1]))  # [N, L]
        mask = title != PAD  # [N, L]
        channels = [self.dropout(self.words(title))]  # each [N, L, d]
        if self.config.use_entities:
            ids = news.title_word_entities
            ids = title.new_zeros(title.shape) if ids is None else F.pad(ids, (0, width - ids.shape[1]))  # [N, L]
            channels.append(self._channel(self.entities, self.entity_transform, ids))
            if self.config.use_context:
                channels.append(self._channel(self.contexts, self.context_transform, ids))
        image = torch.stack(channels, dim=1) * mask[:, None, :, None].to(channels[0].dtype)  # [N, channels, L, d]
        lengths = mask.sum(dim=1)  # [N]
        pooled = []
        for h, conv in zip(self.config.filter_sizes, self.convs):
            c = torch.relu(conv(image)).squeeze(-1)  # [N, filters, L - h + 1]
            starts = torch.arange(c.shape[-1], device=c.device)  # [L - h + 1]
            valid = starts[None, :] < torch.clamp(lengths - h + 1, min=1)[:, None]  # [N, L - h + 1]
            pooled.append(masked_fill_min(c, valid[:, None, :]).max(dim=-1).values)  # [N, filters]
        return torch.cat(pooled, dim=-1)  # [N, len(filter_sizes) * filters]

    @property
    def _dnn_halves_cached(self) -> bool:
        """Outside training with the DNN score, ``history_features`` and ``candidate_features`` also
        carry the user and candidate halves of the DNN's first layer (see ``score_candidates``)."""
        return not self.training and self.config.score == "dnn"

    def history_features(self, vectors: torch.Tensor) -> torch.Tensor:
        """[N, A] the clicked half W_c e_k of the candidate attention's first layer, per news vector;
        outside training with the DNN score also [N, A + K]: then the user half W_u e_k of the DNN's
        first layer follows (K = dnn_hidden; see ``score_candidates``)."""
        d = vectors.shape[-1]
        if not self._dnn_halves_cached:
            return F.linear(vectors, self.attention.weight[:, :d])
        return F.linear(vectors, torch.cat([self.attention.weight[:, :d], self.dnn[0].weight[:, :d]]))

    def candidate_features(self, vectors: torch.Tensor) -> torch.Tensor:
        """[..., A] the candidate half W_j e_j + b of the candidate attention's first layer, per news
        vector [..., D]; outside training with the DNN score [..., A + K]: then the candidate half of
        the DNN's first layer, with its bias, follows (see ``history_features``)."""
        d = vectors.shape[-1]
        if not self._dnn_halves_cached:
            return F.linear(vectors, self.attention.weight[:, d:], self.attention.bias)
        first = self.dnn[0]
        return F.linear(vectors, torch.cat([self.attention.weight[:, d:], first.weight[:, d:]]),
                        torch.cat([self.attention.bias, first.bias]))

    def click_logits(self, features: torch.Tensor, candidate_features: torch.Tensor) -> torch.Tensor:
        """[B, C, H] the candidate attention's logits over each impression's clicks (before the
        softmax over the real ones), from the clicks' ``history_features`` [B, H, A(+K)] and the
        candidates' ``candidate_features`` [B, C, A(+K)]."""
        # H([e_k; e_j]) = W_c e_k + W_j e_j + b: the clicked half once per news (history_features), the
        # candidate half per candidate (in evaluation once per news: candidate_features), then broadcast.
        a = self.attention.out_features
        clicked = features[..., :a]  # [B, H, A]
        candidate = candidate_features[..., :a]  # [B, C, A]
        # The [B, C, H, A] hidden layer is most of DKN's evaluation. Its ReLU runs in place and its
        # output layer (A -> 1) as a matrix-vector product (addmm with one output column was ~40%
        # slower; the same values); without gradients a few impressions at a time, so each pass's
        # hidden layer (~1 MB) stays in the cache (mlsmall_mind dev: ~2.3x faster for this block).
        per_impression = max(1, candidate.shape[1] * clicked.shape[1] * a)  # floats of one impression's hidden layer
        step = len(clicked) if torch.is_grad_enabled() else max(1, (1 << 18) // per_impression)
        return torch.cat([
            (clicked[i : i + step, None, :, :] + candidate[i : i + step, :, None, :])  # [b, C, H, A]
            .relu_().matmul(self.attention_out.weight[0]).add_(self.attention_out.bias)  # [b, C, H]
            for i in range(0, len(clicked), step)])  # [B, C, H]

    def score_candidates(
        self, user: UserInputs, candidates: torch.Tensor, mask: torch.Tensor | None = None, *,
        candidate_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        clicks, click_mask = user.history_vectors, user.history_mask  # [B, H, D], [B, H]
        a = self.attention.out_features
        features = self.features_of(user)  # [B, H, A] or, outside training, [B, H, A + K]
        if candidate_features is None:
            candidate_features = self.candidate_features(candidates)  # [B, C, A] or [B, C, A + K]
        logits = self.click_logits(features, candidate_features)  # [B, C, H]
        weights = torch.softmax(masked_fill_min(logits, click_mask[:, None, :]), dim=-1)  # [B, C, H]
        if features.shape[-1] > a and candidate_features.shape[-1] > a:
            # The DNN's first layer W [u; e_j] + b = W_u u + W_j e_j + b with u = sum_h a_h e_h, so
            # W_u u = sum_h a_h (W_u e_h): W_u e_h comes once per news item with the features and
            # W_j e_j + b with the candidate features, and the per-candidate product over [u; e_j]
            # (600 x 300 for each candidate) is gone.
            hidden = (torch.einsum("bch,bhk->bck", weights, features[..., a:])  # [B, C, K]
                      + candidate_features[..., a:])
            return self.dnn[2](self.dnn[1](hidden)).squeeze(-1)  # [B, C]
        users = torch.einsum("bch,bhd->bcd", weights, clicks)  # [B, C, D]: the user as seen by each candidate
        if self.config.score == "dot":  # no room for a candidate-only prior (see the module doc)
            return (users * candidates).sum(dim=-1)  # [B, C]
        return self.dnn(torch.cat([users, candidates], dim=-1)).squeeze(-1)  # [B, C]
