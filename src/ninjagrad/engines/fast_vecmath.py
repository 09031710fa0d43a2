"""exp and tanh for float32 that LLVM can vectorise.

numba turns `math.exp(x)` inside a loop into one call of the C library per element; at the
lecture's shapes a step makes ~7,000 of them and they would cost more than all the matmuls. These
versions are plain arithmetic (a range reduction, a polynomial, an exponent built from bits), so a
loop over them compiles to AVX instructions, 8 or 16 elements at a time. They are accurate to a
few units in the last place of float32; float64 arrays keep the C library's exp and tanh.

    exp(x)  = 2^n exp(r),  n = round(x / ln 2),  r = x - n ln 2,  |r| <= ln(2) / 2
    tanh(x) = x P(x^2) / Q(x^2)  for |x| <= 9, a rational fit; +-1 beyond
"""
from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

from .fast_jit import jit

LOG2E = np.float32(1.4426950408889634)
# ln 2 split in two so that n * LN2_HI is exact for the n that occur (|n| < 2^8): Cody and Waite's trick
LN2_HI = np.float32(0.693359375)
LN2_LO = np.float32(-2.12194440e-4)
X_MIN = np.float32(-87.0)  # exp(-87) ~ 1.6e-38 is still a normal float32; below it we return that
X_MAX = np.float32(88.0)  # exp(88) ~ 1.7e38 is near the largest float32; callers pass x <= 0 anyway
TANH_BIG = np.float32(9.0)  # tanh(9) rounds to 1.0 in float32


@intrinsic
def _int32_bits_as_float32(typingctx, i):
    """Reinterpret the 32 bits of an int32 as a float32 (a no-op for the CPU)."""
    if i != types.int32:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@jit(inline="always")
def _pow2(n):
    """2^n for an integral float32 n in [-126, 127]: the exponent field is n + 127."""
    return _int32_bits_as_float32(np.int32((np.int32(n) + np.int32(127)) << np.int32(23)))


# expm1(r) ~ r + r^2 (P0 + P1 r + P2 r^2 + P3 r^3 + P4 r^4) on |r| <= ln(2)/2: a least-squares fit of
# (expm1(r) - r) / r^2 at 400 Chebyshev nodes of that interval, done in float64 with NumPy's
# Polynomial.fit. Its relative error is 2.5e-8 (~0.2 ulp of float32); the Taylor series needs terms to
# r^7 for the same, one multiply and one add more.
P0 = np.float32(0.5)
P1 = np.float32(0.16666576266288757)
P2 = np.float32(0.04166646674275398)
P3 = np.float32(0.008363175205886364)
P4 = np.float32(0.0013933643931522965)


@jit(inline="always")
def exp32(x):
    """exp(x) for a float32 x, vectorisable: x = n ln2 + r, exp(x) = 2^n (1 + expm1(r))."""
    x = min(max(x, X_MIN), X_MAX)
    n = np.floor(x * LOG2E + np.float32(0.5))  # (float32, integral)
    r = (x - n * LN2_HI) - n * LN2_LO
    q = r + r * r * (P0 + r * (P1 + r * (P2 + r * (P3 + r * P4))))  # expm1(r)
    s = _pow2(n)
    return s + s * q


# tanh(x) ~ x P(x^2) / Q(x^2) on |x| <= TANH_BIG, P and Q of degree 4 (Q(0) = 1): a rational fit made
# by tools/fit_tanh.py (least squares on the relative error, reweighted toward the minimax fit, in
# float64). Evaluated in float32 its error is < 3 ulp; beyond TANH_BIG, tanh is 1 to float32's precision.
# Nine multiply-adds and one division: half the work of going through expm1, and tanh runs on every
# hidden unit of every step.
TP = tuple(np.float32(c) for c in (0.99999997955849318, 0.1338106156974242, 0.0034956303708691652,
                                   2.0609761731129804e-05, 1.3355576286382071e-08))
TQ = tuple(np.float32(c) for c in (0.46714377195989493, 0.025877144001049568, 0.00032857032057243506,
                                   7.7769381794564071e-07))


@jit(inline="always")
def tanh32(x):
    """tanh(x) for a float32 x, vectorisable: clamp, then the rational fit, kept within [-1, 1]."""
    a = min(max(x, -TANH_BIG), TANH_BIG)
    s = a * a
    p = a * (TP[0] + s * (TP[1] + s * (TP[2] + s * (TP[3] + s * TP[4]))))
    q = np.float32(1.0) + s * (TQ[0] + s * (TQ[1] + s * (TQ[2] + s * TQ[3])))
    return min(max(p / q, np.float32(-1.0)), np.float32(1.0))


# --- one name for both dtypes --------------------------------------------------------------------

def vexp(x):
    """exp for the kernels: the vectorisable version for float32, the C library's for float64."""
    return math.exp(x)


def vtanh(x):
    """tanh for the kernels: the vectorisable version for float32, the C library's for float64."""
    return math.tanh(x)


@overload(vexp, inline="always")
def _vexp(x):
    if x == types.float32:
        return lambda x: exp32(x)
    return lambda x: math.exp(x)


@overload(vtanh, inline="always")
def _vtanh(x):
    if x == types.float32:
        return lambda x: tanh32(x)
    return lambda x: math.tanh(x)
