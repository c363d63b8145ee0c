"""Several processes through torch.distributed: what a trainer needs to know and do.

A run started by ``torchrun`` (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` in the environment) joins
the process group (gloo on CPU, NCCL on CUDA); any other run is a world of one and nothing here
does anything. Rank 0 is the one that writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def gather(self, array: np.ndarray) -> list[np.ndarray]:
        """Every rank's ``array`` (in rank order), on every rank."""
        if not self.distributed:
            return [array]
        out: list = [None] * self.size
        dist.all_gather_object(out, array)
        return out

    def shard(self, count: int) -> tuple[int, int]:
        """This rank's contiguous share [lo, hi) of ``count`` items (sizes differ by at most one)."""
        bounds = np.linspace(0, count, self.size + 1).round().astype(int)
        return int(bounds[self.rank]), int(bounds[self.rank + 1])


class _ExchangeRows(torch.autograd.Function):
    """Rows of every rank's share sent to the ranks that read them, with a gradient: one
    all-to-all each way (gloo's all-to-all with uneven splits).

    Forward: this rank sends rows ``send_index`` of its ``share`` [S, D], the first ``send_counts[0]``
    to rank 0 and so on, and returns what it receives [sum(recv_counts), D], rank 0's rows first.
    Backward: each received row's gradient goes back to the rank that sent it, and the sender adds
    up the gradients of each of its rows (a row may go to several ranks)."""

    @staticmethod
    def forward(ctx, share: torch.Tensor, send_index: torch.Tensor, send_counts: list[int], recv_counts: list[int],
                group) -> torch.Tensor:
        received = share.new_empty(sum(recv_counts), *share.shape[1:])  # [M, D]
        dist.all_to_all_single(received, share.index_select(0, send_index), recv_counts, send_counts, group=group)
        ctx.save_for_backward(send_index)
        ctx.shape, ctx.send_counts, ctx.recv_counts, ctx.group = share.shape, send_counts, recv_counts, group
        return received

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (send_index,) = ctx.saved_tensors
        returned = grad.new_empty(len(send_index), *grad.shape[1:])  # [sum(send_counts), D]
        dist.all_to_all_single(returned, grad.contiguous(), ctx.send_counts, ctx.recv_counts, group=ctx.group)
        return grad.new_zeros(ctx.shape).index_add_(0, send_index, returned), None, None, None, None


