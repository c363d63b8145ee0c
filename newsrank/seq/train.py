"""Train and evaluate a time-aware next-item model on an event log (``newsrank seq train``).

The run configuration is :mod:`.config`'s; evaluation is :mod:`.evaluate`'s; checkpoints are
:mod:`.checkpoint`'s.

Training: every real step of a training sequence predicts the next item (full softmax over the
items, cross-entropy averaged over the valid steps of the batch); sequences are batched in
length order (shuffled batches) so a batch carries little padding. After every epoch the model
is evaluated on the held-out targets (full and sampled ranking, and both by target gap;
:mod:`.evaluate`).

Time scale, fixed once from the training sequences and stored in the run's config (so evaluation,
``--resume`` and ``seq evaluate`` use the same): ``data.median_gap_seconds`` (the median gap, what
``eval_delta=constant`` feeds) and, for PLSTM on its linear clock, the period range
``plstm_period_min/max`` (the ``plstm_gap_quantiles`` of the positive gaps; :func:`resolve_time_scale`).

The paper's protocol (``--set protocol=paper``): with ``test_prefixes_from_epoch`` F >= 1 and the
reference split, epoch e >= F also trains on each test user's first ``ceil((e - F + 1) /
(epochs - F + 1) * Lmax)`` events (``Lmax``: the longest test prefix), never the target: the
prefixes grow from a short head at epoch F to the whole prefix at the last epoch, as in the
official code (which grows them from the epoch after F; ours is the issue's "from epoch 11").

There is no validation split in the paper's protocol, so no checkpoint is *selected*: the model
after the last epoch is kept (``RUN/model``) and its metrics written to ``RUN/metrics.json``;
``RUN/log.jsonl`` has one line per epoch (loss, throughput, the metric sections, peak memory so
far), drawn after every epoch into ``RUN/curves.png`` (when matplotlib is installed); ``RUN/last``
is the latest epoch with the optimizer and RNG states, which ``--resume`` continues (a resumed run
trains exactly as an uninterrupted one).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from tqdm import tqdm

from ..core.checkpoint import load_trainer_state, read_weights
from ..core.plots import write_curves
from ..core.runtime import code_commit, json_ready, peak_rss_mib, resolve_device, set_threads
from .batching import length_batches, to_tensors
from .checkpoint import config_from_header, read_seq_header, save_seq_checkpoint
from .config import SeqRunConfig, SeqTrainConfig
from .evaluate import evaluate_targets
from .events import read_events_with_report
from .model import TimeSequenceModel
from .sequences import UserSequence, build_sequences, make_split, training_gaps

log = logging.getLogger(__name__)

#: the first version's PLSTM period range, on its scaled (log1p) clock
SCALED_PERIOD_RANGE = (1.0, 20.0)
RUN_FILES = ("model", "last", "metrics.json", "log.jsonl", "curves.png")


def resolve_time_scale(config: SeqRunConfig, train: list[UserSequence]) -> list[str]:
    """Fill the time-scale fields left null from the training sequences' gaps (in place); returns
    notes for the log. ``median_gap_seconds``: the median of every gap (zeros included).
    PLSTM periods (linear clock): the ``plstm_gap_quantiles`` of the positive gaps, at least 1 s
    (timestamps are whole seconds); on the scaled clock: the first version's (1, 20)."""
    notes = []
    gaps = training_gaps(train).astype(np.float64)  # [G] seconds
    if config.data.median_gap_seconds is None:
        config.data.median_gap_seconds = float(np.median(gaps)) if len(gaps) else 0.0
        notes.append(f"median training gap {config.data.median_gap_seconds:g} s")
    m = config.model
    if m.cell == "plstm" and m.plstm_period_min is None:
        if m.plstm_time == "scaled":
            m.plstm_period_min, m.plstm_period_max = SCALED_PERIOD_RANGE
        else:
            positive = gaps[gaps > 0]
            if not len(positive):
                raise ValueError("PLSTM's linear clock needs positive gaps in the training log to choose its periods "
                                 "(every gap is 0); set plstm_period_min/max")
            low, high = np.quantile(positive, m.plstm_gap_quantiles)
            m.plstm_period_min = max(float(low), 1.0)
            m.plstm_period_max = max(float(high), m.plstm_period_min)
        notes.append(f"PLSTM periods log-uniform in [{m.plstm_period_min:g}, {m.plstm_period_max:g}] "
                     f"({'seconds' if m.plstm_time == 'linear' else 'scaled time'})")
    return notes


