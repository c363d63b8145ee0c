"""Train and evaluate a time-aware next-item model on an event log (``newsrank seq train``).

The run configuration has three sections, read like the news models' (packaged
``configs/seq.yaml``, then ``--config FILE``, then ``--set key=value``):

- ``data`` (:class:`SeqDataConfig`): how the log becomes sequences (:mod:`.sequences`) and which
  split protocol holds out the test targets;
- ``model`` (:class:`~newsrank.seq.model.SeqModelConfig`): the cell and its sizes;
- ``train`` (:class:`SeqTrainConfig`): optimizer, epochs, metrics.

Training: every real step of a training sequence predicts the next item (full softmax over the
items, cross-entropy averaged over the valid steps of the batch); sequences are batched in
length order (shuffled batches) so a batch carries little padding. After every epoch the model
is evaluated on the held-out targets: each test prefix is read, the hidden state of its last
step scores all items, and the target is ranked

- ``full``: against every item;
- ``sampled``: against ``num_negatives`` items drawn uniformly (the Time-LSTM paper's protocol),
  ``repeats`` times with a fixed seed, mean reported (``_std``: spread over the repeats).

There is no validation split in the paper's protocol, so no checkpoint is *selected*: the model
after the last epoch is kept (``RUN/model``) and its metrics written to ``RUN/metrics.json``;
``RUN/log.jsonl`` has one line per epoch (loss, throughput, both metric sections) for curves.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from .. import __version__
from ..checkpoint import atomic_folder
from ..config import CONFIG_DIR, ConfigError, apply_overrides, read_config_file, update_sections
from ..metrics import json_ready
from ..train import resolve_device
from .events import read_events_with_report
from .metrics import full_ranking_metrics, sampled_metrics
from .model import SeqModelConfig, TimeSequenceModel
from .sequences import (
    ItemVocab,
    SequenceConfig,
    SequenceSplit,
    UserSequence,
    build_sequences,
    leave_last_out,
    pad_sequences,
    reference_split,
    split_last,
)

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "newsrank-seq-checkpoint"
CHECKPOINT_VERSION = 1


@dataclass
class SeqDataConfig(SequenceConfig):
    """:class:`SequenceConfig` (items, lengths, interval scale) plus the split protocol:
    ``reference`` (users sorted by history length, the last ``test_fraction`` held out, their
    last item predicted; Zhu et al.) or ``leave_last_out`` (every user's last item predicted from
    the rest; training on all but the last item)."""

    split: Literal["reference", "leave_last_out"] = "reference"
    test_fraction: float = 0.2  # reference split: share of users (longest histories) held out (the reference code: the 192 longest)


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


def load_seq_config(cell: str, path: str | Path | None = None, overrides: list[str] | None = None) -> SeqRunConfig:
    """Packaged ``configs/seq.yaml``, then ``path``, then ``overrides``; ``cell`` picks the model."""
    config = SeqRunConfig()
    read_config_file(config, CONFIG_DIR / "seq.yaml")
    if path is not None:
        if not Path(path).is_file():
            raise ConfigError(f"{path}: config file not found")
        read_config_file(config, Path(path))
    config.model.cell = cell
    apply_overrides(config, overrides or [])
    config.validate()
    return config


# ---------------------------------------------------------------------------------------- data


def make_split(sequences: list[UserSequence], config: SeqDataConfig) -> SequenceSplit:
    if config.split == "reference":
        return reference_split(sequences, config.test_fraction)
    return leave_last_out(sequences)


def to_tensors(sequences: list[UserSequence], device: torch.device) -> dict[str, torch.Tensor]:
    """Right-padded batch tensors: items [B, L] long; delta_next, since_first [B, L] float; mask."""
    arrays = pad_sequences(sequences)
    return {name: torch.as_tensor(arrays[name], device=device)
            for name in ("items", "delta_next", "since_first", "mask")}


def length_batches(sequences: list[UserSequence], batch_size: int, rng: np.random.Generator) -> list[list[int]]:
    """Indices of ``sequences`` in batches of similar length (little padding), batches shuffled."""
    order = np.argsort([len(s) for s in sequences], kind="stable")
    batches = [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


# ------------------------------------------------------------------------------- train / eval


def make_optimizer(model: torch.nn.Module, config: SeqTrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adagrad":
        return torch.optim.Adagrad(model.parameters(), lr=config.lr)
    return torch.optim.Adam(model.parameters(), lr=config.lr)


def train_epoch(model: TimeSequenceModel, sequences: list[UserSequence], optimizer: torch.optim.Optimizer,
                config: SeqTrainConfig, rng: np.random.Generator, device: torch.device,
                progress: bool = False, desc: str = "") -> dict:
    """One pass over ``sequences``; each step's hidden state predicts the next item."""
    model.train()
    steps, loss_sum, started = 0, 0.0, time.perf_counter()
    usable = [s for s in sequences if len(s) >= 2]  # a single event predicts nothing
    batches = length_batches(usable, config.batch_size, rng)
    bar = tqdm(batches, desc=desc, unit="batch", disable=not progress, dynamic_ncols=True)
    for picked in bar:
        batch = to_tensors([usable[i] for i in picked], device)
        hidden = model(batch["items"], batch["delta_next"], batch["since_first"], batch["mask"])  # [B, L, H]
        # step t predicts items[t + 1]; padded targets (0) are ignored
        logits = model.logits(hidden[:, :-1])  # [B, L-1, V]
        targets = batch["items"][:, 1:]  # [B, L-1]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        n = int((targets != 0).sum())
        steps += n
        loss_sum += float(loss.detach()) * n
        bar.set_postfix(loss=f"{loss_sum / max(steps, 1):.4f}")
    seconds = time.perf_counter() - started
    return {"train_loss": loss_sum / max(steps, 1), "train_sequences": len(usable), "train_steps": steps,
            "train_seconds": seconds, "train_sequences_per_s": len(usable) / seconds if seconds else None}


