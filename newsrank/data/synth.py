"""Synthetic MIND-format click logs with a signal a content-based model can learn.

Generative story (all randomness from one ``numpy.random.Generator(PCG64(seed))``):

1. **World.** The 17 MIND categories, each with 2-5 subcategories (named ``<category><pseudo-word>``).
   Words are unique pronounceable lowercase pseudo-words built from syllables: a shared pool of
   short "common" words, a broader vocabulary per category and a topic vocabulary per subcategory.
   Each category also owns a few named entities (``"Korvath Institute"``; Type P/O/G, WikidataId
   ``Q<number>``). Within every vocabulary word use is Zipf-like (a few words are frequent).
2. **News.** Category ~ an imbalanced global share, subcategory ~ a per-category share. Title: 6-14
   words drawn mostly from the subcategory and category vocabularies plus common words; abstract:
   15-35 words, more common words. Some titles/abstracts mention one of the category's entities,
   recorded in the entity JSON with the character offset of the mention. Popularity is lognormal.
   Publish times are uniform over a "history" period before the logged period (a share of the news
   proportional to its length) and over the logged period itself; news published before the logged
   period only ever appear in seed histories or as early candidates.
3. **Users.** Interest over categories ~ Dirichlet with large concentration on 1-3 focus
   categories and a small one elsewhere; preference over a category's subcategories ~ Dirichlet.
   Together they give ``pref[u, s] = theta[u, category(s)] * phi[u, s]``, a distribution over
   subcategories. Activity (number of impressions) is lognormal-weighted, so heavy-tailed; every
   user gets at least one impression when there are enough impressions.
4. **Seed histories.** Each user starts with 5-40 clicks on history-period news drawn with
   probability proportional to ``pref[u, subcategory] * popularity`` (a small fraction of "cold"
   users start empty, so a few impressions have an empty history, as in MIND).
5. **Impressions.** Times are spread over the logged days with a diurnal profile. Candidates: 5-40
   news sampled without replacement, popularity-weighted, from news published in the preceding
   ``candidate_window_days``. Each candidate is clicked with probability
   ``sigmoid(interest_weight * log(S * pref[u, s]) + popularity_weight * log(popularity)
   + click_bias + click_noise * N(0, 1))`` (S = number of subcategories, so a uniform preference
   contributes 0); an impression with no click gets its highest-logit candidate clicked. Clicks are
   appended (once per news) to the user's history, which later impressions show, oldest first.
6. **Split.** Impressions are sorted by time; the latest ``dev_fraction`` go to ``dev``, the rest to
   ``train``. Each split's news.tsv holds every news its behaviors reference (the two overlap).
7. **Knowledge-graph vectors.** As MIND, each split folder gets ``entity_embedding.vec`` and
   ``relation_embedding.vec`` (``entity_dim``-d, MIND's ``id<TAB>v1<TAB>...<TAB>`` layout), plus
   ``context_embedding.vec`` (DKN's context: the mean of an entity's neighbours). An entity's
   vector is its category's unit-norm centre plus noise (``entity_noise``), and its graph
   neighbours are the other entities of its category, so an entity's vector and its neighbourhood
   both carry the topic that drives clicks. Relations (a few WikiData property ids) are random.
   These come from a second generator (seed ``[seed, 1]``), so news.tsv and behaviors.tsv are
   byte-for-byte what they were before the vectors existed.

The user's interest is recoverable from the titles of the news in the history, and it dominates the
click decision, so a history-based content model beats popularity (see ``popularity_baseline_auc``).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from .entities import CONTEXT_FILE, ENTITY_FILE, RELATION_FILE, context_vectors, write_vectors
from ..metrics import impression_metrics
from .mind import format_times, read_behaviors, write_lines

__all__ = ["SynthConfig", "write_synthetic_mind", "popularity_baseline_auc"]

CATEGORIES = (
    "news", "sports", "finance", "lifestyle", "travel", "foodanddrink", "weather", "autos", "health",
    "entertainment", "music", "movies", "tv", "video", "kids", "northamerica", "middleeast",
)
START = datetime(2019, 11, 9)  # first logged day, as in MIND-small
_ONSETS = ("b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z",
           "br", "cr", "dr", "fr", "gr", "kl", "pl", "pr", "sk", "st", "tr", "sh", "ch", "th")
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "i", "o", "ai", "ou", "y")  # repeats make plain vowels likelier
_CODAS = ("", "", "", "", "", "n", "r", "s", "l", "m", "x", "nd")
_ENTITY_SUFFIXES = {"O": ("Institute", "Group", "Council", "Partners", "Foundation", "Motors", "League"),
                    "G": ("City", "Valley", "Bay", "County", "Heights", "Province")}
_TITLE_MIX = (0.45, 0.30, 0.25)     # share of title words from (subcategory, category, common) vocabularies
_ABSTRACT_MIX = (0.30, 0.30, 0.40)  # same for abstracts
_ZIPF_POWER = 2.0                   # word index = floor(size * U**power): low indices are frequent
# Relative impression rate per hour of day (0-23): morning and evening peaks.
_HOURLY = 0.25 + np.exp(-((np.arange(24) - 8.5) ** 2) / 8.0) + 0.8 * np.exp(-((np.arange(24) - 19.5) ** 2) / 10.0)


@dataclass
class SynthConfig:
    """Size, seed and generative knobs of the synthetic MIND data (see the module docstring)."""

    users: int = 2000
    news: int = 3000
    impressions: int = 6000
    seed: int = 0
    dev_fraction: float = 0.2  # fraction of impressions (latest in time) written to dev
    days: int = 7  # logged period length; impressions fall in [START, START + days)
    history_days: int = 7  # news published during this many days before START seed the histories
    candidate_window_days: float = 3.0  # candidates are news published at most this long before the impression
    min_candidates: int = 5
    max_candidates: int = 40
    min_seed_history: int = 5
    max_seed_history: int = 40
    cold_user_fraction: float = 0.02  # users starting with an empty history
    subcategory_words: int = 40  # topic vocabulary size per subcategory
    category_words: int = 80  # vocabulary size per category
    common_words: int = 150  # shared vocabulary size
    entities_per_category: int = 6
    entity_rate: float = 0.35  # probability that a title (and, independently, an abstract) mentions an entity
    entity_dim: int = 100  # size of the written entity / relation / context vectors (MIND's: 100)
    entity_noise: float = 0.5  # std (times 1/sqrt(entity_dim)) of an entity vector around its category centre
    popularity_sigma: float = 1.0  # log-popularity ~ N(0, sigma)
    activity_sigma: float = 1.0  # log user activity weight ~ N(0, sigma)
    focus_alpha: float = 2.0  # Dirichlet concentration on each of the user's 1-3 focus categories
    background_alpha: float = 0.05  # Dirichlet concentration (times C * category share) on other categories
    subcategory_alpha: float = 0.7  # Dirichlet concentration of the within-category subcategory preference
    interest_weight: float = 0.3  # click logit weight of log(S * pref[u, s])
    popularity_weight: float = 0.8  # click logit weight of log popularity
    click_bias: float = -3.2
    click_noise: float = 1.0  # std of the Gaussian noise on the click logit

    def __post_init__(self) -> None:
        if min(self.users, self.impressions, self.days, self.history_days) < 1:
            raise ValueError("users, impressions, days and history_days must be >= 1")
        if self.news < 4 * self.min_candidates:
            raise ValueError(f"news must be >= 4 * min_candidates = {4 * self.min_candidates}")
        if not 0.0 <= self.dev_fraction < 1.0:
            raise ValueError("dev_fraction must be in [0, 1)")
        if not 2 <= self.min_candidates <= self.max_candidates:
            raise ValueError("need 2 <= min_candidates <= max_candidates")
        if not 0 <= self.min_seed_history <= self.max_seed_history:
            raise ValueError("need 0 <= min_seed_history <= max_seed_history")
        if self.common_words > 1000:
            raise ValueError("common_words must be <= 1000 (one-syllable words run out)")
        if min(self.subcategory_words, self.category_words, self.common_words, self.entities_per_category) < 1:
            raise ValueError("vocabulary and entity sizes must be >= 1")
        if self.entity_dim < 1 or self.entity_noise < 0:
            raise ValueError("entity_dim must be >= 1 and entity_noise >= 0")


def write_synthetic_mind(out_dir: str | Path, config: SynthConfig) -> dict:
    """Write ``out_dir/train`` and ``out_dir/dev`` (news.tsv, behaviors.tsv) in MIND format.

    Returns summary counts: ``{"news", "users", "train": {...}, "dev": {...}}`` where each split has
    ``impressions``, ``users``, ``news`` (rows of its news.tsv), ``candidates`` and ``clicks``.
    """
    cfg = config
    rng = np.random.Generator(np.random.PCG64(cfg.seed))
    world = _make_world(rng, cfg)
    news = _make_news(rng, cfg, world)
    users = _make_users(rng, cfg, world)
    seed_user, seed_news = _seed_histories(rng, cfg, world, news, users)
    imp_user, imp_time = _impression_slots(rng, cfg, users["activity"])
    cand_imp, cand_news, labels = _candidates_and_clicks(rng, cfg, world, news, users, imp_user, imp_time)
    n_train = cfg.impressions - int(round(cfg.impressions * cfg.dev_fraction))
    lines, referenced = _behavior_lines(cfg, news["ids"], seed_user, seed_news, imp_user, imp_time,
                                        cand_imp, cand_news, labels, n_train)
    news_lines = _news_lines(world, news)

    out = Path(out_dir)
    summary: dict = {"news": cfg.news, "users": cfg.users}
    bounds = {"train": (0, n_train), "dev": (n_train, cfg.impressions)}
    graph = _graph_vectors(cfg, world)
    for split, (lo, hi) in bounds.items():
        (out / split).mkdir(parents=True, exist_ok=True)
        for name, (ids, matrix) in graph.items():
            write_vectors(out / split / name, ids, matrix)
        rows = np.flatnonzero(referenced[split])
        write_lines(out / split / "news.tsv", [news_lines[i] for i in rows])
        write_lines(out / split / "behaviors.tsv", lines[lo:hi])
        in_split = (cand_imp >= lo) & (cand_imp < hi)
        summary[split] = {"impressions": hi - lo, "users": int(np.unique(imp_user[lo:hi]).size),
                          "news": int(rows.size), "candidates": int(in_split.sum()),
                          "clicks": int(labels[in_split].sum())}
    return summary


def popularity_baseline_auc(split_dir: str | Path, train_dir: str | Path | None = None) -> float:
    """Mean per-impression AUC on ``split_dir/behaviors.tsv`` of scoring candidates by train click count.

    Click counts come from ``train_dir/behaviors.tsv`` (default: the ``train`` folder beside
    ``split_dir``). Impressions whose labels are all equal are skipped; nan if none is left.
    """
    split_dir = Path(split_dir)
    train_dir = split_dir.parent / "train" if train_dir is None else Path(train_dir)
    counts: Counter = Counter()
    for imp in read_behaviors(train_dir / "behaviors.tsv"):
        counts.update(nid for nid, y in zip(imp.candidates, imp.labels or []) if y)
    impressions = read_behaviors(split_dir / "behaviors.tsv")
    scores = np.array([counts[nid] for imp in impressions for nid in imp.candidates], dtype=np.float64)
    labels = np.array([y for imp in impressions for y in imp.labels or [0] * len(imp.candidates)], dtype=np.int8)
    offsets = np.cumsum([0] + [len(imp.candidates) for imp in impressions])
    return float(impression_metrics(scores, labels, offsets)["auc"])


# ----------------------------------------------------------------------------------------------- world


def _make_world(rng: np.random.Generator, cfg: SynthConfig) -> dict:
    """Categories, subcategories, vocabularies and entities.

    Returned arrays: ``sub_cat`` (S,) category of each subcategory (subcategories of one category
    are contiguous), ``sub_names`` (S,), ``cat_share`` (C,) news share per category, ``sub_share``
    (S,) news share of each subcategory within its category, ``words`` (V,) object array laid out as
    [common | category 0 | ... | subcategory 0 | ...], ``entities`` list per category of
    (label, type, wikidata id).
    """
    n_cat = len(CATEGORIES)
    n_subs = rng.integers(2, 6, size=n_cat)  # (C,) subcategories per category
    sub_cat = np.repeat(np.arange(n_cat), n_subs)  # (S,)
    taken: set[str] = set()
    sub_names = np.array([CATEGORIES[c] + w for c, w in zip(sub_cat, _pseudo_words(rng, sub_cat.size, 1, 2, taken))])
    common = _pseudo_words(rng, cfg.common_words, 1, 1, taken)
    cat_vocab = _pseudo_words(rng, n_cat * cfg.category_words, 2, 3, taken)
    sub_vocab = _pseudo_words(rng, sub_cat.size * cfg.subcategory_words, 2, 3, taken)
    sub_share = rng.gamma(2.0, size=sub_cat.size)
    sub_share /= np.bincount(sub_cat, weights=sub_share)[sub_cat]

    n_ent = n_cat * cfg.entities_per_category
    types = rng.choice(np.array(["P", "O", "G"]), size=n_ent)
    qids = 100_000 + rng.choice(99_900_000, size=n_ent, replace=False)  # distinct 6-8 digit ids
    names = [w.capitalize() for w in _pseudo_words(rng, 2 * n_ent, 2, 3, taken)]
    labels = []
    for i, t in enumerate(types):
        if t == "P":  # "Given Family"
            labels.append(f"{names[2 * i]} {names[2 * i + 1]}")
        else:  # "Name Suffix" for organisations and places
            suffixes = _ENTITY_SUFFIXES[str(t)]
            labels.append(f"{names[2 * i]} {suffixes[rng.integers(len(suffixes))]}")
    per = cfg.entities_per_category
    entities = [[(labels[i], str(types[i]), f"Q{qids[i]}") for i in range(c * per, (c + 1) * per)]
                for c in range(n_cat)]
    return {"sub_cat": sub_cat, "sub_names": sub_names, "cat_share": rng.dirichlet(np.full(n_cat, 2.0)),
            "sub_share": sub_share, "words": np.array(common + cat_vocab + sub_vocab, dtype=object),
            "entities": entities}


def _graph_vectors(cfg: SynthConfig, world: dict) -> dict[str, tuple[list[str], np.ndarray]]:
    """Entity, relation and context vectors by file name (see step 7 of the module docstring)."""
    rng = np.random.Generator(np.random.PCG64([cfg.seed, 1]))  # apart from the text and click stream
    d = cfg.entity_dim
    centres = rng.normal(size=(len(CATEGORIES), d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    ids = [qid for per_category in world["entities"] for _, _, qid in per_category]
    category = np.repeat(np.arange(len(CATEGORIES)), [len(e) for e in world["entities"]])
    entities = centres[category] + cfg.entity_noise / np.sqrt(d) * rng.normal(size=(len(ids), d))
    neighbours = {ids[i]: [ids[j] for j in np.flatnonzero(category == category[i]) if j != i]
                  for i in range(len(ids))}
    relation_ids = ["P31", "P17", "P131", "P361", "P279", "P106"]
    relations = rng.normal(size=(len(relation_ids), d)) / np.sqrt(d)
    entities = entities.astype(np.float32)
    return {ENTITY_FILE: (ids, entities), RELATION_FILE: (relation_ids, relations.astype(np.float32)),
            CONTEXT_FILE: (ids, context_vectors(ids, entities, neighbours))}


def _pseudo_words(rng: np.random.Generator, count: int, min_syl: int, max_syl: int, taken: set[str]) -> list[str]:
    """``count`` new unique pseudo-words of ``min_syl``-``max_syl`` syllables, none in (and added to) ``taken``."""
    out: list[str] = []
    while len(out) < count:
        m = 2 * (count - len(out)) + 16
        n_syl = rng.integers(min_syl, max_syl + 1, size=m)
        onsets = rng.integers(len(_ONSETS), size=(m, max_syl))
        vowels = rng.integers(len(_VOWELS), size=(m, max_syl))
        codas = rng.integers(len(_CODAS), size=m)
        for j in range(m):
            w = "".join(_ONSETS[onsets[j, k]] + _VOWELS[vowels[j, k]] for k in range(n_syl[j])) + _CODAS[codas[j]]
            if w not in taken:
                taken.add(w)
                out.append(w)
                if len(out) == count:
                    break
    return out


# ------------------------------------------------------------------------------------------------ news


def _make_news(rng: np.random.Generator, cfg: SynthConfig, world: dict) -> dict:
    """News attributes (all arrays of length N, news ``i`` has id ``N{i+1}``).

    ``cat``/``sub`` category/subcategory index, ``log_pop`` log popularity, ``pub`` publish time in
    seconds relative to START (negative = history period), ``title``/``abstract`` text,
    ``title_ent``/``abstract_ent`` entity JSON, ``ids`` object array of id strings.
    """
    n = cfg.news
    sub_cat = world["sub_cat"]
    cat = rng.choice(len(CATEGORIES), size=n, p=world["cat_share"])
    # Subcategory within the category, by inverse CDF over the category's contiguous block of subcategories.
    cum = np.cumsum(world["sub_share"])  # (S,) reaches c+1 at the end of category c's block
    sub = np.searchsorted(cum, cat + rng.random(n), side="right")
    sub = np.clip(sub, np.searchsorted(sub_cat, cat, "left"), np.searchsorted(sub_cat, cat, "right") - 1)
    # Publish times: a fixed share (>= min_candidates news, so every impression has a pool) in the history
    # period [-history_days, 0), the rest in the logged period; permuted so that ids carry no time order.
    n_old = max(cfg.min_candidates, round(n * cfg.history_days / (cfg.history_days + cfg.days)))
    pub = rng.permutation(np.concatenate([rng.uniform(-cfg.history_days, 0, size=n_old),
                                          rng.uniform(0, cfg.days, size=n - n_old)])) * 86400.0
    title, title_ent = _texts(rng, cfg, world, cat, sub, rng.integers(6, 15, size=n), _TITLE_MIX)
    abstract, abstract_ent = _texts(rng, cfg, world, cat, sub, rng.integers(15, 36, size=n), _ABSTRACT_MIX)
    return {"cat": cat, "sub": sub, "log_pop": rng.normal(0.0, cfg.popularity_sigma, size=n),
            "pub": pub,
            "title": title, "title_ent": title_ent, "abstract": abstract, "abstract_ent": abstract_ent,
            "ids": np.array([f"N{i + 1}" for i in range(n)], dtype=object)}


def _texts(rng: np.random.Generator, cfg: SynthConfig, world: dict, cat: np.ndarray, sub: np.ndarray,
           lengths: np.ndarray, mix: tuple[float, float, float]) -> tuple[list[str], list[str]]:
    """One text per news (``lengths`` words + possibly one entity mention) and its entity JSON."""
    n_cat = len(CATEGORIES)
    owner = np.repeat(np.arange(lengths.size), lengths)  # (T,) news of each word slot
    source = rng.choice(3, size=owner.size, p=mix)  # 0 subcategory, 1 category, 2 common vocabulary
    size = np.array([cfg.subcategory_words, cfg.category_words, cfg.common_words])[source]
    start = np.select([source == 0, source == 1],
                      [cfg.common_words + n_cat * cfg.category_words + sub[owner] * cfg.subcategory_words,
                       cfg.common_words + cat[owner] * cfg.category_words], 0)
    tokens = world["words"][start + (size * rng.random(owner.size) ** _ZIPF_POWER).astype(np.int64)]
    ends = np.cumsum(lengths)
    has_ent = rng.random(lengths.size) < cfg.entity_rate
    which = rng.integers(cfg.entities_per_category, size=lengths.size)
    where = (rng.random(lengths.size) * (lengths + 1)).astype(np.int64)  # insert before word `where`
    conf = np.round(rng.uniform(0.9, 1.0, size=lengths.size), 3)
    texts, ents = [], []
    for i, end in enumerate(ends.tolist()):
        words = tokens[end - lengths[i]:end].tolist()
        ent_json = "[]"
        if has_ent[i]:
            label, etype, qid = world["entities"][cat[i]][which[i]]
            offset = len(" ".join(words[:where[i]])) + (where[i] > 0)
            words.insert(where[i], label)
            ent_json = json.dumps([{"Label": label, "Type": etype, "WikidataId": qid, "Confidence": float(conf[i]),
                                    "OccurrenceOffsets": [int(offset)], "SurfaceForms": [label]}])
        text = " ".join(words)
        texts.append(text[0].upper() + text[1:])
        ents.append(ent_json)
    return texts, ents


def _news_lines(world: dict, news: dict) -> list[str]:
    """news.tsv line (without newline) of every news."""
    cats, subs = np.array(CATEGORIES)[news["cat"]], world["sub_names"][news["sub"]]
    return [f"{nid}\t{c}\t{s}\t{t}\t{a}.\thttps://synthetic.newsrank.invalid/{nid}.html\t{te}\t{ae}"
            for nid, c, s, t, a, te, ae in zip(news["ids"], cats, subs, news["title"], news["abstract"],
                                               news["title_ent"], news["abstract_ent"])]


# ----------------------------------------------------------------------------------------------- users


def _make_users(rng: np.random.Generator, cfg: SynthConfig, world: dict) -> dict:
    """``pref`` (U, S) each user's distribution over subcategories; ``activity`` (U,) impression rate weights."""
    n_cat, n_users = len(CATEGORIES), cfg.users
    share = world["cat_share"]
    # 1-3 focus categories per user, drawn without replacement proportional to category share (Gumbel top-k).
    n_focus = rng.choice(np.array([1, 2, 3]), size=n_users, p=[0.4, 0.4, 0.2])
    keys = np.log(share) + rng.gumbel(size=(n_users, n_cat))
    rank = np.argsort(np.argsort(-keys, axis=1), axis=1)  # (U, C) rank of each category in the user's draw
    alpha = np.where(rank < n_focus[:, None], cfg.focus_alpha, cfg.background_alpha * n_cat * share)
    theta = rng.gamma(alpha) + 1e-12  # (U, C) Dirichlet via normalised gammas; floor avoids log(0)
    theta /= theta.sum(axis=1, keepdims=True)
    sub_cat = world["sub_cat"]
    phi = rng.gamma(cfg.subcategory_alpha, size=(n_users, sub_cat.size)) + 1e-12  # (U, S)
    starts = np.searchsorted(sub_cat, np.arange(n_cat))
    phi /= np.add.reduceat(phi, starts, axis=1)[:, sub_cat]
    return {"pref": theta[:, sub_cat] * phi, "activity": rng.lognormal(0.0, cfg.activity_sigma, size=n_users)}


