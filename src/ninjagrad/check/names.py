"""What a learner's own code says about their names, and what reads autograd's answer.

- Compare calls. Learners check each gradient with a helper: the lecture's `cmp('logit_maxes',
  dlogit_maxes, logit_maxes)` or one of their own (`compare_grad`, `check`, ...). Any call with a
  string, a gradient variable and a forward tensor says which name holds which gradient, whatever
  the helper is called: `cmp('logit_maxes', dlogits_maxes, logit_maxes)` means dlogits_maxes is
  d(logit_maxes). Those helpers read `.grad`, so the checker does not run their calls.
- Autograd. `dX = X.grad`, `torch.autograd.grad(...)` and `loss.backward()` read autograd's answer;
  a gradient computed from them (directly or through other variables) is not hand-written.
- "Did you mean": the closest assigned name to a gradient nobody assigned.

Only the AST is read here (no torch).
"""
from __future__ import annotations

import ast
import difflib
from dataclasses import dataclass

from .statements import Unit, reads_of

AUTOGRAD_FUNCTIONS = ("torch.autograd.grad", "autograd.grad", "torch.autograd.backward", "autograd.backward",
                      "torch.autograd.functional", "torch.func.", "functorch.", "torch.func", "functorch",
                      "torch.enable_grad", "torch.set_grad_enabled", "torch.autograd.enable_grad")
AUTOGRAD_METHODS = ("backward", "requires_grad_", "retain_grad", "register_hook")


def dotted(node: ast.AST) -> str:
    """`torch.autograd.grad` for the AST of that expression ("" when it is not a dotted name)."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


SUSPECT_MODULES = {"gc", "inspect", "ctypes", "builtins", "importlib", "ninjagrad", "subprocess", "socket",
                   "signal", "multiprocessing", "pickle", "marshal", "threading", "resource", "pty", "shutil"}
SUSPECT_NAMES = {"__import__", "__builtins__", "globals", "vars", "locals", "exec", "eval", "compile", "setattr",
                 "delattr", "exit", "quit", "breakpoint"}
SUSPECT_CALLS = {"os._exit", "os.kill", "os.killpg", "os.abort", "os.fork", "os.system", "os.execv", "os.execvp",
                 "os.remove", "os.unlink", "os.rmdir", "os.rename", "os.replace", "sys.exit", "sys._getframe",
                 "sys.settrace", "sys.setprofile", "os.setsid", "os.popen", "os.spawnl", "os.putenv"}
FRAME_ATTRIBUTES = {"f_back", "f_globals", "f_locals", "f_builtins", "gi_frame", "tb_frame", "cr_frame"}
PATCHABLE = {"torch", "F", "nn", "np", "math", "sys", "os", "ninjagrad", "builtins"}


def tampering(node: ast.AST) -> str | None:
    """How a statement reaches beyond computing a gradient, or None: into the checker's process
    (gc, frames, builtins, dunders), into torch or a module (patching it), out of the run (exit,
    signals, processes, files)."""
    for sub in ast.walk(node):
        if isinstance(sub, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in sub.names]
            if isinstance(sub, ast.ImportFrom) and sub.module:
                names.append(sub.module)
            hit = [n for n in names if n.split(".")[0] in SUSPECT_MODULES]
            if hit:
                return f"imports {hit[0]}"
        elif isinstance(sub, ast.Name) and sub.id in SUSPECT_NAMES:
            return f"uses {sub.id}"
        elif isinstance(sub, ast.Attribute):
            if sub.attr.startswith("__") and sub.attr.endswith("__") or sub.attr in FRAME_ATTRIBUTES:
                return f"reaches `{ast.unparse(sub)}`"
            if dotted(sub) in SUSPECT_CALLS:
                return f"calls `{dotted(sub)}`"
        elif isinstance(sub, (ast.Assign, ast.AugAssign, ast.Delete)):
            targets = sub.targets if isinstance(sub, (ast.Assign, ast.Delete)) else [sub.target]
            for t in targets:
                base = t
                while isinstance(base, (ast.Attribute, ast.Subscript)):
                    base = base.value
                if isinstance(t, ast.Attribute) and isinstance(base, ast.Name) and base.id in PATCHABLE:
                    return f"changes `{ast.unparse(t)}`"
        elif isinstance(sub, ast.Raise) and sub.exc is not None:
            raised = dotted(sub.exc.func if isinstance(sub.exc, ast.Call) else sub.exc)
            if raised in ("SystemExit", "KeyboardInterrupt"):
                return f"raises {raised}"
    return None


def first_tampering(units: list[Unit]) -> tuple[Unit, str] | None:
    """The first statement that reaches beyond computing a gradient, and how."""
    for u in units:
        how = tampering(u.node) if u.node is not None else None
        if how:
            return u, how
    return None


def autograd_use(node: ast.AST) -> str | None:
    """How a statement reads autograd's answer (`hpreact.grad`, `loss.backward()`, ...), or None."""
    for sub in ast.walk(node):
        if isinstance(sub, ast.Attribute) and sub.attr == "grad" and isinstance(sub.ctx, ast.Load):
            return f"reads `{ast.unparse(sub)}`"
        if isinstance(sub, ast.Call):
            name = dotted(sub.func)
            if isinstance(sub.func, ast.Attribute) and sub.func.attr in AUTOGRAD_METHODS:
                return f"calls `{ast.unparse(sub.func)}()`"
            if any(k.arg == "requires_grad" and not (isinstance(k.value, ast.Constant) and not k.value.value)
                   for k in sub.keywords):
                return f"makes a tensor that requires grad (`{ast.unparse(sub)[:60]}`)"
            if name and any(name == f or name.startswith(f) for f in AUTOGRAD_FUNCTIONS):
                return f"calls `{name}`"
    return None


