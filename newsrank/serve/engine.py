"""What ``newsrank serve`` answers with, independent of HTTP: a trained model, its news pool encoded
once, and top-k / candidate ranking / explanations over it.

The pool is an immutable :class:`Pool` snapshot (records, token arrays, news vectors). A request
reads ``engine.pool`` once and works on that snapshot; ``add_news`` builds a new snapshot (the new
rows encoded through the checkpoint's vocabularies, exactly as ``newsrank predict`` maps news it
never saw in training) and swaps it in under a lock, so readers never wait and never see half an
update.

How each kind of model answers (``NewsRecModel`` flags):

* cacheable (NRMS, LSTUR, NAML, FUM, GRU): news vectors [N, D] encoded once at start; a request
  encodes one user vector and takes the exact top-k of ``model.score`` over the whole pool.
* user-conditioned news (NPA): a news vector depends on its reader, so the pool is encoded per
  user index (users unseen in training share ``<unk>``), on first use, and the last
  ``NPA_POOL_CACHE`` such encodings are kept: a new user's first request encodes the whole pool.
* candidate-aware (DKN, FIM): news vectors are cached, but every candidate runs the user side
  again (``score_candidates``, in chunks of ``CANDIDATE_CHUNK``). Without ``candidates`` they rank
  a bounded pool: the ``candidate_pool`` newest news (the last rows of ``news.tsv``, then news
  posted to ``/news``), not all N.

Scores are the raw scores the evaluator ranks by (no sigmoid): for the same history and
candidates they equal ``newsrank predict``'s (a test checks it).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import Checkpoint, load_checkpoint, resolve_run
from ..data.batching import NewsFeatures, UserInputs
from ..data.dataset import NewsTable, build_news_table
from ..data.mind import NewsRecord, iter_behaviors, read_news
from ..data.plm import attach_plm_records, replace_token_rows
from ..data.vocab import PAD, UNK, tokenize
from ..evaluate import eval_mode
from .explain import NotExplainable, explain  # noqa: F401 (NotExplainable: for the HTTP layer)

CANDIDATE_CHUNK = 256  # candidates per score_candidates call (DKN's attention is [C, H, hidden] per call)
NPA_POOL_CACHE = 8  # per-user pool encodings kept for user-conditioned models
ENCODE_BATCH = 512  # news per encode_news call when encoding the pool


class UnknownNews(LookupError):
    """News ids the pool does not hold (the HTTP layer answers 404 listing them)."""

    def __init__(self, ids: list[str]):
        self.ids = ids
        super().__init__(f"unknown news ids: {', '.join(ids[:20])}{' ...' if len(ids) > 20 else ''}")


@dataclass(frozen=True)
class Pool:
    """One immutable snapshot of the served news."""

    records: list[NewsRecord | None]  # [N] row -> record (row 0: the padding news, None)
    row_of: dict[str, int]  # news id -> row
    table: NewsTable  # token arrays, row 0 padding (build_news_table's layout)
    features: NewsFeatures  # the same as tensors (user encoders that read clicked tokens see all rows)
    vectors: torch.Tensor | None  # [N, D] news vectors; None when they depend on the reader (NPA)
    history_table: torch.Tensor | None  # [N, F] model.history_features(vectors), or None
    version: int  # bumps on every update (keys the per-user caches)

    def __len__(self) -> int:
        return len(self.records) - 1  # real news, the padding row left out


@dataclass
class RankRequest:
    """One ``recommend`` call, for ``recommend_batch``."""

    history: list[str]
    user: str | None = None
    k: int = 10
    candidates: list[str] | None = None
    exclude_history: bool = True
    skip_unknown: bool = False


@dataclass
class Ranked:
    rows: list[int]
    scores: list[float]


class Engine:
    """A loaded run serving one news pool."""

    def __init__(self, checkpoint: Checkpoint, news: dict[str, NewsRecord], candidate_pool: int = 2000,
                 run: str | Path | None = None):
        if not news:
            raise ValueError("the news pool is empty")
        self.checkpoint = checkpoint
        self.model = checkpoint.model.eval()
        self.config = checkpoint.config
        self.vocabs = checkpoint.vocabs
        self.run = None if run is None else str(run)
        self.candidate_pool = candidate_pool
        self._write_lock = threading.Lock()
        self._npa_pools: OrderedDict[tuple[int, int], torch.Tensor] = OrderedDict()
        self._npa_lock = threading.Lock()
        self.users: dict[str, list[str]] = {}  # user id -> latest history (oldest first), from --behaviors
        self.pool = self._build_pool([None], {}, None, None, list(news.values()), version=0)

    # ------------------------------------------------------------------ pool

    @torch.inference_mode()
    def _build_pool(self, records: list[NewsRecord | None], row_of: dict[str, int], old: Pool | None,
                    old_vectors: torch.Tensor | None, new: list[NewsRecord], version: int) -> Pool:
        """A snapshot with ``new`` records added to (or replacing rows of) ``old``; only the rows
        that changed are encoded."""
        records, row_of = list(records), dict(row_of)
        new = list({r.news_id: r for r in new}.values())  # one id posted twice: the last one counts
        changed = []
        for record in new:
            row = row_of.get(record.news_id)
            if row is None:
                row = len(records)
                records.append(record)
                row_of[record.news_id] = row
            else:
                records[row] = record
            changed.append(row)
        fresh = build_news_table({r.news_id: r for r in new}, self.vocabs, self.config.data)  # row 0 = padding
        # news_encoder=plm: the PLM's title vectors or lower-layer token states of the new rows, as evaluate
        # attaches them (and checked against the PLM the model was trained on); cached for the first pool only
        attach_plm_records(fresh, [None] + new, self.config.model, use_cache=old is None)
        if old is None:
            table = fresh
        else:
            arrays = {}
            for name in ("title", "abstract", "category", "subcategory", "entities", "title_word_entities", "plm",
                         "plm_body"):
                previous = getattr(old.table, name)
                if previous is None:  # (plm, plm_body: only for models with frozen PLM vectors)
                    continue
                grown = np.zeros((len(records), *previous.shape[1:]), dtype=previous.dtype)
                grown[: len(previous)] = previous
                grown[changed] = getattr(fresh, name)[1:]
                arrays[name] = grown
            for states, offsets in (("plm_states", "plm_offsets"), ("plm_body_states", "plm_body_offsets")):
                if getattr(old.table, states) is not None:  # plm_tune_last: ragged token states
                    arrays[states], arrays[offsets] = replace_token_rows(
                        getattr(old.table, states), getattr(old.table, offsets), len(records), changed,
                        getattr(fresh, states), getattr(fresh, offsets))
            table = NewsTable(news_ids=[""] + [r.news_id for r in records[1:]], **arrays)
        features = NewsFeatures.from_table(table)
        vectors = history_table = None
        if not self.model.user_conditioned_news:
            rows = torch.arange(len(records)) if old_vectors is None else torch.as_tensor(changed)
            encoded = self.model.encode_news_rows(features, rows, ENCODE_BATCH)  # [R, D]
            if old_vectors is None:
                vectors = encoded
            else:
                vectors = torch.cat([old_vectors, old_vectors.new_zeros(len(records) - len(old_vectors),
                                                                        old_vectors.shape[1])])  # [N, D]
                vectors[rows] = encoded
            history_table = self.model.history_features(vectors)  # [N, F] or None
        return Pool(records, row_of, table, features, vectors, history_table, version)

    def add_news(self, records: list[NewsRecord]) -> tuple[int, int]:
        """Add or replace news items (encoded at once); returns (added, replaced)."""
        with self._write_lock:
            pool = self.pool
            replaced = sum(r.news_id in pool.row_of for r in records)
            self.pool = self._build_pool(pool.records, pool.row_of, pool, pool.vectors, records, pool.version + 1)
        return len(records) - replaced, replaced

    def load_users(self, path: str | Path) -> int:
        """Each user's latest history in a ``behaviors.tsv`` (for the page's user picker); news ids
        the pool lacks are dropped. Returns the number of users."""
        known = self.pool.row_of
        latest: dict[str, tuple] = {}
        for imp in iter_behaviors(path):
            if imp.user_id not in latest or imp.time >= latest[imp.user_id][0]:
                latest[imp.user_id] = (imp.time, [n for n in imp.history if n in known])
        self.users = {user: history for user, (_, history) in latest.items()}
        return len(self.users)

    # ------------------------------------------------------------------ helpers

    def rows(self, pool: Pool, ids: list[str], skip_unknown: bool) -> list[int]:
        missing = [i for i in ids if i not in pool.row_of]
        if missing and not skip_unknown:
            raise UnknownNews(list(dict.fromkeys(missing)))
        return [pool.row_of[i] for i in ids if i in pool.row_of]

    def user_index(self, user: str | None) -> int:
        return UNK if user is None else self.vocabs.users.lookup(user)

    def _reader_vectors(self, pool: Pool, user: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """([N, D] news vectors as ``user`` reads them, [N, F] their history features or None)."""
        if pool.vectors is not None:
            return pool.vectors, pool.history_table
        key = (pool.version, user)
        with self._npa_lock:
            cached = self._npa_pools.get(key)
            if cached is not None:
                self._npa_pools.move_to_end(key)
                return cached, None
        rows = torch.arange(len(pool.records))
        vectors = self.model.encode_news_rows(pool.features, rows, ENCODE_BATCH, users=torch.full_like(rows, user))
        with self._npa_lock:
            self._npa_pools[key] = vectors
            while len(self._npa_pools) > NPA_POOL_CACHE:
                self._npa_pools.popitem(last=False)
        return vectors, None

    def batch_inputs(self, pool: Pool, histories: list[list[int]], users: list[int], vectors: torch.Tensor,
                     feature_table: torch.Tensor | None) -> UserInputs:
        """UserInputs [B, W] of several users, read against ``vectors`` [N, D] (and their history
        features [N, F], when the model has them). Each history keeps its most recent
        ``history_len`` clicks, as preprocessing does, left-padded to the longest; an empty history
        is padding only, as in the evaluator (padding is masked everywhere, so each user's vector
        is the one it gets alone)."""
        keep = self.config.data.history_len
        recent = [rows[-keep:] if keep else [] for rows in histories]
        width = max(1, max(len(rows) for rows in recent))
        history = torch.zeros(len(recent), width, dtype=torch.long)  # [B, W] left-padded with PAD
        for b, rows in enumerate(recent):
            if rows:
                history[b, width - len(rows):] = torch.tensor(rows)
        features = None if feature_table is None else feature_table[history]  # [B, W, F]
        history_vectors = None
        if features is None or self.model.needs_history_vectors or self.model.candidate_aware:
            history_vectors = vectors[history]  # [B, W, D]
        return UserInputs(history, history != PAD, history_vectors, torch.tensor(users), pool.features, features)

    def user_inputs(self, pool: Pool, history_rows: list[int], user: int) -> tuple[UserInputs, torch.Tensor]:
        """(UserInputs of one user [1, H], the [N, D] news vectors that user reads)."""
        vectors, feature_table = self._reader_vectors(pool, user)
        return self.batch_inputs(pool, [history_rows], [user], vectors, feature_table), vectors

    def _score(self, inputs: UserInputs, vectors: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """[R] scores of news ``rows`` [R] for the user of ``inputs``."""
        if not self.model.candidate_aware:
            user = self.model.encode_user(inputs)  # [1, D]
            return self.model.score(user, vectors.index_select(0, rows)[None])[0]  # [R]
        parts = []
        for lo in range(0, len(rows), CANDIDATE_CHUNK):
            chunk = vectors.index_select(0, rows[lo : lo + CANDIDATE_CHUNK])[None]  # [1, C, D]
            parts.append(self.model.score_candidates(inputs, chunk)[0])  # [C]
        return torch.cat(parts) if parts else vectors.new_zeros(0)

    # ------------------------------------------------------------------ answers

    @torch.inference_mode()
    def recommend(self, history: list[str], user: str | None = None, k: int = 10,
                  candidates: list[str] | None = None, exclude_history: bool = True,
                  skip_unknown: bool = False) -> tuple[Pool, Ranked]:
        """The top ``k`` of the pool (``candidates`` None) or the given candidates ranked, best
        first. ``exclude_history`` leaves the clicked news out of the pool (never out of given
        candidates)."""
        pool = self.pool
        history_rows = self.rows(pool, history, skip_unknown)
        candidate_rows = None if candidates is None else self.rows(pool, candidates, skip_unknown)
        inputs, vectors = self.user_inputs(pool, history_rows, self.user_index(user))
        if candidate_rows is not None:
            rows = torch.tensor(candidate_rows, dtype=torch.long)
            scores = self._score(inputs, vectors, rows)  # [C]
            k = min(k, len(rows))
            top = torch.sort(scores, descending=True, stable=True).indices[:k]  # ties keep the given order
            return pool, Ranked(rows[top].tolist(), scores[top].tolist())
        if self.model.candidate_aware:  # the bounded pool: the newest news
            first = max(1, len(pool.records) - self.candidate_pool)
            scores = self._score(inputs, vectors, torch.arange(first, len(pool.records)))  # [R]
            scores = torch.cat([scores.new_full((first,), float("-inf")), scores])  # [N], by row
        else:
            # Every row at once, read in place (no [N, D] copy per request): [N]
            scores = self.model.score(self.model.encode_user(inputs), vectors[None])[0]
        scores[0] = float("-inf")  # the padding news
        if exclude_history and history_rows:
            scores[torch.tensor(history_rows)] = float("-inf")
        eligible = int(torch.isfinite(scores).sum())
        values, top = torch.topk(scores, min(k, eligible))
        return pool, Ranked(top.tolist(), values.tolist())

    def batchable(self) -> bool:
        """Whether requests can share one pass (one user encoder call for the batch, one [B, D] x
        [D, N] product): cacheable models with pool-wide vectors and the dot-product scorer."""
        from ..models.base import NewsRecModel

        return (not self.model.candidate_aware and not self.model.user_conditioned_news
                and type(self.model).score is NewsRecModel.score)

    @torch.inference_mode()
    def recommend_batch(self, requests: list[RankRequest]) -> list[tuple[Pool, Ranked] | Exception]:
        """``recommend`` for several requests at once (``batchable`` models): histories left-padded
        into one [B, W] batch for one user encoder call (padding is masked everywhere, so each user
        vector is the one it gets alone), and the pool read once for all whole-pool requests (one
        [B, D] x [D, N] product) instead of once each: that read is most of such a request's time.
        An unknown id fails its own request only."""
        pool = self.pool
        out: list = [None] * len(requests)
        histories, candidates, owners = [], [], []
        for i, request in enumerate(requests):
            try:
                rows = self.rows(pool, request.history, request.skip_unknown)
                wanted = None if request.candidates is None else self.rows(pool, request.candidates,
                                                                           request.skip_unknown)
            except UnknownNews as err:
                out[i] = err
                continue
            histories.append(rows)
            candidates.append(wanted)
            owners.append(i)
        if not owners:
            return out
        users = [self.user_index(requests[i].user) for i in owners]
        inputs = self.batch_inputs(pool, histories, users, pool.vectors, pool.history_table)
        user_vectors = self.model.encode_user(inputs)  # [B, D]

        for b, i in enumerate(owners):  # given candidates: the dot-product scorer per request
            if candidates[b] is not None:
                rows = torch.tensor(candidates[b], dtype=torch.long)  # [C]
                scores = pool.vectors.index_select(0, rows) @ user_vectors[b]  # [C]
                top = torch.sort(scores, descending=True, stable=True).indices[: requests[i].k]
                out[i] = (pool, Ranked(rows[top].tolist(), scores[top].tolist()))
        whole = [b for b in range(len(owners)) if candidates[b] is None]
        if not whole:
            return out
        scores = user_vectors[whole] @ pool.vectors.T  # [B', N]: the dot-product scorer, batched
        scores[:, 0] = float("-inf")  # the padding news
        for row, b in enumerate(whole):
            if requests[owners[b]].exclude_history and histories[b]:
                scores[row, torch.tensor(histories[b])] = float("-inf")
        eligible = torch.isfinite(scores).sum(dim=1)  # [B']
        k = min(max(requests[owners[b]].k for b in whole), scores.shape[1])
        values, top = torch.topk(scores, k, dim=1)  # [B', k]
        for row, b in enumerate(whole):
            n = min(requests[owners[b]].k, int(eligible[row]))
            out[owners[b]] = (pool, Ranked(top[row, :n].tolist(), values[row, :n].tolist()))
        return out

    @torch.inference_mode()
    def explain(self, history: list[str], news_id: str, user: str | None = None,
                skip_unknown: bool = False) -> dict:
        """Which clicked news and which words drove ``news_id``'s score (see :mod:`.explain`)."""
        pool = self.pool
        history_rows = self.rows(pool, history, skip_unknown)
        (row,) = self.rows(pool, [news_id], False)
        inputs, vectors = self.user_inputs(pool, history_rows, self.user_index(user))
        score = float(self._score(inputs, vectors, torch.tensor([row]))[0])
        with eval_mode(self.model):
            return explain(self, pool, inputs, vectors, row, score)

    def record_json(self, pool: Pool, row: int) -> dict:
        record = pool.records[row]
        return {"news_id": record.news_id, "title": record.title, "category": record.category,
                "subcategory": record.subcategory}

    def title_words(self, pool: Pool, row: int) -> list[str]:
        """The title's tokens as the model read them (the first ``title_len``), aligned with the
        token columns of the pool's table."""
        return tokenize(pool.records[row].title)[: self.config.data.title_len]

    def info(self) -> dict:
        meta = self.checkpoint.meta
        return {"model": meta["model"], "run": self.run, "epoch": meta.get("epoch"),
                "metrics": meta.get("metrics", {}), "config": self.config.to_dict(), "pool_size": len(self.pool),
                "candidate_aware": self.model.candidate_aware,
                "user_conditioned_news": self.model.user_conditioned_news,
                "candidate_pool": self.candidate_pool if self.model.candidate_aware else None,
                "users": len(self.users)}


