"""Name the mistake in a wrong gradient.

Every test compares float64 values: the learner's statements re-run on float64 inputs against float64
autograd, so "equals -reference" or "equals the sum of two of three branches" is decided to ~1e-8 of
the gradient's scale, far below any real mistake and far above float64 rounding.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from itertools import combinations

import torch

from .statements import shape_str
from .trace import Edge

CLOSE = 1e-8  # relative to the node's scale: float64 rounding is ~1e-15, real mistakes are ~1


class Kind(str, Enum):
    """What is wrong with a gradient (the JSON report carries the value)."""
    SIGN = "sign"
    SCALE = "scale"
    MISSING_BRANCH = "missing_branch"
    EXTRA_BRANCH = "extra_branch"
    BROADCAST = "broadcast"
    AXIS = "axis"
    TRANSPOSE = "transpose"
    ALIASING = "aliasing"
    DUPLICATE_INDEX = "duplicate_index"
    ZERO = "zero"
    NONFINITE = "nonfinite"
    PRECISION = "precision"
    OTHER = "other"


@dataclass
class Diagnosis:
    kind: str  # a Kind's value
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


def factors(n: int) -> list[tuple[float, str, str]]:
    """The usual constant factors between a gradient and its reference: (value, name, cause)."""
    return [
        (n, "n", f"n = {n} times too large: a mean's 1/n is missing"),
        (1 / n, "1/n", f"1/n = 1/{n} of the value: a 1/n applied where the forward had none, or twice"),
        (n / (n - 1), "n/(n-1)",
         f"n/(n-1) = {n}/{n - 1}: 1/(n-1) used where the forward divides by n (the mean is 1/n)"),
        ((n - 1) / n, "(n-1)/n", f"(n-1)/n = {n - 1}/{n}: 1/n used where the forward's variance has Bessel's 1/(n-1)"),
        (2.0, "2", "twice the value: a factor 2 (as from d(x**2) = 2x) where none belongs, or a term counted twice"),
        (0.5, "1/2", "half the value: the 2 of d(x**2)/dx = 2x is missing"),
    ]


def named_factor(c: float, n: int) -> tuple[str, str | None]:
    """A constant factor as its usual name ("n/(n-1)", "-2") and cause; else its value and None."""
    for value, name, cause in factors(n):
        for sign in (1, -1):
            if abs(c - sign * value) <= 1e-6 * abs(value):
                return ("-" if sign < 0 else "") + name, cause + (" (and the sign is flipped)" if sign < 0 else "")
    return f"{c:.6g}", None


def scaled(name: str, what: str, c: float, n: int) -> Diagnosis:
    """`what` is c times the right value: a scale (or, for -1, a sign) diagnosis."""
    if abs(c + 1) <= 1e-6:
        return Diagnosis(Kind.SIGN.value, f"d{name}: {what} has the wrong sign")
    factor, why = named_factor(c, n)
    return Diagnosis(Kind.SCALE.value, f"{what} is {factor} times the right value" + (f": {why}" if why else ""))


def fitted_factor(mine: torch.Tensor, rest: torch.Tensor, part: torch.Tensor, scale: float, tol: float) -> float | None:
    """c such that mine == rest + c * part (c != 1), if there is one: a term off by a constant factor."""
    pp = (part * part).sum().item()
    if pp <= (tol * scale) ** 2:
        return None
    c = ((mine - rest) * part).sum().item() / pp
    return c if abs(c - 1) > 1e-6 and close(mine, rest + c * part, scale, tol) else None


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


@dataclass
class Case:
    """One wrong gradient, as every detector sees it (float64 on both sides)."""
    name: str
    mine: torch.Tensor
    ref: torch.Tensor
    scale: float
    n: int
    edges: list
    tol: float

    def close(self, a: torch.Tensor, b: torch.Tensor) -> bool:
        return close(a, b, self.scale, self.tol)


def nonfinite(c: Case):
    if not torch.isfinite(c.mine).all():
        return Diagnosis(Kind.NONFINITE.value, f"d{c.name} holds inf or nan: a division by zero or log of zero?")


def all_zero(c: Case):
    if c.mine.abs().max().item() == 0:
        return Diagnosis(Kind.ZERO.value,
                         f"d{c.name} is all zeros; autograd's is not (was a `+=` or an assignment lost?)")


def sign_flipped(c: Case):
    if c.close(c.mine, -c.ref):
        return Diagnosis(Kind.SIGN.value, f"d{c.name} has the wrong sign: check the local derivative's sign "
                                          "(d(-x) = -1, d(1/x) = -1/x**2, d(a - b)/db = -1)")


def transposed(c: Case):
    if c.mine.dim() == 2 and c.mine.shape[0] == c.mine.shape[1] and c.close(c.mine, c.ref.T):
        return Diagnosis(Kind.TRANSPOSE.value, f"d{c.name} is transposed: check the order of the matmul")


def whole_factor(c: Case):
    k = fitted_factor(c.mine, torch.zeros_like(c.ref), c.ref, c.scale, c.tol)
    if k is not None:
        return scaled(c.name, f"d{c.name}", k, c.n)


def missing_branches(c: Case):
    """The sum of some of the uses' contributions: the others are missing."""
    if len(c.edges) < 2:
        return None
    parts = [e.contribution for e in c.edges]
    for k in range(1, len(c.edges)):
        for keep in combinations(range(len(c.edges)), k):
            if c.close(c.mine, sum(parts[i] for i in keep)):
                missing = [c.edges[i] for i in range(len(c.edges)) if i not in keep]
                return Diagnosis(Kind.MISSING_BRANCH.value,
                                 f"d{c.name} lacks " + " and ".join(e.describe() for e in missing)
                                 + f": {c.name} is used {len(c.edges)} times in the forward, so its gradient is "
                                   "the sum of every use's contribution (add it with +=)")


