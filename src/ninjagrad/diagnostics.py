"""A training run's health, as makemore part 3 draws it, recorded every K steps (`--diagnostics-every K`).

A recorded step goes through `Recorder.step`: the model's forward and hand-written backward run on the
step's own minibatch with the parameters as they are, then the engine takes the step, and the record holds

- per nonlinearity the model names (`Model.activations`: the MLP's tanh, each WaveNet level's tanh, each
  transformer block's GELU): a histogram of its output, its mean, std and saturated fraction; a histogram
  of the loss's gradient with respect to that output, its mean and std;
- per parameter: a histogram of its gradient, std(grad) / std(data), and log10(std(update) / std(data)) of
  the update the step made: the parameters after it minus before (AdamW's update is not lr x grad).

Saturated: a tanh output beyond ±0.97 (makemore's threshold), where its slope 1 - t^2 is below 0.059; a
GELU input below -2.26, its flat negative tail, where its slope is below 0.059 in magnitude as well.

Whose gradients: the model's own backward, the manual engine's code, computed beside the step; the
fast, compiled and autograd engines are held to its numbers by the test suite, and the step they take
is their own. With `--backward FILE` (exercise 4) the parameter gradients are the learner's backward(...),
and the tanh layer's is the learner's `dh`, read from the function's frame as it returns (the model's
when the function has no `dh` of h's shape). Steps between recorded ones run as they would without.

Histograms have BINS equal bins: a tanh output's over [-1, 1], a GELU output's over its own [min, max],
a gradient's over [-m, m], m its largest magnitude; each record keeps its span. The records go into the
run's checkpoints (a resumed run continues them) and into diagnostics.npz, arrays by name (R records,
L layers, P parameters; plot.py reads them and draws diagnostics.png):

    steps (R,)  layers, kinds, sources (L,)  params, shapes, matrix (P,)
    act_counts, grad_counts (R, L, BINS)  act_range, grad_range (R, L, 2)
    act_mean, act_std, act_saturated, grad_mean, grad_std (R, L)
    param_counts (R, P, BINS)  param_range (R, P, 2)  param_grad_std, grad_data, update_data (R, P)
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from .checkpoint import atomic_write
from .engines import Engine, UserEngine
from .models import Model
from .models.base import Activation

# Equal-width bins of every histogram; odd, so that a symmetric span has 0 mid-bin: a gradient's exact
# zeros (the embedding rows of characters missing from the batch) lie on no bin edge.
BINS = 51
TANH_SATURATED = 0.97  # |tanh| beyond it: slope below 1 - 0.97^2 = 0.059
GELU_SATURATED = -2.26  # GELU inputs below it: |slope| below 0.059, output within 0.03 of zero
LEARNER_NAMES = {"tanh": "dh"}  # exercise 4's forward names the MLP's tanh output h; its gradient is dh

LAYER_FIELDS = ("act_counts", "act_range", "act_mean", "act_std", "act_saturated",
                "grad_counts", "grad_range", "grad_mean", "grad_std")
PARAM_FIELDS = ("param_counts", "param_range", "param_grad_std", "grad_data", "update_data")


# --- what one record holds ------------------------------------------------------------------------

def finite(v: torch.Tensor) -> torch.Tensor:
    """v's values as one float64 row on the CPU, the non-finite ones (a diverging step's) left out."""
    v = v.detach().reshape(-1).double().cpu()
    return v if torch.isfinite(v).all() else v[torch.isfinite(v)]


def symmetric_span(v: torch.Tensor) -> tuple[float, float]:
    """[-m, m], m the largest magnitude in v ([-1, 1] when v is empty or all 0)."""
    m = v.abs().max().item() if v.numel() else 0.0
    return (-m, m) if m > 0 else (-1.0, 1.0)


def own_span(v: torch.Tensor) -> tuple[float, float]:
    """[min, max] of v, widened by 1/2 each way when v holds one value (or none)."""
    lo, hi = (t.item() for t in torch.aminmax(v)) if v.numel() else (0.0, 0.0)
    return (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)


def tanh_span(v: torch.Tensor) -> tuple[float, float]:
    return (-1.0, 1.0)


def tanh_saturated(a: Activation) -> torch.Tensor:
    return a.out.abs() > TANH_SATURATED


def gelu_saturated(a: Activation) -> torch.Tensor:
    return a.x < GELU_SATURATED


OUTPUT_SPAN = {"tanh": tanh_span, "gelu": own_span}  # each kind's histogram span
SATURATED = {"tanh": tanh_saturated, "gelu": gelu_saturated}  # each kind's saturation rule


def histogram(v: torch.Tensor, span: tuple[float, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Counts of v (a row from `finite`) in BINS equal bins over span, and the span (2,)."""
    return torch.histogram(v, bins=BINS, range=span)[0], torch.tensor(span, dtype=torch.float64)


