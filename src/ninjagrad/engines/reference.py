"""What every engine's gradients are held to: PyTorch autograd on the model's own forward."""
from __future__ import annotations

import copy
import math

import torch

from ..models import Model


def autograd_loss_and_grads(model: Model, Xb, Yb) -> tuple[float, dict[str, torch.Tensor]]:
    """Reference gradients on detached copies of the parameters; the model is left as it was."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in model.params.items()}
    twin = copy.copy(model)
    twin.params = leaves
    twin.reduce = None  # the reference is one process's view of the whole batch it is given
    with torch.enable_grad():
        loss, _ = twin.forward(Xb, Yb)
        loss.backward()
    return loss.item(), {k: v.grad for k, v in leaves.items()}


def grads_disagree(grads: dict, ref: dict, dtype: torch.dtype) -> tuple[str, float] | None:
    """The first parameter whose gradient differs from the reference beyond float tolerance.

    Tolerance is relative to each gradient's own scale, with a floor at a small fraction of the
    largest gradient of the step (b1's true gradient is zero: batchnorm removes it)."""
    rtol = 1e-3 if dtype == torch.float32 else 1e-8
    floor = max(r.abs().max().item() for r in ref.values()) * rtol * 1e-2
    for k, r in ref.items():
        g = grads.get(k)
        if g is None or g.shape != r.shape:
            return k, float("inf")
        diff = (g - r).abs().max().item()
        if not math.isfinite(diff) or diff > rtol * r.abs().max().item() + floor:
            return k, diff
    return None
