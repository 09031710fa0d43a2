"""The lecture's MLP training step as numba kernels over preallocated buffers.

The same math as ops.py, written as loops that LLVM compiles and vectorises, with the six matmuls
handed to BLAS (`np.dot` inside numba calls it directly, with no Python or dispatcher in between).
Passes over the (B, H) activations are fused so each is read and written as few times as possible:

    forward                                       backward (the forward read bottom-up)
    embedding_forward    gather rows of C         embedding_backward   scatter-add into dC
    linear_forward       hprebn = embcat W1       linear_backward      dembcat, dW1
    batchnorm_tanh_fwd   + b1, xhat, h = tanh(.)  batchnorm_tanh_bwd   dhprebn, dbngain, dbnbias, db1
    linear_forward       logits = h W2            linear_backward      dh, dW2
    cross_entropy_fwd    + b2, loss, dlogits, db2 (made in the forward's passes, on logits^T)

`step_body` runs them in that order and, when asked, applies the SGD update. Parameters, gradients
and activations live in three flat arenas (see param_offsets), so a call unboxes few arrays. Its loops over the
hidden units use `prange`: the same function compiled with parallel=True splits the columns
between cores (each core owns whole columns, so the batch sums need no locks); compiled without,
prange is a plain range. Sums run over the batch per column, in the activations' dtype.

B batch, T context (block_size), E n_embd, K = T*E, H n_hidden, V vocab
"""
from __future__ import annotations

import numpy as np
from numba import carray, prange, types
from numba.extending import intrinsic

from .fast_jit import jit
from .fast_vecmath import vexp, vtanh

# numba keys the on-disk cache of these kernels on this file's contents alone, yet they inline
# fast_vecmath's exp and tanh and are compiled with fast_jit's options. Those files' hashes are
# written here so that editing either changes this file too, and the cached machine code is rebuilt
# (tests/test_fast_engine.py holds them equal).
INLINED_SHA256 = {
    "fast_jit.py": "95574e0db0f74b78294550947f8b9cbedca759222d2c55c99daa69abcdaadeff",
    "fast_vecmath.py": "705722eb2090fcfd5230b6836fa8ab7d5fe825ee61d66f78554c9965fe2d351b",
}

BN_EPS = 1e-5  # the same as ops.BN_EPS


def column_blocks(H: int, nblocks: int) -> np.ndarray:
    """Split the H hidden units into `nblocks` ranges of columns: bounds[i]..bounds[i+1]."""
    return np.linspace(0, H, nblocks + 1).round().astype(np.int64)


# --- embedding -----------------------------------------------------------------------------------

@jit(inline="always")
def minibatch_targets(Xtr, Ytr, ix, Yb):
    """Yb[b] = Ytr[ix[b]]. Returns False, having written nothing, if an index lies outside the training
    set (numba does not check bounds, so this one check guards every later read)."""
    for b in range(ix.shape[0]):
        if ix[b] < 0 or ix[b] >= Xtr.shape[0]:
            return False
    for b in range(ix.shape[0]):
        Yb[b] = Ytr[ix[b]]
    return True


@jit(inline="always")
def embedding_forward(C, Xtr, Ytr, ix, embcat, Yb):
    """embcat[b] = concat_t C[Xtr[ix[b], t]]: the minibatch gathered straight from the training set,
    and its targets Yb. Returns False, having gathered nothing, for an index outside the training set."""
    B, T, E = ix.shape[0], Xtr.shape[1], C.shape[1]
    if not minibatch_targets(Xtr, Ytr, ix, Yb):
        return False
    for b in range(B):
        row = ix[b]
        for t in range(T):
            v = Xtr[row, t]
            for e in range(E):
                embcat[b, t * E + e] = C[v, e]  # (B, K)
    return True


@jit(inline="always")
def embedding_backward(dembcat, Xtr, ix, dC):
    """dC[v] += dembcat[b, t] for every (b, t) with Xtr[ix[b], t] == v; dC comes in all zero.

    Accumulate, never assign: a character that appears twice in the batch gets both contributions.
    """
    B, T, E = ix.shape[0], Xtr.shape[1], dC.shape[1]
    for b in range(B):
        row = ix[b]
        for t in range(T):
            v = Xtr[row, t]
            for e in range(E):
                dC[v, e] += dembcat[b, t * E + e]  # (V, E)


