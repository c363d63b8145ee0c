"""Run under ``torch.distributed.run`` by test_distributed.py (not a test module itself).

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_gradients.py DATA OUT MODEL...

For each model: one step's gradients under DDP against a single process's gradients on the whole
batch, same weights, dropout off. Three ways: the ranks split the batch's news (``NewsSharing``) or
each encodes its own share's news, both through the trainer's ``data_parallel`` (every lookup table
all-reduced by touched rows, however small); and split news through DDP's own dense all-reduce.
Rank 0 writes {model: {"shared": max abs difference, "own": ..., "dense": ..., "shared declared rows": how
many tables were averaged over the rows the model declared, ...}} to OUT. ``fum+fine`` is FUM with u^f
reading abstract words and entities.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, str(Path(__file__).parent))
from helpers import load_tiny_splits, tiny_run_config  # noqa: E402
from newsrank.core.distributed import _TouchedRowsAllReduce, data_parallel, join, leave, news_sharing  # noqa: E402
from newsrank.data.batching import NewsFeatures, TrainSampler  # noqa: E402
from newsrank.data.entities import CONTEXT_FILE, ENTITY_FILE, load_entity_vectors  # noqa: E402
from newsrank.models import MODELS, ModelContext  # noqa: E402


def gradients(model, batch, news) -> dict[str, torch.Tensor]:
    logits = model(batch, news)
    F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long)).backward()
    plain = model.module if isinstance(model, DistributedDataParallel) else model
    return {name: p.grad.clone() for name, p in plain.named_parameters() if p.grad is not None}


def main() -> None:
    data, out, names = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
    torch.set_num_threads(1)
    world = join(torch.device("cpu"))
    sharing = news_sharing(world)
    result = {}
    declared = []  # whether each row-wise all-reduce had the rows declared by the model (news sharing)
    call = _TouchedRowsAllReduce.__call__

    def recording(self, weight):
        declared.append(self.declared is not None)
        call(self, weight)

    _TouchedRowsAllReduce.__call__ = recording
    for label in names:
        name, _, variant = label.partition("+")
        config = tiny_run_config(name)
        if variant == "fine":  # FUM's u^f reading abstract words and entities through its own tables
            config.model.fine_abstract, config.model.fine_entities = True, True
            config.model.fine_abstract_len, config.model.fine_entity_len = 4, 2  # room for title words in 14 tokens
        vocabs, (table, behaviors), _ = load_tiny_splits(data, config.data)
        context = ModelContext(vocabs, None, False,
                               load_entity_vectors(data / "train", vocabs.entities, ENTITY_FILE)[0],
                               load_entity_vectors(data / "train", vocabs.entities, CONTEXT_FILE)[0])
        cls = MODELS[name]
        cls.adapt_config(config.model, context, table)
        torch.manual_seed(5)
        model = cls(config.model, context).eval()  # eval: no dropout, so the gradients can be compared
        news = NewsFeatures.from_table(table)
        sampler = TrainSampler(behaviors, npratio=4, batch_size=16, seed=1)
        single = gradients(copy.deepcopy(model), next(sampler.epoch(0)), news)
        share = next(sampler.epoch(0, world.rank, world.size))
        differences = {}
        for mode in ("shared", "own", "dense"):
            ranked = copy.deepcopy(model)
            ranked.news_sharing = sharing if mode != "own" else None
            # min_weights=0: the tiny data's tables are below the trainer's threshold. With news sharing
            # the model declares each step's rows of its word and entity tables.
            wrap = DistributedDataParallel if mode == "dense" else (lambda m: data_parallel(m, min_weights=0))
            declared.clear()
            several = gradients(wrap(ranked), share, news)
            assert several.keys() == single.keys(), (name, mode)
            differences[mode] = max(float((several[k] - single[k]).abs().max()) for k in single)
            differences[f"{mode} declared rows"] = sum(declared)
        result[label] = differences
    if world.is_main:
        out.write_text(json.dumps(result))
    leave(world)


if __name__ == "__main__":
    main()
