"""A run's diagnostics (diagnostics.py): every number recorded equals the same number computed again,
independently, from the same parameters and minibatch: the activations' gradients by autograd rather
than the hand-written backward, the histograms by torch.histogram over spans chosen here, the
update:data ratios from the parameters before and after a replayed step."""
import copy
import dataclasses
import shutil
from importlib import resources

import numpy as np
import pytest
import torch

from ninjagrad import train as training
from ninjagrad.data import Vocab, load_words
from ninjagrad.engines import compiled
from ninjagrad.errors import UsageError
from ninjagrad.memory import dataset_bytes, model_bytes
from ninjagrad.models import WaveNetConfig
from ninjagrad.optim import lecture_lr
from ninjagrad.plot import read_diagnostics
from ninjagrad.train import Interrupted, TrainConfig, execute, resume_run, start_run
from tests.test_train import cli

BINS = 51
TINY = {"mlp": {"n_embd": 4, "n_hidden": 24, "block_size": 3},
        "wavenet": {"n_embd": 4, "n_hidden": 12, "block_size": 8},
        "transformer": {"n_embd": 16, "n_head": 2, "n_layer": 2, "block_size": 8}}
LR = {"mlp": 0.1, "wavenet": 0.1, "transformer": 1e-3}  # sgd's and adamw's


def config(words, model="mlp", **extra) -> TrainConfig:
    settings = dict(model=model, engine="manual", steps=3, batch_size=16, lr=LR[model], dtype="float64",
                    diagnostics_every=1, data=str(words), model_config=dict(TINY[model]), num_samples=1, threads=1)
    return TrainConfig(**{**settings, **extra})


def train(cfg: TrainConfig, out) -> dict:
    run = start_run(cfg, str(out))
    execute(run, show_progress=False)
    return read_diagnostics(out / "diagnostics.npz")


def autograd_view(model, params, Xb, Yb):
    """The nonlinearities and their outputs' gradients by autograd at `params`, and the parameters' gradients."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    twin = copy.copy(model)
    twin.params = leaves
    with torch.enable_grad():
        loss, cache = twin.forward(Xb, Yb)
        acts = twin.activations(cache)
        for a in acts.values():
            a.out.retain_grad()
        loss.backward()
    return acts, {k: a.out.grad for k, a in acts.items()}, {k: v.grad for k, v in leaves.items()}


def counts(v, lo, hi):
    return torch.histogram(v.detach().double().reshape(-1), bins=BINS, range=(lo, hi))[0].numpy()


def biggest(v):
    return v.abs().max().item()


def expected_record(model, Xb, Yb, before, after):
    """One record computed here: spans, histograms, saturation and ratios from their definitions."""
    acts, act_grads, grads = autograd_view(model, before, Xb, Yb)
    rec = {"act_counts": [], "grad_counts": [], "act_saturated": [], "act_std": [], "grad_std": [], "grad_range": [],
           "param_counts": [], "update_data": [], "grad_data": []}
    for name, a in acts.items():
        out = a.out.detach()
        lo, hi = (-1.0, 1.0) if a.kind == "tanh" else (out.min().item(), out.max().item())
        rec["act_counts"].append(counts(out, lo, hi))
        rec["act_saturated"].append(((out.abs() > 0.97) if a.kind == "tanh" else (a.x < -2.26)).double().mean().item())
        rec["act_std"].append(out.std().item())
        g = act_grads[name]
        rec["grad_counts"].append(counts(g, -biggest(g), biggest(g)))
        rec["grad_range"].append([-biggest(g), biggest(g)])
        rec["grad_std"].append(g.std().item())
    largest = max(biggest(g) for g in grads.values())
    for k in model.names:
        g, p = grads[k], before[k]
        if biggest(g) < 1e-9 * largest:  # b1 before batchnorm: its true gradient is 0, both sides' are rounding
            g = torch.full_like(g, float("nan"))
        rec["param_counts"].append(counts(g, -biggest(g), biggest(g)) if biggest(g) > 0 else np.full(BINS, np.nan))
        rec["grad_data"].append((g.std() / p.std()).item())
        with np.errstate(divide="ignore"):  # -inf for b1 (its update rounds to 0), inf for a bias that starts at 0
            rec["update_data"].append(np.log10(np.float64((after[k] - p).std().item()) / p.std().item()))
    return {k: np.array(v) for k, v in rec.items()}


def replay(cfg: TrainConfig, out) -> list[dict]:
    """The run again without diagnostics, one step at a time, each step's record computed here."""
    cfg = dataclasses.replace(cfg, diagnostics_every=0, model_config=dict(cfg.model_config))
    run = start_run(cfg, str(out))
    records = []
    for step in range(cfg.steps):
        ix = run.draw(1)[0]
        before = {k: v.clone() for k, v in run.model.params.items()}
        Xb, Yb = run.Xtr[ix], run.Ytr[ix]
        run.engine.step(ix, lecture_lr(step, cfg.lr, cfg.decay_step()))
        records.append(expected_record(run.model, Xb, Yb, before, run.model.params))
    return records


