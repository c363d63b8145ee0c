"""The MIND reader: exact parsing of news.tsv / behaviors.tsv and clear errors for everything else."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from newsrank.data.mind import (
    MindFormatError,
    NewsRecord,
    read_behaviors,
    read_news,
    read_split,
)

ENT_TITLE = [
    {
        "Label": "Walmart",
        "Type": "O",
        "WikidataId": "Q483551",
        "Confidence": 1.0,
        "OccurrenceOffsets": [9],
        "SurfaceForms": ["Walmart"],
    }
]
ENT_ABSTRACT = [
    {
        "Label": "NYC (band)",
        "Type": "P",
        "WikidataId": "Q624809",
        "Confidence": 0.939,
        "OccurrenceOffsets": [26],
        "SurfaceForms": ["NYC"],
    },
    {
        "Label": "Café",
        "Type": "C",
        "WikidataId": "Q30022",
        "Confidence": 0.5,
        "OccurrenceOffsets": [0, 12],
        "SurfaceForms": ["café", "Cafe"],
    },
]


def news_row(nid, cat="news", sub="newsus", title="A title", abstract="An abstract.", url=None,
             title_ents="[]", abstract_ents="[]") -> str:
    url = url if url is not None else f"https://assets.msn.com/labs/mind/{nid}.html"
    return "\t".join([nid, cat, sub, title, abstract, url, title_ents, abstract_ents])


NEWS_TEXT = "\n".join(
    [
        news_row("N1", "sports", "football_nfl", "DOJ sues Walmart", "The abstract, with commas.",
                 title_ents=json.dumps(ENT_TITLE), abstract_ents=json.dumps(ENT_ABSTRACT)),
        news_row("N2", "news", "newsus", "Empty abstract here", "", title_ents="[]", abstract_ents=""),
        news_row("N3", "lifestyle", "lifestyleroyals", "Third", "Some text", title_ents="", abstract_ents="[]"),
        news_row("N4", "video", "viral", "Fourth", "More text"),
    ]
) + "\n"

BEHAVIORS_TEXT = (
    "1\tU13740\t11/11/2019 9:05:58 AM\tN3 N1 N2\tN4-1 N2-0\n"
    "2\tU91836\t11/12/2019 6:11:30 PM\t\tN1-0 N3-0 N4-1\n"
    "3\tU13740\t11/14/2019 12:00:00 AM\tN4\tN1-0\n"
)


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_bytes(text.encode("utf-8"))
    return path


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NEWSRANK_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def news(tmp_path) -> dict[str, NewsRecord]:
    return read_news(write(tmp_path / "news.tsv", NEWS_TEXT))


def assert_error(err: MindFormatError, path: Path, line: int | None, field: str | None) -> None:
    msg = str(err)
    assert err.path == str(path)
    assert str(path) in msg
    assert err.line == line
    assert err.field == field
    if line is not None:
        assert f"line {line}" in msg
    if field is not None:
        assert f"field '{field}'" in msg


# --------------------------------------------------------------------------- news.tsv


def test_news_rows_parsed_exactly(news):
    assert list(news) == ["N1", "N2", "N3", "N4"]  # file order
    n1 = news["N1"]
    assert n1 == NewsRecord(
        news_id="N1",
        category="sports",
        subcategory="football_nfl",
        title="DOJ sues Walmart",
        abstract="The abstract, with commas.",
        url="https://assets.msn.com/labs/mind/N1.html",
        title_entities=ENT_TITLE,
        abstract_entities=ENT_ABSTRACT,
    )
    assert n1.abstract_entities[1]["SurfaceForms"] == ["café", "Cafe"]
    assert n1.abstract_entities[0]["Confidence"] == pytest.approx(0.939)


def test_news_empty_abstract_and_empty_entity_columns(news):
    assert news["N2"].abstract == ""
    assert news["N2"].title_entities == []  # "[]"
    assert news["N2"].abstract_entities == []  # ""
    assert news["N3"].title_entities == []  # ""
    assert news["N3"].abstract_entities == []  # "[]"


def test_news_crlf_and_no_trailing_newline(tmp_path):
    crlf = NEWS_TEXT.replace("\n", "\r\n")
    news = read_news(write(tmp_path / "crlf.tsv", crlf))
    plain = read_news(write(tmp_path / "plain.tsv", NEWS_TEXT.rstrip("\n")))
    assert news == plain
    assert news["N2"].abstract_entities == []
    assert news["N4"].abstract_entities == []  # no stray "\r" in the last column


def test_news_byte_order_mark_tolerated(tmp_path):
    news = read_news(write(tmp_path / "bom.tsv", "\ufeff" + NEWS_TEXT))
    assert list(news) == ["N1", "N2", "N3", "N4"]


@pytest.mark.parametrize(
    "lines, line, field, fragment",
    [
        ([news_row("N1"), "N2\tnews\tnewsus\ttitle\tabstract\turl\t[]"], 2, None, "expected 8"),
        ([news_row("N1") + "\textra"], 1, None, "found 9"),
        ([news_row("N1"), news_row("N2"), news_row("N1")], 3, "news_id", "appears twice"),
        ([news_row("")], 1, "news_id", "empty news id"),
        ([news_row("N1"), news_row("N2", title_ents="[{bad json")], 2, "title_entities", "invalid JSON"),
        ([news_row("N1", abstract_ents='{"Label": "x"}')], 1, "abstract_entities", "JSON list"),
        ([news_row("N1", abstract_ents="[1, 2]")], 1, "abstract_entities", "JSON list"),
    ],
)
def test_news_errors(tmp_path, lines, line, field, fragment):
    path = write(tmp_path / "news.tsv", "\n".join(lines) + "\n")
    with pytest.raises(MindFormatError) as info:
        read_news(path)
    assert_error(info.value, path, line, field)
    assert fragment in str(info.value)


def test_news_empty_file(tmp_path):
    path = write(tmp_path / "news.tsv", "")
    with pytest.raises(MindFormatError, match="empty") as info:
        read_news(path)
    assert_error(info.value, path, None, None)


def test_news_missing_file(tmp_path):
    path = tmp_path / "nope" / "news.tsv"
    with pytest.raises(MindFormatError, match="not found") as info:
        read_news(path)
    assert_error(info.value, path, None, None)


def test_news_not_utf8_names_the_line(tmp_path):
    good = ("\n".join([news_row("N1", title="Café OK"), news_row("N2")]) + "\n").encode("utf-8")
    bad = news_row("N3", title="Caf@").encode("utf-8").replace(b"Caf@", b"Caf\xe9")  # latin-1 e-acute
    data = good + bad + b"\n" + news_row("N4").encode("utf-8") + b"\n"
    path = write(tmp_path / "news.tsv", data)
    with pytest.raises(MindFormatError, match="UTF-8") as info:
        read_news(path)
    assert_error(info.value, path, 3, None)


def test_news_error_is_a_value_error(tmp_path):
    path = write(tmp_path / "news.tsv", "just one column\n")
    with pytest.raises(ValueError):
        read_news(path)


# --------------------------------------------------------------------------- behaviors.tsv


def test_behaviors_parsed_exactly(tmp_path, news):
    imps = read_behaviors(write(tmp_path / "behaviors.tsv", BEHAVIORS_TEXT), news)
    assert [i.impression_id for i in imps] == ["1", "2", "3"]
    first, second, third = imps
    assert first.user_id == "U13740"
    assert first.time == datetime(2019, 11, 11, 9, 5, 58)
    assert first.history == ["N3", "N1", "N2"]  # oldest first, file order kept
    assert first.candidates == ["N4", "N2"]
    assert first.labels == [1, 0]
    assert second.time == datetime(2019, 11, 12, 18, 11, 30)  # PM
    assert second.history == []  # empty history column
    assert second.candidates == ["N1", "N3", "N4"]
    assert second.labels == [0, 0, 1]
    assert third.time == datetime(2019, 11, 14, 0, 0, 0)  # 12 AM is midnight
    assert third.history == ["N4"]


def test_behaviors_without_news_skip_cross_check(tmp_path):
    imps = read_behaviors(write(tmp_path / "behaviors.tsv", "7\tU1\t1/2/2020 1:02:03 PM\tN99\tN98-1\n"))
    assert imps[0].history == ["N99"] and imps[0].candidates == ["N98"]
    assert imps[0].time == datetime(2020, 1, 2, 13, 2, 3)


def test_behaviors_unlabelled_test_set(tmp_path, news):
    text = "1\tU1\t11/15/2019 8:55:22 AM\tN1\tN2 N3 N4\n2\tU2\t11/15/2019 8:56:00 AM\t\tN1\n"
    imps = read_behaviors(write(tmp_path / "behaviors.tsv", text), news)
    assert imps[0].candidates == ["N2", "N3", "N4"]
    assert imps[0].labels is None
    assert imps[1].candidates == ["N1"] and imps[1].labels is None and imps[1].history == []


def test_behaviors_crlf(tmp_path, news):
    crlf = read_behaviors(write(tmp_path / "a.tsv", BEHAVIORS_TEXT.replace("\n", "\r\n")), news)
    plain = read_behaviors(write(tmp_path / "b.tsv", BEHAVIORS_TEXT), news)
    assert crlf == plain
    assert crlf[0].labels == [1, 0]  # "N2-0\r" would not parse as a label


GOOD = "1\tU1\t11/15/2019 8:55:22 AM\tN1 N2\tN3-1 N4-0"


@pytest.mark.parametrize(
    "bad_row, field, fragment",
    [
        ("2\tU2\t11/15/2019 8:55:22 AM\tN1", None, "expected 5"),
        ("2\tU2\t11/15/2019 8:55:22 AM\tN1\tN2-1\tN3", None, "found 6"),
        ("2\tU2\t11/15/2019 8:55:22 AM\tN1\tN2-2", "impressions", "N2-2"),
        ("2\tU2\t11/15/2019 8:55:22 AM\tN1\tN2-", "impressions", "N2-"),
        ("2\tU2\t11/15/2019 8:55:22 AM\tN1\t-1", "impressions", "-1"),
        ("2\tU2\t11/15/2019 8:55:22 AM\tN1\tN2-x", "impressions", "bad token"),
        ("2\tU2\t11/15/2019 8:55:22 AM\tN1\tN2-1 N3", "impressions", "mixes"),
        ("2\tU2\t11/15/2019 8:55:22 AM\tN1\tN3 N2-0", "impressions", "mixes"),
        ("2\tU2\t11/15/2019 8:55:22 AM\tN1\t", "impressions", "no candidates"),
        ("2\tU2\t2019-11-15 08:55:22\tN1\tN2-1", "time", "2019-11-15 08:55:22"),
        ("2\tU2\t13/15/2019 8:55:22 AM\tN1\tN2-1", "time", "not a time"),
        ("2\tU2\t11/15/2019 8:55:22\tN1\tN2-1", "time", "not a time"),
        ("2\tU2\t11/15/2019 8:55:22 AM\tN1 N77\tN2-1", "history", "'N77'"),
        ("2\tU2\t11/15/2019 8:55:22 AM\tN1\tN2-1 N77-0", "impressions", "'N77'"),
        ("2\tU2\t11/15/2019 8:55:22 AM\t\tN77", "impressions", "not in news.tsv"),
        ("1\tU2\t11/15/2019 8:55:22 AM\tN1\tN2-1", "impression_id", "appears twice"),
        ("\tU2\t11/15/2019 8:55:22 AM\tN1\tN2-1", "impression_id", "empty"),
        ("2\t\t11/15/2019 8:55:22 AM\tN1\tN2-1", "user_id", "empty"),
    ],
)
def test_behaviors_errors(tmp_path, news, bad_row, field, fragment):
    # The bad row is line 3: a good line before it, and one more after it that is never reached.
    good3 = GOOD.replace("1\tU1", "3\tU3", 1)
    path = write(tmp_path / "behaviors.tsv", "\n".join([GOOD, bad_row, good3]) + "\n")
    with pytest.raises(MindFormatError) as info:
        read_behaviors(path, news)
    assert_error(info.value, path, 2, field)
    assert fragment in str(info.value)


def test_behaviors_error_line_counts_crlf_lines(tmp_path, news):
    text = "\r\n".join([GOOD, GOOD.replace("1\tU1", "2\tU1", 1), "3\tU1\tbad time\t\tN1-1"]) + "\r\n"
    path = write(tmp_path / "behaviors.tsv", text)
    with pytest.raises(MindFormatError) as info:
        read_behaviors(path, news)
    assert_error(info.value, path, 3, "time")


def test_behaviors_not_utf8(tmp_path, news):
    data = (GOOD + "\n").encode() + b"2\tU\xff\xfe\t11/15/2019 8:55:22 AM\tN1\tN2-1\n"
    path = write(tmp_path / "behaviors.tsv", data)
    with pytest.raises(MindFormatError, match="UTF-8") as info:
        read_behaviors(path, news)
    assert_error(info.value, path, 2, None)


def test_behaviors_empty_and_missing(tmp_path, news):
    empty = write(tmp_path / "behaviors.tsv", "")
    with pytest.raises(MindFormatError, match="empty") as info:
        read_behaviors(empty, news)
    assert_error(info.value, empty, None, None)
    missing = tmp_path / "missing" / "behaviors.tsv"
    with pytest.raises(MindFormatError, match="not found") as info:
        read_behaviors(missing, news)
    assert_error(info.value, missing, None, None)


# --------------------------------------------------------------------------- read_split


def test_read_split_cross_checks(tmp_path):
    split = tmp_path / "train"
    write(split / "news.tsv", NEWS_TEXT)
    write(split / "behaviors.tsv", BEHAVIORS_TEXT)
    news, imps = read_split(split)
    assert len(news) == 4 and len(imps) == 3
    # the same behaviors with a news id news.tsv lacks fail, naming behaviors.tsv
    write(split / "behaviors.tsv", BEHAVIORS_TEXT + "4\tU1\t11/15/2019 8:55:22 AM\tN5\tN1-1\n")
    with pytest.raises(MindFormatError) as info:
        read_split(split)
    assert_error(info.value, split / "behaviors.tsv", 4, "history")


def test_read_split_missing_news(tmp_path):
    split = tmp_path / "dev"
    write(split / "behaviors.tsv", BEHAVIORS_TEXT)
    with pytest.raises(MindFormatError, match="not found") as info:
        read_split(split)
    assert info.value.path == str(split / "news.tsv")


# --------------------------------------------------------------------------- real MIND rows


@pytest.mark.parametrize("split, n_impressions, n_news", [("train", 10, 530), ("dev", 10, 204)])
def test_real_mind_tiny(shared_data, split, n_impressions, n_news):
    folder = shared_data / "mind_tiny" / split
    if not folder.is_dir():
        pytest.skip(f"{folder} is not present")
    news, imps = read_split(folder)
    assert len(news) == n_news
    assert len(imps) == n_impressions
    assert len({i.impression_id for i in imps}) == n_impressions
    entities = [e for r in news.values() for e in r.title_entities + r.abstract_entities]
    assert entities, "real MIND rows carry entity annotations"
    for entity in entities:
        assert isinstance(entity, dict)
        assert {"Label", "Type", "WikidataId", "Confidence", "OccurrenceOffsets", "SurfaceForms"} <= set(entity)
        assert isinstance(entity["OccurrenceOffsets"], list)
    assert any(r.title_entities == [] for r in news.values())
    for imp in imps:
        assert imp.labels is not None and len(imp.labels) == len(imp.candidates)
        assert set(imp.labels) <= {0, 1}
        assert all(n in news for n in imp.history + imp.candidates)
        assert imp.time.year == 2019 and imp.time.month == 11
    if split == "train":
        n31825 = news["N31825"]
        assert n31825.category == "video" and n31825.subcategory == "viral"
        assert n31825.title_entities == []
        assert n31825.abstract_entities[0]["WikidataId"] == "Q624809"
        first = imps[0]
        assert first.impression_id == "1" and first.user_id == "U13740"
        assert first.time == datetime(2019, 11, 11, 9, 5, 58)
        assert first.history[0] == "N55189" and first.history[-1] == "N31801"
        assert first.candidates == ["N55689", "N35729"] and first.labels == [1, 0]
