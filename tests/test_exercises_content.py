"""The exercises as data: solutions pass their own check, templates are all missing, every node has its aids."""
from __future__ import annotations

import pytest

from ninjagrad.check.commands import hint_levels
from ninjagrad.check.core import check_source, prepare
from ninjagrad.check.exercises import all_exercises, exercise_of_file, sections
from ninjagrad.check.program import static_nodes

IDS = sorted(all_exercises())


def test_the_lectures_four_exercises_then_five_more():
    """1-4 are the lecture's, on its MLP and one forward script (exercise 1's); 5-9 go beyond it."""
    exercises = all_exercises()
    assert IDS == list(range(1, 10))
    assert [exercises[i].model for i in range(1, 5)] == ["mlp"] * 4
    assert [exercises[i].forward_of for i in range(2, 5)] == [exercises[1].folder] * 3
    assert exercises[4].kind == "function"  # a backward(...) that `ninjagrad train --backward` trains with
    assert all(exercises[i].model != "mlp" for i in range(5, 10))


@pytest.mark.parametrize("number", IDS)
def test_solution_passes_and_template_is_missing(number):
    ctx = prepare(number)
    ex = ctx.ex
    sol = check_source("solution.py", ex.read("solution.py"), ctx)
    assert sol["summary"]["ok"], [r for r in sol["results"] if r["verdict"] not in ("exact", "rounding")]
    tpl = ex.read("template.py")
    assert exercise_of_file("template.py", tpl) == number  # `--exercise` may be omitted for templates
    rep = check_source("template.py", tpl, ctx)
    assert rep["summary"]["missing"] == rep["summary"]["total"] == len(ctx.judged)
    assert static_nodes(ex) == ctx.judged  # --list's nodes come from the files alone, in the solution's order


@pytest.mark.parametrize("number", IDS)
def test_every_node_has_three_hints_and_a_derivation(number):
    ex = all_exercises()[number]
    hints = sections(ex.read("hints.md"))
    derivations = sections(ex.read("derivations.md"))
    for x in static_nodes(ex):
        assert set(hint_levels(hints[x])) == {1, 2, 3}, x
        assert len(derivations[x]) > 40, x


def test_fused_forms_of_exercises_2_and_3():
    ctx2 = prepare(2)
    alt = "p = F.softmax(logits, 1)\ndlogits = (p - F.one_hot(Yb, vocab_size)) / n\n"
    assert check_source("a.py", alt, ctx2)["summary"]["ok"]
    wrong = "p = F.softmax(logits, 1)\ndlogits = p - F.one_hot(Yb, vocab_size)\n"
    (r,) = check_source("w.py", wrong, ctx2)["results"]
    assert r["verdict"] == "wrong" and r["diagnosis"]["kind"] == "scale" and "n = 32" in r["diagnosis"]["message"]
    ctx3 = prepare(3)
    sol = ctx3.ex.read("solution.py")
    biased = sol.replace("n/(n-1)*bnraw", "bnraw")  # forgets Bessel's correction in the variance path
    (r,) = check_source("b.py", biased, ctx3)["results"]
    assert r["verdict"] == "wrong" and r["diagnosis"]["kind"] == "scale"
    assert "bndiff2" in r["diagnosis"]["message"] and "Bessel" in r["diagnosis"]["message"]
    no_mean = sol.replace(" - dhpreact.sum(0)", "")  # drops the path through the mean
    (r,) = check_source("m.py", no_mean, ctx3)["results"]
    assert r["verdict"] == "wrong" and r["diagnosis"]["kind"] == "missing_branch"
    assert "bnmeani" in r["diagnosis"]["message"]
