"""A learner's submission read as cells of Python: a .py file, a percent-format script, or a notebook.

Notebooks (.ipynb, nbformat 3 or 4) keep their cells and the cells' positions, so that verdicts can
name "cell 14, line 3". Each code cell is read as IPython reads it: a cell indented as a whole is
dedented, magics (`%matplotlib inline`, `%pip install`), shell lines (`!wget ...`) and help lines
(`torch.tanh?`) are blanked (the statement after `%time` is kept), and cell magics that run another
language (`%%bash`, `%%html`, ...) drop the cell. No torch is imported here.
"""
from __future__ import annotations

import ast
import json
import re
import textwrap
from dataclasses import dataclass, field

from ..errors import UsageError
from ..textfile import read_utf8
from .statements import Unit, ipython_dedent, split_units

KEEP_BODY = {"time", "timeit", "capture", "prun", "ninjagrad", "debug"}  # cell magics whose body is Python here
LINE_MAGIC = re.compile(r"^(\s*)%(?!%)([A-Za-z_]\w*)(.*)$")
CELL_MAGIC = re.compile(r"^\s*%%([A-Za-z_]\w*)(.*)$")
SHELL = re.compile(r"^(\s*)(?:[A-Za-z_]\w*\s*=\s*)?(?:!|%(?=[A-Za-z]))")  # `!ls`, `files = !ls`, `x = %env`
HELP = re.compile(r"^(\s*)(?:\?+[\w.]+|[\w.]+\?{1,2})\s*$")
PERCENT_CELL = re.compile(r"^# ?%%(.*)$", re.MULTILINE)
MAX_CODE = 2 << 20  # bytes of code a submission may hold (the lecture's notebook has ~20 KB)


@dataclass
class Cell:
    index: int | None  # position in the notebook counting every cell, from 1; None for a plain .py file
    kind: str  # "code" or "markdown"
    text: str  # the cell as written
    units: list[Unit] = field(default_factory=list)  # a code cell's top-level statements
    magic: str | None = None  # the cell magic it opens with ("ninjagrad", "time", ...)
    python: str = ""  # a code cell as Python (what its units were read from)


@dataclass
class Submission:
    path: str
    cells: list[Cell]
    notebook: bool  # cells from an .ipynb or a percent-format script, not one plain file

    def units(self) -> list[Unit]:
        return [u for c in self.cells if c.kind == "code" for u in c.units]

    def code_cells(self) -> list[Cell]:
        return [c for c in self.cells if c.kind == "code"]


def as_python(text: str) -> tuple[str, str | None]:
    """A cell's code as Python, line for line, and the cell magic it opens with (None: none).

    A cell magic that runs another language gives an empty cell."""
    text = ipython_dedent(text.replace("\r\n", "\n"))
    lines = text.split("\n")
    magic = None
    first = next((i for i, ln in enumerate(lines) if ln.strip()), None)
    if first is not None and (m := CELL_MAGIC.match(lines[first])):
        magic = m.group(1)
        if magic not in KEEP_BODY:
            return "", magic
        lines[first] = ""
    out = []
    for ln in lines:
        m = LINE_MAGIC.match(ln)
        if m and m.group(2) == "time" and m.group(3).strip():
            out.append(m.group(1) + m.group(3).lstrip())  # `%time dC = ...` runs dC = ...
        elif m or SHELL.match(ln) or HELP.match(ln):
            indent = ln[: len(ln) - len(ln.lstrip())]
            out.append(indent + "pass")  # keeps the line count, and a block that held only the magic
        else:
            out.append(ln)
    return "\n".join(out), magic


def code_cell(index: int | None, text: str, path: str) -> Cell:
    python, magic = as_python(text)
    name = f"{path}, cell {index}" if index is not None else path
    return Cell(index, "code", text, split_units(python, name, index), magic, python)


