"""`ninjagrad check` end to end, as a user runs it: exit codes, JSON, one process per file with limits."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from ninjagrad.check.exercises import get_exercise
from ninjagrad.cli import main


def ninjagrad(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "ninjagrad", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("subs")
    sol = get_exercise(1).read("solution.py")
    (d / "good.py").write_text(sol)
    (d / "sign.py").write_text(sol.replace("dhpreact = (1.0 - h**2) * dh", "dhpreact = (h**2 - 1.0) * dh"))
    (d / "loop.py").write_text("# ninjagrad exercise 2\nwhile True:\n    pass\n")
    (d / "syntax.py").write_text("# ninjagrad exercise 2\ndlogits = (\n")
    (d / "crash.py").write_text("# ninjagrad exercise 2\nimport os\nos._exit(3)\n")
    (d / "latin1.py").write_bytes("# ninjagrad exercise 2\n# \xe9t\xe9\ndlogits = 0\n".encode("latin-1"))
    return d


@pytest.mark.slow
def test_one_wrong_file_table(files):
    """One file: the table, and exit status 1 when a gradient is wrong (0 when all are right: see below)."""
    p = ninjagrad("check", str(files / "sign.py"), "--exercise", "1")
    assert p.returncode == 1, p.stderr
    assert "dhpreact" in p.stdout and "sign" in p.stdout and "wrong" in p.stdout


@pytest.mark.slow
def test_several_files_each_isolated(files):
    """An infinite loop, a syntax error, a hard crash and an unreadable file are reported per file; the good
    file is still judged."""
    names = ["loop.py", "good.py", "syntax.py", "crash.py", "latin1.py"]
    p = ninjagrad("check", *[str(files / n) for n in names], "--json", "--timeout", "3", "--jobs", "2")
    lines = [json.loads(line) for line in p.stdout.splitlines()]
    assert [line["file"].rsplit("/", 1)[-1] for line in lines] == names
    loop, good, syntax, crash, latin1 = lines
    assert re.search(r"time limit of 3 s in line [23]\b", loop["error"]), loop
    assert good["exercise"] == 1 and good["summary"]["ok"] and len(good["results"]) == 26
    r = good["results"][0]
    assert set(r) >= {"name", "shape", "verdict", "maxdiff", "ulps", "diagnosis", "plain"}
    assert set(r["plain"]) == {"exact", "approximate", "maxdiff"}
    assert set(good["environment"]) >= {"torch", "device", "dtype"}
    (dlogits,) = syntax["results"]  # a line that does not parse is one error verdict
    assert dlogits["verdict"] == "error" and "syntax error" in dlogits["note"] and dlogits["line"] == 2
    assert latin1["exit"] == 2 and "latin1.py:2: not UTF-8" in latin1["error"]
    assert crash["stopped"]["status"] == 3 and not crash["summary"]["ok"]  # os._exit ended the learner's run
    assert crash["results"][0]["verdict"] == "tampering"
    assert p.returncode == 2  # the worst of the files: a usage error (unparsable file)


@pytest.mark.slow
def test_exit_0_when_all_right(files, capsys):
    assert main(["check", str(files / "good.py"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["summary"]["ok"]


def test_usage_errors_are_one_line(files, capsys, tmp_path):
    assert main(["check", str(files / "latin1.py")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "latin1.py:2: not UTF-8" in err
    assert main(["check", str(tmp_path / "absent.py")]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "plain.py").write_text("x = 1\n")
    assert main(["check", str(tmp_path / "plain.py")]) == 2
    err = capsys.readouterr().err
    assert "nothing to judge" in err and "--exercise" in err
    (tmp_path / "nb.ipynb").write_text("{not json")
    assert main(["check", str(tmp_path / "nb.ipynb")]) == 2
    assert "nb.ipynb:1: not a notebook" in capsys.readouterr().err
    assert main(["check", str(files / "good.py"), "--exercise", "99"]) == 2
    assert "no such exercise" in capsys.readouterr().err


def test_exercise_command(tmp_path, capsys):
    assert main(["exercise", "--list", "--json"]) == 0
    items = json.loads(capsys.readouterr().out)
    assert [it["id"] for it in items] == list(range(1, 10))
    assert len(items[0]["nodes"]) == 26 and items[1]["nodes"] == ["logits"] and items[2]["nodes"] == ["hprebn"]
    out = tmp_path / "ex1.py"
    assert main(["exercise", "1", "-o", str(out)]) == 0
    assert out.read_text().startswith("# ninjagrad exercise 1")
    assert main(["exercise", "1", "-o", str(out)]) == 2  # no silent overwrite
    assert main(["exercise", "3", "--solution"]) == 0
    assert "SPOILER" in capsys.readouterr().out


def test_hint_and_explain(capsys):
    assert main(["hint", "dbndiff2", "--level", "3"]) == 0
    assert "n-1" in capsys.readouterr().out
    assert main(["hint", "hpreact"]) == 0
    assert main(["explain", "batchnorm"]) == 0
    assert "n-1" in capsys.readouterr().out
    assert main(["explain", "cross_entropy"]) == 0
    assert main(["hint", "nonsense"]) == 2
