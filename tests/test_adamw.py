"""The hand-written AdamW against torch.optim.AdamW, and its state through a checkpoint."""
import io

import torch

from ninjagrad.optim import OPTIMIZERS, AdamW, make_optimizer


def params_and_grads(seed=0, steps=6):
    g = torch.Generator().manual_seed(seed)
    shapes = {"C": (7, 5), "W1": (10, 6), "b1": (6,), "bngain": (1, 6), "P": (3, 5)}
    params = {k: torch.randn(s, generator=g, dtype=torch.float64) for k, s in shapes.items()}
    # non-uniform gradients of changing scale, so the bias corrections and v's lag matter
    grads = [{k: torch.randn(s, generator=g, dtype=torch.float64) * (0.1 + i) for k, s in shapes.items()}
             for i in range(steps)]
    return params, grads


def lrs(steps):
    return [1e-2 if i < steps // 2 else 1e-3 for i in range(steps)]  # the train loop's step decay


def test_matches_torch_adamw():
    params, grads = params_and_grads()
    mine = {k: v.clone() for k, v in params.items()}
    ref = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    opt = AdamW(betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    decay = [p for p in ref.values() if AdamW.decays(p)]
    keep = [p for p in ref.values() if not AdamW.decays(p)]
    torch_opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": keep, "weight_decay": 0.0}],
                                  lr=1.0, betas=(0.9, 0.99), eps=1e-8)
    for lr, g in zip(lrs(len(grads)), grads):
        opt.update(mine, g, lr)
        for group in torch_opt.param_groups:
            group["lr"] = lr
        for k, p in ref.items():
            p.grad = g[k].clone()
        torch_opt.step()
    for k in params:
        assert (mine[k] - ref[k].detach()).abs().max().item() <= 1e-12, k
        assert (mine[k] - params[k]).abs().max().item() > 1e-3, f"{k} did not move"


def test_decay_only_matrices():
    assert AdamW.decays(torch.zeros(10, 6)) and AdamW.decays(torch.zeros(7, 5))
    assert not AdamW.decays(torch.zeros(6)) and not AdamW.decays(torch.zeros(1, 6))
    # with zero gradients only the decay moves a parameter: matrices shrink, vectors stay
    p = {"W": torch.ones(3, 3, dtype=torch.float64), "b": torch.ones(3, dtype=torch.float64)}
    AdamW(weight_decay=0.5).update(p, {k: torch.zeros_like(v) for k, v in p.items()}, 0.1)
    assert torch.allclose(p["W"], torch.full((3, 3), 0.95, dtype=torch.float64))
    assert torch.equal(p["b"], torch.ones(3, dtype=torch.float64))


def test_state_survives_a_checkpoint_exactly():
    """3 updates, save, load into a fresh optimizer (weights_only), 3 more == 6 uninterrupted updates."""
    params, grads = params_and_grads(seed=1)
    steps = lrs(len(grads))
    straight = {k: v.clone() for k, v in params.items()}
    opt = AdamW()
    for lr, g in zip(steps, grads):
        opt.update(straight, g, lr)

    resumed = {k: v.clone() for k, v in params.items()}
    first = AdamW()
    for lr, g in list(zip(steps, grads))[:3]:
        first.update(resumed, g, lr)
    buf = io.BytesIO()
    torch.save({"optimizer": first.state_dict()}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)["optimizer"]
    second = AdamW(betas=(0.5, 0.5), eps=1.0, weight_decay=0.0)  # hyperparameters come from the state
    second.load_state_dict(state)
    for lr, g in list(zip(steps, grads))[3:]:
        second.update(resumed, g, lr)
    for k in params:
        assert torch.equal(straight[k], resumed[k]), k


def test_registered():
    assert OPTIMIZERS["adamw"] is AdamW and isinstance(make_optimizer("adamw"), AdamW)


def test_weight_decay_flag_reaches_the_optimizer_and_the_checkpoint(small_words, tmp_path):
    from ninjagrad.checkpoint import load_checkpoint
    from ninjagrad.cli import main

    out = tmp_path / "wd"
    args = ["train", "--data", str(small_words), "--steps", "5", "--n-hidden", "16", "--optimizer", "adamw",
            "--weight-decay", "0.3", "--out", str(out), "--no-progress", "--samples", "1"]
    assert main(args) == 0
    assert load_checkpoint(out)["optimizer"]["weight_decay"] == 0.3
    assert main(["train", "--data", str(small_words), "--steps", "5", "--weight-decay", "0.3",
                 "--out", str(tmp_path / "sgd"), "--no-progress"]) == 2  # SGD has no weight decay
    assert not (tmp_path / "sgd").exists()
