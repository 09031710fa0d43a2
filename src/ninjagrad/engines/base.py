"""What every engine offers the training loop."""
from __future__ import annotations

import math

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

    def release_buffers(self):
        """Free what the engine holds only while it takes steps (its activations, for an engine that
        keeps them between steps): the training loop calls it before evaluating the model, so that
        the two never hold memory at once. The next step must work as if nothing happened."""

    def chunk_size(self, batch_size: int) -> int:
        """How many steps the training loop may hand `steps` in one call. An engine whose step costs a
        few tens of microseconds gains from more (the loop's own work is then paid once per chunk); for
        the others one step a call keeps the progress bar and Ctrl-C as prompt as they are."""
        return 1

    def prepare(self, batch_size: int):
        """Settle how steps on batches of this size will run (an engine that times ways to run them
        does it here, or at the first step otherwise); train.py calls it before the first checkpoint."""

    def state(self) -> dict:
        """What a checkpoint keeps of the engine, besides the model and optimizer: for the fast engine,
        the way it chose to run steps, so that a resumed run runs them the same way."""
        return {}

    def load_state(self, state: dict):
        """Take back what state() gave, on resume; ValueError if it does not fit this engine."""

    def steps(self, ixs: torch.Tensor, lr: float) -> list[float]:
        """One step per minibatch ixs[0], ixs[1], ... of the (n, B) indices, all at `lr`; their losses.

        A step whose loss is not finite is the last one run (its update made, as `step` makes it).
        """
        losses = []
        for ix in ixs:
            losses.append(self.step(ix, lr))
            if not math.isfinite(losses[-1]):
                break
        return losses