def branch_twice(c: Case):
    for e in c.edges:
        if e.contribution.abs().max().item() > c.tol * c.scale and c.close(c.mine, c.ref + e.contribution):
            return Diagnosis(Kind.EXTRA_BRANCH.value, f"d{c.name} counts {e.describe()} twice")


def duplicate_index(c: Case):
    for e in c.edges:
        if e.repeats is not None and e.keeps_one_repeat((c.mine - (c.ref - e.contribution)).cpu(), c.tol * c.scale):
            return Diagnosis(Kind.DUPLICATE_INDEX.value,
                             f"d{c.name}: an indexed assignment such as `d{c.name}[ix] += ...` keeps one value per "
                             "repeated index, and the batch repeats indices. Accumulate with index_add_, a loop, "
                             "or a one-hot matmul")


def branch_factor(c: Case):
    """One use's contribution right in form but off by a constant factor (sign included)."""
    if len(c.edges) < 2:
        return None
    for e in c.edges:
        k = fitted_factor(c.mine, c.ref - e.contribution, e.contribution, c.scale, c.tol)
        if k is not None:
            return scaled(c.name, f"d{c.name}: {e.describe()}", k, c.n)


def path_factor(c: Case):
    """One path X -> Y -> Z missing or off by a constant factor (1/n for Bessel's 1/(n-1) in a fused variance)."""
    for e in c.edges:
        for z, z_source, share in e.paths:
            k = fitted_factor(c.mine, c.ref - share, share, c.scale, c.tol)
            if k is None:
                continue
            path = f"the path {c.name} -> {e.consumer} -> {z} (through `{z_source}`)"
            if abs(k) <= 1e-6:
                return Diagnosis(Kind.MISSING_BRANCH.value, f"d{c.name} lacks {path}")
            return scaled(c.name, f"d{c.name}: {path}", k, c.n)


# The detectors, in the order they are tried: the first that recognises the mistake names it. Whole-
# tensor patterns come before branch patterns (a sign flip of every use is "sign", not a missing
# branch), missing branches before factors on one branch, paths through a consumer last.
DETECTORS = (nonfinite, all_zero, sign_flipped, transposed, whole_factor, missing_branches, branch_twice,
             duplicate_index, branch_factor, path_factor)


def diagnose_values(name: str, mine: torch.Tensor, ref: torch.Tensor, scale: float, n: int,
                    edges: list[Edge], tol: float = CLOSE) -> Diagnosis:
    """Same shape, wrong values (float64 on both sides): the first detector that recognises the
    mistake names it; else "other". `tol`: closeness relative to `scale` (CLOSE for float64 re-runs)."""
    case = Case(name, mine, ref, scale, n, edges, tol)
    for detect in DETECTORS:
        found = detect(case)
        if found is not None:
            return found
    rel = (mine - ref).abs().max().item() / scale
    return Diagnosis(Kind.OTHER.value, f"d{name} differs from autograd by {rel:.3g} of its scale; not a sign, a "
                                       "constant factor, a transpose or a missing branch. Re-derive the local "
                                       f"derivative (`ninjagrad hint {name}`)")
