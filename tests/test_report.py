"""Training curves (RUN/curves.png), peak memory and commit in the run files, and `newsrank report`
on tiny news and sequence runs."""

from __future__ import annotations

import json
import logging

import pytest

from newsrank.cli import main
from newsrank.core import plots
from newsrank.report import config_differences, read_run

PNG = b"\x89PNG\r\n\x1a\n"
NEWS_TINY = ["--set", "word_dim=16", "--set", "heads=2", "--set", "head_dim=4", "--set", "attention_hidden=8",
             "--set", "title_len=12", "--set", "history_len=10", "--set", "batch_size=16", "--set", "threads=1"]
SEQ_TINY = ["--set", "hidden=8", "--set", "embedding_dim=8", "--set", "batch_size=16", "--set", "repeats=2",
            "--set", "num_negatives=20", "--set", "threads=1"]


@pytest.fixture(scope="module")
def runs(synth_dir, tmp_path_factory):
    """Two NRMS runs that differ in lr (one with an evaluate output) and one Time-LSTM run."""
    pytest.importorskip("matplotlib")
    root = tmp_path_factory.mktemp("runs")
    for name, lr in (("nrms-a", "1e-3"), ("nrms-b", "3e-3")):
        assert main(["train", "--model", "nrms", "--data", str(synth_dir), "--out", str(root / name), "--epochs", "2",
                     "--set", f"lr={lr}", "-q", *NEWS_TINY]) == 0
    assert main(["evaluate", "--run", str(root / "nrms-b"), "--data", str(synth_dir / "dev"),
                 "--out", str(root / "nrms-b" / "dev.json"), "-q"]) == 0
    assert main(["seq", "synth", "--out", str(root / "log.csv"), "--users", "60", "--items", "40", "--seed", "3",
                 "-q"]) == 0
    assert main(["seq", "train", "--model", "tlstm1", "--events", str(root / "log.csv"), "--out",
                 str(root / "tlstm1"), "--epochs", "2", "-q", *SEQ_TINY]) == 0
    return root


def test_every_run_draws_its_curves_and_logs_peak_memory(runs):
    for name in ("nrms-a", "tlstm1"):
        assert (runs / name / "curves.png").read_bytes().startswith(PNG)
        log = [json.loads(line) for line in (runs / name / "log.jsonl").read_text().splitlines()]
        assert len(log) == 2 and all(r["peak_rss_mib"] > 10 for r in log)
        assert log[1]["peak_rss_mib"] >= log[0]["peak_rss_mib"]  # a peak never falls


def test_evaluate_output_has_beyond_and_novelty_from_the_train_split_beside_it(runs, synth_dir):
    dev = json.loads((runs / "nrms-b" / "dev.json").read_text())
    kept = json.loads((runs / "nrms-b" / "metrics.json").read_text())
    assert dev["beyond"]["k"] == 10 and dev["beyond"]["novelty"] > 0
    assert dev["beyond"] == pytest.approx(kept["beyond"])  # the trainer's dev evaluation is the same code


def test_report_has_a_row_per_run_and_the_config_differences(runs, tmp_path):
    out = tmp_path / "report"
    assert main(["report", str(runs / "nrms-a"), str(runs / "nrms-b"), str(runs / "tlstm1"), "--out", str(out),
                 "--eval-file", "dev.json", "-q"]) == 0
    text = (out / "report.md").read_text()
    assert (out / "compare.png").read_bytes().startswith(PNG) and "![runs compared](compare.png)" in text
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    header, body = rows[0], rows[1:]
    for column in ("config differences", "AUC", "ILD", "coverage", "novelty (bits)", "calibration JS",
                   "full Recall@10", "samples/s", "impressions/s", "peak RSS (MiB)", "commit"):
        assert column in header
    assert [row.split(" | ")[0] for row in body] == ["| nrms-a", "| nrms-b", "| tlstm1"]
    assert "train.lr=0.001" in body[0] and "train.lr=0.003" in body[1]
    news_b = read_run(runs / "nrms-b", "dev.json")
    dev = json.loads((runs / "nrms-b" / "dev.json").read_text())
    assert news_b.metrics["AUC"] == dev["auc"] and f"{dev['auc']:.4f}" in body[1]
    assert news_b.commit == json.loads((runs / "nrms-b" / "best" / "checkpoint.json").read_text())["commit"]
    seq = read_run(runs / "tlstm1")
    assert seq.kind == "seq" and seq.model == "tlstm1" and seq.metrics["full Recall@10"] is not None
    assert seq.peak_rss_mib is not None and seq.samples_per_s > 0


