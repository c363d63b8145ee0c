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


# Tiny settings (``key=value`` overrides) per registered model: the CLI test trains every model
# with them, and the contract tests (test_contract.py) build every model from them.
TINY_OVERRIDES = {
    "nrms": ["word_dim=16", "heads=2", "head_dim=4", "attention_hidden=8", "title_len=12", "history_len=10",
             "batch_size=16", "lr=3e-3"],
    "lstur": ["word_dim=16", "filters=8", "attention_hidden=8", "title_len=12", "history_len=10", "batch_size=16"],
    "npa": ["word_dim=16", "filters=8", "user_dim=6", "attention_hidden=8", "history_len=10", "batch_size=16"],
    "naml": ["word_dim=16", "filters=8", "attention_hidden=8", "category_dim=4", "title_len=12", "abstract_len=20",
             "history_len=10", "batch_size=16"],
    "fum": ["word_dim=16", "heads=2", "head_dim=4", "attention_hidden=8", "category_dim=4", "entity_dim=4",
            "fastformer_dim=8", "fastformer_heads=2", "tokens_per_news=14", "fine_user_dim=3", "fine_news_dim=6",
            "title_len=12", "abstract_len=20",
            "entity_len=4", "history_len=10", "batch_size=16"],
    "gru": ["word_dim=16", "filters=8", "attention_hidden=8", "title_len=12", "history_len=10", "batch_size=16"],
    "dkn": ["word_dim=16", "filters=6", "attention_hidden=8", "dnn_hidden=8", "title_len=12", "history_len=10",
            "batch_size=16"],
    "fim": ["word_dim=16", "filters=8", "conv3d_filters=[4, 3]", "title_words=9", "history_clicks=10",
            "title_len=12", "history_len=10", "batch_size=16", "eval_batch_size=37"],
}


def tiny_run_config(name: str):
    """The model's packaged defaults with its TINY_OVERRIDES applied."""
    from newsrank.config import apply_overrides, load_config
    from newsrank.models import model_class

    config = load_config(name, model_class(name).config_class)
    apply_overrides(config, TINY_OVERRIDES[name])
    return config
