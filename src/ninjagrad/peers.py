"""The fast engine's peers in `ninjagrad bench --peers`: the lecture's step made fast by other tools.

- `torch.compile`: the manual engine's whole step (forward, hand-written backward, SGD update) compiled
  by TorchInductor into C++ kernels, called once a step as the torch engines are;
- JAX `jit`: the lecture's forward in jax.numpy, `jax.value_and_grad` for the gradients and the SGD
  update, one compiled call a step;
- JAX `jit` + `lax.scan`: the same step scanned over a chunk of 64 minibatches, one call a chunk, as
  the fast engine takes them.

Each offers what bench.time_engines uses of an engine (prepare, chunk_size, steps), runs the shapes of
the engines beside it and starts from their parameters. JAX is not a dependency of ninjagrad: its rows
appear when it is installed (`pip install jax`).

B batch, T context (block_size), E n_embd, H n_hidden, V vocab
"""
from __future__ import annotations

import importlib.util

import numpy as np
import torch

from .engines.base import Engine
from .engines.manual import ManualEngine

SCAN_CHUNK = 64  # steps per call of the scanned JAX step: the fast engine's chunk at the lecture's shapes


class CompiledManualEngine(ManualEngine):
    """torch.compile over the manual engine's step: gather, forward, the hand-written backward, SGD."""

    name = "torch.compile"

    def __init__(self, model, Xtr, Ytr, optimizer=None):
        super().__init__(model, Xtr, Ytr, optimizer)
        self._step = torch.compile(self._eager_step, dynamic=False)
        self.lr = torch.zeros((), dtype=model.dtype)  # a tensor, so a new lr needs no new graph

    @torch.no_grad()
    def _eager_step(self, ix, lr):
        loss, cache = self.model.forward(self.Xtr[ix], self.Ytr[ix])
        grads = self.model.backward(cache)
        for k, p in self.model.params.items():
            p.sub_(grads[k] * lr)
        return loss

    def step(self, ix, lr):
        self.lr.fill_(lr)
        return self._step(ix, self.lr).item()


def jax_available() -> bool:
    return importlib.util.find_spec("jax") is not None


def make_jax_steps():
    """The lecture's step in JAX, jitted: (one step, a scan over a chunk of steps). JAX is optional: it is
    imported here, where it is used, and only when installed (jax_available)."""
    import jax
    import jax.numpy as jnp

    def loss_fn(p, Xb, Yb):
        """The lecture's forward: embedding, linear, batchnorm (Bessel's n-1), tanh, linear, cross-entropy."""
        n = Xb.shape[0]
        emb = p["C"][Xb].reshape(n, -1)  # (B, T*E)
        hprebn = emb @ p["W1"] + p["b1"]  # (B, H)
        bndiff = hprebn - hprebn.mean(0, keepdims=True)
        bnvar = (bndiff ** 2).sum(0, keepdims=True) / (n - 1)
        hpreact = p["bngain"] * bndiff * jax.lax.rsqrt(bnvar + 1e-5) + p["bnbias"]
        logits = jnp.tanh(hpreact) @ p["W2"] + p["b2"]  # (B, V)
        logprobs = jax.nn.log_softmax(logits)
        return -jnp.take_along_axis(logprobs, Yb[:, None], axis=1).mean()

    def step(p, X, Y, ix, lr):
        loss, grads = jax.value_and_grad(loss_fn)(p, X[ix], Y[ix])
        return jax.tree_util.tree_map(lambda a, g: a - lr * g, p, grads), loss

    def scan(p, X, Y, ixs, lr):
        return jax.lax.scan(lambda q, ix: step(q, X, Y, ix, lr), p, ixs)

    return jax.jit(step, donate_argnums=0), jax.jit(scan, donate_argnums=0)


class JaxEngine(Engine):
    """The lecture's MLP trained by a jitted JAX step; `scan` runs a chunk of steps in one call."""

    def __init__(self, model, Xtr, Ytr, optimizer=None, scan: bool = False):
        import jax.numpy as jnp

        super().__init__(model, Xtr, Ytr, optimizer)
        self.scan = scan
        self.name = "jax jit + lax.scan" if scan else "jax jit"
        self.p = {k: jnp.asarray(v.detach().cpu().numpy()) for k, v in model.params.items()}
        self.X = jnp.asarray(Xtr.cpu().numpy().astype(np.int32))  # JAX's default integers are 32-bit
        self.Y = jnp.asarray(Ytr.cpu().numpy().astype(np.int32))
        self._step, self._scan = make_jax_steps()

    def loss_and_grads(self, ix):
        raise NotImplementedError("the JAX peers only train, for `ninjagrad bench --peers`")

    def chunk_size(self, batch_size):
        return SCAN_CHUNK if self.scan else 1

    def steps(self, ixs, lr):
        ixs = ixs.cpu().numpy().astype(np.int32)
        if self.scan:
            self.p, losses = self._scan(self.p, self.X, self.Y, ixs, np.float32(lr))
            return np.asarray(losses).tolist()
        out = []
        for ix in ixs:
            self.p, loss = self._step(self.p, self.X, self.Y, ix, np.float32(lr))
            out.append(float(loss))
        return out


def make_peers(make_model, X, Y) -> dict:
    """The peers that this machine can run, each on a fresh model from `make_model()`."""
    peers = {"torch.compile": CompiledManualEngine(make_model(), X, Y)}
    if jax_available():
        peers["jax jit"] = JaxEngine(make_model(), X, Y)
        peers["jax jit + lax.scan"] = JaxEngine(make_model(), X, Y, scan=True)
    return peers
