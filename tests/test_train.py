"""The run folder, checkpoints, resume after a kill, and the errors people meet."""
import contextlib
import io
import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from ninjagrad.checkpoint import load_checkpoint
from ninjagrad.cli import main
from ninjagrad.errors import UsageError


def cli(*args):
    """Run the CLI in this process (a subprocess per call would spend seconds importing torch)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def small_run_args(words, out, steps=600, **extra):
    args = ["train", "--data", words, "--steps", steps, "--n-hidden", 32, "--out", out, "--no-progress",
            "--samples", 5, "--device", "cpu", "--engine", "manual"]  # the default (fast) would end before a kill
    for k, v in extra.items():
        args += [f"--{k.replace('_', '-')}", v]
    return args


def test_run_folder(small_words, tmp_path):
    out = tmp_path / "run"
    r = cli(*small_run_args(small_words, out, eval_every=200))
    assert r.returncode == 0, r.stderr
    for name in ("config.json", "summary.json", "metrics.csv", "evals.csv", "loss.png", "samples.txt", "checkpoint.pt"):
        assert (out / name).exists(), name
    summary = json.loads((out / "summary.json").read_text())
    for key in ("train_loss", "val_loss", "test_loss", "steps", "train_seconds", "engine"):
        assert key in summary
    assert summary["steps"] == 600 and summary["engine"] == "manual" and 0 < summary["train_seconds"]
    assert 1.5 < summary["val_loss"] < 3.3
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0] == "step,loss,lr" and len(rows) == 601
    assert rows[1].endswith(",0.1") and rows[-1].endswith(",0.01")  # the lecture's decay at half-way
    assert len((out / "samples.txt").read_text().splitlines()) == 5
    payload = torch.load(out / "checkpoint.pt", weights_only=True)
    assert payload["step"] == 600 and set(payload["state"]["params"]) >= {"C", "W1", "W2", "bngain"}
    r = cli("sample", out, "-n", 7)
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 7
    assert cli("sample", out, "-n", 7).stdout == r.stdout  # seeded


def test_same_seed_same_run(small_words, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert cli(*small_run_args(small_words, a, steps=200)).returncode == 0
    assert cli(*small_run_args(small_words, b, steps=200)).returncode == 0
    pa, pb = (load_checkpoint(p)["state"]["params"] for p in (a, b))
    assert all(torch.equal(pa[k], pb[k]) for k in pa)


def wait_for_step(out, step, proc, limit=60):
    deadline = time.time() + limit
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"training ended early: {proc.stderr.read()}")
        try:
            if load_checkpoint(out)["step"] >= step:
                return
        except UsageError:
            pass  # not written yet
        time.sleep(0.05)
    pytest.fail("no checkpoint appeared")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_resume_after_kill_equals_uninterrupted(small_words, tmp_path, sig):
    steps = 3000
    ref = tmp_path / "ref"
    assert cli(*small_run_args(small_words, ref, steps=steps, checkpoint_every=250)).returncode == 0

    out = tmp_path / "killed"
    args = [sys.executable, "-m", "ninjagrad", *map(str, small_run_args(small_words, out, steps=steps,
                                                                         checkpoint_every=250))]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_step(out, 750, proc)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    stopped_at = load_checkpoint(out)["step"]
    assert 750 <= stopped_at < steps, "the run must be stopped mid-way"
    if sig == signal.SIGTERM:
        assert proc.returncode == 128 + signal.SIGTERM
        assert "--resume" in proc.stdout.read()
    r = cli("train", "--resume", out, "--no-progress")
    assert r.returncode == 0, r.stderr
    a, b = load_checkpoint(ref), load_checkpoint(out)
    assert b["step"] == steps
    for k in a["state"]["params"]:
        assert torch.equal(a["state"]["params"][k], b["state"]["params"][k]), k
    assert torch.equal(a["losses"], b["losses"])
    assert (out / "metrics.csv").read_text() == (ref / "metrics.csv").read_text()


def test_nan_stops_and_keeps_last_good_checkpoint(small_words, tmp_path):
    out = tmp_path / "nan"
    r = cli(*small_run_args(small_words, out, steps=200, lr=1e20, checkpoint_every=1))
    assert r.returncode == 1
    assert "loss is nan" in r.stderr or "no longer finite" in r.stderr
    assert "Traceback" not in r.stderr
    payload = load_checkpoint(out)
    assert all(torch.isfinite(p).all() for p in payload["state"]["params"].values())


@pytest.mark.parametrize("flags, message", [
    (["--batch-size", "1"], "n-1"),
    (["--steps", "0"], "at least one step"),
    (["--block-size", "0"], "at least 1"),
    (["--n-hidden", "-3"], "at least 1"),
    (["--device", "cuda"], "no CUDA") if not torch.cuda.is_available() else (["--device", "tpu"], "use cpu or cuda"),
    (["--device", "tpu"], "use cpu or cuda"),
    (["--lr", "-1"], "positive"),
    (["--year", "1700"], "covers"),
])
def test_impossible_flags(tmp_path, flags, message):
    r = cli("train", "--out", tmp_path / "x", "--no-progress", *flags)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_bad_word_file_exit_2(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("anna\nbob smith\n")
    r = cli("train", "--data", bad, "--out", tmp_path / "x", "--no-progress")
    assert r.returncode == 2 and f"{bad}:2:" in r.stderr and "Traceback" not in r.stderr


def test_corrupt_checkpoint(small_words, tmp_path):
    out = tmp_path / "run"
    assert cli(*small_run_args(small_words, out, steps=50)).returncode == 0
    before = (out / "metrics.csv").read_text()
    data = (out / "checkpoint.pt").read_bytes()
    (out / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    for args in (["sample", out], ["train", "--resume", out, "--no-progress"]):
        r = cli(*args)
        assert r.returncode == 2 and "corrupt" in r.stderr and "Traceback" not in r.stderr, r.stderr
    (out / "checkpoint.pt").write_bytes(b"not a checkpoint at all")
    r = cli("sample", out)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert (out / "metrics.csv").read_text() == before  # nothing already written is lost


def test_out_folder_is_never_overwritten(small_words, tmp_path):
    out = tmp_path / "run"
    assert cli(*small_run_args(small_words, out, steps=20)).returncode == 0
    before = (out / "checkpoint.pt").read_bytes()
    r = cli(*small_run_args(small_words, out, steps=20))
    assert r.returncode == 2 and "--resume" in r.stderr
    assert (out / "checkpoint.pt").read_bytes() == before


def test_resume_rejects_other_flags(small_words, tmp_path):
    out = tmp_path / "run"
    assert cli(*small_run_args(small_words, out, steps=20)).returncode == 0
    r = cli("train", "--resume", out, "--steps", "50")
    assert r.returncode == 2 and "--steps" in r.stderr


def test_verify_every_passes_for_the_manual_engine(small_words, tmp_path):
    r = cli(*small_run_args(small_words, tmp_path / "v", steps=100, verify_every=10))
    assert r.returncode == 0, r.stderr


# --- --verify-every stops a run whose gradients go wrong ------------------------------------------------

def bessel_off_from(broken: list):
    """Wraps an engine's loss_and_grads: while broken[0], dbngain comes back n/(n-1) times too large."""
    def wrap(loss_and_grads):
        def wrapped(self, ix):
            loss, grads = loss_and_grads(self, ix)
            if broken[0]:
                n = ix.shape[0]
                grads = {**grads, "bngain": grads["bngain"] * n / (n - 1)}
            return loss, grads
        return wrapped
    return wrap


