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

from dataclasses import asdict, dataclass

import torch

from .. import ops
from ..errors import UsageError

BLOCK_PARAMS = ("ln1_w", "ln1_b", "Wqkv", "bqkv", "Wo", "bo", "ln2_w", "ln2_b", "W1", "b1", "W2", "b2")


@dataclass
class TransformerConfig:
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

    def to_dict(self) -> dict:
        return asdict(self)


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


class Transformer:
    """Parameters, forward with cache and hand-written backward; no batchnorm, so no calibration."""

    name = "transformer"
    default_optimizer = "adamw"

    def __init__(self, config: TransformerConfig, params: dict[str, torch.Tensor]):
        self.config = config
        self.params = params
        self.names = param_names(config)
        # Data-parallel runs set this to an all-reduce (sum across processes), so that the loss's
        # mean is over the counted positions of the global batch; None means one process.
        self.reduce = None

    @classmethod
    def create(cls, config: TransformerConfig, generator: torch.Generator, device="cpu",
               dtype=torch.float32) -> "Transformer":
        config.validate()
        params = init_params(config, generator, dtype)
        return cls(config, {k: v.to(device) for k, v in params.items()})

    def num_params(self) -> int:
        return sum(p.numel() for p in self.params.values())

    # --- forward and backward --------------------------------------------------------------

    def _trunk(self, X):
        """Embeddings, blocks and the final layernorm: (B, T) -> (B, T, E), with every op's cache."""
        p, nh = self.params, self.config.n_head
        caches = []
        x, cache = ops.embedding_forward(p["C"], X)  # (B, T, E)
        caches.append(cache)
        x, cache = ops.position_embedding_forward(x, p["P"])  # (B, T, E)
        caches.append(cache)
        for layer in range(self.config.n_layer):
            h = f"h{layer}."
            a, c1 = ops.layernorm_forward(x, p[h + "ln1_w"], p[h + "ln1_b"])  # (B, T, E)
            a, c2 = ops.linear_nd_forward(a, p[h + "Wqkv"], p[h + "bqkv"])  # (B, T, 3E)
            a, c3 = ops.attention_forward(a, nh)  # (B, T, E)
            a, c4 = ops.linear_nd_forward(a, p[h + "Wo"], p[h + "bo"])  # (B, T, E)
            x, c5 = ops.residual_forward(x, a)  # (B, T, E)
            m, c6 = ops.layernorm_forward(x, p[h + "ln2_w"], p[h + "ln2_b"])  # (B, T, E)
            m, c7 = ops.linear_nd_forward(m, p[h + "W1"], p[h + "b1"])  # (B, T, 4E)
            m, c8 = ops.gelu_forward(m)  # (B, T, 4E)
            m, c9 = ops.linear_nd_forward(m, p[h + "W2"], p[h + "b2"])  # (B, T, E)
            x, c10 = ops.residual_forward(x, m)  # (B, T, E)
            caches.append((c1, c2, c3, c4, c5, c6, c7, c8, c9, c10))
        x, cache = ops.layernorm_forward(x, p["lnf_w"], p["lnf_b"])  # (B, T, E)
        caches.append(cache)
        return x, caches

    def forward(self, X, Y):
        """Mean loss over the counted positions of the batch, and the cache for `backward`."""
        x, caches = self._trunk(X)  # (B, T, E)
        logits, head_cache = ops.linear_nd_forward(x, self.params["Wout"], self.params["bout"])  # (B, T, V)
        targets, mask = next_char_targets(X, Y)  # (B, T)
        V = logits.shape[-1]
        loss, ce_cache = ops.cross_entropy_masked_forward(logits.reshape(-1, V), targets.reshape(-1), mask.reshape(-1),
                                                           reduce=self.reduce)
        return loss, (caches, head_cache, ce_cache, logits.shape)

    def backward(self, cache) -> dict[str, torch.Tensor]:
        """Gradients of the loss with respect to every parameter: `forward` read bottom-up."""
        caches, head_cache, ce_cache, logits_shape = cache
        caches = list(caches)
        g = {}
        dlogits = ops.cross_entropy_masked_backward(1.0, ce_cache).view(logits_shape)  # (B, T, V)
        dx, g["Wout"], g["bout"] = ops.linear_nd_backward(dlogits, head_cache)  # (B, T, E)
        dx, g["lnf_w"], g["lnf_b"] = ops.layernorm_backward(dx, caches.pop())  # (B, T, E)
        for layer in reversed(range(self.config.n_layer)):
            h = f"h{layer}."
            c1, c2, c3, c4, c5, c6, c7, c8, c9, c10 = caches.pop()
            dx, dm = ops.residual_backward(dx, c10)  # (B, T, E) both
            dm, g[h + "W2"], g[h + "b2"] = ops.linear_nd_backward(dm, c9)  # (B, T, 4E)
            dm = ops.gelu_backward(dm, c8)  # (B, T, 4E)
            dm, g[h + "W1"], g[h + "b1"] = ops.linear_nd_backward(dm, c7)  # (B, T, E)
            dm, g[h + "ln2_w"], g[h + "ln2_b"] = ops.layernorm_backward(dm, c6)  # (B, T, E)
            dx = dx + dm  # x fed both the residual and the MLP branch: their gradients add
            dx, da = ops.residual_backward(dx, c5)  # (B, T, E) both
            da, g[h + "Wo"], g[h + "bo"] = ops.linear_nd_backward(da, c4)  # (B, T, E)
            da = ops.attention_backward(da, c3)  # (B, T, 3E)
            da, g[h + "Wqkv"], g[h + "bqkv"] = ops.linear_nd_backward(da, c2)  # (B, T, E)
            da, g[h + "ln1_w"], g[h + "ln1_b"] = ops.layernorm_backward(da, c1)  # (B, T, E)
            dx = dx + da  # x fed both the residual and the attention branch
        dx, g["P"] = ops.position_embedding_backward(dx, caches.pop())  # (B, T, E)
        g["C"] = ops.embedding_backward(dx, caches.pop())  # (V, E)
        assert not caches, "backward must undo every op of forward"
        return {k: g[k] for k in self.names}

    # --- evaluation ----------------------------------------------------------------------

    def calibrate(self, X):
        """Nothing to calibrate: layernorm uses each position's own statistics."""

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

    # --- checkpoints -----------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {"params": {k: v.detach().cpu() for k, v in self.params.items()}}

    def load_state_dict(self, state: dict):
        for k in self.names:
            src = state["params"][k]
            if src.shape != self.params[k].shape:
                raise ValueError(f"parameter {k}: shape {tuple(src.shape)} in the checkpoint, "
                                 f"{tuple(self.params[k].shape)} in the model")
            self.params[k].copy_(src)