def layer_row(a: Activation, grad: torch.Tensor) -> dict[str, torch.Tensor]:
    """One nonlinearity's share of a record: its output's histogram and statistics, its gradient's
    (over their finite values)."""
    out, grad = finite(a.out), finite(grad)
    act_counts, act_range = histogram(out, OUTPUT_SPAN[a.kind](out))
    grad_counts, grad_range = histogram(grad, symmetric_span(grad))
    return {"act_counts": act_counts, "act_range": act_range, "act_mean": out.mean(), "act_std": out.std(),
            "act_saturated": SATURATED[a.kind](a).double().mean().cpu(),
            "grad_counts": grad_counts, "grad_range": grad_range, "grad_mean": grad.mean(), "grad_std": grad.std()}


def param_row(before: torch.Tensor, grad: torch.Tensor, update: torch.Tensor) -> dict[str, torch.Tensor]:
    """One parameter's share of a record: its gradient's histogram and std, std(grad) / std(data) and
    log10 std(update) / std(data), the data being the parameter before the step."""
    g = finite(grad)
    g_std, p_std = g.std(), before.double().std().cpu()
    counts, span = histogram(g, symmetric_span(g))
    return {"param_counts": counts, "param_range": span, "param_grad_std": g_std, "grad_data": g_std / p_std,
            "update_data": (update.double().std().cpu() / p_std).log10()}


