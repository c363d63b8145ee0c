"""Next-item model around one recurrent cell of :mod:`newsrank.seq.cells` (Time-LSTM paper,
Zhu et al., IJCAI 2017): item embedding -> cell, step by step -> hidden -> full softmax over items.

Inputs are the right-padded arrays of :func:`newsrank.seq.sequences.pad_sequences`: ``items``,
``delta_next`` (the Time-LSTM cells' Δt: time until the action predicted at that step),
``since_first`` (PLSTM's t) and ``mask``. The hidden state at step m scores the item of step
m + 1 (for training, targets are ``items[:, 1:]``; at test time the last real step's hidden
scores the held-out item, with that step's ``delta_next`` being the interval to it).

Padding: at a padded step the state is carried over unchanged (``torch.where`` on the mask) and
the hidden output is zero, so padding never changes the outputs of real steps, wherever it is.
Column 0 of the logits (the padding item) is always −inf: it is never predicted.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .cells import CELLS, PhasedLSTMCell, TimeCell


@dataclass
class SeqModelConfig:
    cell: str = "lstm"  # one of cells.CELLS: lstm, lstm_t, plstm, tlstm1, tlstm2, tlstm3
    embedding_dim: int = 128  # item embedding size E (the cell's input size)
    hidden: int = 128  # hidden / cell state size H (128 in the paper)
    dropout: float = 0.0  # on the item embeddings and on the hidden outputs (the paper uses none)
    plstm_r_on: float = 0.05  # PLSTM: fixed open ratio r_on of each unit's period
    plstm_leak: float = 1e-3  # PLSTM: leak α of closed units, in training mode only
    plstm_period_min: float = 1.0  # PLSTM: periods init log-uniform in [min, max], in the units
    plstm_period_max: float = 20.0  # of the scaled since_first (see cells.PhasedLSTMCell)

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}; got {self.cell!r}")
        for name in ("embedding_dim", "hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 < self.plstm_r_on <= 1.0:
            raise ValueError(f"plstm_r_on must be in (0, 1], got {self.plstm_r_on}")
        if self.plstm_leak < 0.0:
            raise ValueError(f"plstm_leak must be >= 0, got {self.plstm_leak}")
        if self.plstm_period_min <= 0.0:
            raise ValueError(f"plstm_period_min must be > 0, got {self.plstm_period_min}")
        if self.plstm_period_max < self.plstm_period_min:
            raise ValueError(
                f"plstm_period_max must be >= plstm_period_min ({self.plstm_period_min}), got {self.plstm_period_max}"
            )


def build_cell(config: SeqModelConfig) -> TimeCell:
    """The cell named by ``config.cell`` with input size E and hidden size H."""
    if config.cell == "plstm":
        return PhasedLSTMCell(
            config.embedding_dim,
            config.hidden,
            r_on=config.plstm_r_on,
            leak=config.plstm_leak,
            period_range=(config.plstm_period_min, config.plstm_period_max),
        )
    return CELLS[config.cell](config.embedding_dim, config.hidden)


class TimeSequenceModel(nn.Module):
    """Item embedding (padding_idx 0) -> recurrent cell -> Linear(H, num_items) logits.

    ``num_items`` counts the padding index 0 (it is ``len(ItemVocab)``).
    """

    def __init__(self, config: SeqModelConfig, num_items: int):
        super().__init__()
        if num_items < 2:
            raise ValueError(f"num_items must be >= 2 (padding + at least one item), got {num_items}")
        self.config = config
        self.num_items = num_items
        self.items = nn.Embedding(num_items, config.embedding_dim, padding_idx=0)
        self.dropout = nn.Dropout(config.dropout)
        self.cell = build_cell(config)
        self.output = nn.Linear(config.hidden, num_items)

    def forward(
        self, items: torch.Tensor, delta_next: torch.Tensor, since_first: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Hidden states [B, L, H] (zero at padded steps). items [B, L] long; delta_next,
        since_first [B, L] float (scaled); mask [B, L] bool, True on real events."""
        batch, length = items.shape
        x = self.dropout(self.items(items))  # [B, L, E]
        # the state-free part of every step at once, step-major so that p[s] is contiguous
        p = self.cell.project_inputs(x, delta_next.to(x.dtype), since_first.to(x.dtype))  # [B, L, P]
        p = p.transpose(0, 1).contiguous()  # [L, B, P]
        keep = mask.to(torch.bool).transpose(0, 1).unsqueeze(-1)  # [L, B, 1]
        state = self.cell.initial_state(batch, x.device, x.dtype)  # (h, c), each [B, H]
        zero = x.new_zeros(())
        outputs = []
        for s in range(length):
            h, new_state = self.cell.step(p[s], state)  # [B, H]
            state = tuple(torch.where(keep[s], new, old) for new, old in zip(new_state, state))
            outputs.append(torch.where(keep[s], h, zero))  # [B, H]
        if not outputs:
            return x.new_zeros(batch, 0, self.config.hidden)
        return self.dropout(torch.stack(outputs, dim=1))  # [B, L, H]

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores over all items [..., num_items] for hidden [..., H]; column 0 (padding) is −inf."""
        scores = self.output(hidden)  # [..., V]
        pad = torch.zeros(self.num_items, dtype=scores.dtype, device=scores.device)
        pad[0] = float("-inf")
        return scores + pad  # [..., V]

    @staticmethod
    def last_hidden(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The hidden state at each row's last real step, [B, H] (zeros for a row with no real
        step). hidden [B, L, H], mask [B, L] bool."""
        if hidden.shape[1] == 0:
            return hidden.new_zeros(hidden.shape[0], hidden.shape[2])
        positions = torch.arange(mask.shape[1], device=mask.device)  # [L]
        last = torch.where(mask, positions, -1).amax(dim=1)  # [B], -1 for a row with no real step
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        picked = hidden[rows, last.clamp(min=0)]  # [B, H]
        return torch.where((last >= 0).unsqueeze(-1), picked, hidden.new_zeros(()))
