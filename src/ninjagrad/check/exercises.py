"""Exercises are data: one folder each under ninjagrad/exercises, read from here.

A folder holds exercise.json (id, title, model settings, what is judged), forward.py (the
straight-line forward script), template.py, solution.py, hints.md and derivations.md. An exercise
without a model creates its inputs in forward.py's setup section (see setup.py), exactly as a user's
`ninjagrad check --forward` script does.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

from ..errors import UsageError
from ..textfile import read_utf8

TEMPLATE_TAG = re.compile(r"^#\s*ninjagrad exercise (\d+)\b", re.MULTILINE)


@dataclass
class Exercise:
    id: int
    title: str
    folder: str  # folder name inside ninjagrad/exercises ("" for a user's forward script)
    kind: str  # "statements": top-level d<name> variables; "function": a backward(...) returning grads
    model: str | None = None  # whose init and batch give the inputs; None: the forward's setup section does
    config: dict = field(default_factory=dict)  # that model's config fields (vocab_size comes from the data)
    batch_size: int = 0  # the model's batch; 0: n from the setup section (for diagnoses such as n/(n-1))
    output: str = "loss"  # the scalar the forward script ends with
    judge: list[str] | None = None  # nodes to judge; None: every node of the forward script
    given: list[str] = field(default_factory=list)  # nodes whose reference gradient the namespace provides
    function: str = "backward"  # for kind "function": the function the file defines
    seed: int = 2147483647  # the lecture's generator seed: init, then the minibatch
    n: int | None = None  # the count a mean or Bessel's n-1 divides by, for diagnoses (default: the batch)
    forward_file: str | None = None  # a user's forward script (`ninjagrad check --forward`), read from disk
    forward_of: str | None = None  # the folder whose forward.py this exercise shares (None: its own)
    given_upstream: bool = False  # also give the gradients a notebook holds by then (those before the judged)

    def _folder(self, filename: str) -> str:
        return self.forward_of if filename == "forward.py" and self.forward_of else self.folder

    def read(self, filename: str) -> str:
        if self.forward_file is not None and filename == "forward.py":
            return read_utf8(self.forward_file, "a Python file")
        return (resources.files("ninjagrad") / "exercises" / self._folder(filename) / filename).read_text(
            encoding="utf-8")

    def path(self, filename: str) -> str:
        """A readable name for messages (the package-relative path, or the user's file)."""
        if self.forward_file is not None and filename == "forward.py":
            return self.forward_file
        return f"ninjagrad/exercises/{self._folder(filename)}/{filename}"


def forward_exercise(path: str) -> Exercise:
    """A user's forward script as an exercise: every node judged, inputs from its setup section."""
    return Exercise(id=0, title=f"your forward script {path}", folder="", kind="statements", forward_file=path)


@cache
def all_exercises() -> dict[int, Exercise]:
    root = resources.files("ninjagrad") / "exercises"
    found = {}
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        meta = entry / "exercise.json"
        if not entry.is_dir() or not meta.is_file():
            continue
        d = json.loads(meta.read_text(encoding="utf-8"))
        ex = Exercise(folder=entry.name, **d)
        found[ex.id] = ex
    return found


def get_exercise(number: int) -> Exercise:
    exercises = all_exercises()
    if number not in exercises:
        raise UsageError(f"--exercise {number}: no such exercise; choose one of "
                         f"{', '.join(str(i) for i in exercises)} (see `ninjagrad exercise --list`)")
    return exercises[number]


def exercise_of_file(path: str | Path, source: str) -> int | None:
    """The id a template carries in its first lines (`# ninjagrad exercise N`)."""
    m = TEMPLATE_TAG.search(source[:2000])
    return int(m.group(1)) if m else None


def sections(markdown: str) -> dict[str, str]:
    """`## name` sections of a markdown file, by name (several names may share one: `## a, b`)."""
    out: dict[str, str] = {}
    current: list[str] = []
    lines: list[str] = []

    def flush():
        for name in current:
            out[name] = "\n".join(lines).strip()

    for line in markdown.splitlines():
        if line.startswith("## "):
            flush()
            current = [s.strip() for s in line[3:].split(",")]
            lines = []
        elif current:
            lines.append(line)
    flush()
    return out
