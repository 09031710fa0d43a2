"""The checker on learner files, in process: every correct form passes, each kind of bad file gets its result."""
from __future__ import annotations

import pytest
import torch

from ninjagrad.check.core import check_source, prepare
from ninjagrad.check.runner import parse_learner
from ninjagrad.check.statements import writes_of

LOOP = """dC = torch.zeros_like(C)
for k in range(Xb.shape[0]):
    for j in range(Xb.shape[1]):
        ix = Xb[k, j]
        dC[ix] += demb[k, j]"""


@pytest.fixture(scope="module")
def ctx1():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is fastest and kind to a shared machine
    yield prepare(1)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def solution(ctx1):
    return ctx1.ex.read("solution.py")


def by_name(report):
    return {r["name"]: r for r in report["results"]}


def test_solution_is_right_and_every_node_judged(ctx1, solution):
    rep = check_source("sol.py", solution, ctx1)
    assert rep["summary"]["ok"] and rep["summary"]["total"] == 26
    assert set(by_name(rep)) == {"logprobs", "probs", "counts_sum_inv", "counts_sum", "counts", "norm_logits",
                                 "logit_maxes", "logits", "h", "W2", "b2", "hpreact", "bngain", "bnbias", "bnraw",
                                 "bnvar_inv", "bnvar", "bndiff2", "bndiff", "bnmeani", "hprebn", "embcat", "W1",
                                 "b1", "emb", "C"}
    env = rep["environment"]
    assert env["dtype"] == "float32" and env["torch"] == torch.__version__ and env["device"] == "cpu"


@pytest.mark.parametrize("form", [
    "dC = torch.zeros_like(C)\ndC.index_add_(0, Xb.view(-1), demb.view(-1, n_embd))",
    "dC = F.one_hot(Xb.view(-1), num_classes=vocab_size).float().T @ demb.view(-1, n_embd)",
    "dC = torch.einsum('btv,bte->ve', F.one_hot(Xb, vocab_size).float(), demb)",
    "dC = torch.zeros_like(C)\ndC.index_add_(0, Xb.flatten(), demb.flatten(0, 1))",
])
def test_every_correct_form_of_dC_passes(ctx1, solution, form):
    rep = check_source("alt.py", solution.replace(LOOP, form), ctx1)
    r = by_name(rep)["C"]
    assert r["verdict"] in ("exact", "rounding"), r
    assert rep["summary"]["ok"]


@pytest.mark.parametrize("old,new", [
    ("dprobs = (1.0 / probs) * dlogprobs", "dprobs = probs**-1 * dlogprobs"),
    ("dcounts_sum = (-counts_sum**-2) * dcounts_sum_inv", "dcounts_sum = -1.0 / counts_sum**2 * dcounts_sum_inv"),
    ("db1 = dhprebn.sum(0)", "db1 = dhprebn.sum(0, keepdim=True).flatten()"),
    ("db2 = dlogits.sum(0)", "db2 = dlogits.sum(0, keepdim=True).view(-1)"),
    ("dhpreact = (1.0 - h**2) * dh", "dhpreact = (1.0 - torch.tanh(hpreact)**2) * dh"),
    ("dhpreact = (1.0 - h**2) * dh", "dhpreact = (1.0 - h**2).float() * dh"),  # .float() must not pin float32
    ("dprobs = (1.0 / probs) * dlogprobs", "dprobs = dlogprobs.div(probs.to(torch.float32))"),
])
def test_equivalent_spellings_pass(ctx1, solution, old, new):
    assert old in solution
    rep = check_source("alt.py", solution.replace(old, new), ctx1)
    assert rep["summary"]["ok"], [r for r in rep["results"] if r["verdict"] not in ("exact", "rounding")]


