"""Run a learner's backward file with teacher forcing and judge every gradient.

Statements file (exercises 1-3): the file runs one top-level statement at a time, in float32 and, in
lockstep, on float64 copies of every input (with float64 as the default dtype). When a gradient
variable `d<name>` has had its last assignment in the file, it is judged and then replaced by a copy
of autograd's gradient, so that one mistake does not cascade into every later line. A third, plain
run without teacher forcing gives what the lecture's `cmp` would have printed.

Function file (exercise 4): `backward(...)` receives forward values by parameter name and returns the
parameter gradients, a dict or a list in the model's parameter order.
"""
from __future__ import annotations

import ast
import contextlib
import inspect
import io
import traceback
from dataclasses import dataclass, field

import torch

from ..errors import UsageError
from .files import read_source  # noqa: F401 -- re-exported for callers
from .trace import Trace


# --- reading the learner's file ---------------------------------------------------------------

@dataclass
class LearnerFile:
    path: str
    source: str
    stmts: list[ast.stmt]
    codes: list  # one compiled code object per top-level statement
    writes: list[set[str]]  # names each statement assigns or changes in place


def _bases(target: ast.AST) -> set[str]:
    """The variable a target writes into: dC for `dC[ix]`, `dC.data`, `dC`."""
    if isinstance(target, ast.Name):
        return {target.id}
    if isinstance(target, (ast.Subscript, ast.Attribute, ast.Starred)):
        return _bases(target.value)
    if isinstance(target, (ast.Tuple, ast.List)):
        return set().union(*(_bases(t) for t in target.elts)) if target.elts else set()
    return set()


def writes_of(stmt: ast.stmt) -> set[str]:
    """Names a statement assigns, augments, or changes through an in-place method (`dC.index_add_(...)`)."""
    names: set[str] = set()
    for sub in ast.walk(stmt):
        if isinstance(sub, ast.Assign):
            for t in sub.targets:
                names |= _bases(t)
        elif isinstance(sub, (ast.AugAssign, ast.AnnAssign, ast.For, ast.NamedExpr)):
            names |= _bases(sub.target)
        elif isinstance(sub, (ast.FunctionDef, ast.ClassDef)):
            names.add(sub.name)
        elif isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute):
            attr = sub.func.attr
            if attr.endswith("_") and not attr.startswith("_"):  # torch's in-place convention
                names |= _bases(sub.func.value)
    return names


def parse_learner(path: str, source: str) -> LearnerFile:
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as e:
        raise UsageError(f"{path}:{e.lineno}: syntax error ({e.msg})") from None
    codes = [compile(ast.Module([s], type_ignores=[]), path, "exec") for s in tree.body]
    return LearnerFile(path, source, tree.body, codes, [writes_of(s) for s in tree.body])


def stmt_source(lf: LearnerFile, i: int) -> str:
    text = ast.get_source_segment(lf.source, lf.stmts[i]) or ast.unparse(lf.stmts[i])
    first = text.splitlines()[0]
    return first + (" ..." if "\n" in text else "")


def error_line(exc: BaseException, path: str, default: int) -> int:
    """The deepest line of the learner's file in the traceback."""
    line = default
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == path and frame.lineno:
            line = frame.lineno
    return line


