"""Part 5's WaveNet: characters merged two at a time, three times, with batchnorm and tanh.

    emb (B, 8, E) -> flatten 2 -> linear -> BN -> tanh   (B, 4, H)
                  -> flatten 2 -> linear -> BN -> tanh   (B, 2, H)
                  -> flatten 2 -> linear -> BN -> tanh   (B, H)
                  -> linear -> cross-entropy

As in the lecture the linears before batchnorm have no bias (batchnorm's bias takes its place),
batchnorm's statistics run over every dim but the channels, and the last layer starts small.
`backward` calls the ops of `forward` in exact reverse order; no autograd anywhere.

B batch, T context (block_size), E n_embd, H n_hidden, V vocab, G groups left after a merge
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from .. import ops
from ..errors import UsageError
from .base import Activation, Model, ModelConfig


@dataclass
class WaveNetConfig(ModelConfig):
    vocab_size: int = 27  # characters plus '.'; set from the data
    block_size: int = 8  # context length; must be merge ** n_levels (8 = 2^3 in the lecture)
    n_embd: int = 24  # dimensions of each character's embedding
    n_hidden: int = 128  # channels of every hidden level
    merge: int = 2  # how many neighbours each level merges (the lecture's FlattenConsecutive(2))

    def n_levels(self) -> int:
        """How many flatten-linear-BN-tanh levels it takes to merge block_size positions into one."""
        levels, t = 0, self.block_size
        while t > 1 and t % self.merge == 0:
            t //= self.merge
            levels += 1
        return levels if t == 1 else -1

    def validate(self):
        if self.merge < 2:
            raise UsageError(f"wavenet merge {self.merge}: merge at least 2 positions per level")
        if self.n_levels() < 1:
            raise UsageError(f"--block-size {self.block_size}: the wavenet merges {self.merge} positions per "
                             f"level, so the context must be a power of {self.merge} (e.g. 8)")


def param_names(config: WaveNetConfig) -> tuple[str, ...]:
    names = ["C"]
    for i in range(1, config.n_levels() + 1):
        names += [f"W{i}", f"bngain{i}", f"bnbias{i}"]
    L = config.n_levels() + 1
    return tuple(names + [f"W{L}", f"b{L}"])


def init_params(config: WaveNetConfig, generator: torch.Generator, dtype=torch.float32) -> dict[str, torch.Tensor]:
    """Part 5's initialisation: weights randn / sqrt(fan_in) as its Linear, the last layer scaled
    by 0.1 (a calm first loss); batchnorm near identity, with a little noise so that a wrong gain or
    bias gradient shows; all from one seeded generator."""
    V, E, H, m = config.vocab_size, config.n_embd, config.n_hidden, config.merge
    g = generator
    p = {"C": torch.randn((V, E), generator=g)}
    fan_in = E * m
    for i in range(1, config.n_levels() + 1):
        p[f"W{i}"] = torch.randn((fan_in, H), generator=g) / fan_in ** 0.5
        p[f"bngain{i}"] = torch.randn((1, H), generator=g) * 0.1 + 1.0
        p[f"bnbias{i}"] = torch.randn((1, H), generator=g) * 0.1
        fan_in = H * m
    L = config.n_levels() + 1
    p[f"W{L}"] = torch.randn((H, V), generator=g) / H ** 0.5 * 0.1  # less confident at init
    p[f"b{L}"] = torch.randn(V, generator=g) * 0.01
    return {k: v.to(dtype) for k, v in p.items()}


class Level(NamedTuple):
    """What one flatten-linear-batchnorm-tanh level saved for the backward."""
    flatten: torch.Size
    linear: tuple
    batchnorm: tuple
    tanh: torch.Tensor  # the level's output h (B, G, H)


class Cache(NamedTuple):
    emb: tuple
    levels: list[Level]  # bottom-up
    head: tuple  # the last linear's
    cross_entropy: tuple


class WaveNet(Model):
    """Parameters, batchnorm statistics for evaluation, forward with cache and hand-written backward."""

    name = "wavenet"
    init_params = staticmethod(init_params)
    param_names = staticmethod(param_names)

    def __init__(self, config: WaveNetConfig, params: dict[str, torch.Tensor]):
        super().__init__(config, params)
        self.levels = config.n_levels()
        H = config.n_hidden
        # evaluation statistics of each level's batchnorm, set by `calibrate` over the training set
        self.bnmean = [torch.zeros((1, H), dtype=self.dtype, device=self.device) for _ in range(self.levels)]
        self.bnvar = [torch.ones((1, H), dtype=self.dtype, device=self.device) for _ in range(self.levels)]

    # --- training: forward with cache, backward in reverse ---------------------------------

    def forward(self, X, Y):
        """Loss on a batch in training mode (batch statistics) and the cache for `backward`."""
        p, m = self.params, self.config.merge
        x, emb_cache = ops.embedding_forward(p["C"], X)  # (B, T, E)
        levels = []
        for i in range(1, self.levels + 1):
            x, c_flat = ops.flatten_consecutive_forward(x, m)  # (B, G, m*E or m*H), G = T/m^i; (B, m*H) at the top
            x, c_lin = ops.linear_forward(x, p[f"W{i}"], None)  # (B, G, H) no bias: batchnorm's bias does it
            x, c_bn = ops.batchnorm_forward(x, p[f"bngain{i}"], p[f"bnbias{i}"], reduce=self.reduce)
            x, c_tanh = ops.tanh_forward(x)  # (B, G, H)
            levels.append(Level(c_flat, c_lin, c_bn, c_tanh))
        L = self.levels + 1
        logits, head_cache = ops.linear_forward(x, p[f"W{L}"], p[f"b{L}"])  # (B, V)
        loss, ce_cache = ops.cross_entropy_forward(logits, Y, reduce=self.reduce)
        return loss, Cache(emb_cache, levels, head_cache, ce_cache)

    def backward(self, cache: Cache, taps: dict | None = None) -> dict[str, torch.Tensor]:
        """Gradients of the loss with respect to every parameter: `forward` read bottom-up."""
        g = {}
        taps = {} if taps is None else taps  # the gradients of activations(cache)'s outputs
        L = self.levels + 1
        dlogits = ops.cross_entropy_backward(1.0, cache.cross_entropy)  # (B, V)
        dx, g[f"W{L}"], g[f"b{L}"] = ops.linear_backward(dlogits, cache.head)  # (B, H)
        for i, level in reversed(list(enumerate(cache.levels, start=1))):
            taps[f"tanh{i}"] = dx
            dx = ops.tanh_backward(dx, level.tanh)  # (B, G, H)
            dx, g[f"bngain{i}"], g[f"bnbias{i}"] = ops.batchnorm_backward(dx, level.batchnorm)
            dx, g[f"W{i}"], _ = ops.linear_backward(dx, level.linear)  # (B, G, m*E or m*H)
            dx = ops.flatten_consecutive_backward(dx, level.flatten)  # (B, m*G, E or H)
        g["C"] = ops.embedding_backward(dx, cache.emb)  # (V, E)
        return {k: g[k] for k in self.names}

    def activations(self, cache: Cache) -> dict[str, Activation]:
        return {f"tanh{i}": Activation("tanh", None, level.tanh) for i, level in enumerate(cache.levels, start=1)}

    # --- evaluation ----------------------------------------------------------------------

    def _eval_pass(self, X, stop_at: int | None = None):
        """Eval-mode pass with the calibrated statistics; returns the last hidden layer (N, H), or
        level `stop_at`'s pre-batchnorm activations (N, G, H) when it is given."""
        p, m = self.params, self.config.merge
        x = p["C"][X]  # (N, T, E)
        for i in range(1, self.levels + 1):
            N, T, D = x.shape
            x = x.reshape(N, T // m, D * m)  # (N, G, m*D)
            hpre = x @ p[f"W{i}"]  # (N, G, H)
            if i == stop_at:
                return hpre
            bn_inv = (self.bnvar[i - 1] + ops.BN_EPS) ** -0.5
            x = torch.tanh(p[f"bngain{i}"] * (hpre - self.bnmean[i - 1]) * bn_inv + p[f"bnbias{i}"])
        return x.reshape(x.shape[0], -1)  # (N, H)

    @torch.no_grad()
    def calibrate(self, X, chunk: int | None = None):
        """Each level's batchnorm statistics over the whole training set, as the lecture's
        bnmean/bnvar; level by level, since a level's inputs depend on the statistics below it.

        In chunks of rows, by default 2^21 / (n_hidden * block_size) of them, so that a level's
        (rows, positions, H) output is ~4 MB in float32 (8 MB as float64) and calibrating adds little
        to the trained process's memory."""
        H = self.config.n_hidden
        chunk = chunk or max(1, (1 << 21) // (H * self.config.block_size))
        like = self.params["C"]
        for level in range(1, self.levels + 1):
            total = torch.zeros(H, dtype=torch.float64, device=like.device)
            total_sq = torch.zeros_like(total)
            count = 0
            for j in range(0, X.shape[0], chunk):
                h = self._eval_pass(X[j:j + chunk].to(like.device), stop_at=level).double().reshape(-1, H)
                total += h.sum(0)
                total_sq += (h * h).sum(0)
                count += h.shape[0]
            mean = total / count
            var = (total_sq - count * mean * mean) / (count - 1)  # Bessel-corrected, like training
            self.bnmean[level - 1] = mean.view(1, H).to(like.dtype)
            self.bnvar[level - 1] = var.clamp_min(0).view(1, H).to(like.dtype)

    @torch.no_grad()
    def logits(self, X):
        """Evaluation mode: batchnorm uses the calibrated statistics, so any batch size works."""
        L = self.levels + 1
        return self._eval_pass(X) @ self.params[f"W{L}"] + self.params[f"b{L}"]  # (N, V)

    # --- checkpoints -----------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {**super().state_dict(), "bnmean": [t.cpu() for t in self.bnmean],
                "bnvar": [t.cpu() for t in self.bnvar]}

    def load_state_dict(self, state: dict):
        super().load_state_dict(state)
        self.bnmean = [t.to(self.params["C"]) for t in state["bnmean"]]
        self.bnvar = [t.to(self.params["C"]) for t in state["bnvar"]]
