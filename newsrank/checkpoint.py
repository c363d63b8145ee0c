"""Self-describing checkpoints that load without executing pickled code.

A checkpoint is a folder::

    checkpoint.json      the shared header (newsrank.core.checkpoint: format, kind, config, vocabulary
                         digest, versions) plus model name, vocabulary sizes, epoch, metrics
    vocab.json           the training vocabularies (new data is mapped with exactly these)
    model.safetensors    the weights
    trainer.safetensors  optional: optimizer moments and RNG state, for resuming training
    trainer.json         optional: optimizer hyper-parameters and the position in training

Only JSON and safetensors are read back, so loading a checkpoint from elsewhere cannot run code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import RunConfig, config_from_dict
from .core.atomic import atomic_folder
from .core.checkpoint import checkpoint_header, read_header, read_weights, save_trainer_state, write_checkpoint_files
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
    with atomic_folder(folder) as tmp:
        header = checkpoint_header(FORMAT, FORMAT_VERSION, "news", config.to_dict(), vocabs.digest(),
                                   model=config.model_name, vocab_sizes=vocabs.sizes(), epoch=epoch,
                                   metrics=metrics or {}, **(extra or {}))
        write_checkpoint_files(tmp, header, model)
        (tmp / "vocab.json").write_text(json.dumps(vocabs.to_json(), ensure_ascii=False), encoding="utf-8")
        if optimizer is not None:
            save_trainer_state(tmp, optimizer)


def read_meta(folder: str | Path) -> dict:
    """The checked header of a news checkpoint (see :mod:`newsrank.core.checkpoint`)."""
    return read_header(folder, FORMAT, FORMAT_VERSION, "a newsrank checkpoint")


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
    model.load_state_dict(read_weights(folder, map_location))
    return Checkpoint(model=model.to(map_location), config=config, vocabs=vocabs, meta=meta)


def resolve_run(path: str | Path) -> Path:
    """A run folder's kept checkpoint (``RUN/best``), or a checkpoint folder itself."""
    path = Path(path)
    if (path / "checkpoint.json").is_file():
        return path
    if (path / "best" / "checkpoint.json").is_file():
        return path / "best"
    raise ValueError(f"{path}: no checkpoint here (expected {path}/best/checkpoint.json)")
