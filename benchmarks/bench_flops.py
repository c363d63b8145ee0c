"""Achieved GFLOP/s of every news model against what this CPU reaches on a large fp32 matmul.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (matrix products, convolutions,
attention; elementwise work, gathers and softmaxes count zero), for one training step (forward +
backward) and for the evaluation of the first dev impressions (news encoding included); time is
wall time of the same work run again without the counter, one thread. A model far below the
matmul figure spends its time on what is not counted: small-matrix overheads, memory-bound
gathers and elementwise ops, Python.

    python benchmarks/bench_flops.py --data ../shared/data/mlsmall_mind --models nrms naml

Prints the matmul reference (1 and 2 threads), one row per model, the commit and the machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_news import commit, machine  # noqa: E402
from harness import setup  # noqa: E402


def matmul_gflops(threads: int, n: int = 2048, repeat: int = 5) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    started = time.perf_counter()
    for _ in range(repeat):
        a @ b
    return 2 * n ** 3 * repeat / (time.perf_counter() - started) / 1e9


def counted(fn) -> tuple[float, float]:
    """(GFLOP, seconds) of ``fn``: FLOPs counted on one run, time of a second run."""
    with FlopCounterMode(display=False) as counter:
        fn()
    started = time.perf_counter()
    fn()
    return counter.get_total_flops() / 1e9, time.perf_counter() - started


def model_rows(name: str, data: Path, impressions: int, word_dim: int) -> dict:
    from newsrank.data.batching import NewsFeatures, TrainSampler
    from newsrank.evaluate import score_behaviors

    run = setup(name, data, word_dim, impressions)
    config, model, dev_table, dev = run.config, run.model, run.dev_table, run.dev_behaviors
    train_table, train_behaviors = run.train_table, run.train_behaviors
    n = len(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr)
    news = NewsFeatures.from_table(train_table)
    batch = next(TrainSampler(train_behaviors, config.train.npratio, config.train.batch_size, 0).epoch(0))

    def step():
        loss = F.cross_entropy(model(batch, news), torch.zeros(len(batch.users), dtype=torch.long))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()
    train_gflop, train_s = counted(step)
    eval_gflop, eval_s = counted(lambda: score_behaviors(model, dev_table, dev, config.train.eval_batch_size))
    return {"model": name, "train_gflop": train_gflop, "train_s": train_s, "eval_gflop": eval_gflop,
            "eval_s": eval_s, "impressions": n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "mlsmall_mind")
    parser.add_argument("--models", nargs="+", default=["nrms", "lstur", "npa", "naml", "fum", "gru", "dkn", "fim"])
    parser.add_argument("--impressions", type=int, default=10 ** 9,
                        help="first N dev impressions evaluated (default all; FIM: at most 500)")
    parser.add_argument("--word-dim", type=int, default=50)
    args = parser.parse_args()
    one, two = matmul_gflops(1), matmul_gflops(2)
    print(f"fp32 2048^3 matmul: {one:.1f} GFLOP/s on 1 thread, {two:.1f} GFLOP/s on 2 threads")
    torch.set_num_threads(1)
    print("| model | train step GFLOP | train GFLOP/s | % of matmul | eval GFLOP / impression | eval GFLOP/s | % of matmul |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models:
        r = model_rows(name, args.data, min(args.impressions, 500) if name == "fim" else args.impressions,
                       args.word_dim)
        train_rate, eval_rate = r["train_gflop"] / r["train_s"], r["eval_gflop"] / r["eval_s"]
        print(f"| {name} | {r['train_gflop']:.2f} | {train_rate:.1f} | {100 * train_rate / one:.0f}% | "
              f"{r['eval_gflop'] / r['impressions']:.4f} | {eval_rate:.1f} | {100 * eval_rate / one:.0f}% |", flush=True)
    print(f"Printed by `python benchmarks/bench_flops.py {' '.join(sys.argv[1:])}` at commit {commit()} on {machine()}.")


if __name__ == "__main__":
    main()
