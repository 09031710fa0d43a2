"""Reading a learner's file before any torch is imported: unreadable, unparsable, which exercise."""
from __future__ import annotations

import ast

from ..errors import UsageError
from .exercises import exercise_of_file, get_exercise


def read_source(path: str) -> str:
    try:
        raw = open(path, "rb").read()
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory; give a Python file") from None
    except OSError as e:
        raise UsageError(f"{path}: cannot read ({e.strerror})") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise UsageError(f"{path}:{line}: not UTF-8; save the file as UTF-8") from None


def precheck(path: str, exercise: int | None, forward: str | None = None) -> int | None:
    """The exercise a file is for (None with a forward script); a usage error for an unreadable or
    unparsable file (file and line)."""
    source = read_source(path)
    try:
        ast.parse(source, filename=path)
    except SyntaxError as e:
        raise UsageError(f"{path}:{e.lineno}: syntax error ({e.msg})") from None
    if forward is not None:
        if exercise is not None:
            raise UsageError(f"--forward {forward} with --exercise {exercise}: give one of them; the forward "
                             "script is the exercise")
        try:  # unreadable or unparsable: said before starting a process (the rest is judged in the worker)
            ast.parse(read_source(forward), filename=forward)
        except SyntaxError as e:
            raise UsageError(f"{forward}:{e.lineno}: syntax error in the forward script ({e.msg})") from None
        return None
    if exercise is None:
        exercise = exercise_of_file(path, source)
        if exercise is None:
            raise UsageError(f"{path}: which exercise? Pass --exercise N (templates carry "
                             "'# ninjagrad exercise N' on their first line)")
    get_exercise(exercise)
    return exercise
