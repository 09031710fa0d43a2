"""How a training step's gradients are computed.

- manual:   the model's hand-written backward, eager torch, no autograd graph at all.
- autograd: the same forward, `loss.backward()` for the gradients (the reference).
- fast:     the whole step in compiled C (+ BLAS) on the CPU, CUDA graphs on a GPU.
- compiled: the manual engine's forward, backward and update traced into one graph, compiled by inductor.
- user:     a learner's backward(...) (exercise 4), judged by the grader as it trains (`--backward FILE`).

Every engine takes the minibatch as indices into the training set, so that one random stream
drives them all and their runs can be compared step by step. base.py says what an engine offers;
a new engine is one file, a row of ENGINES and its name in ninjagrad/choices.py.
"""
from __future__ import annotations

import torch

from ..distributed import DataParallel
from ..errors import UsageError
from ..models import Model
from ..optim import Optimizer
from .autograd import AutogradEngine
from .base import Engine
from .compiled import CompiledEngine
from .data_parallel import DataParallelEngine
from .fast import FastEngine
from .fast_cuda import FastCUDAEngine
from .manual import ManualEngine
from .reference import autograd_loss_and_grads
from .user import UserEngine

ENGINES: dict[str, type[Engine]] = {"manual": ManualEngine, "autograd": AutogradEngine, "fast": FastEngine,
                                    "compiled": CompiledEngine}
ON_CUDA = {"fast": FastCUDAEngine}  # the engine that `--engine NAME` is on a CUDA device, where it differs


def make_engine(name: str, model: Model, Xtr: torch.Tensor, Ytr: torch.Tensor, optimizer: Optimizer | None = None,
                *, backward: str | None = None, backward_timeout: float = 60.0,
                dp: DataParallel | None = None) -> Engine:
    """The engine a run trains with: ENGINES[name] (its CUDA variant on a CUDA device); the learner's
    backward(...) in the file `backward` when one is given (name "user"), each call of it limited to
    `backward_timeout` seconds; wrapped for data parallel when `dp` (a torchrun launch) is given."""
    if dp is not None and (backward is not None or name != "manual"):
        raise UsageError(f"--engine {name}: data-parallel runs all-reduce the manual engine's gradients; "
                         "use --engine manual")
    if backward is not None:
        engine = UserEngine(model, Xtr, Ytr, optimizer, path=backward, time_limit=backward_timeout)
    elif model.device.type == "cuda" and name in ON_CUDA:
        engine = ON_CUDA[name](model, Xtr, Ytr, optimizer)
    else:
        engine = ENGINES[name](model, Xtr, Ytr, optimizer)
    return engine if dp is None else DataParallelEngine(engine, dp)


__all__ = ["ENGINES", "Engine", "ManualEngine", "AutogradEngine", "FastEngine", "FastCUDAEngine", "CompiledEngine",
           "UserEngine", "DataParallelEngine", "make_engine", "autograd_loss_and_grads"]
