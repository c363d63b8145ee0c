"""newsrank.seq.synth: a synthetic event log in which the interval until the next event decides
the next genre."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from newsrank.seq import read_events
from newsrank.convert import read_item_text
from newsrank.seq.synth import (
    KINDS,
    SeqSynthConfig,
    generate_events,
    genre_diagnostics,
    item_genres,
    write_synthetic_events,
)

SMALL = SeqSynthConfig(users=60, items=80, genres=5, min_events=10, max_events=30, seed=3)


@pytest.fixture(scope="module")
def default_summary(tmp_path_factory):
    """The default-size log, written once (well under a second)."""
    path = tmp_path_factory.mktemp("seqsynth") / "events.csv"
    return write_synthetic_events(path, SeqSynthConfig())


def test_deterministic_and_seeded():
    a, b = generate_events(SMALL), generate_events(SMALL)
    pd.testing.assert_frame_equal(a, b)
    c = generate_events(SeqSynthConfig(**{**SMALL.__dict__, "seed": 4}))
    assert not a[["item", "timestamp"]].equals(c[["item", "timestamp"]])


def test_written_csv_reads_back(tmp_path):
    path = tmp_path / "sub" / "events.csv"
    summary = write_synthetic_events(path, SMALL)
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first == "user,item,timestamp"
    events = read_events(path, "csv")
    frame = generate_events(SMALL)
    assert events["user"].tolist() == frame["user"].tolist()
    assert events["item"].tolist() == frame["item"].tolist()
    assert events["timestamp"].tolist() == frame["timestamp"].tolist()
    assert summary["events"] == len(events)
    # Same bytes when written again.
    again = tmp_path / "again.csv"
    write_synthetic_events(again, SMALL)
    assert again.read_bytes() == path.read_bytes()


def test_shapes_and_counts_match_config():
    frame = generate_events(SMALL)
    per_user = frame.groupby("user", sort=False).size()
    assert len(per_user) == SMALL.users
    assert per_user.between(SMALL.min_events, SMALL.max_events).all()
    assert frame["user"].astype(int).is_monotonic_increasing  # sorted by user, then time
    items = frame["item"].astype(int)
    assert items.between(1, SMALL.items).all()
    assert frame["genre"].between(0, SMALL.genres - 1).all()
    # An item has one genre, the one item_genres reports.
    genres = item_genres(SMALL).set_index("item")["genre"]
    assert (frame["item"].map(genres) == frame["genre"]).all()
    assert np.bincount(genres.to_numpy(), minlength=SMALL.genres).min() >= SMALL.items // SMALL.genres
    assert set(frame["kind"].cat.categories) == set(KINDS)
    first = ~frame["user"].duplicated()
    assert (frame.loc[first, "kind"] == "start").all() and (frame.loc[~first, "kind"] != "start").all()


def test_gaps_and_genres_follow_the_story():
    cfg = SeqSynthConfig(users=300, seed=1)
    frame = generate_events(cfg)
    same_user = (frame["user"] == frame["user"].shift()).to_numpy()
    gap = frame["timestamp"].diff().to_numpy()[same_user]
    kind = frame["kind"].to_numpy()[same_user]
    genre, prev_genre = frame["genre"].to_numpy()[same_user], frame["genre"].shift().to_numpy()[same_user]
    item, prev_item = frame["item"].to_numpy()[same_user], frame["item"].shift().to_numpy()[same_user]
    fav = frame["favourite"].to_numpy()[same_user]
    assert (item != prev_item).all()  # never the same item twice in a row
    for name, (low, high) in (("continue", cfg.short_gap), ("switch", cfg.medium_gap), ("return", cfg.long_gap)):
        sel = kind == name
        assert sel.sum() > 100
        assert gap[sel].min() >= low and gap[sel].max() <= high
    short, medium, long_ = kind == "continue", kind == "switch", kind == "return"
    assert (genre[short] == prev_genre[short]).all()
    assert (genre[medium] != prev_genre[medium]).all() and (genre[medium] != fav[medium]).all()
    assert 0.85 < np.mean(genre[long_] == fav[long_]) < 0.95
    # Sessions are often of a non-favourite genre, so "current genre" and "favourite" disagree often.
    assert np.mean(prev_genre != fav) > 0.4


def test_interval_carries_the_signal(default_summary):
    s = default_summary
    assert s["events"] == s["transitions"] + s["users"]
    assert 0.3 < s["favourite_session_fraction"] < 0.6
    # Knowing the gap beats every time-blind rule, including the best possible one, by a wide margin.
    assert s["oracle_genre_accuracy"] > s["time_blind_oracle_genre_accuracy"] + 0.15
    assert s["time_rule_genre_accuracy"] > s["last_genre_accuracy"] + 0.07
    assert s["time_rule_genre_accuracy"] > s["favourite_genre_accuracy"] + 0.2
    assert s["time_blind_oracle_genre_accuracy"] >= max(s["last_genre_accuracy"], s["favourite_genre_accuracy"]) - 1e-9
    assert s["oracle_recall_at_10"] > s["time_blind_oracle_recall_at_10"] + 0.08


def test_rule_computed_from_the_log_alone(tmp_path):
    """The rule "short gap -> current genre, long gap -> favourite" computed here from the written
    log (genres from the item file, favourite = the user's most common genre after a gap of a day
    or more) beats the time-blind rules, without the generator's hidden truth."""
    cfg = SeqSynthConfig(users=400, seed=2)
    write_synthetic_events(tmp_path / "e.csv", cfg, items_path=tmp_path / "items.csv")
    events = read_events(tmp_path / "e.csv", "csv")
    text = read_item_text(tmp_path / "items.csv")
    genre = events["item"].map(text.set_index("item")["category"]).to_numpy()
    user, ts = events["user"].to_numpy(), events["timestamp"].to_numpy()
    nxt = np.flatnonzero(user[1:] == user[:-1]) + 1
    gap = ts[nxt] - ts[nxt - 1]
    after_break = pd.DataFrame({"user": user[nxt][gap >= 86400], "genre": genre[nxt][gap >= 86400]})
    favourite = after_break.groupby("user")["genre"].agg(lambda g: g.value_counts().index[0])
    fav = pd.Series(user[nxt]).map(favourite).to_numpy()
    target, current = genre[nxt], genre[nxt - 1]
    time_rule = np.where(gap <= cfg.short_gap[1], current, fav)
    acc = {name: float(np.mean(pred == target)) for name, pred in
           (("time", time_rule), ("last", current), ("favourite", fav))}
    assert acc["time"] > acc["last"] + 0.07 and acc["time"] > acc["favourite"] + 0.2, acc


