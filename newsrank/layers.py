"""Building blocks shared by the models. Every attention takes a padding mask (True = real).

A sequence whose positions are all padding (an empty title, a user with no clicks) never yields
NaN: masked scores are filled with the dtype's most negative finite value, so such a row attends
uniformly over its padding positions and gives a finite, deterministic result.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn


def masked_fill_min(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``scores`` with masked-out (False) positions set to the most negative finite value."""
    if mask is None:
        return scores
    return scores.masked_fill(~mask, torch.finfo(scores.dtype).min)


def segment_softmax(scores: torch.Tensor, segment: torch.Tensor, segments: int) -> torch.Tensor:
    """Softmax of ``scores`` [N, ...] within each group of rows sharing a ``segment`` id [N] in
    0..segments-1 (variable-length groups, no padding). Each group's weights sum to 1."""
    index = segment.view(-1, *([1] * (scores.dim() - 1))).expand_as(scores)
    with torch.no_grad():  # the shift only keeps exp() finite; the softmax does not depend on it
        top = scores.new_full((segments, *scores.shape[1:]), float("-inf"))
        top = top.scatter_reduce(0, index, scores, "amax")[segment]  # [N, ...]
    e = torch.exp(scores - top)  # [N, ...]
    total = e.new_zeros((segments, *scores.shape[1:])).index_add(0, segment, e)  # [S, ...]
    return e / total[segment]


def segment_weighted_sum(counts: torch.Tensor, rows: torch.Tensor, weights: torch.Tensor,
                         table: torch.Tensor) -> torch.Tensor:
    """[S, m] sums, for each segment s, of ``weights`` [N] times rows ``table[rows]`` [N, m] of its
    entries: the N entries are in segment order, ``counts`` [S] of them per segment (rows may repeat).

    On the CPU without autograd, one sparse [S, R] x [R, m] product (CSR): the [N, m] gathered rows
    are never formed, which costs a tenth of gather, multiply and ``index_add`` (FUM's per-news
    pooling in evaluation: 0.07 against 0.68 ms for ~8k entries of 40 floats). Otherwise the gather
    (torch's CSR backward does not take repeated rows within a segment; on a GPU the gather is what
    was measured).
    """
    # at least fp32 (bf16 under autocast: CSR products have no bf16 kernel, and the sums gain precision)
    dtype = torch.promote_types(torch.promote_types(weights.dtype, table.dtype), torch.float32)
    if table.device.type != "cpu" or (torch.is_grad_enabled() and (weights.requires_grad or table.requires_grad)):
        segment = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)  # [N]
        weighted = weights.to(dtype)[:, None] * table.index_select(0, rows).to(dtype)  # [N, m]
        return weighted.new_zeros(len(counts), table.shape[1]).index_add(0, segment, weighted)
    crow = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])  # [S + 1]
    with warnings.catch_warnings():  # torch flags CSR support as beta once per process; the product is exact
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        matrix = torch.sparse_csr_tensor(crow, rows, weights.to(dtype), size=(len(counts), len(table)),
                                         check_invariants=False)
    with torch.autocast(table.device.type, enabled=False):  # (autocast would cast it to bf16, which CSR lacks)
        return torch.sparse.mm(matrix, table.to(dtype))  # [S, m]


class LookupTable(nn.Embedding):
    """An embedding table (words, entities) whose lookups can share one gather per training batch.

    ``encode_news_rows`` encodes a batch's news in groups of one text length, each group looking
    its tokens up here. A plain ``nn.Embedding`` then builds one dense [vocabulary, dim] gradient per
    group in the backward pass, zero-filled and added up (NRMS on mlsmall_mind's 10,098 x 50 table:
    17 of them a step, ~4 ms of ~150; with MIND's vocabulary and 300-d vectors each one is ~40 MB).
    Inside ``gathered(ids)`` the rows of ``ids`` are looked up once and every lookup reads that
    [U, dim] block instead, so the backward pass builds the dense gradient once. The values and
    gradients are the same (up to the order of float sums); ids outside the block fall back to a
    plain lookup. ``kind`` says which of a batch's ids a caller should pass ("words" or "entities").
    """

    kind: str = "words"
    _block: tuple[torch.Tensor, torch.Tensor] | None = None  # ([U, dim] rows, [vocabulary] long position or -1)
    # under DDP, when the table's gradient is averaged by rows (``core.distributed.data_parallel``):
    # its hook, whose ``declared`` rows (set by the model each step) bound what a lookup may read
    row_sync = None

    @contextmanager
    def gathered(self, ids: torch.Tensor) -> Iterator[None]:
        unique = torch.unique(ids)  # [U]
        position = torch.full((self.num_embeddings,), -1, dtype=torch.long, device=unique.device)  # [V]
        position[unique] = torch.arange(len(unique), device=unique.device)
        self._block = (F.embedding(unique, self.weight, self.padding_idx), position)  # [U, dim]
        try:
            yield
        finally:
            self._block = None

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self._block is not None:
            rows, position = self._block
            local = position[ids]
            if not len(local) or int(local.min()) >= 0:
                return F.embedding(local, rows)  # [..., dim]
        declared = None if self.row_sync is None else self.row_sync.declared
        if declared is not None and torch.is_grad_enabled() and not bool(torch.isin(ids, declared).all()):
            # the ranks would average only the declared rows: the others' updates would differ per rank
            raise RuntimeError(f"a {self.kind} lookup reads rows outside those declared for this step: the "
                               "model's lookup_fields must name every news column its tables read")
        return super().forward(ids)


