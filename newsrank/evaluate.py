"""Fast evaluation and prediction, written once for every model.

Fast path: every news item of the split is encoded once (with what the user side computes from
each clicked news alone, ``model.history_features``), every impression's user once, and a
candidate's score is the dot product of the two (``model.score``). Because the training forward
uses the very same encoders and scorer, this gives the same numbers as scoring each candidate on
its own (``score_one_at_a_time``; a test checks it for every registered model).

Candidate-aware models (``model.candidate_aware``: DKN, FIM) have no user vector to cache: news
are still encoded once, and the candidates of a batch of impressions are padded to the longest
impression and scored by one ``model.score_candidates`` call with a candidate mask.
"""

from __future__ import annotations

import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from tqdm import tqdm

from .beyond import DEFAULT_K, beyond_metrics
from .core.atomic import atomic_file
from .core.distributed import World
from .data.batching import NewsFeatures, UserInputs, gather_rows
from .data.dataset import Behaviors, NewsTable
from .data.vocab import PAD
from .metrics import impression_metrics, impression_ranks
from .models import NewsRecModel


@contextmanager
def eval_mode(model: NewsRecModel) -> Iterator[None]:
    """Dropout off for the block; the model's previous mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@torch.no_grad()
def encode_all_news(model: NewsRecModel, news: NewsFeatures, batch_size: int) -> torch.Tensor:
    """[N, D] vectors of every news row, row 0 (padding) included."""
    return model.encode_news_rows(news, torch.arange(len(news), device=news.title.device), batch_size)


def impression_chunks(offsets: np.ndarray, batch_size: int, by_candidates: bool) -> list[tuple[int, int]]:
    """Consecutive impression ranges [lo, hi): ``batch_size`` impressions each, or, with
    ``by_candidates``, as many whole impressions as fit in ``batch_size`` candidates (at least one)."""
    n = len(offsets) - 1
    if not by_candidates:
        return [(lo, min(lo + batch_size, n)) for lo in range(0, n, batch_size)]
    chunks, lo = [], 0
    while lo < n:
        hi = int(np.searchsorted(offsets, offsets[lo] + batch_size, side="right")) - 1  # last offset that fits
        hi = min(max(hi, lo + 1), n)
        chunks.append((lo, hi))
        lo = hi
    return chunks


def history_width(history: np.ndarray) -> np.ndarray:
    """[I] columns each left-padded history [I, H] needs: from its oldest real click to the end
    (0 for an empty history)."""
    real = history != PAD
    return np.where(real.any(axis=1), history.shape[1] - real.argmax(axis=1), 0)


def padded_candidates(rows: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat candidate rows [t] of impressions with ``counts`` [b] candidates each, as [b, C] rows
    (padded with 0, the padding news) and a [b, C] bool mask, C = the largest count."""
    b = len(counts)
    width = int(counts.max()) if b else 0
    mask = torch.arange(width, device=rows.device)[None, :] < counts[:, None]  # [b, C]
    padded = rows.new_zeros(b, width)  # [b, C]
    padded[mask] = rows  # row-major order of mask = impression by impression, candidates in order
    return padded, mask


