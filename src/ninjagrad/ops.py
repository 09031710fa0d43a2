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
    """y = x W + b over the last dim of x, (B, in) or (B, ..., in); b may be None.
    dx = dout W^T, dW = x^T dout, db = sum dout, the sums over every leading dim."""
    out = x @ W  # (..., out)
    if b is not None:
        out = out + b
    return out, (x, W, b is not None)


def linear_backward(dout, cache):
    x, W, has_bias = cache
    dx = dout @ W.T  # (..., in)
    x2, dout2 = x.reshape(-1, x.shape[-1]), dout.reshape(-1, dout.shape[-1])  # rows: every leading index
    dW = x2.T @ dout2  # (in, out)
    db = dout2.sum(0) if has_bias else None  # (out,)
    return dx, dW, db


# --- batch reductions (the data-parallel hook) -----------------------------------------------------
# Batchnorm is the one op whose forward mixes examples. All of its sums over the batch go through
# these two helpers, and both take `reduce`: None sums the local batch; a data-parallel run passes a
# function that all-reduces (sums) a tensor across processes, so the statistics, and the backward's
# sums, cover the global batch.

def batch_sum(x, dims, reduce=None):
    """sum of x over the batch dims `dims`, kept as size-1 dims; then summed across processes."""
    s = x.sum(dims, keepdim=True)
    return s if reduce is None else reduce(s)


def batch_count(x, dims, reduce=None) -> int:
    """How many rows the batch sums cover: the product of the batch dims, across processes."""
    n = 1
    for d in dims:
        n *= x.shape[d]
    if reduce is None:
        return n
    return int(reduce(torch.tensor([float(n)], dtype=torch.float64, device=x.device)).item())


# --- batchnorm (training mode) -----------------------------------------------------------------

def batchnorm_forward(x, gain, bias, eps=BN_EPS, reduce=None):
    """y = gain (x - mean) / sqrt(var + eps) + bias, statistics over every dim but the last: (B, H) over B,
    (B, T, H) over B and T (part 5's BatchNorm1d). var is Bessel-corrected (n-1), as the lecture's;
    `reduce` (see batch_sum) makes the statistics cover the global batch of a data-parallel run."""
    dims = tuple(range(x.dim() - 1))
    n = batch_count(x, dims, reduce)
    mean = batch_sum(x, dims, reduce) / n  # (1, [1,] H)
    diff = x - mean  # (B, [T,] H)
    var = batch_sum(diff * diff, dims, reduce) / (n - 1)  # (1, [1,] H)
    var_inv = (var + eps) ** -0.5  # (1, [1,] H)
    xhat = diff * var_inv  # (B, [T,] H)
    out = gain * xhat + bias  # (B, [T,] H)
    return out, (xhat, var_inv, gain, n, reduce)


def batchnorm_backward(dout, cache):
    """dx = gain var_inv / n * (n dout - sum dout - n/(n-1) xhat sum(dout xhat)), sums over the batch dims:
    the middle term is the path through the mean, the last the path through the variance, where Bessel's
    n-1 meets the mean's 1/n. dgain and dbias sum the local batch (data-parallel all-reduces them later)."""
    xhat, var_inv, gain, n, reduce = cache
    dims = tuple(range(dout.dim() - 1))
    dbias = dout.sum(dims, keepdim=True)  # (1, [1,] H)
    dgain = (dout * xhat).sum(dims, keepdim=True)  # (1, [1,] H)
    dsum = dbias if reduce is None else reduce(dbias.clone())  # the path through the mean
    dxhat_sum = dgain if reduce is None else reduce(dgain.clone())  # the path through the variance
    dx = gain * var_inv / n * (n * dout - dsum - n / (n - 1) * xhat * dxhat_sum)  # (B, [T,] H)
    return dx, dgain.view(gain.shape), dbias.view(gain.shape)


# --- tanh --------------------------------------------------------------------------------------

def tanh_forward(x):
    """h = tanh(x); dx = (1 - h^2) dout"""
    h = torch.tanh(x)
    return h, h


def tanh_backward(dout, cache):
    h = cache
    return (1.0 - h * h) * dout


# --- softmax + cross-entropy -------------------------------------------------------------------

