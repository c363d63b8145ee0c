"""A large lookup table under DDP: DDP's own bucketed all-reduce against newsrank's all-reduce of
the touched rows only (``newsrank.core.distributed.data_parallel``), found in the gradient or
declared (as a news model does under news sharing), two ranks, one thread each.

    python -m torch.distributed.run --standalone --nproc_per_node 2 benchmarks/bench_ddp_tables.py \\
        --rows 70000 --dim 300 --touched 2000

The model is a [rows, dim] embedding read at ``--touched`` random rows per step (half on each rank)
and a 1.3M-weight MLP over them; printed: the median time of a step's backward pass with its
all-reduces, twice each way, with the commit and the machine (rank 0).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_news import commit, machine  # noqa: E402
from newsrank.core.distributed import data_parallel  # noqa: E402


class TableModel(nn.Module):
    def __init__(self, rows: int, dim: int):
        super().__init__()
        self.table = nn.Embedding(rows, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 1000), nn.ReLU(), nn.Linear(1000, 1000))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.table(ids)).sum()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=70000)
    parser.add_argument("--dim", type=int, default=300)
    parser.add_argument("--touched", type=int, default=2000, help="rows read per step, all ranks together")
    parser.add_argument("--steps", type=int, default=25, help="timed steps per run (after 5 warm-up ones)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, size = dist.get_rank(), dist.get_world_size()
    medians: dict[str, list[float]] = {}
    ways = ("DDP's buckets", "touched rows", "declared rows")
    for way in ways * 2:
        torch.manual_seed(0)
        model = TableModel(args.rows, args.dim)
        wrapped = (DistributedDataParallel(model, static_graph=True) if way == "DDP's buckets"
                   else data_parallel(model, min_weights=0))
        draws = torch.Generator().manual_seed(0)  # every rank draws every rank's ids: each knows the union
        times = []
        for _ in range(args.steps + 5):
            every = torch.randint(0, args.rows, (args.touched // size * size,), generator=draws)
            ids = every.view(size, -1)[rank]
            if way == "declared rows":
                model.table.row_sync.declared = torch.unique(every)
            model.zero_grad(set_to_none=True)
            dist.barrier()
            started = time.perf_counter()
            wrapped(ids).backward()
            times.append(time.perf_counter() - started)
        timed = sorted(times[5:])
        medians.setdefault(way, []).append(timed[len(timed) // 2] * 1e3)
    if rank == 0:
        print(f"| [{args.rows}, {args.dim}] table, ~{args.touched} rows touched a step | median ms a step (two runs) |")
        print("|---|---|")
        for way, values in medians.items():
            print(f"| {way} | {' / '.join(f'{v:.1f}' for v in values)} |")
        print(f"Printed by `python -m torch.distributed.run --standalone --nproc_per_node {size} "
              f"benchmarks/bench_ddp_tables.py {' '.join(sys.argv[1:])}` at commit {commit()} on {machine()}.")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
