"""MIND entity / relation vectors: exact reading, errors naming file, line and field, synthetic
vectors that carry the topic, vocabulary alignment, and word-aligned title entities."""

from __future__ import annotations

import json

import numpy as np
import pytest

from newsrank.config import DataConfig
from newsrank.data.dataset import load_split, load_vocabularies, title_word_entity_ids
from newsrank.data.entities import (CONTEXT_FILE, ENTITY_FILE, RELATION_FILE, context_vectors, load_entity_vectors,
                                    read_vectors, vectors_for_vocab, write_vectors)
from newsrank.data.mind import MindFormatError, NewsRecord, read_news
from newsrank.data.vocab import Vocab


def write(tmp_path, text: str | bytes, name: str = "entity_embedding.vec"):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def test_reads_mind_lines_with_trailing_tab_crlf_and_final_blank_line(tmp_path):
    path = write(tmp_path, "Q41\t-0.063388\t0.5\t1e-3\t\r\nQ42\t1\t2\t3\t\n\n")
    ids, matrix = read_vectors(path)
    assert ids == ["Q41", "Q42"]
    np.testing.assert_array_equal(matrix, np.array([[-0.063388, 0.5, 1e-3], [1, 2, 3]], dtype=np.float32))
    assert matrix.dtype == np.float32
    # Without the trailing tab and without a final newline: the same.
    assert read_vectors(write(tmp_path, "Q41\t-0.063388\t0.5\t0.001\nQ42\t1\t2\t3", "b.vec"))[0] == ids


@pytest.mark.parametrize("text, line, field, words", [
    ("Q1\t1\t2\nQ2\t1\tx\n", 2, "value 2", "'x' is not a number"),
    ("Q1\t1\t2\nQ2\t1\n", 2, "value 2", "1 values, expected 2"),
    ("Q1\t1\t2\nQ2\t1\t2\t3\n", 2, "value 3", "3 values, expected 2"),
    ("Q1\t1\t2\n\t1\t2\n", 2, "id", "empty id"),
    ("Q1\t1\t2\n\nQ2\t1\t2\n", 2, "id", "empty id"),
    ("Q1\n", 1, "value 1", "no values"),
    ("Q1\t1\t2\nQ1\t1\t3\n", 2, "id", "repeats line 1"),
    ("Q1\t1\tnan\n", 1, "value 2", "not finite"),
    ("Q1\t1\t1 2\n", 1, "value 2", "not a number"),
])
def test_errors_name_file_line_and_field(tmp_path, text, line, field, words):
    path = write(tmp_path, text)
    with pytest.raises(MindFormatError) as info:
        read_vectors(path)
    err = info.value
    assert (err.path, err.line, err.field) == (str(path), line, field)
    assert words in str(err) and f"{path}, line {line}, field '{field}'" in str(err)


def test_whole_file_errors(tmp_path):
    with pytest.raises(MindFormatError, match="file is empty"):
        read_vectors(write(tmp_path, "\n"))
    with pytest.raises(MindFormatError, match="not UTF-8"):
        read_vectors(write(tmp_path, b"Q1\t\xff\n"))
    with pytest.raises(MindFormatError, match="file not found"):
        read_vectors(tmp_path / "missing.vec")
    # The same vector twice is tolerated (kept once).
    assert read_vectors(write(tmp_path, "Q1\t1\t2\nQ1\t1\t2\n"))[0] == ["Q1"]


def test_write_then_read_round_trip_and_context_means(tmp_path):
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(4, 5)).astype(np.float32)
    ids = ["Q1", "Q2", "Q3", "Q4"]
    write_vectors(tmp_path / "v.vec", ids, matrix)
    assert (tmp_path / "v.vec").read_text().splitlines()[0].endswith("\t")  # MIND's layout
    back_ids, back = read_vectors(tmp_path / "v.vec")
    assert back_ids == ids
    np.testing.assert_allclose(back, matrix, atol=1e-6)
    ctx = context_vectors(ids, matrix, {"Q1": ["Q2", "Q3", "Q9"], "Q2": []})
    np.testing.assert_allclose(ctx[0], matrix[1:3].mean(axis=0))
    np.testing.assert_array_equal(ctx[1], matrix[1])  # no neighbour: its own vector


def test_vectors_align_with_the_vocabulary_and_report_coverage():
    vocab = Vocab(["Q2", "Q7", "Q1"])  # rows 2, 3, 4
    matrix, coverage = vectors_for_vocab(["Q1", "Q2", "Q5"], np.eye(3, dtype=np.float32), vocab, source="x")
    assert matrix.shape == (5, 3)
    np.testing.assert_array_equal(matrix[0], 0.0)
    np.testing.assert_array_equal(matrix[2], [0, 1, 0])
    np.testing.assert_array_equal(matrix[4], [1, 0, 0])
    assert (coverage.found, coverage.total, coverage.dim) == (2, 3, 3)
    assert str(coverage) == "2/3 entities (66.7%) have 3-d vectors in x"


