"""What a training run needs in memory, estimated before anything large is allocated, and how an
allocation that fails anyway is recognised.

A run that asks for more memory than the machine has would otherwise stop in the middle of an op
with the allocator's traceback, or, worse, be killed by the kernel with no message at all: Linux
grants a large allocation and kills the process when its pages are touched. The estimate runs the
model's forward and backward on the meta device (shapes, no data), so it follows every model as it
is written, at the run's real batch and context sizes.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from .errors import UsageError
from .models import MODELS

EVAL_ROWS = 8192  # rows per forward when evaluating a split (train.split_loss)
GB = 1 << 30
OUT_OF_MEMORY = re.compile(r"can't allocate memory|not enough memory|out of memory", re.IGNORECASE)


def tensor_bytes(tree) -> int:
    """Bytes of every tensor in a nest of tuples, lists and dicts (views counted as copies: an upper bound)."""
    if torch.is_tensor(tree):
        return tree.numel() * tree.element_size()
    if isinstance(tree, dict):
        return sum(tensor_bytes(v) for v in tree.values())
    if isinstance(tree, (tuple, list)):
        return sum(tensor_bytes(v) for v in tree)
    return 0


def largest_tensor(tree) -> int:
    if torch.is_tensor(tree):
        return tensor_bytes(tree)
    values = tree.values() if isinstance(tree, dict) else tree if isinstance(tree, (tuple, list)) else ()
    return max((largest_tensor(v) for v in values), default=0)


def model_bytes(model_name: str, config, dtype: torch.dtype, batch: int, diagnostics: bool = False) -> dict[str, int]:
    """Bytes of the parameters with their gradients and an optimizer's two tensors each (AdamW's m and v,
    the most any optimizer keeps), and of one training step's activations (the forward's cache, the
    gradients and the largest temporary) or of evaluation's forward over EVAL_ROWS rows (which keeps no
    cache: a few of its largest activations at once), whichever is larger; measured on the meta device.
    With `diagnostics`, also a recorded step's own forward and backward, held while the engine takes the
    step, and the copy of the parameters from before it (diagnostics.Recorder.step)."""
    cls, _ = MODELS[model_name]
    with torch.device("meta"):
        model = cls(config, cls.init_params(config, torch.Generator(), dtype))
        params = tensor_bytes(model.params)
        X = torch.zeros((batch, config.block_size), dtype=torch.long)
        _, cache = model.forward(X, torch.zeros(batch, dtype=torch.long))
        step = tensor_bytes(cache) + params + largest_tensor(cache)
        X = torch.zeros((EVAL_ROWS, config.block_size), dtype=torch.long)
        _, cache = model.forward(X, torch.zeros(EVAL_ROWS, dtype=torch.long))
    parts = {"parameters, gradients and optimizer state": 4 * params,
             "a step's activations": max(step, 4 * largest_tensor(cache))}
    if diagnostics:
        parts["a recorded step's diagnostics"] = step + params
    return parts


def dataset_bytes(words: list[str], block_size: int) -> int:
    """The context windows of every split: X (N, T) and Y (N,) int64 for N = the corpus's characters
    and ends of words, and as much again while data.build_dataset makes them."""
    rows = sum(len(w) + 1 for w in words)
    return 2 * rows * (block_size + 1) * 8


def available_bytes() -> int | None:
    """Memory this process can still use: the kernel's MemAvailable, or less under a cgroup's limit;
    None where neither can be read (not Linux)."""
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = Path("/sys/fs/cgroup/memory.current").read_text().strip()
        if limit.isdigit() and used.isdigit():
            found.append(int(limit) - int(used))
    except OSError:
        pass
    return min(found) if found else None


def check_fits(parts: dict[str, int], available: int | None, settings: str, fix: str):
    """Nothing when the parts of a run fit in `available` bytes (or nothing is known), else UsageError
    with one line: the settings, what the run needs, what is there, and `fix`."""
    need = sum(parts.values())
    if available is None or need <= available:
        return
    what = ", ".join(f"{name} {size / GB:.1f} GB" for name, size in sorted(parts.items(), key=lambda kv: -kv[1]))
    raise UsageError(f"{settings}: the run needs about {need / GB:.1f} GB of memory ({what}) and "
                     f"{available / GB:.1f} GB are available; {fix}")


def is_out_of_memory(e: BaseException) -> bool:
    """Whether an exception says an allocation failed: MemoryError, torch's OutOfMemoryError (CUDA), or
    the RuntimeError of torch's CPU allocator ("DefaultCPUAllocator: can't allocate memory")."""
    if isinstance(e, (MemoryError, torch.cuda.OutOfMemoryError)):
        return True
    return isinstance(e, RuntimeError) and OUT_OF_MEMORY.search(str(e)) is not None
