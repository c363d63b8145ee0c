"""Runtime settings shared by the news and the sequence trainers."""

from __future__ import annotations

import contextlib
import functools
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


def peak_rss_mib() -> float | None:
    """This process's peak resident memory so far, in MiB (None where the platform cannot say).

    ``ru_maxrss`` is in KiB on Linux and in bytes on macOS; it never decreases, so a value logged
    per epoch is the peak up to the end of that epoch."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


@functools.lru_cache(maxsize=1)
def code_commit() -> str | None:
    """The git commit of the newsrank source that is running (``<hash>`` or ``<hash>-dirty`` when
    tracked files were changed), or None when it is not a git checkout (an installed wheel) or git
    is missing. Cached from the first call, which the trainers make when they start (the code they
    loaded, not what the checkout holds by the time they save); checkpoints record it and
    ``newsrank report`` shows it."""
    import subprocess
    from pathlib import Path

    source = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12", "--match", "no-tags-wanted"],
                             cwd=source, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
