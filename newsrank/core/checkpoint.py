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
