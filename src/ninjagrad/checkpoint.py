"""Checkpoints: written atomically, read back with `torch.load(..., weights_only=True)`."""
from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import torch

from .errors import UsageError

FORMAT = "ninjagrad-checkpoint"
VERSION = 1
FILENAME = "checkpoint.pt"


def atomic_write(path: Path, write):
    """Call `write(f)` on a temporary file in the same folder, then rename it over `path`: a reader
    sees the old file or the new one, never half of one, even if the process dies mid-write."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str):
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def save_checkpoint(path: Path, payload: dict):
    payload = {"format": FORMAT, "version": VERSION, **payload}
    atomic_write(path, lambda f: torch.save(payload, f))


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint file, or the one inside a run folder; one clear error for anything else."""
    path = Path(path)
    if path.is_dir():
        path = path / FILENAME
    if not path.exists():
        raise UsageError(f"{path}: no checkpoint here; pass a run folder made by `ninjagrad train`")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f"{path}: corrupt or unreadable checkpoint ({first[:120]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UsageError(f"{path}: not a ninjagrad checkpoint")
    if payload.get("version") != VERSION:
        raise UsageError(f"{path}: checkpoint version {payload.get('version')}, this ninjagrad reads {VERSION}")
    return payload
