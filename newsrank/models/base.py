"""The shape every news recommender has: a news encoder, a user encoder and a scorer.

The trainer and the evaluator only call the methods below, so a new model is one file that
implements them. ``forward`` (training) encodes each distinct news item of a batch once: in a batch
of 32 impressions x (50 clicks + 5 candidates) most rows are padding or repeats, and encoding them
is where the time goes.

Two kinds of models, one contract:

* **Cacheable** (the default; NRMS, LSTUR, NPA, NAML, FUM, GRU): the user vector depends on the
  history only. A model implements ``encode_user`` (and optionally ``score``); evaluation encodes
  each distinct user once and scores candidates by ``score(user, candidate)``.
* **Candidate-aware** (``candidate_aware = True``; DKN, FIM): the user side reads each candidate
  (DKN attends over the clicks with the candidate as query; FIM matches the candidate's words with
  every clicked word). There is no user vector to cache; such a model implements
  ``score_candidates(user, candidates, mask)``, which scores all candidates of a batch of
  impressions in one batched call. News are still encoded once per news item (the "news vector"
  may be a flattened token-level state, as FIM's is).

Training (``forward``), the fast evaluator, ``predict`` and the one-at-a-time reference path all go
through ``score_candidates``, whose default is ``score(encode_user(user), candidates)``, so neither
kind needs special cases of its own.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
import torch
from torch import nn

from ..data.batching import NewsFeatures, TrainBatch, UserInputs, cut_padding, gather_rows
from ..data.plm import DEFAULT_PLM
from ..data.vocab import PAD, Vocabularies
from ..layers import LookupTable

if TYPE_CHECKING:
    from ..core.distributed import NewsSharing


@dataclass
class ModelContext:
    """What a model needs to know about the data to build its layers."""

    vocabs: Vocabularies
    pretrained_words: np.ndarray | None = None  # [len(words), dim] or None (random init)
    freeze_words: bool = False
    # [len(entities), dim] entity vectors (MIND's entity_embedding.vec, TransE) or None (random init);
    # see newsrank.data.entities.load_entity_vectors and entity_embedding below
    pretrained_entities: np.ndarray | None = None
    # [len(entities), dim] context vectors (mean of an entity's knowledge-graph neighbours, DKN's
    # context_embedding) or None when the data has none
    pretrained_contexts: np.ndarray | None = None


def word_embedding(context: ModelContext, dim: int) -> LookupTable:
    """Word embedding (row 0 = padding) initialised from pretrained vectors when there are some.

    With pretrained vectors the dimension is theirs; ``dim`` applies only to a random init.
    """
    if context.pretrained_words is not None:
        # a copy: two tables made from the same vectors (FUM's) must not share, and train, one storage
        weights = torch.tensor(context.pretrained_words, dtype=torch.float32)
        return LookupTable.from_pretrained(weights, freeze=context.freeze_words, padding_idx=0)
    return LookupTable(len(context.vocabs.words), dim, padding_idx=0)


def entity_embedding(context: ModelContext, dim: int, vectors: np.ndarray | None = None) -> LookupTable:
    """Entity embedding (row 0 = padding, zero) initialised from ``vectors`` (default: the context's
    pretrained entity vectors) when there are some, trainable; else random with ``dim`` dims.

    A model that reads entities builds its table with this, so MIND's TransE vectors reach it
    without model code of its own; with vectors the dimension is theirs, so the model's
    ``adapt_config`` should write it into its config (``entity_dim``): a checkpoint then rebuilds
    the same shapes without the vectors (see :func:`adapt_entity_dim`).
    """
    vectors = context.pretrained_entities if vectors is None else vectors
    rows = max(len(context.vocabs.entities), 2)
    if vectors is not None:
        if len(vectors) != len(context.vocabs.entities):
            raise ValueError(f"entity vectors have {len(vectors)} rows, the entity vocabulary "
                             f"{len(context.vocabs.entities)}")
        weights = torch.as_tensor(np.asarray(vectors), dtype=torch.float32).clone()
        weights[PAD] = 0.0
        table = LookupTable.from_pretrained(weights, freeze=False, padding_idx=PAD)
    else:
        table = LookupTable(rows, dim, padding_idx=PAD)
    table.kind = "entities"
    return table


def adapt_entity_dim(config, context: ModelContext, field: str = "entity_dim") -> list[str]:
    """For ``adapt_config``: set ``config.<field>`` to the pretrained entity vectors' dimension."""
    if context.pretrained_entities is None or getattr(config, field) == context.pretrained_entities.shape[1]:
        return []
    setattr(config, field, int(context.pretrained_entities.shape[1]))
    return [f"{field} = {getattr(config, field)} (the entity vectors' dimension)"]


