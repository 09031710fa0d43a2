"""Reading a person's text file with one clear error for each way it can fail (no torch imported)."""
from __future__ import annotations

from pathlib import Path

from .errors import UsageError


def read_utf8(path: str | Path, expected: str) -> str:
    """The file's text; a UsageError naming the file (and line, for bad UTF-8) otherwise.

    `expected` finishes the sentence for a folder given by mistake, e.g. "a Python file"."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory; give {expected}") from None
    except OSError as e:
        raise UsageError(f"{path}: cannot read ({e.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise UsageError(f"{path}:{line}: not UTF-8 (byte 0x{raw[e.start]:02x}); save the file as UTF-8") from None
    return text[1:] if text.startswith("\ufeff") else text  # a byte-order mark from some editors
