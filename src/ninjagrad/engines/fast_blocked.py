"""The lecture's MLP training step for large B*H: one column block of the hidden layer at a time.

The one-core kernel (fast_step.c) runs each layer over the whole batch: at B=4096, H=1024 every
(B, H) pass streams 16 MB through DRAM, and its batchnorm reads its input five times. Here the hidden layer is cut into
column blocks (~128 columns), and each block goes down the batch in chunks of rows small enough
(ROW_CHUNK_ELEMENTS) that a chunk's output is still in L1/L2 when the elementwise pass and the next
matmul read it. Each thread owns a group of blocks and calls a single-threaded BLAS (the caller sets
OpenBLAS to 1 thread). Per block, [j0, j1) of H, w wide:

    block_forward                                     block_backward (after the loss)
    0. table_t = C W1_t (V, w), t < T        gemm  1. per chunk: dh = dlogits W2^T          gemm
    1. per row: hprebn = sum_t table_t[X_t]                         dhpreact = (1 - h^2) dh, sums
                mean; then var (a pass)                             dW2^T += dlogits^T h          gemm
                                                      2. per row:   dhprebn (batchnorm backward)
    2. per chunk: xhat, h = tanh(.)                                 S_t[X_t] += dhprebn, t < T
                  logits_g^T += W2^T h^T     gemm        per t:     dW1_t = C^T S_t               gemm
                                                                    dC_g += S_t W1_t^T            gemm
    then, on one thread: logits = sum_g logits_g, softmax + cross-entropy (-> dlogits, db2);
    after the backward: dC = sum_g dC_g, the SGD update.

The first layer goes through the embedding table: embcat W1 = sum_t C[X_t] W1_t = sum_t (C W1_t)[X_t].
With the lecture's V = 27 characters against a batch of thousands, the T products C W1_t are tiny
and each row of hprebn is a sum of T of their rows, a gather where embcat W1 would make K = T*E
multiply-adds per element; backward, the rows of dhprebn are scatter-added by character into S_t
(onehot(X_t)^T dhprebn), from which dW1 and dC are small matmuls. Two K-deep matmuls over the batch
(dembcat and dW1) and the forward's one become gathers and scatters: ~24% less time on one core at
B = 4096, H = 1024. The engine offers this kernel for vocabularies up to fast.BLOCKED_MAX_VOCAB.

The cross-entropy and update are the one-core kernel's, written again for numba below; the
batchnorm and tanh passes are its formulas, summed over the batch in the same order. Each group's
partial sums of the logits and of dC are added in a fixed order afterwards, so results do not depend
on which thread finished first.

The matmuls act on column blocks of row-major matrices and accumulate (beta = 1), which numba's
np.dot cannot do; `gemm` below calls BLAS's sgemm/dgemm directly, through the entry point np.dot
uses (numba's helper `numba_xxgemm`), so the compiled code still caches to disk.

Layout: xhat and h are kept block by block, each block's (B, w) panel contiguous (the panel of
[j0, j1) starts at B*j0), so the row passes run over dense rows of w elements. The backward writes
dhpreact and then dhprebn over h: h is not needed once dW2 and tanh's backward have read it.

B batch, T context (block_size), E n_embd, K = T*E, H n_hidden, V vocab, w block width, g group
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import carray, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from .fast_jit import jit
from .fast_vecmath import vexp, vtanh

# numba keys the on-disk cache of these kernels on this file's contents alone, yet they inline
# fast_vecmath's exp and tanh and are compiled with fast_jit's options. Those files' hashes are
# written here so that editing either changes this file too, and the cached machine code is rebuilt
# (tests/test_fast_blocked.py holds them equal).
INLINED_SHA256 = {
    "fast_jit.py": "324fb6fbd28496568f8d693331bc9aff2361c089c59906d68bc7979da2ef349a",
    "fast_vecmath.py": "705722eb2090fcfd5230b6836fa8ab7d5fe825ee61d66f78554c9965fe2d351b",
}

BN_EPS = 1e-5  # the same as ops.BN_EPS

# rows * w of the chunks the passes go down the batch in: 128 KB in float32, so a chunk's dh, the
# rows of h and xhat and the logits it meets stay in L1/L2. Measured at B=4096, H=1024, float32, 2
# cores, when the first layer was still a matmul (fastest of 8 steps): 8K elements 14.7 ms/step, 16K
# 13.6, 32K 13.0-13.4, 64K 16.6, 128K 15.7.
ROW_CHUNK_ELEMENTS = 32 * 1024
# columns per block: wider blocks make fewer, larger matmuls. `benchmarks/fast_blocked.py --widths 32
# 64 128 256` at 4096 x 1024, 2 cores: 18.4, 17.1, 15.5, 15.7 ms a step.
BLOCK_TARGET = 128


# --- the parameter arena, shared with the one-core kernel (fast_step.c) ----------------------------
# Parameters and gradients live in two flat arenas: a call unboxes three float arrays instead of ~25
# (numba's dispatcher unboxes every array argument on every call). Each piece starts on a multiple
# of ALIGN elements (64 bytes in float32), so vector loops and BLAS see aligned rows.

ALIGN = 16


@jit(inline="always")
def _aligned(n):
    return (n + ALIGN - 1) // ALIGN * ALIGN


@jit
def param_offsets(V, E, K, H):
    """Where C (V, E), W1 (K, H), b1 (H), W2T (V, H), b2 (V), bngain (H), bnbias (H) start in the
    parameter arena (and their gradients in the gradient arena); the last entry is its size.

    The same layout as fast_step.c's (tests/test_fast_blocked.py holds them equal): the engine's
    arenas are shared by both kernels. W2 is kept transposed, (V, H); see fast_step.c.
    """
    sizes = (V * E, K * H, H, V * H, V, H, H)
    offs = np.zeros(len(sizes) + 1, np.int64)
    for i in range(len(sizes)):
        offs[i + 1] = offs[i] + _aligned(sizes[i])
    return offs


@jit(inline="always")
def _params_view(P, o, V, E, K, H):
    """(C, W1, b1, W2T, b2, bngain, bnbias): views into an arena laid out by param_offsets."""
    return (P[o[0]:o[0] + V * E].reshape((V, E)), P[o[1]:o[1] + K * H].reshape((K, H)), P[o[2]:o[2] + H],
            P[o[3]:o[3] + V * H].reshape((V, H)), P[o[4]:o[4] + V], P[o[5]:o[5] + H], P[o[6]:o[6] + H])


# --- pieces of the step -------------------------------------------------------------------------

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
def sgd_update(p, g, lr):
    """p <- p - lr g, the lecture's update (optim.SGD), on flat views."""
    step = p.dtype.type(lr)  # lr in the parameters' dtype, as torch's p.sub_(g, alpha=lr) does
    for k in range(p.shape[0]):
        p[k] -= step * g[k]


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


