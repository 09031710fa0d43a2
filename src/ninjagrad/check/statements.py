"""Top-level statements of learner code, read tolerantly, and what each one reads and writes.

A learner's cell is split into units, one per top-level statement. A stretch of lines that does not
parse (an unfinished `dC =`, a stray bracket) becomes one unit of its own that carries the syntax
error, and the statements around it are read as usual: one broken line costs one verdict, not the
file. This is the leaf of the checker's imports: no torch, nothing else from the package.
"""
from __future__ import annotations

import ast
import re
import traceback
import warnings
from dataclasses import dataclass

# the name a broken line was about to assign: `dC =`, `dC[ix] +=`, `dlogits.data -=`
ASSIGNED = re.compile(r"^\s*([A-Za-z_]\w*)\s*(?:\[[^\n]*\]|\.\w+)?\s*(?:[-+*/@%]|//|\*\*)?=(?!=)", re.MULTILINE)
# lines that continue a block rather than start a statement
CONTINUES = re.compile(r"^(else|elif|except|finally|case)\b|^[)\]}]")
MAX_LOOKAHEAD = 200  # starts tried when joining lines into a statement that parses


@dataclass
class Unit:
    """One top-level statement of a cell or file, or a stretch of lines that does not parse."""
    cell: int | None  # the notebook cell it sits in (1: the notebook's first cell); None in a plain file
    line: int  # its first line, counted within its cell (within the file for a plain file)
    end: int  # its last line
    text: str  # the source as written
    node: ast.stmt | None  # None when it does not parse
    code: object = None  # compiled, ready to exec (None when it does not parse, or not compile on its own)
    error: str | None = None  # why it does not parse
    filename: str = "<learner>"  # the name its code is compiled under: tracebacks point there

    @property
    def where(self) -> str:
        return f"cell {self.cell}, line {self.line}" if self.cell is not None else f"line {self.line}"

    def first_line(self) -> str:
        lines = self.text.strip("\n").splitlines() or [""]
        return clip(lines[0].strip(), 120) + (" ..." if len(lines) > 1 else "")

    @property
    def writes(self) -> set[str]:
        if self.node is not None:
            return writes_of(self.node)
        return {m.group(1) for m in ASSIGNED.finditer(self.text)}


def _bases(target: ast.AST) -> set[str]:
    """The variable a target writes into: dC for `dC[ix]`, `dC.data`, `dC`."""
    if isinstance(target, ast.Name):
        return {target.id}
    if isinstance(target, (ast.Subscript, ast.Attribute, ast.Starred)):
        return _bases(target.value)
    if isinstance(target, (ast.Tuple, ast.List)):
        return set().union(*(_bases(t) for t in target.elts)) if target.elts else set()
    return set()


def writes_of(stmt: ast.AST) -> set[str]:
    """Names a statement assigns, augments, or changes through an in-place method (`dC.index_add_(...)`)."""
    names: set[str] = set()
    for sub in ast.walk(stmt):
        if isinstance(sub, ast.Assign):
            for t in sub.targets:
                names |= _bases(t)
        elif isinstance(sub, (ast.AugAssign, ast.AnnAssign, ast.For, ast.NamedExpr)):
            names |= _bases(sub.target)
        elif isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(sub.name)
        elif isinstance(sub, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in sub.names}
        elif isinstance(sub, ast.With):
            for item in sub.items:
                if item.optional_vars is not None:
                    names |= _bases(item.optional_vars)
        elif isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute):
            attr = sub.func.attr
            if attr.endswith("_") and not attr.startswith("_"):  # torch's in-place convention
                names |= _bases(sub.func.value)
    return names


def reads_of(node: ast.AST) -> list[str]:
    """Names a statement or expression reads, in order of first appearance."""
    seen: list[str] = []
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load) and sub.id not in seen:
            seen.append(sub.id)
    return seen


def ipython_dedent(text: str) -> str:
    """A cell indented as a whole, read as IPython reads it: the first line's indentation is removed
    from every line that starts with it."""
    lines = text.split("\n")
    first = next((ln for ln in lines if ln.strip()), "")
    indent = first[: len(first) - len(first.lstrip())]
    if not indent:
        return text
    return "\n".join(ln[len(indent):] if ln.startswith(indent) else ln for ln in lines)


def _starts(lines: list[str]) -> list[int]:
    """Indices of the lines that may start a top-level statement."""
    out = []
    for i, ln in enumerate(lines):
        s = ln.lstrip()
        if not s or s.startswith("#") or ln[:1] in (" ", "\t") or CONTINUES.match(s):
            continue
        out.append(i)
    return out


def _parse(chunk: str, filename: str):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            return ast.parse(chunk, filename=filename)
    except (SyntaxError, ValueError):  # ValueError: a NUL byte
        return None