@pytest.mark.parametrize("engine", ["manual", "fast", "autograd"])
def test_verify_every_stops_the_run_at_the_first_verified_step_that_disagrees(small_words, tmp_path, monkeypatch,
                                                                             engine):
    """Gradients that go wrong after step 5 of a run verified every 4 steps: steps 0 and 4 pass, step 8
    stops the run, naming the step, the engine and the parameter; the checkpoint before it stays."""
    from ninjagrad.engines import ENGINES
    from ninjagrad.train import TrainConfig, TrainingStopped, start_run

    broken = [False]
    cls = ENGINES[engine]
    monkeypatch.setattr(cls, "loss_and_grads", bessel_off_from(broken)(cls.loss_and_grads))
    cfg = TrainConfig(engine=engine, data=str(small_words), steps=20, batch_size=16, verify_every=4,
                      checkpoint_every=2, num_samples=0, model_config={"n_hidden": 16, "block_size": 3})
    run = start_run(cfg, str(tmp_path / "run"))
    with pytest.raises(TrainingStopped, match=rf"step 8: the {engine} engine's gradient of bngain disagrees with "
                                              r"autograd .*The last good checkpoint, at step 8"):
        run.train([], lambda r: broken.__setitem__(0, r.step >= 5))
    assert run.step == 8 and load_checkpoint(tmp_path / "run")["step"] == 8


def test_verify_every_catches_a_wrong_op_in_the_manual_backward(small_words, tmp_path, monkeypatch):
    """A bug in an op the hand-written backward calls (batchnorm's dgain n/(n-1) times too large) is
    caught at the first verified step."""
    from ninjagrad import ops
    from ninjagrad.train import TrainConfig, TrainingStopped, start_run

    right = ops.batchnorm_backward

    def wrong(dout, cache):
        dx, dgain, dbias = right(dout, cache)
        n = cache[3]
        return dx, dgain * n / (n - 1), dbias

    monkeypatch.setattr(ops, "batchnorm_backward", wrong)
    cfg = TrainConfig(engine="manual", data=str(small_words), steps=20, batch_size=16, verify_every=10,
                      num_samples=0, model_config={"n_hidden": 16, "block_size": 3})
    run = start_run(cfg, str(tmp_path / "run"))
    with pytest.raises(TrainingStopped, match="step 0: the manual engine's gradient of bngain disagrees"):
        run.train([])