@pytest.mark.parametrize("old,new", [
    ("dlogit_maxes = (-dnorm_logits).sum(1, keepdim=True)", "dlogit_maxes = (dnorm_logits).sum(1, keepdim=True)"),
    ("dlogit_maxes = (-dnorm_logits).sum(1, keepdim=True)", "dlogit_maxes = (-2 * dnorm_logits).sum(1, keepdim=True)"),
    ("db1 = dhprebn.sum(0)", "db1 = -dhprebn.sum(0)"),
])
def test_right_by_accident_is_wrong(ctx1, solution, old, new):
    """Formulas whose value on this batch is within rounding of autograd's (the true gradient is ~0)
    but which do not map the upstream gradient as backprop does: probing with random upstream
    gradients finds them."""
    name = old.split(" = ")[0][1:]
    r = by_name(check_source("a.py", solution.replace(old, new), ctx1))[name]
    assert r["verdict"] == "wrong" and "right on this batch only" in r["diagnosis"]["message"], r
    assert r["maxdiff"] < 1e-6


@pytest.mark.parametrize("old,new", [
    ("dlogit_maxes = (-dnorm_logits).sum(1, keepdim=True)", "dlogit_maxes = torch.zeros_like(logit_maxes)"),
    ("dC = torch.zeros_like(C)", "demb = (dhprebn @ W1.T).view(emb.shape)\ndC = torch.zeros_like(C)"),
    ("dlogits = dnorm_logits.clone()", "dlogits = F.softmax(logits, 1)\ndlogits[range(n), Yb] -= 1\ndlogits /= n\n"
                                       "dlogits = dlogits.clone()"),
])
def test_probing_leaves_right_formulas_alone(ctx1, solution, old, new):
    """A zero that is exactly the gradient, a step computed from a gradient further up (demb from
    dhprebn), a fused dlogits in exercise 1: right formulas that do not read their consumers'
    gradients are judged on their values, not probed."""
    src = solution.replace(old, new)
    if "softmax" in new:
        src = src.replace("dlogits += F.one_hot(logits.max(1).indices, num_classes=logits.shape[1]) * dlogit_maxes", "")
    rep = check_source("a.py", src, ctx1)
    assert rep["summary"]["ok"], [r for r in rep["results"] if r["verdict"] not in ("exact", "rounding")]


def test_probing_passes_every_solution_and_spelling(ctx1, solution):
    """No right formula is failed by probing: the solutions of exercises 1-3 and 5-9 pass it."""
    for number in (1, 2, 3, 5, 6, 7, 8, 9):
        ctx = prepare(number)
        rep = check_source("s.py", ctx.ex.read("solution.py"), ctx)
        assert rep["summary"]["ok"], (number, [r for r in rep["results"] if r["verdict"] not in ("exact", "rounding")])


def test_a_pasted_notebook_with_the_lectures_cmp(ctx1, solution):
    """Notebook code defines and calls the lecture's cmp, which reads t.grad: it must not get in the way."""
    cmp_def = ("def cmp(s, dt, t):\n    ex = torch.all(dt == t.grad).item()\n"
               "    print(f'{s:15s} | exact: {str(ex):5s}')\n")
    rep = check_source("nb.py", cmp_def + solution + "\ncmp('logprobs', dlogprobs, logprobs)\n", ctx1)
    assert rep["summary"]["ok"] and rep["problems"] == []


def test_template_is_all_missing(ctx1):
    rep = check_source("t.py", ctx1.ex.read("template.py"), ctx1)
    assert rep["summary"]["missing"] == 26 and not rep["summary"]["ok"]


def test_a_raising_line_is_an_error_and_judging_goes_on(ctx1, solution):
    src = solution.replace("dh = dlogits @ W2.T", "dh = dlogits @ W2")  # (32, 27) @ (64, 27): raises
    rep = check_source("e.py", src, ctx1)
    r = by_name(rep)
    assert r["h"]["verdict"] == "error" and "RuntimeError" in r["h"]["note"] and "line" not in r["h"]["note"]
    lineno = src.splitlines().index("dh = dlogits @ W2  # (B, H)") + 1
    assert r["h"]["line"] == lineno
    # teacher forcing replaced dh by autograd's value: everything below is still judged right
    assert all(r[x]["verdict"] in ("exact", "rounding") for x in ("hpreact", "W1", "C"))


