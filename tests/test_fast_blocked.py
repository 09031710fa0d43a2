"""The fast engine's blocked step (fast_step_kernel.h, step_blocked) computes the manual engine's numbers.

Run through the fast engine's arenas (FastEngine builds them; the step is called directly, as the
engine's plan would call it, with a `blocks` layout): the loss and every gradient against autograd in float64 (~1e-10 of
each gradient's scale) and against the manual engine in float32 (test_fast_engine's tolerances),
block widths that do not divide H, more thread groups than blocks, B not a multiple of 16, repeated
rows, three steps with updates, and a bad index that must leave the parameters alone.
"""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ninjagrad.engines import autograd_loss_and_grads, make_engine
from ninjagrad.engines.fast import FastEngine, block_width, make_blocks
from ninjagrad.models import MLP, MLPConfig

from .helpers import float32_mismatches


def setup(B=37, T=3, E=10, H=50, V=27, N=400, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randint(0, V, (N, T), generator=g)
    Y = torch.randint(0, V, (N,), generator=g)
    model = MLP.create(MLPConfig(vocab_size=V, block_size=T, n_embd=E, n_hidden=H),
                       torch.Generator().manual_seed(seed + 1), dtype=dtype)
    ix = torch.randint(0, N, (B,), generator=g)
    if B >= 3:
        ix[1] = ix[0]  # the same example twice: its characters' rows of dC get two contributions
    return model, X, Y, ix


class Blocked:
    """The blocked step over a FastEngine's arenas: what the engine's plan will do with it."""

    def __init__(self, model, X, Y, B, ngroups, width):
        self.eng = FastEngine(model, X, Y)
        self.B = B
        self.blocks = make_blocks(model.config.n_hidden, ngroups, width)

    def run(self, ixs, lr, update):
        """Steps on ixs (n, B) by a new Step (its activations' arena starts as NaN: a pass that read what
        no pass wrote would show); returns (steps run, their losses)."""
        ixs = np.ascontiguousarray(np.atleast_2d(ixs), np.int64)
        losses = np.empty(ixs.shape[0])
        done = self.eng._new_step(self.B, self.blocks).run(ixs, lr, update, losses)
        return done, losses[:done]

    def loss_and_grads(self, ix):
        done, losses = self.run(ix.numpy(), 0.0, False)
        assert done == 1
        grads = {k: self.eng._as_model(k, g).clone() for k, g in self.eng.gviews.items()}
        self.eng.gviews["C"][...] = 0  # as the engine's loss_and_grads leaves it
        return losses[0], grads


@pytest.mark.parametrize("B,H,ngroups,width", [
    (37, 50, 2, 16),  # 50 = 16 + 16 + 16 + 2: the last block is narrow
    (3, 20, 3, 8),  # one block per group
    (5, 10, 3, 8),  # three groups for two blocks: one group has nothing to do
    (2, 9, 1, 8),  # batch of 2 (batchnorm's n-1 = 1), one thread
])
def test_float64_gradients_match_autograd(B, H, ngroups, width):
    model, X, Y, ix = setup(B=B, H=H)
    loss, grads = Blocked(model, X, Y, B, ngroups, width).loss_and_grads(ix)
    ref_loss, ref = autograd_loss_and_grads(model, X[ix], Y[ix])
    assert abs(loss - ref_loss) <= 1e-12 * abs(ref_loss)
    largest = max(r.abs().max().item() for r in ref.values())
    for k, r in ref.items():
        assert grads[k].shape == r.shape, k
        tol = 1e-10 * (r.abs().max().item() if k != "b1" else largest)  # b1's true gradient is 0
        assert (grads[k] - r).abs().max().item() <= tol, k


@settings(max_examples=10, deadline=None)
@given(B=st.integers(4, 70), T=st.integers(1, 4), E=st.integers(1, 12), H=st.integers(1, 80),
       V=st.integers(2, 40), ngroups=st.integers(1, 3), width=st.sampled_from([8, 16, 24]),
       seed=st.integers(0, 10_000))
def test_float32_gradients_match_manual_engine(B, T, E, H, V, ngroups, width, seed):
    model, X, Y, ix = setup(B, T, E, H, V, dtype=torch.float32, seed=seed)
    loss, grads = Blocked(model, X, Y, B, ngroups, width).loss_and_grads(ix)
    ref_loss, ref = make_engine("manual", model, X, Y).loss_and_grads(ix)
    model64 = MLP(model.config, {k: v.double() for k, v in model.params.items()})
    _, truth = autograd_loss_and_grads(model64, X[ix], Y[ix])
    assert abs(loss - ref_loss) <= 1e-5 * max(1.0, abs(ref_loss))
    assert float32_mismatches(grads, ref, truth) == []  # test_fast_engine's comparison


def test_wrong_gradient_would_be_caught():
    """The float32 comparison fails for dbngain off by the Bessel factor n/(n-1), and only for it."""
    model, X, Y, ix = setup(B=8, dtype=torch.float32)
    _, grads = Blocked(model, X, Y, 8, 2, 16).loss_and_grads(ix)
    _, ref = make_engine("manual", model, X, Y).loss_and_grads(ix)
    model64 = MLP(model.config, {k: v.double() for k, v in model.params.items()})
    _, truth = autograd_loss_and_grads(model64, X[ix], Y[ix])
    assert float32_mismatches(grads, ref, truth) == []
    grads["bngain"] = grads["bngain"] * 8 / 7
    assert float32_mismatches(grads, ref, truth) == ["bngain"]


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-11), (torch.float32, 2e-5)])
def test_three_steps_match_manual_engine(dtype, tol):
    model, X, Y, _ = setup(H=45, dtype=dtype)
    twin = MLP(model.config, {k: v.clone() for k, v in model.params.items()})
    g = torch.Generator().manual_seed(5)
    ixs = torch.randint(0, X.shape[0], (3, 21), generator=g)
    ixs[:, 2] = ixs[:, 0]  # repeated rows: their rows of C get one update with both contributions
    blocked = Blocked(model, X, Y, 21, 2, 16)
    done, losses = blocked.run(ixs.numpy(), 0.1, True)  # three steps in one call, as the engine runs them
    manual = make_engine("manual", twin, X, Y)
    ref = [manual.step(ix, 0.1) for ix in ixs]
    assert done == 3
    for a, b in zip(losses, ref):
        assert abs(a - b) <= 10 * tol * abs(b)
    blocked.eng.sync_to_model()
    for k, p in model.params.items():
        scale = twin.params[k].abs().max().item()
        assert (p - twin.params[k]).abs().max().item() <= tol * scale, k


