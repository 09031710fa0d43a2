"""The ops beyond the lecture (WaveNet, transformer) against autograd: float64 to 1e-10 relative,
float32 to rtol 1e-4 / atol 1e-5, with non-uniform upstream gradients and non-trivial inputs."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ninjagrad import ops

from .helpers import check_op, rel_err


def randn(*shape, seed=0, scale=1.0, shift=0.0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale + shift


def cases(B=6, T=8, C=12, n_head=3, V=27, seed=0):
    g = torch.Generator().manual_seed(seed + 100)
    Y = torch.randint(0, V, (B * T,), generator=g)
    mask = torch.rand(B * T, generator=g) > 0.3
    mask[0] = True  # at least one scored row
    return {
        "linear_3d": (ops.linear_forward, ops.linear_backward,
                      [randn(B, T, C, seed=seed), randn(C, 2 * C, seed=seed + 1, scale=0.3),
                       randn(2 * C, seed=seed + 2)]),
        "linear_3d_nobias": (ops.linear_forward, ops.linear_backward,
                             [randn(B, T, C, seed=seed), randn(C, 5, seed=seed + 1), None]),
        "flatten_consecutive": (ops.flatten_consecutive_forward, ops.flatten_consecutive_backward,
                                [randn(B, T, C, seed=seed), 2]),
        "flatten_consecutive_last": (ops.flatten_consecutive_forward, ops.flatten_consecutive_backward,
                                     [randn(B, 2, C, seed=seed), 2]),
        "batchnorm_3d": (ops.batchnorm_forward, ops.batchnorm_backward,
                         [randn(B, T, C, seed=seed, scale=3.0, shift=0.5),
                          randn(1, 1, C, seed=seed + 1, scale=0.1, shift=1.0),
                          randn(1, 1, C, seed=seed + 2, scale=0.1)]),
        "batchnorm_2d": (ops.batchnorm_forward, ops.batchnorm_backward,
                         [randn(B * 2, C, seed=seed, scale=3.0, shift=0.5),
                          randn(1, C, seed=seed + 1, scale=0.1, shift=1.0), randn(1, C, seed=seed + 2, scale=0.1)]),
        "layernorm": (ops.layernorm_forward, ops.layernorm_backward,
                      [randn(B, T, C, seed=seed, scale=2.0, shift=0.3), randn(C, seed=seed + 1, scale=0.2, shift=1.0),
                       randn(C, seed=seed + 2, scale=0.2)]),
        "relu": (ops.relu_forward, ops.relu_backward, [randn(B, T, C, seed=seed)]),
        "gelu": (ops.gelu_forward, ops.gelu_backward, [randn(B, T, C, seed=seed, scale=2.0)]),
        "residual": (ops.residual_forward, ops.residual_backward,
                     [randn(B, T, C, seed=seed), randn(B, T, C, seed=seed + 1)]),
        "position_embedding": (ops.position_embedding_forward, ops.position_embedding_backward,
                               [randn(B, T - 1, C, seed=seed), randn(T, C, seed=seed + 1)]),
        "attention": (ops.attention_forward, ops.attention_backward,
                      [randn(B, T, 3 * C, seed=seed, scale=1.5), n_head]),
        "cross_entropy_masked": (ops.cross_entropy_masked_forward, ops.cross_entropy_masked_backward,
                                 [randn(B * T, V, seed=seed, scale=2.0), Y, mask]),
    }


@pytest.mark.parametrize("name", list(cases()))
def test_op_float64(name):
    fwd, bwd, inputs = cases()[name]
    pairs = check_op(fwd, bwd, inputs, torch.float64)
    assert pairs, "the op produced no gradients to compare"
    for mine, ref in pairs:
        assert rel_err(mine, ref) <= 1e-10, name


@pytest.mark.parametrize("name", list(cases()))
def test_op_float32(name):
    fwd, bwd, inputs = cases()[name]
    for mine, ref in check_op(fwd, bwd, inputs, torch.float32):
        torch.testing.assert_close(mine, ref, rtol=1e-4, atol=1e-5)


def test_forwards_match_torch():
    """The forwards are the layers they claim to be, not just self-consistent with their backward."""
    F = torch.nn.functional
    x = randn(4, 8, 12, scale=2.0, shift=0.3)
    w, b = randn(12, seed=1, shift=1.0), randn(12, seed=2)
    assert rel_err(ops.layernorm_forward(x, w, b)[0], F.layer_norm(x, (12,), w, b, eps=ops.BN_EPS)) <= 1e-12
    assert rel_err(ops.gelu_forward(x)[0], F.gelu(x, approximate="tanh")) <= 1e-12
    assert rel_err(ops.relu_forward(x)[0], F.relu(x)) == 0
    qkv = randn(4, 8, 36, seed=3)
    q, k, v = (t.view(4, 8, 3, 4).transpose(1, 2) for t in qkv.split(12, dim=2))
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(4, 8, 12)
    assert rel_err(ops.attention_forward(qkv, 3)[0], ref) <= 1e-12
    gain, bias = torch.ones(1, 1, 12, dtype=torch.float64), torch.zeros(1, 1, 12, dtype=torch.float64)
    bn = ops.batchnorm_forward(x, gain, bias)[0]
    expected = (x - x.mean((0, 1), keepdim=True)) / torch.sqrt(x.var((0, 1), keepdim=True) + ops.BN_EPS)
    assert rel_err(bn, expected) <= 1e-12  # statistics over B and T, Bessel-corrected like the lecture


def test_attention_is_causal():
    """Changing a later position must not change an earlier output."""
    qkv = randn(2, 6, 24, seed=4)
    y1 = ops.attention_forward(qkv, 2)[0]
    qkv2 = qkv.clone()
    qkv2[:, 4:] += 5.0
    y2 = ops.attention_forward(qkv2, 2)[0]
    assert torch.equal(y1[:, :4], y2[:, :4])
    assert not torch.allclose(y1[:, 4:], y2[:, 4:])


def test_masked_cross_entropy_ignores_masked_rows():
    logits, Y = randn(10, 5, seed=5), torch.arange(10) % 5
    mask = torch.tensor([1, 0, 1, 1, 0, 0, 1, 1, 1, 0], dtype=torch.bool)
    loss, cache = ops.cross_entropy_masked_forward(logits, Y, mask)
    ref = torch.nn.functional.cross_entropy(logits[mask], Y[mask])
    assert abs(loss.item() - ref.item()) <= 1e-12
    assert ops.cross_entropy_masked_backward(1.0, cache)[~mask].abs().max().item() == 0


def test_batchnorm_reduce_hook_sees_every_batch_sum():
    """A data-parallel run passes `reduce`; with two identical halves 'all-reduced' by doubling, the
    result must equal batchnorm over the concatenated batch."""
    x = randn(4, 8, 6, seed=6, scale=2.0)
    gain, bias = randn(1, 1, 6, seed=7, shift=1.0), randn(1, 1, 6, seed=8)
    calls = []

    def double(t):
        calls.append(t.shape)
        return 2 * t

    out, cache = ops.batchnorm_forward(x, gain, bias, reduce=double)
    full, full_cache = ops.batchnorm_forward(torch.cat([x, x]), gain, bias)
    assert rel_err(out, full[:4]) <= 1e-12
    dout = randn(4, 8, 6, seed=9)
    dx = ops.batchnorm_backward(dout, cache)[0]
    dx_full = ops.batchnorm_backward(torch.cat([dout, dout]), full_cache)[0]
    assert rel_err(dx, dx_full[:4]) <= 1e-12
    assert len(calls) == 5  # count, mean, variance, and the backward's two sums


@settings(max_examples=15, deadline=None)
@given(B=st.integers(2, 6), T=st.sampled_from([2, 4, 8]), hs=st.integers(1, 5), n_head=st.integers(1, 3),
       seed=st.integers(0, 10_000))
def test_ops_any_shape(B, T, hs, n_head, seed):
    for name, (fwd, bwd, inputs) in cases(B, T, hs * n_head, n_head, 7, seed).items():
        for mine, ref in check_op(fwd, bwd, inputs, torch.float64, seed=seed):
            assert (mine - ref).abs().max().item() <= 1e-10 * max(ref.abs().max().item(), 1.0), name


def test_masked_cross_entropy_reduce_hook_counts_the_global_batch():
    """Two identical halves 'all-reduced' by doubling: each half's loss is half the global mean and
    its gradient is the global batch's gradient on its rows."""
    logits, Y = randn(12, 5, seed=10), torch.arange(12) % 5
    mask = torch.arange(12) % 3 != 0
    half, cache = ops.cross_entropy_masked_forward(logits, Y, mask, reduce=lambda t: 2 * t)
    full, full_cache = ops.cross_entropy_masked_forward(torch.cat([logits, logits]), torch.cat([Y, Y]),
                                                        torch.cat([mask, mask]))
    assert abs(2 * half.item() - full.item()) <= 1e-12
    dout = 0.7
    dl = ops.cross_entropy_masked_backward(dout, cache)
    assert rel_err(dl, ops.cross_entropy_masked_backward(dout, full_cache)[:12]) <= 1e-12
