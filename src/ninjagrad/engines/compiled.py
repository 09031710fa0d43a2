"""The compiled engine: the model's own forward, hand-written backward and optimizer update traced
into one graph of aten ops and compiled by inductor, PyTorch's compiler; no autograd anywhere.

Eager torch runs a step's ops one at a time (~160 for the WaveNet, ~900 for the transformer), and at
these shapes most of a step is dispatch and trips through memory. Here `make_fx` runs the step once on
fake tensors (shapes, no data) and records every op; inductor fuses the elementwise ops and reductions
between two matmuls into loops of generated C++ (compiled with the system's C++ compiler; Triton on a
GPU), keeps the matmuls in BLAS and writes the update of every parameter into the backward's last
loops. The graph holds the ops of ops.py in the order the model calls them, so the numbers are the
manual engine's up to float32 rounding: inductor sums in its own order, multiplies by 1/std as rsqrt
and evaluates float32 tanh by a formula of its own (inductor_passes.py).

Why not `torch.compile`: it traces the same graph, but guards it, checking ~200 attributes and tensors
before every call to know the graph still applies; at the WaveNet's ~0.5 ms a step that check and its
wrappers were a third of the time. Here the graph is traced and compiled once per batch size, and each
step calls it with a flat list of tensors: the parameters, the optimizer's state, the minibatch and the
step's scalars. The minibatch is gathered before the call (two small index ops), so that the graph does
not depend on the training set's size: one compiled graph serves every corpus of the same vocabulary.

The parameters stay the model's own tensors, updated in place by the graph, and the optimizer's state
stays the optimizer's (AdamW's m, v and step count t): checkpoints, evaluation, `--verify-every` and
resume see them as with the manual engine, with nothing to copy back.

Compiling takes tens of seconds the first time (`prepare` does it, before the step loop's clock
starts); inductor keeps what it compiled in its on-disk cache (TORCHINDUCTOR_CACHE_DIR, by default
/tmp/torchinductor_$USER), so a second run of the same model starts in a few seconds.
"""
from __future__ import annotations

import contextlib
import copy
import math
import time

import torch

from ..errors import UsageError
from .base import Engine


@contextlib.contextmanager
def deterministic_algorithms(on: bool):
    """torch.use_deterministic_algorithms(True) while the block runs, when `on`; as before after it."""
    before = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(before or on, warn_only=warn_only)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_only)


def compile_graph(fn, example_inputs: list[torch.Tensor]):
    """`fn(*tensors)` traced on fake tensors into one graph (nothing runs), compiled by inductor.

    cpp_wrapper: the code that calls the kernels is C++ too, not Python (a few µs a kernel);
    realize_reads_threshold 0: a value computed once and read by several loops is stored, not
    computed again in each (batchnorm's per-channel 1/std, two divisions and a square root, was
    recomputed for every element: a quarter of the WaveNet's non-matmul time); Rewrites: rsqrt, the
    float32 tanh and small batched matmuls as loops (inductor_passes.py).

    On one CPU thread every generated loop runs in order, so a step's numbers are the same in every
    run, as resume needs. On more threads (or a GPU) inductor's scatter-add, the embedding's backward,
    adds from several threads in an order that changes from run to run; compiled with torch's
    deterministic algorithms on, that one op stays ATen's serial kernel (~5% of a step, so only then).

    The imports are here, not at the top: inductor takes ~2 s to import, which only this engine's
    runs should pay."""
    try:
        from torch._inductor.compile_fx import compile_fx
        from torch.fx.experimental.proxy_tensor import make_fx

        from .inductor_passes import Rewrites
    except ImportError as e:
        raise UsageError(f"--engine compiled: needs torch 2.6 or later, with inductor ({e}); this is torch "
                         f"{torch.__version__}. Use --engine manual") from None

    options = {"cpp_wrapper": True, "realize_reads_threshold": 0, "post_grad_custom_post_pass": Rewrites()}
    parallel = torch.get_num_threads() > 1 or example_inputs[0].device.type != "cpu"
    with torch.no_grad():
        graph = make_fx(fn, tracing_mode="fake")(*example_inputs)
        with deterministic_algorithms(parallel):
            return compile_fx(graph, example_inputs, config_patches=options)


# --- the updates, as the graph runs them ---------------------------------------------------------
# Each optimizer of optim.py has a pair: `scalars(opt, lr)` counts the update in the optimizer and
# returns the numbers that change from step to step, computed in Python as optim.py computes them;
# `update_(opt, params, grads, s)` is optim.py's update written over the tensor s of those numbers.

def sgd_scalars(opt, lr: float) -> list[float]:
    return [lr]


def sgd_update_(opt, params, grads, s):
    """p <- p - lr dp (optim.SGD)"""
    for k, p in params.items():
        p.sub_(s[0] * grads[k])


def adamw_scalars(opt, lr: float) -> list[float]:
    """[1 - lr wd, lr / (1 - b1^t), 1 - b2^t] for the update that makes t"""
    opt.t += 1
    return [1 - lr * opt.weight_decay, lr / (1 - opt.beta1 ** opt.t), 1 - opt.beta2 ** opt.t]


def adamw_update_(opt, params, grads, s):
    """p <- p (1 - lr wd) for matrices; m, v <- running means of g, g^2;
    p <- p - lr/(1 - b1^t) m / (sqrt(v / (1 - b2^t)) + eps)   (optim.AdamW)"""
    for k, p in params.items():
        g, m, v = grads[k], opt.m[k], opt.v[k]
        if opt.weight_decay and opt.decays(p):
            p.mul_(s[0])
        m.mul_(opt.beta1).add_(g, alpha=1 - opt.beta1)
        v.mul_(opt.beta2).addcmul_(g, g, value=1 - opt.beta2)
        p.sub_(s[1] * m / ((v / s[2]).sqrt() + opt.eps))


