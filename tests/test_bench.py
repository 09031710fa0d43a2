"""`ninjagrad bench`: its tables hold every engine and every dC method, each checked against autograd."""
import json

import pytest
import torch

from ninjagrad import bench
from ninjagrad.cli import main


def test_every_dC_method_matches_autograd_on_repeated_rows():
    rows = bench.dC_table(5, shapes=[("tiny", 4, 3, 2, 7), ("wide", 3, 2, 3, 500)])
    assert {r["method"] for r in rows} == set(bench.DC_METHODS)
    for r in rows:
        assert r["correct"], r
        assert r["us_per_call"] > 0


def test_dC_check_catches_dropped_repeats():
    """`dC[X] += demb` keeps one contribution per repeated row: the check must call it wrong."""
    def dropped(demb, X, V):
        dC = torch.zeros((V, demb.shape[-1]), dtype=demb.dtype)
        dC[X.view(-1)] += demb.view(-1, demb.shape[-1])
        return dC

    g = torch.Generator().manual_seed(0)
    C, demb = torch.randn(5, 2, generator=g), torch.randn(2, 3, 2, generator=g)
    X = torch.tensor([[1, 1, 2], [3, 1, 0]])
    assert bench.dC_check(bench.dC_index_add, C, X, demb)[1]
    assert not bench.dC_check(dropped, C, X, demb)[1]


def test_step_flops_counts_six_matmuls():
    # forward: (B,K)x(K,H) and (B,H)x(H,V); backward: two of each shape
    assert bench.step_flops(32, 30, 200, 27) == 6 * 32 * 30 * 200 + 6 * 32 * 200 * 27


@pytest.mark.slow
def test_bench_json(capsys):
    assert main(["bench", "--json", "--steps", "3", "--repeats", "5", "--no-dc"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {r["engine"]: r for r in out["engines"]}
    assert {"autograd", "manual", "fast"} <= set(rows)
    assert rows["autograd"]["vs_autograd"] == pytest.approx(1.0)
    for r in rows.values():
        assert len(r["repeats_us"]) == 5
        assert r["us_per_step"] == pytest.approx(sorted(r["repeats_us"])[2], rel=1e-3)  # the median
        assert r["projected_200k_s"] == pytest.approx(r["us_per_step"] * 0.2, rel=1e-6)
    assert out["machine"]["cores"] >= 1
    assert out["torch_threads"] == 1 and "matmuls average" in out["threads_why"]  # as training would choose


def test_busy_neighbour_runs_only_inside_the_block():
    import os
    import time

    def busy_children():
        with open(f"/proc/{os.getpid()}/task/{os.getpid()}/children") as f:
            return [int(p) for p in f.read().split()]

    with bench.busy_neighbour():
        (pid,) = busy_children()
        with open(f"/proc/{pid}/stat") as f:
            assert f.read().split()[2] in "RS"  # running (or between two slices)
        cpu0 = os.times().children_user
        time.sleep(0.3)
    assert busy_children() == []
    assert os.times().children_user > cpu0  # it spun, and was waited for


JAX_STEPS = """
import numpy as np, torch
from ninjagrad import bench
from ninjagrad.peers import JaxEngine

engines, N = bench.make_engines(["manual"], B=8, H=16)
manual = engines["manual"]
jit, scan = JaxEngine(manual.model, manual.Xtr, manual.Ytr), JaxEngine(manual.model, manual.Xtr, manual.Ytr, scan=True)
ixs = torch.randint(0, N, (5, 8), generator=torch.Generator().manual_seed(0))
a, b, c = jit.steps(ixs, 0.1), scan.steps(ixs, 0.1), manual.steps(ixs, 0.1)
assert np.allclose(a, c, rtol=1e-5) and np.allclose(b, c, rtol=1e-5), (a, b, c)
for k, p in manual.model.params.items():
    for peer in (jit, scan):
        assert np.allclose(np.asarray(peer.p[k]), p.numpy(), atol=1e-5), k
"""


@pytest.mark.slow
def test_the_jax_peers_take_the_manual_engines_steps():
    """In a process of its own: JAX starts threads, after which forking (subprocess) warns in every later test."""
    import importlib.util
    import subprocess
    import sys

    if importlib.util.find_spec("jax") is None:
        pytest.skip("JAX is not installed (it is optional: `pip install jax`)")
    r = subprocess.run([sys.executable, "-c", JAX_STEPS], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
def test_bench_rejects_too_few_repeats(capsys):
    assert main(["bench", "--repeats", "3"]) == 2
    assert "--repeats" in capsys.readouterr().err
    assert main(["bench", "--threads", "0"]) == 2
    assert "--threads" in capsys.readouterr().err
