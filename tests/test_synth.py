"""Tests of the synthetic MIND generator: format, consistency, determinism and learnable signal."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from newsrank.data.synth import SynthConfig, popularity_baseline_auc, write_synthetic_mind

SMALL = SynthConfig(users=50, news=100, impressions=100, seed=3)
MIND_TIME = re.compile(r"(1[0-2]|[1-9])/(3[01]|[12]\d|[1-9])/\d{4} (1[0-2]|[1-9]):[0-5]\d:[0-5]\d [AP]M")
SPLITS = ("train", "dev")


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("small")
    return out, write_synthetic_mind(out, SMALL)


@pytest.fixture(scope="module")
def medium(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("medium")
    return out, write_synthetic_mind(out, SynthConfig())


def read_news(split_dir: Path) -> dict[str, list[str]]:
    """news id -> its 8 fields."""
    rows = [line.split("\t") for line in (split_dir / "news.tsv").read_text(encoding="utf-8").splitlines()]
    return {r[0]: r for r in rows}


def read_behaviors(split_dir: Path) -> list[list[str]]:
    return [line.split("\t") for line in (split_dir / "behaviors.tsv").read_text(encoding="utf-8").splitlines()]


def candidates(row: list[str]) -> tuple[list[str], np.ndarray]:
    """(candidate ids, (n,) 0/1 labels) of a behaviors row."""
    pairs = [tok.rsplit("-", 1) for tok in row[4].split()]
    return [nid for nid, _ in pairs], np.array([int(y) for _, y in pairs])


def mean_auc(rows: list[list[str]], score) -> float:
    """Mean sklearn AUC over the impressions with both labels; ``score(row, ids)`` gives the candidates' scores."""
    aucs = []
    for row in rows:
        ids, labels = candidates(row)
        if 0 < labels.sum() < labels.size:
            aucs.append(roc_auc_score(labels, score(row, ids)))
    return float(np.mean(aucs))


