"""Sequences as padded tensors, and length-bucketed batches for training."""

from __future__ import annotations

import numpy as np
import torch

from .sequences import UserSequence, pad_sequences


def to_tensors(sequences: list[UserSequence], device: torch.device) -> dict[str, torch.Tensor]:
    """Right-padded batch tensors: items [B, L] long; delta_next, since_first [B, L] float; mask."""
    arrays = pad_sequences(sequences)
    return {name: torch.as_tensor(arrays[name], device=device)
            for name in ("items", "delta_next", "since_first", "mask")}


def length_batches(sequences: list[UserSequence], batch_size: int, rng: np.random.Generator) -> list[list[int]]:
    """Indices of ``sequences`` in batches of similar length (little padding), batches shuffled."""
    order = np.argsort([len(s) for s in sequences], kind="stable")
    batches = [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches
