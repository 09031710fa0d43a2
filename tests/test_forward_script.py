"""`ninjagrad check BACKWARD.py --forward FORWARD.py`: any straight-line forward script is an exercise.

The example pair under examples/forward_script passes; mistakes in it are judged and named as for the
built-in exercises; bad forward scripts get one line naming the file (and line) and exit status 2.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ninjagrad.check.core import check_file, check_source, prepare_forward
from ninjagrad.cli import main
from ninjagrad.errors import UsageError

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "forward_script"
FORWARD, BACKWARD = str(EXAMPLE / "forward.py"), str(EXAMPLE / "backward.py")
NODES = ["logits", "h", "W2", "sig", "hpre", "b1", "W1"]  # every node, in backward order

SETUP = "x = param(torch.randn(4, 3))\nY = data(torch.randint(0, 3, (4,)))\n"


def test_the_example_passes_and_every_node_is_judged():
    rep = check_file(BACKWARD, forward=FORWARD)
    assert rep["summary"]["ok"], rep["results"]
    assert [r["name"] for r in rep["results"]] == NODES  # params and intermediates, data (x, Y) not
    assert rep["exercise"] is None and rep["forward"] == FORWARD
    assert "setup section" in rep["environment"]["data"]


def test_the_setup_gives_float32_params_and_the_same_values_in_float64():
    ctx = prepare_forward(FORWARD)
    assert set(ctx.setup.params) == {"W1", "b1", "W2"}
    for k, v in ctx.setup.params.items():
        assert v.dtype == torch.float32
        assert torch.equal(ctx.t64.namespace[k], v.double())  # the float64 trace starts from the same numbers
    assert ctx.t64.namespace["x"].dtype == torch.float64 and ctx.t32.namespace["x"].dtype == torch.float32
    assert ctx.t32.namespace["Y"].dtype == torch.int64
    assert ctx.setup.n == 16  # the setup's n names factors in diagnoses
    # the reference gradients are autograd's: dW1 from a fresh float64 run of the same forward
    ns = {k: v.clone() for k, v in ctx.t64.namespace.items() if torch.is_tensor(v)}
    W1 = ns["W1"].requires_grad_(True)
    h = (ns["x"] @ W1 + ns["b1"]) * torch.sigmoid(ns["x"] @ W1 + ns["b1"])
    torch.nn.functional.cross_entropy(h @ ns["W2"], ns["Y"]).backward()
    assert (W1.grad - ctx.t64.grads["W1"]).abs().max().item() < 1e-12


def test_the_seed_draws_the_setup():
    a, b, c = prepare_forward(FORWARD, 1), prepare_forward(FORWARD, 1), prepare_forward(FORWARD, 2)
    assert torch.equal(a.setup.params["W1"], b.setup.params["W1"])
    assert not torch.equal(a.setup.params["W1"], c.setup.params["W1"])


def test_mistakes_are_named_as_for_the_exercises():
    ctx = prepare_forward(FORWARD)
    source = Path(BACKWARD).read_text()
    cases = [
        ("dhpre += sig * (1 - sig) * dsig", "pass", "hpre", "missing_branch"),
        ("dsig = hpre * dh", "dsig = -hpre * dh", "sig", "sign"),
        ("db1 = dhpre.sum(0)", "db1 = dhpre", "b1", "broadcast"),
        ("dW2 = h.T @ dlogits", "dW2 = dlogits.T @ h", "W2", "transpose"),
        ("/ n  #", "#", "logits", "scale"),
    ]
    for old, new, target, kind in cases:
        assert source.count(old) == 1, old
        rep = check_source("b.py", source.replace(old, new), ctx)
        by = {r["name"]: r for r in rep["results"]}
        assert by[target]["verdict"] in ("wrong", "shape") and by[target]["diagnosis"]["kind"] == kind, by[target]
        assert all(r["verdict"] in ("exact", "rounding") for name, r in by.items() if name != target)


def test_the_template_for_a_forward_lists_every_node(tmp_path, capsys):
    out = tmp_path / "mine.py"
    assert main(["exercise", "--forward", FORWARD, "-o", str(out)]) == 0
    text = out.read_text()
    assert [line.split(" = ")[0] for line in text.splitlines() if line.startswith("d")] == ["d" + x for x in NODES]
    rep = check_file(str(out), forward=FORWARD)
    assert rep["summary"]["missing"] == rep["summary"]["total"] == len(NODES)


BAD = {
    "syntax.py": (SETUP + "h = torch.tanh(x\nloss = h.sum()\n", "syntax.py:3: syntax error"),
    "noloss.py": (SETUP + "h = torch.tanh(x)\nout = F.cross_entropy(h, Y)\n", "scalar `loss` (it never assigns it)"),
    "vector.py": (SETUP + "h = torch.tanh(x)\nloss = h * 2\n", "scalar `loss` (it has shape (4, 3)"),
    "detach.py": (SETUP + "h = torch.tanh(x).detach()\nloss = F.cross_entropy(h, Y)\n",
                  "detach.py:3: `h` is cut off"),
    "item.py": (SETUP + "s = x.sum().item()\nloss = F.cross_entropy(x * s, Y)\n",
                "item.py:3: `s` is a Python float"),
    "round.py": (SETUP + "h = torch.round(x * 3)\nloss = F.cross_entropy(h, Y)\n",
                 "round.py:3: `h` goes through round()"),
    "inplace.py": (SETUP + "h = x.mul_(2)\nloss = F.cross_entropy(h, Y)\n", "inplace.py:3: `.mul_(...)` changes"),
    "loop.py": (SETUP + "for i in range(2):\n    x = x * 2\nloss = x.sum()\n",
                "loop.py:3: a forward script is straight-line"),
    "raises.py": (SETUP + "h = torch.tanh(xx)\nloss = h.sum()\n", "raises.py:3: the forward raised NameError"),
    "tuple.py": (SETUP + "parts = x.split(1, 1)\nloss = parts[0].sum()\n", "tuple.py:3: `parts` is a tuple"),
    "unmarked.py": ("z = torch.randn(4, 3)\nx = param(z * 2)\nloss = x.sum()\n",
                    "unmarked.py:1: `z` is a tensor the setup does not mark"),
    "random.py": (SETUP + "z = torch.randn(4, 3)\nloss = (x * z).sum()\n",
                  "random.py:3: `z` depends on no parameter"),
    "noparam.py": ("x = data(torch.randn(4, 3))\nloss = torch.tanh(x).sum()\n",
                   "noparam.py: the setup marks no parameter"),
    "nosetup.py": ("h = torch.tanh(x)\nloss = h.sum()\n", "nosetup.py: the forward reads inputs nobody creates"),
    "intparam.py": ("x = param(torch.arange(4))\nloss = x.sum()\n", "param(...) needs a floating-point tensor"),
    "setupraises.py": ("x = param(torch.randn(4, 3) @ torch.randn(4, 3))\nloss = x.sum()\n",
                       "setupraises.py:1: the setup section raised RuntimeError"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_forward_scripts_get_one_clear_line(name, tmp_path, monkeypatch):
    source, expect = BAD[name]
    monkeypatch.chdir(tmp_path)  # messages name the file as given
    Path(name).write_text(source)
    Path("b.py").write_text("dx = x\n")
    with pytest.raises(UsageError) as e:
        check_file("b.py", forward=name)
    msg = str(e.value)
    assert expect in msg and "\n" not in msg, msg


def test_unreadable_forward(tmp_path):
    (tmp_path / "b.py").write_text("dx = x\n")
    with pytest.raises(UsageError, match="no such file"):
        check_file(str(tmp_path / "b.py"), forward=str(tmp_path / "absent.py"))
    with pytest.raises(UsageError, match="is a directory"):
        check_file(str(tmp_path / "b.py"), forward=str(tmp_path))
    (tmp_path / "latin1.py").write_bytes(b"x = param(torch.randn(3))\n# caf\xe9\nloss = x.sum()\n")
    with pytest.raises(UsageError, match="latin1.py:2: not UTF-8"):
        check_file(str(tmp_path / "b.py"), forward=str(tmp_path / "latin1.py"))


@pytest.mark.slow
def test_cli_end_to_end(tmp_path, capsys):
    """Through the worker process, as a user runs it: 0 when right, 1 with a diagnosis, 2 for a bad forward."""
    assert main(["check", BACKWARD, "--forward", FORWARD, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["summary"]["ok"]
    wrong = tmp_path / "wrong.py"
    wrong.write_text(Path(BACKWARD).read_text().replace("dsig = hpre * dh", "dsig = -hpre * dh"))
    assert main(["check", str(wrong), "--forward", FORWARD]) == 1
    assert "sign" in capsys.readouterr().out
    bad = tmp_path / "vector.py"
    bad.write_text(BAD["vector.py"][0])
    assert main(["check", BACKWARD, "--forward", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "vector.py: the forward must end by computing a scalar `loss`" in err
    assert main(["check", BACKWARD, "--forward", FORWARD, "--exercise", "1"]) == 2
    assert "give one of them" in capsys.readouterr().err


def test_help_documents_the_convention(capsys):
    with pytest.raises(SystemExit):
        main(["check", "--help"])
    out = capsys.readouterr().out
    assert "--forward" in out and "param(...)" in out and "data(...)" in out and "scalar `loss`" in out