def split_units(source: str, filename: str, cell: int | None = None) -> list[Unit]:
    """The top-level statements of `source`; stretches that do not parse become units with an error."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)  # `x[0, 1]` on a list: the learner's business
            tree = ast.parse(source, filename=filename)
    except (SyntaxError, ValueError):
        return _split_tolerantly(source, filename, cell)
    except (RecursionError, MemoryError):
        return [Unit(cell, 1, max(1, source.count("\n")), source, None, error="too deeply nested to read")]
    return [unit_of(node, source, filename, cell) for node in _opened(tree.body)]


MARKS = ("param", "data")  # a forward script's setup section marks its inputs with these


def setup_end(tree: ast.Module) -> int:
    """The index of a forward script's first forward statement: after the last statement that calls
    param(...) or data(...) (0: no setup section)."""
    def marks(node):
        return any(isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name) and sub.func.id in MARKS
                   for sub in ast.walk(node))
    return max((i + 1 for i, node in enumerate(tree.body) if marks(node)), default=0)


def is_main_guard(node: ast.stmt) -> bool:
    """`if __name__ == "__main__":`: a script's body, run whenever the script runs."""
    t = node.test if isinstance(node, ast.If) else None
    return (isinstance(t, ast.Compare) and isinstance(t.left, ast.Name) and t.left.id == "__name__"
            and len(t.comparators) == 1 and isinstance(t.comparators[0], ast.Constant)
            and t.comparators[0].value == "__main__" and not node.orelse)


def _opened(body: list[ast.stmt]) -> list[ast.stmt]:
    """Top-level statements, with a main guard's body in its place."""
    out = []
    for node in body:
        out += _opened(node.body) if is_main_guard(node) else [node]
    return out


def unit_of(node: ast.stmt, source: str, filename: str, cell: int | None) -> Unit:
    """A parsed statement of `source` (a top-level one, or one inside a block) as a unit."""
    return _unit(node, source, filename, cell, 0)


def _unit(node: ast.stmt, chunk: str, filename: str, cell: int | None, offset: int) -> Unit:
    """A statement parsed from `chunk`, which starts `offset` lines into the cell."""
    text = ast.get_source_segment(chunk, node) or ast.unparse(node)
    ast.increment_lineno(node, offset)
    unit = Unit(cell, node.lineno, node.end_lineno or node.lineno, text, node, filename=filename)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            unit.code = compile(ast.Module([node], type_ignores=[]), filename, "exec")
    except SyntaxError as e:  # parses but does not compile alone: `return` or `break` outside their block
        unit.error = e.msg
    return unit


MAIN_GUARD = re.compile(r"""^if\s+__name__\s*==\s*['"]__main__['"]\s*:\s*(#.*)?$""")


def _split_tolerantly(source: str, filename: str, cell: int | None, offset: int = 0) -> list[Unit]:
    """Join lines from each possible start until they parse; a start that never parses is an error
    unit reaching to the next start (a main guard's body is split in turn)."""
    lines = source.split("\n")
    starts = _starts(lines) + [len(lines)]
    units: list[Unit] = []
    i = 0
    while i < len(starts) - 1:
        a = starts[i]
        for j in range(i + 1, min(len(starts), i + 1 + MAX_LOOKAHEAD)):
            chunk = "\n".join(lines[a: starts[j]])
            tree = _parse(chunk, filename)
            if tree is not None:
                units += [_unit(node, chunk, filename, cell, offset + a) for node in _opened(tree.body)]
                i = j
                break
        else:
            b = starts[i + 1]
            if MAIN_GUARD.match(lines[a]):
                body = ipython_dedent("\n".join(lines[a + 1: b]))
                units += _split_tolerantly(body, filename, cell, offset + a + 1)
                i += 1
                continue
            text = "\n".join(lines[a:b]).rstrip()
            try:
                ast.parse(text, filename=filename)
                msg = "does not parse"
            except SyntaxError as e:
                msg = e.msg
            except ValueError as e:
                msg = str(e)
            end = offset + a + max(1, len(text.split("\n")))
            units.append(Unit(cell, offset + a + 1, end, text, None, error=msg, filename=filename))
            i += 1
    return units


SHOWN = 300  # characters of a learner's message or line shown in a report


def clip(text: str, n: int = SHOWN) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def describe_exc(exc: BaseException) -> str:
    """`NameError: name 'x' is not defined`: the exception's type and the first line of its message."""
    try:
        msg = str(exc).strip()
    except Exception:  # noqa: BLE001 -- a learner's exception whose __str__ itself raises
        msg = ""
    msg = clip(msg.splitlines()[0]) if msg else ""
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def error_line(exc: BaseException, path: str, default: int) -> int:
    """The deepest line of the file `path` in an exception's traceback."""
    line = default
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == path and frame.lineno:
            line = frame.lineno
    return line


def shape_str(shape) -> str:
    """(32, 64), (64,), ()"""
    return "(" + ", ".join(str(s) for s in shape) + (",)" if len(shape) == 1 else ")")
