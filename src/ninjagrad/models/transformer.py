"""A small causal transformer (GPT-2's layout, pre-layernorm) trained by hand-written backward.

    x = C[X] + P                                   token + position embeddings   (B, T, E)
    for each block:  x = x + proj(attention(qkv(layernorm(x))))
                     x = x + W2 gelu(W1 layernorm(x))
    logits = layernorm(x) Wout + bout                                             (B, T, V)

Training scores every position of a window: position t predicts the character after it (the window's
next position, or Y at the last one), except targets that are still '.' padding before the word
begins. Evaluation (`logits`) returns the last position only, so its val loss is the same quantity
as the MLP's and the WaveNet's: the next character given block_size characters of context.
`backward` calls the ops of `forward` in exact reverse order; no autograd anywhere.

B batch, T context (block_size), E n_embd, V vocab, nh heads
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from .. import ops
from ..errors import UsageError
from .base import Activation, Model, ModelConfig

BLOCK_PARAMS = ("ln1_w", "ln1_b", "Wqkv", "bqkv", "Wo", "bo", "ln2_w", "ln2_b", "W1", "b1", "W2", "b2")


@dataclass
class TransformerConfig(ModelConfig):
    vocab_size: int = 27  # characters plus '.'; set from the data
    block_size: int = 8  # context length, as the WaveNet's, so their val losses compare
    n_embd: int = 64  # width of the residual stream
    n_head: int = 4  # attention heads; each sees n_embd / n_head channels
    n_layer: int = 4  # transformer blocks
    mlp_ratio: int = 4  # the MLP's hidden width is mlp_ratio * n_embd, as GPT-2

    def validate(self):
        for name in ("n_embd", "n_head", "n_layer", "mlp_ratio"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be at least 1")
        if self.n_embd % self.n_head:
            raise UsageError(f"--n-embd {self.n_embd} is not a multiple of --n-head {self.n_head}; "
                             "each head needs the same number of channels")


def param_names(config: TransformerConfig) -> tuple[str, ...]:
    names = ["C", "P"]
    for layer in range(config.n_layer):
        names += [f"h{layer}.{k}" for k in BLOCK_PARAMS]
    return tuple(names + ["lnf_w", "lnf_b", "Wout", "bout"])


def init_params(config: TransformerConfig, generator: torch.Generator, dtype=torch.float32) -> dict[str, torch.Tensor]:
    """GPT-2's initialisation: weights N(0, 0.02), the projections back into the residual stream
    scaled by 1/sqrt(2 n_layer) (each block adds two of them), biases 0, layernorms identity."""
    V, T, E, L = config.vocab_size, config.block_size, config.n_embd, config.n_layer
    M = config.mlp_ratio * E
    g = generator

    def normal(*shape, std=0.02):
        return torch.randn(shape, generator=g) * std

    p = {"C": normal(V, E), "P": normal(T, E)}
    resid_std = 0.02 / (2 * L) ** 0.5
    for layer in range(L):
        h = f"h{layer}."
        p[h + "ln1_w"], p[h + "ln1_b"] = torch.ones(E), torch.zeros(E)
        p[h + "Wqkv"], p[h + "bqkv"] = normal(E, 3 * E), torch.zeros(3 * E)
        p[h + "Wo"], p[h + "bo"] = normal(E, E, std=resid_std), torch.zeros(E)
        p[h + "ln2_w"], p[h + "ln2_b"] = torch.ones(E), torch.zeros(E)
        p[h + "W1"], p[h + "b1"] = normal(E, M), torch.zeros(M)
        p[h + "W2"], p[h + "b2"] = normal(M, E, std=resid_std), torch.zeros(E)
    p["lnf_w"], p["lnf_b"] = torch.ones(E), torch.zeros(E)
    p["Wout"], p["bout"] = normal(E, V), torch.zeros(V)
    return {k: v.to(dtype) for k, v in p.items()}


def next_char_targets(X, Y):
    """Every position's target and whether it counts: (B, T) each.

    Position t's target is X[:, t+1] (Y at the last). A target counts unless it is '.' padding
    before the word starts, i.e. unless X[:, :t+2] is all '.'; the last target always counts."""
    targets = torch.cat([X[:, 1:], Y.view(-1, 1)], dim=1)  # (B, T)
    started = (X != 0).long().cummax(dim=1).values.bool()  # (B, T) has the word begun by position t
    mask = torch.cat([started[:, 1:], torch.ones_like(started[:, :1])], dim=1)  # (B, T)
    return targets, mask


class Block(NamedTuple):
    """What one block's ops saved for the backward, in the order they ran."""
    ln1: tuple
    qkv: tuple
    attention: tuple
    proj: tuple
    residual1: None
    ln2: tuple
    fc: tuple
    gelu: tuple
    fc_proj: tuple
    residual2: None