@dataclass
class PLMOptions:
    """The ``news_encoder: plm`` settings every model with a pooled title view shares (its config
    dataclass derives from this, so they come first in its fields)."""

    news_encoder: str = "words"  # title view: "words" (the model's word tower) or "plm" (a pretrained LM, newsrank[plm])
    plm: str = DEFAULT_PLM  # news_encoder=plm: a packaged PLM's name or a transformers model folder
    plm_title_len: int = 32  # news_encoder=plm: PLM tokens kept per title
    plm_tune_last: int = 0  # news_encoder=plm: 0 = frozen PLM vectors; N = the top N PLM layers trained with the model
    plm_state_dtype: str = "float32"  # plm_tune_last > 0: cached lower-layer token states, float32 or float16 (half the memory)
    plm_lr: float = 0.0  # plm_tune_last > 0: Adam learning rate of the tuned PLM layers; 0 = the train lr
    plm_dim: int = 384  # news_encoder=plm: the PLM vectors' size (set from the data)
    plm_digest: str = ""  # news_encoder=plm: hash of the PLM's files the model was trained on (set from the data)


def check_news_encoder(config) -> None:
    if config.news_encoder not in ("words", "plm"):
        raise ValueError(f"model.news_encoder must be 'words' or 'plm', got {config.news_encoder!r}")
    if config.plm_tune_last < 0:
        raise ValueError(f"model.plm_tune_last must be >= 0 (0 = frozen), got {config.plm_tune_last}")


def adapt_plm_dim(config, table=None) -> list[str]:
    """For ``adapt_config`` of a model with ``news_encoder: plm``: set ``config.plm_dim`` to the size of
    the table's PLM vectors or token states (``newsrank.data.plm.attach_plm`` gave the table them)."""
    if getattr(config, "news_encoder", None) != "plm" or table is None:
        return []
    inputs = table.plm_states if getattr(config, "plm_tune_last", 0) else table.plm
    if inputs is None:
        raise ValueError("news_encoder=plm, but the news table has no PLM inputs (newsrank.data.plm.attach_plm)")
    if config.plm_dim == inputs.shape[1]:
        return []
    config.plm_dim = int(inputs.shape[1])
    return [f"plm_dim = {config.plm_dim} (the PLM vectors' size)"]


def plm_vectors(news: NewsFeatures, view: str = "title") -> torch.Tensor:
    """[N, P] the news items' frozen PLM vectors of ``view`` (title or body), or a clear error when
    the data has none."""
    vectors = news.plm if view == "title" else news.plm_body
    if vectors is None:
        raise ValueError(f"news_encoder=plm, but these news features carry no PLM {view} vectors: load the split "
                         "through newsrank.data.plm.attach_plm (the trainer and the CLI do)")
    return vectors


class PLMEncoder(nn.Module):
    """The pooled PLM vector [N, plm_dim] of a news view (title, or NAML's body) for ``news_encoder: plm``.

    Frozen (``plm_tune_last: 0``): the cached vectors, no parameters. ``plm_tune_last: N``: copies of
    the PLM's top N layers (parameters of the model, saved in its checkpoint) run over the cached
    token states of the layers below, then the same mean pooling and normalisation; gradients reach
    these layers only, the cached states are data."""

    def __init__(self, config):
        super().__init__()
        self.tune_last = config.plm_tune_last
        if self.tune_last:
            from ..data.plm import tuned_layers

            self.layers = tuned_layers(config.plm, self.tune_last)

    def forward(self, news: NewsFeatures, view: str = "title") -> torch.Tensor:
        if not self.tune_last:
            return plm_vectors(news, view)  # [N, P]
        tokens = news.plm_tokens if view == "title" else news.plm_body_tokens
        if tokens is None:
            raise ValueError(f"plm_tune_last > 0, but these news features carry no PLM {view} token states: load "
                             "the split through newsrank.data.plm.attach_plm (the trainer and the CLI do)")
        from ..data.plm import run_top_layers

        states, mask = tokens.padded()  # [N, W, P], [N, W]
        return run_top_layers(self.layers, states, mask)  # [N, P]