def load_engine(run: str | Path, news_path: str | Path, behaviors_path: str | Path | None = None,
                candidate_pool: int = 2000) -> tuple[Engine, float]:
    """An engine from a run folder (or checkpoint folder) and a ``news.tsv``; returns it and the
    seconds start-up took (load + read + encode the pool)."""
    start = time.perf_counter()
    folder = resolve_run(run)
    checkpoint = load_checkpoint(folder)
    engine = Engine(checkpoint, read_news(news_path), candidate_pool=candidate_pool, run=folder)
    if behaviors_path is not None:
        engine.load_users(behaviors_path)
    return engine, time.perf_counter() - start


class Batcher:
    """Runs ``recommend`` requests on one worker thread, each pass taking every request that queued
    meanwhile (up to ``max_batch``): no waiting when idle (a lone request goes at once), and under
    load one pass serves many. ``submit`` returns a ``concurrent.futures.Future``."""

    def __init__(self, engine: Engine, max_batch: int = 32):
        import queue

        self.engine, self.max_batch = engine, max_batch
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.batches = self.requests = 0  # counters, for /model
        self.thread = threading.Thread(target=self._work, name="newsrank-batcher", daemon=True)
        self.thread.start()

    def submit(self, request: RankRequest):
        from concurrent.futures import Future

        future: Future = Future()
        self.queue.put((request, future))
        return future

    def _work(self) -> None:
        import queue

        while True:
            jobs = [self.queue.get()]
            while len(jobs) < self.max_batch:
                try:
                    jobs.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            try:
                results = self.engine.recommend_batch([request for request, _ in jobs])
            except Exception as err:  # noqa: BLE001 (handed to every waiting request, never lost)
                results = [err] * len(jobs)
            self.batches += 1
            self.requests += len(jobs)
            for (_, future), result in zip(jobs, results):
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)