def joining_test_prefixes(test: list[UserSequence], epoch: int, config: SeqTrainConfig) -> list[UserSequence]:
    """The test users' prefixes that join training in ``epoch`` (1-based) under the paper's
    protocol (see the module docstring); empty before ``test_prefixes_from_epoch`` or when it is 0.
    A prefix never reaches the target (each keeps at most all but its last event)."""
    first = config.test_prefixes_from_epoch
    if first == 0 or epoch < first or not test:
        return []
    longest = max(len(s) - 1 for s in test)
    length = math.ceil((epoch - first + 1) / max(config.epochs - first + 1, 1) * longest)
    heads = [s.head(min(length, len(s) - 1)) for s in test]
    return [h for h in heads if len(h) >= 2]


def make_optimizer(model: torch.nn.Module, config: SeqTrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adagrad":
        return torch.optim.Adagrad(model.parameters(), lr=config.lr)
    return torch.optim.Adam(model.parameters(), lr=config.lr)


def clip_gradients(model: TimeSequenceModel, max_norm: float) -> None:
    """Clip the gradient norm to ``max_norm``, PLSTM's clock parameters (``cell.clock_parameters``:
    periods, shifts, r_on) as a group of their own and every other parameter together. One global
    norm would let the clock's gradient, which grows with the number of periods elapsed (~1e5 on
    MovieLens, ~1e3 on the synthetic log, against ~0.03 for the rest), scale every other update
    down by up to 1e-5 and by a factor that jumps from batch to batch. For the other cells the
    clock group is empty and this is the plain global-norm clip."""
    clock = model.cell.clock_parameters()
    ids = {id(p) for p in clock}
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if id(p) not in ids], max_norm)
    if clock:
        torch.nn.utils.clip_grad_norm_(clock, max_norm)


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
        hidden = model(batch["items"], batch["delta_next"], batch["since_first"], batch["mask"],
                       batch["seconds"])  # [B, L, H]
        # step t predicts items[t + 1]; padded targets (0) are ignored
        logits = model.logits(hidden[:, :-1])  # [B, L-1, V]
        targets = batch["items"][:, 1:]  # [B, L-1]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            clip_gradients(model, config.grad_clip)
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
                    overwrite: bool = False, progress: bool = True, resume: bool = False) -> dict:
    """Read the log, build sequences and the split, train, evaluate after every epoch, write the
    run folder; returns the final metrics (also ``RUN/metrics.json``). ``resume`` continues
    ``RUN/last`` (its data and model sections win over ``config``'s; the train section, e.g. a
    larger ``epochs``, is ``config``'s); without ``RUN/last`` it starts afresh."""
    out_dir = Path(out_dir)
    last_dir = out_dir / "last"
    resuming = resume and (last_dir / "checkpoint.json").is_file()
    if not resume and not overwrite and any((out_dir / name).exists() for name in RUN_FILES):
        raise ValueError(f"{out_dir} already holds a run: pass --resume to continue it or --overwrite to replace it")
    meta = None
    if resuming:
        meta = read_seq_header(last_dir)
        saved = config_from_header(meta, str(last_dir / "checkpoint.json"))
        if saved.model.cell != config.model.cell:
            raise ValueError(f"{last_dir} is a {saved.model.cell} run; cannot resume it as {config.model.cell}")
        for name in ("data", "model"):  # the run's own settings win; say so when the command asked otherwise
            asked, kept = dataclasses.asdict(getattr(config, name)), dataclasses.asdict(getattr(saved, name))
            changed = sorted(k for k in asked if asked[k] != kept[k] and asked[k] is not None)
            if changed:
                log.warning("resuming with the run's own %s settings; ignoring %s", name,
                            ", ".join(f"{k}={asked[k]!r}" for k in changed))
        config.data, config.model = saved.data, saved.model
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
    for note in resolve_time_scale(config, split.train):
        log.info("%s", note)
    if tc.test_prefixes_from_epoch and config.data.split != "reference":
        log.info("test_prefixes_from_epoch ignored: under %s the test prefixes are already training data",
                 config.data.split)
        tc.test_prefixes_from_epoch = 0

    model = TimeSequenceModel(config.model, len(vocab)).to(device)
    optimizer = make_optimizer(model, tc)
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / "log.jsonl"
    start_epoch, history = 0, []  # history: the epochs' log records (curves.png draws them all)
    if resuming:
        saved_items = json.loads((last_dir / "items.json").read_text(encoding="utf-8"))["items"]
        if saved_items != vocab.items:
            raise ValueError(f"{last_dir} was trained on another item vocabulary; cannot resume on {events_path}")
        model.load_state_dict(read_weights(last_dir, device))
        load_trainer_state(last_dir, optimizer, rng)
        start_epoch = int(meta["epoch"])
        # epochs logged after the last checkpoint (a crash in between) are trained again
        lines = log_path.read_text(encoding="utf-8").splitlines()[:start_epoch] if log_path.is_file() else []
        log_path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        history = [json.loads(line) for line in lines]
        log.info("resuming after epoch %d", start_epoch)
    else:
        for stale in RUN_FILES:
            target = out_dir / stale
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    (out_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")

    record: dict = {}
    for epoch in range(start_epoch, tc.epochs):
        joined = joining_test_prefixes(split.test, epoch + 1, tc)
        record = {"epoch": epoch + 1, **train_epoch(model, split.train + joined, optimizer, tc, rng, device,
                                                   progress, desc=f"epoch {epoch + 1}/{tc.epochs}")}
        record["test_prefixes_trained"] = len(joined)
        started = time.perf_counter()
        record.update(evaluate_targets(model, split.test, tc, device, config))
        record["eval_seconds"] = time.perf_counter() - started
        record["peak_rss_mib"] = peak_rss_mib()
        record = json_ready(record)
        with open(log_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        save_seq_checkpoint(last_dir, model, config, vocab, epoch + 1, record, optimizer, rng)
        history.append(record)
        write_seq_curves(out_dir, history, tc.ks, f"{config.model.cell}: {out_dir.name}")
        k = tc.ks[0]
        log.info("epoch %d: loss %.4f; full recall@%d %.4f mrr@%d %.4f; sampled recall@%d %.4f mrr@%d %.4f "
                 "(%.1f sequences/s)", epoch + 1, record["train_loss"], k, record["full"][f"recall@{k}"], k,
                 record["full"][f"mrr@{k}"], k, record["sampled"][f"recall@{k}"], k,
                 record["sampled"][f"mrr@{k}"], record["train_sequences_per_s"] or 0)
    if not record:  # resumed a run that had trained every epoch already: report it as it stands
        record = dict(history[-1]) if history else {"train_sequences_per_s": None}
        record.update(json_ready(evaluate_targets(model, split.test, tc, device, config)))

    metrics = {"model": config.model.cell, "epoch": tc.epochs, "split": config.data.split,
               "protocol": tc.protocol, "full": record["full"], "sampled": record["sampled"],
               "by_gap": record["by_gap"], "eval_delta": record["eval_delta"], "targets": record["targets"],
               "items": len(vocab) - 1, "train_sequences": len(split.train),
               "train_sequences_per_s": record["train_sequences_per_s"],
               "median_gap_seconds": config.data.median_gap_seconds}
    save_seq_checkpoint(out_dir / "model", model, config, vocab, tc.epochs, metrics)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    return metrics
