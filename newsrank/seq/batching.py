"""Sequences as padded tensors, and length-bucketed batches for training."""

from __future__ import annotations

import numpy as np
import torch

from .sequences import UserSequence, pad_sequences


def to_tensors(sequences: list[UserSequence], device: torch.device) -> dict[str, torch.Tensor]:
    """Right-padded batch tensors: items [B, L] long; delta_next, since_first [B, L] float (the
    scaled intervals); ``seconds`` [B, L] float64, the raw seconds since each row's first event
    (PLSTM's linear clock; float64 because it reaches 1e8 s, where float32 steps by 8 s); mask."""
    arrays = pad_sequences(sequences)
    tensors = {name: torch.as_tensor(arrays[name], device=device)
               for name in ("items", "delta_next", "since_first", "mask")}
    stamps = arrays["timestamps"]  # [B, L] int64, 0 at padding
    seconds = np.where(arrays["mask"], stamps - stamps[:, :1], 0).astype(np.float64)  # [B, L]
    tensors["seconds"] = torch.as_tensor(seconds, device=device)
    return tensors


def length_batches(sequences: list[UserSequence], batch_size: int, rng: np.random.Generator) -> list[list[int]]:
    """Indices of ``sequences`` in batches of similar length (little padding), batches shuffled."""
    order = np.argsort([len(s) for s in sequences], kind="stable")
    batches = [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches
