"""Vocabularies and cached preprocessing of MIND splits into integer arrays."""

from __future__ import annotations

import calendar
import dataclasses
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import newsrank.data.dataset as dataset
from newsrank.config import DataConfig
from newsrank.data.dataset import build_vocabularies, load_split, load_vocabularies
from newsrank.data.mind import MindFormatError
from newsrank.data.vocab import PAD, PAD_TOKEN, UNK, UNK_TOKEN, Vocab, Vocabularies, tokenize


def news_row(nid, cat, sub, title, abstract="") -> str:
    return "\t".join([nid, cat, sub, title, abstract, f"https://example.org/{nid}", "[]", "[]"])


TRAIN_NEWS = "\n".join(
    [
        news_row("N1", "sports", "football", "Big game tonight!", "The big one."),
        news_row("N2", "news", "politics", "Vote counts, explained", ""),
        news_row("N3", "sports", "tennis", "one two three four five six seven"),
        news_row("N4", "news", "politics", "Big vote"),
    ]
) + "\n"
TRAIN_BEHAVIORS = (
    "1\tU1\t11/15/2019 8:55:22 AM\tN1 N2 N3\tN4-1 N2-0\n"
    "2\tU2\t11/15/2019 9:00:00 PM\t\tN1-0 N3-1 N4-0\n"
    "3\tU1\t11/16/2019 12:30:05 AM\tN4\tN2-1\n"
)
# dev: its own news rows (a dev-only word "zebra", a dev-only category), a dev-only user U9
DEV_NEWS = "\n".join(
    [
        news_row("D1", "sports", "football", "Zebra wins big game"),
        news_row("D2", "weather", "storms", "Vote tonight"),
        news_row("N1", "sports", "football", "Big game tonight!", "The big one."),
    ]
) + "\n"
DEV_BEHAVIORS = (
    "10\tU9\t11/17/2019 1:00:00 PM\tN1 D2 D1\tD1-0 D2-1\n"
    "11\tU2\t11/17/2019 2:00:00 PM\tD1\tN1-1\n"
)
TEST_BEHAVIORS = "20\tU1\t11/18/2019 3:00:00 AM\tD2\tD1 N1 D2\n21\tU7\t11/18/2019 3:00:01 AM\t\tN1\n"