@jit(inline="always")
def embedding_sgd_and_clear(C, dC, Xtr, ix, lr):
    """C[v] -= lr dC[v] for the rows the batch touched, then dC[v] = 0 again.

    Only those rows have a gradient; the others would get `C - lr * 0`, which is C exactly. Clearing
    while updating also makes a repeated row update once: its second visit subtracts lr * 0.
    """
    B, T, E = ix.shape[0], Xtr.shape[1], dC.shape[1]
    for b in range(B):
        row = ix[b]
        for t in range(T):
            v = Xtr[row, t]
            for e in range(E):
                C[v, e] -= lr * dC[v, e]
                dC[v, e] = 0.0


@jit(inline="always")
def embedding_clear(dC, Xtr, ix):
    """dC[v] = 0 for the rows the batch touched: dC is all zero again for the next step."""
    B, T, E = ix.shape[0], Xtr.shape[1], dC.shape[1]
    for b in range(B):
        row = ix[b]
        for t in range(T):
            v = Xtr[row, t]
            for e in range(E):
                dC[v, e] = 0.0


# --- linear --------------------------------------------------------------------------------------

@jit(inline="always")
def linear_forward(x, W, out):
    """out = x W + b, where the bias is added by the pass that reads `out` next (saving a pass)."""
    np.dot(x, W, out)  # (B, out)


@jit(inline="always")
def linear_backward(dout, x, W, dx, dW):
    """dx = dout W^T, dW = x^T dout (db = sum_B dout is summed by the pass that made dout)."""
    np.dot(dout, W.T, dx)  # (B, in)
    np.dot(x.T, dout, dW)  # (in, out)


@jit(inline="always")
def linear_backward_t(dout, x, WT, dx, dWT):
    """The same for a layer whose W is kept transposed, WT = W^T: dx = dout (W^T), dW^T = dout^T x.

    For the narrow W2 (H, 27) OpenBLAS is ~2x faster on these layouts than on W.T and x.T views."""
    np.dot(dout, WT, dx)  # (B, in)
    np.dot(dout.T, x, dWT)  # (out, in)


# --- bias + batchnorm + tanh ---------------------------------------------------------------------
# Loops run over one row's slice of a column block, `x = hprebn[i, j0:j1]`, and touch few arrays
# each: indices that start at 0 and few possible overlaps between arrays are what lets LLVM
# vectorise them.

@jit(inline="always")
def batchnorm_tanh_forward(hprebn, b1, bngain, bnbias, h, mean, var_inv, blocks, eps):
    """hprebn += b1; xhat = (hprebn - mean) / sqrt(var + eps); h = tanh(bngain xhat + bnbias).

    var is the batch's Bessel-corrected (n-1) variance, as in the lecture, from the squared
    differences to the mean (two passes, as ops.batchnorm_forward: no cancellation when the mean is
    large). xhat overwrites hprebn: the backward needs xhat and h, not hprebn. b1 is added although
    batchnorm subtracts it again, as the lecture's forward does: leaving it out (with the mean taken
    from W1's linearity) saved ~0.8 µs of a ~34 µs step, but in batches of one repeated example made
    the float32 gradients of C and W1 ~100x less accurate.
    """
    B, H = hprebn.shape
    dt = hprebn.dtype.type
    for blk in prange(blocks.shape[0] - 1):
        j0, j1 = blocks[blk], blocks[blk + 1]
        w = j1 - j0
        bias, g, bb = b1[j0:j1], bngain[j0:j1], bnbias[j0:j1]
        m = np.zeros(w, hprebn.dtype)  # per column: the sum, then the mean
        vi = np.zeros(w, hprebn.dtype)  # per column: the sum of squared differences, then var_inv
        for i in range(B):
            x = hprebn[i, j0:j1]
            for j in range(w):
                v = x[j] + bias[j]
                x[j] = v
                m[j] += v
        for j in range(w):
            m[j] /= dt(B)
        for i in range(B):
            x = hprebn[i, j0:j1]
            for j in range(w):
                d = x[j] - m[j]
                vi[j] += d * d
        for j in range(w):
            # unbiased, like hpreact.var(0, unbiased=True); 1/sqrt vectorises, pow(x, -0.5) would not
            vi[j] = dt(1.0) / np.sqrt(vi[j] / dt(B - 1) + dt(eps))
            mean[j0 + j] = m[j]
            var_inv[j0 + j] = vi[j]
        for i in range(B):
            x = hprebn[i, j0:j1]
            hh = h[i, j0:j1]
            for j in range(w):
                xh = (x[j] - m[j]) * vi[j]
                x[j] = xh  # (B, H) xhat
                hh[j] = vtanh(g[j] * xh + bb[j])  # (B, H) h