def length_bounds(longest: int, exact: bool) -> list[int]:
    """Upper text lengths of ``encode_news_rows``' groups, up to ``longest``: powers of two from 4
    (4, 8, 16, ...), or, ``exact``, every length up to 16 (no padding) and then four per doubling
    (20, 24, 28, 32, 40, ...: at most 25% padding, and not one small group per abstract length)."""
    if not exact:
        return [1 << k for k in range(2, 1 + max(2, longest.bit_length()))]
    bounds = list(range(1, min(longest, 16) + 1))
    width = 16
    while width < longest:
        width += 1 << (width.bit_length() - 3)  # a quarter of the power of two at or below ``width``
        bounds.append(width)
    return bounds


class NewsRecModel(nn.Module):
    """Base class: subclasses implement ``encode_news`` and either ``encode_user`` (cacheable) or,
    with ``candidate_aware = True``, ``score_candidates``."""

    #: True when a news vector depends on the user who reads it (NPA's personalized attention). Then
    #: news cannot be encoded once for everybody: training and evaluation encode each distinct
    #: (user, news) pair instead, and ``encode_news`` receives the user of every row.
    user_conditioned_news: bool = False
    #: True when the user side reads the candidate (DKN's candidate attention, FIM's word matching):
    #: user vectors cannot be cached, and the model implements ``score_candidates`` instead of
    #: ``encode_user``. The evaluator then scores the padded candidates of a batch of impressions in
    #: one call (``eval_batch_size`` counts candidates there) and still encodes each news item once.
    candidate_aware: bool = False
    #: False when, given ``UserInputs.history_features``, the user side reads nothing else of the
    #: clicks' vectors (NRMS, FUM, LSTUR and GRU): the evaluator then gathers the features only and
    #: hands over ``history_vectors=None``.
    needs_history_vectors: bool = True
    #: True when the news encoder's cost grows with each text's own length squared (self-attention
    #: over words: NRMS, FUM): ``encode_news_rows`` then groups news one length per group up to 16
    #: tokens, so no group encodes padding. Measured on one thread, mlsmall_mind: NRMS's training
    #: step -7%, FUM's -3 to -8%; for the CNN encoders more, smaller groups cost more than the
    #: padding they save (LSTUR +5%, DKN +30%, NAML even), so they keep groups of 4, 8, 16, ... tokens.
    exact_length_groups: bool = False
    #: On the CPU the evaluator runs the user side for at most this many users at a time (None: a
    #: whole evaluation batch at once). NRMS gathers [users, 50, 1,200] click features (61 MB for
    #: 256 users): 32 at a time stay in the CPU caches (mlsmall_mind dev, one thread: 3,156 -> 3,823
    #: impressions/s); LSTUR, GRU, NAML, FUM, DKN and NPA were as fast or faster in whole batches
    #: of 256 than of 64 or 32 (a recurrence steps all users together; FUM's u^f projects each
    #: distinct token of a batch once, and its u^c takes ``CPU_COARSE_USERS`` at a time itself).
    cpu_users_per_pass: int | None = None
    #: Set by the trainer under DDP (``train.share_news``): the ranks split each batch's distinct news
    #: between them (``encode_shared``) instead of each encoding all of its own share's.
    news_sharing: NewsSharing | None = None

    @classmethod
    def adapt_config(cls, config, context: ModelContext, table=None) -> list[str]:
        """Fit ``config`` (the model's config dataclass) to the data before the model is built, e.g.
        switch off a view or channel the data cannot feed or take the dimension of pretrained
        vectors; ``table`` is the training split's ``NewsTable`` when the caller has it. Returns
        one line per change for the trainer to log. The trainer saves the adapted config, so a
        checkpoint rebuilds the same layers without the data. Default: nothing to adapt."""
        return []

    def parameter_groups(self, lr: float) -> list[dict]:
        """The optimizer's parameter groups: every trainable parameter at ``lr``, except the tuned PLM
        layers (``plm_tune_last``) at ``plm_lr`` when it is set (pretrained layers usually want a
        smaller rate than freshly initialised ones)."""
        encoder = getattr(self, "plm_encoder", None)
        plm_lr = getattr(getattr(self, "config", None), "plm_lr", 0.0)
        trainable = [p for p in self.parameters() if p.requires_grad]
        if encoder is None or not encoder.tune_last or not plm_lr:
            return [{"params": trainable, "lr": lr}]
        tuned = {id(p) for p in encoder.layers.parameters()}
        return [{"params": [p for p in trainable if id(p) not in tuned], "lr": lr},
                {"params": [p for p in trainable if id(p) in tuned], "lr": plm_lr}]

    def text_fields(self) -> tuple[str, ...]:
        """The token columns of ``NewsFeatures`` the news encoder reads; ``encode_news_rows`` groups
        news by the longest of them. Models that read the abstract too say so."""
        return ("title",)

    def word_views(self) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
        """{text field: view}: the news encoder's views that read one ``text_fields`` column's word
        ids alone ([N, L] -> [N, Dv]). When there are several, ``encode_news_rows`` runs each in
        evaluation in groups of its own text length and hands the results to ``encode_news(news,
        users, texts={field: [N, Dv]})``, which must then take them instead of running the views.
        Empty (the default): the news encoder runs whole, grouped by its longest text."""
        return {}

    def on_word_ids(self, view: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
                    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """A ``word_views`` entry: ``view(embedded, mask)`` over the model's word table ``self.words``,
        as a function of word ids [N, L]."""
        return lambda ids: view(self.words(ids), ids != PAD)

    def encode_news(self, news: NewsFeatures, users: torch.Tensor | None = None) -> torch.Tensor:
        """[N, D] vectors of the given news items; ``users`` [N] only for user-conditioned models."""
        raise NotImplementedError

    def encode_user(self, user: UserInputs) -> torch.Tensor:
        """[B, D] user vectors; depend on the history only, never on the candidates."""
        raise NotImplementedError

    def history_features(self, vectors: torch.Tensor) -> torch.Tensor | None:
        """[N, F] what the user side computes from each clicked news vector [N, D] alone, before
        anything mixes clicks or reads the user (NRMS: the self-attention's queries, keys and values;
        NAML: the attention pooling's score), or None (default) when there is nothing such.

        The trainer computes it once per distinct news item of a batch and the evaluator once per
        news item of the split, instead of once per history slot of every impression, and hands it
        over as ``UserInputs.history_features``; ``encode_user`` / ``score_candidates`` use it when
        given and compute the same from ``history_vectors`` otherwise (a test checks both agree)."""
        return None

    def features_of(self, user: UserInputs) -> torch.Tensor:
        """[B, H, F] ``user.history_features``, their rows of ``user.feature_table``, or this model's
        ``history_features`` of its vectors."""
        if user.history_features is not None:
            return user.history_features
        if user.feature_table is not None:
            return gather_rows(user.feature_table, user.history)  # [B, H, F]
        b, h, d = user.history_vectors.shape
        return self.history_features(user.history_vectors.reshape(b * h, d)).view(b, h, -1)

    def row_lengths(self, news: NewsFeatures, rows: torch.Tensor) -> torch.Tensor:
        """[R] what ``encode_news_rows`` groups the rows by: the longest of the model's ``text_fields``
        in words or, when the model trains PLM layers (``plm_tune_last``), the PLM tokens of its PLM
        views, since those layers are nearly all of the work."""
        encoder = getattr(self, "plm_encoder", None)
        if encoder is not None and encoder.tune_last:
            tokens = [t for t in (news.plm_tokens, news.plm_body_tokens) if t is not None]
            if tokens:
                lengths = torch.stack([t.offsets[rows + 1] - t.offsets[rows] for t in tokens])
                return lengths.max(dim=0).values  # [R]
        lengths = torch.stack([(getattr(news, name)[rows] != PAD).sum(dim=1) for name in self.text_fields()])
        return lengths.max(dim=0).values  # [R]

    def encode_news_rows(
        self,
        news: NewsFeatures,
        rows: torch.Tensor,
        max_batch: int | None = None,
        users: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """[len(rows), D] vectors of the given rows of a news table, encoded in groups of similar
        text length (the longest of the model's ``text_fields``; groups of :func:`length_bounds`),
        each group cut to its own width.

        Real titles are mostly short with a long tail: one 30-word title would otherwise make a
        whole batch 30 wide (5x the work on MovieLens titles). Masking makes the cut exact.

        In evaluation (no gradients) a model with several ``word_views`` (FUM, NAML: title and
        abstract) runs each view in groups of its own text length, then the rest of the encoder
        ``max_batch`` rows at a time: grouped by the longer text, a third of the title slots of
        mlsmall_mind were padding. Training keeps one grouping, whose groups share one lookup gather.
        """
        users_of = (lambda picked: None) if users is None else (lambda picked: users[picked])
        views = {} if self.training or torch.is_grad_enabled() else self.word_views()
        if len(views) > 1 and len(rows):
            texts = {field: self._word_view_rows(view, getattr(news, field).index_select(0, rows), max_batch)
                     for field, view in views.items()}  # each [R, Dv]
            step = max_batch or len(rows)
            return torch.cat([self.encode_news(news.take(rows[lo : lo + step]), users_of(slice(lo, lo + step)),
                                               texts={field: x[lo : lo + step] for field, x in texts.items()})
                              for lo in range(0, len(rows), step)])  # [R, D]
        with self.gathered_lookups(news, rows):
            return self.in_length_groups(self.row_lengths(news, rows), max_batch,
                                         lambda picked: self.encode_news(news.take(rows[picked]), users_of(picked)))

    def _word_view_rows(self, view: Callable[[torch.Tensor], torch.Tensor], ids: torch.Tensor,
                        max_batch: int | None) -> torch.Tensor:
        """[R, Dv] ``view`` of word ids [R, L], in groups of similar length, each cut to its longest text."""
        return self.in_length_groups((ids != PAD).sum(dim=1), max_batch,
                                     lambda picked: view(cut_padding(ids[picked])))  # [r, Dv] per group

    def in_length_groups(self, lengths: torch.Tensor, max_batch: int | None,
                         encode: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor | None:
        """[R, D] ``encode(picked)`` of positions 0..R-1, called on groups of similar ``lengths`` [R]
        (``length_group_ends``; at most ``max_batch`` positions each) and put back in position order;
        None for R = 0. ``encode`` maps [r] positions to their [r, D] vectors."""
        order = torch.argsort(lengths, stable=True)  # [R]
        ends = self.length_group_ends(lengths[order])
        parts, start = [], 0
        for end in ends:
            step = max_batch or max(end - start, 1)
            for lo in range(start, end, step):
                parts.append(encode(order[lo : min(end, lo + step)]))
            start = end
        if not parts:
            return None
        # The groups' vectors stacked in length order, then put back in row order by one gather
        # (writing each group into a [R, D] result instead made its backward copy [R, D] per group).
        stacked = torch.cat([part.to(parts[0].dtype) for part in parts])  # [R, D] (autocast may vary a group's dtype)
        position = torch.empty_like(order)  # [R]: where each row's vector sits in ``stacked``
        position[order] = torch.arange(len(order), device=order.device)
        return stacked.index_select(0, position)  # [R, D]

    def length_group_ends(self, ordered: torch.Tensor) -> list[int]:
        """Where each of ``encode_news_rows``' length groups ends (exclusive, the last one
        ``len(ordered)``; some groups may be empty) among text lengths sorted ascending [R]."""
        longest = int(ordered[-1]) if len(ordered) else 1
        bounds = torch.tensor(length_bounds(longest, self.exact_length_groups), device=ordered.device)
        return torch.searchsorted(ordered, bounds, right=True).tolist() + [len(ordered)]

    def lookup_fields(self) -> dict[str, tuple[str, ...]]:
        """The ``NewsFeatures`` token columns whose ids the model's ``LookupTable`` s of each kind read
        while training: words from the ``text_fields``, entities from ``news.entities``. A model whose
        tables read other columns (DKN's entities per title word, FUM's u^f tokens) says so: under
        DDP with news sharing these are the only rows of a table the ranks exchange gradients of."""
        return {"words": self.text_fields(), "entities": ("entities",)}

    def lookup_ids(self, news: NewsFeatures, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """{kind: [N] long} the ids of news ``rows`` in the ``lookup_fields`` of each kind (with repeats)."""
        ids = {}
        for kind, names in self.lookup_fields().items():
            columns = [getattr(news, name) for name in names]
            columns = [column[rows].reshape(-1) for column in columns if column is not None]
            if columns:
                ids[kind] = torch.cat(columns)
        return ids

    @contextmanager
    def gathered_lookups(self, news: NewsFeatures, rows: torch.Tensor) -> Iterator[None]:
        """While training, every trainable ``LookupTable`` of the model gathers the ids of news ``rows``
        once (``lookup_ids``), so that the length groups' lookups make one dense table gradient, not
        one each. Without gradients nothing changes."""
        tables = [] if not torch.is_grad_enabled() else [
            m for m in self.modules() if isinstance(m, LookupTable) and m.weight.requires_grad]
        with ExitStack() as stack:
            if tables:
                ids = self.lookup_ids(news, rows)
                for table in tables:
                    if table.kind in ids:
                        stack.enter_context(table.gathered(ids[table.kind]))
            yield

    def declare_table_rows(self, news: NewsFeatures, rows: torch.Tensor) -> None:
        """Under DDP with news sharing: tell each lookup table that is averaged by rows (``row_sync``,
        set by ``data_parallel``) which of its rows this step may touch on any rank, the ids of the
        whole batch's distinct news ``rows`` (the same on every rank), so that it sends those rows
        without looking for them. A lookup outside them is an error (``LookupTable.forward``)."""
        tables = [m for m in self.modules() if isinstance(m, LookupTable) and m.row_sync is not None]
        if tables:
            ids = self.lookup_ids(news, rows)
            for table in tables:
                if table.kind in ids:  # padding too: a model may pad ids after the table's gather
                    pad = ids[table.kind].new_tensor([PAD if table.padding_idx is None else table.padding_idx])
                    table.row_sync.declared = torch.unique(torch.cat([ids[table.kind], pad]))  # [R] sorted

    def encode_pairs(self, news: NewsFeatures, rows: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        """[R, D] vectors of news ``rows`` [R] as read by ``users`` [R], each distinct one encoded once.

        For ordinary models the user is irrelevant and only distinct rows count; for
        user-conditioned ones each distinct (user, row) pair is encoded.
        """
        vectors, inverse = self.encode_distinct(news, rows, users)
        return vectors[inverse]

    def news_keys(self, news: NewsFeatures, rows: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        """[R] one integer per distinct news vector a batch needs: the row, or for user-conditioned
        models one per (user, row) pair."""
        return users * len(news) + rows if self.user_conditioned_news else rows

    def encode_keys(self, news: NewsFeatures, keys: torch.Tensor) -> torch.Tensor:
        """[K, D] vectors of ``news_keys`` ``keys`` [K]."""
        if not self.user_conditioned_news:
            return self.encode_news_rows(news, keys)
        return self.encode_news_rows(news, keys % len(news), users=keys // len(news))

    def encode_distinct(self, news: NewsFeatures, rows: torch.Tensor, users: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """([U, D] vectors of the distinct (news, or for user-conditioned models (user, news)) keys
        among ``rows`` [R] read by ``users`` [R], [R] index of each row's key)."""
        unique, inverse = torch.unique(self.news_keys(news, rows, users), return_inverse=True)
        return self.encode_keys(news, unique), inverse

    def encode_shared(self, news: NewsFeatures, rows: torch.Tensor, users: torch.Tensor, batch: TrainBatch
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """``encode_distinct`` under DDP with ``news_sharing``: the distinct keys of the whole batch
        (every rank's share), each encoded by one rank and sent to the ranks that read it. Returns
        [N, D] vectors of the keys this rank reads and [R] the index of each of its ``rows`` among them."""
        sharing = self.news_sharing
        unique, slot_items = torch.unique(self.news_keys(news, batch.batch_rows, batch.batch_readers),
                                          return_inverse=True)  # [U] sorted, [R] each slot's item
        lengths = self.row_lengths(news, unique % len(news))  # [U]
        order = torch.argsort(lengths, stable=True)  # [U]
        ordered = lengths[order]  # [U]
        # Estimated cost in units of ~16 us (NRMS, one thread, forward + backward): (title length + 1)
        # per item, and 100 per length group, carried by its first item (1-1.6 ms a group: alone, a
        # group measured ~1 ms; 100 evened the two ranks' encoding, 27.8 / 28.1 ms, where 64 gave 26.9 / 29.4).
        opens = torch.zeros_like(ordered, dtype=torch.bool)  # [U] True at the first item of each length group
        starts = [0, *self.length_group_ends(ordered)[:-1]]  # empty groups repeat the next one's start
        opens[[start for start in starts if start < len(ordered)]] = True
        cuts = sharing.cuts((ordered + 1 + 100 * opens).to(torch.float64))
        self.declare_table_rows(news, unique % len(news))
        share = self.encode_keys(news, unique[order[cuts[sharing.rank] : cuts[sharing.rank + 1]]])  # [S, D]
        needed = [torch.unique(slot_items[batch.batch_ranks == r]) for r in range(sharing.size)]  # items each rank reads
        vectors, row = sharing.exchange(share, order, cuts, needed)  # [N, D], [U]
        return vectors, row[torch.searchsorted(unique, self.news_keys(news, rows, users))]

    def candidate_features(self, vectors: torch.Tensor) -> torch.Tensor | None:
        """[..., F] what a candidate-aware model's scoring computes from each candidate news vector
        [..., D] alone (DKN: the candidate halves of its attention's and its DNN's first layers), or
        None (default). The evaluator computes it once per news item of the split and hands each
        batch's rows to ``score_candidates`` as ``candidate_features``; without them the model
        computes the same from the candidates' vectors (a test checks both agree)."""
        return None

    def score_candidates(
        self, user: UserInputs, candidates: torch.Tensor, mask: torch.Tensor | None = None, *,
        candidate_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scores [B, C] of candidates [B, C, D] (news vectors) for the impressions ``user`` describes;
        ``mask`` [B, C] bool marks real candidates (padding candidates may score anything; None = all
        real); ``candidate_features`` [B, C, F]: ``candidate_features`` of the candidates, or None.
        Cacheable models keep this default; candidate-aware models override it, and a candidate's
        score must not depend on the other candidates of its impression."""
        return self.score(self.encode_user(user), candidates)

    def score(self, users: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Raw dot products [B, C] of users [B, D] and candidates [B, C, D].

        Training applies a softmax over them; evaluation ranks by them directly (no sigmoid, so
        the fast and the one-at-a-time paths give the very same numbers).
        """
        return torch.einsum("bd,bcd->bc", users, candidates)

    def forward(self, batch: TrainBatch, news: NewsFeatures) -> torch.Tensor:
        """Logits [B, 1 + npratio] of a training batch over the split's news table ``news``."""
        b, h = batch.history.shape
        c = batch.candidates.shape[1]
        rows = torch.cat([batch.history.reshape(-1), batch.candidates.reshape(-1)])  # [B*H + B*C]
        readers = torch.cat([batch.users.repeat_interleave(h), batch.users.repeat_interleave(c)])  # [B*H + B*C]
        if self.news_sharing is not None and batch.batch_rows is not None:  # DDP: each rank encodes a share
            distinct, inverse = self.encode_shared(news, rows, readers, batch)  # [U, D], [B*H + B*C]
        else:
            distinct, inverse = self.encode_distinct(news, rows, readers)  # [U, D], [B*H + B*C]
        # index_select, not indexing: its backward (index_add_) is ~1.5x faster than index_put_'s.
        candidate_vectors = distinct.index_select(0, inverse[b * h :]).view(b, c, -1)  # [B, C, D]
        clicked, slot = torch.unique(inverse[: b * h], return_inverse=True)  # distinct clicked news, [B*H]
        features = self.history_features(distinct.index_select(0, clicked))  # [U', F] once per distinct clicked news, or None
        history_vectors = None  # as in evaluation: the user side reads the features only
        if features is not None:
            features = features.index_select(0, slot).view(b, h, -1)  # [B, H, F]
        if features is None or self.needs_history_vectors:
            history_vectors = distinct.index_select(0, inverse[: b * h]).view(b, h, -1)  # [B, H, D]
        user = UserInputs(batch.history, batch.history_mask, history_vectors, batch.users, news, features)
        return self.score_candidates(user, candidate_vectors)
