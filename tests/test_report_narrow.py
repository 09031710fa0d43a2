"""The report in a narrow terminal: diagnoses must stay readable at 80 columns (they go below the table)."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from rich.console import Console

from ninjagrad.check.core import check_source, prepare
from ninjagrad.check.report import NOTES_BELOW, render


@pytest.fixture(scope="module")
def report():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    ctx = prepare(9)
    source = ctx.ex.read("solution.py").replace("dinner = (1 - t**2) * dt", "dinner = (t**2 - 1) * dt")
    rep = check_source("buggy.py", source, ctx)
    torch.set_num_threads(threads)
    return rep


def rendered(report, width):
    console = Console(width=width, record=True, color_system=None, force_terminal=False)
    render(report, console)
    return console.export_text()


def flat(text):
    return re.sub(r"\s+", " ", text)


def test_at_80_columns_every_diagnosis_is_printed_whole(report):
    (bad,) = [r for r in report["results"] if r["verdict"] == "wrong"]
    message = bad["diagnosis"]["message"]
    text = rendered(report, 80)
    assert all(len(line) <= 80 for line in text.splitlines())
    header = [line for line in text.splitlines() if "gradient" in line][0]
    assert header.count("┃") == 7  # six columns: no note column squeezed to nothing
    assert f"dinner wrong (line {bad['line']}): sign: {message}" in flat(text)
    assert re.search(r"wrong \[1\]", text)  # the row points at its note
    # the rows are still there, one per gradient, with their verdicts
    for r in report["results"]:
        assert re.search(rf"d{r['name']}\s.*{r['verdict']}", text), r["name"]


def test_wide_terminals_keep_the_note_column(report):
    text = rendered(report, NOTES_BELOW + 20)
    header = [line for line in text.splitlines() if "gradient" in line][0]
    assert header.count("┃") == 8 and "note" in header and "[1]" not in text
    assert "wrong sign" in flat(text)


def test_notes_for_rounding_and_missing_are_listed_too(report):
    text = rendered({**report, "results": report["results"] + [
        {"name": "extra", "shape": [2], "verdict": "missing", "maxdiff": None, "ulps": None, "diagnosis": None,
         "note": "dextra is never assigned [sic]", "line": None, "plain": None}]}, 80)
    assert "dextra missing: dextra is never assigned [sic]" in flat(text)  # markup in notes is escaped


@pytest.mark.slow
def test_cli_at_80_columns(tmp_path):
    """As a user sees it: COLUMNS=80 ninjagrad check FILE on a buggy copy of exercise 2's solution."""
    from ninjagrad.check.exercises import get_exercise

    f = tmp_path / "ex2.py"
    f.write_text(get_exercise(2).read("solution.py").replace("dlogits /= n", "dlogits /= 1"))
    env = {**os.environ, "COLUMNS": "80"}
    p = subprocess.run([sys.executable, "-m", "ninjagrad", "check", str(f)], capture_output=True, text=True,
                       env=env, timeout=240)
    assert p.returncode == 1, p.stderr
    assert all(len(line) <= 80 for line in p.stdout.splitlines())
    assert "dlogits wrong" in p.stdout and "n = 32 times too large" in flat(p.stdout)
