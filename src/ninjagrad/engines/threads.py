"""How many threads the torch engines' steps run on, chosen from the size of a step.

torch splits a large op between its threads, which then wait for each other at a barrier before the
next op. A step of the lecture's MLP is ~40 ops of a few microseconds each: a second thread saves
nothing there, and when another process holds a core the barrier waits for a thread the scheduler has
put aside, every op. Measured by `python benchmarks/threads.py` (its table is in benchmarks/README.md),
the lecture's step runs as fast on one thread as on two on a quiet 2-core machine and 10x faster on one
beside a busy neighbour. Only steps whose matmuls are large enough to share gain from more threads.
"""
from __future__ import annotations

import os

import torch
from torch.overrides import TorchFunctionMode

# Forward multiply-adds per step from which a step runs on every core; below it, on one. The figures
# behind it are in benchmarks/README.md (`python benchmarks/threads.py`).
ALL_CORES_FROM = 50_000_000

MATMULS = frozenset({"matmul", "__matmul__", "mm", "bmm"})  # the products the models' forwards make


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class _CountMatmuls(TorchFunctionMode):
    """Adds up the multiply-adds of every matmul made while it is active: out.numel() x the inner size."""

    def __init__(self):
        super().__init__()
        self.madds = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.__name__ in MATMULS:
            self.madds += out.numel() * args[0].shape[-1]
        return out


@torch.no_grad()
def forward_madds(model, Xb: torch.Tensor, Yb: torch.Tensor) -> int:
    """Multiply-adds of the model's forward on this minibatch (its matmuls; the rest is small beside
    them). The backward makes twice as many: each product's two gradients are products of the same size."""
    with _CountMatmuls() as count:
        model.forward(Xb, Yb)
    return count.madds


def choose_threads(madds: int, available: int | None = None) -> int:
    """One thread for a step whose forward makes fewer than ALL_CORES_FROM multiply-adds; every core
    for a larger one."""
    available = cores() if available is None else available
    return 1 if madds < ALL_CORES_FROM else max(1, available)
