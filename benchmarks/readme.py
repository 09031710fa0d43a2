"""benchmarks/README.md: each benchmark script owns one section of it, between two marker lines.

    <!-- threads -->
    ... what `python benchmarks/threads.py --write` printed last ...
    <!-- /threads -->

A script's --write replaces its own section and leaves the others; a section written the first time goes
where ORDER puts it. The helpers below are the ones the scripts share for it: a markdown table, the command
that printed it, a count of threads, the `ninjagrad` command.
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

README = Path(__file__).resolve().parent / "README.md"
HEADER = ("# Benchmark tables\n\nWritten by the scripts in this folder (each with `--write`); the top-level "
          "README quotes the figures that matter, with the command that printed them.\n")
# the sections in the file's order: the engines as `ninjagrad bench` shows them, then the longer tables
ORDER = ["ninjagrad_bench", "fast_engine", "fast_blocked", "threads", "compiled_engine", "lecture_runs",
         "check_speed", "html_class"]


def write_section(name: str, text: str, path: Path = README):
    """Put `text` between `<!-- name -->` and `<!-- /name -->` in the file, replacing what was there."""
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    old = path.read_text(encoding="utf-8") if path.exists() else HEADER
    block = f"{start}\n{text.rstrip()}\n{end}"
    if start in old and end in old:
        head, rest = old.split(start, 1)
        new = head + block + rest.split(end, 1)[1]
    else:
        later = [f"<!-- {n} -->" for n in ORDER[ORDER.index(name) + 1:]] if name in ORDER else []
        before = next((m for m in later if m in old), None)
        if before is None:
            new = old.rstrip() + "\n\n" + block + "\n"
        else:
            head, rest = old.split(before, 1)
            new = head + block + "\n\n" + before + rest
    path.write_text(new, encoding="utf-8")


def md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def command_line() -> str:
    """How this script was started, as its section names it: `python benchmarks/NAME.py FLAGS`, without --write."""
    return shlex.join(["python", f"benchmarks/{Path(sys.argv[0]).name}", *(a for a in sys.argv[1:] if a != "--write")])


def n_threads(n: int) -> str:
    """'1 thread', '2 threads'."""
    return f"{n} thread" + ("" if n == 1 else "s")


def ninjagrad_cli() -> list[str]:
    """The `ninjagrad` command of this Python's environment, as a user runs it (`python -m ninjagrad` without one)."""
    script = Path(sys.executable).with_name("ninjagrad")
    return [str(script)] if script.exists() else [sys.executable, "-m", "ninjagrad"]
