"""The judge's side of a check: it holds autograd's gradients, the learner's code never does.

The learner's statements run somewhere else (a sandboxed process, see sandbox.py and learner.py; or
this process, for tests and the notebook magic), through a Learner. At each gradient variable's last
assignment the learner's run hands its values over and receives the values to continue with:

- teacher forcing: autograd's gradient, so that one mistake does not cascade (run_forced);
- probing: random upstream gradients, a few draws in float64. A gradient written by hand is a
  function of the gradients flowing into it, and must map them the way autograd's vector-Jacobian
  product does; a formula that matches only the lecture's upstream gradient (a sign-flipped
  dlogit_maxes, whose true value is ~0 here; a value read from memory or recomputed with autograd)
  does not (probe).

Nothing the learner's run reports can make a wrong value right: verdicts are decided here, on the
values handed over.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .diagnose import Diagnosis, close, diagnose_values
from .learner import LocalLearner
from .names import autograd_taint, gradient_sources
from .runner import Events, Program, last_assignments
from .trace import Trace, pullback
from .wire import Gone

PROBE_DRAWS = 2  # random upstream gradients per probed gradient
# agreement with the vector-Jacobian product, of its scale: float32 rounding (a `.to(torch.float32)` in a
# line) passes, a formula that differs does not
PROBE_RTOL = 1e-5
PROBE_SEED = 20241130


@dataclass
class Forced:
    """What a teacher-forced run handed over for every judged gradient."""
    values32: dict = field(default_factory=dict)  # node -> value at its last assignment
    values64: dict = field(default_factory=dict)
    units: dict = field(default_factory=dict)  # node -> the unit of its last assignment
    errors: dict = field(default_factory=dict)  # node -> Failure of the statement that assigns it last
    earlier: dict = field(default_factory=dict)  # node -> Failure of an earlier statement that assigns it
    aliased: dict = field(default_factory=dict)  # node -> (unit that changed it later, harmless?)
    autograd: dict = field(default_factory=dict)  # node -> (unit, how) where its value comes from autograd
    problems: list = field(default_factory=list)  # Failures of statements that assign no judged gradient
    missing: list = field(default_factory=list)  # nodes whose value never came (the run stopped first)
    stopped: bool = False  # the learner's run ended before it was done


class Order(Exception):
    """A hand-over that does not follow the program: a value for a gradient not due at that line."""


def given_values(prog: Program, t32: Trace, t64: Trace | None, given: list[str]) -> dict:
    """dvar -> (float32, float64) autograd gradients of the nodes whose gradient is given, under the
    learner's name for it and under d<name>."""
    out = {}
    for x in given:
        pair = (t32.grads[x], t64.grads[x] if t64 is not None else None)
        out["d" + x] = out[prog.dvar(x)] = pair
    return out


def run_forced(prog: Program, t32: Trace, t64: Trace | None, judged: list[str], given: list[str],
               learner=None) -> Forced:
    """Run the learner's statements with teacher forcing; collect what they hand over."""
    learner = learner or LocalLearner.of_traces(t32, t64)
    node_of = {prog.dvar(x): x for x in judged}
    last = last_assignments(prog, node_of)
    out = Forced()

    def exchange(dvar, i, v32, v64):
        x = node_of.get(dvar)
        if x is None or last.get(dvar) != i or x in out.values32:
            raise Order(f"a value for {dvar} at unit {i}")
        out.values32[x], out.values64[x], out.units[x] = v32, v64, prog.units[i]
        return t32.grads[x], (t64.grads[x] if t64 is not None else None), (t64 or t32).scale.get(x, 1.0)

    try:
        events = learner.forced(prog, list(node_of), given_values(prog, t32, t64, given), exchange)
    except (Order, Gone):  # the run stopped, or handed values over out of turn: what came before stands
        events = Events()
        out.stopped = True
    for i, err in events.failures:
        hit = [w for w in prog.units[i].writes if w in node_of]
        for w in hit:  # an error counts where it leaves the gradient: at its last assignment
            x = node_of[w]
            if last[w] == i:  # `dX += ...` failing because `dX = ...` failed before: the first cause
                out.errors[x] = out.earlier.get(x, err) if err.name == w else err
            else:
                out.earlier.setdefault(x, err)
        if not hit:
            out.problems.append(err)
    for dvar, (i, harmless) in events.aliased.items():
        if dvar in node_of:
            out.aliased[node_of[dvar]] = (prog.units[i], harmless)
    tainted = autograd_taint([u for _, u in prog.runnable()])
    for dvar, x in node_of.items():
        if dvar in tainted:
            out.autograd[x] = tainted[dvar]
        if x not in out.values32 and dvar in last and x not in out.errors:
            out.missing.append(x)  # due, never handed over: the run stopped before its line
    return out


def run_plain(prog: Program, t32: Trace, judged: list[str], given: list[str], learner=None) -> tuple[dict, int]:
    """The learner's statements without teacher forcing: final values of the judged gradients, and
    how many statements raised."""
    learner = learner or LocalLearner.of_traces(t32, None)
    try:
        values, failures = learner.plain(prog, [prog.dvar(x) for x in judged], given_values(prog, t32, None, given))
    except Gone:
        return {}, 1
    return {x: values.get(prog.dvar(x)) for x in judged}, failures


# --- probing --------------------------------------------------------------------------------------------

@dataclass
class Probe:
    """One gradient whose formula does not map random upstream gradients as autograd does."""
    node: str
    diagnosis: Diagnosis
    upstream: list[str]  # the consumers whose gradients it should have used


