"""A learner's own forward: run their setup, slice the forward that ends in `loss`, trace it.

Learners rename variables, change sizes and seeds, and call the batch size BATCH_SIZE. Their
gradients are judged against their own forward: their setup cells run here (in the worker process
that checks the notebook, under its time and memory limits) statement by statement, so that one
failing statement (a plot, a Drive mount) does not stop the rest. Then the statements that compute
`loss` are found by walking back from it: a name read by the forward is a parameter when it holds a
leaf tensor that requires grad, an input when it holds anything else without a graph (Xb, n, a
constant), and otherwise a step of the forward, which must be a plain `name = expression` line.

Running a setup never trains: a top-level loop whose body calls `.backward()`, updates `.data` or
steps an optimizer is skipped, as are shell lines and magics (see submission.py). Plotting and
notebook-only modules are replaced by stand-ins that do nothing, and the word file the setup opens
(`names.txt` anywhere: a Drive mount, a Colab upload, a path on the learner's laptop) is the one
given with --data or found beside the notebook.
"""
from __future__ import annotations

import ast
import builtins
import contextlib
import io
import os
import sys
import types
from dataclasses import dataclass, field

import torch

from . import runner, wire
from .batch import as_float64
from .names import autograd_use
from .statements import Unit, describe_exc, reads_of
from .trace import Statement, Trace, trace_forward
from .wire import pack, unpack

STUBBED = ("matplotlib", "matplotlib.pyplot", "matplotlib.ticker", "seaborn", "graphviz", "plotly",
           "plotly.express", "IPython", "IPython.display", "google", "google.colab", "wandb")


class NoOp:
    """Stands in for plotting and notebook-only objects: every call, attribute and block does nothing."""

    def __call__(self, *args, **kwargs):
        return NOOP

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return NOOP

    def __getitem__(self, key):
        return NOOP

    def __iter__(self):  # `fig, ax = plt.subplots()`
        return iter((NOOP, NOOP))

    def __enter__(self):
        return NOOP

    def __exit__(self, *exc):
        return False


NOOP = NoOp()


class StubModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return NOOP


@contextlib.contextmanager
def stand_ins():
    """While a notebook's setup runs: plotting and notebook-only modules as stand-ins, tqdm as the plain
    iteration it wraps. The modules this process had before are put back afterwards."""
    tq = types.ModuleType("tqdm")
    tq.tqdm = lambda it=None, *a, **k: it if it is not None else NOOP
    tq.trange = lambda *a, **k: range(*a)
    replaced = {name: StubModule(name) for name in STUBBED} | {n: tq for n in ("tqdm", "tqdm.auto", "tqdm.notebook")}
    before = {name: sys.modules.get(name) for name in replaced}
    sys.modules.update(replaced)
    try:
        yield
    finally:
        for name, module in before.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


