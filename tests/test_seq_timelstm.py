"""Issue 15: PLSTM on a linear, data-chosen clock; the paper's protocol preset; metrics by target
gap; evaluation without real time (eval_delta=constant); `newsrank seq train --resume`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from newsrank.cli import main
from newsrank.seq import build_sequences, load_seq_config, make_split, read_events
from newsrank.seq.batching import to_tensors
from newsrank.seq.cells import PhasedLSTMCell
from newsrank.seq.checkpoint import config_from_header
from newsrank.seq.config import SeqTrainConfig
from newsrank.seq.evaluate import constant_time
from newsrank.seq.metrics import GAP_BUCKETS, by_gap, full_ranks, summarize_ranks
from newsrank.seq.model import SeqModelConfig, TimeSequenceModel
from newsrank.seq.sequences import SequenceConfig, UserSequence
from newsrank.seq.synth import SeqSynthConfig, write_synthetic_events
from newsrank.seq.train import joining_test_prefixes, resolve_time_scale

TINY = ["--set", "hidden=8", "--set", "embedding_dim=8", "--set", "batch_size=16", "--set", "repeats=2",
        "--set", "num_negatives=20", "--set", "threads=1"]


@pytest.fixture(scope="module")
def log_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("seqlog15")
    path = folder / "log.csv"
    write_synthetic_events(path, SeqSynthConfig(users=60, items=40, seed=3))
    return path


@pytest.fixture(scope="module")
def synthetic_split():
    """The synthetic log's training sequences (200 users), as the trainer sees them."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "log.csv"
        write_synthetic_events(path, SeqSynthConfig(users=200, items=100, seed=0))
        events = read_events(path)
    config = load_seq_config("plstm", overrides=["split=leave_last_out"])
    sequences, vocab = build_sequences(events, config.data)
    return config, make_split(sequences, config.data), vocab


