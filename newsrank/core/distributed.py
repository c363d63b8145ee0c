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


def join(device: torch.device) -> World:
    """The world this process belongs to; joins the process group when ``torchrun`` started it.
    ``device``: the run's device; under torchrun a CUDA device becomes ``cuda:LOCAL_RANK``."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World(device=device)
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