@contextlib.contextmanager
def words_from(path: str):
    """Opening a file called names.txt (anywhere), or a .txt file that does not exist, opens `path`."""
    real_open, real_io_open = builtins.open, io.open

    def opener(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and not any(c in mode for c in "wax+"):
            name = os.path.basename(os.fspath(file))
            if name == "names.txt" or (name.endswith(".txt") and not os.path.exists(file)):
                file = path
        return real_open(file, mode, *args, **kwargs)

    builtins.open = io.open = opener
    try:
        yield
    finally:
        builtins.open, io.open = real_open, real_io_open


def trains(node: ast.AST) -> bool:
    """A loop that trains: its body calls .backward(), updates .data or steps an optimizer."""
    loops = [s for s in ast.walk(node) if isinstance(s, (ast.For, ast.While))]
    if not loops:
        return False
    for s in ast.walk(node):
        if isinstance(s, ast.Call) and isinstance(s.func, ast.Attribute) and s.func.attr in ("backward", "step"):
            return True
        if isinstance(s, (ast.Assign, ast.AugAssign)):
            targets = s.targets if isinstance(s, ast.Assign) else [s.target]
            if any(isinstance(t, ast.Attribute) and t.attr == "data" for t in targets):
                return True
    return any(isinstance(s, ast.While) and isinstance(s.test, ast.Constant) and s.test.value for s in loops)


@dataclass
class SetupRun:
    """The namespace a notebook's setup leaves, and what went wrong on the way."""
    namespace: dict
    errors: list[tuple[Unit, str]] = field(default_factory=list)  # statements that raised, and why
    skipped: list[Unit] = field(default_factory=list)  # training loops and autograd calls not run


def run_setup_units(units: list[Unit], namespace: dict, run: SetupRun | None = None) -> SetupRun:
    """Run the units one at a time in `namespace`; errors are noted, not raised. Prints are dropped.

    The tensors of a `parameters = [C, W1, ...]` list get requires_grad, as the lecture sets it: a
    learner whose training loop runs under torch.no_grad() no longer needs it, the trace does."""
    run = run or SetupRun(namespace)
    for u in units:
        if u.code is None:
            run.errors.append((u, f"syntax error: {u.error}"))
            continue
        if trains(u.node) or (autograd_use(u.node) and not u.writes):
            run.skipped.append(u)
            continue
        if runner.PROGRESS is not None:
            runner.PROGRESS(u)
        try:
            with contextlib.redirect_stdout(io.StringIO()), torch.enable_grad():
                exec(u.code, namespace)
        except Exception as e:  # noqa: BLE001 -- a failing setup statement is noted; the slice decides
            run.errors.append((u, describe_exc(e)))
            continue
        if "parameters" in u.writes:
            for p in namespace.get("parameters") or ():
                if torch.is_tensor(p) and p.is_floating_point() and p.grad_fn is None:
                    p.requires_grad_(True)
    return run


def first_failure(run: SetupRun, units: list[Unit]) -> str:
    """" (the first of these statements that failed: cell 3, line 2, `...`: NameError ...)", or ""."""
    among = {id(u) for u in units}
    for u, msg in run.errors:
        if id(u) in among:
            return f" (the first statement that failed: {u.where}, `{u.first_line()}`: {msg})"
    return ""


def first_value(target: ast.expr, iterable: ast.expr, namespace: dict):
    """Bind a loop's variable to the loop's first value (`for i in range(max_steps)`: i = 0); to 0
    when that cannot be taken (a `max_steps` whose line does not parse)."""
    if isinstance(target, ast.Name):
        namespace[target.id] = 0
    code = compile(ast.fix_missing_locations(ast.Module([ast.Assign(
        [target], ast.Call(ast.Name("next", ast.Load()), [ast.Call(ast.Name("iter", ast.Load()), [iterable], [])],
                           []))], type_ignores=[])), "<loop>", "exec")
    try:
        exec(code, namespace)
    except Exception:  # noqa: BLE001 -- the loop's first value is only a stand-in for its variable
        pass


@dataclass
class Forward:
    """The forward sliced out of a notebook, as the judge traces it: its steps, its parameters and
    the inputs they read."""
    statements: list[Statement]
    params: dict[str, torch.Tensor]
    extras: dict  # inputs the steps read (Xb, Yb, n, ...), torch and F
    where: str  # "cells 8-9", for messages


def as_step(u: Unit, name: str) -> Unit | None:
    """`name = expression` for the statement that makes `name`: the statement itself, or, for
    `logit_maxes, idx = logits.max(1, keepdim=True)`, `logit_maxes = (logits.max(1, keepdim=True))[0]`."""
    node = u.node
    if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
        return None
    target = node.targets[0]
    if isinstance(target, ast.Name):
        return u if target.id == name else None
    if not (isinstance(target, (ast.Tuple, ast.List)) and all(isinstance(e, ast.Name) for e in target.elts)):
        return None
    k = [e.id for e in target.elts].index(name)
    value = ast.Subscript(node.value, ast.Constant(k), ast.Load())
    step = ast.fix_missing_locations(ast.copy_location(ast.Assign([ast.Name(name, ast.Store())], value), node))
    text = f"{name} = ({ast.unparse(node.value)})[{k}]"
    code = compile(ast.Module([step], type_ignores=[]), u.filename, "exec")
    return Unit(u.cell, u.line, u.end, text, step, code, filename=u.filename)


def slice_spec(units: list[Unit], loss: Unit, namespace: dict) -> dict:
    """Walk back from `loss` through the units before it to the forward's parameters and inputs.

    Runs on the learner's side; returns plain data for the judge (see wire.py): each step's source,
    the parameters' values, the inputs' values. ValueError when the forward cannot be followed."""
    value = namespace.get("loss")
    if not (torch.is_tensor(value) and value.numel() == 1):
        raise ValueError(f"{loss.where}: `loss` did not come out as a one-element tensor")
    if not value.requires_grad:
        raise ValueError(f"{loss.where}: `loss` has no gradient graph (parameters without requires_grad=True, or "
                         "the forward ran under torch.no_grad())")
    needed = set(reads_of(loss.node.value))
    chosen = [loss]
    params: dict[str, torch.Tensor] = {}
    inputs: set[str] = set()
    for u in reversed(units[: units.index(loss)]):
        hit = u.writes & needed
        if not hit:
            continue
        for name in sorted(hit):
            v = namespace.get(name)
            needed.discard(name)
            if torch.is_tensor(v) and v.requires_grad and v.grad_fn is None:
                params[name] = v
            elif not (torch.is_tensor(v) and v.requires_grad):
                inputs.add(name)
            elif (step := as_step(u, name)) is not None:
                chosen.append(step)
                needed |= set(reads_of(step.node.value))
            else:
                raise ValueError(f"{u.where}: `{name}`, a step of the forward, is made by a statement the checker "
                                 f"cannot follow (`{u.first_line()}`); write it as `{name} = expression`")
    if not params:
        raise ValueError(f"{loss.where}: no parameter (a tensor with requires_grad=True) reaches `loss`")
    inputs |= {x for x in needed if x in namespace and not x.startswith("__")}
    chosen.reverse()
    cells = sorted({u.cell for u in chosen if u.cell is not None})
    where = (f"cell {cells[0]}" if len(cells) == 1 else f"cells {cells[0]}-{cells[-1]}") if cells else "the file"
    return {"statements": [{"cell": u.cell, "line": u.line, "text": ast.unparse(u.node), "filename": u.filename}
                           for u in chosen],
            "params": {k: v.detach().to(torch.float32) for k, v in params.items()},
            "inputs": {k: pack(namespace[k]) for k in sorted(inputs)}, "where": where}


SAFE_NODES = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.Call, ast.Attribute,
              ast.Subscript, ast.Slice, ast.Name, ast.Constant, ast.Tuple, ast.List, ast.keyword, ast.IfExp,
              ast.Load, ast.operator, ast.unaryop, ast.boolop, ast.cmpop, ast.Starred)