def block_width(H: int, ngroups: int) -> int:
    """About BLOCK_TARGET columns a block, the same number of blocks in every group (the groups take
    equal shares of the work), rounded up to a multiple of 8."""
    per_group = -(-H // (ngroups * BLOCK_TARGET))  # blocks per group
    width = -(-H // (ngroups * per_group))
    return max(8, -(-width // 8) * 8)


def make_blocks(H: int, ngroups: int, width: int) -> np.ndarray:
    """The kernel's `blocks` argument: [ngroups, c_0 = 0, c_1, ..., c_n = H].

    Block i is the columns c_i..c_{i+1}, all `width` wide but the last; thread group g takes the
    blocks g, g + ngroups, g + 2 ngroups, ... (so groups differ by at most one block)."""
    bounds = list(range(0, H, width)) + [H]
    return np.array([ngroups] + bounds, np.int64)


@jit(inline="always")
def _rows(B, w):
    """Rows in a chunk of a block w wide."""
    return min(B, max(16, ROW_CHUNK_ELEMENTS // w))


@jit(inline="always")
def _chunk(B, wmax):
    """The most elements rows * w of a chunk in blocks at most wmax wide (rows * w <= ROW_CHUNK_ELEMENTS
    where that leaves 16 rows or more)."""
    return min(B * wmax, max(ROW_CHUNK_ELEMENTS, 16 * wmax))


@jit
def work_offsets_blocked(B, T, E, H, V, ngroups, wmax):
    """Where the xhat and h panels (B*H each), logits^T (V, B), the groups' partial
    logits^T (g, V, B), each group's tables (g, T, V, wmax), partial dC (g, V, E) and dh scratch (g,
    a chunk of rows * wmax), mean, var_inv (H) and the softmax's per-example max (B) start in the
    activation arena; the last entry is its size."""
    sizes = (B * H, B * H, V * B, ngroups * V * B, ngroups * T * V * wmax, ngroups * V * E,
             ngroups * _chunk(B, wmax), H, H, B)
    offs = np.zeros(len(sizes) + 1, np.int64)
    for i in range(len(sizes)):
        offs[i + 1] = offs[i] + _aligned(sizes[i])
    return offs


def work_size_blocked(B: int, T: int, E: int, H: int, V: int, blocks: np.ndarray) -> int:
    """Elements of the `work` arena that train_steps_blocked needs for batches of B with these blocks."""
    return int(work_offsets_blocked(B, T, E, H, V, int(blocks[0]), int(np.diff(blocks[1:]).max()))[-1])


# --- BLAS, called directly -----------------------------------------------------------------------

@intrinsic
def _xxgemm(typingctx, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """Fortran BLAS ?gemm (column-major): c = alpha op(a) op(b) + beta c; a, b, c arrays of one dtype
    whose first element is where BLAS starts; trans* booleans. Calls numba's helper numba_xxgemm,
    which finds scipy's sgemm/dgemm on its first call, taking the GIL for that; numba's parallel
    regions release the GIL, so a worker thread can make that first call too."""
    dtype = c.dtype
    if not (isinstance(a, types.Array) and isinstance(b, types.Array) and isinstance(c, types.Array)
            and a.dtype == dtype and b.dtype == dtype and dtype in (types.float32, types.float64)):
        return None
    sig = types.int32(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)

    def codegen(context, builder, sig, args):
        ta, tb, m_, n_, k_, al, a_, lda_, b_, ldb_, be, c_, ldc_ = args
        char, voidp, intp = ir.IntType(8), cgutils.voidptr_t, context.get_value_type(types.intp)
        fnty = ir.FunctionType(ir.IntType(32), [char, char, char, intp, intp, intp, voidp, voidp, intp,
                                                voidp, intp, voidp, voidp, intp])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "numba_xxgemm")

        def flag(v, ty):
            v = context.cast(builder, v, ty, types.boolean)
            return builder.select(v, ir.Constant(char, ord("t")), ir.Constant(char, ord("n")))

        def num(v, ty):  # a scalar, cast and put in a stack slot: Fortran passes everything by reference
            return builder.bitcast(cgutils.alloca_once_value(builder, context.cast(builder, v, ty, dtype)), voidp)

        def data(v, ty):
            return builder.bitcast(context.make_array(ty)(context, builder, v).data, voidp)

        def size(v, ty):
            return context.cast(builder, v, ty, types.intp)

        s = sig.args
        kind = ir.Constant(char, ord("s" if dtype == types.float32 else "d"))
        return builder.call(fn, (kind, flag(ta, s[0]), flag(tb, s[1]), size(m_, s[2]), size(n_, s[3]),
                                 size(k_, s[4]), num(al, s[5]), data(a_, s[6]), size(lda_, s[7]), data(b_, s[8]),
                                 size(ldb_, s[9]), num(be, s[10]), data(c_, s[11]), size(ldc_, s[12])))

    return sig, codegen


@jit(inline="always")
def _ld(x):
    """The leading dimension of a row-major view whose rows are contiguous: its row stride, in elements."""
    return max(1, x.strides[0] // x.itemsize) if x.shape[0] > 1 else max(1, x.shape[1])


@jit(inline="always")
def gemm(a, trans_a, b, trans_b, c, beta):
    """c = op(a) op(b) + beta c for row-major 2-D views with contiguous rows (column blocks allowed).

    A row-major matrix is the column-major storage of its transpose, so c = op(a) op(b) is asked of
    Fortran BLAS as c^T = op(b)^T op(a)^T: the operands swap, the flags stay."""
    m, n = c.shape
    k = a.shape[0] if trans_a else a.shape[1]
    _xxgemm(trans_b, trans_a, n, m, k, 1.0, b, _ld(b), a, _ld(a), beta, c, _ld(c))


# --- the step ------------------------------------------------------------------------------------

@jit
def block_forward(Xtr, ix, C, W1, b1, bngain, bnbias, W2T, xhat, h, mean, var_inv, logitsT, table, eps):
    """One column block's forward: xhat, h (B, w) of the block, its mean and var_inv, and its share
    of the logits added to logitsT (V, B). W1, bngain, ... are the block's columns; table is this
    thread's (T, V, >= w) scratch.

    hprebn = embcat W1 = sum_t C[X_t] W1_t = sum_t (C W1_t)[X_t]: the vocabulary is far smaller than a
    large batch, so the T products C W1_t (V, w) are made once per block and each row of hprebn is
    the sum of T of their rows, a gather where the matmul would do K multiply-adds per element. Then
    the passes of fast_step_kernel.h's batchnorm_tanh_forward:
      1. per row: hprebn + b1 (written where xhat goes), added to the column sums while it is hot; then
         a pass for the squared differences to the mean, var_inv = 1 / sqrt(var / (n - 1) + eps)
         (Bessel, as the lecture);
      2. per chunk of rows: xhat = (hprebn - mean) var_inv, h = tanh(bngain xhat + bnbias),
         logits^T += W2^T h^T.
    """
    B, w = h.shape
    T, E = Xtr.shape[1], C.shape[1]
    dt = h.dtype.type
    rows = _rows(B, w)
    for t in range(T):
        gemm(C, False, W1[t * E:(t + 1) * E], False, table[t, :, :w], 0.0)  # (V, w) C W1_t
    m = np.zeros(w, h.dtype)  # per column: the sum, then the mean
    vi = np.zeros(w, h.dtype)  # per column: the sum of squared differences, then var_inv
    for i in range(B):
        x, row = xhat[i], ix[i]
        first = table[0, Xtr[row, 0]]
        for j in range(w):
            x[j] = first[j]
        for t in range(1, T):
            tt = table[t, Xtr[row, t]]
            for j in range(w):
                x[j] += tt[j]  # (w,) embcat W1 of example i
        for j in range(w):
            v = x[j] + b1[j]  # (w,) hprebn: b1 added as fast_step_kernel.h does (and says why)
            x[j] = v
            m[j] += v
    for j in range(w):
        m[j] /= dt(B)
    for i in range(B):
        x = xhat[i]
        for j in range(w):
            d = x[j] - m[j]
            vi[j] += d * d
    for j in range(w):
        vi[j] = dt(1.0) / np.sqrt(vi[j] / dt(B - 1) + dt(eps))  # 1/sqrt vectorises, pow(x, -0.5) would not
        mean[j] = m[j]
        var_inv[j] = vi[j]
    for r0 in range(0, B, rows):
        r1 = min(B, r0 + rows)
        for i in range(r0, r1):
            x, hi = xhat[i], h[i]
            for j in range(w):
                xh = (x[j] - m[j]) * vi[j]
                x[j] = xh  # (B, w) xhat
                hi[j] = vtanh(bngain[j] * xh + bnbias[j])  # (B, w) h
        gemm(W2T, False, h[r0:r1], True, logitsT[:, r0:r1], 1.0)  # (V, rows) += W2^T h^T


@jit
def block_backward(dlogitsT, Xtr, ix, C, W1, W2T, bngain, var_inv, xhat, h, dW1, dW2T, db1, dbngain, dbnbias,
                   dC, table, scratch):
    """One column block's backward, from dlogits^T (V, B) to dW1, dW2^T, db1, dbngain, dbnbias of
    the block (assigned) and its share of dC (V, E) (added). W1, W2T, ... are the block's columns;
    table is this thread's (T, V, >= w) scratch.

    Two passes down the batch in chunks of _rows(B, w) rows, so that what a chunk's matmuls and loops
    share stays in L1/L2 (a whole block, 2 MB a (B, w) array at B=4096, w=128 in float32, does not):
      1. dh = dlogits W2^T, dW2^T += dlogits^T h, dhpreact = (1 - h^2) dh written over h, and the
         column sums dbnbias = sum_B dhpreact, dbngain = sum_B dhpreact xhat;
      2. dhprebn = bngain var_inv / n (n dhpreact - dbnbias - n/(n-1) xhat dbngain), over h again
         (fast_step_kernel.h's batchnorm_tanh_backward), db1 = sum_B dhprebn, and each row of dhprebn
         added to S_t[X_t] for every t: S_t (V, w) = onehot(X_t)^T dhprebn, accumulated, never
         assigned, so a character seen twice gets both rows.
    Then, from the S_t, the first layer's gradients without a K-deep matmul over the batch:
    dW1_t = embcat_t^T dhprebn = C^T S_t, and dC += dembcat_t scattered by X_t = S_t W1_t^T.
    """
    B, w = h.shape
    dt = h.dtype.type
    rows = _rows(B, w)
    sb = np.zeros(w, h.dtype)  # dbnbias, then db1
    sg = np.zeros(w, h.dtype)  # dbngain
    for r0 in range(0, B, rows):
        r1 = min(B, r0 + rows)
        dh = scratch[:(r1 - r0) * w].reshape((r1 - r0, w))
        gemm(dlogitsT[:, r0:r1], True, W2T, False, dh, 0.0)  # (rows, w) dh = dlogits W2^T
        gemm(dlogitsT[:, r0:r1], False, h[r0:r1], False, dW2T, 0.0 if r0 == 0 else 1.0)  # (V, w)
        for i in range(r1 - r0):
            d, hi, xi = dh[i], h[r0 + i], xhat[r0 + i]
            for j in range(w):
                v = (dt(1.0) - hi[j] * hi[j]) * d[j]  # tanh's backward: dhpreact
                hi[j] = v  # h is not needed any more: dW2 of these rows is made
                sb[j] += v
                sg[j] += v * xi[j]
    a = np.empty(w, h.dtype)  # bngain var_inv / n
    csg = np.empty(w, h.dtype)  # n/(n-1) dbngain
    for j in range(w):
        dbnbias[j] = sb[j]
        dbngain[j] = sg[j]
        a[j] = bngain[j] * var_inv[j] / dt(B)
        csg[j] = dt(B / (B - 1)) * sg[j]
    sbt = sb.copy()
    sb[:] = 0.0
    n = dt(B)
    T, E = Xtr.shape[1], C.shape[1]
    S = table[:, :, :w]  # (T, V, w)
    S[:, :, :] = 0.0
    for i in range(B):
        d, xi, row = h[i], xhat[i], ix[i]
        for j in range(w):
            v = a[j] * (n * d[j] - sbt[j] - csg[j] * xi[j])  # (w,) dhprebn of example i
            d[j] = v
            sb[j] += v
        for t in range(T):
            st = S[t, Xtr[row, t]]
            for j in range(w):
                st[j] += d[j]  # (V, w) S_t, scatter-added
    for j in range(w):
        db1[j] = sb[j]
    for t in range(T):
        gemm(C, True, S[t], False, dW1[t * E:(t + 1) * E], 0.0)  # (E, w) dW1_t = C^T S_t
        gemm(S[t], False, W1[t * E:(t + 1) * E], True, dC, 1.0)  # (V, E) dC += S_t W1_t^T


@jit(inline="always")
def step_body_blocked(P, G, work, Yb, dims, Xtr, Ytr, ix, lr, update, blocks):
    """Forward, backward and (if `update`) the SGD update for the minibatch ix; returns the loss.

    The arenas P, G are laid out by param_offsets; work is laid out by work_offsets_blocked;
    blocks comes from make_blocks. G's dC must be all zero on entry, and is again after an update.
    """
    V, E, H = dims[0], dims[1], dims[2]
    B, K = ix.shape[0], Xtr.shape[1] * dims[1]
    ngroups, bounds = blocks[0], blocks[1:]
    nblk = bounds.shape[0] - 1
    wmax = 0
    for i in range(nblk):
        wmax = max(wmax, bounds[i + 1] - bounds[i])
    T = Xtr.shape[1]
    po, wo = param_offsets(V, E, K, H), work_offsets_blocked(B, T, E, H, V, ngroups, wmax)
    C, W1, b1, W2T, b2, bngain, bnbias = _params_view(P, po, V, E, K, H)
    dC, dW1, db1, dW2T, db2, dbngain, dbnbias = _params_view(G, po, V, E, K, H)
    xhats = work[wo[0]:wo[0] + B * H]  # the (B, w) panels of hprebn (= embcat W1), then xhat, block after block
    hs = work[wo[1]:wo[1] + B * H]  # the (B, w) panels of h
    logitsT = work[wo[2]:wo[2] + V * B].reshape((V, B))  # then dlogits^T
    logits_g = work[wo[3]:wo[3] + ngroups * V * B].reshape((ngroups, V, B))
    tables = work[wo[4]:wo[4] + ngroups * T * V * wmax].reshape((ngroups, T, V, wmax))  # C W1_t, then S_t
    dC_g = work[wo[5]:wo[5] + ngroups * V * E].reshape((ngroups, V, E))
    chunk = _chunk(B, wmax)
    dh_g = work[wo[6]:wo[6] + ngroups * chunk].reshape((ngroups, chunk))  # (g, rows * w) dh scratch
    mean, var_inv = work[wo[7]:wo[7] + H], work[wo[8]:wo[8] + H]
    colmax = work[wo[9]:wo[9] + B]
    colsum = np.empty(B)  # float64 whatever the dtype, as in fast_step_kernel.h
    # forward; embcat itself is never gathered: the tables C W1_t stand for it
    if not minibatch_targets(Xtr, Ytr, ix, Yb):  # (B,)
        return np.nan
    for g in prange(ngroups):
        lg = logits_g[g]  # (V, B) this group's share of logits^T
        lg[:, :] = 0.0
        for blk in range(g, nblk, ngroups):
            j0, j1 = bounds[blk], bounds[blk + 1]
            w = j1 - j0
            xh = xhats[B * j0:B * j1].reshape((B, w))
            hh = hs[B * j0:B * j1].reshape((B, w))
            block_forward(Xtr, ix, C, W1[:, j0:j1], b1[j0:j1], bngain[j0:j1], bnbias[j0:j1], W2T[:, j0:j1],
                          xh, hh, mean[j0:j1], var_inv[j0:j1], lg, tables[g], BN_EPS)
    logitsT[:, :] = logits_g[0]
    for g in range(1, ngroups):
        logitsT += logits_g[g]  # in a fixed order: the sum does not depend on which thread ran first
    loss = cross_entropy_forward(logitsT, b2, Yb, db2, colmax, colsum)  # logits^T -> dlogits^T (V, B)
    # backward
    for g in prange(ngroups):
        dg = dC_g[g]  # (V, E) this group's share of dC
        dg[:, :] = 0.0
        for blk in range(g, nblk, ngroups):
            j0, j1 = bounds[blk], bounds[blk + 1]
            xh = xhats[B * j0:B * j1].reshape((B, j1 - j0))
            hh = hs[B * j0:B * j1].reshape((B, j1 - j0))
            block_backward(logitsT, Xtr, ix, C, W1[:, j0:j1], W2T[:, j0:j1], bngain[j0:j1], var_inv[j0:j1], xh, hh,
                           dW1[:, j0:j1], dW2T[:, j0:j1], db1[j0:j1], dbngain[j0:j1], dbnbias[j0:j1], dg,
                           tables[g], dh_g[g])
    dC[:, :] = dC_g[0]  # all of dC: the rows no example touched get exact zeros from their zero rows of S_t
    for g in range(1, ngroups):
        dC += dC_g[g]  # in a fixed order
    if update:
        sgd_update(P[po[1]:po[7]], G[po[1]:po[7]], lr)  # everything but C: gaps are zero in both arenas
        embedding_sgd_and_clear(C, dC, Xtr, ix, lr)
    return loss


@jit(parallel=True)
def train_steps_blocked(P, G, work, Yb, dims, Xtr, Ytr, ix_address, nsteps, lr, update, blocks, losses):
    """_fast_step.train_steps' contract (nsteps minibatches read from ix_address, losses[s], the
    number of steps run), each step made by step_body_blocked, its block groups spread over threads."""
    ixs = carray(_int64_pointer(ix_address), (nsteps, Yb.shape[0]))  # (nsteps, B) read in place
    for s in range(nsteps):
        loss = step_body_blocked(P, G, work, Yb, dims, Xtr, Ytr, ixs[s], lr, update, blocks)
        losses[s] = loss
        if not np.isfinite(loss):
            return s + 1
    return nsteps