@torch.no_grad()
def score_prefixes(model: TimeSequenceModel, prefixes: list[UserSequence], batch_size: int,
                   device: torch.device) -> np.ndarray:
    """[N, V] scores of every item after each prefix (column 0, padding, is -inf)."""
    model.eval()
    out = np.empty((len(prefixes), model.num_items), dtype=np.float32)
    order = np.argsort([len(s) for s in prefixes], kind="stable")  # similar lengths together
    for start in range(0, len(order), batch_size):
        picked = order[start : start + batch_size]
        batch = to_tensors([prefixes[i] for i in picked], device)
        hidden = model(batch["items"], batch["delta_next"], batch["since_first"], batch["mask"])  # [B, L, H]
        last = model.last_hidden(hidden, batch["mask"])  # [B, H]
        out[picked] = model.logits(last).float().cpu().numpy()  # [B, V]
    return out


def evaluate_targets(model: TimeSequenceModel, test: list[UserSequence], config: SeqTrainConfig,
                     device: torch.device) -> dict:
    """``{"full": {...}, "sampled": {...}, "targets": N}`` for the last item of every test sequence."""
    prefixes, targets = split_last(test)
    scores = score_prefixes(model, prefixes, config.eval_batch_size, device)
    return {
        "full": full_ranking_metrics(scores, targets, ks=config.ks),
        "sampled": sampled_metrics(scores, targets, num_negatives=config.num_negatives, repeats=config.repeats,
                                   rng=config.seed, ks=config.ks),
        "targets": len(targets),
    }


# --------------------------------------------------------------------------------- checkpoint


def save_seq_checkpoint(folder: Path, model: TimeSequenceModel, config: SeqRunConfig, vocab: ItemVocab,
                        epoch: int, metrics: dict) -> None:
    """JSON + safetensors only (nothing pickled), written atomically."""
    with atomic_folder(folder) as tmp:
        meta = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, "newsrank_version": __version__,
                "torch_version": torch.__version__, "config": config.to_dict(), "num_items": model.num_items,
                "epoch": epoch, "metrics": metrics,
                "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        (tmp / "checkpoint.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        (tmp / "items.json").write_text(json.dumps({"items": vocab.items, "counts": vocab.counts.tolist()},
                                                   ensure_ascii=False), encoding="utf-8")
        save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()},
                  str(tmp / "model.safetensors"))