def test_missing_variable_and_non_tensor_and_dtype(ctx1, solution):
    line = "dbnvar = (-0.5*(bnvar + 1e-5)**-1.5) * dbnvar_inv"
    src = solution.replace(line, line + "\ndbnvar = dbnvar.double()")
    src = src.replace("db2 = dlogits.sum(0)", "db2 = dlogits.sum(0).tolist()")
    src = src.replace("dbnraw = bngain * dhpreact", "")
    r = by_name(check_source("d.py", src, ctx1))
    assert r["bnvar"]["verdict"] == "wrong" and "dtype" in r["bnvar"]["diagnosis"]["message"]
    assert r["b2"]["verdict"] == "wrong" and "list" in r["b2"]["diagnosis"]["message"]
    assert r["bnraw"]["verdict"] == "missing"
    assert r["bndiff"]["verdict"] == "error" and "dbnraw" in r["bndiff"]["note"]  # the NameError downstream


def test_plain_run_shows_the_cascade(ctx1, solution):
    """One wrong gradient upstream makes the notebook's cmp print exact False all the way down."""
    src = solution.replace("dprobs = (1.0 / probs) * dlogprobs", "dprobs = (2.0 / probs) * dlogprobs")
    r = by_name(check_source("p.py", src, ctx1))
    assert r["probs"]["verdict"] == "wrong" and r["probs"]["diagnosis"]["kind"] == "scale"
    assert r["W1"]["verdict"] in ("exact", "rounding")  # judged with teacher forcing
    assert r["W1"]["plain"]["exact"] is False and r["W1"]["plain"]["approximate"] is False  # the notebook's view


def test_keepdim_shape_that_broadcasts_alike_passes_with_a_note(ctx1, solution):
    """The lecture's own `dbnmeani = (-dbndiff).sum(0)`: (64,) for a (1, 64) tensor, right values."""
    src = solution.replace("dbnmeani = (-dbndiff).sum(0, keepdim=True)", "dbnmeani = (-dbndiff).sum(0)")
    r = by_name(check_source("k.py", src, ctx1))["bnmeani"]
    assert r["verdict"] in ("exact", "rounding") and "keepdim" in r["note"] and "(64,)" in r["note"]
    assert r["plain"]["approximate"] is True  # the lecture's cmp would have said approximate: True
    strict = by_name(check_source("k.py", src, ctx1, strict_shapes=True))["bnmeani"]
    assert strict["verdict"] == "shape" and strict["diagnosis"]["kind"] == "broadcast"


def test_a_shape_that_only_broadcasts_to_the_batch_is_named(ctx1, solution):
    """`dbndiff2 = 1/(n-1)*dbnvar`: right values, but (1, H) where bndiff2 is (B, H): it passes with a note
    that names the missing broadcast; strict shapes fail it with that diagnosis, not "wrong axis"."""
    old = "dbndiff2 = (1.0/(n-1))*torch.ones_like(bndiff2) * dbnvar"
    src = solution.replace(old, "dbndiff2 = 1/(n-1)*dbnvar")
    r = by_name(check_source("b.py", src, ctx1))["bndiff2"]
    assert r["verdict"] in ("exact", "rounding") and "broadcast to bndiff2's shape" in r["note"]
    r = by_name(check_source("b.py", src, ctx1, strict_shapes=True))["bndiff2"]
    assert r["verdict"] == "shape" and r["diagnosis"]["kind"] == "broadcast"
    msg = r["diagnosis"]["message"]
    assert "broadcast to bndiff2's shape is missing" in msg and "right" in msg and "wrong axis" not in msg


