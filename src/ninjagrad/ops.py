"""Forward/backward pairs for the lecture's layers.

Each `X_forward(...)` returns `(out, cache)`; `X_backward(dout, cache)` returns the gradients of the
forward's inputs in the order they were passed. The cache holds what the backward needs and no more.
Every backward here is checked against autograd in tests/test_ops.py.

B batch, T context (block_size), E n_embd, H n_hidden, V vocab
"""
from __future__ import annotations

import torch

BN_EPS = 1e-5


# --- embedding ---------------------------------------------------------------------------------

def embedding_forward(C, X):
    """emb = C[X]; dC[v] = sum of demb over every position where X == v"""
    emb = C[X]  # (B, T, E)
    return emb, (X, C.shape[0])


def embedding_backward(demb, cache):
    # index_add_ accumulates repeated indices; `dC[X] += demb` would keep only one of them.
    X, vocab_size = cache
    E = demb.shape[-1]
    dC = torch.zeros((vocab_size, E), dtype=demb.dtype, device=demb.device)
    dC.index_add_(0, X.reshape(-1), demb.reshape(-1, E))  # (V, E)
    return dC


# --- linear ------------------------------------------------------------------------------------

def linear_forward(x, W, b):
    """y = x W + b; dx = dout W^T, dW = x^T dout, db = sum_B dout"""
    out = x @ W  # (B, out)
    if b is not None:
        out = out + b
    return out, (x, W, b is not None)


def linear_backward(dout, cache):
    x, W, has_bias = cache
    dx = dout @ W.T  # (B, in)
    dW = x.T @ dout  # (in, out)
    db = dout.sum(0) if has_bias else None  # (out,)
    return dx, dW, db


# --- batchnorm (training mode) -----------------------------------------------------------------

def batchnorm_forward(x, gain, bias, eps=BN_EPS):
    """y = gain (x - mean) / sqrt(var + eps) + bias, with the batch's Bessel-corrected variance.

    The lecture divides by n-1 (unbiased) for the training variance, and so does this op.
    """
    n = x.shape[0]
    mean = x.sum(0, keepdim=True) / n  # (1, H)
    diff = x - mean  # (B, H)
    var = (diff * diff).sum(0, keepdim=True) / (n - 1)  # (1, H)
    var_inv = (var + eps) ** -0.5  # (1, H)
    xhat = diff * var_inv  # (B, H)
    out = gain * xhat + bias  # (B, H)
    return out, (xhat, var_inv, gain)


def batchnorm_backward(dout, cache):
    """dx = gain var_inv / n * (n dout - sum_B dout - n/(n-1) xhat sum_B(dout xhat))

    The middle term is the path through the mean, the last the path through the variance; the
    n/(n-1) comes from the variance's Bessel correction meeting the mean's 1/n.
    """
    xhat, var_inv, gain = cache
    n = dout.shape[0]
    dbias = dout.sum(0, keepdim=True)  # (1, H)
    dgain = (dout * xhat).sum(0, keepdim=True)  # (1, H)
    dx = gain * var_inv / n * (n * dout - dbias - n / (n - 1) * xhat * dgain)  # (B, H)
    return dx, dgain, dbias


# --- tanh --------------------------------------------------------------------------------------

def tanh_forward(x):
    """h = tanh(x); dx = (1 - h^2) dout"""
    h = torch.tanh(x)
    return h, h


def tanh_backward(dout, cache):
    h = cache
    return (1.0 - h * h) * dout


# --- softmax + cross-entropy -------------------------------------------------------------------

def cross_entropy_forward(logits, Y):
    """loss = -mean_b log softmax(logits)_b,Y[b]; dlogits = (softmax - onehot(Y)) / n"""
    logits_max = logits.max(1, keepdim=True).values  # subtracted for stability; its gradient is zero
    shifted = logits - logits_max  # (B, V)
    counts = shifted.exp()
    probs = counts / counts.sum(1, keepdim=True)  # (B, V)
    n = logits.shape[0]
    loss = -(shifted.gather(1, Y.view(-1, 1)) - counts.sum(1, keepdim=True).log()).sum() / n
    return loss, (probs, Y)


def cross_entropy_backward(dout, cache):
    probs, Y = cache
    n = probs.shape[0]
    dlogits = probs.clone()
    dlogits[torch.arange(n, device=Y.device), Y] -= 1.0
    return dlogits * (dout / n)  # (B, V)
