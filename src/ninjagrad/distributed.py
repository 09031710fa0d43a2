"""Data-parallel training on torch.distributed, launched with torchrun.

    torchrun --nproc-per-node 2 -m ninjagrad train --steps 20000

Every process draws the same global minibatch from the same seeded generator and takes its own
slice of it. Batchnorm's statistics and the loss's mean are all-reduced inside the forward and
backward (see ops.batch_sum), so they cover the global batch, and the hand-written parameter
gradients are summed across processes with one all-reduce per step. Each process then applies the
same update, so the parameters stay identical everywhere and the run does not depend on how many
processes share the batch. Only rank 0 writes the run folder and prints.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import UsageError


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@dataclass
class DataParallel:
    rank: int  # this process's index, 0 .. world_size-1
    world_size: int  # how many processes share each batch
    device: str  # where this process computes

    @classmethod
    def from_env(cls, device: str) -> DataParallel | None:
        """Join the process group that torchrun describes in the environment; None when run alone."""
        if not launched_by_torchrun():
            return None
        if not dist.is_initialized():
            backend = "nccl" if device.startswith("cuda") else "gloo"
            dist.init_process_group(backend=backend)
        rank, world = dist.get_rank(), dist.get_world_size()
        if device.startswith("cuda"):
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            device = f"cuda:{local}"
        return cls(rank, world, device)

    @property
    def is_writer(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum `t` across processes, in place; returns it."""
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def shard(self, ix: torch.Tensor) -> torch.Tensor:
        """This process's contiguous slice of the global minibatch."""
        b = ix.shape[0] // self.world_size
        return ix[self.rank * b:(self.rank + 1) * b]

    def any(self, flag: bool) -> bool:
        """True on every process when it is true on any (a signal seen by one stops all together)."""
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        return self.all_reduce_sum(t).item() > 0

    def broadcast(self, obj):
        """Rank 0's value of a small picklable object, on every process."""
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def check_batch(self, batch_size: int):
        if batch_size % self.world_size:
            raise UsageError(f"--batch-size {batch_size}: a data-parallel run splits each batch evenly; "
                             f"use a multiple of the {self.world_size} processes")
        if batch_size // self.world_size < 1:
            raise UsageError(f"--batch-size {batch_size}: fewer examples than the {self.world_size} processes")

    def close(self):
        if dist.is_initialized():
            dist.destroy_process_group()
