"""A learner's backward(...) function (exercise 4) as a training engine.

Each step runs exercise 4's forward script (the lecture's forward, every intermediate named) on the
minibatch, then calls the learner's `backward` with the forward values it asks for by parameter name.
`check_gradients(ix)` holds one step to autograd with the grader's verdicts and diagnosis (`diagnose`);
train.py calls it at step 0 and every --verify-every steps and stops with its message when a gradient
is wrong.

The learner's code runs in this process, under a time limit of wall seconds (--backward-timeout): the
file's top level once, each step's call of backward(...), and each verification's two calls (float32
and float64) under twice the limit. One fixed limit, not a multiple of a measured call: a call of ~1 ms
times a factor is a fraction of a second that a busy machine or a pause for the garbage collector can
exceed, while a loop that never ends costs at most the limit to find.
"""
from __future__ import annotations

import builtins
import signal
import threading
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from ..check.core import judge_function
from ..check.exercises import get_exercise
from ..check.files import read_source
from ..check.runner import define_function, invoke, parse_learner
from ..check.trace import parse_forward, run_forward, trace_forward
from ..check.verdicts import OK
from ..errors import UsageError
from .base import Engine

EXERCISE = 4
EXTRA_NAMES = ("torch", "F", "n", "batch_size", "Xb", "Yb", "vocab_size", "n_embd", "n_hidden", "block_size")


class TimeLimit(BaseException):
    """Learner code ran past its time limit. A BaseException: the checker's `except Exception` around
    learner code, and the learner's own, let it through."""


@contextmanager
def time_limit(seconds: float):
    """TimeLimit in the main thread once the block has run `seconds` of wall time, and every second after
    (code that swallows it with a bare `except:` still ends). SIGALRM's timer; off the main thread, where
    signals cannot reach, no limit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    armed = [True]

    def fire(signum, frame):
        if armed[0]:
            raise TimeLimit

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds, 1.0)
    try:
        yield
    finally:
        while armed[0]:
            try:
                armed[0] = False  # first: a TimeLimit raised here is caught, and none comes after
            except TimeLimit:
                continue
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class UserEngine(Engine):
    """Exercise 4's forward script, then the learner's backward(...), on every minibatch."""

    name = "user"

    def __init__(self, model, Xtr, Ytr, optimizer=None, path: str | None = None, time_limit: float = 60.0):
        super().__init__(model, Xtr, Ytr, optimizer)
        if path is None:
            raise UsageError("--backward FILE: give the file that defines backward(...) (`ninjagrad exercise 4`)")
        self.path = path
        self.time_limit = time_limit  # wall seconds for each call of the learner's code
        self.ex = get_exercise(EXERCISE)
        self.statements = parse_forward(self.ex.read("forward.py"), self.ex.path("forward.py"))
        self.lf = parse_learner(path, read_source(path))
        with self.limited("the file's top level"):
            self.fn, err = define_function(self.lf, self.ex.function, torch.get_default_dtype())
        if err is not None:
            raise UsageError(f"{path}:{err.line}: {err.message}")
        if model.name != "mlp":
            raise UsageError("--backward: exercise 4's forward is the lecture's MLP; use --model mlp")
        known = set(model.params) | set(EXTRA_NAMES) | set(dir(builtins))
        needed = {x for st in self.statements for x in st.reads} - {st.target for st in self.statements}
        if needed - known:
            raise UsageError(f"--backward: exercise 4's forward needs {', '.join(sorted(needed - known))}, which "
                             f"the {model.name} model does not have; use --model mlp")

    @contextmanager
    def limited(self, what: str, calls: int = 1):
        """The block under `calls` times the time limit; past it, one line (UsageError) naming `what`."""
        try:
            with time_limit(calls * self.time_limit):
                yield
        except TimeLimit:
            raise UsageError(f"{self.path}: {what} ran past its time limit of {calls * self.time_limit:g} s; a loop "
                             f"that never ends? `ninjagrad check {self.path}` runs one step (--backward-timeout "
                             "sets the limit)") from None

    # --- one step ------------------------------------------------------------------------------

    def extras(self, ix) -> dict:
        cfg = self.model.config
        n = int(ix.shape[0])
        return {"torch": torch, "F": F, "n": n, "batch_size": n, "Xb": self.Xtr[ix], "Yb": self.Ytr[ix],
                "vocab_size": cfg.vocab_size, "n_embd": cfg.n_embd, "n_hidden": cfg.n_hidden,
                "block_size": cfg.block_size}

    @torch.no_grad()
    def loss_and_grads(self, ix):
        params = self.model.params
        ns = run_forward(self.statements, {**self.extras(ix), **params})
        # no copies: training owns these tensors, and a learner who edits them in place only hurts the run
        with self.limited(f"{self.ex.function}(...)"):
            grads, err = invoke(self.fn, self.ex.function, ns, tuple(params), params["W1"].dtype, self.lf, copy=False)
        if err is not None:
            raise UsageError(f"{self.path}:{err.line}: {err.message}")
        for k, p in self.model.params.items():
            g = grads.get(k)
            if not torch.is_tensor(g) or g.shape != p.shape or g.dtype != p.dtype:
                got = "nothing" if g is None else (f"shape {tuple(g.shape)}, {g.dtype}" if torch.is_tensor(g)
                                                    else type(g).__name__)
                raise UsageError(f"{self.path}: {self.ex.function}() gave {got} for {k}, which needs shape "
                                 f"{tuple(p.shape)}, {p.dtype}; run `ninjagrad check {self.path}`")
        return ns[self.ex.output].item(), {k: grads[k] for k in self.model.params}

    # --- verification ------------------------------------------------------------------------------

    def check_gradients(self, ix) -> str | None:
        problem = self.diagnose(ix)
        if problem is None:
            return None
        return f"your backward disagrees with autograd: {problem} (check one step with `ninjagrad check {self.path}`)"

    def diagnose(self, ix) -> str | None:
        """None when every gradient is exact or rounding on this minibatch, else the grader's findings."""
        extras = self.extras(ix)
        params = self.model.params
        t_native = trace_forward(self.statements, params, extras, self.ex.output)
        t64 = trace_forward(self.statements, {k: v.double() for k, v in params.items()}, extras, self.ex.output)
        with self.limited(f"{self.ex.function}(...), called twice to verify it,", calls=2):
            results = judge_function(self.lf, self.ex.function, t_native, t64, list(params), extras["n"])
        bad = [r for r in results if r.verdict not in OK]
        if not bad:
            return None
        parts = []
        for r in bad:
            why = r.diagnosis.message if r.diagnosis else (r.note or "")
            parts.append(f"d{r.name} {r.verdict}" + (f" ({why})" if why else ""))
        return "; ".join(parts)
