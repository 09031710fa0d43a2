"""benchmarks/README.md: each benchmark script owns one section of it, between two marker lines.

    <!-- threads -->
    ... what `python benchmarks/threads.py --write` printed last ...
    <!-- /threads -->

A script's --write replaces its own section (added at the end the first time) and leaves the others.
"""
from __future__ import annotations

from pathlib import Path

README = Path(__file__).resolve().parent / "README.md"
HEADER = ("# Benchmark tables\n\nWritten by the scripts in this folder (each with `--write`); the top-level "
          "README quotes the figures that matter, with the command that printed them.\n")


def write_section(name: str, text: str, path: Path = README):
    """Put `text` between `<!-- name -->` and `<!-- /name -->` in the file, replacing what was there."""
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    old = path.read_text(encoding="utf-8") if path.exists() else HEADER
    block = f"{start}\n{text.rstrip()}\n{end}"
    if start in old and end in old:
        head, rest = old.split(start, 1)
        new = head + block + rest.split(end, 1)[1]
    else:
        new = old.rstrip() + "\n\n" + block + "\n"
    path.write_text(new, encoding="utf-8")


def md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)
