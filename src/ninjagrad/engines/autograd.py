"""PyTorch autograd on the same forward: the reference every hand-written gradient is held to."""
from __future__ import annotations

import torch

from .base import Engine


class AutogradEngine(Engine):
    """`loss.backward()` through the model's forward, with the parameters as autograd's leaves."""

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