def _seed_histories(rng: np.random.Generator, cfg: SynthConfig, world: dict, news: dict,
                    users: dict, n_seed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Initial clicks on history-period news: (user, news) pairs sorted by user then publish time, unique.
    ``n_seed`` (U,): clicks drawn per user (before duplicates are dropped); default uniform in
    [min_seed_history, max_seed_history] with ``cold_user_fraction`` of the users empty."""
    n_users, n_sub = len(users["pref"]), world["sub_cat"].size
    old = np.flatnonzero(news["pub"] < 0)  # history-period news
    old = old[np.lexsort((news["pub"][old], news["sub"][old]))]  # grouped by subcategory
    old_sub = news["sub"][old]
    pop = np.exp(news["log_pop"][old])
    sub_mass = np.bincount(old_sub, weights=pop, minlength=n_sub)  # (S,) popularity mass available per subcategory
    if n_seed is None:
        n_seed = rng.integers(cfg.min_seed_history, cfg.max_seed_history + 1, size=n_users)
        n_seed[rng.random(n_users) < cfg.cold_user_fraction] = 0
    user = np.repeat(np.arange(n_users), n_seed)  # (K,) one entry per seed click
    # Subcategory ~ pref[u, s] * mass[s]: draw from row u of the flattened (U, S) weight matrix.
    weights = users["pref"] * sub_mass
    weights /= weights.sum(axis=1, keepdims=True)
    sub = _draw(rng, weights.ravel(), user * n_sub, (user + 1) * n_sub) - user * n_sub
    # News within the subcategory ~ popularity.
    bounds = np.searchsorted(old_sub, np.arange(n_sub + 1))
    item = old[_draw(rng, pop, bounds[sub], bounds[sub + 1])]
    pub_rank = np.argsort(np.argsort(news["pub"]))  # (N,) rank of each news by publish time
    order = np.argsort(user.astype(np.int64) * cfg.news + pub_rank[item])
    user, item = user[order], item[order]
    keep = np.ones(user.size, dtype=bool)
    keep[1:] = (user[1:] != user[:-1]) | (item[1:] != item[:-1])
    return user[keep], item[keep]


def _draw(rng: np.random.Generator, weights: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """One index per draw ``j`` in ``[lo[j], hi[j])`` with probability proportional to ``weights`` (inverse CDF)."""
    cum = np.concatenate([[0.0], np.cumsum(weights)])
    r = cum[lo] + rng.random(lo.size) * (cum[hi] - cum[lo])
    return np.clip(np.searchsorted(cum, r, side="right") - 1, lo, hi - 1)


# ----------------------------------------------------------------------------------------- impressions


def _impression_slots(rng: np.random.Generator, cfg: SynthConfig, activity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(user, time in seconds since START) of every impression, sorted by time."""
    n_users, n_imp = cfg.users, cfg.impressions
    p = activity / activity.sum()
    if n_imp >= n_users:  # everyone logged at least once, the rest by activity
        per_user = 1 + rng.multinomial(n_imp - n_users, p)
    else:
        per_user = rng.multinomial(n_imp, p)
    user = rng.permutation(np.repeat(np.arange(n_users), per_user))
    hour = rng.choice(24, size=n_imp, p=_HOURLY / _HOURLY.sum())
    time = rng.integers(cfg.days, size=n_imp) * 86400 + hour * 3600 + rng.integers(3600, size=n_imp)
    order = np.argsort(time, kind="stable")
    return user[order], time[order]


def _candidates_and_clicks(rng: np.random.Generator, cfg: SynthConfig, world: dict, news: dict, users: dict,
                           imp_user: np.ndarray, imp_time: np.ndarray, counts: np.ndarray | None = None,
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate rows (impression index, news index, 0/1 label), grouped by impression, shuffled within it.
    ``counts`` (I,): candidates wanted per impression; default uniform in [min_candidates, max_candidates]."""
    by_time = np.argsort(news["pub"], kind="stable")
    pub = news["pub"][by_time]
    pop = np.exp(news["log_pop"][by_time])
    hi = np.searchsorted(pub, imp_time, side="right")  # pool = sorted news [lo, hi) published before the impression
    lo = np.searchsorted(pub, imp_time - cfg.candidate_window_days * 86400.0, side="left")
    lo = np.maximum(0, np.minimum(lo, hi - cfg.min_candidates))  # widen to >= min_candidates (hi >= n_old is enough)
    if counts is None:
        counts = rng.integers(cfg.min_candidates, cfg.max_candidates + 1, size=imp_time.size)
    k = np.minimum(counts, hi - lo)
    imp, pos = _sample_without_replacement(rng, pop, lo, hi, k)
    order = np.argsort(imp * (1 << 20) + rng.integers(1 << 20, size=imp.size))  # random order within each impression
    imp, item = imp[order], by_time[pos[order]]

    n_sub = world["sub_cat"].size
    affinity = np.log(n_sub * users["pref"][imp_user[imp], news["sub"][item]])
    logit = (cfg.interest_weight * affinity + cfg.popularity_weight * news["log_pop"][item] + cfg.click_bias
             + cfg.click_noise * rng.normal(size=imp.size))
    label = rng.random(imp.size) < 1.0 / (1.0 + np.exp(-logit))
    starts = np.searchsorted(imp, np.arange(imp_time.size))
    no_click = ~np.logical_or.reduceat(label, starts)  # (I,)
    best = logit == np.maximum.reduceat(logit, starts)[imp]
    label |= best & no_click[imp]
    return imp, item, label


def _sample_without_replacement(rng: np.random.Generator, weights: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                                k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each impression ``i`` draw ``k[i]`` distinct indices of ``[lo[i], hi[i])``, probability ~ ``weights``.

    Successive (popularity-proportional) sampling without replacement. Pools at most 8x the sample
    size use exact Efraimidis-Spirakis keys over the whole pool; larger pools draw with replacement
    and keep first occurrences (the same distribution), redrawing the rare impressions left short.
    Returns (impression index, pool index) pairs grouped by impression.
    """
    size = hi - lo
    out_imp, out_pos = [], []
    small = np.flatnonzero(size <= 8 * k)
    for start in range(0, small.size, 5000):  # chunks bound the (B, P) key matrices to ~13 MB
        chunk = small[start:start + 5000]
        cols = np.arange(size[chunk].max())
        pos = np.minimum(lo[chunk, None] + cols, weights.size - 1)  # (B, P) pool indices, padded
        keys = np.where(cols < size[chunk, None], np.log1p(-rng.random(pos.shape)) / weights[pos], -np.inf)
        top = np.argsort(-keys, axis=1)[:, :k[chunk].max()]
        take = np.arange(top.shape[1]) < k[chunk, None]
        out_imp.append(np.broadcast_to(chunk[:, None], top.shape)[take])
        out_pos.append(np.take_along_axis(pos, top, axis=1)[take])
    todo, mult = np.flatnonzero(size > 8 * k), 2
    while todo.size:
        n_draw = mult * k[todo]
        imp = np.repeat(todo, n_draw)
        pos = _draw(rng, weights, lo[imp], hi[imp])
        _, first = np.unique(imp * weights.size + pos, return_index=True)
        first.sort()  # first occurrences in draw order, still grouped by impression
        imp, pos = imp[first], pos[first]
        found = np.bincount(imp, minlength=k.size)  # (I,) distinct draws per impression
        keep = np.arange(imp.size) - (np.cumsum(found) - found)[imp] < k[imp]  # first k[i] of each group
        done = np.minimum(found, k)[todo] == k[todo]
        ok = np.isin(imp, todo[done]) & keep
        out_imp.append(imp[ok])
        out_pos.append(pos[ok])
        todo, mult = todo[~done], 2 * mult
    imp, pos = np.concatenate(out_imp), np.concatenate(out_pos)
    order = np.argsort(imp, kind="stable")
    return imp[order], pos[order]


# -------------------------------------------------------------------------------------------- writing


def _behavior_lines(cfg: SynthConfig, ids: np.ndarray, seed_user: np.ndarray, seed_news: np.ndarray,
                    imp_user: np.ndarray, imp_time: np.ndarray, cand_imp: np.ndarray, cand_news: np.ndarray,
                    labels: np.ndarray, n_train: int) -> tuple[list[str], dict[str, np.ndarray]]:
    """behaviors.tsv lines in time order (impression ids restart at 1 in dev) and, per split, a (N,)
    mask of the news its lines reference (candidates and histories)."""
    n_imp = imp_user.size
    split_of = np.where(np.arange(n_imp) < n_train, 0, 1)  # (I,) 0 train, 1 dev
    # The last impression of each user within a split shows the user's largest history in that split.
    last = np.zeros(n_imp, dtype=bool)
    last[n_imp - 1 - np.unique((imp_user * 2 + split_of)[::-1], return_index=True)[1]] = True
    times = format_times(imp_time, START)
    tokens = np.where(labels, (ids + "-1")[cand_news], (ids + "-0")[cand_news]).tolist()  # "N12-1" per candidate row
    bounds = np.searchsorted(cand_imp, np.arange(n_imp + 1)).tolist()
    clicked = ids[cand_news[labels]].tolist()
    click_bounds = np.concatenate([[0], np.cumsum(np.bincount(cand_imp[labels], minlength=n_imp))]).tolist()
    seed_ids = ids[seed_news].tolist()
    seed_bounds = np.searchsorted(seed_user, np.arange(cfg.users + 1)).tolist()

    history: dict[int, dict[str, None]] = {}  # user -> ordered set of clicked news ids
    refs: list[set[str]] = [set(), set()]
    lines = []
    for i, (u, t) in enumerate(zip(imp_user.tolist(), times)):
        h = history.get(u)
        if h is None:
            h = history[u] = dict.fromkeys(seed_ids[seed_bounds[u]:seed_bounds[u + 1]])
        number = i + 1 if i < n_train else i + 1 - n_train
        lines.append(f"{number}\tU{u + 1}\t{t}\t{' '.join(h)}\t{' '.join(tokens[bounds[i]:bounds[i + 1]])}")
        if last[i]:
            refs[split_of[i]].update(h)
        h.update(dict.fromkeys(clicked[click_bounds[i]:click_bounds[i + 1]]))

    referenced = {}
    for s, split in enumerate(("train", "dev")):
        mask = np.zeros(ids.size, dtype=bool)
        mask[cand_news[split_of[cand_imp] == s]] = True
        mask[[int(nid[1:]) - 1 for nid in refs[s]]] = True  # "N{i+1}" -> i
        referenced[split] = mask
    return lines, referenced
