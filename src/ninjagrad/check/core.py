"""Check one learner file against an exercise: prepare the traces once, then judge every gradient."""
from __future__ import annotations

import platform
from dataclasses import dataclass
from functools import lru_cache

import torch

from ..errors import UsageError
from .batch import Setup, make_setup, trace_pair
from .diagnose import Diagnosis
from .exercises import Exercise, forward_exercise, get_exercise
from .runner import call_backward, parse_learner, run_forced, run_plain
from .trace import Trace
from .verdicts import OK, Result, judge, plain_cmp

VERDICT_ORDER = ("exact", "rounding", "wrong", "shape", "missing", "error")


@dataclass
class Context:
    """An exercise on one batch: both traces, what is judged, and the package's solution on this platform."""
    ex: Exercise
    setup: Setup
    t32: Trace
    t64: Trace
    judged: list[str]  # node names, in the order the solution finishes them
    solution: dict  # node -> the solution's float32 value on this platform
    seed: int
    device: str


def prepare(exercise: int | None, seed: int | None = None, device: str = "cpu", data: str | None = None,
            forward: str | None = None) -> Context:
    """Trace an exercise's forward (or the user's `forward` script) and run the package's solution on it."""
    if forward is not None:
        return prepare_forward(forward, seed, device)  # the user's file may change between calls: not cached
    return prepare_exercise(exercise, seed, device, data)


@lru_cache(maxsize=16)
def prepare_exercise(exercise: int, seed: int | None = None, device: str = "cpu", data: str | None = None) -> Context:
    ex = get_exercise(exercise)
    setup = make_setup(ex, seed, device, data)
    t32, t64 = trace_pair(ex, setup)
    judged = list(ex.judge) if ex.judge else [x for x in t32.nodes if x not in ex.given]  # given: not judged
    unknown = [x for x in judged + ex.given if x not in t32.grads]
    if unknown:
        raise UsageError(f"{ex.path('exercise.json')}: {', '.join(unknown)} carry no gradient in the forward script")
    sol = parse_learner(ex.path("solution.py"), ex.read("solution.py"))
    if ex.kind == "function":
        grads, err = call_backward(sol, ex.function, t32, torch.float32)
        if err is not None:
            raise RuntimeError(f"the package's solution to exercise {ex.id} failed: line {err[0]}: {err[1]}")
        solution = dict(grads)
    else:
        forced = run_forced(sol, t32, None, judged, ex.given)
        if forced.errors:
            raise RuntimeError(f"the package's solution to exercise {ex.id} failed: {forced.errors}")
        solution = {x: forced.values32.get("d" + x) for x in judged}
        order = sorted(judged, key=lambda x: forced.lines.get("d" + x, 10**9))
        judged = order
    return Context(ex, setup, t32, t64, judged, solution, ex.seed if seed is None else seed, device)


def prepare_forward(path: str, seed: int | None = None, device: str = "cpu") -> Context:
    """A user's forward script as an exercise: every node it assigns is judged, in backward order."""
    ex = forward_exercise(path)
    setup = make_setup(ex, seed, device)
    t32, t64 = trace_pair(ex, setup)
    if not t32.nodes:
        raise UsageError(f"{path}: nothing to judge: no param(...) reaches `{ex.output}` through a named step")
    return Context(ex, setup, t32, t64, list(t32.nodes), {}, ex.seed if seed is None else seed, device)


def environment(ctx: Context) -> dict:
    not_exact = [x for x in ctx.judged
                 if torch.is_tensor(ctx.solution.get(x)) and not torch.equal(ctx.solution[x], ctx.t32.grads[x])]
    return {"torch": torch.__version__, "python": platform.python_version(), "device": ctx.device,
            "dtype": "float32", "data": ctx.setup.source, "seed": ctx.seed, "batch_size": ctx.setup.n,
            "solution_not_exact": not_exact}


