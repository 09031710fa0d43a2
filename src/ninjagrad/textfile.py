"""Reading a person's text file with one clear error for each way it can fail (no torch imported)."""
from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import UsageError

MAX_BYTES = 64 << 20  # a word list of every name ever given is a few MB; a notebook with plots tens


def read_utf8(path: str | Path, expected: str, limit: int = MAX_BYTES) -> str:
    """The file's text; a UsageError naming the file (and line, for bad UTF-8) otherwise.

    Only regular files are read (a FIFO would block, /dev/zero never end), and at most `limit` bytes.
    `expected` finishes the sentence for a folder given by mistake, e.g. "a Python file"."""
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"{path}: not a regular file (a pipe, a device?); give {expected}")
        if st.st_size > limit:
            raise UsageError(f"{path}: {st.st_size / 2**20:.0f} MB, larger than the {limit >> 20} MB read; "
                             f"give {expected}")
        with open(path, "rb") as f:
            raw = f.read(limit + 1)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory; give {expected}") from None
    except OSError as e:
        raise UsageError(f"{path}: cannot read ({e.strerror})") from None
    if len(raw) > limit:
        raise UsageError(f"{path}: larger than the {limit >> 20} MB read; give {expected}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise UsageError(f"{path}:{line}: not UTF-8 (byte 0x{raw[e.start]:02x}); save the file as UTF-8") from None
    return text[1:] if text.startswith("\ufeff") else text  # a byte-order mark from some editors
