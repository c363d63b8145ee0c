"""Sequence-model checkpoints: the shared header (:mod:`newsrank.core.checkpoint`), the item
vocabulary (``items.json``) and the weights; JSON and safetensors only, written atomically."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..core.atomic import atomic_folder
from ..core.checkpoint import checkpoint_header, read_header, read_weights, write_checkpoint_files
from ..core.config import update_sections
from .config import SeqRunConfig
from .model import TimeSequenceModel
from .sequences import ItemVocab

CHECKPOINT_FORMAT = "newsrank-seq-checkpoint"
CHECKPOINT_VERSION = 1


def save_seq_checkpoint(folder: Path, model: TimeSequenceModel, config: SeqRunConfig, vocab: ItemVocab,
                        epoch: int, metrics: dict) -> None:
    """JSON + safetensors only (nothing pickled), written atomically."""
    with atomic_folder(folder) as tmp:
        header = checkpoint_header(CHECKPOINT_FORMAT, CHECKPOINT_VERSION, "seq", config.to_dict(),
                                   num_items=model.num_items, epoch=epoch, metrics=metrics)
        write_checkpoint_files(tmp, header, model)
        (tmp / "items.json").write_text(json.dumps({"items": vocab.items, "counts": vocab.counts.tolist()},
                                                   ensure_ascii=False), encoding="utf-8")


def load_seq_checkpoint(folder: str | Path, device: str | torch.device = "cpu"
                        ) -> tuple[TimeSequenceModel, SeqRunConfig, ItemVocab, dict]:
    folder = Path(folder)
    if (folder / "model" / "checkpoint.json").is_file():  # a run folder
        folder = folder / "model"
    meta = read_header(folder, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, "a sequence-model checkpoint")
    config = SeqRunConfig()
    update_sections(config, meta["config"], str(folder / "checkpoint.json"))
    items = json.loads((folder / "items.json").read_text(encoding="utf-8"))
    vocab = ItemVocab(items=items["items"], counts=np.asarray(items["counts"], dtype=np.int64))
    model = TimeSequenceModel(config.model, meta["num_items"])
    model.load_state_dict(read_weights(folder, device))
    return model.to(device), config, vocab, meta