@dataclass(frozen=True)
class NewsSharing:
    """Training under DDP with each distinct news item of a batch encoded by one rank only.

    Without it every rank encodes all the distinct news of its own share of the batch; the shares
    overlap (on mlsmall_mind a 16-impression half of a 32-impression batch holds 59% of the batch's
    distinct news), so two ranks did 18% of the news encoding twice. With it the whole batch's
    distinct news, ordered by text length, is cut into ``size`` consecutive runs of about equal cost
    (``cuts``), rank r encodes run r, and each rank receives the vectors it reads and sends their
    gradients back (``exchange``). Consecutive runs, not every size-th item, because each length group costs a
    fixed ~1 ms (NRMS, forward and backward) however few items it holds: a run holds about 1 / size
    of the groups. The gradients equal a single process's on the whole batch; only dropout draws differ.
    """

    rank: int
    size: int
    group: object  # a process group of its own, so that its collectives never interleave with DDP's

    def cuts(self, costs: torch.Tensor) -> list[int]:
        """[size + 1] bounds of the ranks' runs of items whose estimated costs are ``costs`` [U]
        (in the order the runs take them): run r is items cuts[r]:cuts[r + 1]."""
        total = costs.cumsum(0)  # [U]
        if not len(total):
            return [0] * (self.size + 1)
        targets = total[-1] * torch.arange(1, self.size, device=costs.device) / self.size  # [size - 1]
        inner = torch.searchsorted(total, targets, right=True).tolist()
        return [0, *inner, len(costs)]

    def exchange(self, share: torch.Tensor, order: torch.Tensor, cuts: list[int], needed: list[torch.Tensor]
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """The vectors this rank reads, from the ranks that encoded them.

        Of U items, rank r encoded ``order[cuts[r]:cuts[r + 1]]`` (``share`` [S, D] on this rank, in
        that order); ``needed[q]`` [N_q] are the sorted items rank q reads (every rank passes the same
        ``order``, ``cuts`` and ``needed``). A rank sends each other rank only the items that one
        reads: on mlsmall_mind a 16-impression half of a 32-impression batch reads 59% of the batch's
        distinct news, so this moves about half of what stacking every rank's whole share did.
        Returns ([N, D] vectors of this rank's ``needed`` items, grouped by the rank that encoded
        them, and [U] long: each item's row among them, -1 for items this rank does not read)."""
        count = len(order)
        run_of = torch.repeat_interleave(torch.arange(self.size, device=order.device),
                                         torch.tensor([hi - lo for lo, hi in zip(cuts, cuts[1:])], device=order.device))
        owner = torch.empty_like(order)  # [U]: the rank that encoded each item
        owner[order] = run_of
        position = torch.empty_like(order)  # [U]: each item's row in its owner's share
        position[order] = torch.arange(count, device=order.device) - torch.tensor(cuts[:-1], device=order.device)[run_of]
        sent = [items[owner[items] == self.rank] for items in needed]  # what this rank sends rank q, sorted
        mine = needed[self.rank]
        received = [mine[owner[mine] == r] for r in range(self.size)]  # what rank r sends this one, in r's order
        vectors = _ExchangeRows.apply(share, position[torch.cat(sent)], [len(x) for x in sent],
                                      [len(x) for x in received], self.group)  # [N, D]
        row = torch.full((count,), -1, dtype=torch.long, device=order.device)  # [U]
        row[torch.cat(received)] = torch.arange(len(mine), device=order.device)
        return vectors, row


class _TouchedRowsAllReduce:
    """Averages a lookup table's gradient [V, d] over the ranks, sending only the rows some rank's
    batch touched (a post-accumulate-grad hook of the table's weight, which DDP is told to leave alone).

    A batch reads few rows of a table: a MIND vocabulary with 300-d vectors is a 21M-float
    gradient, and LSTUR's and NPA's user tables grow with the users (938k x 400 = 375M floats on
    the MIND-large-sized set, 1.5 GB, that DDP would copy into a bucket and all-reduce every step).
    Every other row's gradient is exactly zero on every rank, so the all-reduce of the union of the
    touched rows gives exactly the dense average.

    The union comes from ``declared`` when the model set it for this step ([R] long, the same on
    every rank: the rows the whole batch may read, ``NewsRecModel.declare_table_rows`` under news
    sharing); otherwise each rank finds its touched rows in the gradient and one small all-reduce
    of a byte per row unites them."""

    def __init__(self, group, size: int):
        self.group, self.size = group, size
        self.declared: torch.Tensor | None = None

    def __call__(self, weight: torch.Tensor) -> None:
        grad = weight.grad  # [V, d]
        rows, self.declared = self.declared, None
        if rows is None:
            # A row is touched iff its largest or smallest entry is not 0: two reductions without a
            # temporary (~23 ms for [70k, 300] on one CPU thread, against ~51 ms for ne(0).any).
            touched = ((grad.amax(dim=1) != 0) | (grad.amin(dim=1) != 0)).to(torch.uint8)  # [V]
            dist.all_reduce(touched, op=dist.ReduceOp.MAX, group=self.group)  # the union over the ranks
            rows = touched.nonzero().squeeze(1)  # [R], the same on every rank
        summed = grad.index_select(0, rows).div_(self.size)  # [R, d]
        dist.all_reduce(summed, group=self.group)
        grad.index_copy_(0, rows, summed)  # the untouched rows are zero on every rank: they stay so


#: lookup tables of fewer weights go through DDP's buckets with the rest. Two ranks on the 2-core
#: Xeon, median step (backward + all-reduce) with a [V, d] table and a 1.3M-weight MLP, ~1,500
#: rows touched, DDP's buckets vs by rows: 10,098 x 50 46 vs 49 ms (the extra small all-reduce
#: does not pay), 40,000 x 50 (2M weights) 55 vs 52 ms, 70,000 x 300 194 vs 125 ms. With the rows
#: declared (``benchmarks/bench_ddp_tables.py``, ~2,000 rows): 70,000 x 300 82-87 ms against 102-106
#: found and 164-168 in DDP's buckets; 10,098 x 50 39.0-39.5 against 39.0-43.7 and 39.4-41.0, no gain.
TOUCHED_ROWS_MIN_WEIGHTS = 2**21


def data_parallel(model: torch.nn.Module, min_weights: int = TOUCHED_ROWS_MIN_WEIGHTS
                  ) -> torch.nn.parallel.DistributedDataParallel:
    """``model`` under DDP (a static graph, since a model may leave parameters unused), except its
    trained lookup tables of at least ``min_weights`` weights: DDP leaves them alone, and each is
    averaged over the ranks by rows (``_TouchedRowsAllReduce``, the module's ``row_sync``, whose rows
    a news model declares under news sharing) as soon as its gradient is complete, on a process
    group of its own (those all-reduces run inside DDP's backward). Their weights are broadcast
    from rank 0, as DDP does with the others. Every rank must read such a table in every step (the
    news models do), or the ranks' collectives would not pair up."""
    tables = {name: module for name, module in model.named_modules()
              if isinstance(module, torch.nn.Embedding) and module.weight.requires_grad
              and module.weight.numel() >= min_weights}
    if tables:
        group = dist.new_group(backend=dist.get_backend())
        torch.nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
            model, [f"{name}.weight" for name in tables])
        for module in tables.values():
            with torch.no_grad():
                dist.broadcast(module.weight, 0, group=group)
            module.row_sync = _TouchedRowsAllReduce(group, dist.get_world_size())
            module.weight.register_post_accumulate_grad_hook(module.row_sync)
    return torch.nn.parallel.DistributedDataParallel(model, static_graph=True)