class Trunk(NamedTuple):
    emb: tuple
    position: tuple
    blocks: list[Block]
    lnf: tuple


class Cache(NamedTuple):
    trunk: Trunk
    head: tuple
    cross_entropy: tuple
    logits_shape: torch.Size  # (B, T, V)


class Transformer(Model):
    """Parameters, forward with cache and hand-written backward; no batchnorm, so no calibration."""

    name = "transformer"
    default_optimizer = "adamw"
    init_params = staticmethod(init_params)
    param_names = staticmethod(param_names)

    # --- forward and backward --------------------------------------------------------------

    def _block(self, x, h: str):
        """One pre-layernorm block on the residual stream x (B, T, E); `h` prefixes its parameters."""
        p = self.params
        a, c_ln1 = ops.layernorm_forward(x, p[h + "ln1_w"], p[h + "ln1_b"])  # (B, T, E)
        a, c_qkv = ops.linear_forward(a, p[h + "Wqkv"], p[h + "bqkv"])  # (B, T, 3E)
        a, c_att = ops.attention_forward(a, self.config.n_head)  # (B, T, E)
        a, c_proj = ops.linear_forward(a, p[h + "Wo"], p[h + "bo"])  # (B, T, E)
        x, c_res1 = ops.residual_forward(x, a)  # (B, T, E)
        m, c_ln2 = ops.layernorm_forward(x, p[h + "ln2_w"], p[h + "ln2_b"])  # (B, T, E)
        m, c_fc = ops.linear_forward(m, p[h + "W1"], p[h + "b1"])  # (B, T, 4E)
        m, c_gelu = ops.gelu_forward(m)  # (B, T, 4E)
        m, c_fc_proj = ops.linear_forward(m, p[h + "W2"], p[h + "b2"])  # (B, T, E)
        x, c_res2 = ops.residual_forward(x, m)  # (B, T, E)
        return x, Block(c_ln1, c_qkv, c_att, c_proj, c_res1, c_ln2, c_fc, c_gelu, c_fc_proj, c_res2)

    def _block_backward(self, dx, c: Block, h: str, g: dict, taps: dict):
        """`_block` read bottom-up: dx (B, T, E) of its output to dx of its input; its gradients into g,
        its GELU output's into taps."""
        dx, dm = ops.residual_backward(dx, c.residual2)  # (B, T, E) both
        dm, g[h + "W2"], g[h + "b2"] = ops.linear_backward(dm, c.fc_proj)  # (B, T, 4E)
        taps[h + "gelu"] = dm
        dm = ops.gelu_backward(dm, c.gelu)  # (B, T, 4E)
        dm, g[h + "W1"], g[h + "b1"] = ops.linear_backward(dm, c.fc)  # (B, T, E)
        dm, g[h + "ln2_w"], g[h + "ln2_b"] = ops.layernorm_backward(dm, c.ln2)  # (B, T, E)
        dx = dx + dm  # x fed both the residual and the MLP branch: their gradients add
        dx, da = ops.residual_backward(dx, c.residual1)  # (B, T, E) both
        da, g[h + "Wo"], g[h + "bo"] = ops.linear_backward(da, c.proj)  # (B, T, E)
        da = ops.attention_backward(da, c.attention)  # (B, T, 3E)
        da, g[h + "Wqkv"], g[h + "bqkv"] = ops.linear_backward(da, c.qkv)  # (B, T, E)
        da, g[h + "ln1_w"], g[h + "ln1_b"] = ops.layernorm_backward(da, c.ln1)  # (B, T, E)
        return dx + da  # x fed both the residual and the attention branch

    def _trunk(self, X):
        """Embeddings, blocks and the final layernorm: (B, T) -> (B, T, E), with every op's cache."""
        p = self.params
        x, emb_cache = ops.embedding_forward(p["C"], X)  # (B, T, E)
        x, pos_cache = ops.position_embedding_forward(x, p["P"])  # (B, T, E)
        blocks = []
        for layer in range(self.config.n_layer):
            x, block = self._block(x, f"h{layer}.")
            blocks.append(block)
        x, lnf_cache = ops.layernorm_forward(x, p["lnf_w"], p["lnf_b"])  # (B, T, E)
        return x, Trunk(emb_cache, pos_cache, blocks, lnf_cache)

    def forward(self, X, Y):
        """Mean loss over the counted positions of the batch, and the cache for `backward`."""
        x, trunk = self._trunk(X)  # (B, T, E)
        logits, head_cache = ops.linear_forward(x, self.params["Wout"], self.params["bout"])  # (B, T, V)
        targets, mask = next_char_targets(X, Y)  # (B, T)
        V = logits.shape[-1]
        loss, ce_cache = ops.cross_entropy_masked_forward(logits.reshape(-1, V), targets.reshape(-1), mask.reshape(-1),
                                                           reduce=self.reduce)
        return loss, Cache(trunk, head_cache, ce_cache, logits.shape)

    def backward(self, cache: Cache, taps: dict | None = None) -> dict[str, torch.Tensor]:
        """Gradients of the loss with respect to every parameter: `forward` read bottom-up."""
        g = {}
        taps = {} if taps is None else taps  # the gradients of activations(cache)'s outputs
        trunk = cache.trunk
        dlogits = ops.cross_entropy_masked_backward(1.0, cache.cross_entropy).view(cache.logits_shape)  # (B, T, V)
        dx, g["Wout"], g["bout"] = ops.linear_backward(dlogits, cache.head)  # (B, T, E)
        dx, g["lnf_w"], g["lnf_b"] = ops.layernorm_backward(dx, trunk.lnf)  # (B, T, E)
        for layer in reversed(range(self.config.n_layer)):
            dx = self._block_backward(dx, trunk.blocks[layer], f"h{layer}.", g, taps)  # (B, T, E)
        dx, g["P"] = ops.position_embedding_backward(dx, trunk.position)  # (B, T, E)
        g["C"] = ops.embedding_backward(dx, trunk.emb)  # (V, E)
        return {k: g[k] for k in self.names}

    def activations(self, cache: Cache) -> dict[str, Activation]:
        """Each block's GELU: its input from its own cache, its output the one the next linear kept."""
        return {f"h{layer}.gelu": Activation("gelu", block.gelu[0], block.fc_proj[0])
                for layer, block in enumerate(cache.trunk.blocks)}

    # --- evaluation ----------------------------------------------------------------------

    @torch.no_grad()
    def logits(self, X, chunk: int = 8192):
        """Next-character logits after each window's last position: (N, T) -> (N, V)."""
        out = []
        for i in range(0, X.shape[0], chunk):
            x, _ = self._trunk(X[i:i + chunk])  # (n, T, E)
            out.append(x[:, -1] @ self.params["Wout"] + self.params["bout"])  # (n, V)
        if not out:
            return torch.zeros((0, self.config.vocab_size), dtype=self.params["C"].dtype, device=X.device)
        return torch.cat(out)