def load_seq_checkpoint(folder: str | Path, device: str | torch.device = "cpu"
                        ) -> tuple[TimeSequenceModel, SeqRunConfig, ItemVocab, dict]:
    folder = Path(folder)
    if (folder / "model" / "checkpoint.json").is_file():  # a run folder
        folder = folder / "model"
    path = folder / "checkpoint.json"
    if not path.is_file():
        raise ValueError(f"{folder}: not a sequence-model checkpoint (no checkpoint.json)")
    meta = json.loads(path.read_text(encoding="utf-8"))
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a sequence-model checkpoint (format {meta.get('format')!r})")
    config = SeqRunConfig()
    update_sections(config, meta["config"], str(path))
    items = json.loads((folder / "items.json").read_text(encoding="utf-8"))
    vocab = ItemVocab(items=items["items"], counts=np.asarray(items["counts"], dtype=np.int64))
    model = TimeSequenceModel(config.model, meta["num_items"])
    model.load_state_dict(load_file(str(folder / "model.safetensors"), device=str(device)))
    return model.to(device), config, vocab, meta


# ------------------------------------------------------------------------------------- driver


def train_on_events(config: SeqRunConfig, events_path: str | Path, out_dir: str | Path, format: str = "csv",
                    overwrite: bool = False, progress: bool = True) -> dict:
    """Read the log, build sequences and the split, train, evaluate after every epoch, write the
    run folder; returns the final metrics (also ``RUN/metrics.json``)."""
    out_dir = Path(out_dir)
    if not overwrite and any((out_dir / name).exists() for name in ("model", "metrics.json", "log.jsonl")):
        raise ValueError(f"{out_dir} already holds a run: pass --overwrite to replace it")
    tc = config.train
    if tc.threads > 0:
        torch.set_num_threads(tc.threads)
    device = resolve_device(tc.device)
    torch.manual_seed(tc.seed)
    rng = np.random.default_rng(tc.seed)

    events, report = read_events_with_report(events_path, format)
    if report.skipped:
        line, reason = report.skipped_examples[0]
        log.warning("%s: skipped %d malformed %s rows (first: line %d, %s)", events_path, report.skipped, format,
                    line, reason)
    sequences, vocab = build_sequences(events, config.data)
    if len(sequences) < 2:
        raise ValueError(f"{events_path}: {len(sequences)} user(s) with at least {config.data.min_length} events; "
                         "need 2 or more")
    split = make_split(sequences, config.data)
    if not split.test or not split.train:
        raise ValueError(f"{events_path}: the {config.data.split} split left no train or no test sequences")
    log.info("%d events, %d items (+ padding), %d train / %d test sequences (%s split)", len(events),
             len(vocab) - 1, len(split.train), len(split.test), config.data.split)

    model = TimeSequenceModel(config.model, len(vocab)).to(device)
    optimizer = make_optimizer(model, tc)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("model", "metrics.json", "log.jsonl"):
        target = out_dir / stale
        shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    (out_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")

    record: dict = {}
    for epoch in range(tc.epochs):
        record = {"epoch": epoch + 1, **train_epoch(model, split.train, optimizer, tc, rng, device, progress,
                                                   desc=f"epoch {epoch + 1}/{tc.epochs}")}
        started = time.perf_counter()
        record.update(evaluate_targets(model, split.test, tc, device))
        record["eval_seconds"] = time.perf_counter() - started
        record = json_ready(record)
        with open(out_dir / "log.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        k = tc.ks[0]
        log.info("epoch %d: loss %.4f; full recall@%d %.4f mrr@%d %.4f; sampled recall@%d %.4f mrr@%d %.4f "
                 "(%.1f sequences/s)", epoch + 1, record["train_loss"], k, record["full"][f"recall@{k}"], k,
                 record["full"][f"mrr@{k}"], k, record["sampled"][f"recall@{k}"], k,
                 record["sampled"][f"mrr@{k}"], record["train_sequences_per_s"] or 0)

    metrics = {"model": config.model.cell, "epoch": tc.epochs, "split": config.data.split,
               "full": record["full"], "sampled": record["sampled"], "targets": record["targets"],
               "items": len(vocab) - 1, "train_sequences": len(split.train),
               "train_sequences_per_s": record["train_sequences_per_s"]}
    save_seq_checkpoint(out_dir / "model", model, config, vocab, tc.epochs, metrics)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    return metrics
