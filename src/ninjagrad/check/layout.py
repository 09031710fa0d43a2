"""Where the exercises are in a learner's submission.

A plain backward file (a template, or one exercise cell pasted into a .py file) is one exercise:
the number its first line carries, `--exercise N`, or what it assigns (only dlogits: exercise 2;
only dhprebn: exercise 3; a `backward(...)` function: exercise 4; otherwise exercise 1).

A notebook (or a script holding the whole notebook) is read as the lecture lays it out, whatever the
learner changed around it:

- the setup and the forward: every cell up to the last top-level `loss = ...` before the first
  statement that assigns the gradient d<name> of something the forward assigned;
- exercises 1-3: the statements after it, split where a markdown cell or a cell's leading comment
  says "Exercise N", or where the code itself shows the next exercise (`loss_fast =
  F.cross_entropy(...)` opens exercise 2, a `*_fast` batchnorm with .var/.std opens exercise 3);
  learners add scratch cells, markdown and second attempts anywhere in between;
- exercise 4: a training loop whose body computes `loss` and then the gradients by hand. One pass
  of its body stands for the loop: its init (the cell's statements before the loop), its
  minibatch and forward up to `loss`, and its backward up to the parameter update.

Only the AST is read here (no torch); the statements run in worker processes.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

from .names import compare_calls, dotted, learned_dvars
from .statements import Unit, reads_of, unit_of
from .submission import Cell, Submission

MARKER = re.compile(r"^\W*exercise\s*#?\s*([1-4])\b", re.IGNORECASE)
EX2_NODE, EX3_NODE, EX3_GIVEN = "logits", "hprebn", "hpreact"


@dataclass
class Loop:
    """Exercise 4's training loop, unrolled once."""
    unit: Unit  # the loop statement (a `for`, perhaps inside a `with`)
    before: list[Unit]  # the statements between the forward (or the notebook's start) and it: its init
    target: ast.expr | None  # the loop variable, bound to the loop's first value
    iterable: ast.expr | None
    forward: list[Unit]  # the body up to and including `loss = ...`
    backward: list[Unit]  # the body after it, up to the parameter update
    grads: list[str] = field(default_factory=list)  # the names in `grads = [dC, dW1, ...]`
    params: list[str] = field(default_factory=list)  # the names in `parameters = [C, W1, ...]`


@dataclass
class Found:
    """One exercise in a submission: the learner's statements for it."""
    exercise: int
    units: list[Unit]
    attempted: bool = True  # False for an untouched template (`dlogits = None # TODO`)
    judged: list[str] | None = None  # forward nodes judged; None: the exercise's own list
    given: list[str] = field(default_factory=list)  # nodes whose reference gradient is given besides
    loop: Loop | None = None  # exercise 4 in a notebook

    @property
    def cells(self) -> list[int]:
        return sorted({u.cell for u in self.units if u.cell is not None})


@dataclass
class Layout:
    setup: list[Unit]  # the notebook's statements up to and including the forward's `loss = ...`
    loss: Unit | None  # that statement (None: a plain file, judged against an exercise's forward)
    found: list[Found]

    @property
    def own_forward(self) -> bool:
        return self.loss is not None or any(f.loop is not None for f in self.found)


# --- small readings of a statement --------------------------------------------------------------------

def assigns_loss(u: Unit) -> bool:
    return isinstance(u.node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "loss" for t in u.node.targets)


def simple_target(u: Unit) -> str | None:
    """X for `X = expression`."""
    if isinstance(u.node, ast.Assign) and len(u.node.targets) == 1 and isinstance(u.node.targets[0], ast.Name):
        return u.node.targets[0].id
    return None


def _is_blank(value: ast.AST) -> bool:
    """None, `...`, or a tuple/list of them: an untouched template's `dlogits = None # TODO`."""
    if isinstance(value, ast.Constant):
        return value.value is None or value.value is Ellipsis
    if isinstance(value, (ast.Tuple, ast.List)):
        return all(_is_blank(v) for v in value.elts)
    return False


