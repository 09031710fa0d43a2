"""Checkpoints: written atomically with the permissions of any new file, read back with
`torch.load(..., weights_only=True)`, and checked field by field before anything uses them.

A checkpoint ninjagrad did not write (another program's `torch.save`, a pickle, a truncated or empty
file, a folder) or one edited by hand (a setting of the wrong type, a tensor of the wrong shape or
dtype, a NaN) is refused with one line naming the file and what is wrong, before it reaches a model.
"""
from __future__ import annotations

import math
import os
import secrets
import warnings
from pathlib import Path

import torch

from .errors import UsageError
from .models import MODELS, Model

FORMAT = "ninjagrad-checkpoint"
VERSION = 1
FILENAME = "checkpoint.pt"


# --- writing ----------------------------------------------------------------------------------

def open_new(path: Path) -> int:
    """A new file at `path`, opened for writing; FileExistsError if one is there. Mode 0666 less the
    umask, as open() creates files (tempfile.mkstemp's 0600 would make a run folder private)."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)


def atomic_write(path: Path, write):
    """Call `write(f)` on a temporary file in the same folder, then rename it over `path`: a reader
    sees the old file or the new one, never half of one, even if the process dies mid-write or the
    disk fills up (the temporary file is removed and the old file stays)."""
    path = Path(path)
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = open_new(tmp)
            break
        except FileExistsError:
            continue
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


def claim_write_text(path: Path, text: str):
    """Write a file that must not exist yet (FileExistsError otherwise): the first file of a run folder,
    whose creation claims the folder, so that two runs started at once cannot both write into it."""
    fd = open_new(Path(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        os.unlink(path)
        raise


def save_checkpoint(path: Path, payload: dict):
    payload = {"format": FORMAT, "version": VERSION, **payload}
    atomic_write(path, lambda f: torch.save(payload, f))


# --- reading ----------------------------------------------------------------------------------

def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint file, or the one inside a run folder, and check its fields (FIELDS, CHECKS);
    one clear error for anything else."""
    path = Path(path)
    if path.is_dir():
        path = path / FILENAME
    if not path.exists():
        raise UsageError(f"{path}: no checkpoint here; pass a run folder made by `ninjagrad train`")
    if not path.is_file():
        raise UsageError(f"{path}: not a file; pass a run folder made by `ninjagrad train`")
    try:
        with warnings.catch_warnings():  # torch warns of a foreign file's pickle protocol: the error says enough
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- unpickling foreign bytes can raise almost anything
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f"{path}: corrupt or unreadable checkpoint ({first[:120]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UsageError(f"{path}: not a ninjagrad checkpoint")
    if payload.get("version") != VERSION:
        raise UsageError(f"{path}: checkpoint version {payload.get('version')}, this ninjagrad reads {VERSION}")
    problem = payload_problem(payload)
    if problem is not None:
        raise UsageError(f"{path}: edited or damaged checkpoint: {problem}")
    return payload


# What every checkpoint holds, and the types each value may have; then those only some hold
# (checkpoints written before they existed).
FIELDS = {"model": str, "model_config": dict, "train_config": dict, "vocab": list, "data_source": str,
          "state": dict, "optimizer": dict, "step": int, "rng": torch.Tensor, "losses": torch.Tensor,
          "train_seconds": (int, float)}
OPTIONAL = {"evals": list, "engine": dict, "calibrated_step": (int, type(None)), "diagnostics": dict}


def fields_problem(p: dict) -> str | None:
    missing = [key for key in FIELDS if key not in p]
    if missing:
        return f"it has no '{missing[0]}'"
    for key, types in {**FIELDS, **OPTIONAL}.items():
        if key in p and (not isinstance(p[key], types) or isinstance(p[key], bool)):
            return f"'{key}' is a {type(p[key]).__name__}"
    return None


def model_problem(p: dict) -> str | None:
    if p["model"] not in MODELS:
        return f"model '{p['model'][:40]}' is none of {', '.join(MODELS)}"
    if p["train_config"].get("model") != p["model"]:
        return f"its settings name the model {p['train_config'].get('model')!r}, its weights the {p['model']}"
    return None


def vocab_problem(p: dict) -> str | None:
    vocab = p["vocab"]
    if not all(isinstance(c, str) and len(c) == 1 for c in vocab) or len(set(vocab)) != len(vocab):
        return "the vocabulary is not a list of distinct characters"
    if not vocab or vocab[0] != ".":
        return "the vocabulary does not start with '.'"
    if p["model_config"].get("vocab_size") != len(vocab):
        return f"vocab_size {p['model_config'].get('vocab_size')!r} for a vocabulary of {len(vocab)} characters"
    return None


