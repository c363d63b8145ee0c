"""What the in-process benchmark scripts share: a news model at its packaged defaults, untrained,
on a MIND-format folder (``bench_speed.py``, ``bench_flops.py``, ``profile_train.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class Setup:
    config: object  # the resolved RunConfig
    model: object  # the NewsRecModel, train mode
    train_table: object
    train_behaviors: object
    dev_table: object
    dev_behaviors: object  # the first ``dev_impressions`` when given


def setup(name: str, data: Path, word_dim: int, dev_impressions: int | None = None, seed: int = 0) -> Setup:
    """Model ``name`` with its packaged config (random ``word_dim``-d word vectors: speed does not
    depend on their values), adapted to the training news, and both splits of ``data``."""
    from newsrank.config import load_config
    from newsrank.core.runtime import seed_everything
    from newsrank.data.dataset import load_split, load_vocabularies
    from newsrank.models import ModelContext, model_class
    from newsrank.train import split_dirs

    try:
        from newsrank.core.malloc import reuse_freed_memory
    except ImportError:  # a checkout from before the allocator setting (timed with PYTHONPATH): as it ran then
        pass
    else:
        reuse_freed_memory()  # as the command line does
    cls = model_class(name)
    config = load_config(name, cls.config_class)
    if hasattr(config.model, "word_dim"):
        config.model.word_dim = word_dim
    train_dir, dev_dir = split_dirs(data)
    vocabs = load_vocabularies(train_dir, config.data)
    train_table, train_behaviors = load_split(train_dir, vocabs, config.data)
    dev_table, dev_behaviors = load_split(dev_dir, vocabs, config.data)
    if dev_impressions:
        dev_behaviors = dev_behaviors.slice(0, min(dev_impressions, len(dev_behaviors)))
    seed_everything(seed)
    context = ModelContext(vocabs)
    cls.adapt_config(config.model, context, train_table)
    model = cls(config.model, context).train()
    return Setup(config, model, train_table, train_behaviors, dev_table, dev_behaviors)
