"""Evaluate a sequence model on held-out targets: each test prefix is read, the hidden state of its
last step scores all items, and the target is ranked

- ``full``: against every item;
- ``sampled``: against ``num_negatives`` items drawn uniformly (the Time-LSTM paper's protocol),
  ``repeats`` times with a fixed seed, mean reported (``_std``: spread over the repeats);
- ``by_gap``: both, per bucket of the gap between the last observed event and the target (< 1 min,
  1 min-1 h, 1 h-1 day, > 1 day; :data:`newsrank.seq.metrics.GAP_BUCKETS`), with the count of
  targets in each (the sampled draws are the same as the overall ones, restricted to the bucket).

``eval_delta=constant`` (:class:`~newsrank.seq.config.SeqTrainConfig`) feeds the model a log
without time: every gap of every test prefix, the last one (to the target) included, becomes the
training log's median gap (``data.median_gap_seconds``), so the clock ticks one median per event
(PLSTM's time since the first event is then the step index times the median). The targets and the
``by_gap`` buckets stay those of the real gaps, so the drop against ``eval_delta=real`` is what
the model takes from time, bucket by bucket.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..core.runtime import resolve_device, set_threads
from .batching import to_tensors
from .checkpoint import load_seq_checkpoint
from .config import SeqRunConfig, SeqTrainConfig
from .events import read_events
from .metrics import by_gap, full_ranks, sampled_rank_draws, summarize_draws, summarize_ranks
from .model import TimeSequenceModel
from .sequences import UserSequence, build_sequences, make_split, scale_intervals, split_last


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
        hidden = model(batch["items"], batch["delta_next"], batch["since_first"], batch["mask"],
                       batch["seconds"])  # [B, L, H]
        last = model.last_hidden(hidden, batch["mask"])  # [B, H]
        out[picked] = model.logits(last).float().cpu().numpy()  # [B, V]
    return out


def constant_time(prefix: UserSequence, gap_seconds: float, scale: str) -> UserSequence:
    """``prefix`` with every gap replaced by ``gap_seconds``: event m happens m gaps after the
    first, every ``delta_prev`` (but the first, 0) and every ``delta_next`` (the last one, to the
    target, included) is the gap, scaled like the real intervals."""
    n = len(prefix)
    offsets = np.arange(n, dtype=np.float64) * gap_seconds  # [L] seconds since the first event
    gap = np.full(n, gap_seconds, dtype=np.float64)
    delta_prev = gap.copy()
    delta_prev[:1] = 0.0
    return UserSequence(
        user=prefix.user,
        items=prefix.items,
        timestamps=prefix.timestamps[:1] + np.round(offsets).astype(np.int64),
        delta_prev=scale_intervals(delta_prev, scale),
        delta_next=scale_intervals(gap, scale),
        since_first=scale_intervals(offsets, scale),
    )


def evaluate_targets(model: TimeSequenceModel, test: list[UserSequence], config: SeqTrainConfig,
                     device: torch.device, run_config: SeqRunConfig | None = None) -> dict:
    """``{"full", "sampled", "by_gap", "targets"}`` for the last item of every test sequence.
    ``run_config`` (its data section: interval scale, median gap) is needed for
    ``config.eval_delta == "constant"``."""
    prefixes, targets = split_last(test)
    gaps = np.array([s.timestamps[-1] - s.timestamps[-2] for s in test], dtype=np.float64)  # [N] seconds
    if config.eval_delta == "constant":
        data = run_config.data if run_config is not None else None
        if data is None or data.median_gap_seconds is None:
            raise ValueError("eval_delta=constant needs the training log's median gap (data.median_gap_seconds), "
                             "which training stores in the run's config")
        prefixes = [constant_time(p, data.median_gap_seconds, data.interval_scale) for p in prefixes]
    scores = score_prefixes(model, prefixes, config.eval_batch_size, device)
    full = full_ranks(scores, targets)  # [N]
    draws = sampled_rank_draws(scores, targets, config.num_negatives, config.repeats,
                               np.random.default_rng(config.seed))  # [R, N]
    return {
        "full": summarize_ranks(full, config.ks),
        "sampled": summarize_draws(draws, config.ks),
        "by_gap": by_gap(full, draws, gaps, config.ks),
        "targets": len(targets),
        "eval_delta": config.eval_delta,
    }


def evaluate_run(run: str | Path, events_path: str | Path, format: str = "csv",
                 overrides: list[str] | None = None) -> dict:
    """A saved run's metrics on an event log, with the run's own split protocol and item vocabulary
    (items it never saw are dropped like rare items). ``overrides`` (``--set``) may change the
    evaluation keys of the train section (``eval_delta``, ``ks``, ``num_negatives``, ``repeats``,
    ``eval_batch_size``, ``seed``, ``device``, ``threads``)."""
    model, config, vocab, _ = load_seq_checkpoint(run)
    if overrides:
        from ..core.config import ConfigError, apply_overrides

        allowed = {"eval_delta", "ks", "num_negatives", "repeats", "eval_batch_size", "seed", "device", "threads"}
        for item in overrides:
            key = item.partition("=")[0].strip().removeprefix("train.")
            if key not in allowed:
                raise ConfigError(f"--set {item!r}: evaluate takes only {', '.join(sorted(allowed))}")
        apply_overrides(config, overrides)
        config.validate()
    set_threads(config.train.threads)
    sequences, _ = build_sequences(read_events(events_path, format), config.data, vocab=vocab)
    split = make_split(sequences, config.data)
    device = resolve_device(config.train.device)
    metrics = evaluate_targets(model.to(device), split.test, config.train, device, config)
    return metrics | {"model": config.model.cell, "split": config.data.split, "events": str(events_path)}
