"""Train and evaluate a time-aware next-item model on an event log (``newsrank seq train``).

The run configuration is :mod:`.config`'s; evaluation is :mod:`.evaluate`'s; checkpoints are
:mod:`.checkpoint`'s.

Training: every real step of a training sequence predicts the next item (full softmax over the
items, cross-entropy averaged over the valid steps of the batch); sequences are batched in
length order (shuffled batches) so a batch carries little padding. After every epoch the model
is evaluated on the held-out targets (full and sampled ranking, :mod:`.evaluate`).

There is no validation split in the paper's protocol, so no checkpoint is *selected*: the model
after the last epoch is kept (``RUN/model``) and its metrics written to ``RUN/metrics.json``;
``RUN/log.jsonl`` has one line per epoch (loss, throughput, both metric sections, peak memory so
far), drawn after every epoch into ``RUN/curves.png`` (when matplotlib is installed).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from tqdm import tqdm

from ..core.plots import write_curves
from ..core.runtime import code_commit, json_ready, peak_rss_mib, resolve_device, set_threads
from .batching import length_batches, to_tensors
from .checkpoint import save_seq_checkpoint
from .config import SeqRunConfig, SeqTrainConfig
from .evaluate import evaluate_targets
from .events import read_events_with_report
from .model import TimeSequenceModel
from .sequences import UserSequence, build_sequences, make_split

log = logging.getLogger(__name__)


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


def write_seq_curves(out_dir: Path, history: list[dict], ks: list[int], title: str) -> None:
    """``out_dir/curves.png``: train loss and Recall@K / MRR@K (full and sampled) per epoch."""
    metrics = {f"{protocol} {name}@{k}": [r[protocol].get(f"{name}@{k}") for r in history]
               for protocol in ("full", "sampled") for k in ks for name in ("recall", "mrr")}
    write_curves(out_dir / "curves.png", [r["epoch"] for r in history], [r["train_loss"] for r in history],
                 metrics, title)


def train_on_events(config: SeqRunConfig, events_path: str | Path, out_dir: str | Path, format: str = "csv",
                    overwrite: bool = False, progress: bool = True) -> dict:
    """Read the log, build sequences and the split, train, evaluate after every epoch, write the
    run folder; returns the final metrics (also ``RUN/metrics.json``)."""
    out_dir = Path(out_dir)
    if not overwrite and any((out_dir / name).exists() for name in ("model", "metrics.json", "log.jsonl")):
        raise ValueError(f"{out_dir} already holds a run: pass --overwrite to replace it")
    tc = config.train
    set_threads(tc.threads)
    code_commit()  # asked now, at the start, so that the checkpoint names the code this process loaded
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
    for stale in ("model", "metrics.json", "log.jsonl", "curves.png"):
        target = out_dir / stale
        shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    (out_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")

    record: dict = {}
    history: list[dict] = []
    for epoch in range(tc.epochs):
        record = {"epoch": epoch + 1, **train_epoch(model, split.train, optimizer, tc, rng, device, progress,
                                                   desc=f"epoch {epoch + 1}/{tc.epochs}")}
        started = time.perf_counter()
        record.update(evaluate_targets(model, split.test, tc, device))
        record["eval_seconds"] = time.perf_counter() - started
        record["peak_rss_mib"] = peak_rss_mib()
        record = json_ready(record)
        history.append(record)
        with open(out_dir / "log.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        write_seq_curves(out_dir, history, tc.ks, f"{config.model.cell}: {out_dir.name}")
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