def test_bad_index_gives_nan_and_touches_nothing():
    model, X, Y, ix = setup(B=16, H=30, dtype=torch.float32)
    blocked = Blocked(model, X, Y, 16, 2, 8)
    good = ix.numpy()
    bad = good.copy()
    bad[7] = X.shape[0]  # one past the end of the training set
    blocked.run(good, 0.1, True)  # one good step first
    P, G = blocked.eng.P.copy(), blocked.eng.G.copy()
    done, losses = blocked.run(np.stack([bad, good]), 0.1, True)
    assert done == 1 and np.isnan(losses[0])  # the chunk stops at the bad step
    assert np.array_equal(blocked.eng.P, P)  # no update was made
    assert np.array_equal(blocked.eng.G, G)  # nor any gradient written: dC is still all zero
    done, losses = blocked.run(np.stack([good, good]), 0.1, True)
    assert done == 2 and np.isfinite(losses).all()


def test_blocks_and_work_size():
    assert make_blocks(100, 2, 32).tolist() == [2, 0, 32, 64, 96, 100]
    assert make_blocks(8, 3, 8).tolist() == [3, 0, 8]
    assert block_width(1024, 2) == 128 and block_width(200, 2) == 104 and block_width(3, 1) == 8
    assert make_blocks(200, 2, block_width(200, 2)).tolist() == [2, 0, 104, 200]  # one block per group
    # the arena holds the xhat and h panels (B*H each), logits^T and two groups' partial logits^T, their
    # (T, V, 16) tables and partial dC (V, E)
    model, X, Y, _ = setup(B=37, H=50, dtype=torch.float32)
    size = Blocked(model, X, Y, 37, 2, 16).eng._new_step(37, make_blocks(50, 2, 16)).work_size
    assert size >= 37 * (2 * 50 + 27 + 2 * 27) + 2 * 3 * 27 * 16 + 2 * 27 * 10


@pytest.mark.parametrize("blocks", [[2, 0, 16, 40], [0, 0, 50], [2, 5, 50], [2, 0, 30, 20, 50], [2, 0],
                                    [300, 0, 50]])
def test_bad_blocks_are_rejected(blocks):
    """The step trusts the layout it is given to index its arena: a layout that does not cover the hidden
    layer in increasing blocks, or asks for more threads than the step has, is an error, not a crash."""
    model, X, Y, ix = setup(B=16, H=50, dtype=torch.float32)
    blocked = Blocked(model, X, Y, 16, 2, 16)
    blocked.blocks = np.array(blocks, np.int64)
    with pytest.raises(ValueError, match="blocks"):
        blocked.run(ix.numpy(), 0.1, True)


def test_more_groups_than_cores_compute_the_same():
    """Groups beyond the threads the step starts run on the calling thread; the sums keep their order."""
    model, X, Y, ix = setup(B=40, H=64, dtype=torch.float64)
    twin = MLP(model.config, {k: v.clone() for k, v in model.params.items()})
    a, b = Blocked(model, X, Y, 40, 1, 8), Blocked(twin, X, Y, 40, 8, 8)
    la, lb = a.loss_and_grads(ix), b.loss_and_grads(ix)
    assert abs(la[0] - lb[0]) <= 1e-13
    for k in la[1]:
        assert (la[1][k] - lb[1][k]).abs().max().item() <= 1e-12 * max(1.0, la[1][k].abs().max().item()), k


def test_threads_calling_the_blocked_step_at_once_get_their_own_numbers():
    """The blocked step's thread pool serves one call at a time: Python threads that train two models at
    once (the GIL is released during the steps) must each get what they get alone."""
    import threading

    def run(model, X, Y, ixs, out, key):
        blocked = Blocked(model, X, Y, 33, 2, 8)
        out[key] = blocked.run(ixs, 0.1, True)[1]

    cases = []
    for seed in (0, 1):
        model, X, Y, _ = setup(B=33, H=40, dtype=torch.float64, seed=seed)
        ixs = torch.randint(0, X.shape[0], (40, 33), generator=torch.Generator().manual_seed(seed)).numpy()
        cases.append((model, X, Y, ixs))
    alone = {}
    for i, (model, X, Y, ixs) in enumerate(cases):
        run(MLP(model.config, {k: v.clone() for k, v in model.params.items()}), X, Y, ixs, alone, i)
    together = {}
    threads = [threading.Thread(target=run, args=(*case, together, i)) for i, case in enumerate(cases)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in alone:
        assert np.array_equal(alone[i], together[i]), i
