"""Fastformer: additive-attention self-attention with cost linear in the sequence length.

Wu, Wu, Qi, Huang, "Fastformer: Additive Attention Can Be All You Need", arXiv:2108.09084 (2021);
official code: https://github.com/wuch15/Fastformer (``Fastformer.ipynb``).

For one head of size d (each head uses its own slice of q, k, v and its own w_q, w_k), with
x_i the input at position i and M the set of real (unmasked) positions:

    q_i = W_q x_i + b_q,   k_i = W_k x_i + b_k,   v_i = W_v x_i + b_v          (split into heads)
    alpha_i = exp(w_q . q_i / sqrt(d)) / sum_{j in M} exp(w_q . q_j / sqrt(d))   (i in M, else 0)
    g_q     = sum_{i in M} alpha_i q_i                                          global query
    p_i     = g_q * k_i                                                         (element-wise)
    beta_i  = exp(w_k . p_i / sqrt(d)) / sum_{j in M} exp(w_k . p_j / sqrt(d))   (i in M, else 0)
    g_k     = sum_{i in M} beta_i p_i                                           global key
    u_i     = g_k * v_i                                                         (element-wise)
    out_i   = W_o [u_i over all heads] + b_o + q_i                              query residual

Every step is a per-position map or a weighted sum over positions, so time and memory are
O(B * L * dim): no [L, L] matrix is ever formed. ``project`` and ``global_key`` are public so that
a caller (FUM) can project each distinct input once and fold the output map into what follows.

Differences from the official code, and why:

* The official ``FastSelfAttention`` scores each head with ``Linear(all_heads, heads)``, i.e. the
  head-h score looks at the query/key vectors of *all* heads. We follow the paper: per-head
  vectors w_q, w_k (no bias: a constant added to every score cancels in the softmax).
* Value: the paper has its own projection v_i = W_v x_i + b_v (``value=True``, the default);
  the official Fastformer code and FUM's code use the query as the value ("query = value":
  u_i = g_k * q_i), which ``value=False`` gives (one projection fewer).
* ``in_dim`` may differ from ``dim`` (FUM maps 300-d word vectors to 120-d tokens), as the
  official layer allows: q, k, v and the residual all live in ``dim``.
* The official code masks with an additive -10000 and lets padding positions keep their (tiny)
  weight. Here masked scores are set to the dtype's most negative finite value
  (``masked_fill_min``), so a padding position's weight is exactly 0, and q_i and p_i are zeroed
  at padding positions before the pooling sums, so even non-finite junk in padding cannot leak
  into g_q / g_k. Hence the output at a real position does not depend on the contents or the
  number of padding positions. A row with no real position pools to g_q = g_k = 0 (finite,
  deterministic): its outputs are W_o 0 + b_o + q_i.
* Outputs at padding positions are finite but meaningless (they are not zeroed, as in
  ``layers.MultiHeadSelfAttention``); pool them away with the same mask downstream.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from newsrank.layers import masked_fill_min


class Fastformer(nn.Module):
    """One Fastformer self-attention layer: [B, L, dim] -> [B, L, dim] (equations in the module doc).

    ``dropout`` is applied to W_o u_i before the query residual is added (the sublayer output);
    ``attention_dropout`` to the pooling weights alpha and beta. Both default to 0.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, attention_dropout: float = 0.0,
                 in_dim: int | None = None, value: bool = True):
        super().__init__()
        if heads <= 0 or dim <= 0 or dim % heads != 0:
            raise ValueError(f"dim ({dim}) must be a positive multiple of heads ({heads})")
        self.dim, self.heads, self.head_dim = dim, heads, dim // heads
        in_dim = in_dim or dim
        self.query = nn.Linear(in_dim, dim)
        self.key = nn.Linear(in_dim, dim)
        self.value = nn.Linear(in_dim, dim) if value else None  # None: the query is the value
        # w_q, w_k: one scoring vector per head (the paper's additive attention vectors)
        self.query_att = nn.Parameter(torch.empty(heads, self.head_dim))
        self.key_att = nn.Parameter(torch.empty(heads, self.head_dim))
        self.transform = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)
        self.attention_dropout = nn.Dropout(attention_dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # same scale as a Linear(head_dim, 1) would get by default
        bound = 1.0 / math.sqrt(self.head_dim)
        nn.init.uniform_(self.query_att, -bound, bound)
        nn.init.uniform_(self.key_att, -bound, bound)

    def global_key(self, q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None,
                   padding_is_zero: bool = False, multiplicity: torch.Tensor | None = None) -> torch.Tensor:
        """g_k [B, H, d] of q, k [B, L, H, d]: the two additive-attention poolings.

        Uses g_k = sum_i beta_i (g_q * k_i) = g_q * sum_i beta_i k_i and w_k . (g_q * k_i) =
        (w_k * g_q) . k_i, so p_i is never formed: both poolings are batched matrix products.
        Padding positions get exactly zero weight, and q, k are zeroed there (unless the caller
        says they already are) so that 0 * (inf or NaN junk) cannot poison the sums.

        ``multiplicity`` [B, L] (> 0 at real positions): position i stands for that many equal
        inputs (a caller that keeps each distinct input of a sequence once, FUM in evaluation).
        Their softmax weights add up to m_i exp(s_i) / sum_j m_j exp(s_j), i.e. log m_i is added
        to each score: the same poolings as over the sequence with the repeats written out.
        """
        scale = math.sqrt(self.head_dim)
        if mask is not None and not padding_is_zero:
            q = q.masked_fill(~mask[:, :, None, None], 0.0)
            k = k.masked_fill(~mask[:, :, None, None], 0.0)
        b, length, heads, d = q.shape
        q, k = q.reshape(b, length, heads * d), k.reshape(b, length, heads * d)  # [B, L, H*d]
        # Per-head dot products as one product with a block-diagonal [H*d, H] matrix (a column per
        # head), and per-head pooled sums as [H, H*d] products whose diagonal blocks are kept: a few
        # batched matrix products instead of elementwise passes over [B, L, H, d].
        blocks = torch.eye(heads, dtype=q.dtype, device=q.device).repeat_interleave(d, dim=0)  # [H*d, H]
        mask = None if mask is None else mask[:, :, None]  # [B, L, 1]

        log_m = None if multiplicity is None else torch.log(multiplicity.to(q.dtype))[:, :, None]  # [B, L, 1]

        def pool(x: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:  # -> [B, H, d]
            scores = scores / scale if log_m is None else scores / scale + log_m  # [B, L, H]
            weights = self.attention_dropout(torch.softmax(masked_fill_min(scores, mask), dim=1))  # [B, L, H]
            pooled = torch.bmm(weights.transpose(1, 2), x).view(b, heads, heads, d)  # [B, H, H, d]
            return pooled.diagonal(dim1=1, dim2=2).transpose(1, 2)  # head h's weights on head h's slice

        global_q = pool(q, q @ (blocks * self.query_att.reshape(-1, 1)))  # [B, H, d]
        w_k = blocks * (global_q * self.key_att).reshape(b, -1, 1)  # [B, H*d, H]: w_k . (g_q * k_i) per head
        return global_q * pool(k, torch.bmm(k, w_k))  # [B, H, d]

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v [..., dim] of inputs x [..., in_dim]: per-position maps, so they can be computed
        once per distinct input (FUM projects each distinct token id once). v is q without W_v."""
        q = self.query(x)
        return q, self.key(x), q if self.value is None else self.value(x)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        # x: [B, L, in_dim], mask: [B, L] bool (True = real position) -> [B, L, dim]
        b, length, _ = x.shape
        shape = (b, length, self.heads, self.head_dim)
        q, k, v = (t.view(shape) for t in self.project(x))  # each [B, L, H, d]
        global_k = self.global_key(q, k, mask)  # [B, H, d]
        u = (global_k[:, None] * v).reshape(b, length, self.dim)  # [B, L, dim]
        return self.dropout(self.transform(u)) + q.reshape(b, length, self.dim)  # [B, L, dim]


class FastformerEncoder(nn.Module):
    """``layers`` Fastformer layers applied in sequence, all with the same padding mask.

    ``layer_norm=False`` (default) stacks the bare layers: the official README reports that for news
    recommendation Fastformer works better *without* layer normalization (and position
    embeddings), and each layer already carries the query residual. ``layer_norm=True`` wraps each
    layer as the official ``FastAttention`` sublayer does (post-LN, BERT style):
    x <- LayerNorm(x + Fastformer(x)), the layer's own ``dropout`` playing the part of BERT's
    hidden dropout. The official FastformerLayer also adds a BERT feed-forward block, and its
    encoder adds position embeddings; both are left out here to keep the encoder a drop-in
    sequence-to-sequence layer.
    """

    def __init__(self, dim: int, heads: int, layers: int = 1, dropout: float = 0.0, layer_norm: bool = False):
        super().__init__()
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        self.layers = nn.ModuleList(Fastformer(dim, heads, dropout) for _ in range(layers))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers)) if layer_norm else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        # x: [B, L, dim], mask: [B, L] bool -> [B, L, dim]
        for i, layer in enumerate(self.layers):
            if self.norms is None:
                x = layer(x, mask)  # [B, L, dim]
            else:
                x = self.norms[i](x + layer(x, mask))  # [B, L, dim]
        return x
