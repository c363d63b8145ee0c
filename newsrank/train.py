"""The one trainer for every news model.

Per epoch: shuffled samples of one click + ``npratio`` non-clicks, softmax cross-entropy over
them (the click is class 0), Adam; then a fast evaluation on dev. ``RUN/`` receives::

    best/          checkpoint with the best dev ``select_metric`` so far (what evaluate/predict use)
    last/          checkpoint after the latest epoch, with optimizer state (what --resume uses)
    log.jsonl      one JSON line per epoch: loss, throughput, dev metrics (with ``beyond``, the
                   beyond-accuracy metrics), peak memory of the process so far
    metrics.json   dev metrics of the kept (best) checkpoint
    config.yaml    the resolved configuration of the run
    curves.png     train loss and dev metrics per epoch (when matplotlib is installed)
"""

from __future__ import annotations

import itertools
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from tqdm import tqdm

from .checkpoint import read_meta, save_checkpoint
from .config import RunConfig
from .core.checkpoint import load_trainer_state, read_weights
from .core.distributed import World, data_parallel, join, leave, news_sharing
from .beyond import train_click_counts
from .core.plots import write_curves
from .core.runtime import autocast, code_commit, json_ready, peak_rss_mib, resolve_device, seed_everything, set_threads
from .data.batching import NewsFeatures, TrainSampler
from .data.dataset import load_split, load_vocabularies
from .data.embeddings import load_pretrained
from .data.plm import attach_plm
from .data.entities import CONTEXT_FILE, ENTITY_FILE, load_entity_vectors
from .evaluate import evaluate
from .models import ModelContext, NewsRecModel, model_class

log = logging.getLogger("newsrank")

METRIC_KEYS = ("auc", "mrr", "ndcg@5", "ndcg@10", "impressions")
CURVE_KEYS = ("auc", "mrr", "ndcg@5", "ndcg@10")  # the dev metrics drawn in curves.png


def write_news_curves(out_dir: Path, history: list[dict], title: str) -> None:
    """``out_dir/curves.png`` from the epochs' log records (nothing without matplotlib)."""
    write_curves(out_dir / "curves.png", [r["epoch"] for r in history], [r["train_loss"] for r in history],
                 {k: [r["dev"].get(k) for r in history] for k in CURVE_KEYS}, title)


def split_dirs(data_dir: str | Path) -> tuple[Path, Path]:
    data_dir = Path(data_dir)
    train_dir, dev_dir = data_dir / "train", data_dir / "dev"
    for split in (train_dir, dev_dir):
        if not (split / "behaviors.tsv").is_file() or not (split / "news.tsv").is_file():
            raise ValueError(f"{data_dir}: expected MIND-format folders train/ and dev/ with news.tsv and "
                             f"behaviors.tsv ({split} is missing them)")
    return train_dir, dev_dir


def entity_vectors(train_dir: Path, vocabs, seed: int):
    """(entity, context) vector matrices aligned with the entity vocabulary from the training split's
    ``entity_embedding.vec`` / ``context_embedding.vec`` (MIND ships the first), each None when the
    file is absent; coverage is logged."""
    out = []
    for name in (ENTITY_FILE, CONTEXT_FILE):
        loaded = load_entity_vectors(train_dir, vocabs.entities, name, seed) if len(vocabs.entities) > 2 else None
        if loaded is not None:
            log.info("%s: %s", name, loaded[1])
        out.append(None if loaded is None else loaded[0])
    return out


@dataclass
class TrainResult:
    best_metrics: dict
    best_epoch: int
    history: list[dict]