def test_config_differences_are_the_shared_keys_whose_values_differ(runs):
    a, b, seq = (read_run(runs / name) for name in ("nrms-a", "nrms-b", "tlstm1"))
    assert config_differences([a, b]) == ["train.lr"]
    assert config_differences([a]) == []
    assert "model.heads" not in config_differences([a, b, seq])  # only the news runs have it


def test_runs_from_before_memory_and_commit_were_recorded_show_dashes(runs, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(runs / "nrms-a", old)
    records = [json.loads(line) for line in (old / "log.jsonl").read_text().splitlines()]
    (old / "log.jsonl").write_text("".join(json.dumps({k: v for k, v in r.items() if k != "peak_rss_mib"}) + "\n"
                                           for r in records))
    header = json.loads((old / "best" / "checkpoint.json").read_text())
    del header["commit"]
    (old / "best" / "checkpoint.json").write_text(json.dumps(header))
    assert main(["report", str(old), "--out", str(tmp_path / "r"), "-q"]) == 0
    row = [line for line in (tmp_path / "r" / "report.md").read_text().splitlines() if line.startswith("| old")][0]
    assert row.endswith("| - | - |")  # peak RSS, commit


def test_bad_run_folders_are_named(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nothing"), "--out", str(tmp_path / "r")]) == 2
    assert "nothing: no such run folder" in capsys.readouterr().err
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.yaml").write_text("train:\n  lr: 0.1\n")
    (tmp_path / "half" / "metrics.json").write_text("{}")
    (tmp_path / "half" / "log.jsonl").write_text('{"epoch": 1}\nnot json\n')
    assert main(["report", str(tmp_path / "half"), "--out", str(tmp_path / "r")]) == 2
    assert "log.jsonl: line 2: not valid JSON" in capsys.readouterr().err


def test_without_matplotlib_plots_are_off_in_one_log_line(monkeypatch, tmp_path, caplog):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    monkeypatch.setattr(plots, "_warned", False)
    with caplog.at_level(logging.INFO, logger="newsrank"):
        assert not plots.write_curves(tmp_path / "c.png", [1], [0.5], {"auc": [0.6]})
        assert not plots.write_grouped_bars(tmp_path / "b.png", [("x", ["auc"])], {"run": {"auc": 0.6}})
    assert not (tmp_path / "c.png").exists() and not (tmp_path / "b.png").exists()
    assert [r.message for r in caplog.records].count(
        "matplotlib is not installed: plots are off (pip install 'newsrank[plot]')") == 1


def test_curves_plot_gaps_for_undefined_metrics(tmp_path):
    pytest.importorskip("matplotlib")
    assert plots.write_curves(tmp_path / "c.png", [1, 2, 3], [0.9, 0.7, None], {"auc": [0.5, None, 0.6]})
    assert (tmp_path / "c.png").read_bytes().startswith(PNG)


def test_evaluate_without_a_train_split_leaves_novelty_null(runs, synth_dir, tmp_path):
    import shutil

    shutil.copytree(synth_dir / "dev", tmp_path / "alone" / "dev")  # no train/ beside it
    out = tmp_path / "dev.json"
    assert main(["evaluate", "--run", str(runs / "nrms-a"), "--data", str(tmp_path / "alone" / "dev"),
                 "--out", str(out), "--beyond-k", "5", "-q"]) == 0
    beyond = json.loads(out.read_text())["beyond"]
    assert beyond["novelty"] is None and beyond["k"] == 5 and beyond["coverage"] > 0
    assert main(["evaluate", "--run", str(runs / "nrms-a"), "--data", str(tmp_path / "alone" / "dev"),
                 "--train-data", str(synth_dir / "train"), "--out", str(out), "-q"]) == 0
    assert json.loads(out.read_text())["beyond"]["novelty"] > 0