@torch.no_grad()
def score_behaviors(
    model: NewsRecModel,
    table: NewsTable,
    behaviors: Behaviors,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    progress: bool = False,
    news_vectors: torch.Tensor | None = None,
) -> np.ndarray:
    """Scores [T] of every candidate of every impression (aligned with ``behaviors.candidates``).

    ``batch_size`` counts news when encoding the news table, then impressions per batch; for a
    candidate-aware model it counts candidates (whole impressions, at least one, per batch), since
    its cost grows with the candidates rather than with the users. ``news_vectors``: the
    ``encode_all_news`` output when the caller already has it (evaluation reuses it for diversity).
    """
    with eval_mode(model):
        news = NewsFeatures.from_table(table, device)
        # Every news item once, unless its vector depends on the user (then per impression batch).
        if news_vectors is None and not model.user_conditioned_news:
            news_vectors = encode_all_news(model, news, batch_size)  # [N, D]
        # What the user side reads of each clicked news alone (NRMS: Q/K/V), once per news item.
        feature_table = None if news_vectors is None else model.history_features(news_vectors)  # [N, F] or None
        # And what a candidate-aware model reads of each candidate alone (DKN: its layers' candidate halves).
        candidate_table = None if news_vectors is None else model.candidate_features(news_vectors)  # [N, F'] or None
        offsets = np.asarray(behaviors.offsets)
        candidates = np.asarray(behaviors.candidates)  # [T] (memory-mapped from the cache: read per batch)
        scores = np.empty(len(candidates), dtype=np.float32)
        history_all = np.asarray(behaviors.history)  # [I, H] int32, left-padded (memory-mapped: read per batch)
        users_all = np.asarray(behaviors.users, dtype=np.int64)  # [I]
        counts_all = np.diff(offsets)  # [I] candidates per impression
        # Impressions in order of history width (oldest real click to the end), so that a batch is
        # cut to its own widest history: padding columns cost nothing (every model ignores them);
        # then by user, so that a MIND user's impressions (one history per user and split) fall in
        # the same batch and their user vector is computed once.
        width_all = history_width(history_all)  # [I]
        order = np.lexsort((users_all, width_all))
        chunks = impression_chunks(np.concatenate([[0], np.cumsum(counts_all[order])]), batch_size,
                                   model.candidate_aware)
        for lo, hi in tqdm(chunks, desc="scoring", unit="batch", disable=not progress, leave=False):
            picked = order[lo:hi]  # [b] impressions of this batch
            width = max(1, int(width_all[picked].max()))
            history = torch.as_tensor(history_all[picked, history_all.shape[1] - width :].astype(np.int64),
                                      device=device)  # [b, W]
            users = torch.as_tensor(users_all[picked], device=device)  # [b]
            # Candidates of these impressions, flat, with the impression each belongs to.
            counts_np = counts_all[picked]
            positions = np.repeat(offsets[picked] - (np.cumsum(counts_np) - counts_np), counts_np) + np.arange(
                counts_np.sum())  # [t] where each candidate's score goes
            counts = torch.as_tensor(counts_np, device=device)  # [b]
            owner = torch.repeat_interleave(torch.arange(len(picked), device=device), counts)  # [t]
            cand_rows = torch.as_tensor(candidates[positions].astype(np.int64), device=device)  # [t]
            inverse = torch.arange(len(picked), device=device)  # [b] the user row of each impression
            if not model.candidate_aware:
                # Each distinct (user, history) once: MIND repeats a user's history in every impression
                # of that user, so its user vectors are computed once, not once per impression.
                keys = torch.cat([users[:, None], history], dim=1)  # [b, 1 + W]
                distinct, inverse = torch.unique(keys, dim=0, return_inverse=True)  # [u, 1 + W], [b]
                first = torch.full((len(distinct),), len(keys), dtype=torch.long, device=device)
                first = first.scatter_reduce(0, inverse, torch.arange(len(keys), device=device), "amin")  # [u]
                history, users = history[first], users[first]  # [u, W], [u]
            if news_vectors is None:
                cand_vectors = model.encode_pairs(news, cand_rows, users[inverse][owner])  # [t, D]
            else:
                cand_vectors = news_vectors.index_select(0, cand_rows)  # [t, D]

            def user_inputs(history: torch.Tensor, users: torch.Tensor) -> UserInputs:
                if news_vectors is None:
                    w = history.shape[1]
                    history_vectors = model.encode_pairs(news, history.reshape(-1), users.repeat_interleave(w))
                    history_vectors = history_vectors.view(len(history), w, -1)  # [b, W, D]
                else:
                    history_vectors = None  # the model reads its features only
                    if feature_table is None or model.needs_history_vectors:
                        history_vectors = gather_rows(news_vectors, history)  # [b, W, D]
                # the model gathers the clicks' features when it reads them (features_of)
                return UserInputs(history, history != PAD, history_vectors, users, news, feature_table=feature_table)

            if model.candidate_aware:
                # No user vector to cache: all candidates of these impressions in one batched call.
                padded, mask = padded_candidates(torch.arange(len(cand_rows), device=device), counts)  # [b, C]
                cand_features = None if candidate_table is None else candidate_table.index_select(0, cand_rows)[padded]
                flat = model.score_candidates(user_inputs(history, users), cand_vectors[padded], mask,
                                              candidate_features=cand_features)[mask]  # [t]
            else:
                step = model.cpu_users_per_pass if history.device.type == "cpu" else None
                step = step or max(len(history), 1)
                user_vectors = torch.cat([model.encode_user(user_inputs(history[i : i + step], users[i : i + step]))
                                          for i in range(0, len(history), step)])[inverse]  # [b, D]
                flat = model.score(user_vectors[owner], cand_vectors[:, None, :])[:, 0]  # [t]
            scores[positions] = flat.float().cpu().numpy()
    return scores


