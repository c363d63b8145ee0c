"""Plain helpers shared by the model tests (imported as ``from helpers import ...``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from newsrank.data.batching import NewsFeatures, TrainSampler


def overfit_losses(model, table, behaviors, steps: int, lr: float = 3e-3, batch_size: int = 16) -> tuple[float, float]:
    """First and last loss of ``steps`` Adam steps on one fixed batch (1 click + 4 non-clicks)."""
    model.train()
    news = NewsFeatures.from_table(table)
    batch = next(TrainSampler(behaviors, npratio=4, batch_size=batch_size, seed=0).epoch(0))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    target = torch.zeros(len(batch.users), dtype=torch.long)
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(model(batch, news), target)
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return losses[0], losses[-1]


def load_tiny_splits(synth_dir, config):
    """Vocabularies from ``synth_dir/train`` and the (table, behaviors) of both splits under ``config``."""
    from newsrank.data.dataset import load_split, load_vocabularies

    vocabs = load_vocabularies(synth_dir / "train", config)
    return vocabs, load_split(synth_dir / "train", vocabs, config), load_split(synth_dir / "dev", vocabs, config)


def assert_fast_equals_slow(model, table, behaviors) -> None:
    """The fast evaluation path (news once, users once) gives the one-at-a-time path's scores,
    whatever the batch size."""
    import numpy as np

    from newsrank.evaluate import score_behaviors, score_one_at_a_time

    fast = score_behaviors(model, table, behaviors, batch_size=7)
    slow = score_one_at_a_time(model, table, behaviors)
    np.testing.assert_allclose(fast, slow, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(score_behaviors(model, table, behaviors, batch_size=1000), fast, rtol=1e-5, atol=1e-6)
