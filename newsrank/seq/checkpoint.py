"""Sequence-model checkpoints: the shared header (:mod:`newsrank.core.checkpoint`), the item
vocabulary (``items.json``) and the weights; JSON and safetensors only, written atomically.

A checkpoint written with ``trainer_state`` (the trainer's ``RUN/last``, what ``--resume`` reads)
also holds the optimizer's state (``trainer.safetensors`` for its tensors, ``trainer.json`` for its
scalars and parameter groups), the torch RNG and the NumPy generator that shuffles batches, so a
resumed run trains exactly as an uninterrupted one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..core.atomic import atomic_folder
from ..core.checkpoint import checkpoint_header, read_header, read_weights, save_trainer_state, write_checkpoint_files
from ..core.config import update_sections
from .config import SeqRunConfig
from .model import TimeSequenceModel
from .sequences import ItemVocab

CHECKPOINT_FORMAT = "newsrank-seq-checkpoint"
CHECKPOINT_VERSION = 1


def save_seq_checkpoint(folder: Path, model: TimeSequenceModel, config: SeqRunConfig, vocab: ItemVocab,
                        epoch: int, metrics: dict, optimizer: torch.optim.Optimizer | None = None,
                        rng: np.random.Generator | None = None) -> None:
    """JSON + safetensors only (nothing pickled), written atomically; with ``optimizer`` (and
    ``rng``) also the trainer state that :func:`load_trainer_state` restores."""
    with atomic_folder(folder) as tmp:
        header = checkpoint_header(CHECKPOINT_FORMAT, CHECKPOINT_VERSION, "seq", config.to_dict(),
                                   num_items=model.num_items, epoch=epoch, metrics=metrics)
        write_checkpoint_files(tmp, header, model)
        (tmp / "items.json").write_text(json.dumps({"items": vocab.items, "counts": vocab.counts.tolist()},
                                                   ensure_ascii=False), encoding="utf-8")
        if optimizer is not None:
            save_trainer_state(tmp, optimizer, rng)




def read_seq_header(folder: str | Path) -> dict:
    return read_header(folder, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, "a sequence-model checkpoint")


def config_from_header(meta: dict, source: str) -> SeqRunConfig:
    """The run config saved in a header. Checkpoints from before PLSTM's linear clock lack
    ``plstm_time`` / ``plstm_leak_at_eval``: they read the scaled since_first and had no leak at
    test time, so those are what they get; checkpoints from before ``time_gate_inner`` squashed
    the Time-LSTM time term with a sigmoid, and before ``plstm_readout`` PLSTM output its gated h."""
    saved = {name: dict(section) for name, section in meta["config"].items()}
    model = saved.get("model", {})
    model.setdefault("plstm_time", "scaled")
    model.setdefault("plstm_leak_at_eval", False)
    model.setdefault("time_gate_inner", "sigmoid")
    model.setdefault("plstm_readout", "gated")
    config = SeqRunConfig()
    update_sections(config, saved, source)
    return config


def load_seq_checkpoint(folder: str | Path, device: str | torch.device = "cpu"
                        ) -> tuple[TimeSequenceModel, SeqRunConfig, ItemVocab, dict]:
    folder = Path(folder)
    if (folder / "model" / "checkpoint.json").is_file():  # a run folder
        folder = folder / "model"
    meta = read_seq_header(folder)
    config = config_from_header(meta, str(folder / "checkpoint.json"))
    items = json.loads((folder / "items.json").read_text(encoding="utf-8"))
    vocab = ItemVocab(items=items["items"], counts=np.asarray(items["counts"], dtype=np.int64))
    model = TimeSequenceModel(config.model, meta["num_items"])
    model.load_state_dict(read_weights(folder, device))
    return model.to(device), config, vocab, meta