class AdditiveAttention(nn.Module):
    """Attention pooling: a_i = q . tanh(W x_i + b), weights = softmax(a), output = sum_i w_i x_i."""

    def __init__(self, in_dim: int, hidden_dim: int):
        super().__init__()
        self.proj = nn.Linear(in_dim, hidden_dim)
        self.query = nn.Linear(hidden_dim, 1, bias=False)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Unnormalised attention scores a [...] of vectors x [..., in_dim] (for pooling over
        irregular groups, e.g. FUM's tokens per clicked news)."""
        return self.query(torch.tanh(self.proj(x))).squeeze(-1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, scores: torch.Tensor | None = None
                ) -> torch.Tensor:
        # x: [..., L, in_dim], mask: [..., L] bool; scores [..., L]: ``scores(x)`` when the caller has them
        scores = self.scores(x) if scores is None else scores  # [..., L]
        weights = torch.softmax(masked_fill_min(scores, mask), dim=-1)  # [..., L]
        return torch.einsum("...l,...ld->...d", weights, x)  # [..., in_dim]


class MultiHeadSelfAttention(nn.Module):
    """Scaled dot-product self-attention with ``heads`` heads of ``head_dim``; output concatenates
    the heads (``heads * head_dim``), without an output projection, as in NRMS."""

    def __init__(self, in_dim: int, heads: int, head_dim: int):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.qkv = nn.Linear(in_dim, 3 * heads * head_dim, bias=False)

    @property
    def out_dim(self) -> int:
        return self.heads * self.head_dim

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        # x: [B, L, in_dim], mask: [B, L] bool (True = real position; keys that are False are ignored)
        b, length, _ = x.shape
        # Q, K and V each by its own third of the weight (not one product split afterwards): the
        # attention's backward then hands back gradients this layout takes without the copy that
        # re-assembles one [B, L, 3, heads, head_dim] gradient (-3 to -7% of this layer's forward +
        # backward on 3-50 words, one thread).
        q, k, v = (F.linear(x, w).view(b, length, self.heads, self.head_dim).transpose(1, 2)
                   for w in self.qkv.weight.chunk(3))  # each [B, heads, L, head_dim]
        return self._attention(q, k, v, mask)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """[..., 3 * heads * head_dim] the queries, keys and values of vectors x [..., in_dim]: a
        position-free map of each vector alone, so a caller may compute it once per distinct input
        (NRMS's user encoder: once per news item) and hand the result to ``attend``."""
        return self.qkv(x)

    def attend(self, qkv: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """[B, L, heads * head_dim] self-attention from projected inputs qkv [B, L, 3 * heads * head_dim]."""
        b, length, _ = qkv.shape
        # Unbinding the middle axis and swapping two axes (not one 5-d permute) lets the backward
        # assemble the Q/K/V gradients with fewer copies (~10% of this layer's forward + backward).
        q, k, v = (t.transpose(1, 2) for t in qkv.view(b, length, 3, self.heads, self.head_dim).unbind(2))  # each [B, heads, L, head_dim]
        return self._attention(q, k, v, mask)

    def _attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, _, length, _ = q.shape
        bias = None
        # No mask when nothing is padding (a group of one title length; users with full histories):
        # the unmasked kernel is 7-15% faster forward + backward (20 heads, 3-8 words, one thread).
        if mask is not None and not bool(mask.all()):
            bias = masked_fill_min(q.new_zeros(b, 1, 1, length), mask[:, None, None, :])  # [B, 1, 1, L]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # [B, heads, L, head_dim]
        return out.transpose(1, 2).reshape(b, length, self.out_dim)  # [B, L, heads * head_dim]


class TextCNN(nn.Module):
    """1-D convolution over word vectors ('same' padding) + ReLU, as the NPA/LSTUR/NAML news encoders.

    Padding tokens embed to zero, so a real position's output does not depend on how many padding
    positions follow the text (the convolution pads with zeros either way).
    """

    def __init__(self, in_dim: int, filters: int, window: int):
        super().__init__()
        if window % 2 != 1:
            raise ValueError(f"window must be odd for 'same' padding, got {window}")
        self.conv = nn.Conv1d(in_dim, filters, window, padding=window // 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        # x: [N, L, in_dim] -> [N, L, filters]; masked positions are zeroed before the convolution
        if mask is not None:
            x = x * mask.unsqueeze(-1).to(x.dtype)
        return torch.relu(self.conv(x.transpose(1, 2))).transpose(1, 2)


class PersonalizedAttention(nn.Module):
    """NPA's personalized attention pooling: a_i = q_u . tanh(W x_i + b), with a query q_u [B, hidden]
    that comes from the user instead of a learned constant."""

    def __init__(self, in_dim: int, hidden_dim: int):
        super().__init__()
        self.proj = nn.Linear(in_dim, hidden_dim)

    def forward(self, x: torch.Tensor, query: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        # x: [N, L, in_dim], query: [N, hidden], mask: [N, L] bool -> [N, in_dim]
        scores = torch.einsum("nlh,nh->nl", torch.tanh(self.proj(x)), query)  # [N, L]
        weights = torch.softmax(masked_fill_min(scores, mask), dim=-1)
        return torch.einsum("nl,nld->nd", weights, x)
