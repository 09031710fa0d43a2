"""ninjagrad.cmp and ninjagrad.check_backward: the grader for notebooks and any op."""
from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ninjagrad
from ninjagrad import ops


def randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@settings(max_examples=15, deadline=None)
@given(B=st.integers(2, 9), H=st.integers(1, 7), seed=st.integers(0, 10_000))
def test_check_backward_passes_the_batchnorm_op(B, H, seed):
    x, gain, bias = randn(B, H, seed=seed) * 2 + 0.5, randn(1, H, seed=seed + 1) * 0.1 + 1, randn(1, H, seed=seed + 2)
    res = ninjagrad.check_backward(ops.batchnorm_forward, ops.batchnorm_backward, x, gain, bias, verbose=False)
    assert [r.verdict in ("exact", "rounding") for r in res] == [True, True, True], [r.to_dict() for r in res]


def test_check_backward_names_the_mistakes(capsys):
    x, W, b = randn(8, 5), randn(5, 4, seed=1), randn(4, seed=2)

    def bad(dout, cache):
        dx, dW, db = ops.linear_backward(dout, cache)
        return -dx, dW.T, db / 8

    res = ninjagrad.check_backward(ops.linear_forward, bad, x, W, b)
    assert [(r.verdict, r.diagnosis.kind) for r in res] == [("wrong", "sign"), ("shape", "transpose"),
                                                            ("wrong", "scale")]
    assert "transpose" in capsys.readouterr().out


def test_check_backward_tells_rounding_in_float32():
    x = randn(16, 9, seed=3) * 3

    def fwd(x):
        return torch.tanh(x)

    def bwd(dout, x):
        return ((1 - torch.tanh(x) ** 2) * dout,)

    (r,) = ninjagrad.check_backward(fwd, bwd, x, verbose=False)
    assert r.verdict in ("exact", "rounding")


def test_cmp_prints_the_lecture_line_and_a_verdict(capsys):
    x = randn(4, 6, seed=4).requires_grad_(True)
    y = x.exp()
    y.retain_grad()
    (y * randn(4, 6, seed=5)).sum().backward()
    right = ninjagrad.cmp("x", (y * y.grad).detach(), x)
    assert right.verdict in ("exact", "rounding")
    half = ninjagrad.cmp("x", (0.5 * y * y.grad).detach(), x)
    assert half.verdict == "wrong" and half.diagnosis.kind == "scale"
    summed = ninjagrad.cmp("x", (y * y.grad).detach().sum(0), x)
    assert summed.verdict == "shape"
    out = capsys.readouterr().out
    assert "exact:" in out and "approximate:" in out and "maxdiff:" in out and "verdict: wrong" in out


def test_import_ninjagrad_stays_cheap():
    import subprocess
    import sys
    code = "import sys, ninjagrad; print('torch' in sys.modules); ninjagrad.cmp; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True"]


def test_cmp_refuses_a_tensor_without_grad(capsys):
    """A forward tensor whose .grad is None (retain_grad forgotten): one line, no verdict against its values."""
    x = randn(4, 3).requires_grad_()
    h = torch.tanh(x)  # h.retain_grad() forgotten
    (h * randn(4, 3, seed=1)).sum().backward()
    assert ninjagrad.cmp("h", torch.ones(4, 3), h) is None
    out = capsys.readouterr().out
    assert "h.grad is None" in out and "retain_grad" in out and out.count("\n") == 1
    r = ninjagrad.cmp("x", x.grad.clone(), x)  # with .grad: judged as before
    assert r.verdict == "exact"
