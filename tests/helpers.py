"""One helper that holds any forward/backward pair to autograd (after tinygrad's helper_test_op)."""
from __future__ import annotations

import torch


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| relative to the larger of the two tensors' scales."""
    scale = max(a.abs().max().item(), b.abs().max().item(), 1e-30)
    return (a - b).abs().max().item() / scale


def check_op(forward, backward, inputs: list, dtype=torch.float64, seed=0, grad_mask=None):
    """Run `forward(*inputs) -> (out, cache)`, push a random upstream gradient through `backward`,
    and return [(manual, autograd)] for every input that is a floating tensor.

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
    pairs = []
    floating = [x for x in leaves if torch.is_tensor(x) and x.is_floating_point()]
    for mine, leaf in zip(grads, floating):
        if mine is None:
            continue
        assert mine.shape == leaf.shape, f"gradient shape {tuple(mine.shape)} != input shape {tuple(leaf.shape)}"
        pairs.append((mine, leaf.grad))
    return pairs
