"""Typed batches and the training sampler (one click + ``npratio`` sampled non-clicks).

Training samples follow Microsoft Recommenders / the NRMS paper: every click of an impression is
one sample, paired with ``npratio`` non-clicks drawn from the same impression, without replacement
when the impression has enough of them and cycling through a random order of the ones it has when
it has fewer. A click whose impression has no non-click at all cannot be contrasted with anything;
such samples are left out and counted (``TrainSampler.dropped``), and the trainer logs the count.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Iterator

import numpy as np
import torch

from .dataset import Behaviors, NewsTable
from .vocab import PAD


@dataclass
class TokenStates:
    """Variable-length token states of a set of news items (``news_encoder: plm`` with
    ``plm_tune_last``): every item's tokens one after the other, so short titles cost no padding."""

    states: torch.Tensor  # [T, P] float (float32 or float16), no gradient: computed once, cached
    offsets: torch.Tensor  # [N + 1] long: item r's tokens are states[offsets[r] : offsets[r + 1]]

    def __len__(self) -> int:
        return self.offsets.shape[0] - 1

    def _index(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        starts = self.offsets[rows]  # [R]
        lengths = self.offsets[rows + 1] - starts  # [R]
        width = max(int(lengths.max()) if len(rows) else 0, 1)
        positions = torch.arange(width, device=rows.device)  # [W]
        mask = positions < lengths.unsqueeze(1)  # [R, W]
        index = torch.where(mask, starts.unsqueeze(1) + positions, 0)  # [R, W]
        return index, mask

    def take(self, rows: torch.Tensor) -> "TokenStates":
        index, mask = self._index(rows)
        lengths = mask.sum(1)  # [R]
        offsets = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)])  # [R + 1]
        return TokenStates(self.states[index[mask]], offsets)

    def padded(self, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """([N, W, P] states right-padded with zeros to the longest item's W tokens, [N, W] bool mask)."""
        index, mask = self._index(torch.arange(len(self), device=self.offsets.device))
        if self.states.shape[0] == 0:  # only padding rows / absent news: nothing to gather from
            return self.states.new_zeros((*index.shape, self.states.shape[1]), dtype=dtype), mask
        states = self.states[index].to(dtype) * mask.unsqueeze(-1)  # [N, W, P]
        return states, mask


@dataclass
class NewsFeatures:
    """Token tensors of a set of news items (a whole split's table, or the rows a batch needs)."""

    title: torch.Tensor  # [N, Lt] long, right-padded with PAD
    abstract: torch.Tensor  # [N, La] long
    category: torch.Tensor  # [N] long
    subcategory: torch.Tensor  # [N] long
    # [N, Le] long entity indices, right-padded with PAD; None for features built without them
    # (a model that reads entities then sees none)
    entities: torch.Tensor | None = None
    # [N, Lt] long entity index of each title word (PAD where none); None when built without it.
    # ``take`` cuts it to its own width (never wider than the title's): pad it to the title's to align.
    title_word_entities: torch.Tensor | None = None
    # [N, P] float frozen PLM title vectors (``NewsTable.plm``); None unless news_encoder=plm
    plm: torch.Tensor | None = None
    # the PLM's lower-layer token states (``NewsTable.plm_states``); None unless plm_tune_last > 0
    plm_tokens: TokenStates | None = None
    # the same two for the abstract (NAML's body view with plm_views: title,body)
    plm_body: torch.Tensor | None = None
    plm_body_tokens: TokenStates | None = None

    @classmethod
    def from_table(cls, table: NewsTable, device: torch.device | str = "cpu") -> "NewsFeatures":
        def vectors(array):
            return None if array is None else torch.as_tensor(np.asarray(array, dtype=np.float32), device=device)

        def tokens(states, offsets):
            if states is None:
                return None
            return TokenStates(torch.as_tensor(np.asarray(states), device=device),
                               torch.as_tensor(np.asarray(offsets, dtype=np.int64), device=device))

        return cls(**{
            f.name: torch.as_tensor(np.array(getattr(table, f.name), dtype=np.int64), device=device)
            for f in fields(cls) if not f.name.startswith("plm")
        }, plm=vectors(table.plm), plm_tokens=tokens(table.plm_states, table.plm_offsets),
            plm_body=vectors(table.plm_body), plm_body_tokens=tokens(table.plm_body_states, table.plm_body_offsets))

    def __len__(self) -> int:
        return self.title.shape[0]

    def take(self, rows: torch.Tensor) -> "NewsFeatures":
        """The given rows, with token columns cut to the longest non-padding text among them.

        Cutting is exact because every attention masks padding; it is the main saving on short
        titles (MovieLens titles have ~5 words of the 30 kept).
        """
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                out[f.name] = None
                continue
            if isinstance(value, TokenStates):
                out[f.name] = value.take(rows)
                continue
            value = value[rows]
            if value.dim() == 2 and not value.is_floating_point():  # token columns; PLM vectors stay whole
                value = cut_padding(value)
            out[f.name] = value
        return NewsFeatures(**out)


def cut_padding(tokens: torch.Tensor) -> torch.Tensor:
    """Right-padded token ids [..., L] cut to [..., W]: up to the last column any row uses (at least
    one column). Exact wherever padding is masked."""
    used = (tokens != PAD).reshape(-1, tokens.shape[-1]).any(dim=0).nonzero()
    return tokens[..., : int(used.max()) + 1 if len(used) else 1]


def gather_rows(table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """[*rows.shape, F] rows of ``table`` [N, F] (``index_select``: faster than ``table[rows]``)."""
    return table.index_select(0, rows.reshape(-1)).view(*rows.shape, table.shape[-1])


@dataclass
class UserInputs:
    """Everything a user encoder may look at for a batch of impressions."""

    history: torch.Tensor  # [B, H] long news rows, left-padded with 0
    history_mask: torch.Tensor  # [B, H] bool, True = a real click
    history_vectors: torch.Tensor | None  # [B, H, D] news vectors of the clicks (None: see needs_history_vectors)
    users: torch.Tensor  # [B] long user-vocabulary index (UNK = unseen in training)
    news: NewsFeatures  # the split's whole news table, for encoders that read clicked tokens
    # [B, H, F] the model's ``history_features`` of the clicks' vectors, computed once per distinct
    # news item by the trainer and once per news of the split by the evaluator; None: not given,
    # the model computes them from ``history_vectors`` itself (the two are equal)
    history_features: torch.Tensor | None = None
    # [N, F] the same features of every news item of the split (the evaluator's cache), given
    # instead of ``history_features``: the model gathers its clicks' rows when it reads them
    # (``NewsRecModel.features_of``), so it can gather a few users at a time, in the CPU caches
    feature_table: torch.Tensor | None = None

    def take(self, rows: torch.Tensor | slice) -> "UserInputs":
        """The given impressions (rows of the batch); the news table and feature table are shared."""
        features = None if self.history_features is None else self.history_features[rows]
        vectors = None if self.history_vectors is None else self.history_vectors[rows]
        return UserInputs(self.history[rows], self.history_mask[rows], vectors, self.users[rows], self.news, features,
                          self.feature_table)


@dataclass
class TrainBatch:
    history: torch.Tensor  # [B, H] long news rows, left-padded with 0
    candidates: torch.Tensor  # [B, 1 + npratio] long news rows; column 0 is the click
    users: torch.Tensor  # [B] long
    # Under several processes (``TrainSampler.epoch`` with world > 1) this rank's batch is its share
    # of a whole batch; these are the whole batch's news slots (every rank's history, then every
    # rank's candidates), their readers and the rank whose share holds each slot, so that the ranks
    # can split its distinct news between them (``NewsSharing``). None in a single process.
    batch_rows: torch.Tensor | None = None  # [R] long
    batch_readers: torch.Tensor | None = None  # [R] long
    batch_ranks: torch.Tensor | None = None  # [R] long

    @property
    def history_mask(self) -> torch.Tensor:
        return self.history != PAD  # [B, H] bool

    def to(self, device: torch.device | str) -> "TrainBatch":
        moved = (getattr(self, f.name) for f in fields(self))
        return TrainBatch(*(None if t is None else t.to(device, non_blocking=True) for t in moved))


class TrainSampler:
    """Yields shuffled :class:`TrainBatch` es, re-sampling non-clicks every epoch."""

    def __init__(self, behaviors: Behaviors, npratio: int, batch_size: int, seed: int):
        if npratio < 1:
            raise ValueError(f"npratio must be >= 1, got {npratio}")
        labels = np.asarray(behaviors.labels)
        if (labels < 0).any():
            raise ValueError("the training split has unlabelled impressions")
        offsets = np.asarray(behaviors.offsets)
        self.behaviors = behaviors
        self.npratio, self.batch_size, self.seed = npratio, batch_size, seed
        impression_of = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))  # [T]
        # Non-clicks of impression i: self.neg_rows[self.neg_offsets[i]:self.neg_offsets[i + 1]].
        negative = labels == 0
        self.neg_rows = np.asarray(behaviors.candidates)[negative].astype(np.int64)
        self.neg_offsets = np.zeros(len(offsets), dtype=np.int64)
        np.cumsum(np.bincount(impression_of[negative], minlength=len(offsets) - 1), out=self.neg_offsets[1:])
        clicks = np.flatnonzero(labels == 1)
        click_impression = impression_of[clicks]
        usable = np.diff(self.neg_offsets)[click_impression] > 0
        self.dropped = int((~usable).sum())  # clicks with no non-click to contrast
        self.click_rows = np.asarray(behaviors.candidates)[clicks[usable]].astype(np.int64)  # [S]
        self.click_impressions = click_impression[usable]  # [S]

    def __len__(self) -> int:
        return -(-len(self.click_rows) // self.batch_size)

    @property
    def samples(self) -> int:
        return len(self.click_rows)

    def _negatives(self, impressions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        start = self.neg_offsets[impressions]  # [B]
        count = self.neg_offsets[impressions + 1] - start  # [B], all >= 1
        # A random order of each impression's non-clicks: random keys, padding slots sort last.
        keys = rng.random((len(impressions), int(count.max())))  # [B, maxneg]
        keys[np.arange(keys.shape[1])[None, :] >= count[:, None]] = np.inf
        order = np.argsort(keys, axis=1)  # [B, maxneg]
        # Take the first npratio of that order, cycling when an impression has fewer.
        pick = order[np.arange(len(impressions))[:, None], np.arange(self.npratio)[None, :] % count[:, None]]
        return self.neg_rows[start[:, None] + pick]  # [B, npratio]

    def epoch(self, epoch: int, rank: int = 0, world: int = 1) -> Iterator[TrainBatch]:
        """The epoch's batches, the same for every seed and epoch. With ``world`` > 1 processes, rank
        ``rank`` gets its share (rows ``rank::world``) of every batch: all ranks draw the same
        batches (the same generator), so together they train on exactly the single process's
        samples; a last batch smaller than ``world`` is left out, so every rank steps equally often."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.click_rows))
        history = self.behaviors.history
        users = self.behaviors.users
        for lo in range(0, len(order), self.batch_size):
            picked = order[lo : lo + self.batch_size]
            impressions = self.click_impressions[picked]  # [B]
            candidates = np.concatenate(
                [self.click_rows[picked][:, None], self._negatives(impressions, rng)], axis=1
            )  # [B, 1 + npratio]
            clicked = np.asarray(history[impressions], dtype=np.int64)  # [B, H]
            readers = np.asarray(users[impressions], dtype=np.int64)  # [B]
            batch_rows = batch_readers = batch_ranks = None
            if world > 1:
                if len(picked) < world:
                    break
                batch_rows = torch.from_numpy(np.concatenate([clicked.ravel(), candidates.ravel()]))  # [B*H + B*C]
                batch_readers = torch.from_numpy(np.concatenate([readers.repeat(clicked.shape[1]),
                                                                 readers.repeat(candidates.shape[1])]))
                share_of = np.arange(len(picked)) % world  # [B]: impression i goes to rank i % world
                batch_ranks = torch.from_numpy(np.concatenate([share_of.repeat(clicked.shape[1]),
                                                               share_of.repeat(candidates.shape[1])]))
                clicked, candidates, readers = clicked[rank::world], candidates[rank::world], readers[rank::world]
            yield TrainBatch(
                history=torch.from_numpy(np.ascontiguousarray(clicked)),
                candidates=torch.from_numpy(np.ascontiguousarray(candidates)),
                users=torch.from_numpy(np.ascontiguousarray(readers)),
                batch_rows=batch_rows,
                batch_readers=batch_readers,
                batch_ranks=batch_ranks,
            )
