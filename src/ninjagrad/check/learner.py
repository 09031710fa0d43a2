"""Where a learner's statements run: this process (LocalLearner), or a sandboxed one (sandbox.py).

A Learner holds the namespaces the statements start from (the forward's values, torch, F, n, ...;
in float32 and float64) and nothing the judge keeps back: no reference gradient ever enters it but
those handed over by `exchange` after the learner's own value for that gradient was taken.
"""
from __future__ import annotations

import torch

from .runner import (Events, Program, define_function, execute, execute_plain, invoke, silent_cmp)


def fresh(base: dict, prog: Program, given: dict, k: int) -> dict:
    """A run's namespace: copies of the floating tensors (so in-place edits stay in the run), the
    compare helpers muted, and the given gradients (k: 0 float32, 1 float64)."""
    ns = {name: (v.clone() if torch.is_tensor(v) and v.is_floating_point() else v) for name, v in base.items()}
    for h in prog.helpers:
        ns[h] = silent_cmp
    ns["__name__"] = "__ninjagrad_check__"
    for dvar, pair in given.items():
        if pair[k] is not None:
            ns[dvar] = pair[k].clone()
    return ns


class LocalLearner:
    """The learner's statements in this process: for tests, the notebook magic (the learner's own
    kernel) and the package's own solutions. No isolation."""

    def __init__(self, base32: dict, base64: dict | None):
        self.base32, self.base64 = base32, base64

    @classmethod
    def of_traces(cls, t32, t64):
        return cls(t32.namespace, t64.namespace if t64 is not None else None)

    def forced(self, prog: Program, dvars: list[str], given: dict, exchange) -> Events:
        ns64 = fresh(self.base64, prog, given, 1) if self.base64 is not None else None
        return execute(prog, fresh(self.base32, prog, given, 0), ns64, dvars, exchange)

    def plain(self, prog: Program, dvars: list[str], given: dict) -> tuple[dict, int]:
        return execute_plain(prog, fresh(self.base32, prog, given, 0), dvars)

    def call(self, prog: Program, fname: str, params: tuple[str, ...], float64: bool = False):
        """Define the file's functions and call `fname` (exercise 4): (grads, Failure or None)."""
        base = self.base64 if float64 else self.base32
        dtype = torch.float64 if float64 else torch.float32
        fn, err = define_function(prog, fname, dtype)
        if err is not None:
            return None, err
        return invoke(fn, fname, base, params, dtype, prog, copy=True)

    def close(self):
        pass
