"""The fast engine computes the manual engine's numbers: gradients, steps, runs, checkpoints.

float64 is held to autograd at ~1e-12 (there the kernels use the C library's exp and tanh, and only
summation order differs); float32 to the manual engine at a relative 1e-4 of each gradient's scale
(BLAS and torch round differently, and exp/tanh are the vectorised versions, a few ulp from libm).
"""
import json

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ninjagrad.engines import autograd_loss_and_grads, make_engine
from ninjagrad.engines.fast import FastEngine
from ninjagrad.errors import UsageError
from ninjagrad.models import MLP, MLPConfig, WaveNet, WaveNetConfig
from ninjagrad.optim import AdamW

from .helpers import float32_mismatches


def make_fast_engine(model, X, Y, optimizer=None):
    return make_engine("fast", model, X, Y, optimizer)


def setup(B=32, T=3, E=10, H=64, V=27, N=500, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randint(0, V, (N, T), generator=g)
    Y = torch.randint(0, V, (N,), generator=g)
    model = MLP.create(MLPConfig(vocab_size=V, block_size=T, n_embd=E, n_hidden=H),
                       torch.Generator().manual_seed(seed + 1), dtype=dtype)
    ix = torch.randint(0, N, (B,), generator=g)
    if B >= 3:
        ix[1] = ix[0]  # the same example twice: every character of it repeats in dC's sum
    return model, X, Y, ix


def clone_model(model):
    return MLP(model.config, {k: v.clone() for k, v in model.params.items()})


def rel(a, b):
    return (a - b).abs().max().item() / max(b.abs().max().item(), 1e-30)


@pytest.mark.parametrize("B", [2, 3, 32])
def test_float64_gradients_match_autograd(B):
    """B=2 included: batchnorm then maps each column to +-1 whatever its inputs, so everything below
    it has a ~zero gradient; float32 can only show rounding noise there, float64 shows it is right."""
    model, X, Y, ix = setup(B=B)
    loss, grads = make_fast_engine(model, X, Y).loss_and_grads(ix)
    ref_loss, ref = autograd_loss_and_grads(model, X[ix], Y[ix])
    assert abs(loss - ref_loss) <= 1e-12 * abs(ref_loss)
    largest = max(r.abs().max().item() for r in ref.values())
    for k, r in ref.items():
        assert grads[k].shape == r.shape, k
        assert grads[k].dtype == r.dtype, k
        # b1's true gradient is 0 (batchnorm removes it): compare it against the step's largest gradient
        tol = 1e-10 * (r.abs().max().item() if k != "b1" else largest)
        assert (grads[k] - r).abs().max().item() <= tol, k


@settings(max_examples=20, deadline=None)
@given(B=st.integers(4, 70), T=st.integers(1, 5), E=st.integers(1, 12), H=st.integers(1, 80),
       V=st.integers(2, 40), seed=st.integers(0, 10_000))
# batches of 4 or 5 whose contexts are nearly all the same, where batchnorm's 1/sqrt(var + eps) magnifies
# how the mean was rounded: a mean from W1's linearity put b1's gradient 6x further from the truth than
# the manual engine's, a one-pass (Welford) mean W1's 2.7x, and leaving b1 out of hprebn C's 60x
@example(B=4, T=1, E=2, H=16, V=5, seed=1)
@example(B=4, T=1, E=6, H=16, V=5, seed=1)
@example(B=5, T=1, E=9, H=29, V=3, seed=7571)
@example(B=14, T=1, E=7, H=28, V=2, seed=7)  # two contexts: the float32 mean once made dC 5x less accurate
def test_float32_gradients_match_manual_engine(B, T, E, H, V, seed):
    model, X, Y, ix = setup(B, T, E, H, V, dtype=torch.float32, seed=seed)
    loss, grads = make_fast_engine(model, X, Y).loss_and_grads(ix)
    ref_loss, ref = make_engine("manual", model, X, Y).loss_and_grads(ix)
    model64 = MLP(model.config, {k: v.double() for k, v in model.params.items()})
    _, truth = autograd_loss_and_grads(model64, X[ix], Y[ix])
    assert abs(loss - ref_loss) <= 1e-5 * max(1.0, abs(ref_loss))
    assert float32_mismatches(grads, ref, truth) == []


@pytest.mark.parametrize("B", [8, 32])
def test_wrong_gradient_would_be_caught(B):
    """The comparison above fails for a gradient off by the Bessel factor n/(n-1), and only for it."""
    model, X, Y, ix = setup(B=B, dtype=torch.float32)
    _, grads = make_fast_engine(model, X, Y).loss_and_grads(ix)
    _, ref = make_engine("manual", model, X, Y).loss_and_grads(ix)
    model64 = MLP(model.config, {k: v.double() for k, v in model.params.items()})
    _, truth = autograd_loss_and_grads(model64, X[ix], Y[ix])
    assert float32_mismatches(grads, ref, truth) == []
    grads["bngain"] = grads["bngain"] * B / (B - 1)
    assert float32_mismatches(grads, ref, truth) == ["bngain"]


def test_loss_and_grads_leaves_parameters_and_repeats_exactly():
    model, X, Y, ix = setup(dtype=torch.float32)
    before = {k: v.clone() for k, v in model.params.items()}
    engine = make_fast_engine(model, X, Y)
    l1, g1 = engine.loss_and_grads(ix)
    l2, g2 = engine.loss_and_grads(ix)  # dC must have been cleared in between
    assert l1 == l2
    for k in g1:
        assert torch.equal(g1[k], g2[k]), k
        assert torch.equal(model.params[k], before[k]), k
    untouched = torch.ones(model.config.vocab_size, dtype=torch.bool)
    untouched[X[ix].unique()] = False
    assert g1["C"][untouched].abs().max().item() == 0.0  # rows no example used get exactly zero


@pytest.mark.parametrize("dtype,tol,V", [
    (torch.float64, 1e-11, 27), (torch.float32, 2e-5, 27),  # C updated whole: 27 rows <= 16 * 3 lookups
    (torch.float64, 1e-11, 300),  # row by row (and the training set held as int32)
])
def test_steps_match_manual_engine(dtype, tol, V):
    model, X, Y, _ = setup(dtype=dtype, H=50, V=V)
    twin = clone_model(model)
    fast, manual = make_fast_engine(model, X, Y), make_engine("manual", twin, X, Y)
    g = torch.Generator().manual_seed(5)
    for i in range(30):
        ix = torch.randint(0, X.shape[0], (16,), generator=g)
        lf, lm = fast.step(ix, 0.1), manual.step(ix, 0.1)
        assert abs(lf - lm) <= 10 * tol * abs(lm), i
        assert not fast.gviews["C"].any(), i  # dC is all zero again for the next step
    fast.sync_to_model()  # the engine updates its own copy; train.py syncs before it reads the model
    for k in model.params:
        assert rel(model.params[k], twin.params[k]) <= 10 * tol, k


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_every_instruction_set_computes_the_same_step(dtype):
    """The C kernel is compiled once per instruction set (AVX-512, AVX2 + FMA, baseline) and runs the
    best one this CPU has: every one this CPU can run must give the same numbers, up to rounding
    (fused multiply-adds round once where the baseline rounds twice)."""
    from ninjagrad.engines.fast import load_step_kernel

    kernel = load_step_kernel()
    chosen = kernel.isa()
    assert chosen == kernel.available_isas()[0]
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    out = {}
    try:
        for isa in kernel.available_isas():
            kernel.use_isa(isa)
            model, X, Y, ix = setup(B=40, H=37, dtype=dtype)
            engine = make_fast_engine(model, X, Y)
            losses = [engine.step(ix, 0.1) for _ in range(3)]
            engine.sync_to_model()
            out[isa] = losses, model.params
    finally:
        kernel.use_isa(chosen)
    ref_losses, ref = out[chosen]
    for isa, (losses, params) in out.items():
        assert np.allclose(losses, ref_losses, rtol=tol, atol=0), isa
        for k in params:
            assert rel(params[k], ref[k]) <= tol, (isa, k)
    with pytest.raises(ValueError, match="no kernel"):
        kernel.use_isa("sse9")


def c_exp_tanh(isa):
    """fast_step.c's float32 exp and tanh, compiled for `isa`, over an array."""
    def run(x, e, t):
        from ninjagrad.engines.fast import load_step_kernel

        kernel = load_step_kernel()
        chosen = kernel.isa()
        kernel.use_isa(isa)
        try:
            kernel.exp_tanh(x, e, t)
        finally:
            kernel.use_isa(chosen)
    return run


def available_isas():
    from ninjagrad.engines.fast import load_step_kernel

    return load_step_kernel().available_isas()


@pytest.mark.parametrize("exp_tanh", [c_exp_tanh(isa) for isa in available_isas()], ids=available_isas())
def test_vectorised_exp_and_tanh_are_accurate(exp_tanh):
    x = np.concatenate([np.linspace(-87, 0, 100_001), np.linspace(-12, 12, 100_001),
                        np.linspace(-1e-3, 1e-3, 1001), [0.0, -0.0, 1e-30, -1e-30]]).astype(np.float32)
    e, t = np.empty_like(x), np.empty_like(x)
    exp_tanh(x, e, t)
    ulp = np.spacing(np.float32(1.0))  # 2^-23
    x64 = x.astype(np.float64)
    ref_e = np.exp(x64)
    normal = x <= 0
    assert (np.abs(e[normal] - ref_e[normal]) / ref_e[normal]).max() <= 4 * ulp
    ref_t = np.tanh(x64)
    nz = ref_t != 0
    assert (np.abs(t[nz] - ref_t[nz]) / np.abs(ref_t[nz])).max() <= 4 * ulp
    assert t[-4] == 0.0 and not np.signbit(t[-4])  # tanh(+0) is +0


def test_unsupported_model_and_optimizer_are_usage_errors():
    wavenet = WaveNet.create(WaveNetConfig(vocab_size=5, n_embd=2, n_hidden=4), torch.Generator().manual_seed(0))
    X, Y = torch.zeros(4, 8, dtype=torch.long), torch.zeros(4, dtype=torch.long)
    with pytest.raises(UsageError, match="wavenet"):
        make_fast_engine(wavenet, X, Y)
    model, X, Y, _ = setup()
    with pytest.raises(UsageError, match="adamw"):
        FastEngine(model, X, Y, AdamW())


def test_bad_minibatch_index_raises():
    model, X, Y, _ = setup(dtype=torch.float32)
    engine = make_fast_engine(model, X, Y)
    with pytest.raises((IndexError, ValueError)):
        engine.loss_and_grads(torch.tensor([0, X.shape[0] + 5]))


def test_strided_and_int32_indices_read_the_right_rows():
    """The kernels read the indices from their address: a strided view or another integer dtype must be
    copied to contiguous int64 first, or the step would read the wrong rows of the training set."""
    model, X, Y, ix = setup(B=16)
    twin = clone_model(model)
    wide = torch.stack([ix, torch.zeros_like(ix)], 1)  # (B, 2): its column 0 is ix with a stride of 2
    a, b = make_fast_engine(model, X, Y), make_fast_engine(twin, X, Y)
    for view in (wide[:, 0], ix.to(torch.int32)):
        assert a.step(view, 0.1) == b.step(ix.clone(), 0.1)
    a.sync_to_model()
    b.sync_to_model()
    for k in model.params:
        assert torch.equal(model.params[k], twin.params[k]), k


# --- the training loop ---------------------------------------------------------------------------

def word_file(tmp_path, n=300, seed=0):
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghij"))
    words = ["".join(rng.choice(letters, rng.integers(2, 7))) for _ in range(n)]
    path = tmp_path / "words.txt"
    path.write_text("\n".join(words) + "\n")
    return path


def run_cli(args):
    from ninjagrad.cli import main

    return main(args)


def test_train_resume_equals_uninterrupted_run(tmp_path):
    from ninjagrad.checkpoint import load_checkpoint

    data = word_file(tmp_path)
    common = ["train", "--engine", "fast", "--data", str(data), "--n-hidden", "32", "--batch-size", "16",
              "--device", "cpu", "--no-progress", "--samples", "2", "--verify-every", "25",
              "--lr-decay-step", "40"]
    assert run_cli(common + ["--steps", "60", "--out", str(tmp_path / "full")]) == 0
    assert run_cli(common + ["--steps", "30", "--out", str(tmp_path / "half")]) == 0
    # continue the 30-step run to 60 by editing its saved settings, as a longer run would
    payload = load_checkpoint(tmp_path / "half")
    payload["train_config"]["steps"] = 60
    from ninjagrad.checkpoint import save_checkpoint
    save_checkpoint(tmp_path / "half" / "checkpoint.pt", {k: v for k, v in payload.items()
                                                          if k not in ("format", "version")})
    assert run_cli(["train", "--resume", str(tmp_path / "half"), "--no-progress"]) == 0
    a, b = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "half")
    for k, v in a["state"]["params"].items():
        assert torch.equal(v, b["state"]["params"][k]), k
    summary = json.loads((tmp_path / "full" / "summary.json").read_text())
    assert summary["engine"] == "fast" and summary["steps"] == 60 and summary["train_seconds"] > 0


