"""Notebooks and real cells, judged as learners write them (`ninjagrad check NOTEBOOK.ipynb`).

Each notebook here is built from learner-style cells (tests/learners/build.py): the lecture's layout,
then one variation at a time, the way real notebooks vary it: renamed variables and sizes, one
gradient per cell with markdown between, scratch cells, a second attempt further down, magics and
shell lines, a cell indented as a whole, an unfinished line, a compare helper of their own, exercise
4's loop under torch.no_grad().
"""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch

from ninjagrad.check.layout import notebook_layout
from ninjagrad.check.notebook import check_notebook
from ninjagrad.check.submission import read_submission

from .learners import build
from .learners.build import (
    BATCH,
    CMP,
    DATA,
    DATASET,
    EX1,
    EX3,
    EX3_FORWARD,
    EX4,
    FORWARD,
    IMPORTS,
    INIT,
    LECTURE,
    VOCAB,
)

OK = ("exact", "rounding")
SETUP = [("code", IMPORTS), ("code", DATA), ("code", VOCAB), ("code", DATASET), ("code", CMP), ("code", INIT),
         ("code", BATCH), ("code", FORWARD)]


@pytest.fixture(scope="module")
def words(tmp_path_factory):
    """A names.txt beside the notebooks: every fifth name of the default corpus (fast to split)."""
    from ninjagrad.data import load_babynames

    d = tmp_path_factory.mktemp("nb")
    (d / "names.txt").write_text("\n".join(load_babynames(2017)[::5]) + "\n", encoding="utf-8")
    return d


def run(words, name, cells, **kw) -> list[dict]:
    torch.set_num_threads(1)
    path = build.write(words / name, cells)
    return check_notebook(read_submission(str(path)), **kw)


def by_exercise(reports) -> dict:
    return {r["exercise"]: r for r in reports}


def verdicts(report) -> dict:
    return {r["name"]: r for r in report["results"]}


def test_the_lectures_layout_all_four_exercises(words):
    reps = by_exercise(run(words, "lecture.ipynb", LECTURE))
    assert sorted(reps) == [1, 2, 3, 4]
    for ex, rep in reps.items():
        assert rep["summary"]["ok"], (ex, [r for r in rep["results"] if r["verdict"] not in OK])
        assert "own" in rep["environment"]["forward"] or "loop" in rep["environment"]["forward"]
    one = reps[1]
    assert one["summary"]["total"] == 26 and one["cells"] == [10]
    # the lecture's own `dbnmeani = (-dbndiff).sum(0)`: (64,) for (1, 64) passes, with a note
    bnmeani = verdicts(one)["bnmeani"]
    assert bnmeani["verdict"] in OK and "keepdim" in bnmeani["note"]
    assert verdicts(one)["C"]["cell"] == 10 and verdicts(one)["C"]["line"] >= 30
    assert reps[2]["cells"] == [11, 12] and [r["name"] for r in reps[2]["results"]] == ["logits"]
    assert [r["name"] for r in reps[3]["results"]] == ["hprebn"]
    # exercise 4: one pass of the loop, with the learner's n_hidden = 200, every parameter judged
    four = verdicts(reps[4])
    assert {"C", "W1", "b1", "W2", "b2", "bngain", "bnbias"} <= set(four)
    assert four["W1"]["shape"] == [30, 200]


def test_the_learners_own_names_and_sizes(words):
    """A forward that calls h `a`, BATCH_SIZE for n, n_hidden 100, Y_batch; their own d-names."""
    rename = {r"\bbatch_size\b": "BATCH_SIZE", r"\bYb\b": "Y_batch", r"n_hidden = 64": "n_hidden = 100",
              r"\bh\b": "a", r"\bdh\b": "da", r"\bdlogit_maxes\b": "dlogits_maxes"}
    cells = []
    for kind, src in SETUP + [("code", EX1)]:
        for a, b in rename.items():
            src = re.sub(a, b, src)
        cells.append((kind, src))
    (rep,) = run(words, "renamed.ipynb", cells)
    v = verdicts(rep)
    assert rep["summary"]["ok"], [r for r in rep["results"] if r["verdict"] not in OK]
    assert "a" in v and "h" not in v and v["W1"]["shape"] == [30, 100]
    assert v["logit_maxes"]["dvar"] == "dlogits_maxes"  # learned from their own cmp call


