"""Exercise 4: training with a learner's backward(...), verified by the grader as it goes."""
from __future__ import annotations

import pytest
import torch

from ninjagrad.check.exercises import get_exercise
from ninjagrad.engines import ManualEngine
from ninjagrad.engines.user import UserEngine
from ninjagrad.errors import UsageError
from ninjagrad.models import MLP, MLPConfig
from ninjagrad.train import TrainConfig, TrainingStopped, execute, start_run

WORDS = ["emma", "olivia", "ava", "isabella", "sophia", "mia", "amelia", "harper", "evelyn", "abigail",
         "emily", "ella", "elizabeth", "camila", "luna", "sofia", "avery", "mila", "aria", "scarlett"]


@pytest.fixture
def files(tmp_path):
    sol = get_exercise(4).read("solution.py")
    (tmp_path / "good.py").write_text(sol)
    (tmp_path / "bad.py").write_text(sol.replace("db2 = dlogits.sum(0)", "db2 = 2 * dlogits.sum(0)"))
    (tmp_path / "words.txt").write_text("\n".join(WORDS) + "\n")
    return tmp_path


def small_model(dtype=torch.float32):
    cfg = MLPConfig(vocab_size=27, block_size=3, n_embd=4, n_hidden=16)
    return MLP.create(cfg, torch.Generator().manual_seed(3), dtype=dtype)


def test_user_engine_matches_the_manual_engine(files):
    g = torch.Generator().manual_seed(0)
    X, Y = torch.randint(0, 27, (200, 3), generator=g), torch.randint(0, 27, (200,), generator=g)
    model = small_model(torch.float64)
    ix = torch.randint(0, 200, (16,), generator=g)
    loss_u, grads_u = UserEngine(model, X, Y, path=str(files / "good.py")).loss_and_grads(ix)
    loss_m, grads_m = ManualEngine(model, X, Y).loss_and_grads(ix)
    assert abs(loss_u - loss_m) < 1e-12
    for k in grads_m:
        torch.testing.assert_close(grads_u[k], grads_m[k], rtol=1e-10, atol=1e-12)
    bad = UserEngine(model, X, Y, path=str(files / "bad.py"))
    assert UserEngine(model, X, Y, path=str(files / "good.py")).diagnose(ix) is None
    msg = bad.diagnose(ix)
    assert "db2 wrong" in msg and "2 times" in msg


def test_train_stops_at_step_0_with_the_diagnosis(files):
    cfg = TrainConfig(data=str(files / "words.txt"), steps=5, batch_size=8, backward=str(files / "bad.py"),
                      engine="user", verify_every=2, checkpoint_every=100, num_samples=2,
                      model_config={"n_embd": 4, "n_hidden": 16, "block_size": 3})
    run = start_run(cfg, str(files / "run_bad"))
    with pytest.raises(TrainingStopped, match=r"step 0: .*db2 wrong.*2 times"):
        execute(run, show_progress=False)


def test_train_runs_with_a_right_backward(files):
    cfg = TrainConfig(data=str(files / "words.txt"), steps=6, batch_size=8, backward=str(files / "good.py"),
                      engine="user", verify_every=3, checkpoint_every=100, num_samples=2,
                      model_config={"n_embd": 4, "n_hidden": 16, "block_size": 3})
    summary = execute(start_run(cfg, str(files / "run_good")), show_progress=False)
    assert summary["steps"] == 6 and summary["engine"] == "user"


def test_bad_backward_files_are_usage_errors(files):
    X, Y = torch.zeros((4, 3), dtype=torch.long), torch.zeros(4, dtype=torch.long)
    (files / "nofn.py").write_text("x = 1\n")
    with pytest.raises(UsageError, match="defines no function"):
        UserEngine(small_model(), X, Y, path=str(files / "nofn.py"))
    (files / "syntax.py").write_text("def backward(:\n")
    with pytest.raises(UsageError, match=r"syntax\.py:1"):
        UserEngine(small_model(), X, Y, path=str(files / "syntax.py"))
    (files / "shape.py").write_text(get_exercise(4).read("solution.py").replace('"b2": db2', '"b2": db2[None]'))
    eng = UserEngine(small_model(), X, Y, path=str(files / "shape.py"))
    with pytest.raises(UsageError, match="b2"):
        eng.loss_and_grads(torch.arange(4))
