"""The hand-written backward in eager torch: no autograd graph is ever built."""
from __future__ import annotations

import torch

from .base import Engine


class ManualEngine(Engine):
    """The model's forward, then its hand-written backward, op by op in eager torch."""

    name = "manual"

    @torch.no_grad()
    def loss_and_grads(self, ix):
        loss, cache = self.model.forward(self.Xtr[ix], self.Ytr[ix])
        return loss.item(), self.model.backward(cache)