@jit(inline="always")
def batchnorm_tanh_backward(dh, xhat, h, bngain, var_inv, dbngain, dbnbias, db1, blocks):
    """dhpreact = (1 - h^2) dh; then batchnorm's backward, written over dh in place:

    dhprebn = bngain var_inv / n (n dhpreact - dbnbias - n/(n-1) xhat dbngain)
    with dbnbias = sum_B dhpreact, dbngain = sum_B dhpreact xhat, and db1 = sum_B dhprebn, which by the
    line above is bngain var_inv / n (n dbnbias - n dbnbias - n/(n-1) dbngain sum_B xhat): ~0, since
    batchnorm subtracts the mean (b1 has no effect on the loss), computed, not assumed.
    """
    B, H = dh.shape
    dt = dh.dtype.type
    for blk in prange(blocks.shape[0] - 1):
        j0, j1 = blocks[blk], blocks[blk + 1]
        w = j1 - j0
        sb = np.zeros(w, dh.dtype)  # sums over the batch, per column
        sg = np.zeros(w, dh.dtype)
        sx = np.zeros(w, dh.dtype)
        for i in range(B):
            d, hh, xh = dh[i, j0:j1], h[i, j0:j1], xhat[i, j0:j1]
            for j in range(w):
                v = (dt(1.0) - hh[j] * hh[j]) * d[j]  # tanh's backward: dhpreact
                d[j] = v
                sb[j] += v
                sg[j] += v * xh[j]
                sx[j] += xh[j]
        # per column, in the activations' dtype, as ops.batchnorm_backward computes them
        a = np.empty(w, dh.dtype)  # bngain var_inv / n
        csg = np.empty(w, dh.dtype)  # n/(n-1) dbngain
        g, vi = bngain[j0:j1], var_inv[j0:j1]
        for j in range(w):
            dbnbias[j0 + j] = sb[j]
            dbngain[j0 + j] = sg[j]
            a[j] = g[j] * vi[j] / dt(B)
            csg[j] = dt(B / (B - 1)) * sg[j]
            db1[j0 + j] = -(a[j] * (csg[j] * sx[j]))
        n = dt(B)
        for i in range(B):
            d, xh = dh[i, j0:j1], xhat[i, j0:j1]
            for j in range(w):
                d[j] = a[j] * (n * d[j] - sb[j] - csg[j] * xh[j])  # (B, H) dhprebn


# --- softmax + cross-entropy ---------------------------------------------------------------------

@jit(inline="always")
def cross_entropy_forward(logitsT, b2, Yb, db2, colmax, colsum):
    """logits += b2; loss = -mean_b log softmax(logits)_b,Y[b]; dlogits = (softmax - onehot(Y)) / n.

    The logits come transposed, (V, B), so that every pass runs along the batch: 32 examples are
    two AVX-512 vectors, where a row of 27 characters vectorises badly. colmax and colsum are (B,)
    scratch. The loss, its gradient (written over the logits) and db2 = sum_B dlogits.
    """
    V, B = logitsT.shape
    dt = logitsT.dtype.type
    inv_n = dt(1.0 / B)
    for i in range(B):
        colmax[i] = -np.inf
        colsum[i] = 0.0
    for v in range(V):
        row, bv = logitsT[v], b2[v]
        for i in range(B):
            row[i] += bv
        for i in range(B):
            colmax[i] = max(colmax[i], row[i])  # subtracted for stability; its gradient is zero
    loss = 0.0
    for i in range(B):
        loss -= logitsT[Yb[i], i] - colmax[i]  # the target's shifted logit, before exp overwrites it
    for v in range(V):
        row = logitsT[v]
        for i in range(B):
            row[i] = vexp(row[i] - colmax[i])  # counts
        for i in range(B):
            colsum[i] += row[i]  # float64 sums, as a Python float accumulates
    for i in range(B):
        loss += np.log(colsum[i])  # -log(counts[y] / sum(counts)), without computing counts[y]
        colsum[i] = dt(1.0 / colsum[i]) * inv_n  # now the scale: probs / n = counts * scale
    for v in range(V):
        row = logitsT[v]
        for i in range(B):
            row[i] *= dt(colsum[i])
    for i in range(B):
        logitsT[Yb[i], i] -= inv_n
    for v in range(V):
        row = logitsT[v]
        acc = 0.0  # float64
        for i in range(B):
            acc += row[i]
        db2[v] = acc
    return loss / B


# --- the update ----------------------------------------------------------------------------------