UPDATES = {"sgd": (sgd_scalars, sgd_update_), "adamw": (adamw_scalars, adamw_update_)}
STATE = {"sgd": (), "adamw": ("m", "v")}  # the optimizer's tensors per parameter, which the update changes


class CompiledEngine(Engine):
    """One call of a compiled graph per step: minibatch gather, forward, backward, update."""

    name = "compiled"
    CHUNK = 16  # steps per `steps` call: the training loop's own work paid once per ~10 ms

    def __init__(self, model, Xtr, Ytr, optimizer=None):
        super().__init__(model, Xtr, Ytr, optimizer)
        if model.reduce is not None:  # set by a data-parallel run
            raise UsageError("--engine compiled: data-parallel runs all-reduce the manual engine's gradients; "
                             "use --engine manual")
        self.names = list(model.params)
        self.scalars, self.update_ = UPDATES[self.optimizer.name]
        self.state_names = STATE[self.optimizer.name]
        like = model.params[self.names[0]]
        self.dtype, self.device = like.dtype, like.device
        self.graphs: dict[tuple[str, int], object] = {}  # (what, batch size) -> compiled graph
        self.compile_seconds: dict[str, float] = {}  # seconds to trace and compile each graph (its first batch size)

    # --- what the graphs compute, on the flat list of tensors they are called with ------------------

    def inputs(self) -> list[torch.Tensor]:
        """The tensors every call passes before the minibatch: the parameters, then the optimizer's
        state (AdamW's m, then v, in the parameters' order)."""
        out = [self.model.params[n] for n in self.names]
        for k in self.state_names:
            state = getattr(self.optimizer, k)
            if len(state) != len(self.names):  # AdamW makes m and v at its first update; the graph needs them now
                state.update({n: torch.zeros_like(self.model.params[n]) for n in self.names if n not in state})
            elif state[self.names[0]].device != self.device:  # a resumed run's, read from the checkpoint
                state.update({n: t.to(self.device) for n, t in state.items()})
            out += [state[n] for n in self.names]
        return out

    def _unpack(self, tensors):
        """The model and optimizer as the graph sees them: copies that hold the traced tensors."""
        n = len(self.names)
        twin = copy.copy(self.model)
        twin.params = dict(zip(self.names, tensors[:n]))
        opt = copy.copy(self.optimizer)
        for i, k in enumerate(self.state_names):
            setattr(opt, k, dict(zip(self.names, tensors[n * (i + 1):n * (i + 2)])))
        return twin, opt

    def _loss_and_grads_graph(self, *tensors):
        twin, _ = self._unpack(tensors)
        loss, cache = twin.forward(*tensors[-2:])
        grads = twin.backward(cache)
        return [loss] + [grads[k] for k in self.names]

    def _step_graph(self, *tensors):
        twin, opt = self._unpack(tensors)
        Xb, Yb, s = tensors[-3:]
        loss, cache = twin.forward(Xb, Yb)
        self.update_(opt, twin.params, twin.backward(cache), s)
        return loss

    # --- compiling and calling them --------------------------------------------------------------

    def _graph(self, what: str, batch_size: int):
        key = (what, batch_size)
        if key not in self.graphs:
            t = time.perf_counter()
            batch = [self.Xtr.new_zeros((batch_size, *self.Xtr.shape[1:])), self.Ytr.new_zeros(batch_size)]
            if what == "step":
                count = len(self.scalars(copy.copy(self.optimizer), 0.0))  # a copy: its step count t is not counted
                s = torch.zeros(count, dtype=self.dtype, device=self.device)
                self.graphs[key] = compile_graph(self._step_graph, self.inputs() + batch + [s])
            else:
                self.graphs[key] = compile_graph(self._loss_and_grads_graph, self.inputs() + batch)
            self.compile_seconds.setdefault(what, time.perf_counter() - t)
        return self.graphs[key]

    def prepare(self, batch_size: int):
        """Compile the step for this batch size (tracing runs nothing: no parameter changes), unless
        there is no example to take a step on."""
        if self.Xtr.shape[0] > 0:
            self._graph("step", batch_size)

    def _run_step(self, graph, ix, lr: float) -> float:
        s = torch.tensor(self.scalars(self.optimizer, lr), dtype=self.dtype, device=self.device)
        with torch.no_grad():
            return graph(*self.inputs(), self.Xtr[ix], self.Ytr[ix], s).item()

    # --- the Engine interface ------------------------------------------------------------------

    def chunk_size(self, batch_size: int) -> int:
        return self.CHUNK

    def step(self, ix, lr):
        return self._run_step(self._graph("step", ix.shape[0]), ix, lr)

    def steps(self, ixs, lr):
        graph = self._graph("step", ixs.shape[1])
        losses = []
        for ix in ixs:
            losses.append(self._run_step(graph, ix, lr))
            if not math.isfinite(losses[-1]):
                break
        return losses

    def loss_and_grads(self, ix):
        graph = self._graph("loss_and_grads", ix.shape[0])
        with torch.no_grad():
            loss, *grads = graph(*self.inputs(), self.Xtr[ix], self.Ytr[ix])
        return loss.item(), dict(zip(self.names, grads))
