"""Tokenizer and vocabularies, built from the training split only.

Every vocabulary reserves index 0 for padding and index 1 for unknown values, so that an unknown
word is never confused with padding (Microsoft Recommenders maps both to 0) and a padding mask can
be read off the indices alone (``index != PAD``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

PAD, UNK = 0, 1
PAD_TOKEN, UNK_TOKEN = "<pad>", "<unk>"

# Words, plus the punctuation marks that carry meaning in headlines; the same rule as Microsoft
# Recommenders' word_tokenize, so word counts match published setups.
_TOKEN_PATTERN = re.compile(r"\w+|[.,!?;|]")


def tokenize(text: str) -> list[str]:
    """Lower-cased word and punctuation tokens of ``text``."""
    return _TOKEN_PATTERN.findall(text.lower())


class Vocab:
    """A token <-> index mapping with ``<pad>`` = 0 and ``<unk>`` = 1."""

    def __init__(self, tokens: Iterable[str]):
        self.tokens: list[str] = [PAD_TOKEN, UNK_TOKEN]
        self.tokens.extend(t for t in tokens if t not in (PAD_TOKEN, UNK_TOKEN))
        self.index: dict[str, int] = {t: i for i, t in enumerate(self.tokens)}
        if len(self.index) != len(self.tokens):
            raise ValueError("vocabulary tokens must be unique")

    @classmethod
    def from_counts(cls, counts: Counter, min_count: int = 1, max_size: int | None = None) -> "Vocab":
        """Most frequent first (ties alphabetical, so the order is deterministic)."""
        kept = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
        if max_size is not None:
            kept = kept[: max(0, max_size - 2)]
        return cls(kept)

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: str) -> bool:
        return token in self.index

    def lookup(self, token: str) -> int:
        return self.index.get(token, UNK)

    def lookup_many(self, tokens: Iterable[str]) -> list[int]:
        get = self.index.get
        return [get(t, UNK) for t in tokens]


_NAMES = ("words", "categories", "subcategories", "users")


@dataclass
class Vocabularies:
    """All vocabularies a model needs; saved with every checkpoint so new data maps the same way.

    ``entities`` holds the WikidataIds of the training split's title and abstract entities. It is
    optional: vocabularies saved before it existed (and data without entities) have an empty one,
    which ``to_json``, ``sizes`` and hence ``digest`` leave out, so their digests are unchanged.
    """

    words: Vocab
    categories: Vocab
    subcategories: Vocab
    users: Vocab
    entities: Vocab = field(default_factory=lambda: Vocab([]))

    def _names(self) -> tuple[str, ...]:
        return _NAMES + (("entities",) if len(self.entities) > 2 else ())

    def to_json(self) -> dict:
        return {name: getattr(self, name).tokens[2:] for name in self._names()}

    @classmethod
    def from_json(cls, data: dict) -> "Vocabularies":
        return cls(**{name: Vocab(data[name]) for name in _NAMES}, entities=Vocab(data.get("entities", [])))

    def digest(self) -> str:
        """A short content hash; a checkpoint records it so mismatched vocabularies are caught."""
        blob = json.dumps(self.to_json(), sort_keys=True, ensure_ascii=False).encode("utf-8")
        return hashlib.sha256(blob).hexdigest()[:16]

    def sizes(self) -> dict[str, int]:
        return {name: len(getattr(self, name)) for name in self._names()}