def same_as_replayed(d, records):
    assert list(d["steps"]) == list(range(len(records)))
    for r, rec in enumerate(records):
        for k, want in rec.items():
            got = d[k][r]
            known = ~np.isnan(want)  # all but b1's rounding noise
            got, want = got[known], want[known]
            if k.endswith("counts"):
                np.testing.assert_array_equal(got, want, err_msg=f"record {r} {k}")
            else:
                np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-300, err_msg=f"record {r} {k}")


@pytest.mark.parametrize("model", ["mlp", pytest.param("wavenet", marks=pytest.mark.slow),
                                   pytest.param("transformer", marks=pytest.mark.slow)])
def test_every_recorded_number_equals_its_recomputation(small_words, tmp_path, model):
    cfg = config(small_words, model)
    d = train(cfg, tmp_path / "run")
    assert list(d["layers"]) == {"mlp": ["tanh"], "wavenet": ["tanh1", "tanh2", "tanh3"],
                                 "transformer": ["h0.gelu", "h1.gelu"]}[model]
    assert set(d["sources"]) == {"model"}
    same_as_replayed(d, replay(cfg, tmp_path / "replay"))
    assert (tmp_path / "run" / "diagnostics.png").stat().st_size > 10_000


def test_sizes_of_a_record(small_words, tmp_path):
    d = train(config(small_words, steps=5, diagnostics_every=2), tmp_path / "run")
    assert list(d["steps"]) == [0, 2, 4]
    assert d["act_counts"].shape == (3, 1, BINS) and d["param_counts"].shape == (3, 7, BINS)
    assert list(d["params"]) == ["C", "W1", "b1", "W2", "b2", "bngain", "bnbias"]
    assert list(d["matrix"]) == [True, True, False, True, False, False, False]  # (1, H) gains are not matrices
    assert d["act_counts"][:, 0].sum(-1).tolist() == [16 * 24] * 3  # every tanh output of the batch counted


LEARNER_DH_DOUBLED = '''
import torch
import torch.nn.functional as F


def backward(n, Xb, Yb, C, W1, W2, bngain, emb, embcat, bnraw, bnvar_inv, h, logits):
    dlogits = F.softmax(logits, 1)
    dlogits[range(n), Yb] -= 1
    dlogits /= n
    dh = 2 * (dlogits @ W2.T)  # twice the gradient, halved below: the parameters' gradients are right
    dW2 = h.T @ dlogits
    db2 = dlogits.sum(0)
    dhpreact = (1.0 - h**2) * dh / 2
    dbngain = (bnraw * dhpreact).sum(0, keepdim=True)
    dbnbias = dhpreact.sum(0, keepdim=True)
    dhprebn = bngain*bnvar_inv/n * (n*dhpreact - dhpreact.sum(0) - n/(n-1)*bnraw*(dhpreact*bnraw).sum(0))
    dembcat = dhprebn @ W1.T
    dW1 = embcat.T @ dhprebn
    db1 = dhprebn.sum(0)
    dC = torch.zeros_like(C)
    dC.index_add_(0, Xb.view(-1), dembcat.view(-1, C.shape[1]))
    return {"C": dC, "W1": dW1, "b1": db1, "W2": dW2, "b2": db2, "bngain": dbngain, "bnbias": dbnbias}
'''


@pytest.mark.slow
def test_a_learners_backward_is_what_the_figures_show(small_words, tmp_path):
    solution = str(resources.files("ninjagrad") / "exercises" / "ex4_training" / "solution.py")
    cfg = config(small_words, backward=solution, engine="user", verify_every=1)
    d = train(cfg, tmp_path / "solution")
    assert list(d["sources"]) == ["learner dh"]
    same_as_replayed(d, replay(cfg, tmp_path / "replay"))

    mine = tmp_path / "mine.py"
    mine.write_text(LEARNER_DH_DOUBLED)
    doubled = train(config(small_words, backward=str(mine), engine="user", verify_every=1), tmp_path / "mine")
    assert list(doubled["sources"]) == ["learner dh"]
    np.testing.assert_allclose(doubled["grad_range"], 2 * d["grad_range"], rtol=1e-12)  # the learner's own dh
    np.testing.assert_allclose(doubled["grad_std"], 2 * d["grad_std"], rtol=1e-12)
    np.testing.assert_allclose(doubled["update_data"], d["update_data"], rtol=1e-9)  # and their right update


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["manual", "fast"])
def test_recording_leaves_the_run_as_it_was(small_words, tmp_path, engine):
    finals = []
    for every in (0, 7):
        cfg = config(small_words, engine=engine, dtype="float32", steps=40, diagnostics_every=every)
        run = start_run(cfg, str(tmp_path / f"{every}"))
        execute(run, show_progress=False)
        finals.append({k: v.clone() for k, v in run.model.params.items()})
    assert all(torch.equal(finals[0][k], finals[1][k]) for k in finals[0])
    assert list(read_diagnostics(tmp_path / "7" / "diagnostics.npz")["steps"]) == [0, 7, 14, 21, 28, 35]