def assigns_something(u: Unit, names: set[str]) -> bool:
    """Whether the unit gives one of `names` a value other than None/`...`."""
    if not u.writes & names:
        return False
    if isinstance(u.node, ast.Assign) and _is_blank(u.node.value):
        return False
    return True


def _calls(node: ast.AST) -> list[str]:
    return [dotted(s.func) for s in ast.walk(node) if isinstance(s, ast.Call)]


def code_marker(u: Unit) -> int | None:
    """The exercise a statement opens by its code: exercise 2's fused loss, 3's fused batchnorm, 4's loop."""
    if u.node is None:
        return None
    if _training_loop(u.node) is not None:
        return 4
    target = simple_target(u)
    if target is None or target == "loss":
        return None
    calls = _calls(u.node.value)
    if any(c.endswith("cross_entropy") for c in calls):
        return 2
    if "fast" in target and any(c.split(".")[-1] in ("var", "std", "var_mean") for c in calls):
        return 3
    return None


def _training_loop(node: ast.AST) -> ast.For | None:
    """The `for` loop a statement is (or wraps in `with` blocks) when its body computes `loss`."""
    while isinstance(node, ast.With) and len(node.body) == 1:
        node = node.body[0]
    if isinstance(node, (ast.For, ast.While)) and any(
            isinstance(s, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "loss" for t in s.targets)
            for s in _flat(node.body)):
        return node
    return None


def _flat(body: list[ast.stmt]) -> list[ast.stmt]:
    """A block's statements, `with` blocks opened (a backward under `with torch.no_grad():`)."""
    out = []
    for s in body:
        out += _flat(s.body) if isinstance(s, ast.With) else [s]
    return out


def markers_in(lines: list[str]) -> int | None:
    """The last "Exercise N" that opens a line of `lines` (comment lines, or a markdown cell's)."""
    found = None
    for ln in lines:
        m = MARKER.match(ln.strip().lstrip("#").strip())
        if m:
            found = int(m.group(1))
    return found


# --- plain files ----------------------------------------------------------------------------------

def infer_exercise(units: list[Unit], ex1_nodes: set[str]) -> int | None:
    """The exercise a plain backward file answers, from what it assigns (None: nothing to judge)."""
    if any(isinstance(u.node, ast.FunctionDef) and u.node.name == "backward" for u in units):
        return 4
    dvars = learned_dvars(compare_calls(units), ex1_nodes)
    written = set().union(*(u.writes for u in units)) if units else set()
    nodes = {x for x in ex1_nodes if dvars.get(x, "d" + x) in written}
    if not nodes:
        return None
    if nodes <= {EX2_NODE}:
        return 2
    if nodes <= {EX3_NODE}:
        return 3
    return 1


# --- notebooks --------------------------------------------------------------------------------------

def static_forward(units: list[Unit], k: int) -> set[str]:
    """The names the `loss = ...` at units[k] depends on through plain `name = expression` lines."""
    needed = set(reads_of(units[k].node.value))
    names = set()
    for u in reversed(units[:k]):
        if not isinstance(u.node, ast.Assign):
            continue
        made = u.writes & needed
        if made:
            needed -= made
            names |= made
            needed |= set(reads_of(u.node.value))
    return names


def forward_end(units: list[Unit]) -> int | None:
    """The index of the `loss = ...` that ends the forward: of every top-level `loss = ...`, the one
    whose forward's names get the most gradients d<name> assigned after it (a toy `loss` in a scratch
    cell has few); the later one on a tie."""
    best, best_score = None, 0
    for k, u in enumerate(units):
        if not assigns_loss(u):
            continue
        names = static_forward(units, k)
        written = set().union(*(v.writes for v in units[k + 1:])) if k + 1 < len(units) else set()
        calls = {c.dvar for c in compare_calls(units[k + 1:]) if c.node in names}
        score = len({w for w in written if w[:1] == "d" and w[1:] in names} | (calls & written))
        if score and score >= best_score:
            best, best_score = k, score
    return best


