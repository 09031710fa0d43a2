"""Part 5's WaveNet: hand-written gradients against autograd, the op order, eval mode, a full run."""
import json

import pytest
import torch

from ninjagrad.errors import UsageError
from ninjagrad.models import MODELS, WaveNet, WaveNetConfig
from ninjagrad.train import TrainConfig, execute, start_run

from .model_checks import assert_grads_match, op_trace, perturb, resume_matches


def batch(B=32, T=8, V=27, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randint(0, V, (B, T), generator=g)
    X[: B // 2, : T // 2] = 0  # word starts, as the real windows have
    X[-1] = X[0, -1]  # repeated characters: the embedding's backward must accumulate
    return X, torch.randint(0, V, (B,), generator=g)


def model(dtype=torch.float64, **kw):
    return perturb(WaveNet.create(WaveNetConfig(**kw), torch.Generator().manual_seed(1), dtype=dtype))


def test_lecture_size():
    m = WaveNet.create(WaveNetConfig(), torch.Generator().manual_seed(0))
    assert m.num_params() == 76579  # the lecture's count: 24-dim embedding, 128 hidden, 3 levels
    assert [tuple(m.params[f"W{i}"].shape) for i in (1, 2, 3, 4)] == [(48, 128), (256, 128), (256, 128), (128, 27)]
    assert MODELS["wavenet"] == (WaveNet, WaveNetConfig)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_gradients_match_autograd(dtype, tol):
    X, Y = batch()
    assert_grads_match(model(dtype), X, Y, tol)


def test_other_shapes_match_autograd():
    """block_size 4 (two levels), block_size 9 with merge 3, a batch of two."""
    for kw, B in (({"block_size": 4, "n_embd": 5, "n_hidden": 7}, 6),
                  ({"block_size": 9, "merge": 3, "n_embd": 4, "n_hidden": 6}, 5),
                  ({"n_embd": 3, "n_hidden": 5}, 2)):
        X, Y = batch(B=B, T=kw.get("block_size", 8), seed=B)
        assert_grads_match(model(**kw), X, Y, 1e-10)


def test_backward_is_forward_reversed(monkeypatch):
    X, Y = batch()
    fwd, bwd = op_trace(monkeypatch, model(), X, Y)
    assert fwd[0] == "embedding" and fwd.count("batchnorm") == 3 and fwd.count("flatten_consecutive") == 3
    assert bwd == fwd[::-1]


def test_eval_mode_equals_training_mode_on_its_own_batch():
    """Calibrated on exactly the batch it is evaluated on, eval-mode batchnorm uses the same statistics
    as training mode, so the eval logits give the training loss."""
    m = model()
    X, Y = batch(B=64)
    m.calibrate(X, chunk=10)  # chunks smaller than the batch: the sums must add up across chunks
    loss, _ = m.forward(X, Y)
    ce = torch.nn.functional.cross_entropy(m.logits(X), Y)
    assert abs(loss.item() - ce.item()) <= 1e-12
    # and a single window works in eval mode (sampling needs it)
    assert m.logits(X[:1]).shape == (1, 27)


def test_block_size_must_merge_to_one():
    with pytest.raises(UsageError, match="power of 2"):
        WaveNetConfig(block_size=6).validate()


def test_state_dict_round_trip():
    a, b = model(), WaveNet.create(WaveNetConfig(), torch.Generator().manual_seed(5), dtype=torch.float64)
    X, _ = batch(B=40)
    a.calibrate(X)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.logits(X), b.logits(X))


def small_cfg(words, **kw):
    settings = dict(model="wavenet", steps=40, batch_size=16, data=str(words), checkpoint_every=10, verify_every=7,
                    num_samples=3, model_config={"block_size": 8, "n_embd": 6, "n_hidden": 12})
    return TrainConfig(**{**settings, **kw})


def test_full_run_with_verify_and_resume(small_words, tmp_path):
    straight, _ = resume_matches(lambda: small_cfg(small_words), tmp_path, stop_at=23)
    summary = execute(straight, show_progress=False)
    assert summary["model"] == "wavenet" and len(summary["samples"]) == 3
    assert 1.0 < summary["val_loss"] < 3.4
    assert json.loads((tmp_path / "straight" / "summary.json").read_text())["val_loss"] == summary["val_loss"]


def test_autograd_engine_takes_the_same_steps(small_words, tmp_path):
    runs = {}
    for engine in ("manual", "autograd"):
        runs[engine] = start_run(small_cfg(small_words, engine=engine, dtype="float64", verify_every=0),
                                 str(tmp_path / engine))
        runs[engine].train([])
    a, b = torch.tensor(runs["manual"].losses), torch.tensor(runs["autograd"].losses)
    assert ((a - b).abs() / b).max().item() <= 1e-10
