"""`newsrank serve`: the engine and the HTTP endpoints on tiny runs (every registered model), scores
equal to `newsrank predict`'s, news posted after training, explanations and bad requests."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from helpers import TINY_OVERRIDES  # noqa: E402
from newsrank.cli import main  # noqa: E402


def train_tiny(model: str, data, out) -> None:
    sets = [arg for item in TINY_OVERRIDES[model] for arg in ("--set", item)]
    assert main(["train", "--model", model, "--data", str(data), "--out", str(out), "--epochs", "1", "-q",
                 "--set", "threads=1", *sets]) == 0


@pytest.fixture(scope="module")
def runs(synth_dir, tmp_path_factory):
    """A tiny run per requested model, trained once per module (cache in a temporary folder)."""
    trained = {}
    folder = tmp_path_factory.mktemp("serve-runs")

    def get(model: str):
        if model not in trained:
            with pytest.MonkeyPatch.context() as patch:
                patch.setenv("NEWSRANK_CACHE", str(folder / "cache"))
                train_tiny(model, synth_dir, folder / model)
            trained[model] = folder / model
        return trained[model]

    return get


@pytest.fixture(scope="module")
def nrms(runs, synth_dir):
    from newsrank.serve.app import create_app
    from newsrank.serve.engine import load_engine

    engine, seconds = load_engine(runs("nrms"), synth_dir / "dev" / "news.tsv", synth_dir / "dev" / "behaviors.tsv")
    return engine, TestClient(create_app(engine, seconds))


def dev_impressions(engine, synth_dir, n: int = 8):
    """(history ids, user id, candidate ids, impression index) of the first ``n`` dev impressions,
    read through the same preprocessing as `newsrank predict`, and the predicted scores of all."""
    from newsrank.data.dataset import load_split
    from newsrank.evaluate import score_behaviors
    from newsrank.data.mind import read_behaviors

    table, behaviors = load_split(synth_dir / "dev", engine.vocabs, engine.config.data, use_cache=False)
    scores = score_behaviors(engine.model, table, behaviors, batch_size=engine.config.train.eval_batch_size)
    rows = read_behaviors(synth_dir / "dev" / "behaviors.tsv")
    out = []
    for i in range(min(n, len(behaviors))):
        history = [table.news_ids[r] for r in np.asarray(behaviors.history[i]) if r]
        lo, hi = behaviors.offsets[i], behaviors.offsets[i + 1]
        candidates = [table.news_ids[r] for r in np.asarray(behaviors.candidates[lo:hi])]
        out.append((history, rows[i].user_id, candidates, scores[lo:hi]))
    return out


@pytest.mark.parametrize("model", sorted(TINY_OVERRIDES))
def test_every_model_ranks_like_predict_and_serves_the_pool(model, runs, synth_dir):
    """Given candidates get `newsrank predict`'s scores (so its order); the pool's top-k is the exact
    top-k of the same scores over the whole (or, candidate-aware, the bounded) pool; /explain
    answers for every model with attention and 400 for the others."""
    from newsrank.serve.app import create_app
    from newsrank.serve.engine import load_engine
    from newsrank.serve.explain import explainable

    engine, _ = load_engine(runs(model), synth_dir / "dev" / "news.tsv", candidate_pool=50)
    client = TestClient(create_app(engine))
    for history, user, candidates, expected in dev_impressions(engine, synth_dir):
        got = client.post("/recommend", json={"history": history, "user": user, "candidates": candidates,
                                              "k": len(candidates)}).json()
        ranked = {item["news_id"]: item["score"] for item in got["items"]}
        assert len(ranked) == len(set(candidates))
        np.testing.assert_allclose([ranked[c] for c in candidates], expected, rtol=1e-4, atol=1e-5)
        assert [item["rank"] for item in got["items"]] == list(range(1, len(ranked) + 1))
        assert all(a["score"] >= b["score"] for a, b in zip(got["items"], got["items"][1:]))

    history, user, _, _ = dev_impressions(engine, synth_dir, 1)[0]
    top = client.post("/recommend", json={"history": history, "user": user, "k": 5}).json()["items"]
    pool_ids = [r.news_id for r in engine.pool.records[1:]]
    if engine.model.candidate_aware:
        pool_ids = pool_ids[-50:]  # the bounded pool: the newest 50
    pool_ids = [n for n in pool_ids if n not in history]
    every = client.post("/recommend", json={"history": history, "user": user, "candidates": pool_ids,
                                            "k": len(pool_ids)}).json()["items"]
    assert [i["news_id"] for i in top] == [i["news_id"] for i in every[:5]]
    assert not {i["news_id"] for i in top} & set(history)  # exclude_history

    response = client.post("/explain", json={"history": history, "user": user, "news_id": top[0]["news_id"]})
    if not explainable(engine.model):
        assert response.status_code == 400 and "attention" in response.json()["detail"]
        return
    assert response.status_code == 200, response.text
    explanation = response.json()
    assert explanation["score"] == pytest.approx(top[0]["score"], rel=1e-4, abs=1e-5)
    if explanation["clicks"] is not None:
        assert [c["news_id"] for c in explanation["clicks"]] == history[-engine.config.data.history_len:]
        assert sum(c["weight"] for c in explanation["clicks"]) == pytest.approx(1.0, abs=1e-4)
    if explanation["words"] is not None:
        assert explanation["words"][0]["role"] == "candidate"
        assert explanation["words"][0]["news_id"] == top[0]["news_id"]
        for entry in explanation["words"]:
            total = sum(w["weight"] for w in entry["words"])
            assert total == pytest.approx(1.0, abs=1e-4) or not entry["words"]
    if model == "fum":
        assert explanation["fine_tokens"] and all(t["tokens"] for t in explanation["fine_tokens"])
        for entry in explanation["fine_tokens"]:
            assert sum(t["weight"] for t in entry["tokens"]) == pytest.approx(1.0, abs=1e-4)


def test_endpoints(nrms):
    engine, client = nrms
    assert client.get("/health").json() == {"status": "ok", "model": "nrms", "pool_size": len(engine.pool)}
    info = client.get("/model").json()
    assert info["model"] == "nrms" and info["pool_size"] == len(engine.pool)
    assert info["config"]["model"]["heads"] == 2 and "auc" in info["metrics"] and info["startup_s"] > 0
    assert "/recommend" in client.get("/openapi.json").json()["paths"]
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "top-list" in page.text

    users = client.get("/users?limit=3").json()
    assert len(users["users"]) == 3 and users["total"] == len(engine.users)
    lengths = [u["history_len"] for u in users["users"]]
    assert lengths == sorted(lengths, reverse=True)
    user = users["users"][0]["user"]
    history = [n["news_id"] for n in client.get(f"/users/{user}").json()["history"]]
    assert len(history) == lengths[0]

    result = client.post("/recommend", json={"history": history, "user": user}).json()
    assert result["model"] == "nrms" and result["took_ms"] > 0 and len(result["items"]) == 10
    assert set(result["items"][0]) == {"news_id", "score", "rank", "title", "category"}
    record = engine.pool.records[engine.pool.row_of[result["items"][0]["news_id"]]]
    assert result["items"][0]["title"] == record.title and result["items"][0]["category"] == record.category
    kept = client.post("/recommend", json={"history": history, "k": len(engine.pool), "exclude_history": False})
    assert len(kept.json()["items"]) == len(engine.pool)  # every news, the clicked ones included
    assert len(client.post("/recommend", json={"history": history, "k": 1000}).json()["items"]) == \
        len(engine.pool) - len(set(history))  # k beyond the pool: all there is

    found = client.get("/news", params={"q": record.title.split()[0], "limit": 5}).json()["items"]
    assert found and all(record.title.split()[0].lower() in n["title"].lower() for n in found)


def test_posted_news_are_encoded_like_news_in_the_file(nrms, runs, synth_dir, tmp_path):
    """News posted after start are scored exactly as if news.tsv had held them from the start;
    posting an id again replaces it."""
    from newsrank.serve.engine import load_engine

    engine, client = nrms
    item = {"news_id": "NEW1", "category": "sports", "subcategory": "", "title": "A brand new story about sports",
            "abstract": "Published after training.", "url": "", "title_entities": [], "abstract_entities": []}
    answer = client.post("/news", json={"items": [item]}).json()
    assert answer["added"] == 1 and answer["replaced"] == 0 and answer["pool_size"] == len(engine.pool)
    history = [r.news_id for r in engine.pool.records[1:6]]
    candidates = ["NEW1", history[0], engine.pool.records[7].news_id]
    served = client.post("/recommend", json={"history": history, "candidates": candidates, "k": 3}).json()["items"]

    lines = (synth_dir / "dev" / "news.tsv").read_text().splitlines()
    lines.append("\t".join([item["news_id"], item["category"], item["subcategory"], item["title"], item["abstract"],
                            "", "[]", "[]"]))
    (tmp_path / "news.tsv").write_text("\n".join(lines) + "\n")
    fresh, _ = load_engine(runs("nrms"), tmp_path / "news.tsv")
    _, ranked = fresh.recommend(history, candidates=candidates, k=3)
    expected = {fresh.pool.records[r].news_id: s for r, s in zip(ranked.rows, ranked.scores)}
    for entry in served:
        assert entry["score"] == pytest.approx(expected[entry["news_id"]], rel=1e-5, abs=1e-6)
    in_pool = client.post("/recommend", json={"history": history, "k": len(engine.pool)}).json()["items"]
    assert "NEW1" in {i["news_id"] for i in in_pool}

    # Replaced by another news item's title (the synthetic titles' words are in the vocabulary; NRMS
    # reads the title only): it now scores as that item does.
    twin = engine.pool.records[10]
    replaced = client.post("/news", json={"items": [item | {"title": twin.title, "category": "news"}]})
    assert replaced.json()["replaced"] == 1 and replaced.json()["added"] == 0
    again = client.post("/recommend", json={"history": history, "candidates": ["NEW1", twin.news_id],
                                            "k": 2}).json()["items"]
    assert {i["news_id"]: i["title"] for i in again}["NEW1"] == twin.title
    assert again[0]["score"] == pytest.approx(again[1]["score"], rel=1e-6, abs=1e-7)


def test_batched_pool_requests_equal_single_ones(nrms):
    """Requests that share one pass (left-padded histories, one product with the pool for the
    whole-pool ones, given candidates scored per request) get what each gets alone; an unknown id fails its own request only. Through the Batcher too,
    from many threads at once."""
    from concurrent.futures import ThreadPoolExecutor

    from newsrank.serve.engine import Batcher, RankRequest, UnknownNews

    engine, _ = nrms
    assert engine.batchable()
    ids = [r.news_id for r in engine.pool.records[1:]]
    user = next(iter(engine.users))
    requests = [RankRequest(ids[:5]), RankRequest([], k=3), RankRequest(ids[3:30], user=user, exclude_history=False),
                RankRequest(["NOPE"]), RankRequest(ids[:2] + ["NOPE"], skip_unknown=True, k=len(ids)),
                RankRequest(ids[40:41], k=1), RankRequest(ids[:4], candidates=ids[50:80], k=7),
                RankRequest(ids[:4], candidates=ids[50:53] + ["NOPE"], skip_unknown=True, k=10),
                RankRequest(ids[:4], candidates=["NOPE"] + ids[50:53])]

    def alone(request):
        return engine.recommend(request.history, request.user, request.k, request.candidates,
                                request.exclude_history, request.skip_unknown)[1]

    def same(got, expected):
        np.testing.assert_allclose(got.scores, expected.scores, rtol=1e-5, atol=1e-6)
        if len(set(np.round(expected.scores, 5))) == len(expected.scores):  # rows of tied scores may swap
            assert got.rows == expected.rows

    results = engine.recommend_batch(requests)
    assert isinstance(results[3], UnknownNews) and results[3].ids == ["NOPE"]
    assert isinstance(results[-1], UnknownNews) and results[-1].ids == ["NOPE"]
    for request, result in zip(requests[:-1], results):
        if request is not requests[3]:
            same(result[1], alone(request))
    assert len(results[-2][1].rows) == 3
    assert len(results[4][1].rows) == len(ids) - 2  # k beyond the pool: all that is left

    batcher = Batcher(engine, max_batch=4)
    many = [RankRequest(ids[i : i + 1 + i % 7], k=5, candidates=ids[30 + i : 60] if i % 3 else None)
            for i in range(24)]
    with ThreadPoolExecutor(8) as threads:
        answers = list(threads.map(lambda r: batcher.submit(r).result(timeout=30), many))
    for request, (_, ranked) in zip(many, answers):
        same(ranked, alone(request))
    assert batcher.requests == 24 and batcher.batches <= 24


def test_bad_requests_get_clear_answers(nrms):
    from newsrank.serve.app import MAX_HISTORY

    engine, client = nrms
    known = [r.news_id for r in engine.pool.records[1:4]]

    unknown = client.post("/recommend", json={"history": known + ["NOPE1", "NOPE2"]})
    assert unknown.status_code == 404 and unknown.json()["unknown"] == ["NOPE1", "NOPE2"]
    assert "NOPE1" in unknown.json()["detail"]
    missing_candidate = client.post("/recommend", json={"history": known, "candidates": ["NOPE3", known[0]]})
    assert missing_candidate.status_code == 404 and missing_candidate.json()["unknown"] == ["NOPE3"]
    skipped = client.post("/recommend", json={"history": known + ["NOPE1"], "candidates": ["NOPE3", known[0]],
                                              "skip_unknown": True})
    assert skipped.status_code == 200 and [i["news_id"] for i in skipped.json()["items"]] == [known[0]]
    assert client.post("/explain", json={"history": known, "news_id": "NOPE9"}).json()["unknown"] == ["NOPE9"]

    def field_error(body, path="/recommend"):
        response = client.post(path, json=body)
        assert response.status_code == 422, response.text
        return [tuple(e["loc"]) for e in response.json()["detail"]]

    assert ("body", "k") in field_error({"history": known, "k": 0})
    assert ("body", "k") in field_error({"history": known, "k": 100_000})
    assert ("body", "k") in field_error({"history": known, "k": "10"})  # no coercion
    assert ("body", "history") in field_error({"history": "N1"})
    assert ("body", "history", 0) in field_error({"history": [12]})
    assert ("body", "exclude_history") in field_error({"history": known, "exclude_history": "yes"})
    assert ("body", "colour") in field_error({"history": known, "colour": "red"})  # unknown fields
    assert ("body", "history") in field_error({"history": ["N1"] * (MAX_HISTORY + 1)})  # oversized history
    assert ("body", "news_id") in field_error({"history": known}, "/explain")
    assert ("body", "items") in field_error({"items": []}, "/news")
    assert ("body", "items", 0, "title") in field_error({"items": [{"news_id": "X", "category": "c"}]}, "/news")
    broken = client.post("/recommend", content=b"{not json", headers={"content-type": "application/json"})
    assert broken.status_code == 422

    huge = client.post("/recommend", content=b'{"history": ["' + b"x" * (5 << 20) + b'"]}',
                       headers={"content-type": "application/json"})
    assert huge.status_code == 413 and "too large" in huge.json()["detail"]
    assert client.get("/users/nobody").status_code == 404
    assert client.get("/health").status_code == 200  # still serving


def test_body_limit_without_content_length():
    """A chunked body (no Content-Length) is cut off at the limit too."""
    import asyncio

    from newsrank.serve.app import BodyLimit

    seen = []

    async def app(scope, receive, send):
        while True:
            message = await receive()
            if not message.get("more_body"):
                break
        seen.append("read all")

    async def run():
        chunks = [{"type": "http.request", "body": b"x" * 60, "more_body": True} for _ in range(3)]
        chunks.append({"type": "http.request", "body": b"", "more_body": False})
        sent = []

        async def receive():
            return chunks.pop(0)

        async def send(message):
            sent.append(message)

        await BodyLimit(app, limit=100)({"type": "http", "headers": []}, receive, send)
        return sent

    sent = asyncio.run(run())
    assert sent[0]["status"] == 413 and not seen


def test_serve_command_names_the_extra_when_fastapi_is_missing(monkeypatch, capsys, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "fastapi", None)  # import fastapi -> ImportError
    assert main(["serve", "--run", str(tmp_path), "--news", str(tmp_path / "news.tsv")]) == 2
    err = capsys.readouterr().err
    assert "pip install 'newsrank[serve]'" in err and "fastapi" in err


def test_serve_command_reports_bad_input(runs, tmp_path, capsys):
    (tmp_path / "news.tsv").write_text("N1\tsports\n")
    assert main(["serve", "--run", str(runs("nrms")), "--news", str(tmp_path / "news.tsv")]) == 2
    err = capsys.readouterr().err
    assert "news.tsv, line 1" in err and "columns" in err
    assert main(["serve", "--run", str(tmp_path), "--news", str(tmp_path / "news.tsv")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
