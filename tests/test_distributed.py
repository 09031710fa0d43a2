"""Data-parallel training: 2 CPU processes on gloo end where one process does, on the same global batch."""
import json
import os
import signal
import socket
import subprocess
import sys

import pytest
import torch

from ninjagrad.checkpoint import load_checkpoint
from ninjagrad.train import TrainConfig, execute, start_run

STEPS = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args, timeout=240):
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(free_port()),
           "-m", "ninjagrad", *map(str, args)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and its workers: leave no process behind
        out, err = proc.communicate()
        pytest.fail(f"torchrun did not finish in {timeout} s: {err[-2000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def common(words, out, batch=32):
    return ["train", "--data", words, "--steps", STEPS, "--n-hidden", 48, "--batch-size", batch, "--out", out,
            "--no-progress", "--samples", 3, "--device", "cpu", "--checkpoint-every", 1000]


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="this torch build has no torch.distributed")
def test_two_processes_match_one(small_words, tmp_path):
    dp_out = tmp_path / "dp"
    r = torchrun(*common(small_words, dp_out), "--verify-every", 20)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("run folder:") == 1, "only rank 0 prints"
    assert "data-parallel: 2 processes, 16 examples each" in r.stdout

    cfg = TrainConfig(steps=STEPS, batch_size=32, data=str(small_words), num_samples=3, checkpoint_every=1000,
                      engine="manual", model_config={"n_hidden": 48, "block_size": 3})
    single = execute(start_run(cfg, str(tmp_path / "single")), show_progress=False)

    a, b = load_checkpoint(dp_out), load_checkpoint(tmp_path / "single")
    assert a["step"] == b["step"] == STEPS
    for k, p in b["state"]["params"].items():
        q = a["state"]["params"][k]
        assert (p - q).abs().max().item() <= 1e-4 * max(p.abs().max().item(), 1.0), k
    # the per-step losses are the global batch's, not one process's half
    assert (a["losses"] - b["losses"]).abs().max().item() < 1e-4

    summary = json.loads((dp_out / "summary.json").read_text())
    assert summary["processes"] == 2 and abs(summary["val_loss"] - single["val_loss"]) < 1e-4


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="this torch build has no torch.distributed")
def test_uneven_batch_is_refused(small_words, tmp_path):
    r = torchrun(*common(small_words, tmp_path / "x", batch=33))
    assert r.returncode != 0
    assert "multiple of the 2 processes" in r.stderr and "Traceback" not in r.stderr.split("multiple")[0][-500:]
