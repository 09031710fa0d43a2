"""Check a learner's notebook exercise by exercise, against the notebook's own forward.

The setup cells and the forward run once (own_forward.py); each exercise found (layout.py) is then
judged against that forward: exercise 1 judges every node, exercises 2 and 3 their fused gradient
with the gradients a notebook holds by then in scope, exercise 4 its training loop's parameter
gradients (and every intermediate gradient it names), on one pass of the loop's body. When the
notebook's own forward cannot run, the lecture's forward stands in, and the report says why.
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
from collections import Counter
from pathlib import Path

from ..data import load_corpus
from ..errors import UsageError
from .batch import Setup
from .core import Context, check_program, prepare_exercise, solution_values, summarise, upstream_of
from .exercises import get_exercise
from .layout import Found, notebook_layout
from .learner import MAIN, LocalLearner
from .names import compare_calls, learned_dvars
from .own_forward import Forward, forward_of_spec, trace_own
from .runner import Program
from .submission import Submission
from .trace import Trace
from .wire import Gone


@dataclasses.dataclass
class Words:
    path: str  # the file the notebook's `open('names.txt')` reads
    source: str  # what it is, for the report


def words_for(notebook: str, data: str | None, scratch: str) -> Words:
    """--data, else names.txt beside the notebook or in the current directory, else the default corpus."""
    if data is not None:
        return Words(data, data)
    for candidate in (Path(notebook).resolve().parent / "names.txt", Path("names.txt")):
        if candidate.is_file():
            return Words(str(candidate), str(candidate))
    words, source = load_corpus(None, None)
    path = os.path.join(scratch, "names.txt")
    Path(path).write_text("\n".join(words) + "\n", encoding="utf-8")
    return Words(path, f"{source} in place of names.txt (none beside the notebook; give one with --data)")


def batch_size(namespace: dict, t32: Trace) -> int:
    """The n of the learner's forward: their `n`, else their batch's first dim, else the usual leading dim."""
    for name in ("n", "batch_size", "BATCH_SIZE"):
        v = namespace.get(name)
        if isinstance(v, int) and not isinstance(v, bool) and v >= 2:
            return v
    dims = Counter(g.shape[0] for g in t32.grads.values() if g.dim() == 2)
    return max(dims.most_common(1)[0][0], 2) if dims else 2


LECTURE = "lecture"  # the space of the lecture's forward, when it stands in for a notebook's


def own_context(number: int, fw: Forward, t32: Trace, t64: Trace, judged: list[str], given: list[str],
                source: str) -> Context:
    """An exercise judged against the learner's own forward."""
    ex = dataclasses.replace(get_exercise(number) if number in (1, 2, 3) else get_exercise(1), id=number,
                             kind="statements", judge=judged, given=given)
    setup = Setup(fw.params, fw.extras, source, batch_size(t32.namespace, t32))
    ctx = Context(ex, setup, t32, t64, judged, {}, None, "cpu", given, f"the notebook's own ({fw.where})")
    try:
        ctx.solution, order = solution_values(ctx)  # the package's solution, when the names fit
    except Exception:  # noqa: BLE001 -- a forward with other names: no solution to compare with
        ctx.solution, order = {}, {}
    if order and all(x in order for x in judged):
        ctx.judged = sorted(judged, key=order.get)
    return ctx


def statements_context(f: Found, fw: Forward, t32: Trace, t64: Trace, source: str) -> Context:
    nodes = [x for x in t32.nodes]
    if f.exercise == 1:
        judged, given = nodes, []
    else:
        judged = [x for x in (f.judged or []) if x in t32.grads]
        if not judged:
            raise UsageError(f"exercise {f.exercise}: the notebook's forward has no {', '.join(f.judged or [])}")
        given = list(dict.fromkeys(upstream_of(t32, judged) + [x for x in f.given if x in t32.grads]))
    return own_context(f.exercise, fw, t32, t64, judged, given, source)


def traced(spec: dict) -> tuple[Forward, Trace, Trace]:
    """The judge's side of a notebook's forward: check the steps the learner's side sliced out, trace them."""
    if "error" in spec:
        raise UsageError(str(spec["error"]))
    try:
        fw = forward_of_spec(spec)
    except (KeyError, TypeError, AttributeError) as e:
        raise UsageError(f"the notebook's forward came back malformed ({type(e).__name__})") from None
    except ValueError as e:
        raise UsageError(str(e)) from None
    t32, t64 = trace_own(fw)
    return fw, t32, t64


def forward_values(fw: Forward, t: Trace) -> dict:
    """The forward's own values (parameters and steps) of a trace, for the learner's side."""
    names = list(fw.params) + [st.target for st in fw.statements]
    return {x: t.namespace[x] for x in names if x in t.namespace}


def own_forward(learner, space: str, spec: dict) -> tuple[Forward, Trace, Trace]:
    fw, t32, t64 = traced(spec)
    learner.set_forward(space, forward_values(fw, t32), forward_values(fw, t64))
    return fw, t32, t64


