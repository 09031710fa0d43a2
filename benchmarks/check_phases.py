"""Where one judge of `ninjagrad check` spends its time: one process, its phases timed, as JSON on stdout.

    python benchmarks/check_phases.py ex1.py            # a file, as `ninjagrad check ex1.py` judges it
    python benchmarks/check_phases.py nb.ipynb --notebook

This process is the judge `ninjagrad check` starts for each file (`python -m ninjagrad.check.worker`):
it imports torch (timed first, as the judge's first cost), wraps the functions named in PHASES with a
timer, runs the worker's main on the file and ends as the judge does, with os._exit.
benchmarks/check_speed.py runs it and prints the medians. A function of PHASES that is no longer there
stops it with a KeyError naming it: PHASES wants updating.
"""
import time

START = time.perf_counter()
import torch  # noqa: E402,F401 -- the judge's first cost, timed

TORCH_S = time.perf_counter() - START

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

from ninjagrad.check import batch, core, files, sandbox, worker  # noqa: E402

MODULES_S = time.perf_counter() - START - TORCH_S

# (module or class, function, phase): every call of the function adds its wall time to the phase
PHASES = [
    (sandbox.RemoteLearner, "__post_init__", "fork"),  # the learner's process forked, its hello read
    (files, "plan", "plan"),  # the file read and parsed, what to judge in it
    (batch, "_splits", "corpus"),  # the words read (the default corpus, or --data) and split 80/10/10
    (core, "make_setup", "setup"),  # the corpus, then the lecture's init and the minibatch
    (core, "trace_pair", "traces"),  # the forward traced under autograd, float32 and float64
    (core, "solution_values", "solution"),  # the package's solution run on the traces
    (core, "prepare", "prepare"),  # all of the above but the fork: the reference side of the exercise
    (sandbox.RemoteLearner, "read", "read"),  # the submission sent to the learner's process
    (sandbox.RemoteLearner, "set_space", "namespaces"),  # the forward's values sent to it, float32 and float64
    (core, "check_program", "judging"),  # the submission run (forced and plain) and every gradient judged
    (sandbox.RemoteLearner, "close", "close"),  # the learner's process ended
    (worker, "judge_file", "judge_file"),  # everything the judge does for the file
]


def timed(spent: dict, phase: str, f):
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return f(*args, **kwargs)
        finally:
            spent[phase] = spent.get(phase, 0.0) + time.perf_counter() - t
    return wrapper


def main():
    spent: dict[str, float] = {}
    for owner, name, phase in PHASES:
        setattr(owner, name, timed(spent, phase, vars(owner)[name]))
    out = os.open(os.devnull, os.O_WRONLY)  # the report: not what is timed here
    t = time.perf_counter()
    worker.main([*sys.argv[1:], "--result-fd", str(out)])
    spent["main"] = time.perf_counter() - t
    print(json.dumps({"torch": TORCH_S, "modules": MODULES_S, **spent, "total": time.perf_counter() - START}))


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)  # as the judge ends (worker.py): no teardown of torch after the answer