def stack(rows: list[dict], fields: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Each field of the rows stacked along a first dim (one row per layer or parameter)."""
    if not rows:  # a model with no nonlinearity to watch
        return {f: torch.zeros(0) for f in fields}
    return {f: torch.stack([row[f] for row in rows]) for f in fields}


# --- whose gradients ------------------------------------------------------------------------------------

def learner_gradients(engine: UserEngine, ix: torch.Tensor) -> tuple[dict, dict]:
    """The learner's parameter gradients on the minibatch, and the locals of their backward(...) as it
    returned (read through a profile hook for this one call)."""
    code = engine.fn.__code__
    local: dict = {}

    def watch(frame, event, arg):
        if event == "return" and frame.f_code is code:
            local.update(frame.f_locals)

    before = sys.getprofile()
    sys.setprofile(watch)
    try:
        _, grads = engine.loss_and_grads(ix)
    finally:
        sys.setprofile(before)
    return grads, local


def gradients(model: Model, engine: Engine, ix: torch.Tensor):
    """The nonlinearities on the minibatch, their outputs' gradients, the parameters' gradients and,
    per layer, whose gradient it is ("model", or the learner's name for it)."""
    with torch.no_grad():
        _, cache = model.forward(engine.Xtr[ix], engine.Ytr[ix])
        taps: dict[str, torch.Tensor] = {}
        grads = model.backward(cache, taps)
    acts = model.activations(cache)
    sources = dict.fromkeys(acts, "model")
    if isinstance(engine, UserEngine):
        grads, local = learner_gradients(engine, ix)
        for layer, name in LEARNER_NAMES.items():
            mine = local.get(name)
            if layer in acts and torch.is_tensor(mine) and mine.shape == acts[layer].out.shape:
                taps[layer], sources[layer] = mine, f"learner {name}"
    return acts, taps, grads, sources


# --- the records of a run -------------------------------------------------------------------------------

def state_problem(state) -> str | None:
    """What keeps a checkpoint's diagnostics from being Recorder.state()'s kind of dict, or None."""
    names = ("layers", "kinds", "sources")
    if not isinstance(state, dict) or set(state) != {*names, "steps", "columns"}:
        return f"the diagnostics are not a dict of {', '.join(names)}, steps and columns"
    if not all(isinstance(state[k], list) and all(isinstance(x, str) for x in state[k]) for k in names):
        return "the diagnostics' layer names are not lists of strings"
    steps = state["steps"]
    if not isinstance(steps, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in steps):
        return "the diagnostics' steps are not a list of whole numbers"
    columns = state["columns"]
    if not isinstance(columns, dict) or set(columns) != set(LAYER_FIELDS + PARAM_FIELDS):
        return "the diagnostics' columns are not the ones a record holds"
    if not all(c is None or (torch.is_tensor(c) and c.dim() >= 1) for c in columns.values()):
        return "a column of the diagnostics is not a tensor of records"
    return None


class Recorder:
    """The diagnostics of one run: a record per recorded step, kept in checkpoints, written as diagnostics.npz."""

    def __init__(self, model: Model):
        self.model = model
        self.params = list(model.names)
        self.shapes = ["x".join(map(str, model.params[k].shape)) for k in self.params]
        self.matrix = [model.params[k].dim() == 2 and min(model.params[k].shape) > 1 for k in self.params]
        self.layers: list[str] = []  # Model.activations' names, set by the first record
        self.kinds: list[str] = []
        self.sources: list[str] = []
        self.steps: list[int] = []
        self.columns: dict[str, list[torch.Tensor]] = {f: [] for f in LAYER_FIELDS + PARAM_FIELDS}

    def step(self, engine: Engine, ix: torch.Tensor, lr: float, step: int) -> list[float]:
        """Step `step` on the minibatch ix (B,), taken by the engine and recorded; its loss, as a list
        of one (engine.steps' answer)."""
        model = self.model
        engine.sync_to_model()
        before = {k: p.detach().clone() for k, p in model.params.items()}
        acts, taps, grads, sources = gradients(model, engine, ix)
        losses = engine.steps(ix.view(1, -1), lr)
        engine.sync_to_model()
        layers = [layer_row(acts[name], taps[name]) for name in acts]
        params = [param_row(before[k], grads[k], model.params[k] - before[k]) for k in self.params]
        self.layers = list(acts)
        self.kinds = [a.kind for a in acts.values()]
        self.sources = list(sources.values())
        self.steps.append(step)
        for f, t in {**stack(layers, LAYER_FIELDS), **stack(params, PARAM_FIELDS)}.items():
            self.columns[f].append(t)
        return losses

    # --- checkpoints and the file -----------------------------------------------------------------------

    def state(self) -> dict:
        """Plain lists and tensors, for a checkpoint (`torch.load(weights_only=True)` reads them)."""
        return {"layers": self.layers, "kinds": self.kinds, "sources": self.sources, "steps": list(self.steps),
                "columns": {f: torch.stack(c) if c else None for f, c in self.columns.items()}}

    def load_state(self, state: dict):
        """Take back what state() gave, on resume; ValueError when it does not fit this model (or is not
        what state() gives: an edited checkpoint)."""
        problem = state_problem(state)
        if problem is not None:
            raise ValueError(problem)
        self.layers, self.kinds, self.sources = list(state["layers"]), list(state["kinds"]), list(state["sources"])
        self.steps = [int(s) for s in state["steps"]]
        self.columns = {f: [] if state["columns"][f] is None else list(state["columns"][f].unbind(0))
                        for f in LAYER_FIELDS + PARAM_FIELDS}
        if any(len(c) != len(self.steps) for c in self.columns.values()):
            raise ValueError("the diagnostics' records disagree in number")
        if self.steps and self.columns["act_counts"][0].shape[0] != len(self.layers):
            raise ValueError(f"the diagnostics record {self.columns['act_counts'][0].shape[0]} layers and name "
                             f"{len(self.layers)}")
        if self.steps and self.columns["param_counts"][0].shape[0] != len(self.params):
            raise ValueError(f"the diagnostics record {self.columns['param_counts'][0].shape[0]} parameters, "
                             f"the model has {len(self.params)}")

    def arrays(self) -> dict[str, np.ndarray]:
        """The records as diagnostics.npz holds them (the module's docstring lists the arrays)."""
        out = {"steps": np.array(self.steps, np.int64), "layers": np.array(self.layers, str),
               "kinds": np.array(self.kinds, str), "sources": np.array(self.sources, str),
               "params": np.array(self.params, str), "shapes": np.array(self.shapes, str),
               "matrix": np.array(self.matrix, bool)}
        for f, c in self.columns.items():
            out[f] = torch.stack(c).numpy()
        return out

    def write(self, path: Path):
        """diagnostics.npz, atomically; nothing before the first record."""
        if self.steps:
            arrays = self.arrays()
            atomic_write(path, lambda f: np.savez(f, **arrays))