def _units_opened_at_least_once(cell: PhasedLSTMCell, clock: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B] share of the units whose open window (phase < r_on) holds at least one real step."""
    tau = cell.log_tau.double().exp()
    phase = torch.remainder(clock.double().unsqueeze(-1) - cell.shift.double(), tau) / tau  # [B, L, H]
    opened = (phase < cell.r_on_init) & mask.unsqueeze(-1)
    return opened.any(dim=1).double().mean(dim=1)


# ---------------------------------------------------------------- PLSTM's clock


def test_plstm_periods_come_from_the_training_gaps_and_most_units_open_over_a_prefix(synthetic_split):
    config, split, vocab = synthetic_split
    config = load_seq_config("plstm", overrides=["split=leave_last_out"])
    assert config.model.plstm_period_min is None  # chosen from the data by default
    resolve_time_scale(config, split.train)
    gaps = np.concatenate([np.diff(s.timestamps) for s in split.train]).astype(float)
    low, high = np.quantile(gaps[gaps > 0], [0.1, 0.9])
    assert config.model.plstm_period_min == pytest.approx(max(low, 1.0))
    assert config.model.plstm_period_max == pytest.approx(high)
    assert config.data.median_gap_seconds == pytest.approx(np.median(gaps))

    torch.manual_seed(0)
    model = TimeSequenceModel(config.model, len(vocab))
    batch = to_tensors(split.train, torch.device("cpu"))
    linear = _units_opened_at_least_once(model.cell, batch["seconds"], batch["mask"])  # [B]
    # at init a large share of the units opens at least once over a typical prefix
    assert float(linear.median()) >= 0.7, float(linear.median())

    # the first version's clock, ln(1 + seconds since the first event), leaves most of them shut
    scaled = load_seq_config("plstm", overrides=["split=leave_last_out", "plstm_time=scaled"])
    resolve_time_scale(scaled, split.train)
    assert (scaled.model.plstm_period_min, scaled.model.plstm_period_max) == (1.0, 20.0)
    torch.manual_seed(0)
    old = TimeSequenceModel(scaled.model, len(vocab))
    shut = _units_opened_at_least_once(old.cell, batch["since_first"], batch["mask"])
    assert float(shut.median()) < 0.6 < float(linear.median())


def test_plstm_phase_is_exact_at_large_times():
    """1e8 s into a history a 60 s period still has its exact phase (float64; float32 steps 8 s)."""
    cell = PhasedLSTMCell(3, 2, r_on=0.5, leak=0.0, period_range=(60.0, 60.0))
    with torch.no_grad():
        cell.shift.zero_()
    t = torch.tensor([1e8 + 6.0, 1e8 + 37.5, 1e8 + 41.0], dtype=torch.float64)
    k = cell.openness(t)[:, 0]
    tau = float(cell.log_tau[0].detach().double().exp())  # the period the float32 parameter stores (60 ± 4e-6)
    phase = np.array([1e8 + 6.0, 1e8 + 37.5, 1e8 + 41.0]) % tau / tau
    want = np.where(phase < 0.25, 2 * phase / 0.5, np.where(phase < 0.5, 2 - 2 * phase / 0.5, 0.0))
    np.testing.assert_allclose(k.detach().numpy(), want, atol=1e-6)


def test_plstm_leak_at_eval_option():
    cell = PhasedLSTMCell(3, 2, r_on=0.2, leak=0.01, period_range=(10.0, 10.0), leak_at_eval=True).eval()
    with torch.no_grad():
        cell.shift.zero_()
    t = torch.tensor([5.0], dtype=torch.float64)  # phase 0.5: closed
    assert float(cell.openness(t)[0, 0].detach()) == pytest.approx(0.01 * 0.5)
    cell.leak_at_eval = False
    assert float(cell.openness(t)[0, 0].detach()) == 0.0
    cell.train()
    assert float(cell.openness(t)[0, 0].detach()) == pytest.approx(0.01 * 0.5)


def test_plstm_learnable_r_on_gets_gradients_and_stays_in_range():
    torch.manual_seed(0)
    cell = PhasedLSTMCell(3, 4, r_on=0.05, period_range=(10.0, 100.0), learn_r_on=True)
    assert torch.allclose(cell.r_on, torch.full((4,), 0.05))
    opt = torch.optim.SGD([cell.r_on_logit], lr=100.0)
    t = torch.linspace(0, 500, 200, dtype=torch.float64)
    for _ in range(5):
        loss = -cell.openness(t).mean()  # wider windows open more: pushes r_on up
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (cell.r_on > 0.05).all() and (cell.r_on < 1.0).all()
    fixed = PhasedLSTMCell(3, 4, period_range=(10.0, 100.0))
    assert not hasattr(fixed, "r_on_logit")


def test_plstm_model_reads_seconds_on_its_linear_clock():
    torch.manual_seed(0)
    config = SeqModelConfig(cell="plstm", embedding_dim=4, hidden=6, plstm_period_min=10.0, plstm_period_max=100.0)
    model = TimeSequenceModel(config, 9).eval()
    items = torch.tensor([[1, 2, 3, 4]])
    mask = torch.ones_like(items, dtype=torch.bool)
    zeros = torch.zeros(1, 4)
    seconds = torch.tensor([[0.0, 40.0, 95.0, 1000.0]], dtype=torch.float64)
    with pytest.raises(ValueError, match="seconds"):
        model(items, zeros, zeros, mask)
    a = model(items, zeros, zeros, mask, seconds)
    b = model(items, zeros + 7, zeros + 3, mask, seconds)  # the scaled inputs are not PLSTM's clock
    torch.testing.assert_close(a, b)
    c = model(items, zeros, zeros, mask, seconds * 1.37)
    assert not torch.allclose(a, c)


def test_old_plstm_checkpoints_keep_their_scaled_clock():
    meta = {"config": {"model": {"cell": "plstm", "plstm_period_min": 1.0, "plstm_period_max": 20.0}}}
    config = config_from_header(meta, "old.json")
    assert config.model.plstm_time == "scaled" and config.model.plstm_leak_at_eval is False


def test_to_tensors_seconds_are_float64_since_each_rows_first_event():
    seqs = [UserSequence("a", np.array([1, 2, 3]), np.array([10**9, 10**9 + 5, 10**9 + 65]), *[np.zeros(3)] * 3),
            UserSequence("b", np.array([4, 5]), np.array([7, 9]), *[np.zeros(2)] * 3)]
    seconds = to_tensors(seqs, torch.device("cpu"))["seconds"]
    assert seconds.dtype == torch.float64
    assert seconds.tolist() == [[0.0, 5.0, 65.0], [0.0, 2.0, 0.0]]


# ---------------------------------------------------------------- the paper's protocol


def test_paper_preset_layers_the_official_settings():
    config = load_seq_config("tlstm1", overrides=["protocol=paper"])
    t, d = config.train, config.data
    assert (t.protocol, t.batch_size, t.epochs, t.test_prefixes_from_epoch, t.optimizer, t.lr, t.grad_clip) == (
        "paper", 5, 50, 11, "adagrad", 0.01, 0.0)
    assert (d.max_items, d.max_length, d.keep_events, d.split) == (5000, 200, "first", "reference")
    # a --set still wins, wherever protocol= stands
    config = load_seq_config("tlstm1", overrides=["epochs=3", "protocol=paper"])
    assert config.train.epochs == 3 and config.train.batch_size == 5
    default = load_seq_config("tlstm1")
    assert (default.train.protocol, default.train.batch_size, default.train.test_prefixes_from_epoch) == (
        "default", 32, 0)
    with pytest.raises(ValueError, match="protocol"):
        load_seq_config("tlstm1", overrides=["protocol=nature"])


def test_keep_events_first_keeps_the_first_events():
    import pandas as pd

    events = pd.DataFrame({"user": ["u"] * 5, "item": list("abcde"), "timestamp": [1, 2, 3, 4, 5]})
    (last,), vocab = build_sequences(events, SequenceConfig(max_length=3))
    (first,), _ = build_sequences(events, SequenceConfig(max_length=3, keep_events="first"))
    assert [vocab.items[i] for i in last.items] == ["c", "d", "e"]
    assert [vocab.items[i] for i in first.items] == ["a", "b", "c"]


def test_test_prefixes_grow_from_the_first_joined_epoch_and_never_reach_the_target():
    test = [UserSequence(f"u{n}", np.arange(1, n + 1), np.arange(n), *[np.zeros(n)] * 3) for n in (5, 11, 21)]
    config = SeqTrainConfig(epochs=14, test_prefixes_from_epoch=11)
    assert joining_test_prefixes(test, 10, config) == []
    lengths = {e: [len(p) for p in joining_test_prefixes(test, e, config)] for e in (11, 12, 14)}
    assert lengths[11] == [4, 5, 5]  # ceil(1/4 * 20) = 5, capped at all but the target
    assert lengths[12] == [4, 10, 10]
    assert lengths[14] == [4, 10, 20]  # the whole prefixes at the last epoch
    for epoch in range(11, 15):
        for prefix, full in zip(joining_test_prefixes(test, epoch, config), test):
            assert full.items[-1] not in prefix.items  # the items are distinct here: the target never joins
    assert joining_test_prefixes(test, 14, SeqTrainConfig(epochs=14)) == []  # 0: never


def test_paper_protocol_trains_on_test_prefixes_in_the_log(log_file, tmp_path):
    run = tmp_path / "run"
    assert main(["seq", "train", "--model", "lstm", "--events", str(log_file), "--out", str(run), "-q", *TINY,
                 "--set", "protocol=paper", "--set", "epochs=3", "--set", "test_prefixes_from_epoch=2"]) == 0
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["test_prefixes_trained"] for r in log] == [0, 12, 12]
    assert log[1]["train_sequences"] == log[0]["train_sequences"] + 12
    assert json.loads((run / "metrics.json").read_text())["protocol"] == "paper"


# ---------------------------------------------------------------- metrics by gap


def test_by_gap_buckets_split_the_targets():
    ranks = np.array([1, 3, 20, 2, 50, 1])
    draws = np.array([[1, 2, 5, 1, 11, 1], [1, 1, 12, 2, 9, 1]])
    gaps = np.array([0, 59, 60, 3599, 86399, 86400])
    out = by_gap(ranks, draws, gaps, ks=[10])
    assert [name for name, _, _ in GAP_BUCKETS] == list(out) == ["<1min", "1min-1h", "1h-1d", ">1d"]
    assert [out[b]["count"] for b in out] == [2, 2, 1, 1]
    assert out["<1min"]["full"] == summarize_ranks(np.array([1, 3]), [10])
    assert out["1min-1h"]["full"]["recall@10"] == 0.5
    assert out["1h-1d"]["sampled"]["recall@10"] == 0.5  # 9 in one draw, 11 in the other
    assert out[">1d"]["full"] == {"recall@10": 1.0, "mrr@10": 1.0}


def test_metrics_json_has_by_gap_counts_that_add_up(log_file, tmp_path):
    run = tmp_path / "run"
    assert main(["seq", "train", "--model", "tlstm1", "--events", str(log_file), "--out", str(run), "--epochs", "1",
                 "-q", *TINY]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    buckets = metrics["by_gap"]
    assert sum(b["count"] for b in buckets.values()) == metrics["targets"]
    for b in buckets.values():
        assert set(b) == {"count", "full", "sampled"}
        if b["count"]:
            assert 0 <= b["full"]["mrr@10"] <= b["full"]["recall@10"] <= 1
    # the counts are those of the real gaps to the targets
    model_config = load_seq_config("tlstm1")
    sequences, _ = build_sequences(read_events(log_file), model_config.data)
    test = make_split(sequences, model_config.data).test
    gaps = np.array([s.timestamps[-1] - s.timestamps[-2] for s in test])
    assert buckets[">1d"]["count"] == int((gaps >= 86400).sum())
    assert metrics["median_gap_seconds"] > 0


# ---------------------------------------------------------------- eval_delta=constant


def test_constant_time_replaces_every_gap_by_the_median():
    prefix = UserSequence("u", np.array([3, 4, 5]), np.array([100, 160, 5000]), np.zeros(3), np.ones(3), np.zeros(3))
    out = constant_time(prefix, 30.0, "log1p")
    assert out.timestamps.tolist() == [100, 130, 160]
    np.testing.assert_allclose(out.delta_next, np.log1p([30.0, 30.0, 30.0]))
    np.testing.assert_allclose(out.delta_prev, np.log1p([0.0, 30.0, 30.0]))
    np.testing.assert_allclose(out.since_first, np.log1p([0.0, 30.0, 60.0]))
    assert out.items is prefix.items


def test_eval_delta_constant_changes_time_models_only(log_file, tmp_path):
    scores = {}
    for model in ("lstm", "tlstm1", "plstm"):
        run = tmp_path / model
        assert main(["seq", "train", "--model", model, "--events", str(log_file), "--out", str(run), "--epochs", "1",
                     "-q", *TINY]) == 0
        real = json.loads((run / "metrics.json").read_text())
        out = tmp_path / f"{model}-constant.json"
        assert main(["seq", "evaluate", "--run", str(run), "--events", str(log_file), "--out", str(out), "-q",
                     "--set", "eval_delta=constant"]) == 0
        constant = json.loads(out.read_text())
        assert constant["eval_delta"] == "constant" and constant["targets"] == real["targets"]
        assert [b["count"] for b in constant["by_gap"].values()] == [b["count"] for b in real["by_gap"].values()]
        scores[model] = (real, constant)
    real, constant = scores["lstm"]  # the LSTM never reads time: nothing changes
    assert constant["full"] == pytest.approx(real["full"]) and constant["sampled"] == pytest.approx(real["sampled"])
    for model in ("tlstm1", "plstm"):
        real, constant = scores[model]
        assert constant["full"] != pytest.approx(real["full"]) or constant["sampled"] != pytest.approx(
            real["sampled"]), model


def test_evaluate_takes_only_evaluation_settings(log_file, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["seq", "train", "--model", "lstm", "--events", str(log_file), "--out", str(run), "--epochs", "1",
                 "-q", *TINY]) == 0
    assert main(["seq", "evaluate", "--run", str(run), "--events", str(log_file), "-q", "--set", "hidden=4"]) == 2
    assert "evaluate takes only" in capsys.readouterr().err
    assert main(["seq", "evaluate", "--run", str(run), "--events", str(log_file), "-q",
                 "--set", "eval_delta=sometimes"]) == 2


# ---------------------------------------------------------------- --resume


@pytest.mark.parametrize("model", ["tlstm2", "plstm"])
def test_resume_trains_exactly_as_an_uninterrupted_run(model, log_file, tmp_path):
    straight, split_run = tmp_path / "straight", tmp_path / "split"
    common = ["seq", "train", "--model", model, "--events", str(log_file), "-q", *TINY, "--set", "dropout=0.2"]
    assert main([*common, "--out", str(straight), "--epochs", "3"]) == 0
    assert main([*common, "--out", str(split_run), "--epochs", "1"]) == 0
    assert main([*common, "--out", str(split_run), "--epochs", "3"]) == 2  # a run is there: say --resume
    assert main([*common, "--out", str(split_run), "--epochs", "3", "--resume"]) == 0
    a = json.loads((straight / "metrics.json").read_text())
    b = json.loads((split_run / "metrics.json").read_text())
    assert a["full"] == b["full"] and a["sampled"] == b["sampled"]
    log_a = [json.loads(x) for x in (straight / "log.jsonl").read_text().splitlines()]
    log_b = [json.loads(x) for x in (split_run / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log_b] == [1, 2, 3]
    assert [r["train_loss"] for r in log_a] == [r["train_loss"] for r in log_b]
    # the resumed run keeps the data-chosen time scale of its first epoch
    assert (straight / "config.yaml").read_text() == (split_run / "config.yaml").read_text()


def test_resume_refuses_another_model(log_file, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["seq", "train", "--model", "lstm", "--events", str(log_file), "--out", str(run), "--epochs", "1",
                 "-q", *TINY]) == 0
    assert main(["seq", "train", "--model", "tlstm1", "--events", str(log_file), "--out", str(run), "--epochs", "2",
                 "-q", *TINY, "--resume"]) == 2
    assert "cannot resume" in capsys.readouterr().err


def test_full_metrics_equal_the_summarized_full_ranks():
    scores = np.array([[-np.inf, 1.0, 2.0, 3.0], [-np.inf, 3.0, 2.0, 1.0]], dtype=np.float32)
    targets = np.array([1, 1])
    assert full_ranks(scores, targets).tolist() == [3, 1]
    assert summarize_ranks(full_ranks(scores, targets), [1]) == {"recall@1": 0.5, "mrr@1": 0.5}
    assert math.isnan(summarize_ranks(np.array([], dtype=int), [1])["recall@1"])


def test_plstm_clock_gradients_are_clipped_apart_from_the_rest(synthetic_split):
    """The gradient of log τ grows with the number of periods elapsed (∂φ/∂log τ = −(t − s)/τ):
    on a real batch it dwarfs every other gradient, and one global norm would shrink them all.
    clip_gradients clips the clock parameters as a group of their own; for the other cells it is
    the plain global-norm clip."""
    from newsrank.seq.train import clip_gradients

    _, split, vocab = synthetic_split
    train = split.train
    config = SeqModelConfig(cell="plstm", hidden=16, embedding_dim=8, plstm_period_min=26.0, plstm_period_max=3600.0)
    torch.manual_seed(0)
    model = TimeSequenceModel(config, num_items=len(vocab))
    batch = to_tensors(train[:16], torch.device("cpu"))
    hidden = model(batch["items"], batch["delta_next"], batch["since_first"], batch["mask"], batch["seconds"])
    logits = model.logits(hidden[:, :-1])
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["items"][:, 1:].reshape(-1),
                                             ignore_index=0)
    loss.backward()
    clock = model.cell.clock_parameters()
    assert [p is q for p, q in zip(clock, (model.cell.log_tau, model.cell.shift))] == [True, True]
    rest = [p for p in model.parameters() if all(p is not q for q in clock)]
    clock_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in clock])).item()
    rest_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in rest])).item()
    assert clock_norm > 100 * rest_norm and rest_norm < 5.0  # the clock's gradient dominates
    before = [p.grad.clone() for p in rest]
    clip_gradients(model, 5.0)
    for p, g in zip(rest, before):
        torch.testing.assert_close(p.grad, g)  # under 5: left alone, not scaled by the clock's norm
    after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in clock])).item()
    assert after == pytest.approx(5.0, rel=1e-4)
    lstm = TimeSequenceModel(SeqModelConfig(cell="tlstm1", hidden=4, embedding_dim=4), num_items=5)
    assert lstm.cell.clock_parameters() == []
    for p in lstm.parameters():
        p.grad = torch.full_like(p, 10.0)
    clip_gradients(lstm, 1.0)
    total = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in lstm.parameters()])).item()
    assert total == pytest.approx(1.0, rel=1e-4)
