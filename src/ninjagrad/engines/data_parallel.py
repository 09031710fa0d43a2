"""Wraps the manual engine for a data-parallel run: local slice, one all-reduce of the gradients."""
from __future__ import annotations

import torch

from ..distributed import DataParallel
from .base import Engine


class DataParallelEngine(Engine):
    """Each process computes the hand-written gradients of its slice of the global minibatch.

    Batchnorm's sums and the loss's 1/n already span the global batch (the model's `reduce`), so
    the per-process parameter gradients are partial sums of the global gradient: one all-reduce
    (sum) of all of them, flattened into one buffer, completes it. `check_gradients` (the base's)
    holds those all-reduced gradients to autograd on the whole global batch.
    """

    def __init__(self, inner: Engine, dp: DataParallel):
        super().__init__(inner.model, inner.Xtr, inner.Ytr, inner.optimizer)
        self.inner = inner
        self.dp = dp
        self.name = f"{inner.name} x{dp.world_size}"
        inner.model.reduce = dp.all_reduce_sum

    @torch.no_grad()
    def loss_and_grads(self, ix):
        loss, grads = self.inner.loss_and_grads(self.dp.shard(ix))
        names = list(grads)
        flat = torch.cat([grads[k].reshape(-1) for k in names] +
                         [torch.tensor([loss], dtype=grads[names[0]].dtype, device=grads[names[0]].device)])
        self.dp.all_reduce_sum(flat)
        out, i = {}, 0
        for k in names:
            n = grads[k].numel()
            out[k] = flat[i:i + n].view_as(grads[k])
            i += n
        return flat[-1].item(), out

    # --- the inner engine's hooks --------------------------------------------------------------------

    def prepare(self, batch_size):
        self.inner.prepare(batch_size // self.dp.world_size)

    def sync_to_model(self):
        self.inner.sync_to_model()

    def sync_from_model(self):
        self.inner.sync_from_model()

    def release_buffers(self):
        self.inner.release_buffers()

    def state(self):
        return self.inner.state()

    def load_state(self, state):
        self.inner.load_state(state)