UNSAFE_ATTRIBUTES = {"load", "save", "hub", "ops", "library", "autograd", "backward", "grad", "register_hook",
                     "retain_grad", "requires_grad_", "data", "set_", "storage", "untyped_storage", "jit", "compile",
                     "func", "utils", "distributed", "multiprocessing", "from_file", "classes", "overrides"}
SAFE_BUILTINS = {name: getattr(builtins, name) for name in ("range", "len", "min", "max", "abs", "float", "int",
                                                             "sum", "slice", "round", "pow", "tuple", "list")}


def safe_step(text: str, names: set[str], where: str) -> ast.Assign:
    """A step of a learner's forward, checked before the judge evaluates it: `name = expression` with
    plain operations on the forward's names, torch and F (no dunders, no autograd, no file access)."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        raise ValueError(f"{where}: a step of the forward does not parse") from None
    node = tree.body[0] if len(tree.body) == 1 else None
    if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
        raise ValueError(f"{where}: a step of the forward is not `name = expression`")
    for sub in ast.walk(ast.Expression(node.value)):
        bad = None
        if not isinstance(sub, SAFE_NODES):
            bad = type(sub).__name__.lower()
        elif isinstance(sub, ast.Attribute) and (sub.attr.startswith("_") or sub.attr in UNSAFE_ATTRIBUTES):
            bad = f".{sub.attr}"
        elif isinstance(sub, ast.Name) and sub.id not in names and sub.id not in SAFE_BUILTINS:
            bad = f"`{sub.id}` (not a tensor, number or list the forward can hand over)"
        if bad:
            raise ValueError(f"{where}: the forward's step `{text}` uses {bad}, which the checker does not "
                             "evaluate on your behalf")
    return node


def forward_of_spec(spec: dict) -> Forward:
    """The judge's side: the forward a learner's side sliced out, checked and compiled for tracing."""
    params = {k: v for k, v in spec["params"].items() if torch.is_tensor(v) and v.is_floating_point()}
    inputs = {k: unpack(v) for k, v in spec["inputs"].items()}
    names = set(params) | set(inputs) | set(wire.MODULES)
    statements = []
    for st in spec["statements"]:
        where = (f"cell {st['cell']}, line {st['line']}" if st["cell"] is not None else f"line {st['line']}")
        node = safe_step(st["text"], names, where)
        ast.increment_lineno(node, st["line"] - 1)
        target = node.targets[0].id
        statements.append(Statement(st["line"], st["text"], target, reads_of(node.value),
                                    compile(ast.Module([node], type_ignores=[]), st["filename"], "exec"),
                                    compile(ast.Expression(node.value), st["filename"], "eval"), node.value,
                                    st["filename"]))
        names.add(target)
    extras = {**inputs, **wire.MODULES, "__builtins__": SAFE_BUILTINS}
    return Forward(statements, params, extras, spec["where"])


def trace_own(fw: Forward) -> tuple[Trace, Trace]:
    """The learner's forward traced in float32 and in float64."""
    extras32 = {k: (v.detach() if torch.is_tensor(v) else v) for k, v in fw.extras.items()}
    t32 = trace_forward(fw.statements, fw.params, extras32)
    t64 = trace_forward(fw.statements, {k: v.double() for k, v in fw.params.items()}, as_float64(fw.extras))
    return t32, t64