def test_one_gradient_per_cell_with_markdown_scratch_and_a_second_attempt(words):
    lines = EX1.split("\n")[1:]
    cut = lines.index("dC = torch.zeros_like(C)")
    cells = list(SETUP) + [("markdown", "## Exercise 1\nOne gradient per cell, derivations in between.")]
    for ln in lines[:cut]:
        if ln.strip() and not ln.startswith("cmp("):
            cells += [("code", ln), ("markdown", "$$\\frac{\\partial L}{\\partial x}$$")]
    cells.append(("code", "\n".join(lines[cut:])))
    cells.append(("code", "# scratch: a toy graph of my own\na = torch.randn(3, requires_grad=True)\n"
                          "c = a.exp()\nloss = c.sum()\ndc = torch.ones(3)\nda = dc * c"))
    cells.append(("code", "# second attempt, better\ndprobs = probs**-1 * dlogprobs"))
    (rep,) = run(words, "percell.ipynb", cells)
    assert rep["summary"]["ok"] and rep["summary"]["total"] == 26
    assert verdicts(rep)["probs"]["cell"] == len(cells)  # judged at its last assignment, further down


def test_tolerant_reading_of_magics_indentation_and_an_unfinished_line(words):
    ex1 = EX1.replace("dC = torch.zeros_like(C)\nfor k", "%time dC = torch.zeros_like(C)\nfor k")
    indented = "\n".join("    " + ln for ln in ex1.split("\n"))  # a cell indented as a whole
    cells = [("code", IMPORTS + "\n!pip install -q torch\n%load_ext autoreload")] + SETUP[1:] + [
        ("code", indented), ("code", "torch.tanh?"), ("code", "%%bash\necho hi"), ("code", "dW1 =")]
    (rep,) = run(words, "tolerant.ipynb", cells)
    v = verdicts(rep)
    assert v["W1"]["verdict"] == "error" and "syntax error" in v["W1"]["note"]
    assert v["W1"]["cell"] == len(cells) and v["W1"]["line"] == 1
    assert sum(r["verdict"] in OK for r in rep["results"]) == 25


def test_a_compare_helper_of_their_own_is_silenced(words):
    helper = ("def compare_grad(label, mine, t):\n    diff = (mine - t.grad).abs().max().item()\n"
              "    print(label, diff)")
    ex1 = EX1.replace("cmp(", "compare_grad(")
    (rep,) = run(words, "helper.ipynb", SETUP + [("code", helper), ("code", ex1)])
    assert rep["summary"]["ok"] and rep["problems"] == []


def test_reading_autograds_answer_is_its_own_verdict(words):
    ex1 = EX1.replace("dhpreact = (1.0 - h**2) * dh", "dhpreact = hpreact.grad")
    (rep,) = run(words, "grad.ipynb", SETUP + [("code", ex1)])
    r = verdicts(rep)["hpreact"]
    assert r["verdict"] == "uses-autograd" and "hpreact.grad" in r["note"] and not rep["summary"]["ok"]


def test_exercise_4_under_no_grad_without_requires_grad(words):
    ex4 = EX4.replace("for p in parameters:\n    p.requires_grad = True\n", "")
    (rep,) = run(words, "ex4.ipynb", SETUP + [("code", ex4)])
    assert rep["exercise"] == 4 and rep["summary"]["ok"] and rep["summary"]["total"] >= 7


def test_exercise_4_mistake_is_found_in_the_loop(words):
    ex4 = EX4.replace("dW2 = h.T @ dlogits", "dW2 = h.T @ dlogits * 2")
    (rep,) = run(words, "ex4bad.ipynb", SETUP + [("code", ex4)])
    r = verdicts(rep)["W2"]
    assert r["verdict"] == "wrong" and r["diagnosis"]["kind"] == "scale" and r["cell"] == len(SETUP) + 1


def test_a_training_script_alone_is_exercise_4(words):
    """A .py file that is only a training loop with a hand-written backward (no forward of its own outside the
    loop, no exercise cells) is exercise 4, judged against the loop's own forward."""
    from ninjagrad.check.files import plan

    setup = "\n".join(s for s in (IMPORTS, DATA, VOCAB, DATASET)).replace("%matplotlib inline", "")
    setup = setup.replace("!wget -q https://example.invalid/names.txt\n", "")
    path = words / "train_by_hand.py"
    path.write_text(setup + "\n" + EX4.replace("max_steps = 200000", "max_steps = 3") + "\n", encoding="utf-8")
    pl = plan(str(path), None)
    assert pl.notebook and pl.exercise is None
    (rep,) = check_notebook(pl.submission)
    assert rep["exercise"] == 4 and rep["summary"]["ok"] and rep["summary"]["total"] >= 7


def test_untouched_exercises_are_reported_as_not_attempted(words):
    template = [("code", "# Exercise 2\nloss_fast = F.cross_entropy(logits, Yb)"),
                ("code", "dlogits = None # TODO. my solution is 3 lines\n#cmp('logits', dlogits, logits)")]
    reps = run(words, "todo.ipynb", SETUP + [("code", EX1)] + template)
    two = by_exercise(reps)[2]
    assert two["attempted"] is False and "not attempted" in two["summary"]["text"]