def regions(sub: Submission, start: Unit | None) -> list[tuple[Unit, int]]:
    """Every statement after `start` with the exercise it belongs to (1 until a marker says otherwise)."""
    out: list[tuple[Unit, int]] = []
    current = 1
    started = start is None
    for cell in sub.cells:
        if cell.kind == "markdown":
            m = markers_in(cell.text.split("\n")[:3])
            if started and m:
                current = m
            continue
        lines = cell.python.split("\n")
        pos = 0
        for u in cell.units:
            m = markers_in(lines[pos: u.line - 1])
            pos = u.end
            if not started:
                started = u is start
                continue
            current = m or current
            current = code_marker(u) or current
            out.append((u, current))
    return out


def loop_of(u: Unit, cell: Cell, before: list[Unit]) -> Loop | None:
    """Exercise 4's loop: its init, its forward up to `loss`, its backward up to the update."""
    loop = _training_loop(u.node)
    if loop is None:
        return None
    body = [unit_of(s, cell.python, u.filename, u.cell) for s in _flat(loop.body)]
    k = max(i for i, b in enumerate(body) if assigns_loss(b))
    rest = body[k + 1:]
    # the backward ends at the last parameter update (a learner may update with p.grad first, then
    # compute their own), or at the loop's own break; updates are not run
    updates = [i for i, b in enumerate(rest) if _updates(b.node)]
    breaks = [i for i, b in enumerate(rest) if _breaks(b.node)]
    end = updates[-1] if updates else (breaks[0] if breaks else len(rest))
    backward = [b for i, b in enumerate(rest[:end]) if i not in updates]
    target = loop.target if isinstance(loop, ast.For) else None
    iterable = loop.iter if isinstance(loop, ast.For) else None
    grads = _name_list(backward + body[:k], "grads")
    params = _name_list(before, "parameters")
    return Loop(u, before, target, iterable, body[: k + 1], backward, grads, params)


def _own_level(node: ast.AST):
    """The node and its descendants, except the bodies of loops nested in it."""
    yield node
    for child in ast.iter_child_nodes(node):
        if not isinstance(child, (ast.For, ast.While)):
            yield from _own_level(child)


def _breaks(node: ast.AST) -> bool:
    """A `break` or `continue` of the training loop itself (not of a loop inside the backward)."""
    return any(isinstance(s, (ast.Break, ast.Continue)) for s in _own_level(node))


def _updates(node: ast.AST) -> bool:
    """A parameter update: `p.data += ...`, `optimizer.step()`."""
    for s in ast.walk(node):
        if isinstance(s, (ast.Assign, ast.AugAssign)):
            targets = s.targets if isinstance(s, ast.Assign) else [s.target]
            if any(isinstance(t, ast.Attribute) and t.attr == "data" for t in targets):
                return True
        if isinstance(s, ast.Call) and isinstance(s.func, ast.Attribute) and s.func.attr in ("step", "zero_grad"):
            return True
    return False


def _name_list(units: list[Unit], name: str) -> list[str]:
    """The names in the last `name = [a, b, ...]` among the units ([] when there is none)."""
    out: list[str] = []
    for u in units:
        if simple_target(u) == name and isinstance(u.node.value, (ast.List, ast.Tuple)):
            elts = u.node.value.elts
            if all(isinstance(e, ast.Name) for e in elts):
                out = [e.id for e in elts]
    return out


