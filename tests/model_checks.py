"""Checks every model beyond the lecture must pass: gradients equal autograd's, backward is forward
reversed op by op, and a resumed run ends exactly where an uninterrupted one does."""
from __future__ import annotations

import torch

from ninjagrad import ops
from ninjagrad.engines import autograd_loss_and_grads
from ninjagrad.train import Interrupted, resume_run, start_run

from .helpers import rel_err


def perturb(model, seed=0, scale=0.05):
    """Nudge every parameter, so zero biases and identity layernorms cannot hide a broken gradient."""
    g = torch.Generator().manual_seed(seed)
    for p in model.params.values():
        p.add_(torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype) * scale)
    return model


def manual_and_autograd(model, X, Y):
    with torch.no_grad():
        loss, cache = model.forward(X, Y)
        grads = model.backward(cache)
    ref_loss, ref = autograd_loss_and_grads(model, X, Y)
    assert set(grads) == set(ref) == set(model.params)
    return loss.item(), grads, ref_loss, ref


def assert_grads_match(model, X, Y, tol):
    loss, grads, ref_loss, ref = manual_and_autograd(model, X, Y)
    assert abs(loss - ref_loss) <= tol * abs(ref_loss)
    for k in ref:
        assert grads[k].shape == ref[k].shape, k
        assert ref[k].abs().max().item() > 0, f"{k}: zero reference gradient, the check would be empty"
        assert rel_err(grads[k], ref[k]) <= tol, (k, rel_err(grads[k], ref[k]))


def op_trace(monkeypatch, model, X, Y) -> tuple[list[str], list[str]]:
    """The names of the ops forward and backward call, in order (from ninjagrad.ops)."""
    calls = []
    for name in dir(ops):
        fn = getattr(ops, name)
        if callable(fn) and (name.endswith("_forward") or name.endswith("_backward")):
            def wrapped(*a, __fn=fn, __name=name, **kw):
                calls.append(__name)
                return __fn(*a, **kw)
            monkeypatch.setattr(ops, name, wrapped)
    with torch.no_grad():
        _, cache = model.forward(X, Y)
        n = len(calls)
        model.backward(cache)
    fwd = [c.removesuffix("_forward") for c in calls[:n]]
    bwd = [c.removesuffix("_backward") for c in calls[n:]]
    return fwd, bwd


def resume_matches(cfg_factory, tmp_path, stop_at: int):
    """Train straight through; train again, stop at `stop_at` (as Ctrl-C does), resume from the run
    folder, finish. Parameters, optimizer state and losses must be bit-for-bit the same."""
    straight = start_run(cfg_factory(), str(tmp_path / "straight"))
    straight.train([])
    first = start_run(cfg_factory(), str(tmp_path / "stopped"))
    stop: list[int] = []
    try:
        first.train(stop, lambda r: stop.append(2) if r.step == stop_at else None)
    except Interrupted:
        first.save()
    assert first.step == stop_at
    resumed = resume_run(str(tmp_path / "stopped"))
    assert resumed.step == stop_at
    resumed.train([])
    for k, p in straight.model.params.items():
        assert torch.equal(p, resumed.model.params[k]), k
    assert straight.losses == resumed.losses
    return straight, resumed
