"""Runtime settings shared by the news and the sequence trainers."""

from __future__ import annotations

import contextlib
import math
import random

import numpy as np
import torch


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when available, else CPU), or any name torch accepts (``cpu``, ``cuda:1``)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on ``device`` when ``enabled`` (``train.amp``), else a no-op context. bf16
    keeps fp32's exponent range, so no loss scaling is needed; weights, optimizer state and the
    returned scores stay fp32."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def seed_everything(seed: int) -> None:
    """Python's, NumPy's and torch's generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_threads(threads: int) -> None:
    """torch's CPU threads; 0 keeps torch's default."""
    if threads > 0:
        torch.set_num_threads(threads)


def json_ready(value):
    """``value`` with every NaN float (a metric nothing qualifies for) as None, at any depth, and
    NumPy scalars as Python numbers, so that JSON stays valid."""
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