@torch.no_grad()
def score_one_at_a_time(model: NewsRecModel, table: NewsTable, behaviors: Behaviors) -> np.ndarray:
    """The slow reference path: each candidate scored by its own pass through the encoders (for a
    candidate-aware model the whole user side is run again for every candidate)."""
    with eval_mode(model):
        news = NewsFeatures.from_table(table)
        offsets = np.asarray(behaviors.offsets)
        scores = np.empty(offsets[-1], dtype=np.float32)
        for i in range(len(behaviors)):
            history = torch.as_tensor(np.array(behaviors.history[i : i + 1], dtype=np.int64))  # [1, H]
            users = torch.as_tensor(np.array(behaviors.users[i : i + 1], dtype=np.int64))
            readers = users.expand(history.shape[1])  # [H]: NPA-style models read news as this user
            user = None
            for t in range(offsets[i], offsets[i + 1]):
                if user is None or model.candidate_aware:
                    history_vectors = model.encode_news(news.take(history[0]), readers)[None]  # [1, H, D]
                    inputs = UserInputs(history, history != PAD, history_vectors, users, news)
                    user = inputs if model.candidate_aware else model.encode_user(inputs)
                row = torch.tensor([int(behaviors.candidates[t])])
                candidate = model.encode_news(news.take(row), users)[None]  # [1, 1, D]
                if model.candidate_aware:
                    scores[t] = float(model.score_candidates(user, candidate)[0, 0])
                else:
                    scores[t] = float(model.score(user, candidate)[0, 0])
    return scores


def score_sharded(
    model: NewsRecModel,
    table: NewsTable,
    behaviors: Behaviors,
    world: World,
    batch_size: int = 256,
    progress: bool = False,
    news_vectors: torch.Tensor | None = None,
) -> np.ndarray:
    """``score_behaviors`` split over the processes of ``world``: each rank scores a contiguous share
    of the impressions, and every rank gets all the scores back, in order (a world of one just
    scores them all)."""
    lo, hi = world.shard(len(behaviors))
    mine = score_behaviors(model, table, behaviors.slice(lo, hi), batch_size, world.device, progress, news_vectors)
    return np.concatenate(world.gather(mine))


def evaluate(
    model: NewsRecModel,
    table: NewsTable,
    behaviors: Behaviors,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    progress: bool = False,
    world: World | None = None,
    click_counts: np.ndarray | None = None,
    beyond_k: int | None = DEFAULT_K,
) -> dict:
    """AUC, MRR, nDCG@5, nDCG@10 per impression, averaged (see :mod:`newsrank.metrics`); with a
    ``world`` of several processes, scored in shards (every rank returns the same metrics).

    Unless ``beyond_k`` is None, ``"beyond"`` holds the beyond-accuracy metrics of every
    impression's top ``beyond_k`` (:mod:`newsrank.beyond`), from the same scores and the news
    vectors scoring used; novelty needs ``click_counts`` ([N] training clicks per row of ``table``,
    ``beyond.train_click_counts``) and is None without them; vector diversity is None for a model
    whose news vectors depend on the user (NPA)."""
    if not behaviors.labelled:
        raise ValueError("this behaviors file has no labels: use `newsrank predict` to rank it")
    news_vectors = None
    if beyond_k is not None and not model.user_conditioned_news:
        with eval_mode(model):  # encoded once, for scoring and for diversity
            news_vectors = encode_all_news(model, NewsFeatures.from_table(table, device), batch_size)  # [N, D]
    if world is not None and world.distributed:
        scores = score_sharded(model, table, behaviors, world, batch_size, progress, news_vectors)
    else:
        scores = score_behaviors(model, table, behaviors, batch_size, device, progress, news_vectors)
    offsets = np.asarray(behaviors.offsets)
    metrics = impression_metrics(scores, np.asarray(behaviors.labels), offsets)
    if beyond_k is not None:
        metrics["beyond"] = beyond_metrics(scores, offsets, np.asarray(behaviors.candidates),
                                           np.asarray(behaviors.history), table.category, click_counts,
                                           news_vectors, beyond_k)
    return metrics


def write_prediction(path: str | Path, behaviors: Behaviors, scores: np.ndarray) -> Path:
    """MIND leaderboard file: ``<impression id> [r1,r2,...]`` (1-based rank of each candidate,
    in the order the candidates are listed), plus the zip the leaderboard takes. Returns the zip.
    Written line by line into a temporary file that replaces ``path`` at the end (MIND-large's test
    file has 2.4M lines: they are never all held as text)."""
    path = Path(path)
    offsets = np.asarray(behaviors.offsets)
    ranks = impression_ranks(scores, offsets)
    with atomic_file(path) as handle:
        for i, impression_id in enumerate(behaviors.impression_ids):
            ranked = ranks[offsets[i] : offsets[i + 1]]
            handle.write(f"{impression_id} [{','.join(map(str, ranked.tolist()))}]\n")
    archive = path.with_suffix(".zip")
    with atomic_file(archive, binary=True) as handle:
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.write(path, arcname="prediction.txt")  # the leaderboard looks for this exact name
    return archive
