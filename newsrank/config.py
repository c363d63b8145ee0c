"""The news models' run configuration: ``data`` (:class:`DataConfig`), ``train``
(:class:`TrainConfig`) and ``model`` (the model's own config dataclass).

The defaults live here and in the model dataclasses, once; a model's packaged
``configs/<model>.yaml`` documents its model section and holds only its real deviations from the
shared data and train defaults. Reading and checking YAML and ``--set`` is :mod:`newsrank.core.config`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .core.config import ConfigError, load_layers, read_config_file, update_sections
from .core.config import apply_overrides as _apply_overrides

__all__ = ["CONFIG_DIR", "ConfigError", "DataConfig", "RunConfig", "TrainConfig", "apply_overrides",
           "config_from_dict", "load_config", "read_config_file", "update_sections"]

CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass
class DataConfig:
    """How MIND files become integer arrays (part of the preprocessing cache key)."""

    title_len: int = 30  # title tokens kept (first N words); longer titles are cut
    abstract_len: int = 50  # abstract tokens kept (for models with an abstract view)
    history_len: int = 50  # most recent clicks kept per impression
    entity_len: int = 10  # entities kept per news (title's first, then abstract's; deduplicated)
    min_word_count: int = 1  # train-split words seen fewer times map to <unk>


@dataclass
class TrainConfig:
    """The shared trainer's settings (the same for every model)."""

    epochs: int = 2
    batch_size: int = 32
    lr: float = 1e-4  # Adam learning rate
    npratio: int = 4  # sampled non-clicks per click
    seed: int = 42
    embeddings: str | None = None  # pretrained word vectors: a GloVe/word2vec text file, or "glove-6b-50d"
    freeze_embeddings: bool = False  # keep pretrained word vectors fixed
    # news / impressions per batch in evaluation; 256 measured 2-20% faster than 1,024 on one thread
    # (NRMS +14%, NAML +20%: a batch's tensors stay in the CPU caches), and needs less memory
    eval_batch_size: int = 256
    threads: int = 0  # torch CPU threads; 0 keeps torch's default
    device: str = "auto"  # "auto" (cuda when available), "cpu", "cuda", "cuda:1", ...
    amp: bool = False  # bf16 autocast in training and evaluation (meant for GPUs with bf16 tensor cores)
    select_metric: Literal["auc", "mrr", "ndcg@5", "ndcg@10"] = "auc"  # dev metric that picks the kept checkpoint
    epoch_batches: int | None = None  # train at most this many batches per epoch (quick experiments); null: all
    share_news: bool = True  # several processes: each batch's distinct news encoded by one rank, not by every rank that reads it
    # several processes on the CPU: each process of a machine, with the threads it starts, runs on its
    # own equal share of the machine's cores (``core.distributed.pin_to_cores``)
    pin_cores: bool = True


@dataclass
class RunConfig:
    model_name: str
    model: Any  # the model's config dataclass
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def sections(self) -> dict[str, Any]:
        return {"data": self.data, "train": self.train, "model": self.model}

    def to_dict(self) -> dict:
        return {name: dataclasses.asdict(section) for name, section in self.sections().items()}


def load_config(model_name: str, model_config_cls: type, path: str | Path | None = None) -> RunConfig:
    """The model's packaged YAML defaults, then ``path`` on top of them (if given)."""
    # A model without a packaged YAML uses its dataclass defaults.
    config = RunConfig(model_name=model_name, model=model_config_cls())
    return load_layers(config, CONFIG_DIR / f"{model_name}.yaml", path, [])


def config_from_dict(model_name: str, model_config_cls: type, data: dict) -> RunConfig:
    """Rebuild a RunConfig saved by :meth:`RunConfig.to_dict` (checkpoint metadata)."""
    config = RunConfig(model_name=model_name, model=model_config_cls())
    update_sections(config, data, "checkpoint config")
    return config


#: The ``news_encoder: plm`` settings (``newsrank.models.base.PLMOptions``'s fields; a test keeps them equal).
PLM_KEYS = ("news_encoder", "plm", "plm_title_len", "plm_tune_last", "plm_state_dtype", "plm_lr", "plm_dim",
            "plm_digest")


def apply_overrides(config: Any, overrides: list[str]) -> None:
    """``core.config.apply_overrides``, with a clear error when a PLM setting is given to a model whose
    news encoder reads title tokens and has no pooled title view to replace (DKN, FIM, FUM)."""
    model_fields = {f.name for f in dataclasses.fields(config.model)}
    for item in overrides:
        key = item.partition("=")[0].strip().removeprefix("model.")
        if key in PLM_KEYS and key not in model_fields:
            raise ConfigError(f"--set {item!r}: news_encoder=plm is not supported by {config.model_name} (its news "
                              "encoder works on title tokens; the PLM encoder exists for nrms, naml, lstur, gru, npa)")
    _apply_overrides(config, overrides)