def cross_entropy_forward(logits, Y, reduce=None):
    """loss = -mean_b log softmax(logits)_b,Y[b]; dlogits = (softmax - onehot(Y)) / n

    With `reduce` (data-parallel), n counts the global batch and the loss returned is this
    process's share of the mean: the shares sum to the global loss."""
    logits_max = logits.max(1, keepdim=True).values  # subtracted for stability; its gradient is zero
    shifted = logits - logits_max  # (B, V)
    counts = shifted.exp()
    probs = counts / counts.sum(1, keepdim=True)  # (B, V)
    n = batch_count(logits, (0,), reduce)
    loss = -(shifted.gather(1, Y.view(-1, 1)) - counts.sum(1, keepdim=True).log()).sum() / n
    return loss, (probs, Y, n)


def cross_entropy_backward(dout, cache):
    probs, Y, n = cache
    dlogits = probs.clone()
    dlogits[torch.arange(probs.shape[0], device=Y.device), Y] -= 1.0
    return dlogits * (dout / n)  # (B, V)


# =================================================================================================
# Beyond the lecture: the ops of part 5's WaveNet and of a small transformer.
# Same contract as above; tests/test_ops_extra.py holds each one to autograd.
# Extra shape letters: G groups after flattening, C channels, nh heads, hs head size (C = nh * hs).
# =================================================================================================

# --- flatten consecutive (part 5's hierarchical grouping) ------------------------------------------

def flatten_consecutive_forward(x, n):
    """(B, T, C) -> (B, T/n, C n): n neighbouring positions side by side; (B, C n) when T == n.

    A pure reshape, so the backward is the inverse reshape: dx = dout.view(B, T, C)."""
    B, T, C = x.shape
    out = x.reshape(B, T // n, C * n)  # (B, G, C*n)
    if out.shape[1] == 1:
        out = out.squeeze(1)  # (B, C*n), as the lecture's FlattenConsecutive does
    return out, x.shape


def flatten_consecutive_backward(dout, cache):
    return dout.reshape(cache)  # (B, T, C)


# --- layernorm -------------------------------------------------------------------------------------

def layernorm_forward(x, w, b, eps=BN_EPS):
    """y = w (x - mean) / sqrt(var + eps) + b over the last dim (biased variance, as nn.LayerNorm)."""
    mean = x.mean(-1, keepdim=True)  # (B, T, 1)
    diff = x - mean  # (B, T, C)
    rstd = ((diff * diff).mean(-1, keepdim=True) + eps) ** -0.5  # (B, T, 1)
    xhat = diff * rstd  # (B, T, C)
    return xhat * w + b, (xhat, rstd, w)


def layernorm_backward(dout, cache):
    """dx = rstd (dxhat - mean_C dxhat - xhat mean_C(dxhat xhat)), dxhat = dout w (llm.c's layernorm)."""
    xhat, rstd, w = cache
    C = xhat.shape[-1]
    dxhat = dout * w  # (B, T, C)
    dx = rstd * (dxhat - dxhat.mean(-1, keepdim=True) - xhat * (dxhat * xhat).mean(-1, keepdim=True))
    rows = dout.reshape(-1, C)
    dw = (rows * xhat.reshape(-1, C)).sum(0)  # (C,)
    db = rows.sum(0)  # (C,)
    return dx, dw, db


# --- relu and gelu ---------------------------------------------------------------------------------

def relu_forward(x):
    """y = max(x, 0); dx = dout where x > 0 (the kink at 0 gets gradient 0, as torch)."""
    return x.clamp_min(0), x > 0


def relu_backward(dout, cache):
    return dout * cache


GELU_K = (2.0 / torch.pi) ** 0.5


def gelu_forward(x):
    """y = x/2 (1 + tanh(k (x + 0.044715 x^3))), k = sqrt(2/pi): GPT-2's tanh approximation."""
    t = torch.tanh(GELU_K * (x + 0.044715 * x ** 3))
    return 0.5 * x * (1.0 + t), (x, t)


def gelu_backward(dout, cache):
    """dx = dout (1/2 (1 + t) + x/2 (1 - t^2) k (1 + 3 * 0.044715 x^2))"""
    x, t = cache
    return dout * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * GELU_K * (1.0 + 3 * 0.044715 * x * x))


# --- residual add and position embedding -----------------------------------------------------------

def residual_forward(x, y):
    """out = x + y; the gradient flows to both branches unchanged: dx = dy = dout."""
    return x + y, None


def residual_backward(dout, cache):
    return dout, dout


def position_embedding_forward(x, P):
    """out = x + P[:T] for every sequence of the batch; dP[t] = sum_B dout[:, t]."""
    T = x.shape[1]
    return x + P[:T], (T, P.shape[0])


