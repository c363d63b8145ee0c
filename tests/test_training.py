"""Sampler, trainer, checkpoints and resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from newsrank.checkpoint import load_checkpoint, resolve_run
from newsrank.config import DataConfig, load_config
from newsrank.data.batching import TrainSampler
from newsrank.data.dataset import Behaviors, load_split
from newsrank.evaluate import score_behaviors
from newsrank.models.nrms import NRMSConfig
from newsrank.train import train


def toy_behaviors(labels_per_impression: list[list[int]]) -> Behaviors:
    lengths = [len(x) for x in labels_per_impression]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    total = int(offsets[-1])
    return Behaviors(
        impression_ids=[str(i + 1) for i in range(len(lengths))],
        users=np.arange(len(lengths), dtype=np.int32),
        times=np.zeros(len(lengths), dtype=np.int64),
        history=np.ones((len(lengths), 3), dtype=np.int32),
        offsets=offsets,
        candidates=np.arange(1, total + 1, dtype=np.int32),  # candidate rows 1..T, unique
        labels=np.concatenate([np.asarray(x, dtype=np.int8) for x in labels_per_impression]),
    )


def test_sampler_pairs_each_click_with_non_clicks_of_its_own_impression():
    behaviors = toy_behaviors([[1, 0, 0, 0, 0, 0, 0], [0, 1, 1, 0], [1, 1], [0, 0, 1]])
    sampler = TrainSampler(behaviors, npratio=4, batch_size=2, seed=0)
    assert sampler.samples == 4 and sampler.dropped == 2  # impression 3 has no non-click
    owner = {}
    for i in range(len(behaviors)):
        for t in range(behaviors.offsets[i], behaviors.offsets[i + 1]):
            owner[int(behaviors.candidates[t])] = (i, int(behaviors.labels[t]))
    seen_clicks = []
    for batch in sampler.epoch(0):
        for row in batch.candidates.tolist():
            click, negatives = row[0], row[1:]
            impression, label = owner[click]
            assert label == 1
            seen_clicks.append(click)
            assert all(owner[n] == (impression, 0) for n in negatives)
            n_neg = int((behaviors.labels[behaviors.offsets[impression]:behaviors.offsets[impression + 1]] == 0).sum())
            # Without replacement when there are enough, otherwise every non-click is used.
            assert len(set(negatives)) == min(4, n_neg)
    assert sorted(seen_clicks) == [1, 9, 10, 16]  # every usable click exactly once


def test_sampler_is_deterministic_per_seed_and_epoch():
    behaviors = toy_behaviors([[1, 0, 0, 0, 0, 0, 0, 0]] * 20)
    a = [b.candidates for b in TrainSampler(behaviors, 4, 8, seed=3).epoch(1)]
    b = [b.candidates for b in TrainSampler(behaviors, 4, 8, seed=3).epoch(1)]
    c = [b.candidates for b in TrainSampler(behaviors, 4, 8, seed=3).epoch(2)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def tiny_config(epochs=2):
    config = load_config("nrms", NRMSConfig)
    config.model = NRMSConfig(word_dim=16, heads=2, head_dim=4, attention_hidden=8, dropout=0.1)
    config.data = DataConfig(title_len=12, history_len=10)
    config.train.epochs = epochs
    config.train.batch_size = 16
    config.train.lr = 3e-3
    return config


def test_training_is_repeatable_and_keeps_the_best_checkpoint(synth_dir, tmp_path):
    first = train(tiny_config(), synth_dir, tmp_path / "a", progress=False)
    second = train(tiny_config(), synth_dir, tmp_path / "b", progress=False)
    assert first.best_metrics == second.best_metrics
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert set(metrics) >= {"auc", "mrr", "ndcg@5", "ndcg@10", "impressions"}
    best_epoch = max(first.history, key=lambda r: r["dev"]["auc"])["epoch"]
    assert metrics["epoch"] == best_epoch == first.best_epoch
    lines = (tmp_path / "a" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]


def test_checkpoint_round_trip_gives_identical_scores(synth_dir, tmp_path):
    config = tiny_config(epochs=1)
    train(config, synth_dir, tmp_path / "run", progress=False)
    checkpoint = load_checkpoint(resolve_run(tmp_path / "run"))
    assert checkpoint.meta["model"] == "nrms"
    assert checkpoint.config.model == config.model
    table, behaviors = load_split(synth_dir / "dev", checkpoint.vocabs, checkpoint.config.data)
    scores = score_behaviors(checkpoint.model, table, behaviors)
    again = score_behaviors(load_checkpoint(tmp_path / "run" / "best").model, table, behaviors)
    np.testing.assert_array_equal(scores, again)
    # Only JSON and safetensors in a checkpoint: nothing to unpickle.
    names = {p.name for p in (tmp_path / "run" / "best").iterdir()}
    assert names == {"checkpoint.json", "vocab.json", "model.safetensors"}
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    from newsrank.metrics import impression_metrics

    recomputed = impression_metrics(scores, np.asarray(behaviors.labels), np.asarray(behaviors.offsets))
    assert recomputed["auc"] == pytest.approx(metrics["auc"], abs=1e-6)


def test_resume_continues_to_the_same_result(synth_dir, tmp_path):
    straight = train(tiny_config(epochs=2), synth_dir, tmp_path / "straight", progress=False)
    train(tiny_config(epochs=1), synth_dir, tmp_path / "resumed", progress=False)
    resumed = train(tiny_config(epochs=2), synth_dir, tmp_path / "resumed", resume=True, progress=False)
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    assert resumed.history[-1]["dev"]["auc"] == pytest.approx(straight.history[-1]["dev"]["auc"], abs=1e-6)
    assert resumed.history[-1]["train_loss"] == pytest.approx(straight.history[-1]["train_loss"], rel=1e-5)


def test_epoch_batches_caps_each_epoch(synth_dir, tmp_path):
    config = tiny_config(epochs=2)
    config.train.epoch_batches = 2
    result = train(config, synth_dir, tmp_path / "run", progress=False)
    assert [r["train_samples"] for r in result.history] == [2 * config.train.batch_size] * 2
    config.train.epoch_batches = 0
    with pytest.raises(ValueError, match="epoch_batches"):
        train(config, synth_dir, tmp_path / "bad", progress=False)