def test_synth_writes_vectors_that_carry_the_topic(synth_dir):
    news = read_news(synth_dir / "train" / "news.tsv")
    category = {}
    for record in news.values():
        for entity in record.title_entities + record.abstract_entities:
            category[entity["WikidataId"]] = record.category
    for split in ("train", "dev"):
        for name in (ENTITY_FILE, RELATION_FILE, CONTEXT_FILE):
            ids, matrix = read_vectors(synth_dir / split / name)
            assert matrix.shape[1] == 100
    ids, matrix = read_vectors(synth_dir / "train" / ENTITY_FILE)
    assert set(category) <= set(ids)  # every mentioned entity has a vector
    row = {key: i for i, key in enumerate(ids)}
    keys = sorted(category)
    unit = matrix[[row[k] for k in keys]]
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    cos = unit @ unit.T
    same = np.array([[category[a] == category[b] for b in keys] for a in keys])
    off = ~np.eye(len(keys), dtype=bool)
    assert cos[same & off].mean() > 0.6 > 0.2 > abs(cos[~same].mean())
    # Context = mean of the other entities of the category: close to the entity itself.
    _, contexts = read_vectors(synth_dir / "train" / CONTEXT_FILE)
    sim = np.sum(contexts * matrix, axis=1) / np.linalg.norm(contexts, axis=1) / np.linalg.norm(matrix, axis=1)
    assert sim.mean() > 0.7


def test_synth_vectors_do_not_change_the_click_logs(tmp_path):
    """The vectors come from their own generator: news.tsv and behaviors.tsv stay as they were."""
    from newsrank.data.synth import SynthConfig, write_synthetic_mind

    write_synthetic_mind(tmp_path / "a", SynthConfig(users=20, news=60, impressions=40, seed=5))
    write_synthetic_mind(tmp_path / "b", SynthConfig(users=20, news=60, impressions=40, seed=5, entity_dim=8))
    for name in ("news.tsv", "behaviors.tsv"):
        assert (tmp_path / "a" / "train" / name).read_bytes() == (tmp_path / "b" / "train" / name).read_bytes()
    assert read_vectors(tmp_path / "b" / "train" / ENTITY_FILE)[1].shape[1] == 8


def test_load_entity_vectors_on_the_synthetic_vocabulary(synth_dir):
    vocabs = load_vocabularies(synth_dir / "train", DataConfig())
    matrix, coverage = load_entity_vectors(synth_dir / "train", vocabs.entities)
    assert matrix.shape == (len(vocabs.entities), 100)
    assert coverage.found == coverage.total == len(vocabs.entities) - 2
    assert load_entity_vectors(synth_dir / "train", vocabs.entities, "absent.vec") is None


def test_title_word_entities_follow_occurrence_offsets():
    entities = [{"WikidataId": "Q1", "OccurrenceOffsets": [9], "SurfaceForms": ["Walmart"]},
                {"WikidataId": "Q2", "OccurrenceOffsets": [99], "SurfaceForms": ["Navy reserve"]},  # bad offset
                {"WikidataId": "Q3", "OccurrenceOffsets": [0], "SurfaceForms": ["Nowhere"]}]  # not in the title
    record = NewsRecord("N1", "news", "newsus", "DOJ sues Walmart over a Navy reserve officer", "", "", entities, [])
    assert title_word_entity_ids(record) == [None, None, "Q1", None, None, "Q2", "Q2", None]


def test_news_table_holds_word_aligned_entities(synth_dir):
    config = DataConfig(title_len=12)
    vocabs = load_vocabularies(synth_dir / "train", config)
    table, _ = load_split(synth_dir / "train", vocabs, config)
    aligned = np.asarray(table.title_word_entities)
    assert aligned.shape == np.asarray(table.title).shape
    assert ((aligned != 0) <= (np.asarray(table.title) != 0)).all()  # only on real words
    news = read_news(synth_dir / "train" / "news.tsv")
    row = int(np.flatnonzero((aligned != 0).any(axis=1))[0])
    record = news[table.news_ids[row]]
    (entity,) = record.title_entities
    assert set(aligned[row][aligned[row] != 0]) == {vocabs.entities.lookup(entity["WikidataId"])}
    # The label's words carry it (capped at title_len).
    n_words = len(entity["Label"].split())
    assert (aligned[row] != 0).sum() == min(n_words, max(0, 12 - title_word_entity_ids(record).index(
        entity["WikidataId"])))
    assert json.loads(json.dumps(entity))  # a plain MIND entity dict


def test_real_mind_titles_align_their_entities(shared_data):
    news = read_news(shared_data / "mind_tiny" / "train" / "news.tsv")
    mentioned = [q for r in news.values() for q in title_word_entity_ids(r) if q]
    assert len(mentioned) > 300
