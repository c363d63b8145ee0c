"""Building blocks shared by the models. Every attention takes a padding mask (True = real).

A sequence whose positions are all padding (an empty title, a user with no clicks) never yields
NaN: masked scores are filled with the dtype's most negative finite value, so such a row attends
uniformly over its padding positions and gives a finite, deterministic result.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def masked_fill_min(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``scores`` with masked-out (False) positions set to the most negative finite value."""
    if mask is None:
        return scores
    return scores.masked_fill(~mask, torch.finfo(scores.dtype).min)


class AdditiveAttention(nn.Module):
    """Attention pooling: a_i = q . tanh(W x_i + b), weights = softmax(a), output = sum_i w_i x_i."""

    def __init__(self, in_dim: int, hidden_dim: int):
        super().__init__()
        self.proj = nn.Linear(in_dim, hidden_dim)
        self.query = nn.Linear(hidden_dim, 1, bias=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        # x: [..., L, in_dim], mask: [..., L] bool
        scores = self.query(torch.tanh(self.proj(x))).squeeze(-1)  # [..., L]
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
        q, k, v = (
            self.qkv(x).view(b, length, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        )  # each [B, heads, L, head_dim]
        bias = None
        if mask is not None:
            bias = masked_fill_min(x.new_zeros(b, 1, 1, length), mask[:, None, None, :])  # [B, 1, 1, L]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # [B, heads, L, head_dim]
        return out.transpose(1, 2).reshape(b, length, self.out_dim)  # [B, L, heads * head_dim]
