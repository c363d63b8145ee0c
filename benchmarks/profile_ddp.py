"""Where a DDP rank's training step goes: NRMS with the trainer's DDP set-up (``data_parallel`` and
``train.share_news``), one thread per rank, and gloo's collectives timed alone.

    python -m torch.distributed.run --standalone --nproc_per_node 2 benchmarks/profile_ddp.py \\
        --data ../shared/data/mlsmall_mind --batch-size 32

Every rank timestamps its steps on the system-wide monotonic clock at the step's start, on entering
and leaving the exchange of news vectors (forward) and of their gradients (backward), at the end of
the backward pass (DDP's gradient all-reduce included) and after the optimizer. Rank 0 prints:
- each phase's mean per rank, in ms;
- for each exchange, how long after the later rank arrived the first rank left (the transfer
  itself) and how far apart the ranks arrived (the earlier one waits);
- gloo's all_reduce and all_to_all of several sizes, from the later rank's arrival to the first
  return, with the ranks arriving together and after ~20 ms of compute each (as inside a step),
  with the commit and the machine.
Random ``--word-dim`` word vectors (speed does not depend on their values); ``--batch-size`` is the global batch.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_news import commit, machine  # noqa: E402
from harness import setup  # noqa: E402
import newsrank.core.distributed as D  # noqa: E402

PHASES = ("encode news", "exchange vectors", "user side, forward and back", "exchange gradients",
          "news backward + all-reduce", "optimizer")


def step_timestamps(args: argparse.Namespace, world: D.World) -> torch.Tensor:
    """[steps, 7] monotonic timestamps (s) of this rank's timed steps (``world``: ``join``'s)."""
    from newsrank.data.batching import NewsFeatures, TrainSampler

    run = setup("nrms", args.data, args.word_dim, dev_impressions=1)
    model = run.model
    ddp = D.data_parallel(model)
    model.news_sharing = D.news_sharing(world)  # as the trainer sets both up
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)
    news = NewsFeatures.from_table(run.train_table)
    marks: dict[str, float] = {}
    # the exchange's autograd function (``_GatherShares`` in checkouts before 2074fbe, timed with PYTHONPATH)
    exchange = getattr(D, "_ExchangeRows", None) or D._GatherShares
    forward, backward = exchange.forward, exchange.backward

    def timed_forward(ctx, *a):
        marks["in"] = time.monotonic()
        out = forward(ctx, *a)
        marks["out"] = time.monotonic()
        return out

    def timed_backward(ctx, *a):
        marks["grad in"] = time.monotonic()
        out = backward(ctx, *a)
        marks["grad out"] = time.monotonic()
        return out

    exchange.forward, exchange.backward = staticmethod(timed_forward), staticmethod(timed_backward)
    try:
        batches = TrainSampler(run.train_behaviors, 4, args.batch_size, 42).epoch(0, world.rank, world.size)
        rows = []
        for i in range(args.warmup + args.steps):
            start = time.monotonic()
            logits = ddp(next(batches), news)  # [b, 1 + npratio]
            loss = F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            backward_end = time.monotonic()
            optimizer.step()
            if i >= args.warmup:
                rows.append([start, marks["in"], marks["out"], marks["grad in"], marks["grad out"], backward_end,
                             time.monotonic()])
    finally:
        exchange.forward, exchange.backward = staticmethod(forward), staticmethod(backward)
    return torch.tensor(rows, dtype=torch.float64)


def collective_ms(rank: int, size: int) -> list[tuple[float, ...]]:
    """(MB, all_reduce: ranks arriving together, after compute; all_to_all: the same) in ms, each
    from the later rank's arrival to the first rank's return (the transfer, without waiting)."""
    rng = random.Random(rank)
    work = torch.randn(300, 300)

    def compute(ms: float) -> None:
        until = time.monotonic() + ms / 1e3
        while time.monotonic() < until:
            work @ work

    def timed(call, after_compute: bool, n: int = 30) -> float:
        for _ in range(3):
            call()
        spans = []
        for _ in range(n):
            if after_compute:
                compute(20 + 4 * rng.random())  # the ranks arrive a little apart, as in a step
            else:
                dist.barrier()  # together
            started = time.monotonic()
            call()
            spans.append([started, time.monotonic()])
        spans = torch.tensor(spans, dtype=torch.float64)  # [n, 2]
        both = [torch.empty_like(spans) for _ in range(size)]
        dist.all_gather(both, spans)
        both = torch.stack(both)  # [size, n, 2]
        return float((both[..., 1].amin(0) - both[..., 0].amax(0)).mean() * 1e3)

    rows = []
    for mb in (0.4, 1.2, 4.8):
        x = torch.randn(int(mb * 1e6 / 4))
        out = torch.empty_like(x)
        rows.append((mb, timed(lambda: dist.all_reduce(x), False), timed(lambda: dist.all_reduce(x), True),
                     timed(lambda: dist.all_to_all_single(out, x), False),
                     timed(lambda: dist.all_to_all_single(out, x), True)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "mlsmall_mind")
    parser.add_argument("--batch-size", type=int, default=32, help="the global batch")
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--word-dim", type=int, default=50, help="random word vectors of this size (GloVe 6B 50-d's "
                        "by default; 300 is the packaged config's, a MIND vocabulary's table then goes by rows)")
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    world = D.join(torch.device("cpu"))
    rank, size = world.rank, world.size
    if size != 2:
        raise SystemExit("profile_ddp.py compares two ranks: run it with --nproc_per_node 2")
    stamps = step_timestamps(args, world)  # [steps, 7]
    both = [torch.empty_like(stamps) for _ in range(size)]
    dist.all_gather(both, stamps)
    comm = collective_ms(rank, size)
    if rank == 0:
        print(f"NRMS, global batch {args.batch_size}, {args.steps} steps, 2 ranks x 1 thread")
        print("\n| phase | rank 0 ms | rank 1 ms |\n|---|---|---|")
        for j, phase in enumerate(PHASES):
            print(f"| {phase} | " + " | ".join(f"{float((s[:, j + 1] - s[:, j]).mean() * 1e3):.1f}" for s in both) + " |")
        print("| step | " + " | ".join(f"{float((s[:, 6] - s[:, 0]).mean() * 1e3):.1f}" for s in both) + " |")
        print("\n| exchange | transfer after the later rank arrived, ms | arrival gap, ms |\n|---|---|---|")
        for name, j in (("vectors (forward)", 1), ("gradients (backward)", 3)):
            a, b = both
            transfer = torch.minimum(a[:, j + 1], b[:, j + 1]) - torch.maximum(a[:, j], b[:, j])
            print(f"| {name} | {float(transfer.mean() * 1e3):.2f} | {float((a[:, j] - b[:, j]).abs().mean() * 1e3):.2f} |")
        print("\n| MB | all_reduce | after compute | all_to_all | after compute |\n|---|---|---|---|---|")
        for mb, *ms in comm:
            print(f"| {mb} | " + " | ".join(f"{m:.2f}" for m in ms) + " |")
        print(f"\nPrinted by `python -m torch.distributed.run --standalone --nproc_per_node 2 benchmarks/profile_ddp.py "
              f"{' '.join(sys.argv[1:])}` at commit {commit(Path(D.__file__).resolve().parents[2])} on {machine()}.")
    D.leave(world)


if __name__ == "__main__":
    main()
