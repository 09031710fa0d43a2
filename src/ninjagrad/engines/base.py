"""What every engine offers the training loop."""
from __future__ import annotations

import torch

from ..optim import SGD


class Engine:
    """Computes one step on the minibatch `Xtr[ix], Ytr[ix]` and updates the model's parameters."""

    name = "base"

    def __init__(self, model, Xtr: torch.Tensor, Ytr: torch.Tensor, optimizer=None):
        self.model = model
        self.Xtr = Xtr
        self.Ytr = Ytr
        self.optimizer = optimizer if optimizer is not None else SGD()

    def loss_and_grads(self, ix: torch.Tensor) -> tuple[float, dict[str, torch.Tensor]]:
        """Loss and parameter gradients on the minibatch, without touching the parameters."""
        raise NotImplementedError

    def step(self, ix: torch.Tensor, lr: float) -> float:
        """One training step; returns the minibatch loss before the update."""
        loss, grads = self.loss_and_grads(ix)
        self.optimizer.update(self.model.params, grads, lr)
        return loss