def write_split(folder: Path, news: str, behaviors: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "news.tsv").write_text(news, encoding="utf-8")
    (folder / "behaviors.tsv").write_text(behaviors, encoding="utf-8")
    return folder


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("NEWSRANK_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def train(tmp_path) -> Path:
    return write_split(tmp_path / "train", TRAIN_NEWS, TRAIN_BEHAVIORS)


@pytest.fixture
def dev(tmp_path) -> Path:
    return write_split(tmp_path / "dev", DEV_NEWS, DEV_BEHAVIORS)


CONFIG = DataConfig(title_len=4, abstract_len=3, history_len=2, min_word_count=1)


def row_of(table, news_id: str) -> int:
    return table.news_ids.index(news_id)


# --------------------------------------------------------------------------- vocab.py


def test_tokenize_lowercases_and_keeps_punctuation_marks():
    assert tokenize("Big Game, TONIGHT!") == ["big", "game", ",", "tonight", "!"]
    assert tokenize("Who? Me; you | them.") == ["who", "?", "me", ";", "you", "|", "them", "."]
    # other punctuation is dropped; apostrophes and hyphens split words
    assert tokenize("Hudson Yards' Edge: 2020 re-opens (NYC) $5 \"quote\"") == [
        "hudson", "yards", "edge", "2020", "re", "opens", "nyc", "5", "quote",
    ]
    assert tokenize("Café über_cool") == ["café", "über_cool"]  # \w is Unicode-aware, "_" is a word char
    assert tokenize("") == [] and tokenize("  ...") == [".", ".", "."]


def test_vocab_reserves_pad_and_unk():
    vocab = Vocab(["a", "b"])
    assert PAD == 0 and UNK == 1 and PAD != UNK
    assert vocab.tokens[:2] == [PAD_TOKEN, UNK_TOKEN]
    assert vocab.lookup(PAD_TOKEN) == PAD and vocab.lookup(UNK_TOKEN) == UNK
    assert vocab.lookup("a") == 2 and vocab.lookup("b") == 3
    assert vocab.lookup("never-seen") == UNK
    assert vocab.lookup_many(["b", "zzz", "a"]) == [3, UNK, 2]
    assert len(vocab) == 4 and "a" in vocab and "zzz" not in vocab
    # <pad> / <unk> among the tokens are not added twice
    assert Vocab([UNK_TOKEN, "a", PAD_TOKEN]).tokens == [PAD_TOKEN, UNK_TOKEN, "a"]
    with pytest.raises(ValueError, match="unique"):
        Vocab(["a", "a"])


def test_vocab_from_counts_order_and_min_count():
    counts = Counter({"b": 3, "a": 3, "c": 5, "d": 1, "e": 2})
    assert Vocab.from_counts(counts).tokens[2:] == ["c", "a", "b", "e", "d"]  # count desc, ties alphabetical
    # insertion order of the Counter does not matter
    shuffled = Counter(dict(reversed(list(counts.items()))))
    assert Vocab.from_counts(shuffled).tokens == Vocab.from_counts(counts).tokens
    assert Vocab.from_counts(counts, min_count=2).tokens[2:] == ["c", "a", "b", "e"]
    assert Vocab.from_counts(counts, min_count=3).tokens[2:] == ["c", "a", "b"]
    assert Vocab.from_counts(counts, max_size=4).tokens == [PAD_TOKEN, UNK_TOKEN, "c", "a"]
    assert Vocab.from_counts(counts, min_count=99).tokens == [PAD_TOKEN, UNK_TOKEN]


def make_vocabs(words=("big", "game")) -> Vocabularies:
    return Vocabularies(
        words=Vocab(words), categories=Vocab(["news"]), subcategories=Vocab(["politics"]), users=Vocab(["U1", "U2"])
    )


def test_vocabularies_json_round_trip_and_digest():
    vocabs = make_vocabs(("big", "game", "café"))
    data = vocabs.to_json()
    assert data == {"words": ["big", "game", "café"], "categories": ["news"], "subcategories": ["politics"],
                    "users": ["U1", "U2"]}
    back = Vocabularies.from_json(data)
    for name in ("words", "categories", "subcategories", "users"):
        assert getattr(back, name).tokens == getattr(vocabs, name).tokens
        assert getattr(back, name).index == getattr(vocabs, name).index
    assert back.digest() == vocabs.digest()
    assert make_vocabs(("big", "game", "café")).digest() == vocabs.digest()  # stable
    assert len(vocabs.digest()) == 16
    assert make_vocabs(("game", "big", "café")).digest() != vocabs.digest()  # order is content
    assert make_vocabs(("big", "game")).digest() != vocabs.digest()
    assert vocabs.sizes() == {"words": 5, "categories": 3, "subcategories": 3, "users": 4}


# --------------------------------------------------------------------------- vocabularies from train only


def test_vocabularies_built_from_train_only(train, dev):
    vocabs = load_vocabularies(train, CONFIG)
    # titles and abstracts of train news: big x3 (N1 title + abstract, N4), one x2 (N1 abstract, N3),
    # vote x2 (N2, N4), then every other word once, alphabetically
    assert vocabs.words.tokens[2:5] == ["big", "one", "vote"]
    assert vocabs.words.tokens[5:8] == ["!", ",", "."]
    assert {"tonight", "!", "counts", ",", "explained", "the", "one", "seven"} <= set(vocabs.words.tokens)
    assert "zebra" not in vocabs.words and "wins" not in vocabs.words
    assert vocabs.categories.tokens[2:] == ["news", "sports"]  # 2 each: alphabetical tie-break
    assert vocabs.subcategories.tokens[2:] == ["politics", "football", "tennis"]
    assert vocabs.users.tokens[2:] == ["U1", "U2"]  # U1 has 2 impressions
    assert "U9" not in vocabs.users and "weather" not in vocabs.categories


def test_min_word_count(train):
    vocabs = build_vocabularies(train, dataclasses.replace(CONFIG, min_word_count=2))
    assert vocabs.words.tokens[2:] == ["big", "one", "vote"]


def test_dev_split_maps_unseen_words_and_users_to_unk(train, dev):
    vocabs = load_vocabularies(train, CONFIG)
    table, behaviors = load_split(dev, vocabs, CONFIG)
    d1 = row_of(table, "D1")
    words = vocabs.words.lookup
    assert table.title[d1].tolist() == [UNK, words("wins"), words("big"), words("game")]
    assert words("wins") == UNK
    d2 = row_of(table, "D2")
    assert table.category[d2] == UNK and table.subcategory[d2] == UNK  # dev-only category
    assert table.category[d1] == vocabs.categories.lookup("sports")
    assert behaviors.users.tolist() == [UNK, vocabs.users.lookup("U2")]
    assert behaviors.users.dtype == np.int32


# --------------------------------------------------------------------------- arrays


def test_news_table(train):
    vocabs = load_vocabularies(train, CONFIG)
    table, _ = load_split(train, vocabs, CONFIG)
    assert table.news_ids == ["", "N1", "N2", "N3", "N4"]
    assert len(table) == 5
    assert table.title.shape == (5, 4) and table.abstract.shape == (5, 3)
    assert table.title.dtype == np.int32 and table.category.dtype == np.int32
    # row 0 is the padding news
    assert not table.title[0].any() and not table.abstract[0].any()
    assert table.category[0] == PAD and table.subcategory[0] == PAD
    w = vocabs.words.lookup
    # "Big game tonight!" = 4 tokens, exactly title_len
    assert table.title[1].tolist() == [w("big"), w("game"), w("tonight"), w("!")]
    # long title cut to the first 4 words
    assert table.title[3].tolist() == [w("one"), w("two"), w("three"), w("four")]
    # short title right-padded
    assert table.title[4].tolist() == [w("big"), w("vote"), PAD, PAD]
    assert table.abstract[1].tolist() == [w("the"), w("big"), w("one")]
    assert table.abstract[2].tolist() == [PAD, PAD, PAD]  # empty abstract
    assert table.category.tolist() == [PAD] + [vocabs.categories.lookup(c) for c in ("sports", "news", "sports", "news")]
    assert table.subcategory[3] == vocabs.subcategories.lookup("tennis")
    # no UNK in the train split's own rows
    assert UNK not in table.title and UNK not in table.abstract


def test_behaviors_arrays(train):
    vocabs = load_vocabularies(train, CONFIG)
    table, beh = load_split(train, vocabs, CONFIG)
    r = {nid: row_of(table, nid) for nid in ("N1", "N2", "N3", "N4")}
    assert beh.impression_ids == ["1", "2", "3"] and len(beh) == 3
    assert beh.users.tolist() == [vocabs.users.lookup("U1"), vocabs.users.lookup("U2"), vocabs.users.lookup("U1")]
    # history_len 2: the 2 most recent clicks, most recent last; shorter ones left-padded
    assert beh.history.shape == (3, 2) and beh.history.dtype == np.int32
    assert beh.history.tolist() == [[r["N2"], r["N3"]], [PAD, PAD], [PAD, r["N4"]]]
    assert beh.offsets.tolist() == [0, 2, 5, 6] and beh.offsets.dtype == np.int64
    assert beh.candidates.tolist() == [r["N4"], r["N2"], r["N1"], r["N3"], r["N4"], r["N2"]]
    assert beh.candidates.dtype == np.int32
    assert beh.labels.tolist() == [1, 0, 0, 1, 0, 1] and beh.labels.dtype == np.int8
    assert beh.labelled
    expected = [
        calendar.timegm((2019, 11, 15, 8, 55, 22)),
        calendar.timegm((2019, 11, 15, 21, 0, 0)),
        calendar.timegm((2019, 11, 16, 0, 30, 5)),
    ]
    assert beh.times.tolist() == expected and beh.times.dtype == np.int64
    assert expected[0] == 1573808122


def test_history_longer_than_file_and_zero(train):
    vocabs = load_vocabularies(train, CONFIG)
    config = dataclasses.replace(CONFIG, history_len=5)
    table, beh = load_split(train, vocabs, config)
    r = {nid: row_of(table, nid) for nid in ("N1", "N2", "N3", "N4")}
    assert beh.history[0].tolist() == [PAD, PAD, r["N1"], r["N2"], r["N3"]]
    _, beh0 = load_split(train, vocabs, dataclasses.replace(CONFIG, history_len=0))
    assert beh0.history.shape == (3, 0)


def test_unlabelled_split(train, tmp_path):
    test = write_split(tmp_path / "test", DEV_NEWS, TEST_BEHAVIORS)
    vocabs = load_vocabularies(train, CONFIG)
    table, beh = load_split(test, vocabs, CONFIG)
    assert beh.offsets.tolist() == [0, 3, 4]
    assert beh.candidates.tolist() == [row_of(table, n) for n in ("D1", "N1", "D2", "N1")]
    assert beh.labels.tolist() == [-1, -1, -1, -1]
    assert beh.labelled is False
    assert beh.users.tolist() == [vocabs.users.lookup("U1"), UNK]


def test_bad_split_raises_format_error(train, tmp_path):
    vocabs = load_vocabularies(train, CONFIG)
    bad = write_split(tmp_path / "bad", DEV_NEWS, "1\tU1\t11/15/2019 8:55:22 AM\tN2\tD1-1\n")
    with pytest.raises(MindFormatError, match="history"):
        load_split(bad, vocabs, CONFIG)
    with pytest.raises(MindFormatError, match="not found"):
        load_split(tmp_path / "nowhere", vocabs, CONFIG)


# --------------------------------------------------------------------------- cache


class CountingReader:
    def __init__(self, real):
        self.real = real
        self.calls = 0

    def __call__(self, split_dir):
        self.calls += 1
        return self.real(split_dir)


@pytest.fixture
def reader(monkeypatch) -> CountingReader:
    counting = CountingReader(dataset.stream_split)
    monkeypatch.setattr(dataset, "stream_split", counting)
    return counting


def assert_same(a, b) -> None:
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and np.array_equal(x, y), f.name
        else:
            assert x == y, f.name


def test_second_load_comes_from_cache(train, dev, cache, monkeypatch):
    vocabs = load_vocabularies(train, CONFIG)
    table, beh = load_split(dev, vocabs, CONFIG)
    assert (cache / "splits").is_dir() and len(list((cache / "splits").iterdir())) == 1

    def fail(_):
        raise AssertionError("stream_split called although the cache holds this split")

    monkeypatch.setattr(dataset, "stream_split", fail)
    table2, beh2 = load_split(dev, vocabs, CONFIG)
    assert_same(table, table2)
    assert_same(beh, beh2)
    assert beh2.labelled == beh.labelled
    # use_cache=False always re-reads
    with pytest.raises(AssertionError, match="stream_split called"):
        load_split(dev, vocabs, CONFIG, use_cache=False)


def test_cache_key_follows_file_bytes_config_and_vocab(train, dev, reader):
    vocabs = load_vocabularies(train, CONFIG)
    load_split(dev, vocabs, CONFIG)
    load_split(dev, vocabs, CONFIG)
    assert reader.calls == 1
    # the same bytes at another path are the same entry
    copy = write_split(dev.parent / "dev_copy", DEV_NEWS, DEV_BEHAVIORS)
    load_split(copy, vocabs, CONFIG)
    assert reader.calls == 1
    # changed behaviors bytes: a new entry with the new content
    (dev / "behaviors.tsv").write_text(DEV_BEHAVIORS.replace("D1-0 D2-1", "D1-1 D2-0"), encoding="utf-8")
    _, beh = load_split(dev, vocabs, CONFIG)
    assert reader.calls == 2
    assert beh.labels.tolist()[:2] == [1, 0]
    # changed news bytes
    (dev / "news.tsv").write_text(DEV_NEWS.replace("Zebra wins", "Zebra loses"), encoding="utf-8")
    load_split(dev, vocabs, CONFIG)
    assert reader.calls == 3
    # any DataConfig field
    for change in ({"title_len": 5}, {"abstract_len": 2}, {"history_len": 3}, {"min_word_count": 2}):
        table, _ = load_split(dev, vocabs, dataclasses.replace(CONFIG, **change))
        if "title_len" in change:
            assert table.title.shape[1] == 5
    assert reader.calls == 7
    # other vocabularies
    load_split(dev, make_vocabs(), CONFIG)
    assert reader.calls == 8
    load_split(dev, vocabs, CONFIG)  # the earlier entries are still there
    assert reader.calls == 8


def test_vocabularies_cached(train, monkeypatch):
    first = load_vocabularies(train, CONFIG)

    def fail(*_):
        raise AssertionError("rebuilt")

    monkeypatch.setattr(dataset, "build_vocabularies", fail)
    second = load_vocabularies(train, CONFIG)
    assert second.digest() == first.digest()
    assert second.words.tokens == first.words.tokens
    with pytest.raises(AssertionError, match="rebuilt"):
        load_vocabularies(train, dataclasses.replace(CONFIG, min_word_count=2))
    (train / "news.tsv").write_text(TRAIN_NEWS.replace("Big vote", "Small vote"), encoding="utf-8")
    with pytest.raises(AssertionError, match="rebuilt"):
        load_vocabularies(train, CONFIG)


def test_cache_honours_env(train, tmp_path, monkeypatch):
    other = tmp_path / "other-cache"
    monkeypatch.setenv("NEWSRANK_CACHE", str(other))
    assert dataset.cache_root() == other
    vocabs = load_vocabularies(train, CONFIG)
    load_split(train, vocabs, CONFIG)
    assert (other / "vocab").is_dir() and (other / "splits").is_dir()
    # no leftover temporary folders from the atomic write
    assert all(len(p.name) == 24 for p in (other / "splits").iterdir())


# --------------------------------------------------------------------------- real MIND rows


def test_real_mind_tiny_end_to_end(shared_data):
    root = shared_data / "mind_tiny"
    if not root.is_dir():
        pytest.skip(f"{root} is not present")
    config = DataConfig()
    vocabs = load_vocabularies(root / "train", config)
    assert 3 <= len(vocabs.users) <= 12  # <pad>, <unk> and at most one user per impression
    train_table, train_beh = load_split(root / "train", vocabs, config)
    dev_table, dev_beh = load_split(root / "dev", vocabs, config)
    assert len(train_table) == 531 and len(dev_table) == 205
    assert len(train_beh) == 10 and len(dev_beh) == 10
    assert train_beh.labelled and dev_beh.labelled
    assert int(train_beh.offsets[-1]) == len(train_beh.candidates) == len(train_beh.labels)
    assert (train_beh.candidates > 0).all() and (dev_beh.candidates > 0).all()
    assert UNK not in train_table.title[1:]  # train titles only hold train words


@pytest.mark.slow
def test_real_mlsmall_mind_reads_completely(shared_data):
    """The real-behaviour benchmark folder: every row read, counts as its README states."""
    config = DataConfig()
    vocabs = load_vocabularies(shared_data / "mlsmall_mind" / "train", config)
    sizes = {}
    for split in ("train", "dev"):
        table, behaviors = load_split(shared_data / "mlsmall_mind" / split, vocabs, config)
        assert behaviors.labelled
        # Every impression is one click + 19 sampled non-clicks; histories are left-padded.
        assert (np.diff(behaviors.offsets) == 20).all()
        assert (np.add.reduceat(np.asarray(behaviors.labels), np.asarray(behaviors.offsets[:-1])) == 1).all()
        history = np.asarray(behaviors.history)
        assert ((history[:, 1:] == 0) <= (history[:, :-1] == 0)).all()  # no padding after a real click
        sizes[split] = len(behaviors)
    assert sizes == {"train": 37315, "dev": 9440}
