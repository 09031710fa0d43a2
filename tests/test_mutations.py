"""Mutation suite: break exercise 1's solution one gradient at a time; the checker must notice and say how.

Mutations per gradient (where they apply): sign, a factor n / 1/n / Bessel's n-1, a dropped branch,
a dropped keepdim, a transposed matmul, a sum over the wrong axis, an alias without .clone(), and
`dC[Xb] += demb` (repeated indices lost). Each mutant must get a verdict other than exact/rounding for
its gradient with the expected diagnosis kind, and every other gradient must stay right (teacher
forcing keeps mistakes local). Mutants that are right on the lecture's batch only because the true
gradient is ~0 there (the logit_maxes branch, the bias b1) are caught by probing with random upstream
gradients and named "right on this batch only". Two kinds pass with a
note instead: a dropped keepdim whose shape broadcasts like the tensor's ((64,) for (1, 64), the
lecture's own dbnmeani; a shape failure under --strict-shapes), and an alias whose in-place change
adds only the zero branch through logit_maxes.

Run as a script to print the mutation score: `python tests/test_mutations.py`.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass

import pytest

ZERO_GRADIENT = {"logit_maxes", "b1"}  # ~0 on this batch: their sign and scale mutants are caught by probing


@dataclass
class Mutant:
    op: str  # which mutation
    target: str  # the gradient it breaks (for aliasing: the one changed through the alias)
    expect: str  # the diagnosis kind, "equivalent", or "passes" (right, with a note)
    source: str
    note: str = ""  # for "passes": a word the note must hold


def statements(source: str):
    tree = ast.parse(source)
    lines = source.splitlines()
    out = []
    for node in tree.body:
        text = "\n".join(lines[node.lineno - 1: node.end_lineno])
        out.append((node, text))
    return out


def writes(node) -> set[str]:
    from ninjagrad.check.statements import writes_of
    return writes_of(node)


def rebuild(parts: list[str]) -> str:
    return "\n".join(p for p in parts if p is not None) + "\n"


def mutants(source: str, judged: list[str], shapes: dict) -> list[Mutant]:
    stmts = statements(source)
    texts = [t for _, t in stmts]
    out: list[Mutant] = []

    def replaced(i, new):
        parts = list(texts)
        parts[i] = new
        return rebuild(parts)

    for x in judged:
        dvar = "d" + x
        idx = [i for i, (node, _) in enumerate(stmts) if dvar in writes(node)]
        if not idx:
            continue
        value_kind = None
        # sign: negate every value assigned to it (a loop: negate once at the end)
        parts = list(texts)
        simple = True
        for i in idx:
            node = stmts[i][0]
            if isinstance(node, (ast.Assign, ast.AugAssign)):
                op = texts[i].split("=", 1)
                parts[i] = op[0] + "= -(" + op[1].split("#")[0].strip() + ")"
            else:
                simple = False
        if not simple:
            parts[idx[-1]] = texts[idx[-1]] + f"\n{dvar} = -{dvar}"
        out.append(Mutant("sign", x, value_kind or "sign", rebuild(parts)))
        # factors of n where they occur
        for old, new in (("1.0/(n-1)", "1.0/n"), ("-1.0/n", "-1.0"), ("1.0/n *", "1.0 *"), ("2*bndiff", "bndiff"),
                         ("-0.5*", "-1.0*")):
            for i in idx:
                if old in texts[i]:
                    out.append(Mutant(f"factor {old} -> {new}", x, value_kind or "scale",
                                      replaced(i, texts[i].replace(old, new))))
        # drop a branch: a later `+=` of a gradient assigned earlier
        for i in idx[1:]:
            if isinstance(stmts[i][0], ast.AugAssign):
                out.append(Mutant("drop branch", x, "missing_branch", replaced(i, None)))
        # keepdim dropped: (64,) for a (1, 64) tensor broadcasts alike and passes with a note
        alike = len(shapes[x]) == 2 and shapes[x][0] == 1
        for i in idx:
            for kw in ("keepdim=True", "keepdims=True"):
                if kw in texts[i]:
                    out.append(Mutant("drop keepdim", x, "passes" if alike else "broadcast",
                                      replaced(i, texts[i].replace(", " + kw, "")), note="keepdim"))
        # wrong axis of a sum
        for i in idx:
            t = texts[i]
            if ".sum(0" in t or ".sum(1" in t:
                swapped = t.replace(".sum(0", ".sum(@").replace(".sum(1", ".sum(0").replace(".sum(@", ".sum(1")
                out.append(Mutant("wrong axis", x, "axis", replaced(i, swapped)))
        # transpose: a matmul written the other way round
        for i in idx:
            node = stmts[i][0]
            matmul = isinstance(node, ast.Assign) and isinstance(node.value, ast.BinOp)
            if matmul and isinstance(node.value.op, ast.MatMult):
                a = ast.unparse(node.value.left)
                b = ast.unparse(node.value.right)
                out.append(Mutant("transpose", x, "transpose", replaced(i, f"{dvar} = ({b}).T @ ({a}).T")))
        # alias without clone: the gradient it was copied from is changed by the later +=
        for i in idx:
            t = texts[i]
            if ".clone()" in t:
                victim = t.split("=", 1)[1].split(".clone()")[0].strip()[1:]
                zero = victim == "norm_logits"  # the += that follows adds the branch through logit_maxes, ~0
                out.append(Mutant("alias without clone", victim, "passes" if zero else "aliasing",
                                  replaced(i, t.replace(".clone()", "")), note="clone"))
        # duplicate index: the loop over Xb replaced by an indexed +=
        for i in idx:
            if isinstance(stmts[i][0], ast.For):
                out.append(Mutant("duplicate index", x, "duplicate_index", replaced(i, f"{dvar}[Xb] += demb")))
    return out


def all_mutants(ctx) -> list[Mutant]:
    shapes = {x: tuple(g.shape) for x, g in ctx.t32.grads.items()}
    return mutants(ctx.ex.read("solution.py"), ctx.judged, shapes)


def run_mutants(ctx, strict_shapes: bool = False):
    from ninjagrad.check.core import check_source

    rows = []
    for m in all_mutants(ctx):
        report = check_source(f"<mutant {m.op} d{m.target}>", m.source, ctx, strict_shapes=strict_shapes)
        by = {r["name"]: r for r in report["results"]}
        r = by[m.target]
        others_ok = all(o["verdict"] in ("exact", "rounding") for name, o in by.items() if name != m.target)
        if m.expect == "equivalent":
            caught = r["verdict"] in ("exact", "rounding")
        elif m.expect == "passes":
            caught = r["verdict"] in ("exact", "rounding") and m.note in (r["note"] or "")
        else:
            caught = r["verdict"] not in ("exact", "rounding") and r["diagnosis"] is not None \
                and r["diagnosis"]["kind"] == m.expect
        got = r["diagnosis"]["kind"] if r["diagnosis"] else r["verdict"]
        rows.append((m, caught and others_ok, got, others_ok))
    return rows


@pytest.fixture(scope="module")
def ctx():
    import torch

    from ninjagrad.check.core import prepare
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield prepare(1)
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_every_mutant_is_caught_with_the_right_kind(ctx):
    rows = run_mutants(ctx)
    assert len(rows) >= 50, "the suite should produce a mutant per applicable operator and gradient"
    missed = [f"{m.op} on d{m.target}: expected {m.expect}, got {got}{'' if ok else ' (others disturbed)'}"
              for m, hit, got, ok in rows if not hit]
    assert not missed, "\n".join(missed)
    ops = {m.op.split(" ")[0] for m, *_ in rows}
    assert {"sign", "factor", "drop", "wrong", "transpose", "alias", "duplicate"} <= ops


@pytest.mark.slow
def test_strict_shapes_fail_every_dropped_keepdim(ctx):
    rows = [(m, got) for m, hit, got, ok in run_mutants(ctx, strict_shapes=True) if m.op == "drop keepdim"]
    assert len(rows) >= 5 and all(got == "broadcast" for _, got in rows), rows


def test_mutants_right_only_by_accident_are_caught_by_probing(ctx):
    """Sign-flipped dlogit_maxes and db1, and dlogits without the logit_maxes branch: their values on the
    lecture's batch are within rounding of autograd's (the true gradients are ~0), their formulas are not."""
    from ninjagrad.check.core import check_source

    picked = [m for m in all_mutants(ctx) if (m.op, m.target) in
              {("sign", "logit_maxes"), ("sign", "b1"), ("drop branch", "logits")}]
    assert len(picked) == 3
    for m in picked:
        r = {r["name"]: r for r in check_source("<m>", m.source, ctx)["results"]}[m.target]
        assert r["verdict"] == "wrong" and r["diagnosis"]["kind"] == m.expect, (m.op, r)
        assert "right on this batch only" in r["diagnosis"]["message"]
        assert r["maxdiff"] < 1e-6  # within float32 rounding of autograd's value: a point check would pass it


def test_a_broken_checker_would_fail_this_suite(ctx):
    """Guard: the unmutated solution is all right, and one mutant really changes one gradient."""
    from ninjagrad.check.core import check_source

    source = ctx.ex.read("solution.py")
    assert check_source("<solution>", source, ctx)["summary"]["ok"]
    m = next(m for m in all_mutants(ctx) if m.op == "sign" and m.target == "hpreact")
    rep = check_source("<m>", m.source, ctx)
    bad = [r["name"] for r in rep["results"] if r["verdict"] not in ("exact", "rounding")]
    assert bad == ["hpreact"]


if __name__ == "__main__":
    import torch

    from ninjagrad.check.core import prepare
    torch.set_num_threads(1)
    rows = run_mutants(prepare(1))
    for m, hit, got, _ in rows:
        print(f"{'ok  ' if hit else 'MISS'} {m.op:32s} d{m.target:16s} expected {m.expect:16s} got {got}")
    caught = sum(hit for _, hit, _, _ in rows)
    print(f"mutation score: {caught}/{len(rows)} mutants judged as expected "
          f"({sum(m.expect == 'equivalent' for m, *_ in rows)} of them equivalent, reported as rounding; "
          f"{sum(m.expect == 'passes' for m, *_ in rows)} right with a note)")
