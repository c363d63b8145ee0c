"""A sequence run's configuration: ``data`` (:class:`SeqDataConfig`: how the log becomes sequences
and which split protocol holds out the test targets), ``model``
(:class:`~newsrank.seq.model.SeqModelConfig`: the cell and its sizes) and ``train``
(:class:`SeqTrainConfig`: optimizer, epochs, metrics), read like the news models' (packaged
``configs/seq.yaml``, then ``--config FILE``, then ``--set key=value``; :mod:`newsrank.core.config`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..core.config import ConfigError, apply_overrides, load_layers
from .model import SeqModelConfig
from .sequences import SequenceConfig

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


@dataclass
class SeqDataConfig(SequenceConfig):
    """:class:`SequenceConfig` (items, lengths, interval scale) plus the split protocol:
    ``reference`` (users sorted by history length, the last ``test_fraction`` held out, their
    last item predicted; Zhu et al.) or ``leave_last_out`` (every user's last item predicted from
    the rest; training on all but the last item)."""

    split: Literal["reference", "leave_last_out"] = "reference"
    test_fraction: float = 0.2  # reference split: share of users (longest histories) held out (the reference code: the 192 longest)
    median_gap_seconds: float | None = None  # the training sequences' median gap; null: measured by the trainer (eval_delta=constant feeds it)


@dataclass
class SeqTrainConfig:
    epochs: int = 10
    batch_size: int = 32  # sequences per batch
    optimizer: Literal["adagrad", "adam"] = "adagrad"  # AdaGrad lr 0.01 is the paper's
    lr: float = 0.01
    grad_clip: float = 5.0  # max gradient norm; 0 disables clipping
    seed: int = 42
    ks: list[int] = field(default_factory=lambda: [10])  # Recall@K / MRR@K cut-offs
    num_negatives: int = 100  # sampled protocol: uniformly drawn competitors per target
    repeats: int = 10  # sampled protocol: draws averaged
    eval_batch_size: int = 256  # test prefixes per batch
    threads: int = 0  # torch CPU threads; 0 keeps torch's default
    device: str = "auto"  # "auto" (cuda when available), "cpu", "cuda", "cuda:1", ...
    protocol: str = "default"  # the preset layered on configs/seq.yaml: default, or paper (configs/seq_paper.yaml)
    test_prefixes_from_epoch: int = 0  # >= 1: from this epoch on the test users' growing prefixes join training (paper: 11); 0: never
    eval_delta: Literal["real", "constant"] = "real"  # constant: every test gap replaced by the training median (what time buys)


@dataclass
class SeqRunConfig:
    data: SeqDataConfig = field(default_factory=SeqDataConfig)
    model: SeqModelConfig = field(default_factory=SeqModelConfig)
    train: SeqTrainConfig = field(default_factory=SeqTrainConfig)

    def sections(self) -> dict:
        return {"data": self.data, "model": self.model, "train": self.train}

    def to_dict(self) -> dict:
        return {name: dataclasses.asdict(section) for name, section in self.sections().items()}

    def validate(self) -> None:
        """Re-run the dataclasses' own checks after YAML and ``--set`` changed their fields."""
        for name, section in self.sections().items():
            try:
                dataclasses.replace(section)  # runs __post_init__ where there is one
            except ValueError as err:
                raise ConfigError(f"{name}: {err}") from None
        t = self.train
        if t.epochs < 1 or t.batch_size < 1 or t.eval_batch_size < 1:
            raise ConfigError("train: epochs, batch_size and eval_batch_size must be >= 1")
        if t.lr <= 0 or t.grad_clip < 0:
            raise ConfigError("train: lr must be > 0 and grad_clip >= 0")
        if not t.ks or min(t.ks) < 1:
            raise ConfigError(f"train.ks: cut-offs must be >= 1, got {t.ks}")
        if t.num_negatives < 1 or t.repeats < 1:
            raise ConfigError("train: num_negatives and repeats must be >= 1")
        if t.test_prefixes_from_epoch < 0:
            raise ConfigError(f"train.test_prefixes_from_epoch must be >= 0, got {t.test_prefixes_from_epoch}")
        if t.protocol not in PROTOCOLS:
            raise ConfigError(f"train.protocol: {t.protocol!r} is not one of {', '.join(PROTOCOLS)}")
        if self.data.median_gap_seconds is not None and self.data.median_gap_seconds < 0:
            raise ConfigError(f"data.median_gap_seconds must be >= 0, got {self.data.median_gap_seconds}")


#: presets: protocol name -> its packaged YAML layer (None: configs/seq.yaml alone)
PROTOCOLS = {"default": None, "paper": "seq_paper.yaml"}


def load_seq_config(cell: str, path: str | Path | None = None, overrides: list[str] | None = None) -> SeqRunConfig:
    """Packaged ``configs/seq.yaml``, then the protocol preset (``--set protocol=paper`` layers
    ``configs/seq_paper.yaml``, wherever it stands among the overrides), then ``path``, then
    ``overrides``; ``cell`` picks the model."""
    overrides = list(overrides or [])
    protocol = "default"
    for item in overrides:
        key, _, value = item.partition("=")
        if key.strip() in ("protocol", "train.protocol"):
            protocol = value.strip()
    if protocol not in PROTOCOLS:
        raise ConfigError(f"--set protocol={protocol}: unknown protocol (known: {', '.join(PROTOCOLS)})")
    config = SeqRunConfig()
    load_layers(config, CONFIG_DIR / "seq.yaml", None, [])
    if PROTOCOLS[protocol] is not None:
        load_layers(config, CONFIG_DIR / PROTOCOLS[protocol], None, [])
    load_layers(config, None, path, [])
    config.model.cell = cell
    apply_overrides(config, overrides)
    config.validate()
    return config
