"""The whole model's hand-written backward against autograd."""
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ninjagrad.engines import autograd_loss_and_grads
from ninjagrad.models import MLP, MLPConfig


def batch(config, B, seed):
    g = torch.Generator().manual_seed(seed + 1)
    X = torch.randint(0, config.vocab_size, (B, config.block_size), generator=g)
    Y = torch.randint(0, config.vocab_size, (B,), generator=g)
    return X, Y


def compare(config, B, seed, dtype):
    model = MLP.create(config, torch.Generator().manual_seed(seed), dtype=dtype)
    X, Y = batch(config, B, seed)
    loss, cache = model.forward(X, Y)
    grads = model.backward(cache)
    ref_loss, ref = autograd_loss_and_grads(model, X, Y)
    assert abs(loss.item() - ref_loss) <= 1e-12 * abs(ref_loss) + (1e-6 if dtype == torch.float32 else 0)
    scale = max(r.abs().max().item() for r in ref.values())
    return {k: ((grads[k] - ref[k]).abs().max().item(), ref[k].abs().max().item(), scale) for k in ref}


def test_mlp_float64_lecture_shapes():
    for k, (diff, ref_max, scale) in compare(MLPConfig(), 32, 0, torch.float64).items():
        # b1's true gradient is zero (batchnorm removes it): judge it against the step's scale
        assert diff <= 1e-10 * (ref_max if k != "b1" else scale), k


def test_mlp_float32_lecture_shapes():
    for k, (diff, ref_max, scale) in compare(MLPConfig(), 32, 1, torch.float32).items():
        assert diff <= 1e-4 * (ref_max if k != "b1" else scale), k


@settings(max_examples=20, deadline=None)
@given(B=st.integers(2, 48), T=st.integers(1, 6), E=st.integers(1, 12), H=st.integers(1, 64),
       V=st.integers(2, 30), seed=st.integers(0, 2**31 - 1))
def test_mlp_any_shape(B, T, E, H, V, seed):
    config = MLPConfig(vocab_size=V, block_size=T, n_embd=E, n_hidden=H)
    for k, (diff, ref_max, scale) in compare(config, B, seed, torch.float64).items():
        assert diff <= 1e-10 * max(ref_max if k != "b1" else scale, 1e-3), k


def test_init_is_seeded_and_lecture_scaled():
    c = MLPConfig()
    a = MLP.create(c, torch.Generator().manual_seed(5)).params
    b = MLP.create(c, torch.Generator().manual_seed(5)).params
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert abs(a["W1"].std().item() - (5 / 3) / 30 ** 0.5) < 0.02
    assert abs(a["bngain"].mean().item() - 1.0) < 0.05 and a["bngain"].std().item() > 0.05  # non-trivial gain


def test_calibrate_matches_full_batch_statistics():
    c = MLPConfig(n_hidden=16)
    model = MLP.create(c, torch.Generator().manual_seed(0), dtype=torch.float64)
    X = torch.randint(0, 27, (1000, 3), generator=torch.Generator().manual_seed(1))
    model.calibrate(X, chunk=300)
    hprebn = model.params["C"][X].view(1000, -1) @ model.params["W1"] + model.params["b1"]
    torch.testing.assert_close(model.bnmean, hprebn.mean(0, keepdim=True))
    torch.testing.assert_close(model.bnvar, hprebn.var(0, keepdim=True, unbiased=True))
