"""Judge a learner's statements against one exercise: prepare the traces once, then every gradient.

A Context is an exercise on one batch: the forward traced in float32 and float64, which gradients
are judged, which are given (autograd's values, as a notebook would hold the learner's own), and the
package's solution on this platform. It comes from a built-in exercise (the lecture's forward and
init), a user's forward script (`--forward`), or a notebook's own forward (own_forward.py).
"""
from __future__ import annotations

import platform
from dataclasses import dataclass, field
from functools import lru_cache

import torch

from ..errors import UsageError
from .batch import Setup, make_setup, trace_pair
from .diagnose import Diagnosis
from .exercises import Exercise, forward_exercise, get_exercise
from .files import precheck, read_source
from .judge import probe, probe_diagnosis, run_forced, run_plain
from .learner import LocalLearner
from .names import autograd_use, did_you_mean, first_tampering
from .runner import Failure, Program, parse_learner
from .statements import Unit
from .trace import Trace
from .verdicts import OK, Result, judge, plain_cmp
from .wire import Gone

VERDICT_ORDER = ("exact", "rounding", "wrong", "shape", "missing", "error", "uses-autograd", "tampering")
SCOPE_SHOWN = 24  # names listed when a learner's name is undefined


@dataclass
class Context:
    """An exercise on one batch: both traces, what is judged and given, the package's solution."""
    ex: Exercise
    setup: Setup
    t32: Trace
    t64: Trace
    judged: list[str]  # node names, in the order a solution finishes them
    solution: dict  # node -> the package's solution's float32 value on this platform
    seed: int | None  # of init and batch (None: a notebook's own)
    device: str
    given: list[str] = field(default_factory=list)  # nodes whose autograd gradient is in scope
    forward: str = "the lecture's"  # whose forward the gradients are judged against (for the report)


def upstream_of(t32: Trace, judged: list[str]) -> list[str]:
    """Nodes before the first judged one in backward order: their gradients exist when it is written."""
    first = min((t32.nodes.index(x) for x in judged if x in t32.nodes), default=0)
    return [x for x in t32.nodes[:first] if x not in judged]


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
    given = list(dict.fromkeys(ex.given + (upstream_of(t32, judged) if ex.given_upstream else [])))
    ctx = Context(ex, setup, t32, t64, judged, {}, ex.seed if seed is None else seed, device, given)
    ctx.solution, order = solution_values(ctx)
    if order:
        ctx.judged = sorted(judged, key=lambda x: order.get(x, 10**9))
    if ex.kind != "function" and len(ctx.solution) < len(judged):
        raise RuntimeError(f"the package's solution to exercise {ex.id} failed on its own forward")
    return ctx


def solution_values(ctx: Context) -> tuple[dict, dict]:
    """The package's solution run on this context: node -> its float32 value, and node -> the line
    where it finishes (the order its table lists them). Empty when it does not fit the forward."""
    ex = ctx.ex
    if not ex.folder:
        return {}, {}
    sol = parse_learner(ex.path("solution.py"), ex.read("solution.py"))
    if ex.kind == "function":
        grads, err = LocalLearner.of_traces(ctx.t32, None).call(sol, ex.function, ctx.t32.params)
        return (dict(grads) if err is None else {}), {}
    nodes = list(dict.fromkeys(ctx.judged + [x for x in ctx.t32.nodes if x not in ctx.given]))
    try:  # every node forced, as when the exercise judges them all: the solution's own bits per node
        forced = run_forced(sol, ctx.t32, None, nodes, ctx.given)
    except UsageError:
        return {}, {}
    values = {x: v for x, v in forced.values32.items()
              if x in ctx.judged and x not in forced.errors and torch.is_tensor(v)}
    return values, {x: u.line for x, u in forced.units.items()}


def prepare_forward(path: str, seed: int | None = None, device: str = "cpu") -> Context:
    """A user's forward script as an exercise: every node it assigns is judged, in backward order."""
    ex = forward_exercise(path)
    setup = make_setup(ex, seed, device)
    t32, t64 = trace_pair(ex, setup)
    if not t32.nodes:
        raise UsageError(f"{path}: nothing to judge: no param(...) reaches `{ex.output}` through a named step")
    return Context(ex, setup, t32, t64, list(t32.nodes), {}, ex.seed if seed is None else seed, device,
                   forward=f"your forward script {path}")


def environment(ctx: Context) -> dict:
    not_exact = [x for x in ctx.judged
                 if torch.is_tensor(ctx.solution.get(x)) and not torch.equal(ctx.solution[x], ctx.t32.grads[x])]
    return {"torch": torch.__version__, "python": platform.python_version(), "device": ctx.device,
            "dtype": "float32", "data": ctx.setup.source, "seed": ctx.seed, "batch_size": ctx.setup.n,
            "forward": ctx.forward, "solution_not_exact": not_exact}


