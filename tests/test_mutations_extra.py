"""Mutation suite for exercises 5-9: break one line of a solution; the checker must notice and say how.

Each mutant is a deliberate, typical mistake (a flipped sign, C-1 for C, a forgotten scale, a dropped
branch, a dropped keepdim, a sum over the wrong axis, a transposed matmul, an alias without .clone(),
`dC[Xb] += demb`). The mutated gradient must be judged wrong (or shape) with the expected diagnosis
kind, and every other gradient must stay right: teacher forcing keeps a mistake local.

Run as a script to print the mutation score: `python tests/test_mutations_extra.py`.
"""
from __future__ import annotations

import pytest

# (exercise, target gradient, expected diagnosis kind, line of the solution to change, its replacement)
MUTANTS = [
    # 5: layernorm, step by step
    (5, "xhat", "sign", "dxhat = dln * ln_w", "dxhat = -(dln * ln_w)"),
    (5, "xdiff2", "scale", "torch.ones_like(xdiff2) / C * dxvar", "torch.ones_like(xdiff2) / (C - 1) * dxvar"),
    (5, "xdiff", "missing_branch", "dxdiff += 2 * xdiff * dxdiff2", "pass"),
    (5, "rstd", "broadcast", "(dxhat * xdiff).sum(-1, keepdim=True)", "(dxhat * xdiff).sum(-1)"),
    (5, "ln_b", "axis", "dln_b = dln.sum((0, 1))", "dln_b = dln.sum((1, 2))"),
    (5, "W", "transpose", "dW = ln.view(-1, C).T @ dlogits.view(-1, V)",
     "dW = dlogits.view(-1, V).T @ ln.view(-1, C)"),
    (5, "xdiff", "aliasing", "dx = dxdiff.clone()", "dx = dxdiff"),
    (5, "x", "missing_branch", "dx += dxmean / C", "pass"),
    # 6: layernorm in one expression
    (6, "x", "sign", "\ndx = rstd * (", "\ndx = -rstd * ("),
    (6, "x", "missing_branch", " - (dln*ln_w).mean(-1, keepdim=True)", ""),
    (6, "x", "missing_branch", " - xhat * (dln*ln_w*xhat).mean(-1, keepdim=True)", ""),
    # batchnorm's Bessel factor carried over to layernorm, whose variance is biased
    (6, "x", "scale", " - xhat * (dln*ln_w*xhat)", " - C/(C-1) * xhat * (dln*ln_w*xhat)"),
    # 7: one attention head
    (7, "q", "scale", "dq = (dwei * hs**-0.5) @ k", "dq = dwei @ k"),
    (7, "wei_masked", "sign", "att * (datt - (datt * att).sum(-1, keepdim=True))",
     "att * ((datt * att).sum(-1, keepdim=True) - datt)"),
    (7, "x", "missing_branch", "dx += dv @ Wv.T", "pass"),
    (7, "Wq", "transpose", "dWq = x.view(-1, C).T @ dq.view(-1, hs)", "dWq = dq.view(-1, hs).T @ x.view(-1, C)"),
    (7, "Wo", "transpose", "dWo = out.view(-1, hs).T @ dlogits.view(-1, V)",
     "dWo = dlogits.view(-1, V).T @ out.view(-1, hs)"),
    # 8: the WaveNet's flatten-consecutive + batchnorm block
    (8, "hpreact1", "sign", "dhpreact1 = (1.0 - h1**2) * dh1", "dhpreact1 = (h1**2 - 1.0) * dh1"),
    (8, "hprebn1", "scale", "(hprebn1 - bnmean1) / (m - 1)", "(hprebn1 - bnmean1) / m"),
    (8, "hprebn1", "scale", "dhprebn1 += dbnmean1 / m", "dhprebn1 += dbnmean1 / n"),
    (8, "hprebn1", "missing_branch", "dhprebn1 += dbnmean1 / m", "pass"),
    (8, "bngain1", "broadcast", "(bnraw1 * dhpreact1).sum((0, 1)).view(bngain1.shape)", "(bnraw1 * dhpreact1).sum(0)"),
    (8, "C", "duplicate_index", "dC.index_add_(0, Xb.view(-1), demb.view(-1, n_embd))", "dC[Xb] += demb"),
    (8, "W1", "transpose", "dW1 = x1.view(-1, x1.shape[-1]).T @ dhprebn1.view(-1, dhprebn1.shape[-1])",
     "dW1 = dhprebn1.view(-1, dhprebn1.shape[-1]).T @ x1.view(-1, x1.shape[-1])"),
    # 9: gelu
    (9, "inner", "sign", "dinner = (1 - t**2) * dt", "dinner = (t**2 - 1) * dt"),
    (9, "hpre", "missing_branch", "dhpre += 3 * hpre**2 * dhpre3", "pass"),
    (9, "hpre", "scale", "dhpre += 3 * hpre**2 * dhpre3", "dhpre += hpre**2 * dhpre3"),
    (9, "b1", "axis", "db1 = dhpre.sum(0)", "db1 = dhpre.sum(1)"),
    (9, "t", "scale", "dt = 0.5 * hpre * dh", "dt = hpre * dh"),
]


