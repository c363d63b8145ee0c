"""Self-describing checkpoints that load without executing pickled code.

A checkpoint is a folder::

    checkpoint.json      model name, full run config, vocabulary digest, versions, epoch, metrics
    vocab.json           the training vocabularies (new data is mapped with exactly these)
    model.safetensors    the weights
    trainer.safetensors  optional: optimizer moments and RNG state, for resuming training
    trainer.json         optional: optimizer hyper-parameters and the position in training

Only JSON and safetensors are read back, so loading a checkpoint from elsewhere cannot run code.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from . import __version__
from .config import RunConfig, config_from_dict
from .data.vocab import Vocabularies
from .models import ModelContext, NewsRecModel, model_class

FORMAT = "newsrank-checkpoint"
FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    model: NewsRecModel
    config: RunConfig
    vocabs: Vocabularies
    meta: dict


@contextmanager
def atomic_folder(folder: Path) -> Iterator[Path]:
    """Write a folder all at once: the caller fills the yielded temporary folder beside ``folder``,
    which then replaces ``folder`` (the old one is kept until the new one is in place). On an
    error the temporary folder is removed and ``folder`` is left as it was."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    try:
        yield tmp
        old = folder.with_name(folder.name + ".old")
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_checkpoint(
    folder: str | Path,
    model: NewsRecModel,
    config: RunConfig,
    vocabs: Vocabularies,
    epoch: int,
    metrics: dict | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    extra: dict | None = None,
) -> None:
    """Write a checkpoint folder atomically (a crash leaves the previous one intact)."""
    folder = Path(folder)
    with atomic_folder(Path(folder)) as tmp:
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "newsrank_version": __version__,
            "torch_version": torch.__version__,
            "model": config.model_name,
            "config": config.to_dict(),
            "vocab_digest": vocabs.digest(),
            "vocab_sizes": vocabs.sizes(),
            "epoch": epoch,
            "metrics": metrics or {},
            "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **(extra or {}),
        }
        (tmp / "checkpoint.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        (tmp / "vocab.json").write_text(json.dumps(vocabs.to_json(), ensure_ascii=False), encoding="utf-8")
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"))
        if optimizer is not None:
            _save_trainer_state(tmp, optimizer)


def _save_trainer_state(folder: Path, optimizer: torch.optim.Optimizer) -> None:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {"rng.torch": torch.get_rng_state()}
    scalars: dict[str, dict] = {}
    for param_id, param_state in state["state"].items():
        for name, value in param_state.items():
            if torch.is_tensor(value):
                tensors[f"state.{param_id}.{name}"] = value.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(param_id), {})[name] = value
    save_file(tensors, str(folder / "trainer.safetensors"))
    payload = {"param_groups": state["param_groups"], "scalars": scalars}
    (folder / "trainer.json").write_text(json.dumps(payload), encoding="utf-8")


def load_trainer_state(folder: str | Path, optimizer: torch.optim.Optimizer) -> None:
    """Restore optimizer moments and the torch RNG saved by :func:`save_checkpoint`."""
    folder = Path(folder)
    tensors = load_file(str(folder / "trainer.safetensors"))
    payload = json.loads((folder / "trainer.json").read_text(encoding="utf-8"))
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("state."):
            _, param_id, name = key.split(".", 2)
            state.setdefault(int(param_id), {})[name] = value
    for param_id, values in payload["scalars"].items():
        state.setdefault(int(param_id), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": payload["param_groups"]})
    torch.set_rng_state(tensors["rng.torch"])


def read_meta(folder: str | Path) -> dict:
    path = Path(folder) / "checkpoint.json"
    if not path.is_file():
        raise ValueError(f"{folder}: not a newsrank checkpoint (no checkpoint.json)")
    meta = json.loads(path.read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a newsrank checkpoint (format {meta.get('format')!r})")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{path}: written by a newer newsrank (format {meta['format_version']})")
    return meta


def load_checkpoint(folder: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Rebuild the model from a checkpoint folder (JSON + safetensors only)."""
    folder = Path(folder)
    meta = read_meta(folder)
    cls = model_class(meta["model"])
    config = config_from_dict(meta["model"], cls.config_class, meta["config"])
    vocabs = Vocabularies.from_json(json.loads((folder / "vocab.json").read_text(encoding="utf-8")))
    if vocabs.digest() != meta["vocab_digest"]:
        raise ValueError(f"{folder}: vocab.json does not match the digest in checkpoint.json")
    model = cls(config.model, ModelContext(vocabs=vocabs))
    state = load_file(str(folder / "model.safetensors"), device=str(map_location))
    model.load_state_dict(state)
    return Checkpoint(model=model.to(map_location), config=config, vocabs=vocabs, meta=meta)


def resolve_run(path: str | Path) -> Path:
    """A run folder's kept checkpoint (``RUN/best``), or a checkpoint folder itself."""
    path = Path(path)
    if (path / "checkpoint.json").is_file():
        return path
    if (path / "best" / "checkpoint.json").is_file():
        return path / "best"
    raise ValueError(f"{path}: no checkpoint here (expected {path}/best/checkpoint.json)")