@pytest.mark.slow
def test_resume_runs_large_steps_the_way_the_checkpoint_says(tmp_path, monkeypatch):
    """From B*H = 2^17 on several cores the engine picks its step by timing, and the ways sum in different
    orders. The checkpoint keeps the pick, so a resumed run runs the way the interrupted one did whatever
    the timing would say now, and ends bit for bit where the uninterrupted run ends."""
    from ninjagrad.checkpoint import load_checkpoint, save_checkpoint
    from ninjagrad.engines import fast as F

    if F.cores() < 2:
        pytest.skip("one core: the engine has no timed choice to keep")
    data = word_file(tmp_path)
    common = ["train", "--engine", "fast", "--data", str(data), "--n-hidden", "64", "--batch-size", "2048",
              "--device", "cpu", "--no-progress", "--samples", "0", "--lr-decay-step", "4"]
    monkeypatch.setattr(F, "fastest", lambda times: 2)  # the whole-batch step, BLAS on every core
    assert run_cli(common + ["--steps", "6", "--out", str(tmp_path / "full")]) == 0
    assert run_cli(common + ["--steps", "3", "--out", str(tmp_path / "half")]) == 0
    payload = load_checkpoint(tmp_path / "half")
    assert payload["engine"] == {"plans": [{"batch": 2048, "blocks": None, "threads": min(F.cores(), 256)}]}
    payload["train_config"]["steps"] = 6
    save_checkpoint(tmp_path / "half" / "checkpoint.pt", {k: v for k, v in payload.items()
                                                          if k not in ("format", "version")})
    monkeypatch.setattr(F, "fastest", lambda times: 1)  # the timing now says: blocked, on every core
    assert run_cli(common + ["--steps", "6", "--out", str(tmp_path / "other")]) == 0
    assert run_cli(["train", "--resume", str(tmp_path / "half"), "--no-progress"]) == 0
    full, half, other = (load_checkpoint(tmp_path / d)["state"]["params"] for d in ("full", "half", "other"))
    for k in full:
        assert torch.equal(full[k], half[k]), k
    assert any(not torch.equal(full[k], other[k]) for k in full)  # the pick matters: this test can fail