@dataclass
class CompareCall:
    helper: str  # the function's name: cmp, compare_grad, ...
    dvar: str  # the learner's gradient variable
    node: str  # the forward tensor it is compared with
    label: str  # the string they print
    unit: Unit


def compare_calls(units: list[Unit]) -> list[CompareCall]:
    """Every call `helper('label', dvar, tensor)` in the units, in order."""
    found = []
    for u in units:
        if u.node is None:
            continue
        for sub in ast.walk(u.node):
            if not (isinstance(sub, ast.Call) and len(sub.args) >= 3):
                continue
            helper = dotted(sub.func).split(".")[-1]
            a, d, t = sub.args[:3]
            if (helper and isinstance(a, ast.Constant) and isinstance(a.value, str) and isinstance(d, ast.Name)
                    and isinstance(t, ast.Name) and d.id != t.id):
                found.append(CompareCall(helper, d.id, t.id, a.value, u))
    return found


def learned_dvars(calls: list[CompareCall], nodes: set[str]) -> dict[str, str]:
    """node -> the learner's gradient variable, from their compare calls (the last call for a node wins)."""
    out = {}
    for c in calls:
        node = c.node if c.node in nodes else (c.label if c.label in nodes else None)
        if node is not None:
            out[node] = c.dvar
    return out


BOOKKEEPING_CALLS = ("retain_grad", "requires_grad_", "backward", "zero_grad")
BOOKKEEPING_ATTRS = ("grad", "requires_grad")


def autograd_bookkeeping(node: ast.AST) -> bool:
    """`t.retain_grad()`, `p.grad = None`, `p.requires_grad = True`: setting autograd up, not a gradient."""
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute) and sub.func.attr in BOOKKEEPING_CALLS:
            return True
        if isinstance(sub, ast.Assign) and any(isinstance(t, ast.Attribute) and t.attr in BOOKKEEPING_ATTRS
                                               for t in sub.targets):
            return True
    return False


def is_comparison(u: Unit, helpers: set[str]) -> bool:
    """A statement that only compares or sets autograd up (calls a compare helper, reads `.grad`,
    retains gradients) and assigns nothing: the checker's table replaces it, so it is not run."""
    if u.node is None:
        return False
    if isinstance(u.node, ast.Expr) and isinstance(u.node.value, ast.Call):
        if dotted(u.node.value.func).split(".")[-1] in helpers:
            return True
    if isinstance(u.node, ast.For) and all(
            isinstance(s, ast.Expr) and isinstance(s.value, ast.Call)
            and dotted(s.value.func).split(".")[-1] in helpers for s in u.node.body):
        return True
    if not u.writes - _loop_targets(u.node) and (autograd_use(u.node) or autograd_bookkeeping(u.node)
                                                 or "get_ipython" in reads_of(u.node)):
        return True
    return False


def _loop_targets(node: ast.AST) -> set[str]:
    names = set()
    for sub in ast.walk(node):
        if isinstance(sub, (ast.For, ast.comprehension)):
            names |= {n.id for n in ast.walk(sub.target) if isinstance(n, ast.Name)}
    return names


def autograd_taint(units: list[Unit]) -> dict[str, tuple[Unit, str]]:
    """Variables whose value comes from autograd, at the end of the units: name -> (where, how).

    A variable is tainted by a statement that reads autograd's answer or a tainted variable, and
    cleared when a later statement assigns it afresh from clean values."""
    tainted: dict[str, tuple[Unit, str]] = {}
    for u in units:
        if u.node is None:
            continue
        how = autograd_use(u.node)
        src = (u, how) if how else next((tainted[r] for r in reads_of(u.node) if r in tainted), None)
        if src is not None:
            for w in u.writes:
                tainted[w] = src
        elif isinstance(u.node, ast.Assign):
            for t in u.node.targets:
                if isinstance(t, ast.Name):
                    tainted.pop(t.id, None)
    return tainted


def did_you_mean(name: str, candidates) -> str | None:
    """The candidate closest to `name` (case and underscores aside), if any is close."""
    def key(s):
        return s.lower().replace("_", "")
    pool = {key(c): c for c in candidates if c != name}
    hit = difflib.get_close_matches(key(name), list(pool), n=1, cutoff=0.8)
    return pool[hit[0]] if hit else None


def gradient_sources(units: list[tuple[int, Unit]], last: dict[str, int], given=()) -> dict[str, set[str]]:
    """For each gradient variable, at its last assignment: the gradient variables its value comes
    from (through any scratch variables), read statically. A judged gradient is its own source once
    judged (teacher forcing puts autograd's value there); a given one is its own source from the start.

    `dlogit_maxes = (-dnorm_logits).sum(1, keepdim=True)` -> {dnorm_logits}; a fused
    `dlogits = F.softmax(logits, 1) ...` -> {} (it comes from the forward alone)."""
    deps: dict[str, set[str]] = {d: {d} for d in given}
    out: dict[str, set[str]] = {}
    for i, u in units:
        if u.node is None:
            continue
        src: set[str] = set()
        for r in reads_of(u.node):
            src |= deps.get(r, set())
        fresh = isinstance(u.node, ast.Assign) and all(isinstance(t, ast.Name) for t in u.node.targets)
        for w in u.writes:
            deps[w] = set(src) if fresh else deps.get(w, set()) | src
        for d, j in last.items():
            if j == i:
                out[d] = set(deps.get(d, set()))
                deps[d] = {d}
    return out
