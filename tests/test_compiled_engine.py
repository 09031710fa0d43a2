"""The compiled engine: the manual engine's steps to float32 rounding, autograd's gradients, and runs
that verify and resume like every engine's. Compiling costs seconds (tens on a cold inductor cache),
so each test compiles few graphs, at small shapes."""
import math

import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

from ninjagrad.engines import autograd_loss_and_grads, make_engine
from ninjagrad.engines.inductor_passes import Rewrites, tanh_float32
from ninjagrad.models import MODELS
from ninjagrad.optim import make_optimizer
from ninjagrad.train import TrainConfig

from .helpers import rel_err
from .model_checks import perturb, resume_matches

SMALL = {"mlp": {"n_embd": 4, "n_hidden": 16}, "wavenet": {"n_embd": 6, "n_hidden": 12},
         "transformer": {"n_embd": 12, "n_head": 3, "n_layer": 2}}


# --- the graph rewrites, without compiling ---------------------------------------------------------

def ulps(approx: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """|approx - exact| in units of the last place of exact rounded to float32."""
    f = exact.float().abs()
    return (approx.double() - exact).abs() / (f.nextafter(torch.tensor(math.inf)) - f).double()


def test_tanh_float32_is_tanh_to_a_few_ulps():
    x = torch.linspace(-20, 20, 2_000_001)
    x = torch.cat([x, torch.logspace(-30, 1, 10_000), -torch.logspace(-30, 1, 10_000)])
    err, a = ulps(tanh_float32(x), torch.tanh(x.double())), x.abs()
    assert err[a < 0.55].max() <= 3.5  # the rational fit
    assert err[a >= 0.55].max() <= 1.5  # 1 - 2 / (exp(2|x|) + 1)
    assert err[a >= 2].max() <= 0.6  # where 1 - h^2, tanh's derivative, rests on h's last bits
    special = torch.tensor([0.0, -0.0, math.inf, -math.inf, 1e4, -1e4, math.nan])
    got = tanh_float32(special)
    assert got[:6].tolist() == [0.0, -0.0, 1.0, -1.0, 1.0, -1.0] and math.copysign(1, got[1]) < 0
    assert math.isnan(got[6])


def test_rewrites_keep_the_values():
    def f(x, v, y, a, b):
        # y is float64: its tanh is left alone
        return torch.tanh(x) * (v + 1e-5) ** -0.5, torch.tanh(y), a @ b, a @ torch.ones(a.shape[0], 16, 64)

    g = torch.Generator().manual_seed(0)
    args = (torch.randn(64, 16, generator=g) * 3, torch.rand(1, 16, generator=g), torch.randn(8, dtype=torch.float64),
            torch.randn(12, 8, 16, generator=g), torch.randn(12, 16, 8, generator=g))
    graph = make_fx(f, tracing_mode="fake")(*args)
    Rewrites()(graph.graph)
    graph.recompile()
    targets = [n.target for n in graph.graph.nodes]
    assert torch.ops.aten.pow.Tensor_Scalar not in targets and torch.ops.aten.rsqrt.default in targets
    assert targets.count(torch.ops.aten.tanh.default) == 1  # the float64 one
    assert targets.count(torch.ops.aten.bmm.default) == 1  # (12, 8, 16) @ (12, 16, 64): 64 columns are not small
    out, ref = graph(*args), f(*args)
    assert rel_err(out[0], ref[0]) < 1e-6 and torch.equal(out[1], ref[1]) and rel_err(out[2], ref[2]) < 1e-6


# --- the engine, step for step ---------------------------------------------------------------------

def data(V=27, T=8, N=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randint(0, V, (N, T), generator=g)
    X[: N // 4, : T // 2] = 0  # word starts: '.' padding, as real windows have
    return X, torch.randint(0, V, (N,), generator=g)


def engine_pair(model_name, dtype, block_size=8):
    """The manual and compiled engines on two copies of one (perturbed) model, and their data."""
    cls, config_cls = MODELS[model_name]
    config = config_cls(block_size=block_size, **SMALL[model_name])
    X, Y = data(T=block_size)
    engines = []
    for name in ("manual", "compiled"):
        model = perturb(cls.create(config, torch.Generator().manual_seed(1), dtype=dtype), scale=0.1)
        optimizer = make_optimizer(getattr(model, "default_optimizer", "sgd"))
        engines.append(make_engine(name, model, X, Y, optimizer))
    return engines


def run_both(manual, compiled, steps=6, B=16, lr=0.05):
    ixs = torch.randint(0, manual.Xtr.shape[0], (steps, B), generator=torch.Generator().manual_seed(3))
    ixs[0, 1] = ixs[0, 0]  # a repeated example
    return manual.steps(ixs, lr), compiled.steps(ixs, lr)


def assert_params_close(a, b, tol):
    for k, p in a.model.params.items():
        assert rel_err(b.model.params[k], p) <= tol, (k, rel_err(b.model.params[k], p))


@pytest.mark.slow
def test_wavenet_steps_match_the_manual_engine_and_gradients_match_autograd():
    manual, compiled = engine_pair("wavenet", torch.float32)
    before = {k: p.clone() for k, p in compiled.model.params.items()}
    compiled.prepare(16)  # compiles; runs no step
    assert all(torch.equal(before[k], p) for k, p in compiled.model.params.items())
    a, b = run_both(manual, compiled)
    assert max(abs(x - y) / x for x, y in zip(a, b)) <= 1e-5
    assert_params_close(manual, compiled, 1e-5)
    assert any(not torch.equal(before[k], p) for k, p in compiled.model.params.items())  # in place, the model's own

    ix = torch.arange(16)
    loss, grads = compiled.loss_and_grads(ix)
    ref_loss, ref = autograd_loss_and_grads(compiled.model, compiled.Xtr[ix], compiled.Ytr[ix])
    assert abs(loss - ref_loss) <= 1e-5 * ref_loss
    for k in ref:
        assert rel_err(grads[k], ref[k]) <= 1e-4, k

    losses = compiled.steps(torch.randint(0, 200, (4, 16), generator=torch.Generator().manual_seed(4)), 1e30)
    assert len(losses) == 2 and math.isfinite(losses[0]) and not math.isfinite(losses[1])  # the last one run


@pytest.mark.slow
def test_transformer_adamw_steps_match_the_manual_engine_in_float64():
    """AdamW divides each gradient by its own running size, so a gradient that is rounding noise (the
    keys' bias: softmax does not see a constant added to every score) moves its parameter by ~lr
    whatever the noise is, in float32. In float64 the noise stays far below AdamW's eps."""
    manual, compiled = engine_pair("transformer", torch.float64)
    a, b = run_both(manual, compiled, steps=5, lr=3e-3)
    assert max(abs(x - y) / x for x, y in zip(a, b)) <= 1e-12
    assert_params_close(manual, compiled, 1e-10)
    assert manual.optimizer.t == compiled.optimizer.t == 5
    for k in manual.model.params:
        assert rel_err(compiled.optimizer.m[k], manual.optimizer.m[k]) <= 1e-10, k
    ix = torch.arange(16)
    _, grads = compiled.loss_and_grads(ix)
    _, ref = autograd_loss_and_grads(compiled.model, compiled.Xtr[ix], compiled.Ytr[ix])
    for k in ref:
        assert rel_err(grads[k], ref[k]) <= 1e-10, k


@pytest.mark.slow
def test_mlp_steps_match_the_manual_engine():
    manual, compiled = engine_pair("mlp", torch.float32, block_size=3)
    a, b = run_both(manual, compiled)
    assert max(abs(x - y) / x for x, y in zip(a, b)) <= 1e-5
    assert_params_close(manual, compiled, 1e-5)


@pytest.mark.slow
def test_two_threads_take_the_same_steps_in_every_run():
    """On two threads inductor's scatter-add (the embedding's backward) would add in a different order in
    each run (it did at the transformer's default sizes); the engine compiles that op as ATen's serial
    kernel there, so two runs, as a run and its resumed self, are equal bit for bit."""
    cls, config_cls = MODELS["transformer"]
    X, Y = data(N=2000)
    ixs = torch.randint(0, 2000, (8, 32), generator=torch.Generator().manual_seed(5))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        params = []
        for _ in range(2):
            model = cls.create(config_cls(), torch.Generator().manual_seed(1))
            make_engine("compiled", model, X, Y, make_optimizer("adamw")).steps(ixs, 1e-3)
            params.append(model.params)
    finally:
        torch.set_num_threads(threads)
    for k in params[0]:
        assert torch.equal(params[0][k], params[1][k]), k


# --- through the training loop: --verify-every and resume ------------------------------------------

def small_cfg(words, model="wavenet", **kw):
    settings = dict(model=model, engine="compiled", steps=30, batch_size=16, data=str(words), checkpoint_every=10,
                    verify_every=7, num_samples=3, model_config={"block_size": 8, **SMALL[model]})
    return TrainConfig(**{**settings, **kw})


@pytest.mark.slow
def test_wavenet_run_verifies_against_autograd_and_resumes_exactly(small_words, tmp_path):
    """Verified at steps 0, 7, 14, 21 and 28 (train.py stops a run whose gradients disagree), stopped at
    step 14 (the engine takes chunks of steps, which end where a verification is due) and resumed: the
    same parameters and losses, bit for bit, as the run straight through."""
    straight, resumed = resume_matches(lambda: small_cfg(small_words), tmp_path, stop_at=14)
    assert straight.engine.name == resumed.engine.name == "compiled"


@pytest.mark.slow
def test_transformer_run_verifies_and_resumes_exactly(small_words, tmp_path):
    straight, resumed = resume_matches(lambda: small_cfg(small_words, model="transformer", lr=3e-3), tmp_path,
                                       stop_at=14)
    assert straight.engine.optimizer.t == resumed.engine.optimizer.t == 30
    for k, m in straight.engine.optimizer.m.items():
        assert torch.equal(m, resumed.engine.optimizer.m[k]), k
