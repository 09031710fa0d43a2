"""Verdicts: exact, rounding, wrong, shape, missing, error, uses-autograd, tampering.

exact     bitwise equal to autograd.
rounding  not bitwise equal, but the same statements on float64 inputs (float64 upstream gradients)
          agree with float64 autograd to <= 1e-10 of the gradient's scale: the math is right, only
          float32 rounding differs. The float32 distance is given in ULPs.
wrong     the math is wrong; a diagnosis names how.
shape     the shape differs from the forward value's.
missing   never assigned, or still `...`.
error     the statement that assigns it raised (line and message given).
uses-autograd  its value reads autograd's answer (`X.grad`, `loss.backward()`, `torch.autograd.grad`).
tampering  it is computed after a statement that reaches beyond computing gradients: into the
          checker's process (gc, frames, builtins), into torch (patching it), out of the run (exit).

A gradient whose shape the lecture's cmp would compare element for element with the tensor's (the
lecture's own `dbnmeani = (-dbndiff).sum(0)`, (64,) for a (1, 64) tensor; `db2` summed with keepdim;
a (1, H) `dbndiff2` whose broadcast to the batch is left to the next line) is judged on its values,
broadcast, with a note; with strict shapes it is a `shape` verdict.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .diagnose import CLOSE, Diagnosis, broadcast_shape, diagnose_shape, diagnose_values, shape_str
from .wire import Opaque

ROUNDING_RTOL = 1e-10  # float64 agreement that makes a float32 mismatch "rounding"
FLOAT32_RTOL = 1e-5  # when the statements cannot run in float64: float32 agreement, ~100 ulps of the scale
FLOAT32_CLOSE = 1e-4  # and the diagnosis's notion of "equal" then
FLOAT32_SANE = 1e-3  # a float32 value farther than this (of the scale) is not "rounding", whatever float64 says
OK = ("exact", "rounding")


@dataclass
class Result:
    name: str  # the forward variable's name ("C", "hpreact"); the gradient is d<name>
    shape: tuple
    verdict: str
    maxdiff: float | None = None  # max |mine - autograd| in the checked dtype
    ulps: int | None = None  # max distance in units in the last place (same shape only)
    diagnosis: Diagnosis | None = None
    note: str | None = None  # line and message of an error, a platform remark, ...
    line: int | None = None  # where it was judged (its last assignment)
    plain: dict | None = None  # what the lecture's cmp would print without teacher forcing
    cell: int | None = None  # the notebook cell of that line
    dvar: str | None = None  # the learner's own name for the gradient, when it is not d<name>
    values: tuple | None = None  # (yours, autograd's) tensors, for pictures; not in to_dict()

    @property
    def where(self) -> str:
        return f"cell {self.cell}, line {self.line}" if self.cell is not None else f"line {self.line}"

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "verdict": self.verdict, "maxdiff": self.maxdiff,
                "ulps": self.ulps, "diagnosis": self.diagnosis.to_dict() if self.diagnosis else None,
                "note": self.note, "line": self.line, "cell": self.cell, "dvar": self.dvar, "plain": self.plain}


def ordered(x: torch.Tensor) -> torch.Tensor:
    """Float bits as integers that count ULPs: adjacent floats differ by 1, -0 == +0."""
    itype = {torch.float32: torch.int32, torch.float64: torch.int64, torch.float16: torch.int16,
             torch.bfloat16: torch.int16}[x.dtype]
    i = x.contiguous().view(itype).to(torch.int64)
    low = torch.iinfo(itype).min
    return torch.where(i < 0, low - i, i)


def ulps(a: torch.Tensor, b: torch.Tensor) -> int:
    if a.numel() == 0:
        return 0
    return int((ordered(a) - ordered(b)).abs().max().item())


def plain_cmp(mine, ref: torch.Tensor) -> dict:
    """The lecture's cmp: exact = all(dt == t.grad), approximate = allclose, maxdiff; broadcasting included."""
    if not torch.is_tensor(mine):
        return {"exact": None, "approximate": None, "maxdiff": None}
    try:
        return {"exact": bool((mine == ref).all().item()), "approximate": bool(torch.allclose(mine.to(ref.dtype), ref)),
                "maxdiff": float((mine - ref).abs().max().item())}
    except RuntimeError:  # shapes that do not even broadcast: the notebook's cmp would raise
        return {"exact": None, "approximate": None, "maxdiff": None}


