"""Reading a learner's file before any torch is imported: unreadable, unparsable, which exercise."""
from __future__ import annotations

import ast

from ..errors import UsageError
from ..textfile import read_utf8
from .exercises import exercise_of_file, get_exercise


def read_source(path: str) -> str:
    return read_utf8(path, "a Python file")


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
