"""MIND's knowledge-graph vectors: ``entity_embedding.vec`` and ``relation_embedding.vec``.

Each MIND split folder ships both files: 100-d TransE vectors learned on the WikiData subgraph of
the news' entities, one per line::

    Q41<TAB>-0.063388<TAB>-0.181451<TAB>...<TAB>0.116787<TAB>

(``WikidataId`` or relation id ``P31``, then the values; MIND's lines end with a tab before the
newline, which is read as "no more fields", not as an empty value). The reader is strict: every
line has the same number of values, every value is a finite number, an id is non-empty and appears
once (a repeat with the very same vector is tolerated); a trailing ``\\r`` (CRLF files) and empty
lines at the end of the file are accepted. Anything else raises
:class:`~newsrank.data.mind.MindFormatError` naming the file, the 1-based line and the field
(``id`` or ``value <k>``, 1-based).

``context_embedding.vec`` (same format) is optional and not part of MIND: DKN's context vector of
an entity is the mean of its knowledge-graph neighbours' vectors (Microsoft Recommenders computes it
from MIND's ``wikidata-graph``); :func:`context_vectors` computes it from a neighbour list, and
``newsrank synth`` writes all three files.

:func:`load_entity_vectors` turns a split folder's file into a matrix aligned with the entity
vocabulary (row 0 padding = zeros; entities the file lacks, and ``<unk>``, get a small seeded
random vector, as words without a pretrained vector do) and reports the coverage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .mind import MindFormatError
from .vocab import PAD, UNK, Vocab

ENTITY_FILE = "entity_embedding.vec"
RELATION_FILE = "relation_embedding.vec"
CONTEXT_FILE = "context_embedding.vec"


def read_vectors(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Ids and a [n, dim] float32 matrix of a ``id<TAB>v1<TAB>...`` file (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise MindFormatError(path, None, None, "file not found")
    try:
        lines = path.read_bytes().decode("utf-8").split("\n")
    except UnicodeDecodeError as err:
        raise MindFormatError(path, None, None, f"not UTF-8 ({err.reason} at byte {err.start})") from None
    while lines and not lines[-1].strip("\r"):  # the final newline, and empty lines at the end
        lines.pop()
    ids: list[str] = []
    rows: list[list[float]] = []
    seen: dict[str, int] = {}
    dim = None
    for lineno, line in enumerate(lines, start=1):
        fields = line.rstrip("\r").split("\t")
        if fields and fields[-1] == "":  # MIND's trailing tab
            fields.pop()
        if not fields or not fields[0].strip():
            raise MindFormatError(path, lineno, "id", "empty id (expected 'id<TAB>v1<TAB>...')")
        key = fields[0]
        if key != key.strip():
            raise MindFormatError(path, lineno, "id", f"id {key!r} has surrounding spaces")
        values = fields[1:]
        if dim is None:
            if not values:
                raise MindFormatError(path, lineno, "value 1", "no values after the id")
            dim = len(values)
        if len(values) != dim:
            raise MindFormatError(path, lineno, f"value {min(len(values), dim) + 1}",
                                  f"{len(values)} values, expected {dim} (as on line 1)")
        vector = []
        for k, text in enumerate(values, start=1):
            try:
                number = float(text)
            except ValueError:
                raise MindFormatError(path, lineno, f"value {k}", f"{text!r} is not a number") from None
            if not math.isfinite(number):
                raise MindFormatError(path, lineno, f"value {k}", f"{text!r} is not finite")
            vector.append(number)
        if key in seen:
            if rows[seen[key]] != vector:
                raise MindFormatError(path, lineno, "id", f"{key} repeats line {seen[key] + 1} with another vector")
            continue
        seen[key] = len(ids)
        ids.append(key)
        rows.append(vector)
    if dim is None:
        raise MindFormatError(path, None, None, "file is empty")
    return ids, np.asarray(rows, dtype=np.float32).reshape(len(ids), dim)


def write_vectors(path: str | Path, ids: list[str], matrix: np.ndarray) -> None:
    """Write a file :func:`read_vectors` reads back exactly, in MIND's layout (trailing tab)."""
    lines = ["\t".join([key, *(f"{v:.6f}" for v in row)]) + "\t\n" for key, row in zip(ids, np.asarray(matrix))]
    Path(path).write_text("".join(lines), encoding="utf-8")


def context_vectors(ids: list[str], matrix: np.ndarray, neighbours: dict[str, list[str]]) -> np.ndarray:
    """DKN's context vectors [n, dim]: the mean of each entity's neighbours' vectors (neighbours
    without a vector are skipped; an entity without any keeps its own vector)."""
    row = {key: i for i, key in enumerate(ids)}
    out = np.array(matrix, dtype=np.float32, copy=True)
    for i, key in enumerate(ids):
        known = [row[n] for n in neighbours.get(key, ()) if n in row]
        if known:
            out[i] = matrix[known].mean(axis=0)
    return out


@dataclass
class EntityCoverage:
    found: int  # vocabulary entities (excluding <pad>, <unk>) that have a vector
    total: int  # vocabulary entities (excluding <pad>, <unk>)
    dim: int
    source: str

    @property
    def ratio(self) -> float:
        return self.found / self.total if self.total else 0.0

    def __str__(self) -> str:
        return (f"{self.found}/{self.total} entities ({100 * self.ratio:.1f}%) have {self.dim}-d vectors "
                f"in {self.source}")


def vectors_for_vocab(ids: list[str], matrix: np.ndarray, vocab: Vocab, seed: int = 0,
                      source: str = "") -> tuple[np.ndarray, EntityCoverage]:
    """[len(vocab), dim] rows of ``matrix`` by vocabulary entity (random N(0, 0.1) where missing,
    zeros for padding) and the coverage."""
    dim = matrix.shape[1]
    out = np.random.default_rng(seed).normal(0.0, 0.1, size=(len(vocab), dim)).astype(np.float32)
    found = 0
    for key, vector in zip(ids, matrix):
        index = vocab.index.get(key)
        if index is not None and index not in (PAD, UNK):
            out[index] = vector
            found += 1
    out[PAD] = 0.0
    return out, EntityCoverage(found=found, total=max(0, len(vocab) - 2), dim=dim, source=source)


def load_entity_vectors(split_dir: str | Path, vocab: Vocab, name: str = ENTITY_FILE,
                        seed: int = 0) -> tuple[np.ndarray, EntityCoverage] | None:
    """Vectors of ``split_dir/name`` aligned with ``vocab``, or None when the file is absent."""
    path = Path(split_dir) / name
    if not path.is_file():
        return None
    ids, matrix = read_vectors(path)
    return vectors_for_vocab(ids, matrix, vocab, seed, str(path))