# --- notes that explain a verdict ----------------------------------------------------------------

def aliasing(x: str, r: Result, u: Unit, harmless: bool) -> Diagnosis | str:
    where = f"{u.where} (`{u.first_line()}`)"
    if harmless:
        return (f"{where} changes d{x} in place afterwards (another variable is the same tensor: copy with "
                ".clone()); here it only adds a term that is zero up to rounding, so the value stays right")
    return Diagnosis("aliasing", f"d{x} was {r.verdict} at {r.where}, but {where} changed it in place afterwards: "
                                 f"another variable is the same tensor (e.g. `dhprebn = d{x}` without .clone()). "
                                 "Copy with .clone() before changing it")


def in_scope(t32: Trace) -> list[str]:
    """Names a learner's statements may read: the forward's tensors, its parameters and inputs, sizes."""
    names = [k for k, v in t32.namespace.items() if not k.startswith("_") and
             (torch.is_tensor(v) or (isinstance(v, int) and not isinstance(v, bool)))]
    return sorted(names, key=lambda k: (not torch.is_tensor(t32.namespace[k]), k))


def undefined_note(f: Failure, ctx: Context) -> str:
    """For a NameError: the closest name in scope, what is in scope, and where to go from there."""
    names = in_scope(ctx.t32)
    close = did_you_mean(f.name, names + [k for k in ctx.t32.namespace if not k.startswith("_")])
    shown = ", ".join(names[:SCOPE_SHOWN]) + (", ..." if len(names) > SCOPE_SHOWN else "")
    text = f"; did you mean `{close}`?" if close else ""
    text += f" In scope ({ctx.forward} forward): {shown}."
    if ctx.forward == "the lecture's":
        text += (" If your notebook names things differently, check the notebook itself (ninjagrad check "
                 "NOTEBOOK.ipynb) or give your forward with --forward FORWARD.py")
    return text


def failure_note(f: Failure, ctx: Context) -> str:
    return f.message + (undefined_note(f, ctx) if f.name else "")


def missing_note(x: str, prog: Program, written: dict[str, Unit], known: set[str]) -> str:
    dvar = prog.dvar(x)
    note = f"{dvar} is never assigned"
    stray = [w for w in written if w.startswith("d") and w not in known]
    close = did_you_mean(dvar, stray)
    if close:
        note += (f"; did you mean `{close}` ({written[close].where})? Name it {dvar}, or compare it with "
                 f"cmp('{x}', {close}, {x}) so the checker knows")
    return note


# --- judging ------------------------------------------------------------------------------------------

def judge_function(prog: Program, fname: str, t32: Trace, t64: Trace, judged: list[str], n: int,
                   solution: dict | None = None, learner=None) -> list[Result]:
    """Call the file's backward(...) on both traces and judge every parameter gradient it returns."""
    learner = learner or LocalLearner.of_traces(t32, t64)
    units = [u for _, u in prog.runnable()]
    reach = first_tampering(units)
    autograd = next(((u, how) for u in units if u.node is not None and (how := autograd_use(u.node))), None)
    g32, g64, err = None, None, None
    if reach is None:
        try:
            g32, err = learner.call(prog, fname, t32.params)
            g64, _ = learner.call(prog, fname, t32.params, float64=True) if err is None else (None, None)
        except Gone:
            err = Failure(None, 0, "the run stopped before backward() returned (the process exited or was killed)")
    results = []
    for x in judged:
        shape = tuple(t32.grads[x].shape)
        if reach is not None:
            u, how = reach
            r = Result(x, shape, "tampering", line=u.line, cell=u.cell,
                       note=f"{u.where} {how} (`{u.first_line()}`): the file is not run")
        elif autograd is not None:
            u, how = autograd
            r = Result(x, shape, "uses-autograd", line=u.line, cell=u.cell,
                       note=f"{u.where} {how}: that is autograd's answer, not a gradient written by hand")
        elif err is not None:
            r = Result(x, shape, "error", note=err.message, line=err.line, cell=err.cell)
        elif x not in g32:
            r = Result(x, shape, "missing", note=f"{fname}() returned no '{x}'")
        else:
            r = judge(x, g32[x], (g64 or {}).get(x), t32.grads[x], t64.grads[x], t64.scale.get(x, 1.0), n,
                      t64.edges.get(x, []), (solution or {}).get(x), forced=False)
            r.values = (g32[x], t32.grads[x])
        r.plain = plain_cmp(g32.get(x) if g32 else None, t32.grads[x])
        results.append(r)
    return results


