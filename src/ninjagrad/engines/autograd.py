"""PyTorch autograd on the same forward: the reference every hand-written gradient is held to."""
from __future__ import annotations

import copy

import torch

from .base import Engine


def autograd_loss_and_grads(model, Xb, Yb) -> tuple[float, dict[str, torch.Tensor]]:
    """Reference gradients on detached copies of the parameters; the model is left as it was."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in model.params.items()}
    twin = copy.copy(model)
    twin.params = leaves
    if hasattr(twin, "reduce"):
        twin.reduce = None  # the reference is one process's view of the whole batch it is given
    with torch.enable_grad():
        loss, _ = twin.forward(Xb, Yb)
        loss.backward()
    return loss.item(), {k: v.grad for k, v in leaves.items()}


class AutogradEngine(Engine):
    name = "autograd"

    def __init__(self, model, Xtr, Ytr, optimizer=None):
        super().__init__(model, Xtr, Ytr, optimizer)
        for p in model.params.values():
            p.requires_grad_(True)

    def loss_and_grads(self, ix):
        params = self.model.params
        with torch.enable_grad():
            loss, _ = self.model.forward(self.Xtr[ix], self.Ytr[ix])
            loss.backward()
        grads = {}
        for k, p in params.items():
            grads[k] = p.grad
            p.grad = None
        return loss.item(), grads