def train_click_counts(out: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in read_behaviors(out / "train"):
        for nid, y in zip(*candidates(row)):
            counts[nid] = counts.get(nid, 0) + int(y)
    return counts


@pytest.mark.parametrize("data", ["small", "medium"])
def test_files_are_mind_format(data: str, request: pytest.FixtureRequest) -> None:
    out, _ = request.getfixturevalue(data)
    for split in SPLITS:
        for name, n_cols in (("news.tsv", 8), ("behaviors.tsv", 5)):
            raw = (out / split / name).read_bytes()
            assert raw.endswith(b"\n") and b"\r" not in raw
            lines = raw.decode("utf-8").split("\n")[:-1]
            assert lines and all(len(line.split("\t")) == n_cols for line in lines)
        news = read_news(out / split)
        assert all(re.fullmatch(r"N\d+", nid) for nid in news)
        assert all(f[5].startswith("https://") and f[1] and f[2].startswith(f[1]) for f in news.values())
        rows = read_behaviors(out / split)
        assert [int(r[0]) for r in rows] == list(range(1, len(rows) + 1))
        for row in rows:
            assert re.fullmatch(r"U\d+", row[1])
            assert MIND_TIME.fullmatch(row[2]), row[2]
            assert all(re.fullmatch(r"N\d+", nid) for nid in row[3].split())
            assert all(re.fullmatch(r"N\d+-[01]", tok) for tok in row[4].split())


def test_times_parse_sorted_and_dev_after_train(small: tuple[Path, dict]) -> None:
    out, _ = small
    times = {s: [datetime.strptime(r[2], "%m/%d/%Y %I:%M:%S %p") for r in read_behaviors(out / s)] for s in SPLITS}
    for split in SPLITS:
        assert times[split] == sorted(times[split])
    assert min(times["dev"]) >= max(times["train"])
    assert datetime(2019, 11, 9) <= min(times["train"]) and max(times["dev"]) < datetime(2019, 11, 16)


@pytest.mark.parametrize("data", ["small", "medium"])
def test_referenced_news_present_and_labels_valid(data: str, request: pytest.FixtureRequest) -> None:
    out, _ = request.getfixturevalue(data)
    cfg = SMALL if data == "small" else SynthConfig()
    for split in SPLITS:
        news = read_news(out / split)
        for row in read_behaviors(out / split):
            ids, labels = candidates(row)
            assert set(row[3].split()) <= news.keys() and set(ids) <= news.keys()
            assert labels.sum() >= 1
            assert len(set(ids)) == len(ids) and cfg.min_candidates <= len(ids) <= cfg.max_candidates
            assert len(set(row[3].split())) == len(row[3].split())


def test_histories_accumulate_clicks(medium: tuple[Path, dict]) -> None:
    out, _ = medium
    rows = read_behaviors(out / "train") + read_behaviors(out / "dev")
    seen: dict[str, tuple[list[str], list[str]]] = {}  # user -> (history, clicks) of their previous impression
    n_empty = 0
    for row in rows:
        hist = row[3].split()
        n_empty += not hist
        ids, labels = candidates(row)
        if row[1] in seen:
            prev_hist, prev_clicks = seen[row[1]]
            assert hist[:len(prev_hist)] == prev_hist
            assert set(prev_clicks) <= set(hist)
        seen[row[1]] = hist, [nid for nid, y in zip(ids, labels) if y]
    assert 0 < n_empty < 0.05 * len(rows)


def test_summary_matches_files(medium: tuple[Path, dict]) -> None:
    out, summary = medium
    cfg = SynthConfig()
    assert summary["news"] == cfg.news and summary["users"] == cfg.users
    assert summary["train"]["impressions"] + summary["dev"]["impressions"] == cfg.impressions
    assert summary["dev"]["impressions"] == round(cfg.impressions * cfg.dev_fraction)
    for split in SPLITS:
        rows = read_behaviors(out / split)
        labels = np.concatenate([candidates(r)[1] for r in rows])
        assert summary[split] == {"impressions": len(rows), "users": len({r[1] for r in rows}),
                                  "news": len(read_news(out / split)), "candidates": labels.size,
                                  "clicks": int(labels.sum())}


def test_same_seed_same_bytes_other_seed_differs(small: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = small
    write_synthetic_mind(tmp_path / "again", SMALL)
    write_synthetic_mind(tmp_path / "other", SynthConfig(users=50, news=100, impressions=100, seed=4))
    for split in SPLITS:
        for name in ("news.tsv", "behaviors.tsv"):
            assert (tmp_path / "again" / split / name).read_bytes() == (out / split / name).read_bytes()
            assert (tmp_path / "other" / split / name).read_bytes() != (out / split / name).read_bytes()


def test_entities_point_at_surface_forms(small: tuple[Path, dict]) -> None:
    out, _ = small
    n_mentions = 0
    for fields in read_news(out / "train").values():
        for text, ent_json in ((fields[3], fields[6]), (fields[4], fields[7])):
            for ent in json.loads(ent_json):
                assert ent["Type"] in {"P", "O", "G"} and re.fullmatch(r"Q\d+", ent["WikidataId"])
                assert 0 < ent["Confidence"] <= 1
                for offset, form in zip(ent["OccurrenceOffsets"], ent["SurfaceForms"], strict=True):
                    assert text[offset:offset + len(form)] == form == ent["Label"]
                    n_mentions += 1
    assert n_mentions > 0


def test_interest_signal_beats_popularity(medium: tuple[Path, dict]) -> None:
    """Category share of the history beats train click counts by a clear margin on dev."""
    out, _ = medium
    category = {nid: f[1] for s in SPLITS for nid, f in read_news(out / s).items()}
    train_clicks = train_click_counts(out)
    dev = read_behaviors(out / "dev")[::3]  # every 3rd of the 1200 (spread over dev time): roc_auc_score is ~3 ms a call

    def affinity(row: list[str], ids: list[str]) -> list[float]:
        hist = [category[h] for h in row[3].split()]
        return [hist.count(category[c]) / max(1, len(hist)) for c in ids]

    cat_auc = mean_auc(dev, affinity)
    pop_auc = mean_auc(dev, lambda row, ids: [train_clicks.get(c, 0) for c in ids])
    assert 0.55 <= pop_auc <= 0.68
    assert 0.72 <= cat_auc <= 0.85
    assert cat_auc > pop_auc + 0.1


def test_popularity_baseline_auc_matches_sklearn(small: tuple[Path, dict]) -> None:
    out, _ = small
    train_clicks = train_click_counts(out)
    expected = mean_auc(read_behaviors(out / "dev"), lambda row, ids: [train_clicks.get(c, 0) for c in ids])
    assert popularity_baseline_auc(out / "dev") == pytest.approx(expected, abs=1e-12)


def test_tiny_news_pool(tmp_path: Path) -> None:
    """Fewer recent news than requested candidates: impressions shrink but stay valid."""
    summary = write_synthetic_mind(tmp_path, SynthConfig(users=5, news=20, impressions=30, seed=1))
    assert summary["train"]["impressions"] + summary["dev"]["impressions"] == 30
    for split in SPLITS:
        for row in read_behaviors(tmp_path / split):
            ids, labels = candidates(row)
            assert len(ids) >= 5 and labels.sum() >= 1


@pytest.mark.parametrize("bad", [{"dev_fraction": 1.0}, {"news": 10}, {"users": 0}, {"min_candidates": 1}])
def test_invalid_config_rejected(bad: dict) -> None:
    with pytest.raises(ValueError):
        SynthConfig(**bad)