def read_submission(path: str) -> Submission:
    """The file at `path` as cells: a notebook's, a percent-format script's, or one cell for a .py file."""
    if path.endswith(".ipynb"):
        return read_notebook(path)
    text = read_utf8(path, "a Python file or a notebook", limit=MAX_CODE)
    if "marimo.App(" in text and "@app.cell" in text:
        marimo = read_marimo(path, text)
        if marimo is not None:
            return marimo
    if len(PERCENT_CELL.findall(text)) >= 2:
        return read_percent_script(path, text)
    return Submission(path, [code_cell(None, text, path)], notebook=False)


def read_percent_script(path: str, text: str) -> Submission:
    """A script split into cells by `# %%` lines (jupytext, VS Code, Spyder); `# %% [markdown]` cells
    are prose. Cell k's lines are numbered within cell k, as in the notebook it came from."""
    cells: list[Cell] = []
    marks = list(PERCENT_CELL.finditer(text))
    if marks[0].start() > 0 and text[: marks[0].start()].strip():
        cells.append(code_cell(1, text[: marks[0].start()], path))
    for k, m in enumerate(marks):
        body = text[m.end() + 1: marks[k + 1].start() if k + 1 < len(marks) else len(text)]
        index = len(cells) + 1
        if "markdown" in m.group(1) or "md" in m.group(1).split():
            cells.append(Cell(index, "markdown", "\n".join(ln.lstrip("# ") for ln in body.split("\n"))))
        else:
            cells.append(code_cell(index, body, path))
    return Submission(path, cells, notebook=True)


def read_marimo(path: str, text: str) -> Submission | None:
    """A marimo notebook: each `@app.cell` function's body (without its closing `return`) is a cell."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return None
    lines = text.split("\n")
    cells = []
    for node in tree.body:
        if not (isinstance(node, ast.FunctionDef) and any(
                "app.cell" in ast.unparse(d) for d in node.decorator_list)):
            continue
        body = node.body[:-1] if node.body and isinstance(node.body[-1], ast.Return) else node.body
        if not body:
            continue
        cell_text = textwrap.dedent("\n".join(lines[body[0].lineno - 1: body[-1].end_lineno]))
        cells.append(code_cell(len(cells) + 1, cell_text, path))
    return Submission(path, cells, notebook=True) if cells else None


def _cell_text(source) -> str:
    if isinstance(source, list):
        return "".join(s for s in source if isinstance(s, str))
    return source if isinstance(source, str) else ""


def read_notebook(path: str) -> Submission:
    """A Jupyter or Colab notebook (nbformat 4, or 3 with worksheets)."""
    text = read_utf8(path, "a notebook (.ipynb)")
    try:
        nb = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{path}:{e.lineno}: not a notebook: invalid JSON ({e.msg})") from None
    except RecursionError:
        raise UsageError(f"{path}: not a notebook: nested too deeply to read") from None
    if not isinstance(nb, dict):
        raise UsageError(f"{path}: not a notebook: a JSON {type(nb).__name__}, not an object with cells")
    raw = nb.get("cells")
    if raw is None and isinstance(nb.get("worksheets"), list):  # nbformat 3
        raw = [c for ws in nb["worksheets"] if isinstance(ws, dict) for c in ws.get("cells", [])]
    if not isinstance(raw, list):
        raise UsageError(f"{path}: not a notebook: no list of cells")
    cells = []
    code = 0
    for i, c in enumerate(raw, 1):
        if not isinstance(c, dict):
            continue
        kind = c.get("cell_type")
        body = _cell_text(c.get("source", c.get("input", "")))
        code += len(body)
        if code > MAX_CODE:
            raise UsageError(f"{path}: more than {MAX_CODE >> 20} MB of code and text in its cells; not a learner's "
                             "notebook")
        if kind == "code":
            cells.append(code_cell(i, body, path))
        elif kind in ("markdown", "heading"):
            cells.append(Cell(i, "markdown", body))
    return Submission(path, cells, notebook=True)
