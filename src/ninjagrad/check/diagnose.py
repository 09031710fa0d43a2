"""Name the mistake in a wrong gradient.

Every test compares float64 values: the learner's statements re-run on float64 inputs against float64
autograd, so "equals -reference" or "equals the sum of two of three branches" is decided to ~1e-8 of
the gradient's scale, far below any real mistake and far above float64 rounding.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import torch

from .statements import shape_str
from .trace import Edge

CLOSE = 1e-8  # relative to the node's scale: float64 rounding is ~1e-15, real mistakes are ~1


@dataclass
class Diagnosis:
    kind: str  # sign | scale | missing_branch | extra_branch | broadcast | axis | transpose | aliasing |
    #            duplicate_index | zero | nonfinite | precision | other
    message: str

    def to_dict(self) -> dict:
        return {"kind": self.kind, "message": self.message}


def close(a: torch.Tensor, b: torch.Tensor, scale: float, tol: float = CLOSE) -> bool:
    return a.shape == b.shape and (a - b).abs().max().item() <= tol * scale


def broadcast_shape(a, b) -> tuple | None:
    """numpy broadcasting of two shapes, or None (torch.broadcast_shapes imports sympy: ~1 s)."""
    out = []
    for x, y in zip((1,) * (len(b) - len(a)) + tuple(a), (1,) * (len(a) - len(b)) + tuple(b)):
        if x != y and 1 not in (x, y):
            return None
        out.append(max(x, y) if 0 not in (x, y) else 0)
    return tuple(out)


def known_factor(c: float, n: int) -> str | None:
    """The usual cause of a constant factor between a gradient and its reference."""
    causes = [
        (n, f"n = {n} times too large: a mean's 1/n is missing"),
        (1 / n, f"1/n = 1/{n} of the value: a 1/n applied where the forward had none, or twice"),
        (n / (n - 1), f"n/(n-1) = {n}/{n - 1}: 1/(n-1) used where the forward divides by n (the mean is 1/n)"),
        ((n - 1) / n, f"(n-1)/n = {n - 1}/{n}: 1/n used where the forward's variance has Bessel's 1/(n-1)"),
        (2.0, "twice the value: a factor 2 (as from d(x**2) = 2x) where none belongs, or a term counted twice"),
        (0.5, "half the value: the 2 of d(x**2)/dx = 2x is missing"),
    ]
    for value, text in causes:
        for sign in (1, -1):
            if abs(c - sign * value) <= 1e-6 * abs(value):
                return text + (" (and the sign is flipped)" if sign < 0 else "")
    return None


def factor_str(c: float, n: int) -> str:
    for value, text in ((n, "n"), (1 / n, "1/n"), (n / (n - 1), "n/(n-1)"), ((n - 1) / n, "(n-1)/n"),
                        (2.0, "2"), (0.5, "1/2")):
        for sign, s in ((1, ""), (-1, "-")):
            if abs(c - sign * value) <= 1e-6 * abs(value):
                return s + text
    return f"{c:.6g}"


def sum_advice(axes: list[int], lead: int) -> str:
    """The sum that gives the tensor's shape: leading axes the tensor lacks go away, axes where it
    has a 1 stay (keepdim): `.sum(0)` for a (27,) bias, `.sum(0, keepdim=True)` for a (1, 64) gain."""
    def call(ax, keep):
        arg = str(ax[0]) if len(ax) == 1 else str(tuple(ax))
        return f".sum({arg}, keepdim=True)" if keep else f".sum({arg})"
    dropped, kept = [a for a in axes if a < lead], [a - len([d for d in axes if d < lead]) for a in axes if a >= lead]
    return "".join(call(ax, keep) for ax, keep in ((dropped, False), (kept, True)) if ax)


def diagnose_shape(name: str, mine: torch.Tensor, ref: torch.Tensor, scale: float, tol: float = CLOSE) -> Diagnosis:
    """The learner's gradient has the wrong shape: say which way."""
    ms, rs = shape_str(mine.shape), shape_str(ref.shape)
    need = f"d{name} has shape {ms} where {name} has {rs}"
    if mine.numel() == ref.numel():
        if mine.dim() == 2 and tuple(mine.T.shape) == tuple(ref.shape) and close(mine.T, ref, scale, tol):
            return Diagnosis("transpose", f"{need}: it is the transpose of the right gradient; "
                                          "check the order of the matmul (dW = x.T @ dout, dx = dout @ W.T)")
        same = close(mine.reshape(ref.shape), ref, scale, tol)
        if mine.squeeze().shape == ref.squeeze().shape and any(s == 1 for s in ref.shape):
            values = "the values are right" if same else "and the values differ too"
            if ref.shape[-1] == 1:  # (32,) for (32, 1): it broadcasts along the wrong axis
                why = (f"next to a {rs} tensor it broadcasts to "
                       f"{shape_str(broadcast_shape(mine.shape, ref.shape) or ())}, along the wrong axis")
            else:  # (64,) for (1, 64): broadcasting treats it alike, so allclose says True
                why = "`allclose` hides this because broadcasting treats the two shapes alike"
            return Diagnosis("broadcast", f"{need}: keepdim missing ({values}); {why}. Sum with keepdim=True")
        if mine.squeeze().shape == ref.squeeze().shape and mine.dim() > ref.dim():
            values = "the values are right" if same else "and the values differ too"
            return Diagnosis("broadcast", f"{need}: an extra dim of size 1 ({values}), as from keepdim=True where "
                                          f"{name} has no such dim; drop keepdim or use .view({name}.shape)")
        if same:
            return Diagnosis("other", f"{need}; the values are right: reshape it, e.g. .view({name}.shape)")
    # a gradient left at the size of an upstream factor: (1, H) where the tensor is (B, H)
    both = broadcast_shape(mine.shape, ref.shape)
    if both == tuple(ref.shape) and mine.numel() < ref.numel():
        axes = [i for i, (a, b) in enumerate(zip((1,) * (ref.dim() - mine.dim()) + tuple(mine.shape), ref.shape))
                if a == 1 and b != 1]
        right = close(mine.expand(ref.shape), ref, scale, tol)
        values = "its values are right in every position" if right else "and the values differ too"
        return Diagnosis("broadcast", f"{need}: the broadcast to {name}'s shape is missing (along axis "
                                      f"{', '.join(map(str, axes))}; {values}). A gradient has its tensor's shape: "
                                      f"expand it, e.g. torch.ones_like({name}) * ...")
    # a gradient that was never summed over the axes its forward value was broadcast along
    bigger = both is not None and both == tuple(mine.shape)
    if bigger and mine.numel() > ref.numel():
        lead = mine.dim() - ref.dim()
        axes = list(range(lead)) + [lead + i for i, s in enumerate(ref.shape) if s == 1 and mine.shape[lead + i] != 1]
        summed = mine.sum(dim=axes, keepdim=True).reshape(ref.shape) if axes else mine
        values = "summed there it is right" if close(summed, ref, scale, tol) else "and even summed it differs"
        return Diagnosis("broadcast", f"{need}: not summed over the broadcast axis {', '.join(map(str, axes))} "
                                      f"({values}). The forward stretched {name} along that axis, so its "
                                      f"gradient sums over it: {sum_advice(axes, lead)}")
    if mine.numel() != ref.numel() or mine.dim() == ref.dim():
        return Diagnosis("axis", f"{need}: summed over the wrong axis; sum over the axes along which the "
                                 f"forward broadcast {name} (where its shape has 1s), not the others")
    return Diagnosis("other", f"{need}")


