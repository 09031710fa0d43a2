"""Judge one file in a child process: `python -m ninjagrad.check.worker RESULT FILE [options]`.

Running a learner's file means executing their code. The parent (`ninjagrad check`) starts one child
per file under a time and memory limit, so an infinite loop, a crash or a runaway allocation in one
file is reported for that file and never stops the others. The child writes its report as JSON to
RESULT (not to stdout, which the learner's code may print to).
"""
from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import traceback

from ..errors import UsageError


def limit_memory(megabytes: int):
    """Runs in the child before exec: cap its address space."""
    def apply():
        if megabytes > 0:
            limit = megabytes * 2**20
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return apply


STARTUP_ALLOWANCE = 180.0  # seconds for importing torch and preparing the batch, on a busy machine


def run_isolated(path: str, exercise: int | None, seed: int | None, device: str, data: str | None,
                 timeout: float, memory_mb: int, forward: str | None = None, notebook: bool = False,
                 strict_shapes: bool = False) -> dict:
    """Check `path` in a child process; a report ({"reports": [...]} for a notebook, one per exercise),
    or {"file", "error", "exit"} when it could not be judged.

    The child enforces `timeout` on the learner's code itself (after torch is imported and the batch
    traced); the parent kills it only if it does not answer within timeout + STARTUP_ALLOWANCE.
    """
    with tempfile.TemporaryDirectory(prefix="ninjagrad-check-") as tmp:
        result = os.path.join(tmp, "result.json")
        cmd = [sys.executable, "-m", "ninjagrad.check.worker", result, path, "--device", device,
               "--timeout", str(timeout)]
        if exercise is not None:
            cmd += ["--exercise", str(exercise)]
        if seed is not None:
            cmd += ["--seed", str(seed)]
        if data is not None:
            cmd += ["--data", data]
        if forward is not None:
            cmd += ["--forward", forward]
        if notebook:
            cmd += ["--notebook"]
        if strict_shapes:
            cmd += ["--strict-shapes"]
        # CUDA reserves far more address space than it uses: cap memory on the CPU only
        mem = memory_mb if device == "cpu" else 0
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  timeout=timeout + STARTUP_ALLOWANCE, preexec_fn=limit_memory(mem))
        except subprocess.TimeoutExpired:
            return {"file": path, "exit": 1,
                    "error": f"no answer after {timeout + STARTUP_ALLOWANCE:g} s (stuck outside Python code?); killed"}
        seconds = time.perf_counter() - t0
        if os.path.exists(result):
            with open(result, encoding="utf-8") as f:
                out = json.load(f)
            if "usage_error" in out:
                return {"file": path, "exit": 2, "error": out["usage_error"]}
            if "time_limit" in out:
                where = f" in {out['where']}" if out.get("where") else ""
                return {"file": path, "exit": 1,
                        "error": f"stopped after the time limit of {timeout:g} s{where} (an infinite loop?); "
                                 "raise it with --timeout"}
            out["seconds"] = seconds
            return out
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        last = err[-1] if err else ""
        if proc.returncode < 0:
            why = f"killed by signal {-proc.returncode}"
        else:
            why = f"exit status {proc.returncode}"
        if "MemoryError" in last or "memory" in last.lower():
            why += f" (memory limit of {memory_mb} MB; raise it with --memory-mb)"
        return {"file": path, "exit": 1, "error": f"the check crashed: {why}" + (f": {last}" if last else "")}


def stopped_at(exc: BaseException, path: str) -> str | None:
    """Where in the learner's file the time limit struck: "line 3", "cell 12, line 3", or None."""
    where = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == path:
            where = f"line {frame.lineno}"
        elif frame.filename.startswith(path + ", cell "):
            where = f"{frame.filename[len(path) + 2:]}, line {frame.lineno}"
    return where


class TimeLimit(BaseException):
    """Raised by the alarm inside the learner's code; a BaseException so that the runner, which turns
    every Exception of the learner's into an `error` verdict, lets it through."""


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m ninjagrad.check.worker")
    p.add_argument("result")
    p.add_argument("file")
    p.add_argument("--exercise", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", default="cpu")
    p.add_argument("--data")
    p.add_argument("--forward")
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--notebook", action="store_true")
    p.add_argument("--strict-shapes", action="store_true")
    a = p.parse_args(argv)
    import torch

    # the checker's tensors are tiny: one thread is fastest, and files checked side by side do not fight
    torch.set_num_threads(1)
    from .core import check_program, prepare
    from .files import plan
    from .notebook import check_notebook
    from .report import _clean
    from .runner import Program

    def on_alarm(signum, frame):
        raise TimeLimit()

    try:
        pl = plan(a.file, a.exercise, a.forward)
        signal.signal(signal.SIGALRM, on_alarm)
        if a.notebook:  # the notebook's setup and forward are learner code too
            signal.setitimer(signal.ITIMER_REAL, a.timeout)
            out = {"reports": check_notebook(pl.submission, a.data, a.strict_shapes)}
        else:
            if a.forward is not None:  # a user's forward script is user code too: its setup runs under the limit
                signal.setitimer(signal.ITIMER_REAL, a.timeout)
            ctx = prepare(pl.exercise, a.seed, a.device, a.data, a.forward)
            signal.setitimer(signal.ITIMER_REAL, a.timeout)  # the learner's code runs from here on
            out = check_program(Program(a.file, pl.submission.units()), ctx, a.strict_shapes)
        signal.setitimer(signal.ITIMER_REAL, 0)
    except UsageError as e:
        out = {"usage_error": str(e)}
    except TimeLimit as e:
        out = {"time_limit": a.timeout, "where": stopped_at(e, a.file)}
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    tmp = a.result + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(_clean(out), f)
    os.replace(tmp, a.result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
