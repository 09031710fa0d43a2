"""Exercises 5-9 (layernorm twice, one attention head, the WaveNet's block, gelu) as data.

Each solution passes its own check and its template is all missing; every judged node has three hints
and a derivation. The solutions are also held to the package's hand-written ops in float64 (the
forward values to the op's forward, the gradients to the op's backward), so exercise and model agree.
"""
from __future__ import annotations

import pytest
import torch

from ninjagrad import ops
from ninjagrad.check.commands import hint_levels
from ninjagrad.check.core import check_source, prepare
from ninjagrad.check.exercises import all_exercises, exercise_of_file, sections
from ninjagrad.check.judge import run_forced
from ninjagrad.check.program import static_nodes
from ninjagrad.check.runner import parse_learner
from ninjagrad.cli import main

NEW = [5, 6, 7, 8, 9]


def test_the_new_exercises_are_listed():
    titles = {i: all_exercises()[i].title.lower() for i in NEW}
    assert "layernorm" in titles[5] and "step by step" in titles[5]
    assert "layernorm" in titles[6] and "one expression" in titles[6]
    assert "attention" in titles[7] and "wavenet" in titles[8] and "gelu" in titles[9]


@pytest.mark.parametrize("number", NEW)
def test_solution_passes_template_is_missing(number):
    ctx = prepare(number)
    ex = ctx.ex
    sol = check_source("solution.py", ex.read("solution.py"), ctx)
    assert sol["summary"]["ok"], [r for r in sol["results"] if r["verdict"] not in ("exact", "rounding")]
    tpl = ex.read("template.py")
    assert exercise_of_file("template.py", tpl) == number
    rep = check_source("template.py", tpl, ctx)
    assert rep["summary"]["missing"] == rep["summary"]["total"] == len(ctx.judged)
    assert static_nodes(ex) == ctx.judged
    assert not set(ex.given) & set(ctx.judged)  # a given gradient is not judged


@pytest.mark.parametrize("number", NEW)
def test_every_node_has_three_hints_and_a_derivation(number):
    ex = all_exercises()[number]
    hints, derivations = sections(ex.read("hints.md")), sections(ex.read("derivations.md"))
    for x in static_nodes(ex):
        assert set(hint_levels(hints[x])) == {1, 2, 3}, x
        assert len(derivations[x]) > 40, x


def solution64(number):
    """The solution's gradients on the float64 trace (teacher-forced), and that trace."""
    ctx = prepare(number)
    sol = parse_learner("solution.py", ctx.ex.read("solution.py"))
    forced = run_forced(sol, ctx.t64, None, ctx.judged, ctx.ex.given)
    assert not forced.errors
    return {x: forced.values32[x] for x in ctx.judged}, ctx.t64


def close(a, b, tol=1e-12):
    assert a.dtype == b.dtype == torch.float64 and a.shape == b.shape
    return (a - b).abs().max().item() <= tol * max(b.abs().max().item(), 1.0)


def test_layernorm_solutions_agree_with_the_op():
    for number in (5, 6):
        mine, t = solution64(number)
        ns, g = t.namespace, t.grads
        out, cache = ops.layernorm_forward(ns["x"], ns["ln_w"], ns["ln_b"])
        assert close(out, ns["ln"])
        dx, dw, db = ops.layernorm_backward(g["ln"], cache)
        assert close(mine["x"], dx) and close(g["x"], dx)
        if number == 5:
            assert close(mine["ln_w"], dw) and close(mine["ln_b"], db)


def test_attention_solution_agrees_with_the_op():
    mine, t = solution64(7)
    ns, g = t.namespace, t.grads
    qkv = torch.cat([ns["q"], ns["k"], ns["v"]], dim=2)  # (B, T, 3 hs): one head
    y, cache = ops.attention_forward(qkv, n_head=1)
    assert close(y, ns["out"])
    dqkv = ops.attention_backward(g["out"], cache)
    dq, dk, dv = dqkv.split(ns["hs"], dim=2)
    assert close(mine["q"], dq) and close(mine["k"], dk) and close(mine["v"], dv)


def test_wavenet_block_solution_agrees_with_the_ops():
    mine, t = solution64(8)
    ns, g = t.namespace, t.grads
    x1, shape = ops.flatten_consecutive_forward(ns["emb"], 2)
    assert close(x1, ns["x1"])
    hpreact, cache = ops.batchnorm_forward(ns["hprebn1"], ns["bngain1"], ns["bnbias1"])
    assert close(hpreact, ns["hpreact1"])  # statistics over dims 0 and 1, Bessel-corrected, as the model
    dx, dgain, dbias = ops.batchnorm_backward(g["hpreact1"], cache)
    assert close(mine["hprebn1"], dx) and close(mine["bngain1"], dgain) and close(mine["bnbias1"], dbias)
    assert close(mine["emb"], ops.flatten_consecutive_backward(g["x1"], shape))
    _, ecache = ops.embedding_forward(ns["C"], ns["Xb"])
    assert close(mine["C"], ops.embedding_backward(g["emb"], ecache))


def test_gelu_solution_agrees_with_the_op():
    mine, t = solution64(9)
    ns, g = t.namespace, t.grads
    h, cache = ops.gelu_forward(ns["hpre"])
    assert close(h, ns["h"])
    assert close(mine["hpre"], ops.gelu_backward(g["h"], cache))


@pytest.mark.slow
def test_cli_exercise_hint_explain(tmp_path, capsys):
    out = tmp_path / "ex7.py"
    assert main(["exercise", "7", "-o", str(out)]) == 0
    assert out.read_text().startswith("# ninjagrad exercise 7")
    for alias, number in (("layernorm", 6), ("attention", 7), ("wavenet", 8), ("flatten", 8), ("gelu", 9)):
        assert main(["explain", alias]) == 0
        assert f"exercise {number}" in capsys.readouterr().out
        assert main(["hint", alias, "--level", "3"]) == 0
        assert f"exercise {number}, hint 3 of 3" in capsys.readouterr().out
    assert main(["hint", "dwei_masked", "--exercise", "7", "--level", "2"]) == 0
    assert "keepdim" in capsys.readouterr().out
    assert main(["explain", "forward", "--exercise", "8"]) == 0
    assert "hprebn1.var((0, 1)" in capsys.readouterr().out
    assert main(["check", str(out)]) == 1  # the template, through the worker: all missing
    assert "12 missing" in capsys.readouterr().out