def loop_context(f: Found, k: int, learner, words: Words) -> tuple[Context, Program]:
    """Exercise 4: one pass of the loop's body, traced, judged on its parameters (and every
    intermediate gradient it names)."""
    loop = f.loop
    fw, t32, t64 = own_forward(learner, f"loop{k}", learner.loop_setup(k, words.path))
    order = [p for p in loop.params if p in fw.params] + [p for p in fw.params if p not in loop.params]
    dvars = {p: g for p, g in zip(loop.params, loop.grads)} if len(loop.params) == len(loop.grads) else {}
    prog = Program(layout_path(f), f.units, dvars, ref=("found", k))
    prog.learn(set(t32.grads))
    written = set(prog.written())
    inner = [x for x in t32.nodes if x not in fw.params and prog.dvar(x) in written]
    judged = order + inner
    ex = dataclasses.replace(get_exercise(4), kind="statements", judge=judged, given=[])
    setup = Setup(fw.params, fw.extras, words.source, batch_size(t32.namespace, t32))
    ctx = Context(ex, setup, t32, t64, judged, {}, None, "cpu", [], f"the training loop's ({loop.unit.where})")
    return ctx, prog


def layout_path(f: Found) -> str:
    return f.units[0].filename.rsplit(", cell", 1)[0] if f.units else "notebook"


def not_attempted(path: str, f: Found) -> dict:
    what = "the template's gradients are still None" if f.units else "nothing written"
    return {"exercise": f.exercise, "file": path, "cells": f.cells, "attempted": False, "results": [],
            "summary": {**summarise([]), "ok": None, "text": f"not attempted ({what})"}, "problems": []}


def failed(path: str, f: Found, why: str) -> dict:
    return {"exercise": f.exercise, "file": path, "cells": f.cells, "attempted": True, "results": [],
            "summary": {**summarise([]), "ok": False, "text": f"not judged: {why}"}, "problems": []}


def check_notebook(sub: Submission, data: str | None = None, strict_shapes: bool = False, detail: bool = False,
                   learner=None) -> list[dict]:
    """One report per exercise found in the notebook, in order. The notebook's own code runs in
    `learner` (a sandboxed process under `ninjagrad check`; this process by default)."""
    layout = notebook_layout(sub)
    if not layout.found:
        raise UsageError(f"{sub.path}: no exercise found: no cell assigns a gradient (d<name>) of a forward "
                         "that computes `loss`")
    learner = learner or LocalLearner()
    reports = []
    with tempfile.TemporaryDirectory(prefix="ninjagrad-nb-") as scratch:
        words = words_for(sub.path, data, scratch)
        learner.read(sub)
        own, why = None, None
        names = notebook_names(layout, own_names(layout))
        if layout.loss is not None:
            try:
                own = own_forward(learner, MAIN, learner.setup(words.path))
            except UsageError as e:
                why = str(e)
            except Gone:
                why = "the learner's process ended while running the notebook's setup"
        for k, f in enumerate(layout.found):
            if not f.attempted:
                reports.append(not_attempted(sub.path, f))
                continue
            try:
                reports.append(check_found(sub, k, f, learner, own, why, words, strict_shapes, detail, names))
            except UsageError as e:
                reports.append(failed(sub.path, f, str(e)))
            except Gone:
                reports.append(failed(sub.path, f, "the learner's process ended while running the notebook's code"))
    return reports


def own_names(layout) -> set[str]:
    """The names a notebook's setup assigns: its forward's tensors among them."""
    return set().union(*(u.writes for u in layout.setup)) if layout.setup else set()


def notebook_names(layout, nodes: set[str]) -> dict[str, str]:
    """node -> the learner's name for its gradient, from their compare calls anywhere in the notebook
    (exercise 3 may read the dL_dhpreact their exercise 1 named)."""
    return learned_dvars(compare_calls([u for f in layout.found for u in f.units]), nodes)


def check_found(sub: Submission, k: int, f: Found, learner, own, why: str | None, words: Words,
                strict_shapes: bool, detail: bool, names: dict) -> dict:
    if f.exercise == 4:
        ctx, prog = loop_context(f, k, learner, words)
        rep = check_program(prog, ctx, strict_shapes, detail, learner.at(f"loop{k}"))
    elif own is not None:
        ctx = statements_context(f, *own, words.source)
        rep = check_program(Program(sub.path, f.units, dict(names), ref=("found", k)), ctx, strict_shapes, detail,
                            learner.at(MAIN))
    else:
        ctx = prepare_exercise(f.exercise, None, "cpu", words.path)
        ctx = dataclasses.replace(ctx, setup=dataclasses.replace(ctx.setup, source=words.source),
                                  forward=f"the lecture's, standing in for the notebook's own: {why}")
        learner.set_space(LECTURE, ctx.t32.namespace, ctx.t64.namespace)
        rep = check_program(Program(sub.path, f.units, dict(names), ref=("found", k)), ctx, strict_shapes, detail,
                            learner.at(LECTURE))
    rep["attempted"] = True
    rep["exercise"] = f.exercise
    return rep
