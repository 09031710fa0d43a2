"""Run a learner's backward statements with teacher forcing, and a backward(...) function.

Statements (exercises 1-3, a notebook's exercise cells): the units run one at a time, in float32 and,
in lockstep, on float64 copies of every input (with float64 as the default dtype). When a gradient
variable has had its last assignment, its value is kept for judging and the variable is replaced by
a copy of autograd's gradient, so that one mistake does not cascade into every later line. A third,
plain run without teacher forcing gives what the lecture's `cmp` would have printed.

A gradient variable is `d<name>` for the forward tensor <name>, unless the learner's own compare
calls say otherwise (`cmp('logit_maxes', dlogits_maxes, logit_maxes)`). Compare calls are not run
(they read `.grad`; the verdict table replaces them).

Function (exercise 4): `backward(...)` receives forward values by parameter name and returns the
parameter gradients, a dict or a list in the model's parameter order.
"""
from __future__ import annotations

import contextlib
import inspect
import io
import traceback
from dataclasses import dataclass, field

import torch

from ..errors import UsageError
from .names import autograd_taint, compare_calls, is_comparison, learned_dvars
from .statements import Unit, describe_exc, split_units
from .trace import Trace


# --- the learner's statements -----------------------------------------------------------------------

@dataclass
class Program:
    """The learner's statements for one exercise, in the order they run."""
    path: str
    units: list[Unit]
    dvars: dict[str, str] = field(default_factory=dict)  # node -> the learner's name for its gradient
    helpers: set[str] = field(default_factory=lambda: {"cmp"})  # compare helpers (their calls are not run)

    def __post_init__(self):
        self.helpers = self.helpers | {c.helper for c in compare_calls(self.units)}
        self.skip = {i for i, u in enumerate(self.units) if is_comparison(u, self.helpers)}

    def learn(self, nodes: set[str]):
        """Take the learner's names for the gradients of `nodes` from their compare calls."""
        self.dvars = {**learned_dvars(compare_calls(self.units), nodes), **self.dvars}

    def dvar(self, node: str) -> str:
        return self.dvars.get(node, "d" + node)

    def runnable(self):
        return ((i, u) for i, u in enumerate(self.units) if i not in self.skip)

    def written(self) -> dict[str, Unit]:
        """Every name the program assigns -> the unit of its last assignment."""
        last = {}
        for _, u in self.runnable():
            for w in u.writes:
                last[w] = u
        return last


def parse_learner(path: str, source: str) -> Program:
    """A plain .py file as one program."""
    return Program(path, split_units(source, path))


def error_where(exc: BaseException, units: list[Unit], default: Unit) -> tuple[int | None, int]:
    """(cell, line) of the deepest frame of the learner's code in the traceback."""
    cells = {u.filename: u.cell for u in units}
    where = (default.cell, default.line)
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename in cells and frame.lineno:
            where = (cells[frame.filename], frame.lineno)
    return where


@dataclass
class Failure:
    """A statement that raised (or did not parse)."""
    cell: int | None
    line: int
    message: str
    name: str | None = None  # the undefined name of a NameError

    @property
    def where(self) -> str:
        return f"cell {self.cell}, line {self.line}" if self.cell is not None else f"line {self.line}"


# --- namespaces ----------------------------------------------------------------------------------

def silent_cmp(*args, **kwargs):
    """Notebooks call the lecture's cmp (or their own helper); while checking, the table says it all."""


