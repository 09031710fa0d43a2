"""Start-up: the commands that need no tensors never import torch (it costs seconds on a cold start)."""
import json
import subprocess
import sys

from ninjagrad import choices
from ninjagrad.engines import ENGINES
from ninjagrad.models import MODELS
from ninjagrad.optim import OPTIMIZERS

# Runs each command line in one fresh process and prints, for each, whether torch was imported by then.
PROBE = """
import contextlib, io, json, sys
from ninjagrad.cli import main
seen = []
for argv in json.loads(sys.argv[1]):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            main(argv)
        except SystemExit:
            pass
    seen.append("torch" in sys.modules)
print(json.dumps(seen))
"""


def torch_imported(*argvs) -> dict:
    r = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argvs)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return dict(zip(map(" ".join, argvs), json.loads(r.stdout)))


def test_help_version_errors_hints_and_templates_import_no_torch():
    seen = torch_imported(["--help"], ["--version"], ["train", "--help"], ["bench", "--help"], ["check", "--help"],
                          ["train", "--steps", "x"], ["train", "--engine", "turbo"], ["no-such-command"],
                          ["hint", "hpreact"], ["hint", "hpreact", "--level", "3"], ["explain", "batchnorm"],
                          ["exercise", "1"], ["exercise", "2", "--solution"],
                          ["train", "--steps", "0"])  # last, and the probe sees it: a flag the config checks
    needs_torch = seen.pop("train --steps 0")
    assert not any(seen.values()), [k for k, v in seen.items() if v]
    assert needs_torch


def test_exercise_list_imports_no_torch():
    assert torch_imported(["exercise", "--list"]) == {"exercise --list": False}


def test_the_cli_offers_every_registered_name():
    assert set(choices.MODELS) == set(MODELS)
    assert set(choices.ENGINES) == set(ENGINES)
    assert set(choices.OPTIMIZERS) == set(OPTIMIZERS)
