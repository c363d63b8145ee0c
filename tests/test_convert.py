"""newsrank.convert: event logs -> MIND-format train/ and dev/ folders."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from newsrank.data.mind import read_split
from newsrank.seq import read_events
from newsrank.convert import ConvertConfig, convert_to_mind, read_item_text

# A small hand-written log: user, item, time (epoch seconds), rating. u1 has 9 events (item 9
# rated low), u2 3 and u3 1 (with min_history=1, u3's only click is history and it gets no
# impression).
LOG = """user,item,timestamp,rating
u1,1,1000,5
u1,2,2000,4
u1,3,3000,5
u2,5,3500,5
u1,4,4000,4
u1,9,4500,1
u1,5,5000,5
u2,6,5500,4
u1,6,6000,5
u3,7,6100,5
u1,7,7000,4
u2,1,7500,5
u1,8,8000,5
"""
# Items 10..20 are never interacted with by anyone but appear in the log through a fourth user,
# so they are sampling candidates for everybody else.
EXTRA = "".join(f"u4,{i},{100 + i},3\n" for i in range(10, 21))


def _events(text: str = LOG + EXTRA) -> pd.DataFrame:
    from io import StringIO

    return pd.read_csv(StringIO(text), dtype={"user": str, "item": str})


def _read(out: Path):
    return {split: read_split(out / split) for split in ("train", "dev")}


def _mind_time(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).replace(tzinfo=None)


SMALL = ConvertConfig(negatives=3, min_history=1, history_len=2, dev_fraction=0.3, seed=1)


def test_small_log_round_trip(tmp_path):
    events = _events()
    out = tmp_path / "mind"
    summary = convert_to_mind(events, out, config=SMALL)
    data = _read(out)
    imps = {split: imps for split, (_, imps) in data.items()}
    every = imps["train"] + imps["dev"]

    # One impression per click after each user's first; u4's 11 clicks count too.
    clicks = events.groupby("user").size()
    assert len(every) == int((clicks - SMALL.min_history).clip(lower=0).sum())
    assert summary["train"]["impressions"] == len(imps["train"]) and summary["dev"]["impressions"] == len(imps["dev"])
    assert summary["history_only_clicks"] == 4 and summary["users_without_impressions"] == 1  # u3
    assert summary["ids"] == {"users": "original", "news": "original"}

    interacted = events.groupby("user")["item"].agg(set)
    for imp in every:
        user = imp.user_id[1:]
        assert imp.user_id.startswith("U") and all(c.startswith("N") for c in imp.candidates)
        assert len(imp.candidates) == SMALL.negatives + 1 and sum(imp.labels) == 1
        assert len(set(imp.candidates)) == len(imp.candidates)
        negatives = {c[1:] for c, y in zip(imp.candidates, imp.labels) if y == 0}
        assert not negatives & interacted[user]
    # Time split: train strictly before dev.
    assert max(i.time for i in imps["train"]) < min(i.time for i in imps["dev"])
    # u1's impressions: click k has history = the 2 clicks before it, oldest first, at its time.
    u1 = [i for i in every if i.user_id == "Uu1"]
    u1_clicks = ["1", "2", "3", "4", "9", "5", "6", "7", "8"]
    u1_times = [1000, 2000, 3000, 4000, 4500, 5000, 6000, 7000, 8000]
    assert len(u1) == 8
    for k, imp in enumerate(sorted(u1, key=lambda i: i.time), start=1):
        clicked = imp.candidates[imp.labels.index(1)]
        assert clicked == "N" + u1_clicks[k]
        assert imp.history == ["N" + x for x in u1_clicks[max(0, k - 2):k]]
        assert imp.time == _mind_time(u1_times[k])
    # Without item text: title = the original id, category/subcategory unknown, entities empty.
    news = data["train"][0]
    record = next(iter(news.values()))
    assert record.title == record.news_id[1:] and record.category == record.subcategory == "unknown"
    assert record.title_entities == [] and record.abstract == ""
    # The id maps.
    assert (out / "news_ids.tsv").read_text().splitlines()[0] == "N1\t1"
    assert "Uu1\tu1" in (out / "user_ids.tsv").read_text().splitlines()


def test_reads_events_from_read_events(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text(LOG + EXTRA, encoding="utf-8")
    events = read_events(path, "csv")  # user, item, timestamp only
    summary = convert_to_mind(events, tmp_path / "mind", config=SMALL)
    assert summary["clicks"] == len(events)
    _read(tmp_path / "mind")


def test_min_rating(tmp_path):
    events = _events()
    summary = convert_to_mind(events, tmp_path / "mind", config=ConvertConfig(**{**SMALL.__dict__, "min_rating": 4}))
    assert summary["non_click_events"] == int((events["rating"] < 4).sum())
    assert summary["clicks"] == int((events["rating"] >= 4).sum())
    data = _read(tmp_path / "mind")
    every = data["train"][1] + data["dev"][1]
    assert not any(i.user_id == "Uu4" for i in every)  # u4 rated everything 3
    for imp in every:
        assert "N9" not in imp.history  # u1's item 9 was rated 1: not a click...
        if imp.user_id == "Uu1":
            assert "N9" not in imp.candidates  # ...and, being rated, never a negative either
    assert len(every) == 7 + 2  # u1: 8 clicks -> 7 impressions, u2: 3 -> 2, u3: 1 -> 0
    with pytest.raises(ValueError, match="rating"):
        convert_to_mind(events.drop(columns="rating"), tmp_path / "x", config=ConvertConfig(min_rating=4))


def test_item_text_from_movies_csv(tmp_path):
    movies = tmp_path / "movies.csv"
    movies.write_text(
        "movieId,title,genres\n"
        '1,"Toy Story, the (1995)",Adventure|Animation|Children\n'
        '2,"Tab\there",Drama\n'
        "3,Nothing,(no genres listed)\n",
        encoding="utf-8",
    )
    text = read_item_text(movies)
    assert text.to_dict("records")[0] == {
        "item": "1", "title": "Toy Story, the (1995)", "category": "adventure",
        "subcategory": "animation", "abstract": "Adventure Animation Children",
    }
    assert text["title"][1] == "Tab here" and text["subcategory"][1] == "drama"
    assert text["category"][2] == "unknown" and text["abstract"][2] == ""
    out = tmp_path / "mind"
    summary = convert_to_mind(_events(), out, items=movies, config=SMALL)
    assert summary["items_with_text"] == 3
    news = {**_read(out)["train"][0], **_read(out)["dev"][0]}
    assert news["N1"].title == "Toy Story, the (1995)" and news["N1"].category == "adventure"
    assert news["N1"].subcategory == "animation" and news["N1"].abstract == "Adventure Animation Children"
    assert news["N2"].title == "Tab here"
    assert news["N5"].title == "5" and news["N5"].category == "unknown"  # not in movies.csv
    raw = (out / "train" / "news.tsv").read_text(encoding="utf-8").splitlines()
    assert all(len(line.split("\t")) == 8 and line.endswith("\t[]\t[]") for line in raw)


def test_item_text_generic_tsv(tmp_path):
    path = tmp_path / "items.tsv"
    path.write_text("id\ttitle\tcategory\tabstract\textra\nA\tAlpha\tsports\tabout a\tx\nB\t\t\t\ty\n",
                    encoding="utf-8")
    text = read_item_text(path).set_index("item")
    assert text.loc["A"].tolist() == ["Alpha", "sports", "sports", "about a"]
    assert text.loc["B"].tolist() == ["B", "unknown", "unknown", ""]


@pytest.mark.parametrize(
    "content, match",
    [
        ("name,title\n1,x\n", "line 1: no item id column"),
        ("item,title\n1,x\n1,y\n", "line 3, field 'item'.*twice"),
        ("item,title\n1,x\n2\n", "line 3, field 'title'"),
        ("item,title\n,x\n", "line 2, field 'item': empty"),
        ("", "empty file"),
    ],
)
def test_item_text_errors(tmp_path, content, match):
    path = tmp_path / "items.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=match):
        read_item_text(path)


def test_deterministic(tmp_path):
    convert_to_mind(_events(), tmp_path / "a", config=SMALL)
    convert_to_mind(_events(), tmp_path / "b", config=SMALL)
    convert_to_mind(_events(), tmp_path / "c", config=ConvertConfig(**{**SMALL.__dict__, "seed": 2}))
    for split in ("train", "dev"):
        for name in ("behaviors.tsv", "news.tsv"):
            assert (tmp_path / "a" / split / name).read_bytes() == (tmp_path / "b" / split / name).read_bytes()
    assert (tmp_path / "a/train/behaviors.tsv").read_bytes() != (tmp_path / "c/train/behaviors.tsv").read_bytes()


def test_refuses_to_overwrite_and_writes_atomically(tmp_path, monkeypatch):
    out = tmp_path / "mind"
    out.mkdir()  # an existing empty folder is fine
    convert_to_mind(_events(), out, config=SMALL)
    before = (out / "train" / "behaviors.tsv").read_bytes()
    with pytest.raises(FileExistsError, match="not empty"):
        convert_to_mind(_events(), out, config=SMALL)
    assert (out / "train" / "behaviors.tsv").read_bytes() == before
    convert_to_mind(_events(), out, config=ConvertConfig(**{**SMALL.__dict__, "seed": 5}), overwrite=True)
    replaced = (out / "train" / "behaviors.tsv").read_bytes()
    assert replaced != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mind"]  # no temporary folders left

    # A failure midway leaves neither the target nor a temporary folder behind.
    import newsrank.convert as convert

    calls = []

    def failing(path, lines):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        return real(path, lines)

    real = convert.write_lines
    monkeypatch.setattr(convert, "write_lines", failing)
    with pytest.raises(OSError, match="disk full"):
        convert_to_mind(_events(), tmp_path / "fresh", config=SMALL)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mind"]
    with pytest.raises(OSError, match="disk full"):  # and an overwrite that fails keeps the old folder
        calls.clear()
        convert_to_mind(_events(), out, config=SMALL, overwrite=True)
    assert (out / "train" / "behaviors.tsv").read_bytes() == replaced and (out / "dev" / "news.tsv").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mind"]


def test_unsafe_ids_are_numbered(tmp_path):
    events = _events().assign(item=lambda f: "artist\t" + f["item"], user=lambda f: f["user"] + " x")
    summary = convert_to_mind(events, tmp_path / "mind", config=SMALL)
    assert summary["ids"] == {"users": "index", "news": "index"}
    data = _read(tmp_path / "mind")
    news = data["train"][0]
    assert all(n.news_id[1:].isdigit() and n.title.startswith("artist ") for n in news.values())
    mapping = dict(line.split("\t", 1) for line in (tmp_path / "mind" / "news_ids.tsv").read_text().splitlines())
    assert mapping["N1"] == "artist\\t1"  # escaped, so the original id is recoverable


def test_repeats_dropped_or_kept(tmp_path):
    log = LOG + EXTRA + "u1,2,9000,5\n"  # u1 clicks item 2 again
    dropped = convert_to_mind(_events(log), tmp_path / "a", config=SMALL)
    assert dropped["repeat_clicks_dropped"] == 1
    keep = ConvertConfig(**{**SMALL.__dict__, "keep_repeats": True})
    kept = convert_to_mind(_events(log), tmp_path / "b", config=keep)
    assert kept["repeat_clicks_dropped"] == 0
    total = lambda s: s["train"]["impressions"] + s["dev"]["impressions"]  # noqa: E731
    assert total(kept) == total(dropped) + 1


def test_click_position_is_shuffled(tmp_path):
    rng = np.random.default_rng(0)
    rows = [(f"u{u}", str(i), t) for u in range(30) for t, i in enumerate(rng.permutation(200)[:20])]
    events = pd.DataFrame(rows, columns=["user", "item", "timestamp"])
    convert_to_mind(events, tmp_path / "mind", config=ConvertConfig(negatives=4, min_history=0))
    data = _read(tmp_path / "mind")
    positions = np.bincount([i.labels.index(1) for _, imps in data.values() for i in imps], minlength=5)
    assert positions.sum() == 600 and positions.min() > 80  # about 120 each


def test_few_unseen_items_gives_fewer_negatives(tmp_path):
    # u1 interacted with 5 of the 7 items: only 2 can be negatives.
    rows = [("u1", str(i), i) for i in range(5)] + [("u2", str(i), 10 + i) for i in range(7)]
    summary = convert_to_mind(pd.DataFrame(rows, columns=["user", "item", "timestamp"]), tmp_path / "m",
                              config=ConvertConfig(negatives=4, min_history=1, dev_fraction=0.5))
    data = _read(tmp_path / "m")
    u1 = [i for _, imps in data.values() for i in imps if i.user_id == "Uu1"]
    assert all(len(i.candidates) == 3 for i in u1)
    assert summary["impressions_short_of_negatives"] == len(u1) + sum(1 for _, imps in data.values() for i in imps
                                                                        if i.user_id == "Uu2")


@pytest.mark.parametrize(
    "events, match",
    [
        (pd.DataFrame({"user": ["a"], "item": ["1"]}), "timestamp"),
        (pd.DataFrame({"user": ["a"], "item": ["1"], "timestamp": [np.nan]}), "row 0.*timestamp"),
        (pd.DataFrame({"user": ["a", ""], "item": ["1", "2"], "timestamp": [1, 2]}), "row 1.*user"),
        (pd.DataFrame({"user": [], "item": [], "timestamp": []}), "empty"),
        (pd.DataFrame({"user": ["a", "a"], "item": ["1", "2"], "timestamp": [1, 2]}), "no impressions"),
    ],
)
def test_bad_events(tmp_path, events, match):
    with pytest.raises(ValueError, match=match):
        convert_to_mind(events, tmp_path / "m", config=ConvertConfig(min_history=3))
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    "changes",
    [{"negatives": 0}, {"min_history": -1}, {"history_len": -1}, {"dev_fraction": 0.0}, {"dev_fraction": 1.0},
     {"min_rating": float("nan")}, {"popularity_power": -1.0}],
)
def test_bad_config(changes):
    with pytest.raises(ValueError):
        ConvertConfig(**changes)


def test_synthetic_log_with_genres(tmp_path):
    from newsrank.seq.synth import SeqSynthConfig, write_synthetic_events

    cfg = SeqSynthConfig(users=40, items=60, genres=4, min_events=10, max_events=20, seed=5)
    write_synthetic_events(tmp_path / "e.csv", cfg, items_path=tmp_path / "items.csv")
    summary = convert_to_mind(read_events(tmp_path / "e.csv", "csv"), tmp_path / "mind", tmp_path / "items.csv")
    assert summary["items_with_text"] == summary["items"]
    news, imps = read_split(tmp_path / "mind" / "train")
    assert {n.category for n in news.values()} <= {f"genre{g}" for g in range(4)}
    assert all(n.title == "item" + n.news_id[1:] for n in news.values())


@pytest.mark.slow
def test_movielens_small(tmp_path, shared_data):
    folder = shared_data / "mlsmall"
    ratings = read_events(folder / "ratings.csv", "movielens")  # keeps the rating column
    summary = convert_to_mind(ratings, tmp_path / "ml", folder / "movies.csv", ConvertConfig(min_rating=4))
    # The same construction as ../shared/data/mlsmall_mind (37,315 train / 9,440 dev impressions).
    assert summary["train"]["impressions"] == 37_315 and summary["dev"]["impressions"] == 9_440
    assert summary["clicks"] == int((ratings["rating"] >= 4).sum())
    assert summary["impressions_short_of_negatives"] == 0 and summary["items_with_text"] == summary["items"]
    assert summary["train"]["candidates"] == 20 * 37_315
    news, imps = read_split(tmp_path / "ml" / "dev")
    assert len(imps) == 9_440 and all(sum(i.labels) == 1 and len(i.candidates) == 20 for i in imps)
    assert all(1 <= len(i.history) <= 100 for i in imps)
    assert news["N1"].title == "Toy Story (1995)" and news["N1"].category == "adventure"


@pytest.mark.parametrize("seen_weight", [15.0, 1e7])  # rejection sampling / the exact fallback
def test_negatives_follow_successive_sampling(seen_weight):
    """Both samplers draw 2 of the unseen items 0..4 (weights 1..5) like successive sampling
    without replacement: P(i in sample) = w_i/W + sum_j w_j/W * w_i/(W - w_j)."""
    from newsrank.convert import _sample_negatives

    weights = np.array([1.0, 2.0, 3.0, 4.0, 5.0, seen_weight])
    n = 20_000
    imp, item = _sample_negatives(np.random.default_rng(0), weights, np.array([5]), 1, np.zeros(n, dtype=np.int64),
                                  np.full(n, 2))
    assert imp.tolist() == np.repeat(np.arange(n), 2).tolist()
    pairs = item.reshape(n, 2)
    assert (pairs[:, 0] != pairs[:, 1]).all() and (item < 5).all()
    w, total = weights[:5], weights[:5].sum()
    expected = w / total + np.array([sum(w[j] / total * w[i] / (total - w[j]) for j in range(5) if j != i)
                                     for i in range(5)])
    np.testing.assert_allclose(np.bincount(item, minlength=5) / n, expected, atol=0.015)