@pytest.mark.parametrize("engine_state", [
    {"plans": [{"batch": 16, "blocks": [1, 0, 10, 99], "threads": 1}]},  # blocks past n_hidden
    {"plans": [{"batch": 1, "blocks": None, "threads": 1}]},  # a batch batchnorm cannot take
    {"plans": [{"batch": 16, "blocks": "wide", "threads": 1}]},
    {"plans": [{"batch": 16}]},
    {"plans": 7},
])
def test_resume_with_a_broken_engine_state_is_one_line(tmp_path, capsys, engine_state):
    from ninjagrad.checkpoint import load_checkpoint, save_checkpoint

    data = word_file(tmp_path)
    out = tmp_path / "run"
    assert run_cli(["train", "--engine", "fast", "--data", str(data), "--n-hidden", "32", "--batch-size", "16",
                    "--steps", "4", "--device", "cpu", "--no-progress", "--samples", "0", "--out", str(out)]) == 0
    payload = load_checkpoint(out)
    payload["engine"] = engine_state
    save_checkpoint(out / "checkpoint.pt", {k: v for k, v in payload.items() if k not in ("format", "version")})
    before = (out / "checkpoint.pt").read_bytes()
    capsys.readouterr()
    assert run_cli(["train", "--resume", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "fast engine" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert (out / "checkpoint.pt").read_bytes() == before  # nothing already written is lost


@pytest.mark.parametrize("N", [7, 500, 182_625])
def test_one_draw_of_n_minibatches_equals_n_draws(N):
    """train.py draws a chunk's minibatches as one (n, B) tensor; that relies on torch's CPU generator
    giving the same numbers as n draws of (B,), and leaving the same state behind."""
    a, b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    chunk = torch.randint(0, N, (9, 32), generator=a)
    one_by_one = torch.stack([torch.randint(0, N, (32,), generator=b) for _ in range(9)])
    assert torch.equal(chunk, one_by_one)
    assert torch.equal(a.get_state(), b.get_state())


def test_chunked_run_equals_one_step_at_a_time(tmp_path, monkeypatch):
    """Chunks of steps (FastEngine.chunk_size) give the run one step a call gives: the same losses, evaluations
    and parameters, with checkpoints, evaluations, verifications and the lr decay inside the run."""
    from ninjagrad.checkpoint import load_checkpoint

    data = word_file(tmp_path)
    common = ["train", "--engine", "fast", "--data", str(data), "--n-hidden", "24", "--batch-size", "8",
              "--device", "cpu", "--no-progress", "--samples", "0", "--steps", "230", "--checkpoint-every", "100",
              "--eval-every", "70", "--verify-every", "45", "--lr-decay-step", "133"]
    assert FastEngine.MAX_CHUNK > 1
    assert run_cli(common + ["--out", str(tmp_path / "chunked")]) == 0
    monkeypatch.setattr(FastEngine, "MAX_CHUNK", 1)
    assert run_cli(common + ["--out", str(tmp_path / "single")]) == 0
    a, b = load_checkpoint(tmp_path / "chunked"), load_checkpoint(tmp_path / "single")
    assert torch.equal(a["losses"], b["losses"]) and len(a["losses"]) == 230
    assert a["evals"] == b["evals"] and [e[0] for e in a["evals"]] == [70, 140, 210, 230]  # and the last step's
    assert torch.equal(a["rng"], b["rng"])
    for k, v in a["state"]["params"].items():
        assert torch.equal(v, b["state"]["params"][k]), k


def test_chunks_stop_at_every_event():
    from ninjagrad.train import chunk_length

    steps, periods, decay = 1000, [0, 300, 250], 420  # no verification, checkpoints, evaluations
    lengths, i = [], 0
    while i < steps:
        n = chunk_length(i, steps, 64, periods, decay)
        assert all((j % 300) and (j % 250) and j != 420 for j in range(i + 1, i + n)), (i, n)
        lengths.append(n)
        i += n
    assert i == steps and max(lengths) == 64 and lengths[:4] == [64, 64, 64, 58]


def test_short_run_tracks_autograd(tmp_path):
    data = word_file(tmp_path, n=400, seed=1)
    losses = {}
    for engine in ("fast", "autograd"):
        out = tmp_path / engine
        assert run_cli(["train", "--engine", engine, "--data", str(data), "--steps", "150", "--n-hidden", "32",
                        "--device", "cpu", "--no-progress", "--samples", "0", "--out", str(out)]) == 0
        losses[engine] = json.loads((out / "summary.json").read_text())["val_loss"]
    assert abs(losses["fast"] - losses["autograd"]) <= 1e-3


# --- the GPU path --------------------------------------------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="the CUDA-graph engine needs a CUDA GPU; "
                          "this PyTorch sees none")


@cuda
def test_cuda_graph_engine_matches_manual_engine():
    from ninjagrad.engines.fast_cuda import FastCUDAEngine

    model, X, Y, _ = setup(dtype=torch.float64, H=50)
    model = MLP(model.config, {k: v.cuda() for k, v in model.params.items()})
    twin = clone_model(model)
    X, Y = X.cuda(), Y.cuda()
    fast, manual = make_fast_engine(model, X, Y), make_engine("manual", twin, X, Y)
    assert isinstance(fast, FastCUDAEngine)
    g = torch.Generator().manual_seed(5)
    for i in range(20):
        ix = torch.randint(0, X.shape[0], (16,), generator=g).cuda()
        lr = 0.1 if i < 10 else 0.01  # a new lr must not need a new graph
        assert abs(fast.step(ix, lr) - manual.step(ix, lr)) <= 1e-10, i
    for k in model.params:
        assert rel(model.params[k], twin.params[k]) <= 1e-10, k
    ix = torch.randint(0, X.shape[0], (16,), generator=g).cuda()
    _, grads = fast.loss_and_grads(ix)
    _, ref = autograd_loss_and_grads(model, X[ix], Y[ix])
    for k in ("C", "W1", "W2", "bngain"):
        assert rel(grads[k], ref[k]) <= 1e-10, k


def three_float64_steps_match(fast, manual, model, twin, X, B, seed):
    """Three float64 steps of both engines on the same minibatches give the same losses and parameters."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(3):
        ix = torch.randint(0, X.shape[0], (B,), generator=g)
        assert abs(fast.step(ix, 0.1) - manual.step(ix, 0.1)) <= 1e-11
    fast.sync_to_model()
    for k in model.params:
        assert rel(model.params[k], twin.params[k]) <= 1e-10, k


def test_fastest_candidate_is_kept_by_its_second_fastest_call():
    from ninjagrad.engines.fast import fastest

    assert fastest([[2.0, 2.1, 2.0], [1.0, 1.1, 1.2]]) == 1
    assert fastest([[0.1, 3.0, 3.0], [1.0, 1.1, 1.2]]) == 1  # one lucky call does not decide
    assert fastest([[5.0], [4.0]]) == 1  # a single call is its own second-fastest


@pytest.mark.slow
def test_large_batches_time_their_candidates_once_without_touching_the_run():
    """From B*H = 2^17 on several cores the engine times three ways to run a step on minibatches of its
    own, updating nothing, keeps one, and then computes the manual engine's numbers."""
    from ninjagrad.engines import fast as F

    model, X, Y, _ = setup(dtype=torch.float64, H=64, N=3000)
    twin = clone_model(model)
    fast, manual = make_fast_engine(model, X, Y), make_engine("manual", twin, X, Y)
    B = 2048  # B * H = 2^17
    timed = []
    real = F.fastest
    F.fastest = lambda times: timed.append([len(t) for t in times]) or real(times)
    try:
        fast.prepare(B)
    finally:
        F.fastest = real
    n = 3 if F.cores() > 1 else 0
    assert timed == ([[F.TRIALS] * n] if n else [])
    assert not fast.gviews["C"].any()  # the trials left dC all zero
    fast.sync_to_model()
    for k in model.params:  # and updated nothing
        assert torch.equal(model.params[k], twin.params[k]), k
    three_float64_steps_match(fast, manual, model, twin, X, B, seed=3)


@pytest.mark.parametrize("V,blocked", [(27, True), (300, False)])
def test_mid_sized_batches_take_the_blocked_step_without_trials(V, blocked):
    """From B*H = 2^16 the blocked step runs on one core (it beat the whole-batch step by 1.3-1.9x at every
    such shape measured), with no timed trials below 2^17, so the run's numbers do not depend on timing;
    a vocabulary beyond BLOCKED_MAX_VOCAB keeps the whole-batch step."""
    model, X, Y, _ = setup(dtype=torch.float64, H=64, N=3000, V=V)
    twin = clone_model(model)
    fast, manual = make_fast_engine(model, X, Y), make_engine("manual", twin, X, Y)
    B = 1024  # B * H = 2^16
    assert len(fast.candidates(B)) == 1  # nothing to time
    fast.prepare(B)
    blocks, threads = fast.plans[B].blocks, fast.plans[B].threads
    assert (blocks is not None) == blocked and threads == 1
    if blocked:
        assert blocks.tolist()[:2] == [1, 0]  # one group: this thread
    three_float64_steps_match(fast, manual, model, twin, X, B, seed=8)


def test_engine_keeps_its_own_copy_until_synced():
    """The engine updates its own parameters (W2 kept transposed); sync_to_model writes them into the
    model, and sync_from_model takes the model's (a resume) for the next step."""
    model, X, Y, ix = setup(dtype=torch.float64, H=20)
    before = {k: v.clone() for k, v in model.params.items()}
    twin = clone_model(model)
    fast, manual = make_fast_engine(model, X, Y), make_engine("manual", twin, X, Y)
    fast.step(ix, 0.1), manual.step(ix, 0.1)
    assert all(torch.equal(model.params[k], before[k]) for k in model.params)  # not yet written back
    fast.sync_to_model()
    for k in model.params:
        assert rel(model.params[k], twin.params[k]) <= 1e-12, k
    with torch.no_grad():  # the model changes behind the engine's back, as a resume changes it
        for k in model.params:
            model.params[k].copy_(before[k])
            twin.params[k].copy_(before[k])
    fast.sync_from_model()
    assert abs(fast.step(ix, 0.1) - manual.step(ix, 0.1)) <= 1e-12
    fast.sync_to_model()
    for k in model.params:
        assert rel(model.params[k], twin.params[k]) <= 1e-12, k


def test_vocabulary_beyond_one_byte_matches_autograd():
    """Over 256 characters the training set is held as int32 rather than uint8: the same gradients."""
    model, X, Y, ix = setup(B=16, H=24, V=300, N=400)
    fast = make_fast_engine(model, X, Y)
    assert fast.XY.dtype == np.int32
    loss, grads = fast.loss_and_grads(ix)
    ref_loss, ref = autograd_loss_and_grads(model, X[ix], Y[ix])
    assert abs(loss - ref_loss) <= 1e-12 * abs(ref_loss)
    for k in ("C", "W1", "W2", "b2", "bngain", "bnbias"):
        assert (grads[k] - ref[k]).abs().max().item() <= 1e-10 * ref[k].abs().max().item(), k


def test_released_buffers_come_back_with_the_same_numbers():
    """The training loop frees the activations' arena before each evaluation (release_buffers); the
    steps after it must be those of an engine that never let go, and the plan keeps its choice."""
    model, X, Y, _ = setup(dtype=torch.float32, H=30)
    twin = clone_model(model)
    a, b = make_fast_engine(model, X, Y), make_fast_engine(twin, X, Y)
    g = torch.Generator().manual_seed(4)
    for i in range(6):
        ixs = torch.randint(0, X.shape[0], (3, 16), generator=g)
        if i % 2:
            a.release_buffers()
            assert all(plan.step is None for plan in a.plans.values())
        assert a.steps(ixs, 0.1) == b.steps(ixs, 0.1), i
    assert a.plans[16].step is not None
    a.sync_to_model(), b.sync_to_model()
    for k in model.params:
        assert torch.equal(model.params[k], twin.params[k]), k


def test_c_kernel_rejects_bad_arguments():
    """The C Step checks what it is given (types, shapes, arena sizes, the minibatch) instead of reading
    past the end of an array."""
    model, X, Y, ix = setup(dtype=torch.float32, H=20)
    e = make_fast_engine(model, X, Y)
    V, E, H = model.config.vocab_size, model.config.n_embd, model.config.n_hidden
    ixn = np.ascontiguousarray(ix[:16].numpy())
    losses = np.empty(1)

    def step(**change):
        args = dict(P=e.P, G=e.G, X=e.Xnp, Y=e.Ynp, V=V, E=E, H=H, B=16, blocks=None)
        args.update(change)
        return e.kernel.Step(**args)

    assert step().run(ixn, 0.1, True, losses) == 1 and np.isfinite(losses[0])
    with pytest.raises(ValueError, match="arenas too small"):
        step(P=e.P[:-40])
    with pytest.raises(TypeError):
        step(G=e.G.astype(np.float64))
    with pytest.raises(TypeError):
        step(X=e.Xnp.astype(np.int64), Y=e.Ynp.astype(np.int64))
    with pytest.raises(ValueError, match="blocks"):
        step(blocks=np.array([0, 20]))
    with pytest.raises(ValueError, match="bad shapes"):
        step(B=1)  # a batch of one
    with pytest.raises(ValueError, match="bad shapes"):
        step(Y=e.Ynp[:-1])  # one target fewer than contexts
    with pytest.raises(ValueError, match="contiguous"):
        step(P=np.repeat(e.P, 2)[::2])
    good = step()
    with pytest.raises(ValueError, match="losses"):
        good.run(np.stack([ixn, ixn]), 0.1, True, losses)  # more steps than losses
    with pytest.raises(ValueError, match="ixs"):
        good.run(ixn[:15], 0.1, True, losses)  # not a batch of 16
    with pytest.raises(ValueError, match="ixs"):
        good.run(ixn.astype(np.int32), 0.1, True, losses)
    with pytest.raises((ValueError, BufferError)):
        good.run(np.stack([ixn, ixn], 1)[:, 0], 0.1, True, losses)  # strided
    with pytest.raises(TypeError):
        e.kernel.Step(e.P)