@jit(inline="always")
def sgd_update(p, g, lr):
    """p <- p - lr g, the lecture's update (optim.SGD), on flat views."""
    step = p.dtype.type(lr)  # lr in the parameters' dtype, as torch's p.sub_(g, alpha=lr) does
    for k in range(p.shape[0]):
        p[k] -= step * g[k]


@jit(inline="always")
def clear(x):
    """x = 0, on a flat view."""
    for k in range(x.shape[0]):
        x[k] = 0.0


# --- the parameters, gradients and activations: three flat arenas ---------------------------------
# The step takes three float arrays instead of ~25 separate ones: numba's dispatcher unboxes every
# array argument on every call, and at the lecture's shapes 25 of them cost ~2 µs of a ~40 µs step.
# Each piece starts on a multiple of ALIGN elements (64 bytes in float32), so vector loops and BLAS
# see aligned rows.

ALIGN = 16


@jit(inline="always")
def _aligned(n):
    return (n + ALIGN - 1) // ALIGN * ALIGN


@jit
def param_offsets(V, E, K, H):
    """Where C (V, E), W1 (K, H), b1 (H), W2T (V, H), b2 (V), bngain (H), bnbias (H) start in the
    parameter arena (and their gradients in the gradient arena); the last entry is its size.

    W2 is kept transposed, (V, H): the backward's dh = dlogits W2^T and dW2^T = dlogits^T h are
    then plain row-major products, ~2x faster in OpenBLAS than on transposed views for H x 27, and
    the forward's h (W2^T)^T costs the same as h W2. The model's W2 is written at sync_to_model.
    """
    sizes = (V * E, K * H, H, V * H, V, H, H)
    offs = np.zeros(len(sizes) + 1, np.int64)
    for i in range(len(sizes)):
        offs[i + 1] = offs[i] + _aligned(sizes[i])
    return offs


@jit
def work_offsets(B, K, H, V):
    """Where embcat, dembcat (B, K), hprebn/xhat, h, dh (B, H), logits^T/dlogits^T (V, B), mean, var_inv
    (H) and the softmax's per-example max (B) start in the activation arena; the last entry is its
    size."""
    sizes = (B * K, B * K, B * H, B * H, B * H, B * V, H, H, B)
    offs = np.zeros(len(sizes) + 1, np.int64)
    for i in range(len(sizes)):
        offs[i + 1] = offs[i] + _aligned(sizes[i])
    return offs


@jit(inline="always")
def _params_view(P, o, V, E, K, H):
    """(C, W1, b1, W2T, b2, bngain, bnbias): views into an arena laid out by param_offsets."""
    return (P[o[0]:o[0] + V * E].reshape((V, E)), P[o[1]:o[1] + K * H].reshape((K, H)), P[o[2]:o[2] + H],
            P[o[3]:o[3] + V * H].reshape((V, H)), P[o[4]:o[4] + V], P[o[5]:o[5] + H], P[o[6]:o[6] + H])


# --- the step ------------------------------------------------------------------------------------