def judge_statements(prog: Program, ctx: Context, strict_shapes: bool = False,
                     learner=None) -> tuple[list[Result], dict]:
    """Teacher-forced, probing and plain runs of the program; a Result per judged gradient, and run facts."""
    t32, t64 = ctx.t32, ctx.t64
    learner = learner or LocalLearner.of_traces(t32, t64)
    forced = run_forced(prog, t32, t64, ctx.judged, ctx.given, learner)
    plain, plain_failures = run_plain(prog, t32, ctx.judged, ctx.given, learner)
    probes = probe(prog, t32, t64, ctx.judged, ctx.given, ctx.setup.n, learner, forced=forced)
    reach = first_tampering([u for _, u in prog.runnable()])
    results = []
    for x in ctx.judged:
        r = first_verdict(x, prog, ctx, forced, reach, strict_shapes)
        overrule(r, x, ctx, forced, probes)
        if prog.dvar(x) != "d" + x:
            r.dvar = prog.dvar(x)
        r.plain = plain_cmp(plain.get(x), t32.grads[x])
        results.append(r)
    problems = [{"line": f.line, "cell": f.cell, "message": failure_note(f, ctx)} for f in forced.problems]
    facts = {"problems": problems, "plain_failed": plain_failures}
    if reach is not None:
        facts["tampering"] = {"line": reach[0].line, "cell": reach[0].cell, "what": reach[1]}
    return results, facts


def first_verdict(x: str, prog: Program, ctx: Context, forced, reach, strict_shapes: bool) -> Result:
    """x's verdict from the teacher-forced run: a run that could not judge it (tampering before it, autograd's
    answer, an error, nothing assigned), else its values judged against autograd's."""
    shape = tuple(ctx.t32.grads[x].shape)
    dvar = prog.dvar(x)
    written = prog.written()
    runnable = [u for _, u in prog.runnable()]
    u = forced.units.get(x) or written.get(dvar)
    if reach is not None and (u is None or runnable.index(u) >= runnable.index(reach[0])):
        return Result(x, shape, "tampering", line=reach[0].line, cell=reach[0].cell,
                      note=f"{reach[0].where} {reach[1]} (`{reach[0].first_line()}`): a gradient computed after "
                           "that is not judged")
    if x in forced.autograd:
        u, how = forced.autograd[x]
        return Result(x, shape, "uses-autograd", line=u.line, cell=u.cell,
                      note=f"{dvar} {how} ({u.where}): that is autograd's answer, not a gradient written by hand")
    if x in forced.errors:
        f = forced.errors[x]
        return Result(x, shape, "error", note=failure_note(f, ctx), line=f.line, cell=f.cell)
    if x in forced.missing:
        return Result(x, shape, "error", note=f"the run stopped before {dvar}'s last assignment (the process "
                                              "exited or was killed: os._exit, a crash, a limit)")
    if x not in forced.values32:
        known = {prog.dvar(y) for y in ctx.t32.grads}
        return Result(x, shape, "missing", note=missing_note(x, prog, written, known))
    u = forced.units[x]
    if forced.values32[x] is None:
        return Result(x, shape, "missing", line=u.line, cell=u.cell,
                      note=f"{dvar} is None after its last assignment ({u.where}: `{u.first_line()}`)")
    t32, t64 = ctx.t32, ctx.t64
    r = judge(x, forced.values32[x], forced.values64.get(x), t32.grads[x], t64.grads[x],
              t64.scale.get(x, 1.0), ctx.setup.n, t64.edges.get(x, []), ctx.solution.get(x),
              strict_shapes=strict_shapes)
    r.values = (forced.values32[x], t32.grads[x])
    r.line, r.cell = u.line, u.cell
    if x in forced.earlier and r.verdict not in OK:
        f = forced.earlier[x]
        r.note = ((r.note + "; ") if r.note else "") + f"an earlier line that assigns it raised ({f.where}: " \
                                                     f"{f.message})"
    return r


def overrule(r: Result, x: str, ctx: Context, forced, probes: dict):
    """A value right at the lecture's point is still wrong when probing finds the formula wrong, or when it
    aliases a gradient that a later line changes."""
    t64 = ctx.t64
    if x in probes and r.verdict in OK:
        upstream = max(t64.grads[y].abs().max().item() for y in probes[x].upstream)
        r.diagnosis, r.verdict = probe_diagnosis(probes[x], t64.grads[x].abs().max().item(), upstream), "wrong"
    if x in forced.aliased and r.verdict in OK:
        u, harmless = forced.aliased[x]
        found = aliasing(x, r, u, harmless)
        if isinstance(found, Diagnosis):
            r.diagnosis, r.verdict = found, "wrong"
        else:
            r.note = f"{r.note}; {found}" if r.note else found