def news_sharing(world: World) -> NewsSharing | None:
    """The trainer's ``NewsSharing`` for ``world`` (None for a single process)."""
    if not world.distributed:
        return None
    backend = "nccl" if world.device.type == "cuda" else "gloo"
    return NewsSharing(world.rank, world.size, dist.new_group(backend=backend))


def _physical_cores(cpus: list[int]) -> list[list[int]]:
    """``cpus`` grouped by the physical core they run on (hyperthread siblings together), in the
    order of each group's first CPU; each CPU alone where Linux's topology files are missing."""
    groups: dict[tuple, list[int]] = {}
    for cpu in cpus:
        topology = f"/sys/devices/system/cpu/cpu{cpu}/topology"
        try:
            with open(f"{topology}/physical_package_id") as package, open(f"{topology}/core_id") as core:
                key = (int(package.read()), int(core.read()))
        except (OSError, ValueError):
            key = ("cpu", cpu)
        groups.setdefault(key, []).append(cpu)
    return sorted(groups.values())


def pin_to_cores() -> list[int] | None:
    """Puts this process of a machine's ``LOCAL_WORLD_SIZE`` (torchrun's) on its own equal share of
    the physical cores it may use (with their hyperthreads), and returns those CPUs (None: fewer
    cores than processes, or no ``sched_setaffinity``). Threads started afterwards (gloo's, torch's)
    inherit the share, so it is called before the process group starts.

    Unpinned, the OS moves the ranks and gloo's threads between the cores. Two ranks x one thread on
    the 2-core Xeon, NRMS at a global batch of 32: `profile_ddp.py`, three interleaved pairs, 87.2-88.7
    ms a step pinned against 90.6-91.9 unpinned (the exchanges' transfers and waits most of it);
    `newsrank train --nproc 2`, 600 batches, five interleaved pairs, 358.8-373.0 samples/s pinned
    (mean 368.7) against 354.7-360.4 (mean 358.5)."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_size = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    cores = _physical_cores(sorted(os.sched_getaffinity(0)))
    per = len(cores) // local_size
    if per < 1:
        return None
    mine = sorted(cpu for core in cores[local_rank * per : (local_rank + 1) * per] for cpu in core)
    os.sched_setaffinity(0, mine)
    return mine


def join(device: torch.device, pin_cores: bool = True) -> World:
    """The world this process belongs to; joins the process group when ``torchrun`` started it.
    ``device``: the run's device; under torchrun a CUDA device becomes ``cuda:LOCAL_RANK``.
    ``pin_cores``: on the CPU, first pin each process of a machine to its own cores (``pin_to_cores``)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World(device=device)
    if pin_cores and device.type == "cpu" and not dist.is_initialized():
        pin_to_cores()
    if device.type == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if local_rank >= torch.cuda.device_count():  # NCCL cannot put two ranks on one GPU
            raise ValueError(f"process {local_rank} of this machine has no GPU of its own ({torch.cuda.device_count()} "
                             "visible): start at most one process per GPU, or pass --set device=cpu")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return World(rank=dist.get_rank(), size=dist.get_world_size(), device=device)


def leave(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()
