"""Where a learner's statements run, and what they are given.

LearnerSide is the learner's end of a check: it holds the submission, runs a notebook's setup, and
runs the statements of an exercise from namespaces ("spaces": the lecture's forward, a notebook's
own, exercise 4's loop) that hold the forward's values and nothing the judge keeps back. No
reference gradient ever enters it but those handed over by `exchange` after the learner's own value
for that gradient was taken.

- LocalLearner runs a LearnerSide in this process: tests, the notebook magic (the learner's own
  kernel), the package's own solutions.
- RemoteLearner (sandbox.py) runs it in a separate, sandboxed process and speaks to it through
  wire.py; `ninjagrad check` uses it for every file.
"""
from __future__ import annotations

import torch

from .batch import as_float64
from .layout import notebook_layout
from .own_forward import first_failure, first_value, run_setup_units, slice_spec, stand_ins, words_from
from .runner import Events, Program, define_function, execute, execute_plain, invoke, silent_cmp
from .submission import Submission

MAIN = "main"  # the space of a plain file's exercise, or of a notebook's forward


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


class LearnerSide:
    """The learner's end: spaces of values, the submission, and the runs."""

    def __init__(self):
        self.spaces: dict[str, tuple[dict, dict | None]] = {}
        self.submission: Submission | None = None
        self.setup_ns: dict = {}  # a notebook's namespace after its setup (the learner's own names)

    # --- what the statements start from ---------------------------------------------------------------

    def set_space(self, space: str, ns32: dict, ns64: dict | None):
        self.spaces[space] = (ns32, ns64)

    def set_forward(self, space: str, values32: dict, values64: dict):
        """A notebook's own forward traced by the judge: its values over the setup's names."""
        base = self.spaces.get(space, (self.setup_ns, None))[0]
        self.spaces[space] = ({**base, **values32}, {**as_float64(base), **values64})

    # --- a notebook ----------------------------------------------------------------------------------

    def read(self, submission: Submission):
        self.submission = submission
        self.layout = notebook_layout(submission)

    def setup(self, words: str) -> dict:
        """Run the notebook's setup; the forward it ends with, as the judge needs it to trace."""
        ns = {"__name__": "__main__"}
        with words_from(words), stand_ins():
            run = run_setup_units(self.layout.setup, ns)
        self.setup_ns = ns
        self.spaces[MAIN] = (ns, None)
        try:
            return slice_spec(self.layout.setup, self.layout.loss, ns)
        except ValueError as e:
            return {"error": f"{e}{first_failure(run, self.layout.setup)}"}

    def loop_setup(self, k: int, words: str) -> dict:
        """Exercise 4: one pass of the loop's body up to `loss`, in a copy of the setup's namespace."""
        loop = self.layout.found[k].loop
        ns = dict(self.setup_ns)
        with words_from(words), stand_ins():
            run = run_setup_units(loop.before, ns)
            if loop.target is not None:
                first_value(loop.target, loop.iterable, ns)
            run_setup_units(loop.forward, ns, run)
        space = f"loop{k}"
        self.spaces[space] = (ns, None)
        try:
            return slice_spec(self.layout.setup + loop.before + loop.forward, loop.forward[-1], ns)
        except ValueError as e:
            return {"error": f"{e}{first_failure(run, loop.forward)}"}

    def program(self, ref, dvars: dict) -> Program:
        """The program the judge names: every unit of a plain file, or exercise k of a notebook."""
        units = self.submission.units() if ref[0] == "all" else self.layout.found[ref[1]].units
        return Program(self.submission.path, units, dict(dvars), ref=tuple(ref))

    # --- runs ----------------------------------------------------------------------------------------

    def forced(self, space: str, prog: Program, dvars: list[str], given: dict, exchange) -> Events:
        base32, base64 = self.spaces[space]
        ns64 = fresh(base64, prog, given, 1) if base64 is not None else None
        return execute(prog, fresh(base32, prog, given, 0), ns64, dvars, exchange)

    def plain(self, space: str, prog: Program, dvars: list[str], given: dict) -> tuple[dict, int]:
        return execute_plain(prog, fresh(self.spaces[space][0], prog, given, 0), dvars)

    def call(self, space: str, prog: Program, fname: str, params: tuple[str, ...], float64: bool = False):
        """Define the file's functions and call `fname` (exercise 4): (grads, Failure or None)."""
        base = self.spaces[space][1 if float64 else 0]
        dtype = torch.float64 if float64 else torch.float32
        fn, err = define_function(prog, fname, dtype)
        if err is not None:
            return None, err
        return invoke(fn, fname, base, params, dtype, prog, copy=True)


class LocalLearner:
    """A LearnerSide in this process. No isolation: for code the user runs as their own."""

    def __init__(self, side: LearnerSide | None = None, space: str = MAIN):
        self.side = side or LearnerSide()
        self.space = space

    @classmethod
    def of_traces(cls, t32, t64):
        side = LearnerSide()
        side.set_space(MAIN, t32.namespace, t64.namespace if t64 is not None else None)
        return cls(side)

    def at(self, space: str) -> LocalLearner:
        return LocalLearner(self.side, space)

    def read(self, submission: Submission):
        self.side.read(submission)

    def setup(self, words: str) -> dict:
        return self.side.setup(words)

    def loop_setup(self, k: int, words: str) -> dict:
        return self.side.loop_setup(k, words)

    def set_space(self, space: str, ns32: dict, ns64: dict | None):
        self.side.set_space(space, ns32, ns64)

    def set_forward(self, space: str, values32: dict, values64: dict):
        self.side.set_forward(space, values32, values64)

    def close(self):
        pass

    def forced(self, prog: Program, dvars: list[str], given: dict, exchange) -> Events:
        return self.side.forced(self.space, prog, dvars, given, exchange)

    def plain(self, prog: Program, dvars: list[str], given: dict) -> tuple[dict, int]:
        return self.side.plain(self.space, prog, dvars, given)

    def call(self, prog: Program, fname: str, params: tuple[str, ...], float64: bool = False):
        return self.side.call(self.space, prog, fname, params, float64)

