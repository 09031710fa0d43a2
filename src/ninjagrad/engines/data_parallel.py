"""Wraps the manual engine for a data-parallel run: local slice, one all-reduce of the gradients."""
from __future__ import annotations

import torch

from .base import Engine


class DataParallelEngine(Engine):
    """Each process computes the hand-written gradients of its slice of the global minibatch.

    Batchnorm's sums and the loss's 1/n already span the global batch (the model's `reduce`), so
    the per-process parameter gradients are partial sums of the global gradient: one all-reduce
    (sum) of all of them, flattened into one buffer, completes it.
    """

    def __init__(self, inner: Engine, dp):
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