def aliasing(x: str, r: Result, where: tuple[int, str]) -> Diagnosis:
    line, src = where
    return Diagnosis("aliasing", f"d{x} was {r.verdict} at line {r.line}, but line {line} (`{src}`) changed it "
                                 f"in place afterwards: another variable is the same tensor (e.g. `dhprebn = d{x}` "
                                 "without .clone()). Copy with .clone() before changing it")


def judge_function(lf, fname: str, t32: Trace, t64: Trace, judged: list[str], n: int,
                   solution: dict | None = None) -> list[Result]:
    """Call the file's backward(...) on both traces and judge every parameter gradient it returns."""
    g32, err = call_backward(lf, fname, t32, t32.dtype)
    g64, _ = call_backward(lf, fname, t64, torch.float64) if err is None else (None, None)
    results = []
    for x in judged:
        shape = tuple(t32.grads[x].shape)
        if err is not None:
            r = Result(x, shape, "error", note=f"line {err[0]}: {err[1]}", line=err[0])
        elif x not in g32:
            r = Result(x, shape, "missing", note=f"{fname}() returned no '{x}'")
        else:
            r = judge(x, g32[x], (g64 or {}).get(x), t32.grads[x], t64.grads[x], t64.scale.get(x, 1.0), n,
                      t64.edges.get(x, []), (solution or {}).get(x), forced=False)
        r.plain = plain_cmp(g32.get(x) if g32 else None, t32.grads[x])
        results.append(r)
    return results


def check_source(path: str, source: str, ctx: Context) -> dict:
    """Judge every gradient of a learner's file; return the JSON-ready report."""
    ex, t32, t64 = ctx.ex, ctx.t32, ctx.t64
    lf = parse_learner(path, source)
    n = ctx.setup.n
    results: list[Result] = []
    problems: list[dict] = []

    def judge_one(x, mine32, mine64):
        return judge(x, mine32, mine64, t32.grads[x], t64.grads[x], t64.scale.get(x, 1.0), n,
                     t64.edges.get(x, []), ctx.solution.get(x))

    if ex.kind == "function":
        results = judge_function(lf, ex.function, t32, t64, ctx.judged, n, ctx.solution)
    else:
        forced = run_forced(lf, t32, t64, ctx.judged, ex.given)
        plain = run_plain(lf, t32, ctx.judged, ex.given)
        for x in ctx.judged:
            dvar = "d" + x
            shape = tuple(t32.grads[x].shape)
            if dvar in forced.errors:
                line, msg = forced.errors[dvar]
                r = Result(x, shape, "error", note=f"line {line}: {msg}", line=line)
            elif dvar not in forced.values32:
                r = Result(x, shape, "missing", note=f"{dvar} is never assigned")
            else:
                r = judge_one(x, forced.values32[dvar], forced.values64.get(dvar))
                r.line = forced.lines[dvar]
            if dvar in forced.aliased and r.verdict in OK:
                r.diagnosis = aliasing(x, r, forced.aliased[dvar])
                r.verdict = "wrong"
            r.plain = plain[x]
            results.append(r)
        problems = [{"line": line, "message": msg} for line, msg in forced.problems]

    counts = {v: sum(r.verdict == v for r in results) for v in VERDICT_ORDER}
    ok = all(r.verdict in OK for r in results)
    plain_bad = sum(1 for r in results if r.plain and r.plain.get("exact") is not True)
    text = ", ".join(f"{c} {v}" for v, c in counts.items() if c)
    text += (": every gradient is right" if ok else ": not there yet")
    return {"exercise": ex.id or None, "forward": ex.forward_file, "file": path,
            "results": [r.to_dict() for r in results],
            "summary": {**counts, "total": len(results), "ok": ok, "plain_not_exact": plain_bad, "text": text},
            "problems": problems, "environment": environment(ctx)}


def check_file(path: str, exercise: int | None = None, seed: int | None = None, device: str = "cpu",
               data: str | None = None, forward: str | None = None) -> dict:
    """Read, parse and judge one file (in this process); against a user's forward script if given."""
    from .files import precheck, read_source

    exercise = precheck(path, exercise, forward)
    return check_source(path, read_source(path), prepare(exercise, seed, device, data, forward))