def test_when_the_notebooks_setup_cannot_run_the_lectures_forward_stands_in(words):
    setup = [("code", "import my_private_module\n" + IMPORTS)] + SETUP[1:]
    broken = [(k, s.replace("words = open('names.txt', 'r').read().splitlines()",
                            "words = my_private_module.load()")) for k, s in setup]
    (rep,) = run(words, "fallback.ipynb", broken + [("code", EX1)])
    env = rep["environment"]
    assert "the lecture's" in env["forward"] and "my_private_module" in env["forward"]
    assert rep["summary"]["total"] == 26


def test_names_txt_is_found_wherever_the_notebook_opened_it(words):
    data = DATA.replace("open('names.txt', 'r')", "open('/content/drive/MyDrive/makemore/names.txt', 'r')")
    cells = [SETUP[0], ("code", "from google.colab import drive\ndrive.mount('/content/drive')"),
             ("code", data)] + SETUP[2:] + [("code", EX1)]
    (rep,) = run(words, "drive.ipynb", cells)
    assert rep["summary"]["ok"] and "own" in rep["environment"]["forward"]


def test_layout_of_a_percent_script_and_a_main_guard(tmp_path):
    script = "\n".join(f"# %%\n{src}" for kind, src in LECTURE if kind == "code")
    (tmp_path / "nb.py").write_text(script)
    sub = read_submission(str(tmp_path / "nb.py"))
    assert sub.notebook and [f.exercise for f in notebook_layout(sub).found] == [1, 2, 3, 4]
    body = "\n".join(src for kind, src in LECTURE[1:10] if kind == "code").replace("%matplotlib inline", "")
    body = body.replace("!wget -q https://example.invalid/names.txt\n", "")
    guarded = "import torch\nif __name__ == '__main__':\n" + "\n".join("    " + ln for ln in body.split("\n"))
    (tmp_path / "main.py").write_text(guarded)
    lay = notebook_layout(read_submission(str(tmp_path / "main.py")))
    assert lay.loss is not None and [f.exercise for f in lay.found] == [1]


# --- the command line ----------------------------------------------------------------------------

def ninjagrad(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "ninjagrad", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


@pytest.mark.slow
def test_check_a_notebook_from_the_command_line(words):
    cells = LECTURE[:-3] + [("code", EX3_FORWARD), ("code", EX3.replace("n/(n-1)", "1"))]
    path = build.write(words / "cli.ipynb", cells)
    p = ninjagrad("check", str(path), "--json", cwd=words)
    assert p.returncode == 1, p.stderr
    reps = [json.loads(line) for line in p.stdout.splitlines()]
    assert [r["exercise"] for r in reps] == [1, 2, 3]
    assert all(set(r) >= {"file", "exercise", "cells", "results", "summary", "environment"} for r in reps)
    assert reps[0]["summary"]["ok"] and not reps[2]["summary"]["ok"]
    p = ninjagrad("check", str(path), cwd=words)
    assert "exercise 3, cells 13-14" in p.stdout and "(cell 14, line 1)" in p.stdout.replace("\n", " ")


@pytest.mark.slow
def test_the_example_notebook_runs_in_jupyter_with_the_magic():
    """examples/notebook/backprop_ninja.ipynb executed by a real kernel (nbclient): every %%ninjagrad cell
    shows its table as HTML, the planted Bessel mistake is named, every other cell's gradients are right."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "notebook" / "backprop_ninja.ipynb"
    nb = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(nb, timeout=180, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}}).execute()
    tables = []
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.source.startswith("%%ninjagrad"):
            html = [o for o in cell.outputs if o.output_type == "execute_result" and "text/html" in o.data]
            assert len(html) == 1, cell.source
            tables.append(html[0].data["text/plain"])
    assert len(tables) == 7
    wrong = [t for t in tables if "not there yet" in t]
    assert len(wrong) == 1 and "Bessel" in wrong[0] and "dbndiff2" in wrong[0]
    assert sum("every gradient is right" in t for t in tables) == 6


@pytest.mark.slow
def test_the_example_notebook_from_the_command_line(tmp_path):
    """`ninjagrad check` on the example notebook, as saved: its own forward on the default corpus (no names.txt
    beside it), every exercise right (the planted Bessel mistake is put right further down), in the sandbox."""
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "examples" / "notebook" / "backprop_ninja.ipynb"
    (tmp_path / "nb.ipynb").write_bytes(src.read_bytes())
    p = ninjagrad("check", str(tmp_path / "nb.ipynb"), "--json", cwd=tmp_path)
    reps = [json.loads(line) for line in p.stdout.splitlines()]
    assert p.returncode == 0, (p.stderr, [r["summary"]["text"] for r in reps])
    assert [r["exercise"] for r in reps] == [1, 2, 3]
    assert all("own" in r["environment"]["forward"] for r in reps)
    assert "stopped" not in reps[0]
