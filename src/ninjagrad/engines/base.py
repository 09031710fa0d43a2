"""What every engine offers the training loop: a step, and a no-op default for every hook the loop calls.

An engine computes a training step's gradients in its own way and updates the model's parameters. The
loop calls, in this order: `prepare` once before the first checkpoint; `chunk_size`, then `steps` on
that many minibatches at a time; `check_gradients` at --verify-every steps; `sync_to_model` before it
reads the parameters (checkpoints, evaluation) and `release_buffers` before evaluating; on resume,
`sync_from_model` and `load_state` after the model's parameters are restored.
"""
from __future__ import annotations

import math

import torch

from ..models import Model
from ..optim import SGD, Optimizer
from .reference import autograd_loss_and_grads, grads_disagree


class Engine:
    """Computes one step on the minibatch `Xtr[ix], Ytr[ix]` and updates the model's parameters."""

    name = "base"

    def __init__(self, model: Model, Xtr: torch.Tensor, Ytr: torch.Tensor, optimizer: Optimizer | None = None):
        self.model = model
        self.Xtr = Xtr
        self.Ytr = Ytr
        self.optimizer = optimizer if optimizer is not None else SGD()

    # --- the step ------------------------------------------------------------------------------

    def loss_and_grads(self, ix: torch.Tensor) -> tuple[float, dict[str, torch.Tensor]]:
        """Loss and parameter gradients on the minibatch, without touching the parameters."""
        raise NotImplementedError

    def step(self, ix: torch.Tensor, lr: float) -> float:
        """One training step; returns the minibatch loss before the update."""
        loss, grads = self.loss_and_grads(ix)
        self.optimizer.update(self.model.params, grads, lr)
        return loss

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

    def chunk_size(self, batch_size: int) -> int:
        """How many steps the training loop may hand `steps` in one call. An engine whose step costs a
        few tens of microseconds gains from more (the loop's own work is then paid once per chunk); for
        the others one step a call keeps the progress bar and Ctrl-C as prompt as they are."""
        return 1

    def prepare(self, batch_size: int):
        """Settle how steps on batches of this size will run (an engine that times ways to run them
        does it here, or at the first step otherwise); train.py calls it before the first checkpoint."""

    # --- verification -----------------------------------------------------------------------------

    def check_gradients(self, ix: torch.Tensor) -> str | None:
        """None when this engine's gradients on the minibatch agree with autograd's; else what disagrees,
        for the message that stops the run. The parameters are left as they were."""
        self.sync_to_model()
        _, grads = self.loss_and_grads(ix)
        _, ref = autograd_loss_and_grads(self.model, self.Xtr[ix], self.Ytr[ix])
        bad = grads_disagree(grads, ref, self.model.dtype)
        if bad is None:
            return None
        name, diff = bad
        return f"the {self.name} engine's gradient of {name} disagrees with autograd (max abs diff {diff:.3g})"

    # --- the model's parameters and the engine's memory ------------------------------------------

    def sync_to_model(self):
        """Write the engine's own copy of the parameters into the model's tensors, for an engine that
        keeps one; the loop calls it before it reads the parameters (checkpoints, evaluation)."""

    def sync_from_model(self):
        """Take the model's parameters after something else has changed them (a resume does)."""

    def release_buffers(self):
        """Free what the engine holds only while it takes steps (its activations, for an engine that
        keeps them between steps): the training loop calls it before evaluating the model, so that
        the two never hold memory at once. The next step must work as if nothing happened."""

    # --- checkpoints ------------------------------------------------------------------------------

    def state(self) -> dict:
        """What a checkpoint keeps of the engine, besides the model and optimizer: for the fast engine,
        the way it chose to run steps, so that a resumed run runs them the same way."""
        return {}

    def load_state(self, state: dict):
        """Take back what state() gave, on resume; ValueError if it does not fit this engine."""
