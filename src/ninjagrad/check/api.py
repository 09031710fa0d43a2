"""The grader for notebooks: `cmp(name, dt, t)` and `check_backward(forward_fn, backward_fn, *inputs)`."""
from __future__ import annotations

import torch

from .diagnose import broadcast_shape
from .verdicts import ROUNDING_RTOL, Result, judge

# float32 tolerance for cmp, which cannot re-run anything in float64: ~100 float32 ulps of the scale
CMP_RTOL = {torch.float64: ROUNDING_RTOL, torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-1}


def cmp(name: str, dt: torch.Tensor, t: torch.Tensor, n: int | None = None) -> Result | None:
    """The lecture's `cmp` line, plus a verdict: exact, rounding, shape or wrong (with a diagnosis).

    `t` is the forward tensor (its `.grad` is autograd's gradient) or the reference gradient itself (a
    tensor that does not require grad). A forward tensor whose `.grad` is None (retain_grad() forgotten,
    or no loss.backward() yet) is refused with one line: there is nothing to compare with.
    Unlike `ninjagrad check`, cmp sees only two tensors, so "rounding" means "within float tolerance
    of the gradient's scale"; `ninjagrad check` decides it by re-running your statements in float64.
    `n` (the batch size) lets the diagnosis name factors such as n/(n-1).
    """
    if t.requires_grad and ((not t.is_leaf and not t.retains_grad) or t.grad is None):  # no .grad read: no warning
        print(f"{name:15s} | no gradient to compare with: {name}.grad is None (call {name}.retain_grad() before "
              "loss.backward(), as the lecture's forward cell does)")
        return None
    ref = t.grad if t.grad is not None else t
    ex = bool((dt == ref).all().item()) if dt.shape == ref.shape or _broadcasts(dt, ref) else False
    app = bool(torch.allclose(dt, ref)) if _broadcasts(dt, ref) else False
    maxdiff = (dt - ref).abs().max().item() if _broadcasts(dt, ref) else float("nan")
    print(f"{name:15s} | exact: {str(ex):5s} | approximate: {str(app):5s} | maxdiff: {maxdiff}", end="")
    scale = max(ref.abs().max().item(), 1e-30)
    nb = n if n is not None else (ref.shape[0] if ref.dim() > 0 and ref.shape[0] > 1 else 2)
    r = judge(name, dt, None, ref, ref.double(), scale, nb, [], rtol32=CMP_RTOL.get(ref.dtype, 1e-5), only32=None)
    extra = f" ({r.diagnosis.kind}: {r.diagnosis.message})" if r.diagnosis else ""
    print(f" | verdict: {r.verdict}{extra}")
    return r


def _broadcasts(a, b) -> bool:
    return broadcast_shape(a.shape, b.shape) is not None


def _run(forward_fn, backward_fn, inputs, dout_seed, dtype=None):
    """Forward, a non-uniform upstream gradient, the hand-written backward, and autograd's gradients."""
    def cast(x):
        if torch.is_tensor(x) and x.is_floating_point() and dtype is not None:
            return x.detach().to(dtype)
        return x.detach() if torch.is_tensor(x) else x

    xs = [cast(x) for x in inputs]
    out = forward_fn(*xs)
    cache = None
    if isinstance(out, tuple):
        out, cache = out
    g = torch.Generator().manual_seed(dout_seed)
    # non-uniform on purpose: an all-ones upstream gradient hides bugs that are constant per row
    dout = (torch.randn(out.shape, generator=g, dtype=torch.float64) + 0.5).to(out.dtype).to(out.device)
    with torch.no_grad():
        mine = backward_fn(dout, cache) if cache is not None else backward_fn(dout, *xs)
    if not isinstance(mine, (tuple, list)):
        mine = (mine,)
    leaves = [x.clone().requires_grad_(True) if torch.is_tensor(x) and x.is_floating_point() else x for x in xs]
    with torch.enable_grad():
        ref_out = forward_fn(*leaves)
        if isinstance(ref_out, tuple):
            ref_out = ref_out[0]
        floating = [x for x in leaves if torch.is_tensor(x) and x.requires_grad]
        refs = torch.autograd.grad(ref_out, floating, grad_outputs=dout, allow_unused=True)
    refs = [r if r is not None else torch.zeros_like(x) for r, x in zip(refs, floating)]
    return list(mine), refs, dout


def check_backward(forward_fn, backward_fn, *inputs, seed: int = 0, verbose: bool = True) -> list[Result]:
    """Hold a hand-written backward to autograd, for any op.

    `forward_fn(*inputs)` returns `out` or `(out, cache)`; `backward_fn(dout, cache)` (or
    `backward_fn(dout, *inputs)` without a cache) returns the gradients of the floating-point inputs,
    in order (None for one you skip). Verdicts as in `ninjagrad check`: a float32 (or half) mismatch is
    "rounding" only if the same functions on float64 inputs agree with float64 autograd to 1e-10.
    """
    mine, refs, _ = _run(forward_fn, backward_fn, inputs, seed)
    mine64, refs64, dout64 = _run(forward_fn, backward_fn, inputs, seed, torch.float64)
    # a gradient's scale: its own size, or its upstream's when it is ~0 (as through batchnorm with n=2)
    floor = dout64.abs().max().item()
    names = [f"input{i}" for i, x in enumerate(inputs) if torch.is_tensor(x) and x.is_floating_point()]
    results = []
    for i, (name, ref) in enumerate(zip(names, refs)):
        m = mine[i] if i < len(mine) else None
        m64 = mine64[i] if i < len(mine64) else None
        scale = max(refs64[i].abs().max().item(), floor, 1e-30)
        n = ref.shape[0] if ref.dim() > 0 and ref.shape[0] > 1 else 2
        r = judge(name, m, m64, ref, refs64[i], scale, n, [], forced=False, rtol32=CMP_RTOL.get(ref.dtype, 1e-5))
        results.append(r)
        if verbose:
            extra = f" ({r.diagnosis.kind}: {r.diagnosis.message})" if r.diagnosis else ""
            print(f"{name:10s} {str(tuple(ref.shape)):14s} {r.verdict:9s} maxdiff {r.maxdiff}{extra}")
    return results