def mutate(source: str, old: str, new: str) -> str:
    assert source.count(old) == 1, f"the solution must contain `{old}` exactly once"
    return source.replace(old, new)


def run_mutant(number, target, expect, old, new):
    """(caught, what the target got, whether every other gradient stayed right)."""
    from ninjagrad.check.core import check_source, prepare

    ctx = prepare(number)
    report = check_source(f"<mutant d{target}>", mutate(ctx.ex.read("solution.py"), old, new), ctx)
    by = {r["name"]: r for r in report["results"]}
    r = by[target]
    others_ok = all(o["verdict"] in ("exact", "rounding") for name, o in by.items() if name != target)
    got = r["diagnosis"]["kind"] if r["diagnosis"] else r["verdict"]
    caught = r["verdict"] in ("wrong", "shape") and got == expect
    return caught, got, others_ok, r


@pytest.mark.parametrize("number,target,expect,old,new", MUTANTS,
                         ids=[f"ex{m[0]}-d{m[1]}-{m[2]}" for m in MUTANTS])
def test_mutant_is_caught_with_the_right_kind(number, target, expect, old, new):
    caught, got, others_ok, r = run_mutant(number, target, expect, old, new)
    assert caught, f"expected {expect}, got {got}: {r}"
    assert others_ok, "teacher forcing should keep the mistake in one gradient"


def test_the_diagnoses_name_the_cause():
    """A few messages in full: the factor and the branch must be the ones the mistake introduced."""
    _, _, _, r = run_mutant(5, "xdiff2", "scale", "torch.ones_like(xdiff2) / C * dxvar",
                            "torch.ones_like(xdiff2) / (C - 1) * dxvar")
    assert "n/(n-1) = 16/15" in r["diagnosis"]["message"]  # C = 16 channels: layernorm's n
    _, _, _, r = run_mutant(8, "hprebn1", "scale", "(hprebn1 - bnmean1) / (m - 1)", "(hprebn1 - bnmean1) / m")
    assert "bnvar1" in r["diagnosis"]["message"] and "127/128" in r["diagnosis"]["message"]
    _, _, _, r = run_mutant(8, "hprebn1", "missing_branch", "dhprebn1 += dbnmean1 / m", "pass")
    assert "bnmean1" in r["diagnosis"]["message"]
    _, _, _, r = run_mutant(9, "hpre", "missing_branch", "dhpre += 3 * hpre**2 * dhpre3", "pass")
    assert "hpre3" in r["diagnosis"]["message"]
    _, _, _, r = run_mutant(6, "x", "missing_branch", " - (dln*ln_w).mean(-1, keepdim=True)", "")
    assert "xmean" in r["diagnosis"]["message"]
    _, _, _, r = run_mutant(6, "x", "scale", " - xhat * (dln*ln_w*xhat)", " - C/(C-1) * xhat * (dln*ln_w*xhat)")
    assert "x -> xdiff -> xdiff2" in r["diagnosis"]["message"] and "16/15" in r["diagnosis"]["message"]


def test_every_new_exercise_has_mutants():
    """Each exercise beyond the lecture's four (whatever the package holds) has mutants here."""
    from ninjagrad.check.exercises import all_exercises

    beyond = {n for n in all_exercises() if n > 4}
    assert beyond and {m[0] for m in MUTANTS} == beyond
    kinds = {m[2] for m in MUTANTS}
    assert {"sign", "scale", "missing_branch", "broadcast", "axis", "transpose", "aliasing",
            "duplicate_index"} <= kinds


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)
    hits = 0
    for m in MUTANTS:
        caught, got, ok, _ = run_mutant(*m)
        hits += caught and ok
        print(f"{'ok  ' if caught and ok else 'MISS'} ex{m[0]} d{m[1]:12s} expected {m[2]:16s} got {got}"
              f"{'' if ok else ' (others disturbed)'}")
    print(f"mutation score: {hits}/{len(MUTANTS)}")