@pytest.mark.parametrize("old,new,verdict", [
    ("db2 = dlogits.sum(0)", "db2 = dlogits.sum(0, keepdim=True)", "pass"),  # (1, 27) for (27,): cmp says exact
    ("dcounts_sum_inv = (counts * dprobs).sum(1, keepdim=True)", "dcounts_sum_inv = (counts * dprobs).sum(1)",
     "shape"),  # (32,) for (32, 1): broadcasts to (32, 32) against it
    ("dlogit_maxes = (-dnorm_logits).sum(1, keepdim=True)", "dlogit_maxes = -dnorm_logits", "shape"),  # not summed
])
def test_which_shapes_pass_on_their_values(ctx1, solution, old, new, verdict):
    assert old in solution
    name = old.split(" = ")[0][1:]
    r = by_name(check_source("s.py", solution.replace(old, new), ctx1))[name]
    if verdict == "pass":
        assert r["verdict"] in ("exact", "rounding") and "keepdim" in r["note"]
    else:
        assert r["verdict"] == "shape" and r["diagnosis"]["kind"] == "broadcast"


def test_tanh_platform_note(ctx1, solution):
    """When autograd's tanh kernel differs from (1 - h**2) * dh, the natural formula is named as such."""
    r = by_name(check_source("s.py", solution, ctx1))["hpreact"]
    if r["verdict"] == "exact":
        pytest.skip("on this platform autograd's tanh backward equals (1 - h**2) * dh bit for bit")
    assert r["verdict"] == "rounding" and "tanh" in r["note"] and r["ulps"] > 0
    assert "hpreact" in check_source("s.py", solution, ctx1)["environment"]["solution_not_exact"]


def test_writes_of_sees_every_way_to_change_a_variable():
    prog = parse_learner("w.py", "a = 1\nb += 2\nc[0] = 3\nd.index_add_(0, i, x)\n"
                                 "for k in r:\n    e[k] += 1\nf.g = 2\n")
    assert [writes_of(u.node) for u in prog.units] == [{"a"}, {"b"}, {"c"}, {"d"}, {"k", "e"}, {"f"}]


def test_a_line_that_does_not_parse_is_one_error_and_the_rest_is_judged(ctx1, solution):
    """An unfinished last line (`dC =`) after every other gradient: one error, 25 judged."""
    src = solution[: solution.index("dC = torch.zeros_like(C)")] + "dC =\n"
    rep = check_source("u.py", src, ctx1)
    r = by_name(rep)
    assert r["C"]["verdict"] == "error" and "syntax error" in r["C"]["note"]
    assert r["C"]["line"] == src.count("\n")
    assert sum(x["verdict"] in ("exact", "rounding") for x in rep["results"]) == 25


# --- exercise 4: a backward(...) function -------------------------------------------------------

@pytest.fixture(scope="module")
def ctx4():
    return prepare(4)


def test_function_solution_and_wrong_return_type(ctx4):
    sol = ctx4.ex.read("solution.py")
    assert check_source("s4.py", sol, ctx4)["summary"]["ok"]
    as_list = sol.replace('return {"C": dC, "W1": dW1, "b1": db1, "W2": dW2, "b2": db2, "bngain": dbngain, '
                          '"bnbias": dbnbias}', "return [dC, dW1, db1, dW2, db2, dbngain, dbnbias]")
    assert as_list != sol and check_source("l.py", as_list, ctx4)["summary"]["ok"]
    bad = sol.replace('return {"C": dC', 'return 3\n    return {"C": dC')
    rep = check_source("b.py", bad, ctx4)
    assert all(r["verdict"] == "error" and "returned a int" in r["note"] for r in rep["results"])


def test_function_diagnosis(ctx4):
    sol = ctx4.ex.read("solution.py")
    bad = sol.replace("dW2 = h.T @ dlogits", "dW2 = -(h.T @ dlogits)")
    r = by_name(check_source("b.py", bad, ctx4))
    assert r["W2"]["verdict"] == "wrong" and r["W2"]["diagnosis"]["kind"] == "sign"
    assert r["C"]["verdict"] in ("exact", "rounding")