def probed_nodes(prog: Program, t64: Trace, judged: list[str], given: list[str]) -> dict[str, str]:
    """Judged nodes whose every consumer's gradient is judged or given, so that random ones can take
    their place; node -> how it is probed, from what its value comes from (read statically):

    - "step": from the gradients of its consumers (at least one, nothing further up): it must give
      their vector-Jacobian product;
    - "forward": from no gradient at all (a fused dlogits, an exact zero): its value must not move
      when the upstream gradients do (a value found in memory would);
    - not probed: dlogprobs (right under the loss), a step that skips one (demb from dhprebn)."""
    upstream_set = set(judged) | set(given)
    dvar_of = {x: prog.dvar(x) for x in upstream_set}
    last = last_assignments(prog, set(dvar_of[x] for x in judged))
    sources = gradient_sources(list(prog.runnable()), last, [dvar_of[x] for x in given])
    out = {}
    for x in judged:
        consumers = {e.consumer for e in t64.edges.get(x, [])}
        if not consumers or not consumers <= upstream_set:
            continue
        src = sources.get(dvar_of[x], set())
        if not src:
            out[x] = "forward"
        elif src <= {dvar_of[y] for y in consumers}:
            out[x] = "step"
    return out


def probe(prog: Program, t32: Trace, t64: Trace, judged: list[str], given: list[str], n: int,
          learner=None, draws: int = PROBE_DRAWS, forced: Forced | None = None) -> dict[str, Probe]:
    """Run the statements again with random upstream gradients (judged and given ones alike); name
    every gradient whose formula does not give their vector-Jacobian product, and every one written
    from the forward alone whose value follows them anyway."""
    learner = learner or LocalLearner.of_traces(t32, t64)
    nodes = probed_nodes(prog, t64, judged, given)
    if not nodes:
        return {}
    node_of = {prog.dvar(x): x for x in judged}
    last = last_assignments(prog, node_of)
    g = torch.Generator().manual_seed(PROBE_SEED)
    found: dict[str, Probe] = {}
    for _ in range(draws):
        try:
            sent, got = probe_run(prog, t64, node_of, last, given, g, learner)
        except (Order, Gone):
            break
        for x, how in nodes.items():
            mine = got.get(x)
            if x in found or mine is None:
                continue
            upstream = {e.consumer: sent[e.consumer] for e in t64.edges[x] if e.consumer in sent}
            if len(upstream) < len(t64.edges[x]):
                continue
            if how == "forward":
                if forced is None or forced.errors or forced.problems or forced.earlier:
                    continue  # a line that raised changes what a value comes from: not read statically then
                before = forced.values64.get(x)
                if not torch.is_tensor(before) or before.shape != mine.shape or torch.equal(before.double(), mine):
                    continue
                found[x] = Probe(x, Diagnosis("other", f"d{x} reads no upstream gradient, yet its value changed "
                                                       "when they did: it is not computed by its own lines"),
                                 sorted(upstream))
                continue
            want, edges = pullback(t64, x, upstream)
            if mine.shape != want.shape:
                continue
            scale = max(want.abs().max().item(), max(r.abs().max().item() for r in upstream.values()), 1e-30)
            if close(mine, want, scale, PROBE_RTOL):
                continue
            found[x] = Probe(x, diagnose_values(x, mine, want, scale, n, edges), sorted(upstream))
    return found


def probe_run(prog: Program, t64: Trace, node_of: dict, last: dict, given: list[str], g: torch.Generator,
              learner) -> tuple[dict, dict]:
    """One run with random upstream gradients: what was handed in (node -> its random gradient, given
    ones included) and what came back (node -> the learner's float64 value, None if not a float tensor)."""
    sent = {x: torch.randn(t64.grads[x].shape, generator=g, dtype=torch.float64) * t64.scale.get(x, 1.0)
            for x in given}
    got: dict[str, torch.Tensor | None] = {}

    def exchange(dvar, i, v32, v64):
        x = node_of.get(dvar)
        if x is None or last.get(dvar) != i or x in got:
            raise Order(f"a value for {dvar} at unit {i}")
        mine = v64 if torch.is_tensor(v64) else v32
        got[x] = mine.detach().double().cpu() if torch.is_tensor(mine) and mine.is_floating_point() else None
        r = torch.randn(t64.grads[x].shape, generator=g, dtype=torch.float64) * t64.scale.get(x, 1.0)
        sent[x] = r
        return r.float(), r, t64.scale.get(x, 1.0)

    given_random = {}
    for x, r in sent.items():
        given_random["d" + x] = given_random[prog.dvar(x)] = (r.float(), r)
    learner.forced(prog, list(node_of), given_random, exchange)
    return sent, got


def probe_diagnosis(p: Probe, ref_scale: float, upstream_scale: float) -> Diagnosis:
    """The probe's finding, said as what it means for a value that looked right."""
    ups = ", ".join("d" + y for y in p.upstream)
    hidden = (f" d{p.node} is ≈ 0 on this batch ({ref_scale:.1g} against upstream gradients of "
              f"{upstream_scale:.1g}), which hides it." if ref_scale <= 1e-4 * upstream_scale else "")
    return Diagnosis(p.diagnosis.kind, f"right on this batch only: with other upstream gradients ({ups}) the "
                                       f"formula does not give autograd's vector-Jacobian product.{hidden} "
                                       f"{p.diagnosis.message}")

