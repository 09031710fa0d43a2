"""Fit the rational tanh that engines/fast_step.c evaluates in float32, and report its error.

    python tools/fit_tanh.py

tanh(x) ~ x P(s) / Q(s), s = x^2, P and Q of degree 4, Q(0) = 1, on 0 < x <= 9 (tanh is odd; beyond 9.01 it
is 1 in float32, and at 9 it is one float32 step below). The error to minimise is relative:
|x P/Q - tanh| / tanh. That is linear in the coefficients once multiplied by Q, so each round solves a
weighted least-squares problem for
x P(s) - tanh(x) Q(s) = 0, dividing each row by the previous round's tanh * Q (so the residual is the
relative error again), and raises the weight where the error is largest (Lawson's reweighting, which
drives least squares toward the minimax fit). Then every float32 in a dense grid is evaluated exactly
as the kernel does (float32 coefficients, Horner, clamp) and compared with float64 tanh.
"""
from __future__ import annotations

import numpy as np

DEG = 4
BIG = 9.0
ROUNDS = 160


def fit(deg: int = DEG, big: float = BIG, rounds: int = ROUNDS):
    x = np.concatenate([np.linspace(1e-4, big, 40_000), np.geomspace(1e-6, 1e-1, 2_000)])
    s, t = x * x, np.tanh(x)
    # columns: x s^k for P's coefficients (k = 0..deg), -tanh s^k for Q's (k = 1..deg; Q's constant is 1)
    A = np.concatenate([np.stack([x * s ** k for k in range(deg + 1)], 1),
                        np.stack([-t * s ** k for k in range(1, deg + 1)], 1)], 1)
    q_prev = np.ones_like(x)
    w = np.full_like(x, 1 / x.size)
    for _ in range(rounds):
        row = np.sqrt(w) / (t * q_prev)
        coef, *_ = np.linalg.lstsq(A * row[:, None], t * row, rcond=None)
        p, q = coef[:deg + 1], np.concatenate([[1.0], coef[deg + 1:]])
        q_prev = np.polynomial.polynomial.polyval(s, q)
        err = np.abs(x * np.polynomial.polynomial.polyval(s, p) / q_prev - t) / t
        w = w * np.sqrt(err / err.max()) + 1e-12
        w /= w.sum()
    return p, q, err.max()


def tanh32(x, p, q, big: float = BIG):
    """The kernel's float32 evaluation."""
    p, q = p.astype(np.float32), q.astype(np.float32)
    a = np.clip(x.astype(np.float32), np.float32(-big), np.float32(big))
    s = a * a
    P, Q = p[-1], q[-1]
    for k in range(len(p) - 2, -1, -1):
        P = P * s + p[k]
        Q = Q * s + q[k]
    return np.clip(a * P / Q, np.float32(-1), np.float32(1))


def main():
    p, q, err64 = fit()
    x = np.concatenate([np.linspace(-12, 12, 400_001), np.geomspace(1e-30, 12, 200_001),
                        -np.geomspace(1e-30, 12, 200_001)]).astype(np.float32)
    x = x[x != 0]
    ref = np.tanh(x.astype(np.float64))
    got = tanh32(x, p, q).astype(np.float64)
    ulps = np.abs(got - ref) / np.abs(ref) / 2.0 ** -23
    assert tanh32(np.zeros(1), p, q)[0] == 0
    print("P:", ", ".join(f"{c:.17g}" for c in p))
    print("Q:", ", ".join(f"{c:.17g}" for c in q[1:]), "(and Q(0) = 1)")
    print(f"relative error in float64: {err64:.3g}; evaluated in float32: {ulps.max():.2f} ulp at most")


if __name__ == "__main__":
    main()