def summarise(results: list[Result], plain_failed: int = 0) -> dict:
    counts = {v: sum(r.verdict == v for r in results) for v in VERDICT_ORDER}
    ok = all(r.verdict in OK for r in results)
    plain_bad = sum(1 for r in results if r.plain and r.plain.get("exact") is not True)
    # the lecture's cmp cascade: right under teacher forcing, not exact in the plain run
    cascade = sum(1 for r in results if r.verdict in OK and r.plain and r.plain.get("exact") is False)
    text = ", ".join(f"{c} {v}" for v, c in counts.items() if c)
    text += (": every gradient is right" if ok else ": not there yet")
    return {**counts, "total": len(results), "ok": ok, "plain_not_exact": plain_bad,
            "cascade": cascade if plain_failed == 0 and len(results) > 1 else 0, "text": text}


MAX_SHOWN = 65536  # elements of a gradient whose values a detailed report carries (a (256, 256) matrix)


def graph(t32: Trace) -> dict:
    """The forward as a graph for pictures: nodes in data-flow order (parameters, then each step),
    edges from what a step reads to what it makes."""
    made = {st.target: st for st in t32.statements}
    order = [p for p in t32.params if p in t32.grads] + [st.target for st in t32.statements]
    nodes = []
    for x in order:
        value = t32.namespace.get(x)
        st = made.get(x)
        nodes.append({"name": x, "shape": list(value.shape) if torch.is_tensor(value) else [],
                      "kind": "parameter" if st is None else ("output" if x == t32.output else "step"),
                      "line": st.lineno if st else None, "source": st.source if st else None})
    edges = [[r, st.target] for st in t32.statements for r in st.reads if r in t32.grads or r in made]
    return {"nodes": nodes, "edges": edges}


def values_of(r: Result) -> dict | None:
    """Yours and autograd's values of a gradient that is not exact, as nested lists (float32)."""
    mine, ref = r.values if r.values else (None, None)
    if not (torch.is_tensor(mine) and torch.is_tensor(ref)) or r.verdict == "exact" or ref.numel() > MAX_SHOWN:
        return None
    if mine.shape != ref.shape or not mine.is_floating_point():
        return {"mine": None, "ref": ref.float().cpu().tolist()}
    return {"mine": mine.float().cpu().tolist(), "ref": ref.float().cpu().tolist()}


def check_program(prog: Program, ctx: Context, strict_shapes: bool = False, detail: bool = False,
                  learner=None) -> dict:
    """Judge every gradient of a learner's program; return the JSON-ready report. `detail` adds what
    pictures need: the forward's graph, the learner's lines, the values of gradients that are not exact."""
    ex = ctx.ex
    prog.learn(set(ctx.t32.grads))
    problems, plain_failed, tampered = [], 0, None
    if ex.kind == "function":
        results = judge_function(prog, ex.function, ctx.t32, ctx.t64, ctx.judged, ctx.setup.n, ctx.solution,
                                 learner)
    else:
        results, facts = judge_statements(prog, ctx, strict_shapes, learner)
        problems, plain_failed = facts["problems"], facts["plain_failed"]
        tampered = facts.get("tampering")
    cells = sorted({u.cell for _, u in prog.runnable() if u.cell is not None and u.writes})
    report = {"exercise": ex.id or None, "forward": ex.forward_file, "file": prog.path, "cells": cells,
              "results": [r.to_dict() for r in results], "summary": summarise(results, plain_failed),
              "problems": problems, "environment": environment(ctx)}
    if tampered:
        report["tampering"] = tampered
    if detail:
        report["graph"] = graph(ctx.t32)
        report["lines"] = [{"cell": u.cell, "line": u.line, "text": u.text, "writes": sorted(u.writes)}
                           for _, u in prog.runnable()]
        for r, d in zip(results, report["results"]):
            d["values"] = values_of(r)
    return report


def check_source(path: str, source: str, ctx: Context, strict_shapes: bool = False, detail: bool = False) -> dict:
    """Judge the statements of a plain file (all of it one program) against the context."""
    return check_program(parse_learner(path, source), ctx, strict_shapes, detail)


def check_file(path: str, exercise: int | None = None, seed: int | None = None, device: str = "cpu",
               data: str | None = None, forward: str | None = None) -> dict:
    """Read and judge one plain file (in this process); against a user's forward script if given."""
    exercise = precheck(path, exercise, forward)
    return check_source(path, read_source(path), prepare(exercise, seed, device, data, forward))