def platform_note(edges: list, version: str, device: str, local: bool) -> str:
    """Why a right answer is not bit-exact: the package's own solution gets the very same bits."""
    if local and len(edges) == 1:  # teacher forcing keeps the difference local: it is this op's backward kernel
        return (f"bitwise equal to the natural formula (the package's solution gives the same bits); autograd's "
                f"backward of `{edges[0].source.split('#')[0].strip()}` rounds differently on this platform "
                f"(torch {version}, {device})")
    return f"bitwise equal to the package's own solution on this platform (torch {version}, {device})"


def numel(shape) -> int:
    out = 1
    for s in shape:
        out *= s
    return out


def broadcasts_onto(shape, ref_shape) -> bool:
    """Whether `mine == ref` pairs each element of a gradient of `shape` with exactly one position of
    `ref_shape`, as the lecture's cmp compares them: (64,) for (1, 64), (1, 27) for (27,), (1, 64) for
    (32, 64); not (32,) for (32, 1), which broadcasts to (32, 32)."""
    both = broadcast_shape(shape, ref_shape)
    return both is not None and numel(both) == numel(ref_shape)


def onto(t: torch.Tensor, ref_shape) -> torch.Tensor:
    """A gradient broadcast onto its tensor's shape (see broadcasts_onto)."""
    return t.expand(broadcast_shape(tuple(t.shape), tuple(ref_shape))).reshape(ref_shape)


def shape_note(name: str, shape: tuple, ref_shape: tuple) -> str:
    """Why a gradient of another shape is judged on its values, and what gives the exact shape."""
    head = f"d{name} has shape {shape_str(shape)} where {name} has {shape_str(ref_shape)}"
    if numel(shape) < numel(ref_shape):
        why = (f"the broadcast to {name}'s shape is left to later lines; broadcast, its values are judged. A "
               f"gradient has its tensor's shape: torch.ones_like({name}) * ...")
    elif len(shape) > len(ref_shape):
        why = (f"the values are judged; the extra dim of size 1 (keepdim=True) would not fit an update of {name} "
               f"in place ({name}.data += -lr * d{name}): drop keepdim")
    else:
        why = "it broadcasts the same way, so the values are judged; keepdim=True (or .view) gives the exact shape"
    return f"{head}: {why} (--strict-shapes fails it)"


ONLY32 = ("judged in float32 only (tolerance 1e-5 of the scale): these statements do not run on float64 inputs "
          "(`.float()` or dtype=float32?); use .to(x.dtype) or .type_as(x)")


def judge(name: str, mine32, mine64, ref32: torch.Tensor, ref64: torch.Tensor, scale: float, n: int,
          edges: list, solution32=None, forced: bool = True, strict_shapes: bool = False,
          rtol32: float = FLOAT32_RTOL, only32: str = ONLY32) -> Result:
    """Compare one gradient with autograd's and decide its verdict (and diagnosis when wrong).

    `forced`: the upstream gradients were autograd's (teacher forcing), so a difference is local.
    Without a float64 value (`mine64` None, or pinned to float32), "rounding" means within `rtol32` of
    the scale, and the note says so (`only32`)."""
    if (torch.is_tensor(mine32) and tuple(mine32.shape) != tuple(ref32.shape) and not strict_shapes
            and broadcasts_onto(tuple(mine32.shape), tuple(ref32.shape))):
        same = torch.is_tensor(mine64) and mine64.shape == mine32.shape
        r = judge(name, onto(mine32, ref32.shape), onto(mine64, ref64.shape) if same else None, ref32, ref64,
                  scale, n, edges, solution32, forced, rtol32=rtol32, only32=only32)
        if r.verdict in OK or mine32.numel() == ref32.numel():  # right, or the same values misplaced: say so
            note = shape_note(name, tuple(mine32.shape), tuple(ref32.shape))
            r.note = f"{note}; {r.note}" if r.note else note
            return r
        # fewer values, and wrong ones once broadcast: the shape is the first thing to put right
    shape = tuple(ref32.shape)
    not_one = not_a_gradient(name, shape, mine32)
    if not_one is not None:
        return not_one
    # the float64 re-run counts only if it really ran in float64 (`.float()` in the code pins float32)
    in64 = torch.is_tensor(mine64) and mine64.shape == mine32.shape and mine64.dtype == torch.float64
    m64 = mine64 if in64 else mine32.double()
    tol = CLOSE if in64 else FLOAT32_CLOSE
    if tuple(mine32.shape) != shape:
        return Result(name, shape, "shape", diagnosis=diagnose_shape(name, m64.double(), ref64, scale, tol),
                      note=f"shape {shape_str(mine32.shape)}")
    if mine32.device != ref32.device:
        mine32, m64 = mine32.to(ref32.device), m64.to(ref32.device)
    maxdiff = float((mine32.double() - ref32.double()).abs().max().item()) if mine32.numel() else 0.0
    if mine32.dtype != ref32.dtype:
        return Result(name, shape, "wrong", maxdiff=maxdiff, diagnosis=Diagnosis(
            "other", f"d{name} has dtype {str(mine32.dtype).replace('torch.', '')} where autograd's gradient is "
                     f"{str(ref32.dtype).replace('torch.', '')}; do not change the dtype (drop .double()/dtype=)"))
    if torch.equal(mine32, ref32):
        return Result(name, shape, "exact", maxdiff=0.0, ulps=0)
    return judge_close(name, mine32, m64 if in64 else None, ref32, ref64, maxdiff, scale, n, edges, solution32,
                       forced, rtol32, only32)


