"""newsrank.seq.events (readers) and newsrank.seq.sequences (intervals, padding, splits)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from newsrank.seq import (
    SequenceConfig,
    build_sequences,
    build_vocab,
    leave_last_out,
    pad_sequences,
    parse_timestamps,
    read_events,
    read_events_with_report,
    reference_split,
    split_last,
)


def _write(path, text: str | bytes):
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _rows(frame: pd.DataFrame) -> list[tuple[str, str, int]]:
    return list(frame[["user", "item", "timestamp"]].itertuples(index=False, name=None))


# ---------------------------------------------------------------- readers


def test_parse_timestamps_mixed():
    seconds, ok = parse_timestamps(["100", "1970-01-01T00:01:00Z", "1970-01-01 00:00:10.9-01", "x", ""])
    assert ok.tolist() == [True, True, True, False, False]
    assert seconds[:3].tolist() == [100, 60, 3610]


def test_csv_integer_and_iso_times(tmp_path):
    path = _write(
        tmp_path / "log.csv",
        "userId,extra,itemId,time\nu1,x,a,10\nu2,y,b,1970-01-01T00:00:20Z\n\nu1,z,c,1970-01-01T01:00:00+01:00\n",
    )
    frame = read_events(path, format="csv")
    assert _rows(frame) == [("u1", "a", 10), ("u2", "b", 20), ("u1", "c", 0)]
    assert frame["timestamp"].dtype == np.int64
    assert list(frame.columns) == ["user", "item", "timestamp"]


def test_csv_missing_column_and_bad_time(tmp_path):
    with pytest.raises(ValueError, match="no item column"):
        read_events(_write(tmp_path / "a.csv", "user,thing,timestamp\nu,i,1\n"))
    with pytest.raises(ValueError, match=r"b\.csv: line 3, field 'timestamp'"):
        read_events(_write(tmp_path / "b.csv", "user,item,timestamp\nu,i,1\nu,j,yesterday\n"))
    with pytest.raises(ValueError, match=r"line 2, field 'item'"):
        read_events(_write(tmp_path / "c.csv", "user,item,timestamp\nu,,1\n"))


@pytest.mark.parametrize("fmt", ["csv", "movielens", "lastfm", "citeulike"])
def test_empty_file_is_an_error(tmp_path, fmt):
    path = _write(tmp_path / ("ratings.csv" if fmt == "movielens" else "empty.txt"), "")
    with pytest.raises(ValueError, match="empty"):
        read_events(path, format=fmt)


def test_header_only_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        read_events(_write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n"), format="movielens")


def test_movielens_ratings_csv(tmp_path):
    path = _write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n1,1029,3.0,1260759179\n")
    assert _rows(read_events(path, format="movielens")) == [("1", "31", 1260759144), ("1", "1029", 1260759179)]
    # the folder works too, and so does the snake_case header
    _write(tmp_path / "ratings.csv", "user_id,item_id,rating,timestamp\n7,8,4.0,5\n")
    assert _rows(read_events(tmp_path, format="movielens")) == [("7", "8", 5)]


def test_movielens_u_data_and_ratings_dat(tmp_path):
    udata = _write(tmp_path / "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    assert _rows(read_events(udata, format="movielens")) == [("196", "242", 881250949), ("186", "302", 891717742)]
    dat = _write(tmp_path / "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n")
    assert _rows(read_events(dat, format="movielens")) == [("1", "1193", 978300760), ("1", "661", 978302109)]
    # unknown name: detected from the content
    other = _write(tmp_path / "whatever.txt", "1::2::3::4\n")
    assert _rows(read_events(other, format="movielens")) == [("1", "2", 4)]


def test_movielens_bad_rows_raise_with_line_and_field(tmp_path):
    path = _write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n1,32,2.5,12x\n")
    with pytest.raises(ValueError, match=r"ratings\.csv: line 3, field 'timestamp'.*12x"):
        read_events(path, format="movielens")
    path = _write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n1,31,2.5\n")
    with pytest.raises(ValueError, match=r"line 3, field 'timestamp'.*expected 4 fields, got 3"):
        read_events(path, format="movielens")
    path = _write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,31,good,1\n")
    with pytest.raises(ValueError, match=r"line 2, field 'rating'"):
        read_events(path, format="movielens")
    path = _write(tmp_path / "u.data", "196\t242\t3\t881250949\n\n186\t302\n")
    with pytest.raises(ValueError, match=r"u\.data: line 3, field 'rating'"):
        read_events(path, format="movielens")
    path = _write(tmp_path / "ratings.dat", "1::1193::5::978300760\n1::661::3::x\n")
    with pytest.raises(ValueError, match=r"ratings\.dat: line 2, field 'timestamp'"):
        read_events(path, format="movielens")


def test_lastfm_dirty_rows_are_skipped_and_counted(tmp_path):
    good1 = "user_000001\t2009-05-04T23:08:57Z\tf1b1cf71-bd35-4e99-8624-24a6e15f133a\tDeep Dish\t\tFuck Me Im Famous (Pacha Ibiza)-09-28-2007\n"
    good2 = "user_000001\t2009-05-04T13:54:10Z\ta7f7df4a-77d8-4f12-8acd-5c60c93f4de8\t坂本龍一\tf7c1f8f8-b935-45ed-8fc8-7def69d92a10\tThe Last Emperor (Theme)\n"
    short = "user_000001\t2009-05-04T13:52:04Z\tonly three\n"
    bad_bytes = b"user_000002\t2009-05-03T15:48:25Z\t\tArtist\tx\xff\xfe\tTrack\n"
    bad_time = "user_000002\tnot-a-time\t\tArtist\tid1\tTrack\n"
    good3 = "user_000002\t2009-05-03T15:48:25Z\t\tSome Artist\t\tSome Track\n"
    text = (good1 + good2 + short).encode() + bad_bytes + (bad_time + good3).encode()
    frame, report = read_events_with_report(_write(tmp_path / "lastfm.tsv", text), format="lastfm")
    assert _rows(frame) == [
        ("user_000001", "Deep Dish\tFuck Me Im Famous (Pacha Ibiza)-09-28-2007", 1241478537),
        ("user_000001", "f7c1f8f8-b935-45ed-8fc8-7def69d92a10", 1241445250),
        ("user_000002", "Some Artist\tSome Track", 1241365705),
    ]
    assert report.rows == 3 and report.skipped == 3
    lines = [line for line, _ in report.skipped_examples]
    assert lines == [3, 4, 5]
    assert "6 fields" in report.skipped_examples[0][1]
    assert "UTF-8" in report.skipped_examples[1][1]
    assert "time" in report.skipped_examples[2][1]
    assert frame.attrs["read_report"] is report


def test_citeulike_tags_collapse(tmp_path):
    text = (
        "42|u1|2007-05-30 17:36:31.4396-04|rna\n"
        "42|u1|2007-05-30 17:36:31.4396-04|genomics\n"
        "43|u1|2007-05-30T21:40:00Z|tag|with|pipes\n"
        "42|u2|2007-05-30 17:36:31.4396-04|rna\n"
    )
    frame, report = read_events_with_report(_write(tmp_path / "cul.txt", text), format="citeulike")
    t = 1180560991  # 2007-05-30 21:36:31 UTC, fraction floored
    assert _rows(frame) == [("u1", "42", t), ("u1", "43", t + 209), ("u2", "42", t)]
    assert report.duplicates == 1
    with pytest.raises(ValueError, match=r"line 2, field 'time'"):
        read_events(_write(tmp_path / "bad.txt", "42|u1|2007-05-30|a\n42|u1\n"), format="citeulike")


def test_unknown_format(tmp_path):
    with pytest.raises(ValueError, match="unknown format"):
        read_events(_write(tmp_path / "x.csv", "user,item,time\n"), format="parquet")


def test_real_movielens_small(shared_data):
    path = shared_data / "mlsmall" / "ratings.csv"
    if not path.is_file():
        pytest.skip(f"{path} is not present")
    frame = read_events(path, format="movielens")
    assert len(frame) == 100_836
    assert frame["user"].nunique() == 610
    assert frame["timestamp"].dtype == np.int64
    sequences, vocab = build_sequences(frame, SequenceConfig(max_length=10**6, min_length=1))
    assert len(sequences) == 610 and sum(len(s) for s in sequences) == 100_836
    assert len(vocab) == frame["item"].nunique() + 1


# ---------------------------------------------------------------- sequences

# user a: items x y z x w at times 100, 160, 160, 400, 1000 (file order shuffled);
# item w appears once and is dropped by max_items=3 (popularity: x 3, y 2, z 2, w 1).
EVENTS = pd.DataFrame(
    [
        ("a", "y", 160),
        ("b", "y", 50),
        ("a", "x", 100),
        ("a", "z", 160),
        ("a", "w", 400),
        ("b", "z", 70),
        ("a", "x", 1000),
        ("b", "x", 10),
        ("c", "x", 5),  # too short: dropped by min_length=2
    ],
    columns=["user", "item", "timestamp"],
)


def test_vocab_by_popularity_ties_by_id():
    vocab = build_vocab(EVENTS)
    assert vocab.items == ["<pad>", "x", "y", "z", "w"]
    assert vocab.counts.tolist() == [0, 4, 2, 2, 1]
    assert build_vocab(EVENTS, max_items=2).items == ["<pad>", "x", "y"]
    assert vocab.encode(["z", "nope"]).tolist() == [3, 0]


def test_intervals_with_dropped_item_and_zero_gap():
    sequences, vocab = build_sequences(EVENTS, SequenceConfig(max_items=3, min_length=2, interval_scale="none"))
    assert [s.user for s in sequences] == ["a", "b"]
    a, b = sequences
    x, y, z = (vocab.index[i] for i in "xyz")
    # w (t=400) is dropped: the gap 160 -> 1000 goes to the last x
    assert a.items.tolist() == [x, y, z, x]
    assert a.timestamps.tolist() == [100, 160, 160, 1000]
    assert a.delta_prev.tolist() == [0, 60, 0, 840]
    assert a.delta_next.tolist() == [60, 0, 840, 0]
    assert a.since_first.tolist() == [0, 60, 60, 900]
    assert b.items.tolist() == [x, y, z]
    assert b.delta_prev.tolist() == [0, 40, 20]
    assert b.delta_next.tolist() == [40, 20, 0]
    assert b.since_first.tolist() == [0, 40, 60]


def test_equal_times_keep_file_order_and_scales():
    (a, _), _ = build_sequences(EVENTS, SequenceConfig(min_length=2, interval_scale="hours"))
    # y and z share t=160: y comes first in the file
    assert a.items.tolist()[:3] == [1, 2, 3]
    assert np.allclose(a.delta_prev, np.array([0, 60, 0, 240, 600]) / 3600)
    (a, _), _ = build_sequences(EVENTS, SequenceConfig(min_length=2, interval_scale="days"))
    assert np.allclose(a.since_first, np.array([0, 60, 60, 300, 900]) / 86400)
    (a, _), _ = build_sequences(EVENTS, SequenceConfig(min_length=2))
    assert np.allclose(a.delta_next, np.log1p([60, 0, 240, 600, 0]))


def test_max_length_keeps_most_recent():
    sequences, _ = build_sequences(EVENTS, SequenceConfig(max_length=3, min_length=3, interval_scale="none"))
    a, b = sequences
    assert a.timestamps.tolist() == [160, 400, 1000]
    assert a.delta_prev.tolist() == [0, 240, 600]  # first kept event: 0
    assert a.since_first.tolist() == [0, 240, 840]
    assert b.timestamps.tolist() == [10, 50, 70]
    sequences, _ = build_sequences(EVENTS, SequenceConfig(min_length=4))
    assert [s.user for s in sequences] == ["a"]


def test_pad_sequences():
    sequences, _ = build_sequences(EVENTS, SequenceConfig(min_length=2, interval_scale="none"))
    batch = pad_sequences(sequences)
    assert batch["items"].shape == (2, 5) and batch["items"].dtype == np.int64
    assert batch["lengths"].tolist() == [5, 3]
    assert batch["mask"].tolist() == [[True] * 5, [True] * 3 + [False] * 2]
    assert batch["items"][1].tolist() == sequences[1].items.tolist() + [0, 0]
    assert batch["delta_prev"].dtype == np.float32
    assert batch["delta_prev"][0].tolist() == [0, 60, 0, 240, 600]
    assert batch["timestamps"][1].tolist() == [10, 50, 70, 0, 0]
    short = pad_sequences(sequences, max_length=2)
    assert short["timestamps"].tolist() == [[400, 1000], [50, 70]]
    assert pad_sequences([])["items"].shape == (0, 0)


def _toy(lengths):
    rows = [(f"u{u}", f"i{(u + t) % 7}", 10 * t) for u, n in enumerate(lengths) for t in range(n)]
    sequences, _ = build_sequences(pd.DataFrame(rows, columns=["user", "item", "timestamp"]), SequenceConfig(min_length=2))
    return sequences


def test_reference_split_holds_out_longest_users():
    sequences = _toy([5, 9, 3, 7, 9, 4, 6, 2, 8, 5])
    split = reference_split(sequences, test_fraction=0.2)
    assert [s.user for s in split.test] == ["u1", "u4"]  # the two longest, stable order
    assert len(split.train) == 8 and {s.user for s in split.train}.isdisjoint({"u1", "u4"})
    assert all(len(s) <= 9 for s in split.train)
    prefixes, targets = split_last(split.test)
    assert [len(p) for p in prefixes] == [8, 8]
    assert targets.tolist() == [s.items[-1] for s in split.test]
    # the prefix's last delta_next is the time to the target
    assert prefixes[0].delta_next[-1] == pytest.approx(np.log1p(10))
    assert len(reference_split(sequences[:3], test_fraction=0.1).test) == 1


def test_leave_last_out():
    sequences = _toy([3, 4, 2])
    split = leave_last_out(sequences)
    assert [len(s) for s in split.train] == [2, 3, 1]
    assert all(t is s for t, s in zip(split.test, sequences)) and len(split.test) == 3
    for train, full in zip(split.train, split.test):
        assert train.items.tolist() == full.items[:-1].tolist()
    with pytest.raises(ValueError, match="fewer than 2"):
        leave_last_out([sequences[0].head(1)])