def describe_exc(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


# --- namespaces ----------------------------------------------------------------------------------

def silent_cmp(s, dt, t):
    """Notebooks call the lecture's cmp; while checking, the table says it all."""


def fresh_namespace(trace: Trace) -> dict:
    """The forward values (copies, so in-place edits cannot reach the trace) plus torch, F, n, ..."""
    ns = {k: (v.clone() if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in trace.namespace.items()}
    ns["cmp"] = silent_cmp
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


def run_one(code, ns: dict, dtype, path: str, lineno: int) -> tuple[int, str] | None:
    """Execute one statement; return (line, message) if it raised. The learner's prints are dropped."""
    try:
        with default_dtype(dtype), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
            exec(code, ns)
    except (Exception, SystemExit) as e:  # noqa: BLE001 -- any error in the learner's code is a result
        return error_line(e, path, lineno), describe_exc(e)
    finally:
        if "cmp" in ns and ns["cmp"] is not silent_cmp:  # a pasted notebook's own cmp reads t.grad: mute it
            ns["cmp"] = silent_cmp
    return None


# --- teacher forcing ------------------------------------------------------------------------------

@dataclass
class Forced:
    """What a teacher-forced run saw for every judged gradient."""
    values32: dict = field(default_factory=dict)  # dvar -> value at its last assignment (a copy)
    values64: dict = field(default_factory=dict)
    lines: dict = field(default_factory=dict)  # dvar -> line of its last assignment
    errors: dict = field(default_factory=dict)  # dvar -> (line, message) of a statement that raised
    aliased: dict = field(default_factory=dict)  # dvar -> (line, source) of the statement that changed it later
    problems: list = field(default_factory=list)  # (line, message) of errors that touch no gradient


def _copy(v):
    return v.clone() if torch.is_tensor(v) else v


def run_forced(lf: LearnerFile, t32: Trace, t64: Trace | None, judged: list[str], given: list[str]) -> Forced:
    dvars = {"d" + x: x for x in judged}
    last = {}
    for i, w in enumerate(lf.writes):
        for name in w:
            if name in dvars:
                last[name] = i
    ns32 = fresh_namespace(t32)
    ns64 = fresh_namespace(t64) if t64 is not None else None
    for x in given:
        ns32["d" + x] = t32.grads[x].clone()
        if ns64 is not None:
            ns64["d" + x] = t64.grads[x].clone()
    out = Forced()
    placed: dict[str, tuple] = {}  # dvar -> (the tensor we put in, its value then)
    failed64: set[str] = set()  # gradients whose float64 re-run raised: judged in float32 only

    def force(dvar):
        x = dvars[dvar]
        ns32[dvar] = t32.grads[x].clone()
        placed[dvar] = (ns32[dvar], ns32[dvar].clone())
        if ns64 is not None:
            ns64[dvar] = t64.grads[x].clone()

    for i, code in enumerate(lf.codes):
        lineno = lf.stmts[i].lineno
        err = run_one(code, ns32, torch.float32, lf.path, lineno)
        if ns64 is not None and run_one(code, ns64, torch.float64, lf.path, lineno) is not None:
            failed64.update(w for w in lf.writes[i] if w in dvars)  # e.g. `.float()` meeting float64 inputs
        if err is not None:
            hit = [w for w in lf.writes[i] if w in dvars]
            for w in hit:
                out.errors.setdefault(w, err)
            if not hit:
                out.problems.append(err)
        # a judged gradient changed in place by a later line: an alias without .clone()
        for dvar, (obj, snapshot) in list(placed.items()):
            if dvar in out.aliased:
                continue
            try:
                changed = obj.shape != snapshot.shape or not torch.equal(obj, snapshot)
            except RuntimeError:
                changed = True
            if changed:
                out.aliased[dvar] = (lineno, stmt_source(lf, i))
                force(dvar)
        for dvar, j in last.items():
            if j != i:
                continue
            out.values32[dvar] = _copy(ns32.get(dvar))
            if ns64 is not None:
                out.values64[dvar] = None if dvar in failed64 else _copy(ns64.get(dvar))
            out.lines[dvar] = lineno
            force(dvar)
    return out


def run_plain(lf: LearnerFile, t32: Trace, judged: list[str], given: list[str]) -> dict:
    """The whole file as a notebook would run it: no teacher forcing; the lecture's cmp at the end."""
    from .verdicts import plain_cmp

    ns = fresh_namespace(t32)
    for x in given:
        ns["d" + x] = t32.grads[x].clone()
    for i, code in enumerate(lf.codes):
        run_one(code, ns, torch.float32, lf.path, lf.stmts[i].lineno)
    return {x: plain_cmp(ns.get("d" + x), t32.grads[x]) for x in judged}


# --- a backward(...) function ------------------------------------------------------------------

def call_backward(lf: LearnerFile, fname: str, trace: Trace, dtype) -> tuple[dict | None, tuple[int, str] | None]:
    """Define the file's functions, call `fname` with forward values by parameter name, normalise its result."""
    fn, err = define_function(lf, fname, dtype)
    if err is not None:
        return None, err
    return invoke(fn, fname, trace.namespace, trace.params, dtype, lf.path, copy=True)


def define_function(lf: LearnerFile, fname: str, dtype):
    """Run the file's top level (imports, defs) and return its function `fname`."""
    ns = {"torch": torch, "F": torch.nn.functional, "__name__": "__ninjagrad_check__"}
    for i, code in enumerate(lf.codes):
        err = run_one(code, ns, dtype, lf.path, lf.stmts[i].lineno)
        if err is not None:
            return None, err
    fn = ns.get(fname)
    if not callable(fn):
        raise UsageError(f"{lf.path}: defines no function `{fname}(...)`; start from `ninjagrad exercise 4`")
    return fn, None


def invoke(fn, fname: str, namespace: dict, params: tuple[str, ...], dtype, path: str, copy: bool = True):
    """Call fn with the forward values its parameters name; (grads by parameter name, None) or (None, error)."""
    available = {k: (v.clone() if copy and torch.is_tensor(v) and v.is_floating_point() else v)
                 for k, v in namespace.items()}
    kwargs = {}
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.name in available:
            kwargs[p.name] = available[p.name]
        elif p.default is p.empty:
            names = ", ".join(k for k, v in available.items() if torch.is_tensor(v) or isinstance(v, int))
            raise UsageError(f"{path}:{fn.__code__.co_firstlineno}: {fname}() asks for `{p.name}`, which the "
                             f"forward does not define; parameters are looked up by name among: {names}")
    line = fn.__code__.co_firstlineno
    try:
        with default_dtype(dtype), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
            result = fn(**kwargs)
    except (Exception, SystemExit) as e:  # noqa: BLE001
        return None, (error_line(e, path, line), describe_exc(e))
    return normalise_grads(result, params, fname, line)


def normalise_grads(result, params: tuple[str, ...], fname: str = "backward", line: int = 0):
    """A dict {name or d<name>: grad} or a sequence in parameter order -> {name: grad}."""
    if isinstance(result, dict):
        return {(k[1:] if isinstance(k, str) and k not in params and k[1:] in params else k): v
                for k, v in result.items()}, None
    if isinstance(result, (list, tuple)) and len(result) == len(params):
        return dict(zip(params, result)), None
    got = f"a {type(result).__name__}" + (f" of length {len(result)}" if isinstance(result, (list, tuple)) else "")
    return None, (line, f"{fname}() returned {got}; return a dict {{'C': dC, ...}} or a list in the order "
                        f"{', '.join(params)}")
