"""The house rules of ../shared/STYLE.md that a program can check: imports form a tree, functions are short,
and nothing probes an engine, a model or a config for what it offers (the base classes say it)."""
from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "ninjagrad"
MAX_LINES = 60  # a function longer than this is split, or listed in LONG with the reason it is not
LONG: dict[str, str] = {}  # "path:function" -> why it stays long
# the exercises are learners' scripts (data)
OUTSIDE = ("exercises",)
PROBES: dict[str, str] = {}  # "path" -> why a probe stays there (none does)


def python_files():
    return [p for p in sorted(SRC.rglob("*.py")) if p.relative_to(SRC).parts[0] not in OUTSIDE]


def test_imports_form_a_tree():
    spec = importlib.util.spec_from_file_location("imports", REPO / "tools" / "imports.py")
    imports = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(imports)
    g = imports.graph()
    assert "ninjagrad.engines.fast" in g and g["ninjagrad.engines"], "the graph must see the package"
    assert imports.cycles(g) == []


def test_python_functions_are_short():
    long = []
    for path in python_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                key = f"{path.relative_to(SRC)}:{node.name}"
                if node.end_lineno - node.lineno + 1 > MAX_LINES and key not in LONG:
                    long.append(f"{key} ({node.end_lineno - node.lineno + 1} lines)")
    assert long == []


def c_functions(text: str):
    """(name, lines) of each function of a C file written as this project writes them: the signature from
    column 0, the body between a '{' and a '}' alone on their lines."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line == "{":
            start = i - 1
            while lines[start].startswith(" "):  # a signature continued on more lines
                start -= 1
            end = lines.index("}", i)
            name = re.search(r"(\w+(?:\(\w+\))?)\(", lines[start])
            yield (name.group(1) if name else lines[start]), end - start + 1


def test_c_functions_are_short():
    found = {}
    for path in sorted(SRC.glob("engines/*.[ch]")):
        for name, n in c_functions(path.read_text(encoding="utf-8")):
            found[f"{path.name}:{name}"] = n
    assert "fast_step_kernel.h:NAME(step)" in found  # the scan sees the kernels
    assert {k: n for k, n in found.items() if n > MAX_LINES and k not in LONG} == {}


def probes(tree: ast.AST):
    """hasattr(x, ...) on anything but a module, and getattr with a default."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id == "hasattr" and not (isinstance(node.args[0], ast.Name) and node.args[0].id == "os"):
                yield node.lineno
            if node.func.id == "getattr" and len(node.args) == 3:
                yield node.lineno


def test_nothing_is_probed_for_what_it_offers():
    found = {str(p.relative_to(SRC)) for p in python_files() if list(probes(ast.parse(p.read_text(encoding="utf-8"))))}
    assert found <= set(PROBES)


def test_the_probe_check_can_fail():
    assert list(probes(ast.parse("if hasattr(engine, 'sync'): pass\nx = getattr(model, 'reduce', None)\n"))) == [1, 2]
    assert list(probes(ast.parse("if hasattr(os, 'getloadavg'): pass\nx = getattr(args, flag)\n"))) == []
