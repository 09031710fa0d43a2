"""Reading a learner's file before any torch is imported: what it is, and what to judge in it.

A plain file answers one exercise (its tag, --exercise, --forward, or what it assigns). A notebook,
or a script that holds a whole notebook (its setup, its forward, then the exercises), is judged
exercise by exercise against its own forward (layout.py). Files that cannot be read at all (not
UTF-8, not a notebook, nothing to judge) are usage errors, said before any process starts.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import lru_cache

from ..errors import UsageError
from ..textfile import read_utf8
from .exercises import exercise_of_file, get_exercise
from .layout import infer_exercise, notebook_layout
from .submission import Submission, read_submission

NOT_NODES = {"torch", "F", "n", "Xb", "Yb", "range", "len"}


def read_source(path: str) -> str:
    return read_utf8(path, "a Python file")


@dataclass
class Plan:
    """How one file is judged."""
    notebook: bool  # exercise by exercise against the file's own forward
    exercise: int | None  # a plain file's exercise (None: a --forward script's, or a notebook)
    submission: Submission


@lru_cache(maxsize=1)
def lecture_nodes() -> frozenset[str]:
    """The names in exercise 1's forward that get a gradient (statically: every name but the inputs)."""
    tree = ast.parse(get_exercise(1).read("forward.py"))
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Assign):
            names |= {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
    return frozenset(names - NOT_NODES)


def plan(path: str, exercise: int | None, forward: str | None = None) -> Plan:
    """Read the file and decide how it is judged; a usage error when it cannot be."""
    sub = read_submission(path)
    if forward is not None:
        if exercise is not None:
            raise UsageError(f"--forward {forward} with --exercise {exercise}: give one of them; the forward "
                             "script is the exercise")
        try:  # unreadable or unparsable: said before starting a process (the rest is judged in the worker)
            ast.parse(read_source(forward), filename=forward)
        except SyntaxError as e:
            raise UsageError(f"{forward}:{e.lineno}: syntax error in the forward script ({e.msg})") from None
        return Plan(False, None, sub)
    if exercise is None and not sub.notebook:
        exercise = exercise_of_file(path, sub.cells[0].text if sub.cells else "")
    if exercise is not None:
        get_exercise(exercise)
        return Plan(False, exercise, sub)
    layout = notebook_layout(sub)
    loops = {id(f.loop.unit) for f in layout.found if f.loop is not None}
    outside = [u for u in sub.units() if id(u) not in loops]  # what the file assigns outside a training loop
    exercise = infer_exercise(outside, set(lecture_nodes()))
    if layout.loss is not None or (layout.found and exercise is None):
        return Plan(True, None, sub)  # a forward of its own (or exercise 4's loop alone): judged as a notebook
    if exercise is None:
        what = "notebook" if path.endswith(".ipynb") else "file"
        raise UsageError(f"{path}: nothing to judge: the {what} assigns no gradient of the lecture's forward "
                         "(dlogprobs, dlogits, dhprebn, ...); pass --exercise N, or --forward FORWARD.py for "
                         "your own forward")
    return Plan(False, exercise, sub)


def precheck(path: str, exercise: int | None, forward: str | None = None) -> int | None:
    """The exercise a plain file answers (None with a forward script or for a notebook)."""
    return plan(path, exercise, forward).exercise
