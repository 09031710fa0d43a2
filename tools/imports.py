"""The import graph of src/ninjagrad: every module's imports of other ninjagrad modules, at the top of a
file or inside a function, and the cycles among them.

    python tools/imports.py            # the cycles (none: exit 0), then each module's imports
    python tools/imports.py --cycles   # the cycles only

A package's own `__init__` is not counted as an import of its modules (Python runs it first, whatever
imports them): `from .fast import X` in engines/fast_cuda.py is an edge to engines.fast alone.
tests/test_structure.py holds the graph to having no cycle.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "ninjagrad"


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((SRC / PACKAGE).rglob("*.py"))}


def resolve(node: ast.ImportFrom, here: str, is_package: bool, known: set[str]) -> list[str]:
    """The ninjagrad modules that `from X import a, b` names: X itself, or X.a where that is a module."""
    if node.level:
        base = here.split(".") if is_package else here.split(".")[:-1]
        base = base[:len(base) - node.level + 1]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known]
    return subs or ([target] if target in known else [])


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every ninjagrad module the file imports, wherever the import statement stands."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom):
            out |= set(resolve(node, name, path.name == "__init__.py", known))
    return out - {name}


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected group of modules that import each other (Tarjan)."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return groups


def main(argv: list[str]) -> int:
    g = graph()
    found = cycles(g)
    for group in found:
        print("cycle among:", ", ".join(group))
    if "--cycles" not in argv:
        for name in sorted(g):
            print(f"{name}: {', '.join(sorted(g[name])) or '-'}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
