"""Judge one file in a process of its own: `python -m ninjagrad.check.worker FILE --result-fd N [options]`.

`ninjagrad check` starts one judge per file (`run_isolated`), in a session of its own, with an
environment stripped to what Python needs, and reads its report from a pipe only the judge holds.
The judge forks the learner's process (sandbox.py) before it computes any reference gradient, runs
the learner's statements there, and decides every verdict itself. So an infinite loop, a crash, a
runaway allocation or a hostile statement in one file is reported for that file and touches neither
the judge's answers nor the other files.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

from ..errors import UsageError
from .procs import descendants

# The parent (`ninjagrad check`) imports this module to start judges and must not import torch; the
# judge's own modules are imported inside judge_file and main, in the judge's process.

STARTUP_ALLOWANCE = 180.0  # seconds for importing torch and tracing the forward, on a busy machine
KEPT_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "PYTHONPATH", "OMP_NUM_THREADS",
            "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "SYSTEMROOT")
RESULT_LIMIT = 256 << 20  # bytes of a report read from a judge
STDERR_KEPT = 4000  # bytes of a judge's stderr kept for a crash's message

RUNNING: set = set()  # judges in flight, so that `ninjagrad check` ending ends them too
RUNNING_LOCK = threading.Lock()


def judge_env() -> dict:
    """What a judge (and so a learner's process) inherits: no tokens, keys or passwords of the user."""
    return {k: v for k, v in os.environ.items() if k in KEPT_ENV}


def _read_capped(fd: int, limit: int, into: list):
    """Read a pipe to its end, keeping at most `limit` bytes (the last ones for stderr)."""
    kept = bytearray()
    with os.fdopen(fd, "rb", buffering=0) as f:
        while True:
            chunk = f.read(1 << 16)
            if not chunk:
                break
            kept += chunk
            if len(kept) > limit:
                del kept[: len(kept) - limit]
    into.append(bytes(kept))


def kill_tree(pid: int):
    """The judge's process group and every process under it."""
    for p in reversed(descendants(pid)):
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass


def end_all():
    """Every judge still running (on SIGTERM or Ctrl-C of `ninjagrad check`)."""
    with RUNNING_LOCK:
        for pid in list(RUNNING):
            kill_tree(pid)


def run_isolated(path: str, exercise: int | None, seed: int | None, device: str, data: str | None,
                 timeout: float, memory_mb: int, forward: str | None = None, notebook: bool = False,
                 strict_shapes: bool = False, detail: bool = False, hide: tuple[str, ...] = ()) -> dict:
    """Check `path` in a judge process; a report ({"reports": [...]} for a notebook, one per exercise),
    or {"file", "error", "exit"} when it could not be judged. `hide`: files the learner's code must not
    read (the batch's other submissions)."""
    rfd, wfd = os.pipe()
    efd_r, efd_w = os.pipe()
    cmd = [sys.executable, "-m", "ninjagrad.check.worker", path, "--result-fd", str(wfd), "--device", device,
           "--timeout", repr(timeout), "--memory-mb", str(memory_mb)]
    for flag, value in (("--exercise", exercise), ("--seed", seed), ("--data", data), ("--forward", forward)):
        if value is not None:
            cmd += [flag, str(value)]
    cmd += ["--notebook"] * notebook + ["--strict-shapes"] * strict_shapes + ["--detail"] * detail
    for h in hide:
        cmd += ["--hide", h]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=efd_w,
                            pass_fds=(wfd,), start_new_session=True, env=judge_env())
    os.close(wfd)
    os.close(efd_w)
    with RUNNING_LOCK:
        RUNNING.add(proc.pid)
    result, stderr = [], []
    readers = [threading.Thread(target=_read_capped, args=(rfd, RESULT_LIMIT, result), daemon=True),
               threading.Thread(target=_read_capped, args=(efd_r, STDERR_KEPT, stderr), daemon=True)]
    for r in readers:
        r.start()
    try:
        proc.wait(timeout=timeout + STARTUP_ALLOWANCE)
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid)
        proc.wait()
        return {"file": path, "exit": 1,
                "error": f"no answer after {timeout + STARTUP_ALLOWANCE:g} s (stuck outside Python code?); killed"}
    finally:
        kill_tree(proc.pid)  # nothing the judge started outlives it
        with RUNNING_LOCK:
            RUNNING.discard(proc.pid)
        for r in readers:
            r.join(5)
    return judge_answer(path, result, stderr, proc.returncode, time.perf_counter() - t0, timeout, memory_mb)