def position_embedding_backward(dout, cache):
    T, block_size = cache
    dP = torch.zeros((block_size, dout.shape[-1]), dtype=dout.dtype, device=dout.device)
    dP[:T] = dout.sum(0)  # (T, C) positions past T were not used: zero gradient
    return dout, dP


# --- causal multi-head self-attention --------------------------------------------------------------

def attention_forward(qkv, n_head):
    """y = softmax(q k^T / sqrt(hs) + causal mask) v per head; qkv (B, T, 3C) -> y (B, T, C).

    As llm.c's attention_forward: the qkv projection and the output projection are linear ops
    of their own, so this op holds only what mixes positions."""
    B, T, C3 = qkv.shape
    C = C3 // 3
    hs = C // n_head
    q, k, v = qkv.split(C, dim=2)  # (B, T, C) each
    q = q.view(B, T, n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
    k = k.view(B, T, n_head, hs).transpose(1, 2)
    v = v.view(B, T, n_head, hs).transpose(1, 2)
    scale = hs ** -0.5
    preatt = (q @ k.transpose(-2, -1)) * scale  # (B, nh, T, T)
    future = torch.ones(T, T, dtype=torch.bool, device=qkv.device).triu(1)
    preatt = preatt.masked_fill(future, float("-inf"))  # position t sees 0..t only
    # max-subtraction for stability; as in cross-entropy it carries no gradient
    att = (preatt - preatt.amax(-1, keepdim=True)).exp()
    att = att / att.sum(-1, keepdim=True)  # (B, nh, T, T), rows sum to 1, zero above the diagonal
    y = att @ v  # (B, nh, T, hs)
    y = y.transpose(1, 2).reshape(B, T, C)  # heads side by side again
    return y, (q, k, v, att, scale)


def attention_backward(dout, cache):
    """dv = att^T dy; datt = dy v^T; dpreatt = att (datt - sum_row(datt att)); dq = dpreatt k s, dk = dpreatt^T q s.

    Masked entries have att = 0, so the softmax backward gives them zero gradient by itself."""
    q, k, v, att, scale = cache
    B, nh, T, hs = q.shape
    dy = dout.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
    datt = dy @ v.transpose(-2, -1)  # (B, nh, T, T)
    dv = att.transpose(-2, -1) @ dy  # (B, nh, T, hs)
    dpreatt = att * (datt - (datt * att).sum(-1, keepdim=True))  # softmax backward, row by row
    dq = (dpreatt @ k) * scale  # (B, nh, T, hs)
    dk = (dpreatt.transpose(-2, -1) @ q) * scale  # (B, nh, T, hs)
    dq, dk, dv = (t.transpose(1, 2).reshape(B, T, nh * hs) for t in (dq, dk, dv))  # heads side by side (B, T, C)
    return torch.cat([dq, dk, dv], dim=2)  # (B, T, 3C), the order of the forward's split


# --- cross-entropy over chosen rows ----------------------------------------------------------------

def cross_entropy_masked_forward(logits, Y, mask, reduce=None):
    """loss = sum_i mask_i nll_i / sum_i mask_i; dlogits = mask (softmax - onehot(Y)) / sum(mask).

    logits (N, V), Y (N,), mask (N,) of 0/1: a transformer scores every position of a window, but
    a target that is still the '.' padding before a word begins is no prediction and is left out.
    With `reduce` (data-parallel) sum(mask) counts the global batch, as cross_entropy_forward's n."""
    logits_max = logits.max(1, keepdim=True).values  # stability only; zero gradient
    shifted = logits - logits_max  # (N, V)
    counts = shifted.exp()
    counts_sum = counts.sum(1, keepdim=True)  # (N, 1)
    probs = counts / counts_sum
    nll = counts_sum.log().squeeze(1) - shifted.gather(1, Y.view(-1, 1)).squeeze(1)  # (N,)
    count = batch_sum(mask.to(logits.dtype), (0,), reduce).clamp_min(1)  # (1,) rows that count
    weight = mask.to(logits.dtype) / count  # (N,)
    loss = (nll * weight).sum()
    return loss, (probs, Y, weight)


def cross_entropy_masked_backward(dout, cache):
    probs, Y, weight = cache
    dlogits = probs.clone()
    dlogits[torch.arange(probs.shape[0], device=Y.device), Y] -= 1.0
    return dlogits * (weight * dout).unsqueeze(1)  # (N, V)
