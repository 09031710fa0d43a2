"""How many threads the torch engines' steps run on, chosen from the size of a step's matmuls.

torch splits a large op between its threads, which then wait for each other at a barrier before the
next op. When another process holds a core, that barrier waits for a thread the scheduler has put
aside, once per op: a step of many small ops then runs many times slower on two threads than on one.
Only ops large enough to dwarf the barrier gain from more threads, so the rule looks at the size of
a step's matmuls (its largest ops), on average.

`python benchmarks/threads.py` measures both thread counts per shape, on the machine as it is and
beside a CPU-bound neighbour (its table is in benchmarks/README.md). On the shared 2-core machine this
project runs on, one thread is faster than two at every shape of that table, from the lecture's MLP (0.2 M
multiply-adds a matmul: 6-18x faster) through WaveNets and transformers (1-17 M: 3-39x) to an
8192 x 1024 MLP (239 M: 1.4-1.7x), the gap shrinking as the products grow. More threads are left to
steps whose matmuls are larger still, where splitting a product costs little even beside other work
(the trend above) and can pay on an idle machine; --threads N (or OMP_NUM_THREADS) chooses otherwise.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch.overrides import TorchFunctionMode

ALL_CORES_FROM = 1 << 28  # multiply-adds a matmul, on average, from which a step runs on every core

MATMULS = frozenset({"matmul", "__matmul__", "mm", "bmm"})  # the products the models' forwards make


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@dataclass
class StepSize:
    """The matmuls of one forward step. The backward makes twice as many multiply-adds, in products of
    the same sizes (each product's two gradients)."""

    matmuls: int = 0  # how many
    madds: int = 0  # their multiply-adds, in all

    def per_matmul(self) -> float:
        return self.madds / max(1, self.matmuls)


class _CountMatmuls(TorchFunctionMode):
    """Counts the matmuls made while it is active, and their multiply-adds: out.numel() x the inner size."""

    def __init__(self):
        super().__init__()
        self.size = StepSize()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.__name__ in MATMULS:
            self.size.matmuls += 1
            self.size.madds += out.numel() * args[0].shape[-1]
        return out


@torch.no_grad()
def step_size(model, Xb: torch.Tensor, Yb: torch.Tensor) -> StepSize:
    """The matmuls of the model's forward on this minibatch (one forward, run for the count)."""
    with _CountMatmuls() as count:
        model.forward(Xb, Yb)
    return count.size


def choose_threads(size: StepSize, available: int | None = None) -> int:
    """One thread for a step whose matmuls average fewer than ALL_CORES_FROM multiply-adds; every core
    for one whose matmuls are larger."""
    available = cores() if available is None else available
    return 1 if size.per_matmul() < ALL_CORES_FROM else max(1, available)


def explain(size: StepSize) -> str:
    """Why choose_threads chose as it did, in one phrase."""
    side = "under" if size.per_matmul() < ALL_CORES_FROM else "over"
    return (f"the forward's {size.matmuls} matmuls average {size.per_matmul() / 1e6:.1f} M multiply-adds, {side} "
            f"the {ALL_CORES_FROM / 1e6:.0f} M from which more threads pay (engines/threads.py)")