def judge_answer(path: str, result: list, stderr: list, returncode: int, seconds: float, timeout: float,
                 memory_mb: int) -> dict:
    """What the judge process wrote on its result pipe, as a report or a file-level error."""
    raw = result[0] if result else b""
    try:
        out = json.loads(raw.decode("utf-8")) if raw else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        out = None
    if out is None:
        last = (stderr[0] if stderr else b"").decode("utf-8", "replace").strip().splitlines()
        why = f"killed by signal {-returncode}" if returncode < 0 else f"exit status {returncode}"
        return {"file": path, "exit": 1, "error": f"the check crashed: {why}" + (f": {last[-1][:300]}" if last else "")}
    if "usage_error" in out:
        return {"file": path, "exit": 2, "error": out["usage_error"]}
    if "limit" in out:
        where = f" in {out['where']}" if out.get("where") else ""
        if out["limit"] == "time":
            return {"file": path, "exit": 1, "error": f"stopped after the time limit of {timeout:g} s{where} "
                                                      "(an infinite loop?); raise it with --timeout"}
        return {"file": path, "exit": 1, "error": f"stopped at the memory limit of {memory_mb} MB (its processes "
                                                  f"together){where}; raise it with --memory-mb"}
    out["seconds"] = seconds
    return out


def judge_file(a) -> dict:
    """The judge's work for one file, with its learner's process started first."""
    from .core import check_program, prepare
    from .files import plan
    from .learner import MAIN as MAIN_SPACE
    from .notebook import check_notebook
    from .runner import Program
    from .sandbox import Limits, RemoteLearner, exercises_folder

    pl = plan(a.file, a.exercise, a.forward)
    hide = [os.path.abspath(h) for h in a.hide] + [os.path.abspath(a.file), exercises_folder()]
    learner = RemoteLearner(Limits(a.timeout, a.memory_mb), hide=hide)
    try:
        if a.notebook:
            out = {"reports": check_notebook(pl.submission, a.data, a.strict_shapes, a.detail, learner=learner)}
        else:
            ctx = prepare(pl.exercise, a.seed, a.device, a.data, a.forward)
            learner.read(pl.submission)
            learner.set_space(MAIN_SPACE, ctx.t32.namespace, ctx.t64.namespace)
            out = check_program(Program(a.file, pl.submission.units()), ctx, a.strict_shapes, a.detail,
                                learner=learner.at(MAIN_SPACE))
    finally:
        learner.close()
    ending = learner.ending
    if ending.reason in ("time", "memory"):
        return {"limit": ending.reason, "where": ending.where}
    if ending.reason == "exit":
        stopped = {"status": ending.status, "where": ending.where, "stderr": ending.stderr[-300:]}
        for rep in out.get("reports", [out]):
            rep["stopped"] = stopped
            rep["summary"]["ok"] = False
            rep["summary"]["text"] += f"; the submission's process ended early (exit status {ending.status})"
    return out


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m ninjagrad.check.worker")
    p.add_argument("file")
    p.add_argument("--result-fd", type=int, required=True)
    p.add_argument("--exercise", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", default="cpu")
    p.add_argument("--data")
    p.add_argument("--forward")
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--memory-mb", type=int, default=2048)
    p.add_argument("--notebook", action="store_true")
    p.add_argument("--strict-shapes", action="store_true")
    p.add_argument("--detail", action="store_true")
    p.add_argument("--hide", action="append", default=[])
    a = p.parse_args(argv)
    from .sandbox import protect_judge

    protect_judge()
    import torch

    # the checker's tensors are tiny: one thread is fastest, and files checked side by side do not fight
    torch.set_num_threads(1)
    from .report import _clean

    try:
        out = judge_file(a)
    except UsageError as e:
        out = {"usage_error": str(e)}
    with os.fdopen(a.result_fd, "w", encoding="utf-8") as f:
        json.dump(_clean(out), f)
    return 0


if __name__ == "__main__":
    code = main()
    # The answer is written, the learner's process and scratch folder are gone: nothing is left for the
    # interpreter's teardown to do but unload torch, a sixth of a whole check. Skip it.
    sys.stderr.flush()
    os._exit(code)
