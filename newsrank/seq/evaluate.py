"""Evaluate a sequence model on held-out targets: each test prefix is read, the hidden state of its
last step scores all items, and the target is ranked

- ``full``: against every item;
- ``sampled``: against ``num_negatives`` items drawn uniformly (the Time-LSTM paper's protocol),
  ``repeats`` times with a fixed seed, mean reported (``_std``: spread over the repeats).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..core.runtime import resolve_device
from .batching import to_tensors
from .checkpoint import load_seq_checkpoint
from .config import SeqTrainConfig
from .events import read_events
from .metrics import full_ranking_metrics, sampled_metrics
from .model import TimeSequenceModel
from .sequences import UserSequence, build_sequences, make_split, split_last


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


def evaluate_run(run: str | Path, events_path: str | Path, format: str = "csv") -> dict:
    """A saved run's metrics on an event log, with the run's own split protocol and item vocabulary
    (items it never saw are dropped like rare items)."""
    model, config, vocab, _ = load_seq_checkpoint(run)
    sequences, _ = build_sequences(read_events(events_path, format), config.data, vocab=vocab)
    split = make_split(sequences, config.data)
    device = resolve_device(config.train.device)
    metrics = evaluate_targets(model.to(device), split.test, config.train, device)
    return metrics | {"model": config.model.cell, "split": config.data.split, "events": str(events_path)}
