"""MIND-sized synthetic data, written as a stream: ``newsrank synth --preset mind-small|mind-large``.

The same generative story as :mod:`newsrank.data.synth` (topics, vocabularies, entities, user
interests over subcategories, the click logit of interest + popularity), at MIND's sizes and in
MIND's shapes, in memory bounded by the per-user and per-news arrays, never by the impressions:

* **Sizes** are MIND's (users, news, train and dev impressions; MIND's test split is not written).
* **Histories are fixed per user**, as in MIND, where a user's history is their clicks before the
  logged weeks: every impression of a user shows the same history, in both splits. History
  lengths are lognormal (median 19, mean ~33, ~3% empty: MIND's new users), cut at 400.
* **Candidates per impression** are lognormal (median 24, mean ~37), cut to [2, 300]: MIND's
  skew, with a few very long impressions.
* Impressions follow the time-sorted order of the logged week (6 days train, the last day dev);
  they are generated and written ``chunk`` impressions at a time, and only per-news masks of what
  each split references are kept, so news.tsv is written last.

Figures (sizes, time, peak memory) are printed by ``benchmarks/bench_scale.py``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..core.atomic import atomic_folder
from .entities import write_vectors
from .mind import format_times
from .synth import (START, SynthConfig, _candidates_and_clicks, _graph_vectors, _impression_slots, _make_news,
                    _make_users, _make_world, _news_lines, _seed_histories)

__all__ = ["PRESETS", "MindPreset", "write_mind_sized"]


@dataclass(frozen=True)
class MindPreset:
    users: int
    news: int
    train_impressions: int
    dev_impressions: int
    history_median: float = 19.0  # clicks in a user's (fixed) history
    history_sigma: float = 1.05  # lognormal sigma: mean ~ median * exp(sigma^2 / 2) ~ 33
    history_max: int = 400
    empty_history_fraction: float = 0.03
    candidates_median: float = 24.0
    candidates_sigma: float = 0.93  # mean ~ 37
    candidates_max: int = 300


# MIND's published sizes (Wu et al., ACL 2020): MIND-small and MIND-large, train + dev.
PRESETS = {
    "mind-small": MindPreset(users=50_000, news=65_238, train_impressions=156_965, dev_impressions=73_152),
    "mind-large": MindPreset(users=1_000_000, news=161_013, train_impressions=2_232_748, dev_impressions=376_471),
}


def _lognormal_counts(rng: np.random.Generator, size: int, median: float, sigma: float, lo: int, hi: int) -> np.ndarray:
    return np.clip(np.rint(median * np.exp(sigma * rng.normal(size=size))), lo, hi).astype(np.int64)


def write_mind_sized(out_dir: str | Path, preset: MindPreset | str, seed: int = 0, chunk: int = 50_000,
                     user_chunk: int = 100_000, progress: bool = False) -> dict:
    """Write ``out_dir/train`` and ``out_dir/dev`` (news.tsv, behaviors.tsv, the entity, relation
    and context vectors) at ``preset``'s size; all or nothing (``core.atomic``). Returns the same
    summary as :func:`newsrank.data.synth.write_synthetic_mind`."""
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
        preset = PRESETS[preset]
    total = preset.train_impressions + preset.dev_impressions
    # Six logged days of training and the seventh for dev, 28 days of history-period news (MIND's
    # four weeks before the logged week); candidates from the last two days' news.
    cfg = SynthConfig(users=preset.users, news=preset.news, impressions=total, seed=seed,
                      dev_fraction=preset.dev_impressions / total, days=7, history_days=28,
                      candidate_window_days=2.0, min_candidates=2, max_candidates=preset.candidates_max)
    rng = np.random.Generator(np.random.PCG64(seed))
    world = _make_world(rng, cfg)
    news = _make_news(rng, cfg, world)
    ids = news["ids"]

    # Users, in chunks (the (users, subcategories) draws of one chunk at a time), and their fixed
    # histories as CSR arrays: user u's clicks are history_news[history_start[u]:history_start[u + 1]].
    pref = np.empty((cfg.users, world["sub_cat"].size), dtype=np.float32)  # (U, S)
    activity = np.empty(cfg.users)
    starts, parts = [0], []
    for lo in range(0, cfg.users, user_chunk):
        n = min(user_chunk, cfg.users - lo)
        users = _make_users(rng, dataclasses.replace(cfg, users=n), world)
        pref[lo:lo + n], activity[lo:lo + n] = users["pref"], users["activity"]
        wanted = _lognormal_counts(rng, n, preset.history_median, preset.history_sigma, 0, preset.history_max)
        wanted[rng.random(n) < preset.empty_history_fraction] = 0
        user, item = _seed_histories(rng, cfg, world, news, users, wanted)
        counts = np.bincount(user, minlength=n)
        starts.extend((starts[-1] + np.cumsum(counts)).tolist())
        parts.append(item.astype(np.int32))
    history_start = np.asarray(starts, dtype=np.int64)  # (U + 1,)
    history_news = np.concatenate(parts)  # (total clicks,)
    history_text: dict[int, str] = {}  # user -> its history field, built on first use

    imp_user, imp_time = _impression_slots(rng, cfg, activity)  # (I,), (I,) sorted by time
    n_train = preset.train_impressions
    positive = (ids + "-1").astype(object)
    negative = (ids + "-0").astype(object)
    pref_users = {"pref": pref}
    summary: dict = {"news": cfg.news, "users": cfg.users}
    referenced = {split: np.zeros(cfg.news, dtype=bool) for split in ("train", "dev")}
    stats = {split: {"impressions": 0, "candidates": 0, "clicks": 0} for split in ("train", "dev")}
    seen_users = {split: np.zeros(cfg.users, dtype=bool) for split in ("train", "dev")}

    with atomic_folder(out_dir) as tmp:
        for split in ("train", "dev"):
            (tmp / split).mkdir()
        handles = {split: open(tmp / split / "behaviors.tsv", "w", encoding="utf-8", newline="\n")
                   for split in ("train", "dev")}
        try:
            # chunk bounds, with the train/dev boundary as one of them
            bounds = sorted(set(list(range(0, total, chunk)) + [n_train, total]))
            bar = tqdm(total=total, desc="impressions", unit="imp", disable=not progress, dynamic_ncols=True)
            for lo, hi in zip(bounds[:-1], bounds[1:]):
                split = "train" if lo < n_train else "dev"
                users_here, times_here = imp_user[lo:hi], imp_time[lo:hi]
                wanted = _lognormal_counts(rng, hi - lo, preset.candidates_median, preset.candidates_sigma, 2,
                                           preset.candidates_max)
                cand_imp, cand_news, labels = _candidates_and_clicks(rng, cfg, world, news, pref_users,
                                                                     users_here, times_here, wanted)
                tokens = np.where(labels, positive[cand_news], negative[cand_news]).tolist()
                cand_bounds = np.searchsorted(cand_imp, np.arange(hi - lo + 1)).tolist()
                lines = []
                first_id = lo + 1 if split == "train" else lo + 1 - n_train  # ids restart at 1 in dev
                for i, (u, t) in enumerate(zip(users_here.tolist(), format_times(times_here, START))):
                    text = history_text.get(u)
                    if text is None:
                        text = history_text[u] = " ".join(ids[history_news[history_start[u]:history_start[u + 1]]])
                    lines.append(f"{first_id + i}\tU{u + 1}\t{t}\t{text}\t{' '.join(tokens[cand_bounds[i]:cand_bounds[i + 1]])}\n")
                handles[split].writelines(lines)
                referenced[split][cand_news] = True
                seen_users[split][users_here] = True
                stats[split]["impressions"] += hi - lo
                stats[split]["candidates"] += int(cand_news.size)
                stats[split]["clicks"] += int(labels.sum())
                bar.update(hi - lo)
                if split == "train" and hi == n_train:
                    history_text.clear()  # bounded: a split's users' strings at most
            bar.close()
        finally:
            for handle in handles.values():
                handle.close()

        news_lines = _news_lines(world, news)
        graph = _graph_vectors(cfg, world)
        for split in ("train", "dev"):
            users_in = np.flatnonzero(seen_users[split])
            lengths = history_start[users_in + 1] - history_start[users_in]
            clicked = history_news[np.repeat(history_start[users_in], lengths)
                                   + np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)]
            referenced[split][clicked] = True
            rows = np.flatnonzero(referenced[split])
            with open(tmp / split / "news.tsv", "w", encoding="utf-8", newline="\n") as handle:
                handle.writelines(news_lines[i] + "\n" for i in rows)
            for name, (entity_ids, matrix) in graph.items():
                write_vectors(tmp / split / name, entity_ids, matrix)
            summary[split] = stats[split] | {"users": int(users_in.size), "news": int(rows.size)}
    return summary
