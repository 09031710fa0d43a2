"""How a training step's gradients are computed.

- manual:   the model's hand-written backward, eager torch, no autograd graph at all.
- autograd: the same forward, `loss.backward()` for the gradients (the reference).
- fast:     the whole step in compiled C (+ BLAS) on the CPU, CUDA graphs on a GPU.
- compiled: the manual engine's forward, backward and update traced into one graph, compiled by inductor.

Every engine takes the minibatch as indices into the training set, so that one random stream
drives them all and their runs can be compared step by step.
"""
from __future__ import annotations

from .autograd import AutogradEngine, autograd_loss_and_grads
from .base import Engine
from .compiled import CompiledEngine
from .fast import make_fast_engine
from .manual import ManualEngine

ENGINES = {"manual": ManualEngine, "autograd": AutogradEngine, "fast": make_fast_engine}
ENGINES["compiled"] = CompiledEngine  # forward + hand-written backward + update as one compiled graph


def make_engine(name: str, model, Xtr, Ytr, optimizer=None) -> Engine:
    return ENGINES[name](model, Xtr, Ytr, optimizer)


__all__ = ["ENGINES", "Engine", "ManualEngine", "AutogradEngine", "make_engine", "autograd_loss_and_grads"]
