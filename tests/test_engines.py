"""The engines compute the same step: the manual backward may not buy speed with wrong numbers."""
import pytest
import torch

from ninjagrad.train import TrainConfig, start_run


def losses_of(engine, words, tmp_path, dtype, steps=100, **kw):
    cfg = TrainConfig(engine=engine, steps=steps, data=str(words), dtype=dtype, model_config={"block_size": 3}, **kw)
    run = start_run(cfg, str(tmp_path / f"{engine}-{dtype}"))
    run.train([])
    return run


@pytest.mark.parametrize("dtype, tol", [("float32", 1e-4), ("float64", 1e-10)])
def test_manual_and_autograd_agree_step_by_step(small_words, tmp_path, dtype, tol):
    manual = losses_of("manual", small_words, tmp_path, dtype)
    auto = losses_of("autograd", small_words, tmp_path, dtype)
    a, b = torch.tensor(manual.losses), torch.tensor(auto.losses)
    assert len(a) == 100
    assert ((a - b).abs() / b.abs()).max().item() <= tol
    for k, p in manual.model.params.items():
        q = auto.model.params[k].detach()
        assert (p - q).abs().max().item() <= tol * max(q.abs().max().item(), 1.0), k


def test_training_lowers_the_loss(small_words, tmp_path):
    run = losses_of("manual", small_words, tmp_path, "float32", steps=400)
    first, last = sum(run.losses[:50]) / 50, sum(run.losses[-50:]) / 50
    assert last < first - 0.3