def not_a_gradient(name: str, shape: tuple, mine32) -> Result | None:
    """`...`, None, a value that is not a tensor or not floating point: judged without comparing."""
    if mine32 is Ellipsis or mine32 is None:
        return Result(name, shape, "missing", note=f"d{name} is still `...`" if mine32 is Ellipsis else None)
    if not torch.is_tensor(mine32):
        kind = mine32.typename if isinstance(mine32, Opaque) else type(mine32).__name__  # Opaque: the learner's type
        return Result(name, shape, "wrong", diagnosis=Diagnosis("other", f"d{name} is a {kind}, not a tensor"))
    if not mine32.is_floating_point():
        return Result(name, shape, "wrong", diagnosis=Diagnosis(
            "other", f"d{name} has dtype {str(mine32.dtype).replace('torch.', '')}; a gradient is floating point"))
    return None


def judge_close(name: str, mine32: torch.Tensor, mine64: torch.Tensor | None, ref32: torch.Tensor,
                ref64: torch.Tensor, maxdiff: float, scale: float, n: int, edges: list, solution32, forced: bool,
                rtol32: float, only32: str) -> Result:
    """A gradient of the right shape and dtype that is not bit-equal to autograd's: rounding or wrong, by its
    float64 re-run (`mine64`, None when there is none or the code pins float32)."""
    shape = tuple(ref32.shape)
    in64 = mine64 is not None
    m64 = mine64 if in64 else mine32.double()
    tol = CLOSE if in64 else FLOAT32_CLOSE
    u = ulps(mine32, ref32)
    if not torch.isfinite(mine32).all():
        return Result(name, shape, "wrong", maxdiff=maxdiff, ulps=None,
                      diagnosis=diagnose_values(name, m64.double(), ref64, scale, n, edges, tol))
    note = None
    rel = (m64.to(ref64.device) - ref64).abs().max().item() / scale
    if in64:
        agrees = rel <= ROUNDING_RTOL
    else:  # the code pins float32 (`.float()`, dtype=), or there is no float64 run: a float32 judgement
        agrees = rel <= rtol32
        note = only32
    if agrees and maxdiff > FLOAT32_SANE * scale:
        return Result(name, shape, "wrong", maxdiff=maxdiff, ulps=u, diagnosis=Diagnosis(
            "precision", f"the float64 re-run agrees with autograd, but the float32 values are {maxdiff / scale:.2g} "
                         "of the gradient's scale away from it: the statements lose that much in float32 (computed "
                         "in float64 on other values and cast back, or a cancellation)"))
    if agrees:
        if solution32 is not None and torch.is_tensor(solution32) and torch.equal(mine32, solution32):
            note = platform_note(edges, torch.__version__, ref32.device.type, forced)
        tiny = [e for e in edges if e.contribution.abs().max().item() <= 1e-10 * scale] if len(edges) > 1 else []
        if tiny and note is None:
            note = ("mathematically equivalent: " + " and ".join(e.describe() for e in tiny)
                    + " carries zero gradient up to rounding, so keeping or dropping it changes only rounding")
        return Result(name, shape, "rounding", maxdiff=maxdiff, ulps=u, note=note)
    return Result(name, shape, "wrong", maxdiff=maxdiff, ulps=u,
                  diagnosis=diagnose_values(name, m64.double(), ref64, scale, n, edges, tol), note=note)
