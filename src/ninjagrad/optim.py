"""Parameter updates, written by hand like everything else."""
from __future__ import annotations

import torch


class SGD:
    """p <- p - lr * dp, the lecture's update."""

    name = "sgd"

    @torch.no_grad()
    def update(self, params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor], lr: float):
        for k, p in params.items():
            p.sub_(grads[k], alpha=lr)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict):
        pass


def lecture_lr(step: int, lr: float, decay_step: int) -> float:
    """The lecture's schedule: `lr` until `decay_step`, then a tenth of it."""
    return lr if step < decay_step else lr / 10


OPTIMIZERS = {"sgd": SGD}


def make_optimizer(name: str):
    return OPTIMIZERS[name]()