def test_diagnostics_match_summary():
    frame = generate_events(SMALL)
    d = genre_diagnostics(frame, SMALL)
    same_user = (frame["user"] == frame["user"].shift()).to_numpy()
    last = np.mean(frame["genre"].to_numpy()[same_user] == frame["genre"].shift().to_numpy()[same_user])
    assert d["last_genre_accuracy"] == pytest.approx(last)
    assert 0.0 <= d["time_blind_oracle_recall_at_10"] <= d["oracle_recall_at_10"] <= 1.0


def test_default_size_is_fast(tmp_path):
    import time

    start = time.perf_counter()
    write_synthetic_events(tmp_path / "e.csv", SeqSynthConfig())
    assert time.perf_counter() - start < 5.0  # ~0.3 s; loose for a busy machine


@pytest.mark.parametrize(
    "changes",
    [
        {"users": 0},
        {"genres": 2},
        {"items": 15, "genres": 10},
        {"min_events": 1},
        {"min_events": 50, "max_events": 40},
        {"continue_prob": 1.2},
        {"continue_prob": 0.7, "switch_prob": 0.4},
        {"favourite_return_prob": -0.1},
        {"side_concentration": 0.0},
        {"popularity_exponent": -1.0},
        {"short_gap": (10, 4000)},  # overlaps medium_gap
        {"medium_gap": (0, 100)},
        {"long_gap": (3600, 7200)},
        {"start_spread_days": -1},
    ],
)
def test_bad_config(changes):
    with pytest.raises(ValueError):
        SeqSynthConfig(**changes)
