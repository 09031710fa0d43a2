"""The lecture's MLP: embedding -> linear -> batchnorm -> tanh -> linear -> cross-entropy.

`backward` calls the ops of `forward` in exact reverse order. Parameters live in a dict under the
lecture's names (C, W1, b1, W2, b2, bngain, bnbias) so that learners' notebook code reads the same.

B batch, T context (block_size), E n_embd, H n_hidden, V vocab
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from .. import ops
from .base import Activation, Model, ModelConfig


@dataclass
class MLPConfig(ModelConfig):
    vocab_size: int = 27  # characters plus '.'; set from the data
    block_size: int = 3  # how many characters of context predict the next one
    n_embd: int = 10  # dimensions of each character's embedding
    n_hidden: int = 200  # neurons in the hidden layer


PARAM_NAMES = ("C", "W1", "b1", "W2", "b2", "bngain", "bnbias")


def init_params(config: MLPConfig, generator: torch.Generator, dtype=torch.float32) -> dict[str, torch.Tensor]:
    """The lecture's initialisation, every draw from one seeded generator (the lecture draws bngain and
    bnbias from the global one, so its runs do not reproduce exactly)."""
    V, T, E, H = config.vocab_size, config.block_size, config.n_embd, config.n_hidden
    g = generator
    p = {}
    p["C"] = torch.randn((V, E), generator=g)
    p["W1"] = torch.randn((E * T, H), generator=g) * (5 / 3) / ((E * T) ** 0.5)  # kaiming for tanh
    p["b1"] = torch.randn(H, generator=g) * 0.1  # useless before batchnorm; the lecture keeps it
    p["W2"] = torch.randn((H, V), generator=g) * 0.1  # small logits at init: a calm first loss
    p["b2"] = torch.randn(V, generator=g) * 0.1
    p["bngain"] = torch.randn((1, H), generator=g) * 0.1 + 1.0  # non-trivial so a wrong backward shows
    p["bnbias"] = torch.randn((1, H), generator=g) * 0.1
    return {k: v.to(dtype) for k, v in p.items()}


class Cache(NamedTuple):
    """What each op of the forward saved for the backward, by layer."""
    emb_shape: torch.Size  # (B, T, E)
    emb: tuple
    linear1: tuple
    batchnorm: tuple
    tanh: torch.Tensor  # h (B, H)
    linear2: tuple
    cross_entropy: tuple


class MLP(Model):
    """Parameters, batchnorm statistics for evaluation, forward with cache and hand-written backward."""

    name = "mlp"
    init_params = staticmethod(init_params)

    def __init__(self, config: MLPConfig, params: dict[str, torch.Tensor]):
        super().__init__(config, params)
        H = config.n_hidden
        # Batchnorm statistics for evaluation, set by `calibrate` over the training set.
        self.bnmean = torch.zeros((1, H), dtype=self.dtype, device=self.device)
        self.bnvar = torch.ones((1, H), dtype=self.dtype, device=self.device)

    @staticmethod
    def param_names(config: MLPConfig) -> tuple[str, ...]:
        return PARAM_NAMES

    # --- training: forward with cache, backward in reverse ---------------------------------

    def forward(self, X, Y):
        """Loss on a batch in training mode (batch statistics) and the cache for `backward`."""
        p = self.params
        emb, emb_cache = ops.embedding_forward(p["C"], X)  # (B, T, E)
        embcat = emb.view(emb.shape[0], -1)  # (B, T*E)
        hprebn, l1_cache = ops.linear_forward(embcat, p["W1"], p["b1"])  # (B, H)
        hpreact, bn_cache = ops.batchnorm_forward(hprebn, p["bngain"], p["bnbias"], reduce=self.reduce)  # (B, H)
        h, tanh_cache = ops.tanh_forward(hpreact)  # (B, H)
        logits, l2_cache = ops.linear_forward(h, p["W2"], p["b2"])  # (B, V)
        loss, ce_cache = ops.cross_entropy_forward(logits, Y, reduce=self.reduce)
        return loss, Cache(emb.shape, emb_cache, l1_cache, bn_cache, tanh_cache, l2_cache, ce_cache)

    def backward(self, cache: Cache, taps: dict | None = None) -> dict[str, torch.Tensor]:
        """Gradients of the loss with respect to every parameter: `forward` read bottom-up."""
        g = {}
        taps = {} if taps is None else taps  # the gradients of activations(cache)'s outputs
        dlogits = ops.cross_entropy_backward(1.0, cache.cross_entropy)  # (B, V)
        dh, g["W2"], g["b2"] = ops.linear_backward(dlogits, cache.linear2)  # (B, H)
        taps["tanh"] = dh
        dhpreact = ops.tanh_backward(dh, cache.tanh)  # (B, H)
        dhprebn, g["bngain"], g["bnbias"] = ops.batchnorm_backward(dhpreact, cache.batchnorm)  # (B, H)
        dembcat, g["W1"], g["b1"] = ops.linear_backward(dhprebn, cache.linear1)  # (B, T*E)
        demb = dembcat.view(cache.emb_shape)  # (B, T, E)
        g["C"] = ops.embedding_backward(demb, cache.emb)  # (V, E)
        return {k: g[k] for k in PARAM_NAMES}

    def activations(self, cache: Cache) -> dict[str, Activation]:
        return {"tanh": Activation("tanh", None, cache.tanh)}

    # --- evaluation ----------------------------------------------------------------------

    def _hprebn(self, X):
        p = self.params
        emb = p["C"][X]  # (N, T, E)
        return emb.view(emb.shape[0], -1) @ p["W1"] + p["b1"]  # (N, H)

    @torch.no_grad()
    def calibrate(self, X, chunk: int | None = None):
        """Batchnorm statistics over the whole training set, as the lecture does after training.

        In chunks of rows, summed in float64; by default 2^19 / n_hidden rows, so that a float64 (chunk, H)
        array is 4 MB and calibrating adds a few MB to the trained process's memory (the allocator keeps
        freed chunks of tens of MB: glibc raises its mmap threshold when a large block is freed)."""
        n = X.shape[0]
        H = self.config.n_hidden
        chunk = chunk or max(1, (1 << 19) // H)
        dtype, device = self.dtype, self.device
        total = torch.zeros((1, H), dtype=torch.float64, device=device)
        total_sq = torch.zeros((1, H), dtype=torch.float64, device=device)
        for i in range(0, n, chunk):
            hb = self._hprebn(X[i:i + chunk].to(device)).double()
            total += hb.sum(0, keepdim=True)
            total_sq += (hb * hb).sum(0, keepdim=True)
        mean = total / n
        var = (total_sq - n * mean * mean) / (n - 1)  # unbiased, like hpreact.var(0, unbiased=True)
        self.bnmean = mean.to(dtype)
        self.bnvar = var.clamp_min(0).to(dtype)

    @torch.no_grad()
    def logits(self, X):
        """Evaluation mode: batchnorm uses the calibrated statistics, so any batch size works."""
        p = self.params
        hpreact = p["bngain"] * (self._hprebn(X) - self.bnmean) * (self.bnvar + ops.BN_EPS) ** -0.5 + p["bnbias"]
        return torch.tanh(hpreact) @ p["W2"] + p["b2"]  # (N, V)

    # --- checkpoints -----------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {**super().state_dict(), "bnmean": self.bnmean.cpu(), "bnvar": self.bnvar.cpu()}

    def load_state_dict(self, state: dict):
        super().load_state_dict(state)
        self.bnmean = state["bnmean"].to(self.params["W1"])
        self.bnvar = state["bnvar"].to(self.params["W1"])