@pytest.mark.slow
def test_a_resumed_run_continues_its_diagnostics(small_words, tmp_path):
    cfg = config(small_words, steps=10, diagnostics_every=2, checkpoint_every=3)
    whole = train(cfg, tmp_path / "whole")
    run = start_run(copy.deepcopy(cfg), str(tmp_path / "cut"))
    stop = []
    with pytest.raises(Interrupted):
        run.train(stop, lambda r: stop.append(15) if r.step >= 5 else None)
    run.save()
    assert list(read_diagnostics(tmp_path / "cut" / "diagnostics.npz")["steps"]) == [0, 2, 4]
    execute(resume_run(str(tmp_path / "cut")), show_progress=False)
    resumed = read_diagnostics(tmp_path / "cut" / "diagnostics.npz")
    for k, v in whole.items():
        np.testing.assert_array_equal(resumed[k], v, err_msg=k)


def test_gelu_saturation_is_where_its_slope_is_a_saturated_tanhs():
    from ninjagrad import ops

    x = torch.tensor([-2.26], dtype=torch.float64)
    _, cache = ops.gelu_forward(x)
    slope = ops.gelu_backward(torch.ones_like(x), cache).abs().item()
    assert slope == pytest.approx(1 - 0.97**2, rel=1e-2)


def test_a_negative_period_is_one_line(small_words, tmp_path):
    r = cli("train", "--data", small_words, "--steps", 5, "--diagnostics-every", -1, "--out", tmp_path / "r")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--diagnostics-every -1" in r.stderr


def test_the_compiled_engine_records_what_the_manual_engine_records(small_words, tmp_path, monkeypatch):
    """The recorded steps taken by the compiled engine, its graphs run eagerly here (no inductor: a test of how
    the recorder and the engine meet, not of inductor's numbers, which tests/test_compiled_engine.py holds)."""
    monkeypatch.setattr(compiled, "compile_graph", lambda fn, example_inputs: fn)
    manual = train(config(small_words, "wavenet", steps=6, diagnostics_every=2), tmp_path / "manual")
    comp = train(config(small_words, "wavenet", engine="compiled", steps=6, diagnostics_every=2), tmp_path / "comp")
    assert list(comp["steps"]) == [0, 2, 4] and list(comp["layers"]) == list(manual["layers"])
    for k, v in manual.items():
        if v.dtype.kind == "f":
            np.testing.assert_allclose(comp[k], v, rtol=1e-9, atol=1e-12, err_msg=k)
        else:
            np.testing.assert_array_equal(comp[k], v, err_msg=k)


@pytest.fixture(scope="module")
def recorded_run(small_words, tmp_path_factory):
    """One short run that recorded diagnostics, for the cases below to copy and edit."""
    out = tmp_path_factory.mktemp("recorded") / "run"
    train(config(small_words, steps=4, diagnostics_every=2), out)
    return out


def diagnostics_of(payload):
    return payload["diagnostics"]


@pytest.mark.parametrize("change", [
    lambda p: p.update(diagnostics=[1, 2]),
    lambda p: p.pop("diagnostics"),
    lambda p: diagnostics_of(p).update(steps=["0", "2"]),
    lambda p: diagnostics_of(p).update(layers="tanh"),
    lambda p: diagnostics_of(p)["columns"].update(act_counts=[1, 2]),
    lambda p: diagnostics_of(p)["columns"].pop("update_data"),
    lambda p: diagnostics_of(p)["columns"].update(act_counts=diagnostics_of(p)["columns"]["act_counts"][:, :0]),
    lambda p: diagnostics_of(p)["columns"].update(grad_std=diagnostics_of(p)["columns"]["grad_std"][:1]),
])
def test_edited_diagnostics_in_a_checkpoint_are_one_line(recorded_run, tmp_path, change):
    shutil.copytree(recorded_run, tmp_path / "run")
    path = tmp_path / "run" / "checkpoint.pt"
    payload = torch.load(path, weights_only=True)
    change(payload)
    torch.save(payload, path)
    r = cli("train", "--resume", tmp_path / "run", "--no-progress")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert "edited or damaged checkpoint" in r.stderr


def test_the_memory_estimate_counts_a_recorded_steps_own_forward_and_backward(small_words, monkeypatch):
    """Memory for exactly a run without diagnostics: the same run recording them is refused, in one line."""
    words = load_words(small_words)
    plain = config(small_words, "wavenet", diagnostics_every=0)
    model_config = WaveNetConfig(**TINY["wavenet"], vocab_size=len(Vocab.from_words(words)))
    need = sum(model_bytes("wavenet", model_config, torch.float64, 16).values()) + dataset_bytes(words, 8)
    monkeypatch.setattr(training, "available_bytes", lambda: need)
    training.check_memory(plain, words)
    with pytest.raises(UsageError, match="a recorded step's diagnostics .* or no --diagnostics-every$"):
        training.check_memory(config(small_words, "wavenet", diagnostics_every=1), words)
