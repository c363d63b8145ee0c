"""The checkpoint header, shared by news and sequence checkpoints.

A checkpoint is a folder of JSON and safetensors only (nothing pickled, so loading one from
elsewhere cannot run code). Its ``checkpoint.json`` starts with the same header whatever the
model: ``format`` (which loader reads it), ``format_version``, ``kind`` (``news`` or ``seq``),
the full run ``config``, the ``vocab_digest`` of the vocabularies it was trained with (when it has
them), the versions of newsrank and torch, the git ``commit`` of the code that wrote it (null outside
a git checkout; absent in checkpoints written before it was recorded), and the time it was written;
the rest is the loader's.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .. import __version__
from .runtime import code_commit

HEADER_FILE = "checkpoint.json"
WEIGHTS_FILE = "model.safetensors"


def checkpoint_header(format: str, version: int, kind: str, config: dict, vocab_digest: str | None = None,
                      **fields) -> dict:
    """The header every ``checkpoint.json`` starts with, plus the loader's own ``fields``."""
    header = {"format": format, "format_version": version, "kind": kind, "newsrank_version": __version__,
              "torch_version": torch.__version__, "commit": code_commit(), "config": config}
    if vocab_digest is not None:
        header["vocab_digest"] = vocab_digest
    header["saved_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return header | fields


def write_checkpoint_files(folder: Path, header: dict, model: torch.nn.Module) -> None:
    """``checkpoint.json`` and ``model.safetensors`` (the weights on the CPU) into ``folder``."""
    (folder / HEADER_FILE).write_text(json.dumps(header, indent=2), encoding="utf-8")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_FILE))


def read_header(folder: str | Path, format: str, version: int, what: str) -> dict:
    """``folder/checkpoint.json``, checked to be ``format`` at most ``version``; ``what`` names the
    kind of checkpoint in errors ("a newsrank checkpoint", "a sequence-model checkpoint")."""
    path = Path(folder) / HEADER_FILE
    if not path.is_file():
        raise ValueError(f"{folder}: not {what} (no {HEADER_FILE})")
    try:
        header = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from None
    if not isinstance(header, dict) or header.get("format") != format:
        found = header.get("format") if isinstance(header, dict) else None
        raise ValueError(f"{path}: not {what} (format {found!r})")
    if header.get("format_version", 0) > version:
        raise ValueError(f"{path}: written by a newer newsrank (format version {header['format_version']})")
    return header


def read_weights(folder: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    return load_file(str(Path(folder) / WEIGHTS_FILE), device=str(device))


TRAINER_TENSORS, TRAINER_JSON = "trainer.safetensors", "trainer.json"


def save_trainer_state(folder: Path, optimizer: torch.optim.Optimizer, rng: np.random.Generator | None = None) -> None:
    """What resuming needs besides the weights: the optimizer state (tensors in safetensors, the
    rest in JSON), the torch RNG and, given, a NumPy generator's state. No pickle."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {"rng.torch": torch.get_rng_state()}
    scalars: dict[str, dict] = {}
    for param_id, param_state in state["state"].items():
        for name, value in param_state.items():
            if torch.is_tensor(value):
                tensors[f"state.{param_id}.{name}"] = value.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(param_id), {})[name] = value
    save_file(tensors, str(folder / TRAINER_TENSORS))
    payload = {"param_groups": state["param_groups"], "scalars": scalars,
               "numpy_rng": rng.bit_generator.state if rng is not None else None}
    (folder / TRAINER_JSON).write_text(json.dumps(payload), encoding="utf-8")


def load_trainer_state(folder: str | Path, optimizer: torch.optim.Optimizer,
                       rng: np.random.Generator | None = None) -> None:
    """Restore the optimizer state, the torch RNG and (given) the NumPy generator's state."""
    folder = Path(folder)
    if not (folder / TRAINER_JSON).is_file():
        raise ValueError(f"{folder}: no trainer state ({TRAINER_JSON}); only RUN/last can be resumed")
    tensors = load_file(str(folder / TRAINER_TENSORS))
    payload = json.loads((folder / TRAINER_JSON).read_text(encoding="utf-8"))
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("state."):
            _, param_id, name = key.split(".", 2)
            state.setdefault(int(param_id), {})[name] = value
    for param_id, values in payload["scalars"].items():
        state.setdefault(int(param_id), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": payload["param_groups"]})
    torch.set_rng_state(tensors["rng.torch"])
    if rng is not None and payload.get("numpy_rng") is not None:
        rng.bit_generator.state = payload["numpy_rng"]
