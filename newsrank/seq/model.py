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

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from .cells import CELLS, PLSTM_READOUTS, TIME_GATE_INNER, PhasedLSTMCell, TimeCell, _TimeGatedCell


@dataclass
class SeqModelConfig:
    cell: str = "lstm"  # one of cells.CELLS: lstm, lstm_t, plstm, tlstm1, tlstm2, tlstm3
    embedding_dim: int = 128  # item embedding size E (the cell's input size)
    hidden: int = 128  # hidden / cell state size H (128 in the paper)
    dropout: float = 0.0  # on the item embeddings and on the hidden outputs (the paper uses none)
    plstm_time: Literal["linear", "scaled"] = "linear"  # PLSTM clock: raw seconds since the first event, or the scaled since_first (the first version)
    plstm_r_on: float = 0.05  # PLSTM: open ratio r_on of each unit's period (the initial value when learned)
    plstm_learn_r_on: bool = False  # PLSTM: learn r_on per unit (Neil et al.'s option)
    plstm_leak: float = 1e-3  # PLSTM: leak α of closed units
    plstm_leak_at_eval: bool = True  # PLSTM: keep the leak at test time (the official Time-LSTM code does; Neil et al. do not)
    plstm_period_min: float | None = None  # PLSTM: periods init log-uniform in [min, max], in the clock's units
    plstm_period_max: float | None = None  # (seconds); None: chosen by the trainer from the training log's gaps
    plstm_gap_quantiles: list[float] = dataclasses.field(default_factory=lambda: [0.1, 0.9])  # which gap quantiles set [min, max]
    plstm_readout: Literal["gated", "candidate"] = "candidate"  # PLSTM: each step outputs the candidate h̃ (the state carried stays gated) or the gated h (Neil et al.; old runs)
    time_gate_inner: Literal["tanh", "sigmoid"] = "tanh"  # Time-LSTM 1/2/3: σ_Δt of the time gates (tanh: the official code's; sigmoid: the first version's)

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
        if self.plstm_time not in ("linear", "scaled"):
            raise ValueError(f"plstm_time must be 'linear' or 'scaled', got {self.plstm_time!r}")
        low, high = self.plstm_period_min, self.plstm_period_max
        if (low is None) != (high is None):
            raise ValueError("plstm_period_min and plstm_period_max are both set or both null (from the data)")
        if low is not None and low <= 0.0:
            raise ValueError(f"plstm_period_min must be > 0, got {low}")
        if low is not None and high < low:
            raise ValueError(f"plstm_period_max must be >= plstm_period_min ({low}), got {high}")
        if self.plstm_readout not in PLSTM_READOUTS:
            raise ValueError(f"plstm_readout must be one of {', '.join(PLSTM_READOUTS)}, got {self.plstm_readout!r}")
        if self.time_gate_inner not in TIME_GATE_INNER:
            raise ValueError(f"time_gate_inner must be one of {', '.join(TIME_GATE_INNER)}, got {self.time_gate_inner!r}")
        q = self.plstm_gap_quantiles
        if len(q) != 2 or not 0.0 <= q[0] <= q[1] <= 1.0:
            raise ValueError(f"plstm_gap_quantiles must be [low, high] with 0 <= low <= high <= 1, got {q}")


def build_cell(config: SeqModelConfig) -> TimeCell:
    """The cell named by ``config.cell`` with input size E and hidden size H."""
    if config.cell == "plstm":
        if config.plstm_period_min is None:
            raise ValueError("PLSTM needs its period range: set plstm_period_min/max, or let the trainer choose "
                             "them from the training log (newsrank.seq.train.resolve_time_scale)")
        return PhasedLSTMCell(
            config.embedding_dim,
            config.hidden,
            r_on=config.plstm_r_on,
            leak=config.plstm_leak,
            period_range=(config.plstm_period_min, config.plstm_period_max),
            learn_r_on=config.plstm_learn_r_on,
            leak_at_eval=config.plstm_leak_at_eval,
            readout=config.plstm_readout,
        )
    cls = CELLS[config.cell]
    if issubclass(cls, _TimeGatedCell):
        return cls(config.embedding_dim, config.hidden, inner=config.time_gate_inner)
    return cls(config.embedding_dim, config.hidden)


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

    @property
    def linear_clock(self) -> bool:
        """True when the cell reads raw seconds (PLSTM on its linear clock) instead of since_first."""
        return self.config.cell == "plstm" and self.config.plstm_time == "linear"

    def forward(
        self, items: torch.Tensor, delta_next: torch.Tensor, since_first: torch.Tensor, mask: torch.Tensor,
        seconds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Hidden states [B, L, H] (zero at padded steps). items [B, L] long; delta_next,
        since_first [B, L] float (scaled); mask [B, L] bool, True on real events; seconds [B, L]
        (float64: raw seconds since the row's first event), needed by PLSTM's linear clock."""
        batch, length = items.shape
        x = self.dropout(self.items(items))  # [B, L, E]
        if self.linear_clock:
            if seconds is None:
                raise ValueError("PLSTM with plstm_time=linear reads `seconds` (raw seconds since the first event)")
            clock = seconds  # [B, L], float64 (the phase is computed in float64)
        else:
            clock = since_first.to(x.dtype)  # [B, L]
        # the state-free part of every step at once, step-major so that p[s] is contiguous
        p = self.cell.project_inputs(x, delta_next.to(x.dtype), clock)  # [B, L, P]
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
