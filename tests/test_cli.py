"""The command-line contract that scripts and benchmarks rely on."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import pytest

from helpers import TINY_OVERRIDES
from newsrank.cli import main
from newsrank.config import ConfigError, apply_overrides, load_config
from newsrank.models.nrms import NRMSConfig

TINY = ["--set", "word_dim=16", "--set", "heads=2", "--set", "head_dim=4", "--set", "attention_hidden=8",
        "--set", "title_len=12", "--set", "history_len=10", "--set", "batch_size=16", "--set", "lr=3e-3"]
METRIC_KEYS = {"auc", "mrr", "ndcg@5", "ndcg@10", "impressions"}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "newsrank.cli", *args], capture_output=True, text=True)


# --------------------------------------------------------------------------- config


def test_overrides_are_type_checked():
    config = load_config("nrms", NRMSConfig)
    assert config.model.heads == 20 and config.train.lr == pytest.approx(1e-4)  # the packaged YAML
    apply_overrides(config, ["heads=4", "train.lr=1e-3", "embeddings=null", "dropout=0"])
    assert config.model.heads == 4 and config.train.lr == pytest.approx(1e-3)
    assert config.train.embeddings is None and config.model.dropout == 0.0
    for bad in ["heads=four", "nonsense=1", "model.lr=1", "heads", "select_metric=accuracy", "freeze_embeddings=3"]:
        with pytest.raises(ConfigError):
            apply_overrides(config, [bad])


def test_config_file_unknown_key_is_an_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  heads: 2\n  head_size: 3\n")
    with pytest.raises(ConfigError, match="head_size"):
        load_config("nrms", NRMSConfig, path)
    path.write_text("model:\n  heads: 2\ntrain:\n  epochs: 5\n")
    config = load_config("nrms", NRMSConfig, path)
    assert (config.model.heads, config.train.epochs, config.model.head_dim) == (2, 5, 20)


# --------------------------------------------------------------------------- commands


def test_synth_train_evaluate_predict(tmp_path, capsys):
    data = tmp_path / "data"
    assert main(["synth", "--out", str(data), "--users", "50", "--news", "120", "--impressions", "150",
                 "--seed", "3"]) == 0
    assert (data / "train" / "behaviors.tsv").is_file() and (data / "dev" / "news.tsv").is_file()
    capsys.readouterr()

    run = tmp_path / "run"
    assert main(["train", "--model", "nrms", "--data", str(data), "--out", str(run), "--epochs", "1", "-q", *TINY]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert METRIC_KEYS <= set(metrics)
    assert (run / "best" / "model.safetensors").is_file()

    out = tmp_path / "eval.json"
    assert main(["evaluate", "--run", str(run), "--data", str(data / "dev"), "--out", str(out), "-q"]) == 0
    evaluated = json.loads(out.read_text())
    assert METRIC_KEYS <= set(evaluated)
    for key in METRIC_KEYS:
        assert evaluated[key] == pytest.approx(metrics[key], abs=1e-6)

    # Prediction on an unlabelled copy of dev (the MIND-large test set has no labels).
    test = tmp_path / "test"
    test.mkdir()
    (test / "news.tsv").write_bytes((data / "dev" / "news.tsv").read_bytes())
    lines = (data / "dev" / "behaviors.tsv").read_text().splitlines()
    unlabelled = []
    for line in lines:
        cols = line.split("\t")
        cols[4] = " ".join(token.rsplit("-", 1)[0] for token in cols[4].split())
        unlabelled.append("\t".join(cols))
    (test / "behaviors.tsv").write_text("\n".join(unlabelled) + "\n")
    prediction = tmp_path / "out" / "prediction.txt"
    assert main(["predict", "--run", str(run), "--data", str(test), "--out", str(prediction), "-q"]) == 0
    rows = prediction.read_text().splitlines()
    assert len(rows) == len(lines)
    for row, line in zip(rows, lines):
        impression_id, ranks = row.split(" ")
        assert impression_id == line.split("\t")[0]
        ranks = json.loads(ranks)
        assert sorted(ranks) == list(range(1, len(line.split("\t")[4].split()) + 1))
    with zipfile.ZipFile(prediction.with_suffix(".zip")) as zf:
        assert zf.namelist() == ["prediction.txt"]
        assert zf.read("prediction.txt").decode() == prediction.read_text()
    # Evaluating the unlabelled file is refused with a pointer to predict.
    assert main(["evaluate", "--run", str(run), "--data", str(test), "--out", str(tmp_path / "x.json"), "-q"]) == 2


def test_bad_input_gives_one_line_error_and_status_2(tmp_path):
    data = tmp_path / "bad"
    for split in ("train", "dev"):
        (data / split).mkdir(parents=True)
        (data / split / "news.tsv").write_text("N1\tnews\tus\tA title\t\t\t[]\t[]\n")
        (data / split / "behaviors.tsv").write_text("1\tU1\t11/11/2019 9:05:58 AM\tN1\tN1-1 N2-0\n")
    result = run_cli("train", "--data", str(data), "--out", str(tmp_path / "run"), "-q")
    assert result.returncode == 2
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and "behaviors.tsv, line 1, field 'impressions'" in err[0] and "N2" in err[0]

    result = run_cli("train", "--data", str(data), "--set", "heads=many", "-q")
    assert result.returncode == 2 and "heads" in result.stderr and len(result.stderr.strip().splitlines()) == 1

    result = run_cli("train", "--data", str(tmp_path / "nowhere"), "-q")
    assert result.returncode == 2 and "train/ and dev/" in result.stderr


@pytest.mark.slow
def test_trains_on_real_mind_rows(shared_data, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--data", str(shared_data / "mind_tiny"), "--out", str(run), "--epochs", "1", "-q",
                 *TINY]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["impressions"] == 10
    assert 0.0 <= metrics["auc"] <= 1.0


# Tiny settings per model (tests/helpers.py), so that every registered model runs through the CLI in seconds.
TINY_BY_MODEL = {name: [arg for item in items for arg in ("--set", item)] for name, items in TINY_OVERRIDES.items()}


@pytest.mark.parametrize("model", sorted(TINY_BY_MODEL))
def test_every_model_trains_evaluates_and_predicts_through_the_cli(model, synth_dir, tmp_path):
    from newsrank.models import MODELS

    assert set(MODELS) == set(TINY_BY_MODEL), "add tiny settings for every registered model"
    run = tmp_path / "run"
    assert main(["train", "--model", model, "--data", str(synth_dir), "--out", str(run), "--epochs", "1", "-q",
                 *TINY_BY_MODEL[model]]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["auc"] <= 1.0
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--run", str(run), "--data", str(synth_dir / "dev"), "--out", str(out), "-q"]) == 0
    assert json.loads(out.read_text())["auc"] == pytest.approx(metrics["auc"], abs=1e-6)
    assert main(["predict", "--run", str(run), "--data", str(synth_dir / "dev"),
                 "--out", str(tmp_path / "prediction.txt"), "-q"]) == 0
