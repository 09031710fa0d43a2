"""Every lecture op's backward against autograd: float64 to 1e-10 relative, float32 with allclose."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ninjagrad import ops

from .helpers import check_op, rel_err


def randn(*shape, seed=0, scale=1.0, shift=0.0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale + shift


def cases(B=32, T=3, E=10, H=64, V=27, seed=0):
    g = torch.Generator().manual_seed(seed + 100)
    X = torch.randint(0, V, (B, T), generator=g)
    X[0, :] = X[1, 0]  # repeated indices on purpose: `dC[X] += demb` would drop them
    Y = torch.randint(0, V, (B,), generator=g)
    return {
        "embedding": (ops.embedding_forward, ops.embedding_backward, [randn(V, E, seed=seed), X]),
        "linear": (ops.linear_forward, ops.linear_backward,
                   [randn(B, T * E, seed=seed), randn(T * E, H, seed=seed + 1, scale=0.3), randn(H, seed=seed + 2)]),
        "linear_nobias": (ops.linear_forward, ops.linear_backward,
                          [randn(B, T * E, seed=seed), randn(T * E, H, seed=seed + 1), None]),
        "batchnorm": (ops.batchnorm_forward, ops.batchnorm_backward,
                      [randn(B, H, seed=seed, scale=3.0, shift=0.5), randn(1, H, seed=seed + 1, scale=0.1, shift=1.0),
                       randn(1, H, seed=seed + 2, scale=0.1)]),
        "tanh": (ops.tanh_forward, ops.tanh_backward, [randn(B, H, seed=seed, scale=2.0)]),
        "cross_entropy": (ops.cross_entropy_forward, ops.cross_entropy_backward,
                          [randn(B, V, seed=seed, scale=2.0), Y]),
    }


@pytest.mark.parametrize("name", list(cases()))
def test_op_float64(name):
    fwd, bwd, inputs = cases()[name]
    pairs = check_op(fwd, bwd, inputs, torch.float64)
    assert pairs, "the op produced no gradients to compare"
    for mine, ref in pairs:
        assert rel_err(mine, ref) <= 1e-10


@pytest.mark.parametrize("name", list(cases()))
def test_op_float32(name):
    fwd, bwd, inputs = cases()[name]
    for mine, ref in check_op(fwd, bwd, inputs, torch.float32):
        torch.testing.assert_close(mine, ref, rtol=1e-4, atol=1e-5)


def test_embedding_accumulates_repeated_indices():
    C = randn(5, 2)
    X = torch.tensor([[1, 1, 1]])  # the same row three times
    demb = torch.ones(1, 3, 2, dtype=torch.float64)
    dC = ops.embedding_backward(demb, ops.embedding_forward(C, X)[1])
    assert dC[1].tolist() == [3.0, 3.0]
    assert dC.sum().item() == 6.0


def test_batchnorm_uses_bessel_variance():
    x = randn(8, 4, scale=2.0)
    out, _ = ops.batchnorm_forward(x, torch.ones(1, 4, dtype=torch.float64), torch.zeros(1, 4, dtype=torch.float64))
    expected = (x - x.mean(0, keepdim=True)) / torch.sqrt(x.var(0, keepdim=True, unbiased=True) + ops.BN_EPS)
    assert rel_err(out, expected) <= 1e-12
    biased = (x - x.mean(0, keepdim=True)) / torch.sqrt(x.var(0, keepdim=True, unbiased=False) + ops.BN_EPS)
    assert rel_err(out, biased) > 1e-3  # 1/n would be a different op


def test_cross_entropy_matches_torch():
    logits, Y = randn(16, 27, scale=3.0), torch.randint(0, 27, (16,), generator=torch.Generator().manual_seed(3))
    loss, _ = ops.cross_entropy_forward(logits, Y)
    assert abs(loss.item() - torch.nn.functional.cross_entropy(logits, Y).item()) <= 1e-12


@settings(max_examples=25, deadline=None)
@given(B=st.integers(2, 40), T=st.integers(1, 6), E=st.integers(1, 12), H=st.integers(1, 50),
       V=st.integers(2, 30), seed=st.integers(0, 10_000))
def test_ops_any_shape(B, T, E, H, V, seed):
    for name, (fwd, bwd, inputs) in cases(B, T, E, H, V, seed).items():
        for mine, ref in check_op(fwd, bwd, inputs, torch.float64, seed=seed):
            # b1-like gradients can be exactly zero; compare against a floor then
            assert (mine - ref).abs().max().item() <= 1e-10 * max(ref.abs().max().item(), 1.0), name


def test_check_op_fails_a_backward_that_returns_too_few_or_none():
    """check_op pairs gradients with inputs: a backward that drops one, or gives None for a tensor,
    must fail there rather than be compared on what it did return."""
    fwd, bwd, inputs = cases()["batchnorm"]

    def two(dout, cache):
        return bwd(dout, cache)[:2]  # no dbias

    def none_for_gain(dout, cache):
        dx, _, dbias = bwd(dout, cache)
        return dx, None, dbias

    for broken in (two, none_for_gain):
        with pytest.raises(AssertionError):
            check_op(fwd, broken, inputs)
    check_op(fwd, bwd, inputs)  # the op itself passes
