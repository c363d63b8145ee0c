"""The HTTP face of an :class:`~newsrank.serve.engine.Engine` (FastAPI; OpenAPI at ``/docs``).

Endpoints: ``POST /recommend``, ``POST /news`` (add or replace news), ``GET /news`` (search the
pool, for the page), ``POST /explain``, ``GET /users`` and ``GET /users/{id}`` (histories from
``--behaviors``), ``GET /health``, ``GET /model`` and the page at ``/``.

Bad requests get a status and a message, never a traceback or a hang: unknown news ids 404 (listing
them; ``"skip_unknown": true`` drops them instead), wrong types and out-of-range values 422 (FastAPI
names the field; no type coercion: ``"k": "10"`` is an error), histories longer than
``MAX_HISTORY`` and lists beyond their caps 422, bodies over ``max_body`` bytes 413 (checked on
Content-Length, and on the bytes actually received when there is none), a model without attention
400 on ``/explain``.

``/recommend`` requests of batchable models (cacheable, dot-product scorer: all but NPA, DKN and
FIM) go to one worker thread that serves every request queued meanwhile in one pass
(``engine.Batcher``; ``max_batch`` 1 turns it off); every other request runs on FastAPI's thread
pool (torch releases the GIL in its kernels, so they overlap). ``benchmarks/bench_serve.py``
measured both: batching doubled NRMS's whole-pool throughput on 2 cores.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, HTTPException, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from ..data.mind import NewsRecord
from .engine import Batcher, Engine, NotExplainable, RankRequest, UnknownNews

MAX_HISTORY = 1000  # clicks per request (the model keeps its history_len most recent)
MAX_CANDIDATES = 10_000
MAX_K = 1000
MAX_NEWS_POST = 10_000  # news items per POST /news
MAX_BODY = 4 << 20  # bytes per request body
STATIC = Path(__file__).parent / "static"

NewsId = Annotated[StrictStr, Field(min_length=1, max_length=200)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecommendRequest(Strict):
    history: list[NewsId] = Field(default_factory=list, max_length=MAX_HISTORY,
                                  description="clicked news ids, oldest first")
    user: StrictStr | None = Field(None, max_length=200, description="user id (models with user embeddings use it)")
    k: StrictInt = Field(10, ge=1, le=MAX_K)
    candidates: list[NewsId] | None = Field(None, max_length=MAX_CANDIDATES,
                                            description="rank these instead of the whole pool")
    exclude_history: StrictBool = Field(True, description="leave clicked news out of the pool's top-k")
    skip_unknown: StrictBool = Field(False, description="drop unknown news ids instead of answering 404")


class RankedItem(BaseModel):
    news_id: str
    score: float
    rank: int
    title: str
    category: str


class RecommendResponse(BaseModel):
    items: list[RankedItem]
    model: str
    took_ms: float


class ExplainRequest(Strict):
    history: list[NewsId] = Field(default_factory=list, max_length=MAX_HISTORY)
    news_id: NewsId
    user: StrictStr | None = Field(None, max_length=200)
    skip_unknown: StrictBool = False


class NewsItem(Strict):
    """One row of ``news.tsv`` (entities as MIND's JSON lists)."""

    news_id: NewsId
    category: StrictStr = Field(max_length=200)
    subcategory: StrictStr = Field("", max_length=200)
    title: StrictStr = Field(max_length=10_000)
    abstract: StrictStr = Field("", max_length=100_000)
    url: StrictStr = Field("", max_length=10_000)
    title_entities: list[dict] = Field(default_factory=list, max_length=1000)
    abstract_entities: list[dict] = Field(default_factory=list, max_length=1000)


class NewsPost(Strict):
    items: list[NewsItem] = Field(min_length=1, max_length=MAX_NEWS_POST)


class BodyLimit:
    """ASGI middleware: 413 for request bodies over ``limit`` bytes, before the app reads them."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return await self._reject(send)
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._reject(send)

    async def _reject(self, send):
        body = b'{"detail":"request body too large (over %d bytes)"}' % self.limit
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


def create_app(engine: Engine, startup_s: float | None = None, max_body: int = MAX_BODY,
               max_batch: int = 32) -> FastAPI:
    """The app; ``max_batch`` > 1 lets concurrent whole-pool requests of batchable models share one
    pass (see ``engine.Batcher``), 1 runs every request on its own."""
    app = FastAPI(title="newsrank serve", description="Recommendations, explanations and news updates "
                  f"from a trained {engine.checkpoint.meta['model']} run.")
    model_name = engine.checkpoint.meta["model"]

    @app.exception_handler(UnknownNews)
    def _unknown(request, err: UnknownNews):
        return JSONResponse(status_code=404, content={"detail": str(err), "unknown": err.ids})

    @app.exception_handler(NotExplainable)
    def _not_explainable(request, err: NotExplainable):
        return JSONResponse(status_code=400, content={"detail": str(err)})

    batcher = Batcher(engine, max_batch) if max_batch > 1 and engine.batchable() else None

    @app.post("/recommend", response_model=RecommendResponse)
    async def recommend(request: RecommendRequest):
        start = time.perf_counter()
        if batcher is not None:
            pool, ranked = await asyncio.wrap_future(batcher.submit(RankRequest(
                request.history, request.user, request.k, request.candidates, request.exclude_history,
                request.skip_unknown)))
        else:
            pool, ranked = await run_in_threadpool(
                engine.recommend, request.history, request.user, request.k, request.candidates,
                request.exclude_history, request.skip_unknown)
        items = []
        for rank, (row, score) in enumerate(zip(ranked.rows, ranked.scores), start=1):
            record = pool.records[row]
            items.append({"news_id": record.news_id, "score": score, "rank": rank, "title": record.title,
                          "category": record.category})
        # A Response, so FastAPI does not validate its own output again (RecommendResponse documents it)
        return JSONResponse({"items": items, "model": model_name, "took_ms": 1000 * (time.perf_counter() - start)})

    @app.post("/explain")
    def explain(request: ExplainRequest):
        start = time.perf_counter()
        out = engine.explain(request.history, request.news_id, request.user, request.skip_unknown)
        return out | {"took_ms": 1000 * (time.perf_counter() - start)}

    @app.post("/news")
    def post_news(request: NewsPost):
        start = time.perf_counter()
        records = [NewsRecord(**item.model_dump()) for item in request.items]
        added, replaced = engine.add_news(records)
        return {"added": added, "replaced": replaced, "pool_size": len(engine.pool),
                "took_ms": 1000 * (time.perf_counter() - start)}

    @app.get("/news")
    def search_news(q: str = Query("", max_length=200), limit: int = Query(20, ge=1, le=200)):
        """News of the pool whose title contains ``q`` (case-insensitive; newest first)."""
        pool, needle, found = engine.pool, q.lower(), []
        for row in range(len(pool.records) - 1, 0, -1):
            if needle in pool.records[row].title.lower():
                found.append(engine.record_json(pool, row))
                if len(found) >= limit:
                    break
        return {"items": found, "pool_size": len(pool)}

    @app.get("/users")
    def users(limit: int = Query(50, ge=1, le=1000)):
        """Users from ``--behaviors`` with the longest histories first."""
        ranked = sorted(engine.users.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:limit]
        return {"users": [{"user": u, "history_len": len(h)} for u, h in ranked], "total": len(engine.users)}

    @app.get("/users/{user_id}")
    def user_history(user_id: str):
        if user_id not in engine.users:
            raise HTTPException(404, f"user {user_id!r} is not in --behaviors")
        pool = engine.pool
        return {"user": user_id, "history": [engine.record_json(pool, pool.row_of[n])
                                             for n in engine.users[user_id] if n in pool.row_of]}

    @app.get("/health")
    def health():
        return {"status": "ok", "model": model_name, "pool_size": len(engine.pool)}

    @app.get("/model")
    def model_info():
        batching = None if batcher is None else {"max_batch": max_batch, "batches": batcher.batches,
                                                 "requests": batcher.requests}
        return engine.info() | {"startup_s": startup_s, "batching": batching}

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.add_middleware(BodyLimit, limit=max_body)
    return app
