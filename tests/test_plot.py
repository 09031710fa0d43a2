"""`ninjagrad plot` (plot.py): the lines drawn are the runs' own numbers, recomputed here from the files the
runs wrote; bad input is one line and exit status 2; plotting imports no torch."""
import csv
import json

import numpy as np
import pytest

from ninjagrad.plot import draw_diagnostics, draw_losses, read_run
from ninjagrad.train import TrainConfig, execute, start_run
from tests.test_startup import torch_imported
from tests.test_train import cli

STEPS = 300


@pytest.fixture(scope="module")
def runs(small_words, tmp_path_factory):
    """Two runs of the lecture's MLP, manual and fast engine; the manual one records diagnostics."""
    root = tmp_path_factory.mktemp("runs")
    for engine, every in (("manual", 50), ("fast", 0)):
        cfg = TrainConfig(engine=engine, steps=STEPS, batch_size=32, eval_every=100, diagnostics_every=every,
                          data=str(small_words), model_config={"n_hidden": 32, "block_size": 3}, num_samples=1,
                          threads=1)
        execute(start_run(cfg, str(root / engine)), show_progress=False)
    return root / "manual", root / "fast"


def column(path, name):
    with path.open() as f:
        return np.array([float(row[name]) for row in csv.DictReader(f)])


def lines_of(ax):
    return [(line.get_label(), np.asarray(line.get_xdata()), np.asarray(line.get_ydata())) for line in ax.get_lines()]


def test_the_overlay_draws_each_runs_metrics(runs, tmp_path):
    fig = draw_losses([read_run(r) for r in runs], tmp_path / "losses.png")
    drawn = lines_of(fig.axes[0])
    assert [label for label, _, _ in drawn] == ["manual (mlp, manual) train", "manual (mlp, manual) val",
                                                "fast (mlp, fast) train", "fast (mlp, fast) val"]
    for i, run in enumerate(runs):
        loss = column(run / "metrics.csv", "loss")
        assert len(loss) == STEPS
        chunk = STEPS // 20  # loss.png's chunks for a run under 2000 steps
        _, x, y = drawn[2 * i]
        np.testing.assert_allclose(y, [np.mean(np.log10(loss[k:k + chunk])) for k in range(0, STEPS, chunk)])
        np.testing.assert_array_equal(x, np.arange(chunk / 2, STEPS, chunk))
        _, x, y = drawn[2 * i + 1]
        val = column(run / "evals.csv", "val_loss")  # evals.csv ends with the last step's losses
        assert val[-1] == pytest.approx(json.loads((run / "summary.json").read_text())["val_loss"], abs=1e-6)
        np.testing.assert_array_equal(x, [100, 200, STEPS])
        np.testing.assert_allclose(y, np.log10(val))
    assert (tmp_path / "losses.png").stat().st_size > 10_000


def test_the_diagnostics_figure_draws_the_records(runs, tmp_path):
    d = read_run(runs[0]).diagnostics
    with np.load(runs[0] / "diagnostics.npz") as f:
        raw = {k: f[k] for k in f.files}
    assert list(raw["steps"]) == [0, 50, 100, 150, 200, 250]
    fig = draw_diagnostics(d, tmp_path / "d.png", "title")
    act, grad, weight, saturated, grad_std, update = (lines_of(ax) for ax in fig.axes)
    for drawn, prefix, j in ((act[0], "act", 0), (grad[0], "grad", 0), (weight[1], "param", 1)):
        counts, (lo, hi) = raw[f"{prefix}_counts"][-1, j], raw[f"{prefix}_range"][-1, j]
        width = (hi - lo) / len(counts)
        np.testing.assert_allclose(drawn[1], lo + width * (np.arange(len(counts)) + 0.5))
        np.testing.assert_allclose(drawn[2], counts / counts.sum() / width)
        np.testing.assert_allclose(np.sum(drawn[2]) * width, 1.0)  # a density
    assert "saturated " + f"{100 * raw['act_saturated'][-1, 0]:.1f}%" in act[0][0]
    assert [label.split(" ")[0] for label, _, _ in weight] == ["C", "W1", "W2"]  # the matrices
    np.testing.assert_allclose(saturated[0][2], 100 * raw["act_saturated"][:, 0])
    np.testing.assert_allclose(grad_std[0][2], raw["grad_std"][:, 0])
    assert [label for label, _, _ in update] == ["C", "W1", "W2", "1e-3 guide"]
    np.testing.assert_allclose(update[1][2], raw["update_data"][:, 1])
    np.testing.assert_array_equal(update[1][1], raw["steps"])
    assert list(update[3][2]) == [-3, -3]


def test_the_command_writes_both_pictures(runs, tmp_path):
    r = cli("plot", *runs, "--out", tmp_path / "cmp.png")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "cmp.png").exists() and (tmp_path / "diagnostics-manual.png").exists()
    assert not (tmp_path / "diagnostics-fast.png").exists()  # the fast run recorded none
    assert "6 records" in r.stdout
    r = cli("plot", runs[0], "--out", tmp_path / "only.png", "--no-diagnostics")
    assert r.returncode == 0 and r.stdout.count("\n") == 1


def corrupt(run, tmp_path, what):
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("metrics.csv", "config.json", "diagnostics.npz"):
        (bad / name).write_bytes((run / name).read_bytes())
    if what == "metrics":
        rows = (bad / "metrics.csv").read_text().splitlines()
        rows[7] = "6,oops,0.1"
        (bad / "metrics.csv").write_text("\n".join(rows) + "\n")
    elif what == "npz":
        (bad / "diagnostics.npz").write_bytes((run / "diagnostics.npz").read_bytes()[:300])
    elif what == "config":
        (bad / "config.json").write_text("{not json")
    else:
        (bad / "metrics.csv").unlink()
    return bad


@pytest.mark.parametrize("what, says", [("metrics", "metrics.csv:8: not a row of 3 numbers"),
                                        ("npz", "diagnostics.npz: corrupt"), ("config", "config.json: corrupt"),
                                        ("no metrics", "no metrics.csv")])
def test_a_broken_run_folder_is_one_line(runs, tmp_path, what, says):
    r = cli("plot", corrupt(runs[0], tmp_path, what), "--out", tmp_path / "x.png")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and says in r.stderr, r.stderr
    assert not (tmp_path / "x.png").exists()


def test_bad_arguments_are_one_line(runs, tmp_path):
    (tmp_path / "file.txt").write_text("x")
    for args, says in ((["plot", tmp_path / "nowhere"], "no such folder"), (["plot", tmp_path / "file.txt"], "a file"),
                       (["plot", runs[0], "--out", tmp_path / "x.jpg"], "name a .png file"),
                       (["plot", runs[0], "--out", tmp_path / "no" / "x.png"], "no folder")):
        r = cli(*args)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and says in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_plotting_imports_no_torch(runs, tmp_path):
    seen = torch_imported(["plot", "--help"], ["plot", str(runs[0]), "--out", str(tmp_path / "p.png")])
    assert seen == {"plot --help": False, f"plot {runs[0]} --out {tmp_path / 'p.png'}": False}
    assert (tmp_path / "p.png").exists() and (tmp_path / "diagnostics-manual.png").exists()