def notebook_layout(sub: Submission) -> Layout:
    """The setup, the forward's end and the exercises of a notebook (or a whole-notebook script)."""
    units = sub.units()
    end = forward_end(units)
    loss = units[end] if end is not None else None
    setup = units[: end + 1] if end is not None else []
    if loss is not None:
        marked = regions(sub, loss)
    else:  # no forward before the exercises: perhaps exercise 4 alone
        marked = [(u, 4) for u in units if u.node is not None and _training_loop(u.node) is not None]
    cells = {c.index: c for c in sub.code_cells()}
    after = units[end + 1:] if end is not None else units
    by_exercise: dict[int, list[Unit]] = {}
    loops: list[Found] = []
    for u, ex in marked:
        loop = loop_of(u, cells[u.cell], after[: after.index(u)]) if ex == 4 else None
        if loop is not None:
            written = set().union(*(b.writes for b in loop.backward)) if loop.backward else set()
            dnames = {w for w in written if w.startswith("d")} | set(loop.grads)
            attempted = any(assigns_something(b, dnames) for b in loop.backward)
            loops.append(Found(4, loop.backward, attempted, loop=loop))
        elif ex in (1, 2, 3):
            by_exercise.setdefault(ex, []).append(u)
    assigned = set().union(*(u.writes for u in setup)) if setup else set()
    for ex in (2, 3):
        if ex not in by_exercise:
            fused = fused_answer(by_exercise.get(1, []), ex)
            if fused:
                by_exercise[ex] = fused
    found = [f for ex, us in sorted(by_exercise.items()) if (f := _statements_exercise(ex, us, assigned))]
    if loops:
        found.append(loops[-1])  # a second loop further down is the learner's later attempt
    return Layout(setup, loss, found)


def fused_answer(units: list[Unit], ex: int) -> list[Unit]:
    """Exercise 2 or 3 written among exercise 1's cells, without a marker: the last one-expression
    dlogits (from a softmax) or dhprebn (from dhpreact), and the same cell's lines that finish it."""
    name, sign = ("dlogits", "softmax") if ex == 2 else ("dhprebn", "dhpreact")
    start = None
    for i, u in enumerate(units):
        if simple_target(u) == name and (sign in _calls_and_reads(u.node.value)):
            start = i
    if start is None:
        return []
    out = [units[start]]
    for u in units[start + 1:]:
        if u.cell != units[start].cell or name not in u.writes or simple_target(u) == name:
            break
        out.append(u)
    return out


def _calls_and_reads(node: ast.AST) -> set[str]:
    return {c.split(".")[-1] for c in _calls(node)} | set(reads_of(node))


def _statements_exercise(ex: int, units: list[Unit], forward_names: set[str]) -> Found | None:
    """Exercise 1, 2 or 3 from its region's statements (None when the region assigns no gradient)."""
    calls = compare_calls(units)
    dvars = learned_dvars(calls, forward_names)
    if ex == 2:
        judged = [_fused_input(units, "cross_entropy") or EX2_NODE]
        given = []
    elif ex == 3:
        judged = [_fused_input(units, "mean") or EX3_NODE]
        given = [EX3_GIVEN]
    else:
        judged, given = None, []
    names = ({dvars.get(x, "d" + x) for x in judged} if judged else
             {dvars.get(x, "d" + x) for x in forward_names} | {c.dvar for c in calls})
    written = set().union(*(u.writes for u in units))
    if not written & names:
        return None
    attempted = any(assigns_something(u, names) for u in units)
    return Found(ex, units, attempted, judged, given)


def _fused_input(units: list[Unit], fn: str) -> str | None:
    """The tensor a fused exercise works on: `F.cross_entropy(logits, ...)`, `hprebn.mean(...)`."""
    for u in units:
        if u.node is None or code_marker(u) not in (2, 3):
            continue
        for s in ast.walk(u.node):
            if not isinstance(s, ast.Call):
                continue
            if fn == "cross_entropy" and dotted(s.func).endswith("cross_entropy") and s.args:
                if isinstance(s.args[0], ast.Name):
                    return s.args[0].id
            if fn == "mean" and isinstance(s.func, ast.Attribute) and s.func.attr == "mean":
                if isinstance(s.func.value, ast.Name):
                    return s.func.value.id
    return None


def plain_layout(sub: Submission, exercise: int) -> Layout:
    return Layout([], None, [Found(exercise, sub.units())])
