"""The learner's statements for one exercise, and what they assign: read without torch.

A program is units (statements.py) in the order they run, less the compare calls that only print
(names.py), with the learner's names for the gradients. `static_nodes` reads an exercise's forward
and solution the same way, so that listing exercises never imports torch.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field

from .names import compare_calls, is_comparison, learned_dvars
from .statements import Unit, reads_of, setup_end, split_units


@dataclass
class Program:
    """The learner's statements for one exercise, in the order they run."""
    path: str
    units: list[Unit]
    dvars: dict[str, str] = field(default_factory=dict)  # node -> the learner's name for its gradient
    helpers: set[str] = field(default_factory=lambda: {"cmp"})  # compare helpers (their calls are not run)
    ref: tuple = ("all",)  # which units, for a learner's side that read the same submission: ("all",) or
    #                         ("found", k): exercise k of its notebook layout

    def __post_init__(self):
        self.helpers = self.helpers | {c.helper for c in compare_calls(self.units)}
        self.skip = {i for i, u in enumerate(self.units) if is_comparison(u, self.helpers)}

    def learn(self, nodes: set[str]):
        """Take the learner's names for the gradients of `nodes` from their compare calls."""
        self.dvars = {**self.dvars, **learned_dvars(compare_calls(self.units), nodes)}  # its own calls win

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




def forward_names(source: str) -> set[str]:
    """Every name a forward script's steps (after its setup section) assign or read."""
    tree = ast.parse(source)
    names: set[str] = set()
    for node in tree.body[setup_end(tree):]:
        if isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)} | set(reads_of(node.value))
    return names


def static_nodes(ex) -> list[str]:
    """The gradients an exercise judges, from its forward script, in the order its solution finishes them."""
    if ex.judge:
        return list(ex.judge)
    names = forward_names(ex.read("forward.py"))
    sol = parse_learner(ex.path("solution.py"), ex.read("solution.py"))
    last = {}
    for i, u in enumerate(sol.units):
        for v in u.writes:
            last[v] = i
    return sorted((x for x in names if "d" + x in last), key=lambda x: last["d" + x])
