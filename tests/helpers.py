"""One helper that holds any forward/backward pair to autograd (after tinygrad's helper_test_op)."""
from __future__ import annotations

import torch


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| relative to the larger of the two tensors' scales."""
    scale = max(a.abs().max().item(), b.abs().max().item(), 1e-30)
    return (a - b).abs().max().item() / scale


def check_op(forward, backward, inputs: list, dtype=torch.float64, seed=0):
    """Run `forward(*inputs) -> (out, cache)`, push a random upstream gradient through `backward`,
    and return [(manual, autograd)] for every input that is a floating tensor.

    `backward` must return one gradient per floating tensor input and None for each input given as
    None (an optional tensor, such as a linear's bias), in the inputs' order; integer inputs (indices)
    and plain numbers get none. A backward that returns fewer, more, or None for a tensor fails here.
    The upstream gradient is non-uniform on purpose: a `.sum()` loss (all-ones dout) hides bugs such as
    a missing sum over the batch in a term that only differs by a constant per row.
    """
    g = torch.Generator().manual_seed(seed + 7919)  # not the inputs' seed: dout must not be a copy of x
    leaves = [x.detach().to(dtype).clone().requires_grad_(True) if torch.is_tensor(x) and x.is_floating_point() else x
              for x in inputs]
    out, cache = forward(*[x.detach() if torch.is_tensor(x) else x for x in leaves])
    dout = torch.randn(out.shape, generator=g, dtype=dtype) if out.dim() > 0 else torch.tensor(1.7, dtype=dtype)
    grads = backward(dout, cache)
    if not isinstance(grads, tuple):
        grads = (grads,)
    out_ag, _ = forward(*leaves)
    torch.testing.assert_close(out.detach(), out_ag.detach())
    (out_ag * dout).sum().backward()
    wanted = [x for x in leaves if x is None or (torch.is_tensor(x) and x.is_floating_point())]
    assert len(grads) == len(wanted), f"backward returned {len(grads)} gradients for {len(wanted)} inputs"
    pairs = []
    for i, (mine, leaf) in enumerate(zip(grads, wanted)):
        if leaf is None:
            assert mine is None, f"gradient {i}: an input given as None gets None, not a tensor"
            continue
        assert torch.is_tensor(mine), f"gradient {i}: {type(mine).__name__} for a tensor input"
        assert mine.shape == leaf.shape, f"gradient shape {tuple(mine.shape)} != input shape {tuple(leaf.shape)}"
        pairs.append((mine, leaf.grad))
    return pairs


# --- the fast engine's float32 gradients ------------------------------------------------------------

F32_RTOL = 1e-4  # of each gradient's own scale
# and of the step's largest gradient: a gradient whose true value is ~0 (b1 always; everything below
# batchnorm when a small batch repeats one context, so that batchnorm has nothing to depend on) is
# float32 rounding left over from terms that cancel, magnified up to 1/sqrt(eps) ~ 316x by batchnorm.
# Hypothesis finds batches (B=5 of one context; B=69 over 12 characters) where that rounding reaches
# 1.3x of 2e-5 of the largest gradient, in the manual engine as in the fast one.
F32_FLOOR = 5e-5


def float32_mismatches(grads: dict, manual: dict, truth: dict) -> list[str]:
    """The parameters whose float32 gradient from a fast step is not as good as the manual engine's.

    Both engines are held to the float64 truth. When the batch's examples are all alike, the variance is
    ~0 and 1/sqrt(var + eps) ~ 316 magnifies float32 rounding in *both* of them, and which of the two
    lands nearer the truth is chance: the fast engine may then be off by up to three times what the
    manual engine is off by (errors come in whole float32 ulps: 3 against 1 passes, whatever float64
    rounds to). Elsewhere, F32_RTOL of the gradient's scale plus F32_FLOOR of the largest gradient."""
    largest = max(t.abs().max().item() for t in truth.values())
    bad = []
    for k, t in truth.items():
        tol = F32_RTOL * t.abs().max().item() + F32_FLOOR * largest
        own = (grads[k].double() - t).abs().max().item()
        manual_off = (manual[k].double() - t).abs().max().item()
        if not (own <= max(tol, 3 * manual_off) * (1 + 1e-6)
                and (grads[k] - manual[k]).abs().max().item() <= 3 * max(tol, manual_off)):
            bad.append(k)
    return bad
