"""Parameter updates, written by hand like everything else."""
from __future__ import annotations

import torch


class Optimizer:
    """What every update offers the engines and checkpoints."""

    name = ""  # its name in OPTIMIZERS and on the command line (--optimizer)
    default_lr = 0.1  # the learning rate of a run that gives no --lr

    def update(self, params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor], lr: float):
        """Change every parameter in place, from its gradient."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        """What a checkpoint keeps: plain tensors, numbers and dicts (`torch.load(weights_only=True)`)."""
        return {}

    def load_state_dict(self, state: dict):
        """Take back what state_dict gave, on resume."""


class SGD(Optimizer):
    """p <- p - lr * dp, the lecture's update (lr 0.1, a tenth of it from the decay step)."""

    name = "sgd"

    @torch.no_grad()
    def update(self, params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor], lr: float):
        for k, p in params.items():
            p.sub_(grads[k], alpha=lr)


class AdamW(Optimizer):
    """Adam with decoupled weight decay (Loshchilov & Hutter), as torch.optim.AdamW computes it:

        p <- p (1 - lr wd)                       decay only matrices (weights, embedding tables)
        m <- b1 m + (1 - b1) g;   v <- b2 v + (1 - b2) g^2
        p <- p - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
    """

    name = "adamw"
    default_lr = 1e-3  # when --lr is not given

    def __init__(self, betas: tuple[float, float] = (0.9, 0.99), eps: float = 1e-8, weight_decay: float = 0.01):
        self.beta1, self.beta2 = betas  # makemore's transformer settings
        self.eps = eps
        self.weight_decay = weight_decay
        self.t = 0  # updates done; the bias corrections need it
        self.m: dict[str, torch.Tensor] = {}  # running mean of each gradient
        self.v: dict[str, torch.Tensor] = {}  # running mean of each squared gradient

    @staticmethod
    def decays(p: torch.Tensor) -> bool:
        """Weight decay pulls matrices towards zero; biases, gains and other vectors are left alone
        (a (1, H) batchnorm gain counts as a vector)."""
        return p.dim() >= 2 and min(p.shape) > 1

    @torch.no_grad()
    def update(self, params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor], lr: float):
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        bias1 = 1 - b1 ** self.t
        bias2 = 1 - b2 ** self.t
        for k, p in params.items():
            g = grads[k]
            if k not in self.m:
                self.m[k], self.v[k] = torch.zeros_like(p), torch.zeros_like(p)
            elif self.m[k].device != p.device:  # restored from a checkpoint on the CPU
                self.m[k], self.v[k] = self.m[k].to(p), self.v[k].to(p)
            m, v = self.m[k], self.v[k]
            if self.weight_decay and self.decays(p):
                p.mul_(1 - lr * self.weight_decay)
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (v / bias2).sqrt_().add_(self.eps)
            p.addcdiv_(m, denom, value=-lr / bias1)

    def state_dict(self) -> dict:
        return {"t": self.t, "betas": [self.beta1, self.beta2], "eps": self.eps, "weight_decay": self.weight_decay,
                "m": {k: v.detach().cpu() for k, v in self.m.items()},
                "v": {k: v.detach().cpu() for k, v in self.v.items()}}

    def load_state_dict(self, state: dict):
        self.t = int(state["t"])
        self.beta1, self.beta2 = (float(b) for b in state["betas"])
        self.eps = float(state["eps"])
        self.weight_decay = float(state["weight_decay"])
        self.m = {k: v.clone() for k, v in state["m"].items()}
        self.v = {k: v.clone() for k, v in state["v"].items()}


def lecture_lr(step: int, lr: float, decay_step: int) -> float:
    """The lecture's schedule: `lr` until `decay_step`, then a tenth of it."""
    return lr if step < decay_step else lr / 10


OPTIMIZERS: dict[str, type[Optimizer]] = {"sgd": SGD, "adamw": AdamW}


def make_optimizer(name: str, weight_decay: float | None = None) -> Optimizer:
    """The named optimizer; `weight_decay` (AdamW only) overrides its default."""
    if weight_decay is None:
        return OPTIMIZERS[name]()
    return OPTIMIZERS[name](weight_decay=weight_decay)