def train(
    config: RunConfig,
    data_dir: str | Path,
    out_dir: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train ``config`` on ``data_dir/train``, select on ``data_dir/dev``, write ``out_dir``.

    An ``out_dir`` that already holds a run is continued with ``resume`` or replaced with
    ``overwrite``; otherwise it is an error, so a finished run is never lost by accident.

    Started by ``torchrun`` (several processes, one machine or many), every process trains on its
    share of each batch (``TrainSampler.epoch``: together exactly the single process's samples;
    ``batch_size`` is the global batch and must divide by the number of processes), DDP averages
    the gradients, evaluation is scored in shards and gathered, and only rank 0 writes.
    """
    out_dir = Path(out_dir)
    if not resume and not overwrite and any((out_dir / name).exists() for name in ("best", "last", "log.jsonl")):
        raise ValueError(f"{out_dir} already holds a run: pass --resume to continue it or --overwrite to replace it")
    tc = config.train
    if tc.epoch_batches is not None and tc.epoch_batches < 1:
        raise ValueError(f"train.epoch_batches must be >= 1 or null, got {tc.epoch_batches}")
    set_threads(tc.threads)
    code_commit()  # asked now, at the start, so that checkpoints name the code this process loaded
    world = join(resolve_device(tc.device), tc.pin_cores)
    try:
        return _train(config, data_dir, out_dir, resume, progress, world)
    finally:
        leave(world)


def _train(config: RunConfig, data_dir: str | Path, out_dir: Path, resume: bool, progress: bool,
           world: World) -> TrainResult:
    tc = config.train
    device = world.device
    if world.distributed and tc.batch_size % world.size:
        raise ValueError(f"train.batch_size {tc.batch_size} must divide by the {world.size} processes")
    main = world.is_main
    progress = progress and main
    if not main:  # one process tells the story
        log.setLevel(logging.WARNING)
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(tc.seed)
    train_dir, dev_dir = split_dirs(data_dir)

    vocabs = load_vocabularies(train_dir, config.data)
    log.info("vocabularies: %s", vocabs.sizes())
    pretrained = None
    if tc.embeddings:
        pretrained, coverage = load_pretrained(tc.embeddings, vocabs.words, seed=tc.seed)
        log.info("pretrained vectors %s: %s", tc.embeddings, coverage)
        if hasattr(config.model, "word_dim"):
            config.model.word_dim = coverage.dim  # the word dimension is the vectors'
    train_table, train_behaviors = load_split(train_dir, vocabs, config.data)
    dev_table, dev_behaviors = load_split(dev_dir, vocabs, config.data)
    for table, split in ((train_table, train_dir), (dev_table, dev_dir)):
        attach_plm(table, split, config.model)  # frozen PLM title vectors when model.news_encoder is plm
    log.info("train: %d news, %d impressions; dev: %d news, %d impressions",
             len(train_table) - 1, len(train_behaviors), len(dev_table) - 1, len(dev_behaviors))

    context = ModelContext(vocabs, pretrained, tc.freeze_embeddings, *entity_vectors(train_dir, vocabs, tc.seed))
    cls = model_class(config.model_name)
    for note in cls.adapt_config(config.model, context, train_table):
        log.info("%s: %s", config.model_name, note)
    model: NewsRecModel = cls(config.model, context).to(device)
    # fused: one kernel over all weights (the same Adam; its step takes 0.9 ms instead of 3.0 ms for
    # NRMS's 1.2M weights on one CPU thread, ~1% of a step, ~2% of a DDP rank's half step)
    optimizer = torch.optim.Adam(model.parameter_groups(tc.lr), lr=tc.lr, fused=True)
    # Under DDP the wrapper runs forward and averages gradients; ``model`` stays the plain module.
    step_model = model
    if world.distributed:
        step_model = data_parallel(model)
        if tc.share_news:
            model.news_sharing = news_sharing(world)
        torch.manual_seed(tc.seed + world.rank)  # dropout differs per rank; the weights came from rank 0
    sampler = TrainSampler(train_behaviors, tc.npratio, tc.batch_size, tc.seed)
    if sampler.dropped:
        log.warning("%d clicks have no non-click in their impression and are not trained on", sampler.dropped)
    train_news = NewsFeatures.from_table(train_table, device)
    dev_click_counts = train_click_counts(train_table, train_behaviors, dev_table)  # [N_dev] novelty's popularity
    if main:
        (out_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")

    history: list[dict] = []
    start_epoch, best_value, best_epoch, best_metrics = 0, -np.inf, -1, {}
    log_path = out_dir / "log.jsonl"
    if resume and (out_dir / "last" / "checkpoint.json").is_file():
        meta = read_meta(out_dir / "last")
        if meta["vocab_digest"] != vocabs.digest():
            raise ValueError(f"{out_dir}/last was trained on other vocabularies; cannot resume on this data")
        model.load_state_dict(read_weights(out_dir / "last", device))
        load_trainer_state(out_dir / "last", optimizer)
        start_epoch = meta["epoch"]
        best_value = -np.inf if meta["best_value"] is None else meta["best_value"]
        best_epoch = meta["best_epoch"]
        best_metrics = read_meta(out_dir / "best")["metrics"] if (out_dir / "best").is_dir() else {}
        if log_path.is_file():
            history = [json.loads(line) for line in log_path.read_text(encoding="utf-8").splitlines()[:start_epoch]]
        world.barrier()  # every rank has read the log before rank 0 rewrites it
        if main:  # epochs logged after the last checkpoint (a crash in between) are trained again
            log_path.write_text("".join(json.dumps(r) + "\n" for r in history), encoding="utf-8")
        log.info("resuming after epoch %d", start_epoch)
    elif main:
        for stale in ("best", "last", "metrics.json", "log.jsonl", "curves.png"):  # --overwrite: start clean
            target = out_dir / stale
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)

    for epoch in range(start_epoch, tc.epochs):
        model.train()
        seen, loss_sum, started = 0, 0.0, time.perf_counter()
        batches = sampler.epoch(epoch, world.rank, world.size)
        total = len(sampler)
        if tc.epoch_batches is not None:  # a fixed prefix of the epoch's shuffled batches
            batches, total = itertools.islice(batches, tc.epoch_batches), min(total, tc.epoch_batches)
        bar = tqdm(batches, total=total, desc=f"epoch {epoch + 1}/{tc.epochs}",
                   unit="batch", disable=not progress, dynamic_ncols=True)
        for batch in bar:
            batch = batch.to(device)
            with autocast(device, tc.amp):
                logits = step_model(batch, train_news).float()  # [B, 1 + npratio] (this rank's share of the batch)
            target = torch.zeros(len(logits), dtype=torch.long, device=device)  # the click is column 0
            loss = F.cross_entropy(logits, target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(logits)
            loss_sum += float(loss.detach()) * len(logits)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}")
        train_seconds = time.perf_counter() - started
        seen, loss_sum = np.sum(world.gather(np.array([seen, loss_sum])), axis=0).tolist()  # all ranks' samples
        seen = int(seen)

        started = time.perf_counter()
        with autocast(device, tc.amp):
            metrics = evaluate(model, dev_table, dev_behaviors, tc.eval_batch_size, device, progress, world,
                               click_counts=dev_click_counts)
        eval_seconds = time.perf_counter() - started
        record = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / max(seen, 1),
            "train_samples": seen,
            "train_seconds": train_seconds,
            "train_samples_per_s": seen / train_seconds if train_seconds else None,
            "dev": json_ready(metrics),
            "eval_seconds": eval_seconds,
            "eval_impressions_per_s": metrics["impressions"] / eval_seconds if eval_seconds else None,
            "peak_rss_mib": peak_rss_mib(),  # this process's, so far (rank 0's under torchrun)
        }
        history.append(record)
        if main:
            with open(log_path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
            write_news_curves(out_dir, history, f"{config.model_name}: {out_dir.name}")
        log.info("epoch %d: loss %.4f, dev auc %.4f mrr %.4f ndcg@5 %.4f ndcg@10 %.4f (%.0f samples/s, %.0f imp/s)",
                 epoch + 1, record["train_loss"], metrics["auc"], metrics["mrr"], metrics["ndcg@5"],
                 metrics["ndcg@10"], record["train_samples_per_s"] or 0, record["eval_impressions_per_s"] or 0)

        value = metrics[tc.select_metric]
        if best_epoch < 0 or value > best_value:
            # A NaN metric (no impression qualifies) keeps the first epoch and never wins afterwards.
            best_value = -np.inf if np.isnan(value) else float(value)
            best_epoch, best_metrics = epoch + 1, metrics
            if main:
                save_checkpoint(out_dir / "best", model, config, vocabs, epoch + 1, json_ready(metrics))
                kept = json_ready({k: metrics[k] for k in (*METRIC_KEYS, "beyond")}) | {
                    "epoch": epoch + 1, "select_metric": tc.select_metric}
                (out_dir / "metrics.json").write_text(json.dumps(kept, indent=2), encoding="utf-8")
        if main:
            save_checkpoint(out_dir / "last", model, config, vocabs, epoch + 1, json_ready(metrics), optimizer,
                            extra={"best_value": None if best_value == -np.inf else best_value,
                                   "best_epoch": best_epoch, "processes": world.size})
        world.barrier()
    return TrainResult(best_metrics=best_metrics, best_epoch=best_epoch, history=history)
