"""Where a training epoch's time goes, per news model: batch sampling, news encoding (each distinct
news once), the user side and scoring, the backward pass and the optimizer step; plus how many
distinct news a batch encodes. Timed by wrapping the model's own methods, over a fixed number of
batches after two warm-up ones, one thread.

    python benchmarks/profile_train.py --data ../shared/data/mlsmall_mind --batches 40

Prints one row per model (percent of the timed wall time, and ms per batch), the commit and the
machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_news import commit, machine  # noqa: E402
from harness import setup  # noqa: E402

PHASES = ("sample", "encode news", "user + score", "backward", "optimizer")


def profile(name: str, data: Path, batches: int, word_dim: int) -> tuple[dict, float, float]:
    from newsrank.data.batching import NewsFeatures, TrainSampler

    run = setup(name, data, word_dim, dev_impressions=1)
    config, model, table, behaviors = run.config, run.model, run.train_table, run.train_behaviors
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr)
    news = NewsFeatures.from_table(table)
    spent: dict[str, float] = defaultdict(float)
    distinct = []

    encode = model.encode_distinct

    def timed_encode(*args, **kwargs):
        started = time.perf_counter()
        out = encode(*args, **kwargs)
        spent["encode news"] += time.perf_counter() - started
        distinct.append(len(out[0]))
        return out

    model.encode_distinct = timed_encode
    batches_iter = TrainSampler(behaviors, config.train.npratio, config.train.batch_size, 0).epoch(0)
    total_started = None
    for i in range(batches + 2):
        if i == 2:
            spent.clear()
            distinct.clear()
            total_started = time.perf_counter()
        started = time.perf_counter()
        batch = next(batches_iter)
        spent["sample"] += time.perf_counter() - started
        started = time.perf_counter()
        logits = model(batch, news)
        loss = F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long))
        spent["forward"] += time.perf_counter() - started
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        spent["backward"] += time.perf_counter() - started
        started = time.perf_counter()
        optimizer.step()
        spent["optimizer"] += time.perf_counter() - started
    wall = time.perf_counter() - total_started
    spent["user + score"] = spent.pop("forward") - spent["encode news"]
    return spent, wall, sum(distinct) / len(distinct)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "mlsmall_mind")
    parser.add_argument("--models", nargs="+", default=["nrms", "lstur", "npa", "naml", "fum", "gru", "dkn", "fim"])
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--word-dim", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("| model | " + " | ".join(PHASES) + " | other | ms / batch | distinct news / batch |")
    print("|---" * (len(PHASES) + 4) + "|")
    for name in args.models:
        spent, wall, distinct = profile(name, args.data, min(args.batches, 10) if name == "fim" else args.batches,
                                        args.word_dim)
        n = min(args.batches, 10) if name == "fim" else args.batches
        cells = [f"{100 * spent[p] / wall:.0f}%" for p in PHASES]
        other = 100 * (wall - sum(spent[p] for p in PHASES)) / wall
        print(f"| {name} | " + " | ".join(cells) + f" | {other:.0f}% | {1000 * wall / n:.0f} | {distinct:.0f} |",
              flush=True)
    print(f"Printed by `python benchmarks/profile_train.py {' '.join(sys.argv[1:])}` at commit {commit()} on "
          f"{machine()}.")


if __name__ == "__main__":
    main()