@jit(inline="always")
def step_body(P, G, work, Yb, dims, Xtr, Ytr, ix, lr, update, blocks):
    """Forward, backward and (if `update`) the SGD update for the minibatch ix; returns the loss.

    P, G: parameter and gradient arenas (param_offsets); work: the activations (work_offsets);
    dims: (V, E, H). G's dC must be all zero on entry; it is all zero again on return when `update`
    is set.
    """
    V, E, H = dims[0], dims[1], dims[2]
    B, K = ix.shape[0], Xtr.shape[1] * dims[1]
    po, wo = param_offsets(V, E, K, H), work_offsets(B, K, H, V)
    C, W1, b1, W2T, b2, bngain, bnbias = _params_view(P, po, V, E, K, H)
    dC, dW1, db1, dW2T, db2, dbngain, dbnbias = _params_view(G, po, V, E, K, H)
    embcat = work[wo[0]:wo[0] + B * K].reshape((B, K))
    dembcat = work[wo[1]:wo[1] + B * K].reshape((B, K))
    hprebn = work[wo[2]:wo[2] + B * H].reshape((B, H))  # then xhat
    h = work[wo[3]:wo[3] + B * H].reshape((B, H))
    dh = work[wo[4]:wo[4] + B * H].reshape((B, H))  # then dhpreact, then dhprebn
    logitsT = work[wo[5]:wo[5] + B * V].reshape((V, B))  # then dlogits^T
    mean, var_inv = work[wo[6]:wo[6] + H], work[wo[7]:wo[7] + H]
    colmax = work[wo[8]:wo[8] + B]
    colsum = np.empty(B)  # float64 whatever the dtype: one small allocation per step
    # forward
    if not embedding_forward(C, Xtr, Ytr, ix, embcat, Yb):  # (B, K)
        return np.nan
    linear_forward(embcat, W1, hprebn)  # (B, H); b1 is added in the next pass
    batchnorm_tanh_forward(hprebn, b1, bngain, bnbias, h, mean, var_inv, blocks, BN_EPS)  # (B, H) xhat, h
    np.dot(W2T, h.T, logitsT)  # (V, B) logits^T; b2 is added in the next pass
    loss = cross_entropy_forward(logitsT, b2, Yb, db2, colmax, colsum)  # logits^T -> dlogits^T (V, B)
    # backward
    linear_backward_t(logitsT.T, h, W2T, dh, dW2T)  # (B, H), (V, H)
    batchnorm_tanh_backward(dh, hprebn, h, bngain, var_inv, dbngain, dbnbias, db1, blocks)  # dh -> dhprebn
    linear_backward(dh, embcat, W1, dembcat, dW1)  # (B, K), (K, H)
    embedding_backward(dembcat, Xtr, ix, dC)  # (V, E)
    if update:
        if V <= B * Xtr.shape[1]:
            # a small vocabulary (27 rows against the batch's 96 lookups): C with everything else, in
            # one pass over the arenas (the rows no example touched get C - lr * 0, which is C, and the
            # gaps between pieces are zero in both), then dC cleared whole: ~0.4-1 µs less a step than
            # visiting the batch's rows
            sgd_update(P[po[0]:po[7]], G[po[0]:po[7]], lr)
            clear(G[po[0]:po[0] + V * E])
        else:  # a large vocabulary: only the rows the batch touched
            sgd_update(P[po[1]:po[7]], G[po[1]:po[7]], lr)
            embedding_sgd_and_clear(C, dC, Xtr, ix, lr)
    return loss


# The minibatches' indices come as the address of nsteps*B int64s (torch's `ix.data_ptr()`, or a
# NumPy array's `.ctypes.data`), B being Yb's length: `ix.numpy()` alone cost ~0.7 µs a call, and the
# dispatcher unboxes an int faster than an array. The caller keeps that memory alive for the call.

@intrinsic
def _int64_pointer(typingctx, address):
    """An address, as an int64, made into an int64 pointer that numba.carray can wrap."""
    if address != types.int64:
        return None

    def codegen(context, builder, sig, args):
        return builder.inttoptr(args[0], context.get_value_type(sig.return_type))

    return types.CPointer(types.int64)(types.int64), codegen


# Two entry points with their own names, so numba's disk cache keeps one compiled version of each.
# Each runs `nsteps` steps in one call, on the minibatches ix[s] = the B int64s at ix_address + s*B*8:
# the training loop draws a chunk of minibatches at once, and at the lecture's shapes that saves the
# dispatcher, the engine's Python and torch.randint's overhead of every step but one (~5 µs of ~40).
# losses[s] gets step s's loss; a step whose loss is not finite is the chunk's last (its update is
# made, as a one-step call would make it), and the return value is the number of steps run.

@jit(inline="always")
def run_steps(P, G, work, Yb, dims, Xtr, Ytr, ix_address, nsteps, lr, update, blocks, losses):
    ixs = carray(_int64_pointer(ix_address), (nsteps, Yb.shape[0]))  # (nsteps, B) read in place
    for s in range(nsteps):
        loss = step_body(P, G, work, Yb, dims, Xtr, Ytr, ixs[s], lr, update, blocks)
        losses[s] = loss
        if not np.isfinite(loss):
            return s + 1
    return nsteps


@jit
def train_steps(P, G, work, Yb, dims, Xtr, Ytr, ix_address, nsteps, lr, update, blocks, losses):
    """One core: the lecture's shapes, where waking threads costs more than it saves."""
    return run_steps(P, G, work, Yb, dims, Xtr, Ytr, ix_address, nsteps, lr, update, blocks, losses)


@jit(parallel=True)
def train_steps_parallel(P, G, work, Yb, dims, Xtr, Ytr, ix_address, nsteps, lr, update, blocks, losses):
    """The prange loops over column blocks spread over numba's threads: large batches."""
    return run_steps(P, G, work, Yb, dims, Xtr, Ytr, ix_address, nsteps, lr, update, blocks, losses)


@jit
def clear_embedding_grad(dC, Xtr, ix):
    """After a step without update: zero the rows of dC the batch touched, for the next step."""
    embedding_clear(dC, Xtr, ix)
