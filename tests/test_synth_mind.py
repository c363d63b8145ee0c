"""The MIND-sized streaming generator (``newsrank synth --preset``), at a small size."""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict

import numpy as np
import pytest

from newsrank.cli import main
from newsrank.config import DataConfig
from newsrank.data.dataset import load_split, load_vocabularies
from newsrank.data.mind import iter_behaviors
from newsrank.data.synth_mind import PRESETS, write_mind_sized

SMALL = dataclasses.replace(PRESETS["mind-small"], users=600, news=1500, train_impressions=2400, dev_impressions=600)


@pytest.fixture(scope="module")
def mind_sized(tmp_path_factory):
    out = tmp_path_factory.mktemp("mind_sized") / "data"
    # small chunks, so that several chunks and user chunks (and the train/dev boundary) are crossed
    summary = write_mind_sized(out, SMALL, seed=3, chunk=700, user_chunk=250)
    return out, summary


def test_sizes_and_files_are_mind_shaped(mind_sized):
    out, summary = mind_sized
    assert summary["train"]["impressions"] == 2400 and summary["dev"]["impressions"] == 600
    for split in ("train", "dev"):
        names = sorted(p.name for p in (out / split).iterdir())
        assert names == ["behaviors.tsv", "context_embedding.vec", "entity_embedding.vec", "news.tsv",
                         "relation_embedding.vec"]
        impressions = list(iter_behaviors(out / split / "behaviors.tsv"))
        assert [int(i.impression_id) for i in impressions] == list(range(1, len(impressions) + 1))
        assert sum(len(i.candidates) for i in impressions) == summary[split]["candidates"]
        assert sum(sum(i.labels) for i in impressions) == summary[split]["clicks"]
        assert all(sum(i.labels) >= 1 and len(i.candidates) >= 2 for i in impressions)
        news_ids = {line.split("\t", 1)[0] for line in (out / split / "news.tsv").read_text().splitlines()}
        assert len(news_ids) == summary[split]["news"]
        referenced = {n for i in impressions for n in list(i.history) + list(i.candidates)}
        assert referenced <= news_ids  # every news a behaviors line names is in the split's news.tsv


def test_histories_are_fixed_per_user_across_both_splits(mind_sized):
    out, _ = mind_sized
    histories = defaultdict(set)
    for split in ("train", "dev"):
        for impression in iter_behaviors(out / split / "behaviors.tsv"):
            histories[impression.user_id].add(tuple(impression.history))
    assert all(len(h) == 1 for h in histories.values())
    lengths = np.array([len(next(iter(h))) for h in histories.values()])
    assert (lengths == 0).any() and np.median(lengths) > 5  # some new users, most with a real history


def test_same_seed_same_bytes_and_the_reader_and_cache_accept_it(mind_sized, tmp_path):
    out, summary = mind_sized
    again = write_mind_sized(tmp_path / "again", SMALL, seed=3, chunk=700, user_chunk=250)
    assert again == summary
    for split in ("train", "dev"):
        for name in ("behaviors.tsv", "news.tsv"):
            assert (tmp_path / "again" / split / name).read_bytes() == (out / split / name).read_bytes()
    vocabs = load_vocabularies(out / "train", DataConfig())
    table, behaviors = load_split(out / "dev", vocabs, DataConfig())
    assert len(behaviors) == 600 and int(np.asarray(behaviors.offsets)[-1]) == summary["dev"]["candidates"]


def test_cli_preset_and_unknown_preset(tmp_path, capsys, monkeypatch):
    import newsrank.data.synth_mind as synth_mind

    monkeypatch.setitem(synth_mind.PRESETS, "mind-small", SMALL)
    assert main(["synth", "--preset", "mind-small", "--out", str(tmp_path / "d"), "-q"]) == 0
    assert json.loads(capsys.readouterr().out)["dev"]["impressions"] == 600
    with pytest.raises(ValueError, match="unknown preset"):
        write_mind_sized(tmp_path / "x", "mind-huge")
    assert not (tmp_path / "x").exists()