def diagnose_values(name: str, mine: torch.Tensor, ref: torch.Tensor, scale: float, n: int,
                    edges: list[Edge], tol: float = CLOSE) -> Diagnosis:
    """`tol`: closeness relative to `scale`; CLOSE for float64 re-runs, float32-sized for `cmp`."""
    """Same shape, wrong values (float64 on both sides): sign, factor, branches, indices, else other."""
    if not torch.isfinite(mine).all():
        return Diagnosis("nonfinite", f"d{name} holds inf or nan: a division by zero or log of zero?")
    if mine.abs().max().item() == 0:
        return Diagnosis("zero", f"d{name} is all zeros; autograd's is not (was a `+=` or an assignment lost?)")
    if close(mine, -ref, scale, tol):
        return Diagnosis("sign", f"d{name} has the wrong sign: check the local derivative's sign "
                                 "(d(-x) = -1, d(1/x) = -1/x**2, d(a - b)/db = -1)")
    if mine.dim() == 2 and mine.shape[0] == mine.shape[1] and close(mine, ref.T, scale, tol):
        return Diagnosis("transpose", f"d{name} is transposed: check the order of the matmul")
    rr = (ref * ref).sum().item()
    if rr > 0:
        c = (mine * ref).sum().item() / rr
        if abs(c - 1) > 1e-6 and close(mine, c * ref, scale, tol):
            why = known_factor(c, n)
            return Diagnosis("scale", f"d{name} is {factor_str(c, n)} times the right value"
                                      + (f": {why}" if why else ""))
    if len(edges) >= 2:
        parts = [e.contribution for e in edges]
        for k in range(1, len(edges)):
            for keep in combinations(range(len(edges)), k):
                if close(mine, sum(parts[i] for i in keep), scale, tol):
                    missing = [edges[i] for i in range(len(edges)) if i not in keep]
                    return Diagnosis("missing_branch", f"d{name} lacks " + " and ".join(e.describe() for e in missing)
                                     + f": {name} is used {len(edges)} times in the forward, so its gradient is "
                                       "the sum of every use's contribution (add it with +=)")
    for e in edges:
        if e.contribution.abs().max().item() > tol * scale and close(mine, ref + e.contribution, scale, tol):
            return Diagnosis("extra_branch", f"d{name} counts {e.describe()} twice")
    for e in edges:
        if e.repeats is not None and e.keeps_one_repeat((mine - (ref - e.contribution)).cpu(), tol * scale):
            return Diagnosis("duplicate_index", f"d{name}: an indexed assignment such as `d{name}[ix] += ...` keeps "
                                                "one value per repeated index, and the batch repeats indices. "
                                                "Accumulate with index_add_, a loop, or a one-hot matmul")
    for e in edges:
        # one branch right in form but off by a constant factor (sign included)
        ee = (e.contribution * e.contribution).sum().item()
        if ee <= 0 or len(edges) < 2:
            continue
        rest = ref - e.contribution
        c = ((mine - rest) * e.contribution).sum().item() / ee
        if abs(c - 1) > 1e-6 and close(mine, rest + c * e.contribution, scale, tol):
            if abs(c + 1) <= 1e-6:
                return Diagnosis("sign", f"d{name}: {e.describe()} has the wrong sign")
            why = known_factor(c, n)
            return Diagnosis("scale", f"d{name}: {e.describe()} is {factor_str(c, n)} times the right value"
                                      + (f": {why}" if why else ""))
    for e in edges:
        # one path X -> Y -> Z missing or off by a constant factor (e.g. 1/n for Bessel's 1/(n-1))
        for z, z_source, share in e.paths:
            ss = (share * share).sum().item()
            if ss <= (tol * scale) ** 2:
                continue
            rest = ref - share
            c = ((mine - rest) * share).sum().item() / ss
            if abs(c - 1) <= 1e-6 or not close(mine, rest + c * share, scale, tol):
                continue
            path = f"the path {name} -> {e.consumer} -> {z} (through `{z_source}`)"
            if abs(c) <= 1e-6:
                return Diagnosis("missing_branch", f"d{name} lacks {path}")
            if abs(c + 1) <= 1e-6:
                return Diagnosis("sign", f"d{name}: {path} has the wrong sign")
            why = known_factor(c, n)
            return Diagnosis("scale", f"d{name}: {path} is {factor_str(c, n)} times the right value"
                                      + (f": {why}" if why else ""))
    rel = (mine - ref).abs().max().item() / scale
    return Diagnosis("other", f"d{name} differs from autograd by {rel:.3g} of its scale; not a sign, a constant "
                              "factor, a transpose or a missing branch. Re-derive the local derivative "
                              f"(`ninjagrad hint {name}`)")
