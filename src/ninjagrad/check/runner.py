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
from .program import Program, parse_learner  # noqa: F401 -- parse_learner: the learner's file as one program
from .statements import Unit, describe_exc


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


PROGRESS = None  # in a sandboxed learner's process: told each unit before it runs (for time-limit messages)


def run_one(prog: Program, u: Unit, ns: dict, dtype) -> Failure | None:
    """Execute one unit; a Failure if it raised or does not parse. The learner's prints are dropped."""
    if PROGRESS is not None:
        PROGRESS(u)
    if u.code is None:
        return Failure(u.cell, u.line, f"syntax error: {u.error}")
    try:
        with default_dtype(dtype), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
            exec(u.code, ns)
    except (Exception, SystemExit) as e:  # noqa: BLE001 -- any error in the learner's code is a result
        cell, line = error_where(e, prog.units, u)
        return Failure(cell, line, describe_exc(e), e.name if isinstance(e, NameError) else None)
    finally:
        for h in prog.helpers:  # a pasted notebook's own cmp reads t.grad: mute it again
            if h in ns and ns[h] is not silent_cmp:
                ns[h] = silent_cmp
    return None


# --- teacher forcing, the learner's side ----------------------------------------------------------

ALIAS_RTOL = 1e-10  # an in-place change this small (float64, of the gradient's scale) adds a zero term


def last_assignments(prog: Program, dvars) -> dict[str, int]:
    """dvar -> the index of the unit that assigns it last (where it is handed over and judged)."""
    last = {}
    for i, u in prog.runnable():
        for name in u.writes:
            if name in dvars:
                last[name] = i
    return last


@dataclass
class Events:
    """What the learner's run reports besides the values it hands over."""
    failures: list = field(default_factory=list)  # (unit index, Failure) of statements that raised
    failed64: set = field(default_factory=set)  # dvars whose float64 re-run raised (judged in float32 only)
    aliased: dict = field(default_factory=dict)  # dvar -> (unit index that changed it later, harmless?)


def _changed(obj, snapshot) -> bool:
    try:
        return obj.shape != snapshot.shape or not torch.equal(obj, snapshot)
    except (RuntimeError, AttributeError, TypeError):
        return True


def _changed_much(obj, snapshot, scale: float) -> bool:
    """Whether a float64 in-place change is more than rounding (a term that is zero adds nothing)."""
    try:
        if obj.shape != snapshot.shape:
            return True
        return (obj - snapshot).abs().max().item() > ALIAS_RTOL * scale
    except (RuntimeError, AttributeError, TypeError):
        return True


def _copy(v):
    return v.detach().clone() if torch.is_tensor(v) else v


def execute(prog: Program, ns32: dict, ns64: dict | None, dvars, exchange) -> Events:
    """Run the units in lockstep on float32 and float64 namespaces. At each gradient variable's last
    assignment, hand its two values to `exchange(dvar, unit_index, v32, v64)`, which returns the
    values to continue with and the gradient's scale: autograd's (teacher forcing), or random ones
    (probing). A forced value that a later line changes in place is an alias, reported and put back."""
    last = last_assignments(prog, set(dvars))
    events = Events()
    placed: dict[str, tuple] = {}  # dvar -> (forced 32, its copy, forced 64, its copy, scale)

    def place(dvar, f32, f64, scale):
        ns32[dvar] = f32.clone()
        obj64 = None
        if ns64 is not None and f64 is not None:
            ns64[dvar] = obj64 = f64.clone()
        placed[dvar] = (ns32[dvar], f32, obj64, f64, scale)

    for i, u in prog.runnable():
        err = run_one(prog, u, ns32, torch.float32)
        if ns64 is not None and run_one(prog, u, ns64, torch.float64) is not None:
            events.failed64.update(w for w in u.writes if w in last)  # e.g. `.float()` meeting float64 inputs
        if err is not None:
            events.failures.append((i, err))
        for dvar, (obj, f32, obj64, f64, scale) in list(placed.items()):
            if dvar in events.aliased or not _changed(obj, f32):
                continue
            harmless = obj64 is not None and not _changed_much(obj64, f64, scale)
            events.aliased[dvar] = (i, harmless)
            place(dvar, f32, f64, scale)
        for dvar, j in last.items():
            if j == i:
                v64 = None if (ns64 is None or dvar in events.failed64) else _copy(ns64.get(dvar))
                f32, f64, scale = exchange(dvar, i, _copy(ns32.get(dvar)), v64)
                place(dvar, f32, f64, scale)
    return events


def execute_plain(prog: Program, ns: dict, dvars) -> tuple[dict, int]:
    """The statements as a notebook runs them, without teacher forcing: the gradient variables'
    final values, and how many statements raised."""
    failures = 0
    for _, u in prog.runnable():
        failures += run_one(prog, u, ns, torch.float32) is not None
    return {d: _copy(ns.get(d)) for d in dvars}, failures


# --- a backward(...) function ------------------------------------------------------------------

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
