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


def test_bench_rejects_too_few_repeats(capsys):
    assert main(["bench", "--repeats", "3"]) == 2
    assert "--repeats" in capsys.readouterr().err