def progress_problem(p: dict) -> str | None:
    step, losses = p["step"], p["losses"]
    if step < 0:
        return f"step {step}"
    if losses.dtype != torch.float64 or losses.shape != (step,):
        return f"{tuple(losses.shape)} {losses.dtype} losses for step {step}, which needs ({step},) float64"
    if p["rng"].dtype != torch.uint8 or p["rng"].dim() != 1:
        return "the random generator's state is not a byte tensor"
    if not math.isfinite(p["train_seconds"]) or p["train_seconds"] < 0:
        return f"train_seconds {p['train_seconds']}"
    evals = p.get("evals", [])
    if not all(isinstance(e, (list, tuple)) and len(e) == 3 and all(isinstance(x, (int, float)) for x in e)
               for e in evals):
        return "the evaluations are not rows of (step, train loss, val loss)"
    return None


CHECKS = [fields_problem, model_problem, vocab_problem, progress_problem]  # in order: each assumes the ones before


def payload_problem(p: dict) -> str | None:
    """What is wrong with a loaded checkpoint's fields, or None; the first check that speaks."""
    for check in CHECKS:
        problem = check(p)
        if problem is not None:
            return problem
    return None


# --- checking tensors against a model ----------------------------------------------------------

def tree_problem(got, want, where: str) -> str | None:
    """None when `got` has the structure of `want` (the same dict keys, list lengths, tensor shapes and
    dtypes, and only finite numbers); else the first difference, named by its place in the tree."""
    if torch.is_tensor(want):
        if not torch.is_tensor(got):
            return f"{where} is a {type(got).__name__}, not a tensor"
        if got.shape != want.shape or got.dtype != want.dtype:
            return f"{where} is {tuple(got.shape)} {got.dtype}; the model needs {tuple(want.shape)} {want.dtype}"
        if got.is_floating_point() and not bool(torch.isfinite(got).all()):
            return f"{where} holds NaN or infinite values"
        return None
    if isinstance(want, dict):
        if not isinstance(got, dict) or set(got) != set(want):
            keys = sorted(map(str, got)) if isinstance(got, dict) else type(got).__name__
            return f"{where} holds {keys}; the model has {sorted(map(str, want))}"
        return next((q for k in want if (q := tree_problem(got[k], want[k], f"{where}.{k}"))), None)
    if isinstance(want, (list, tuple)):
        if not isinstance(got, (list, tuple)) or len(got) != len(want):
            return f"{where} is not a list of {len(want)}"
        return next((q for i, w in enumerate(want) if (q := tree_problem(got[i], w, f"{where}[{i}]"))), None)
    return None


def per_parameter_problem(tree, params: dict[str, torch.Tensor], where: str) -> str | None:
    """For an optimizer's state: every dict keyed by parameter names (AdamW's m and v) holds, under
    each name, a finite tensor shaped like that parameter; every number is finite."""
    if isinstance(tree, dict):
        if tree and set(tree) <= set(params):
            return next((q for k, t in tree.items() if (q := tree_problem(t, params[k], f"{where}.{k}"))), None)
        return next((q for k, t in tree.items() if (q := per_parameter_problem(t, params, f"{where}.{k}"))), None)
    if isinstance(tree, (list, tuple)):
        return next((q for i, t in enumerate(tree) if (q := per_parameter_problem(t, params, f"{where}[{i}]"))), None)
    if isinstance(tree, float) and not math.isfinite(tree):
        return f"{where} is {tree}"
    return None


def state_problem(payload: dict, model: Model) -> str | None:
    """What keeps the checkpoint's model settings, model state and optimizer state from `model`, or None."""
    if payload["model_config"] != model.config.to_dict():
        return f"its model settings {str(payload['model_config'])[:100]} are not the run's {model.config.to_dict()}"
    return (tree_problem(payload["state"], model.state_dict(), "state")
            or per_parameter_problem(payload["optimizer"], model.state_dict()["params"], "optimizer"))


def model_from_checkpoint(payload: dict, path: str | Path) -> Model:
    """The checkpoint's model on the CPU, its parameters and evaluation statistics loaded. Its shapes are
    compared on the meta device first, so that an edited size cannot make a huge model."""
    cls, config_cls = MODELS[payload["model"]]
    dtype = {"float32": torch.float32, "float64": torch.float64}.get(payload["train_config"].get("dtype"))
    try:
        if dtype is None:
            raise UsageError(f"dtype {payload['train_config'].get('dtype')!r}")
        config = config_cls(**payload["model_config"])
        config.validate()
        with torch.device("meta"):
            shapes = cls.init_params(config, torch.Generator(), dtype)
        problem = tree_problem(payload["state"].get("params"), shapes, "state.params")
        if problem is None:
            model = cls.create(config, torch.Generator().manual_seed(0), device="cpu", dtype=dtype)
            problem = state_problem(payload, model)
    except (TypeError, ValueError, UsageError) as e:
        problem = f"its model settings {payload['model_config']} do not make a {payload['model']} ({e})"
    if problem is not None:
        raise UsageError(f"{path}: edited or damaged checkpoint: {problem}")
    model.load_state_dict(payload["state"])
    return model