def fresh_namespace(trace: Trace, helpers=("cmp",)) -> dict:
    """The forward values (copies, so in-place edits cannot reach the trace) plus torch, F, n, ..."""
    ns = {k: (v.clone() if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in trace.namespace.items()}
    for h in helpers:
        ns[h] = silent_cmp
    ns["__name__"] = "__ninjagrad_check__"
    return ns


def _to_default(self, memory_format=torch.preserve_format):
    return self.to(torch.get_default_dtype(), memory_format=memory_format)


@contextlib.contextmanager
def default_dtype(dtype):
    """Run learner code with `dtype` as the default; in the float64 re-run, `.float()` (as in
    `F.one_hot(...).float()`) also means "the default floating dtype", so it does not pin float32."""
    old, old_float = torch.get_default_dtype(), torch.Tensor.float
    torch.set_default_dtype(dtype)
    if dtype == torch.float64:
        torch.Tensor.float = _to_default
    try:
        yield
    finally:
        torch.set_default_dtype(old)
        torch.Tensor.float = old_float


def run_one(prog: Program, u: Unit, ns: dict, dtype) -> Failure | None:
    """Execute one unit; a Failure if it raised or does not parse. The learner's prints are dropped."""
    if u.code is None:
        return Failure(u.cell, u.line, f"syntax error: {u.error}")
    try:
        with default_dtype(dtype), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
            exec(u.code, ns)
    except (Exception, SystemExit) as e:  # noqa: BLE001 -- any error in the learner's code is a result
        cell, line = error_where(e, prog.units, u)
        return Failure(cell, line, describe_exc(e), getattr(e, "name", None) if isinstance(e, NameError) else None)
    finally:
        for h in prog.helpers:  # a pasted notebook's own cmp reads t.grad: mute it again
            if h in ns and ns[h] is not silent_cmp:
                ns[h] = silent_cmp
    return None


# --- teacher forcing ------------------------------------------------------------------------------

ALIAS_RTOL = 1e-10  # an in-place change this small (float64, of the gradient's scale) adds a zero term


@dataclass
class Forced:
    """What a teacher-forced run saw for every judged gradient."""
    values32: dict = field(default_factory=dict)  # node -> value at its last assignment (a copy)
    values64: dict = field(default_factory=dict)
    units: dict = field(default_factory=dict)  # node -> the unit of its last assignment
    errors: dict = field(default_factory=dict)  # node -> Failure of the statement that assigns it last
    earlier: dict = field(default_factory=dict)  # node -> Failure of an earlier statement that assigns it
    aliased: dict = field(default_factory=dict)  # node -> (unit that changed it later, harmless?)
    autograd: dict = field(default_factory=dict)  # node -> (unit, how) where its value comes from autograd
    problems: list = field(default_factory=list)  # Failures of statements that assign no judged gradient


def _copy(v):
    return v.clone() if torch.is_tensor(v) else v


def _changed(obj, snapshot) -> bool:
    try:
        return obj.shape != snapshot.shape or not torch.equal(obj, snapshot)
    except (RuntimeError, AttributeError):
        return True


def run_forced(prog: Program, t32: Trace, t64: Trace | None, judged: list[str], given: list[str]) -> Forced:
    node_of = {prog.dvar(x): x for x in judged}
    last = {}
    for i, u in prog.runnable():
        for name in u.writes:
            if name in node_of:
                last[name] = i
    ns32 = fresh_namespace(t32, prog.helpers)
    ns64 = fresh_namespace(t64, prog.helpers) if t64 is not None else None
    for x in given:
        ns32[prog.dvar(x)] = t32.grads[x].clone()
        if ns64 is not None:
            ns64[prog.dvar(x)] = t64.grads[x].clone()
    out = Forced()
    tainted = autograd_taint([u for _, u in prog.runnable()])
    for dvar, x in node_of.items():
        if dvar in tainted:
            out.autograd[x] = tainted[dvar]
    placed: dict[str, tuple] = {}  # dvar -> (tensor we put in, its value then, the same for float64)
    failed64: set[str] = set()  # gradients whose float64 re-run raised: judged in float32 only

    def force(dvar):
        x = node_of[dvar]
        ns32[dvar] = t32.grads[x].clone()
        obj64 = None
        if ns64 is not None:
            ns64[dvar] = obj64 = t64.grads[x].clone()
        placed[dvar] = (ns32[dvar], ns32[dvar].clone(), obj64, None if obj64 is None else obj64.clone())

    for i, u in prog.runnable():
        err = run_one(prog, u, ns32, torch.float32)
        if ns64 is not None and run_one(prog, u, ns64, torch.float64) is not None:
            failed64.update(w for w in u.writes if w in node_of)  # e.g. `.float()` meeting float64 inputs
        if err is not None:
            hit = [w for w in u.writes if w in node_of]
            for w in hit:  # an error counts where it leaves the gradient: at its last assignment
                if last[w] == i:  # `dX += ...` failing because `dX = ...` failed before: the first cause
                    out.errors[node_of[w]] = out.earlier.get(node_of[w], err) if err.name == w else err
                else:
                    out.earlier.setdefault(node_of[w], err)
            if not hit:
                out.problems.append(err)
        # a judged gradient changed in place by a later line: an alias without .clone()
        for dvar, (obj, snap, obj64, snap64) in list(placed.items()):
            x = node_of[dvar]
            if x in out.aliased or not _changed(obj, snap):
                continue
            harmless = obj64 is not None and not _changed_much(obj64, snap64, t64.scale.get(x, 1.0))
            out.aliased[x] = (u, harmless)
            force(dvar)
        for dvar, j in last.items():
            if j != i:
                continue
            x = node_of[dvar]
            out.values32[x] = _copy(ns32.get(dvar))
            if ns64 is not None:
                out.values64[x] = None if dvar in failed64 else _copy(ns64.get(dvar))
            out.units[x] = u
            force(dvar)
    return out


def _changed_much(obj, snapshot, scale: float) -> bool:
    """Whether a float64 in-place change is more than rounding (a term that is zero adds nothing)."""
    try:
        if obj.shape != snapshot.shape:
            return True
        return (obj - snapshot).abs().max().item() > ALIAS_RTOL * scale
    except (RuntimeError, AttributeError):
        return True


def run_plain(prog: Program, t32: Trace, judged: list[str], given: list[str]) -> tuple[dict, list[Failure]]:
    """The statements as a notebook runs them: no teacher forcing. The gradients' final values, and
    the statements that raised."""
    ns = fresh_namespace(t32, prog.helpers)
    for x in given:
        ns[prog.dvar(x)] = t32.grads[x].clone()
    failures = []
    for _, u in prog.runnable():
        err = run_one(prog, u, ns, torch.float32)
        if err is not None:
            failures.append(err)
    return {x: ns.get(prog.dvar(x)) for x in judged}, failures


# --- a backward(...) function ------------------------------------------------------------------

def call_backward(prog: Program, fname: str, trace: Trace, dtype) -> tuple[dict | None, Failure | None]:
    """Define the file's functions, call `fname` with forward values by parameter name, normalise its result."""
    fn, err = define_function(prog, fname, dtype)
    if err is not None:
        return None, err
    return invoke(fn, fname, trace.namespace, trace.params, dtype, prog, copy=True)


def define_function(prog: Program, fname: str, dtype):
    """Run the file's top level (imports, defs) and return its function `fname`."""
    ns = {"torch": torch, "F": torch.nn.functional, "__name__": "__ninjagrad_check__"}
    for _, u in prog.runnable():
        err = run_one(prog, u, ns, dtype)
        if err is not None:
            return None, err
    fn = ns.get(fname)
    if not callable(fn):
        raise UsageError(f"{prog.path}: defines no function `{fname}(...)`; start from `ninjagrad exercise 4`")
    return fn, None


def invoke(fn, fname: str, namespace: dict, params: tuple[str, ...], dtype, prog: Program, copy: bool = True):
    """Call fn with the forward values its parameters name; (grads by parameter name, None) or (None, Failure)."""
    available = {k: (v.clone() if copy and torch.is_tensor(v) and v.is_floating_point() else v)
                 for k, v in namespace.items()}
    kwargs = {}
    line = fn.__code__.co_firstlineno
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.name in available:
            kwargs[p.name] = available[p.name]
        elif p.default is p.empty:
            names = ", ".join(k for k, v in available.items() if torch.is_tensor(v) or isinstance(v, int))
            raise UsageError(f"{prog.path}:{line}: {fname}() asks for `{p.name}`, which the forward does not "
                             f"define; parameters are looked up by name among: {names}")
    try:
        with default_dtype(dtype), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
            result = fn(**kwargs)
    except (Exception, SystemExit) as e:  # noqa: BLE001
        cell, at = error_where(e, prog.units, prog.units[0]) if prog.units else (None, line)
        return None, Failure(cell, at, describe_exc(e))
    return normalise_grads(result, params, fname, line)


def normalise_grads(result, params: tuple[str, ...], fname: str = "backward", line: int = 0):
    """A dict {name or d<name>: grad} or a sequence in parameter order -> {name: grad}."""
    if isinstance(result, dict):
        return {(k[1:] if isinstance(k, str) and k not in params and k[1:] in params else k): v
                for k, v in result.items()}, None
    if isinstance(result, (list, tuple)) and len(result) == len(params):
        return dict(zip(params, result)), None
    got = f"a {type(result).__name__}" + (f" of length {len(result)}" if isinstance(result, (list, tuple)) else "")
    return None, Failure(None, line, f"{fname}() returned {got}; return a dict {{'C': dC, ...}} or a list in the "
                                     f"order {', '.join(params)}")
