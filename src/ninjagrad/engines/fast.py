"""The fast engine: the whole training step as one call into compiled code.

The manual engine makes ~40 small torch calls per step, and at the lecture's shapes each costs more
in dispatch than in arithmetic. Here the minibatch gather, forward, hand-written backward and SGD
update run in one C function over buffers allocated once (fast_step.c and fast_step_kernel.h,
compiled when the package is installed); the six matmuls go to BLAS from inside it, and exp/tanh are
vectorised. From batch x n_hidden = 65,536 a second step goes through the hidden layer block by block
(on every core, for large steps, when timing before the first step says so). Both compute the same
gradients as ops.py, which tests/test_fast_engine.py and tests/test_fast_blocked.py hold them to.

The engine keeps its own copy of the parameters, with W2 transposed, in one flat array laid out by the
extension (`param_layout` says where each parameter lies, under the model's name for it); `sync_to_model`
copies it into the model's tensors, and the training loop calls it before it reads the model. Per batch
size, a `_fast_step.Step` checks those arrays once and owns the step's activations.

On a CUDA device, `--engine fast` is the CUDA-graph engine of fast_cuda.py instead (engines.make_engine).

B batch, T context (block_size), E n_embd, K = T*E, H n_hidden, V vocab
"""
from __future__ import annotations

import importlib
import time
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import ThreadpoolController

from ..errors import UsageError
from ..models.mlp import MLP
from .base import Engine
from .threads import cores

CHUNK_ELEMENTS = 64 * 32 * 200  # B*H*steps of one call into the kernel, at most (see chunk_size)
PARALLEL_MIN_ELEMENTS = 1 << 17  # B*H from which more threads may pay off: worth a few timed trial steps
# B*H from which the blocked step beats the whole-batch one on one core: 1.3-1.5x faster at 320 x 200,
# 64 x 1024, 256 x 256 and 1024 x 64 (all ~65k), 1.6-1.9x at 512 x 200, 128 x 1024 and 256 x 1024; even at
# 128 x 200 (26k), behind at 32 x 1024 (33k). `benchmarks/fast_blocked.py --shapes ...`, one run each.
BLOCKED_MIN_ELEMENTS = 1 << 16
# The blocked kernel goes through per-character tables, (T, V, block width) per core: for the
# lecture's 27 characters they are a few KB; for a vocabulary of thousands the matmuls they replace
# would be cheaper. Offered up to this vocabulary.
BLOCKED_MAX_VOCAB = 256


# columns per block of the blocked step: wider blocks make fewer, larger matmuls. At 4096 x 1024 on 2 cores,
# widths 64, 128 and 256 are within this machine's noise of each other (`benchmarks/fast_blocked.py --widths`).
BLOCK_TARGET = 128


def block_width(H: int, ngroups: int) -> int:
    """About BLOCK_TARGET columns a block, the same number of blocks in every group (the groups take
    equal shares of the work), rounded up to a multiple of 8."""
    per_group = -(-H // (ngroups * BLOCK_TARGET))  # blocks per group
    width = -(-H // (ngroups * per_group))
    return max(8, -(-width // 8) * 8)


def make_blocks(H: int, ngroups: int, width: int) -> np.ndarray:
    """The blocked step's `blocks` argument: [ngroups, c_0 = 0, c_1, ..., c_n = H].

    Block i is the columns c_i..c_{i+1}, all `width` wide but the last; thread group g takes the
    blocks g, g + ngroups, g + 2 ngroups, ... (so groups differ by at most one block)."""
    bounds = list(range(0, H, width)) + [H]
    return np.array([ngroups] + bounds, np.int64)


_blas_threads = None  # what set_blas_threads last set (it is one setting for the whole process)


KERNEL = "ninjagrad.engines._fast_step"  # the extension setup.py builds from fast_step.c, when it can
HOW_TO_BUILD = ("to get it, install a C compiler (gcc or clang, e.g. `apt install gcc` or `xcode-select --install`) "
                "and reinstall ninjagrad (`pip install -e .` in its folder)")


def kernel_missing() -> str | None:
    """Why the compiled steps cannot be loaded, with how to get them; None when they can."""
    try:
        importlib.import_module(KERNEL)
    except ImportError as e:
        return f"the fast engine's compiled step was not built when ninjagrad was installed ({e}); {HOW_TO_BUILD}"
    return None


def load_step_kernel():
    """The compiled steps (fast_step.c), handed scipy's sgemm and dgemm; a UsageError saying what is
    missing and how to get it when the install built no extension (no C compiler).

    scipy.linalg.cython_blas exports BLAS as C function pointers for compiled code to call; the
    extension links no BLAS of its own, and threadpoolctl sets that OpenBLAS's threads.
    """
    missing = kernel_missing()
    if missing is not None:
        raise UsageError(f"--engine fast: {missing}")
    from scipy.linalg import cython_blas  # here: scipy.linalg takes ~0.4 s to import, for fast runs only

    _fast_step = importlib.import_module(KERNEL)
    _fast_step.set_blas(cython_blas.__pyx_capi__["sgemm"], cython_blas.__pyx_capi__["dgemm"])
    return _fast_step


def set_blas_threads(n: int):
    """Threads of the BLAS the steps call (SciPy's OpenBLAS), set through threadpoolctl.

    OpenBLAS splits any matmul above ~250k multiply-adds between all cores, and its threads wait for
    each other spinning: on a machine whose cores are busy with other work, a 256-row step runs ~9x
    slower with two BLAS threads than with one. Small steps therefore run on one core, BLAS included;
    for large ones, the engine times both and keeps the faster (candidates).
    """
    global _blas_threads
    if n == _blas_threads:
        return
    _blas_threads = n
    libs = [lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas"]
    scipys = [lib for lib in libs if "scipy" in Path(lib.filepath).parent.name]  # scipy.libs/ in a wheel
    for lib in scipys or libs:
        lib.set_num_threads(n)


def check_supported(model, optimizer):
    """The fast engine implements the lecture's MLP with the lecture's SGD update, nothing else."""
    if not isinstance(model, MLP):
        raise UsageError(f"--engine fast: the {model.name} model has no fast path (only the lecture's mlp "
                         "does); use --engine manual")
    if optimizer.name != "sgd":
        raise UsageError(f"--engine fast: implements the lecture's SGD update, not {optimizer.name}; "
                         "use --optimizer sgd or --engine manual")


TRIALS = 5  # timed calls per candidate way to run a step, after one untimed call


def fastest(times: list[list[float]]) -> int:
    """The candidate whose second-fastest timed call is fastest.

    On a shared machine single steps vary by half and noise only ever adds time, so a low quantile
    estimates a candidate's own speed better than the median (a median of three can keep a way 1.5x
    slower); the second-fastest, so that one lucky call cannot decide."""
    return min(range(len(times)), key=lambda k: sorted(times[k])[min(1, len(times[k]) - 1)])


class Plan:
    """How steps on batches of one size run: the step (blocks None: the whole-batch step; else the
    blocked step's layout), BLAS's threads, and the kernel's Step with its activations (None while
    released)."""

    def __init__(self, blocks, threads: int):
        self.blocks, self.threads = blocks, threads
        self.step = None  # the kernel's Step, made by the first step

    def to_dict(self, batch: int) -> dict:
        return {"batch": batch, "blocks": None if self.blocks is None else self.blocks.tolist(),
                "threads": self.threads}


class FastEngine(Engine):
    """Compiled steps + BLAS on the CPU: `_fast_step.Step` (fast_step.c)."""

    name = "fast"
    MAX_CHUNK = 64  # steps per call into the kernel at most: at the lecture's shapes, ~2 ms a call

    def __init__(self, model, Xtr, Ytr, optimizer=None):
        super().__init__(model, Xtr, Ytr, optimizer)
        check_supported(model, self.optimizer)
        self.kernel = load_step_kernel()
        if model.dtype not in (torch.float32, torch.float64) or model.device.type != "cpu":
            raise UsageError(f"--engine fast: runs float32 or float64 on the cpu, not {model.dtype} on {model.device}")
        self.Xnp, self.Ynp = self._training_set(Xtr, Ytr)
        self.np_dtype = np.float32 if model.dtype == torch.float32 else np.float64
        cfg = model.config
        size, self.layout = self.kernel.param_layout(cfg.vocab_size, cfg.n_embd, cfg.block_size * cfg.n_embd,
                                                     cfg.n_hidden)
        # The engine's own copy of the parameters and their gradients, in two arenas; dC stays all zero
        # between steps (see the kernels), and so do the gaps between pieces.
        self.P = np.zeros(size, self.np_dtype)
        self.G = np.zeros(size, self.np_dtype)
        self.pviews = self._views(self.P)
        self.gviews = self._views(self.G)
        self.transposed = {name for name, _, _, transposed in self.layout if transposed}  # W2, kept as W2^T
        self.sync_from_model()
        self.plans = {}
        self.losses = np.empty(self.MAX_CHUNK)  # the kernel's per-step losses

    def _training_set(self, Xtr, Ytr):
        """Each example's context and target side by side, (N, T) and (N,) views of one (N, T+1) array, in
        the smallest integer type that holds the vocabulary: the minibatch's rows are random, and at 4
        bytes an example (uint8) the lecture's whole training set fits in a core's L2 cache (5.8 MB as
        int64). The kernels index without bounds checks, so the characters are checked here, once."""
        V = self.model.config.vocab_size
        if Xtr.numel() and (int(Xtr.min()) < 0 or int(Xtr.max()) >= V or int(Ytr.min()) < 0 or int(Ytr.max()) >= V):
            raise UsageError(f"--engine fast: the training set holds characters outside the vocabulary of {V}")
        self.XY = np.empty((Xtr.shape[0], Xtr.shape[1] + 1), np.uint8 if V <= 256 else np.int32)  # (N, T+1)
        self.XY[:, :-1] = Xtr.cpu().numpy()
        self.XY[:, -1] = Ytr.cpu().numpy()
        return self.XY[:, :-1], self.XY[:, -1]

    # --- parameters: the engine's copy in the arena -------------------------------------------

    def _views(self, arena) -> dict:
        """NumPy views of an arena's pieces, (rows, cols) each, by the model's parameter names."""
        return {name: arena[offset:offset + rows * cols].reshape(rows, cols)
                for name, offset, (rows, cols), _ in self.layout}

    def _as_model(self, name: str, piece: np.ndarray) -> torch.Tensor:
        """An arena's piece as the model's parameter `name` (a view: transposed back, or reshaped)."""
        t = torch.from_numpy(piece)
        return t.T if name in self.transposed else t.view(self.model.params[name].shape)

    def sync_from_model(self):
        """Copy the model's parameters into the engine's arena (transposed where the arena keeps W2^T)."""
        with torch.no_grad():
            for k, v in self.pviews.items():
                self._as_model(k, v).copy_(self.model.params[k])

    def sync_to_model(self):
        """Copy the engine's parameters into the model's tensors (in place: same tensors, new values)."""
        with torch.no_grad():
            for k, v in self.pviews.items():
                self.model.params[k].copy_(self._as_model(k, v))

    # --- buffers and kernels, per batch size ------------------------------------------------

    def _plan(self, B: int) -> Plan:
        """How to run steps on batches of B, decided once per batch size (see candidates)."""
        if B < 2:
            raise ValueError(f"the fast engine needs a batch of at least 2 (batchnorm's n-1), got {B}")
        candidates = self.candidates(B)
        blocks, threads = candidates[0] if len(candidates) == 1 else candidates[self._time(B, candidates)]
        self.plans = {B: Plan(blocks, threads)}  # keep one: its activations can be large
        return self.plans[B]

    def _new_step(self, B: int, blocks):
        """The kernel's Step on batches of B over this engine's arenas and training set."""
        cfg = self.model.config
        return self.kernel.Step(self.P, self.G, self.Xnp, self.Ynp, cfg.vocab_size, cfg.n_embd, cfg.n_hidden, B,
                                blocks)

    def candidates(self, B: int) -> list[tuple]:
        """The ways to run steps on batches of B worth timing: [(blocks, BLAS threads)].

        One core for small steps, where waking threads costs more than it saves, and from
        BLOCKED_MIN_ELEMENTS on the blocked step (column blocks of the hidden layer walked down the
        batch, the first layer through the embedding table), still on one core. For large steps on
        several cores, three ways: the blocked step on one core; on every core, each taking column
        blocks with a one-thread BLAS; the whole-batch step with BLAS on every core. On a machine
        whose cores are busy with other work, threads that wait for each other can make all cores
        slower than one. (The whole-batch step on one core is not among them: the blocked one beats it
        at every size that has trials; `benchmarks/fast_blocked.py` times all four.)
        """
        H, V = self.model.config.n_hidden, self.model.config.vocab_size
        n = min(cores(), self.kernel.MAX_GROUPS)
        blocked = V <= BLOCKED_MAX_VOCAB and B * H >= BLOCKED_MIN_ELEMENTS
        out = [(make_blocks(H, 1, block_width(H, 1)) if blocked else None, 1)]
        if B * H >= PARALLEL_MIN_ELEMENTS and n > 1:
            if blocked:
                out.append((make_blocks(H, n, block_width(H, n)), 1))
            out.append((None, n))  # BLAS on all cores last: its threads spin for a while after
        return out

    def _time(self, B: int, candidates: list[tuple]) -> int:
        """Index of the fastest candidate, from one untimed and TRIALS timed calls of each, one
        candidate after the other (the multi-threaded BLAS last: OpenBLAS's threads keep spinning for a
        while after their work, and a candidate timed in that while would be measured against them).

        The trials compute gradients on minibatches of their own (a generator apart from the run's)
        and update nothing, so the run's numbers depend on which way is kept, not on the trials. The
        candidates compute the same math, but their sums run in different orders (BLAS's blocking for
        several threads, the blocked step's per-core partial sums): the choice can change results in
        the last bits, not more, and a checkpoint keeps it (state) so that a resumed run makes the same.
        """
        if self.Xnp.shape[0] == 0:
            return 0  # no example to time with (and no step will run)
        n = self.chunk_size(B)
        losses = np.empty(n)
        g = torch.Generator().manual_seed(0)
        times = []
        for blocks, threads in candidates:
            set_blas_threads(threads)
            step = self._new_step(B, blocks)
            times.append([])
            for trial in range(1 + TRIALS):
                ixs = torch.randint(0, self.Xnp.shape[0], (n, B), generator=g).numpy()
                t = time.perf_counter()
                step.run(ixs, 0.0, False, losses)
                if trial:  # the first call starts threads and fills caches: left out
                    times[-1].append((time.perf_counter() - t) / n)
                self.gviews["C"][...] = 0  # without updates dC accumulates: all zero again for the run
            del step  # its activations, before the next candidate's
        return fastest(times)

    def release_buffers(self):
        """Free the activations' arena (50 MB at batch 4096 x n_hidden 1024) while the model is being
        evaluated; the next step allocates it again. It keeps nothing between steps, so the numbers
        do not change, and the plan keeps its choice of kernel."""
        for plan in self.plans.values():
            plan.step = None

    def _run(self, ixs: torch.Tensor, lr: float, update: bool) -> list[float]:
        """Steps on the minibatches ixs, (n, B) or one (B,); the losses of the steps run."""
        if ixs.dtype is not torch.int64 or not ixs.is_cpu or not ixs.is_contiguous():
            ixs = ixs.to("cpu", torch.int64).contiguous()
        n, B = (1, ixs.shape[0]) if ixs.dim() == 1 else ixs.shape
        if n == 0:
            return []
        plan = self.prepare(B)
        if plan.step is None:
            plan.step = self._new_step(B, plan.blocks)
        if len(self.losses) < n:
            self.losses = np.empty(n)  # float64, whatever the parameters' dtype
        if plan.threads != _blas_threads:  # checked every call: another engine in this process may change it
            set_blas_threads(plan.threads)
        done = plan.step.run(ixs.numpy(), lr, update, self.losses)
        losses = self.losses[:done].tolist()
        if losses[-1] != losses[-1]:  # nothing was computed for that step, or the loss itself is nan
            ixn = ixs.view(-1, B)[:done].numpy()
            if not (0 <= ixn.min() and ixn.max() < self.Xnp.shape[0]):
                raise IndexError(f"minibatch indices outside the training set of {self.Xnp.shape[0]}")
        return losses

    # --- the Engine interface ------------------------------------------------------------------

    def chunk_size(self, batch_size):
        """Enough steps a call that the ~5 µs of Python and dispatch around each call vanish at the
        lecture's shapes, and calls of a few milliseconds at most (a prompt progress bar and Ctrl-C):
        64 steps at batch 32 x n_hidden 200, one step a call from batch 4096 x n_hidden 100 on."""
        return max(1, min(self.MAX_CHUNK, CHUNK_ELEMENTS // (batch_size * self.model.config.n_hidden)))

    def prepare(self, batch_size) -> Plan:
        """The plan for batches of this size, made (and, for large ones, timed) on first use."""
        return self.plans.get(batch_size) or self._plan(batch_size)

    def state(self) -> dict:
        return {"plans": [plan.to_dict(B) for B, plan in self.plans.items()]}

    def load_state(self, state: dict):
        """Run as the saved run ran: each saved plan's step and BLAS threads, without new trials."""
        H = self.model.config.n_hidden
        try:
            saved = [(int(p["batch"]), p["blocks"], int(p["threads"])) for p in state.get("plans", [])]
            saved = [(B, None if b is None else np.array(b, np.int64), t) for B, b, t in saved]
        except (TypeError, KeyError, ValueError, AttributeError) as e:
            raise ValueError(f"the fast engine's saved plans are unreadable ({e!r})") from None
        for B, blocks, threads in saved:
            ok = B >= 2 and threads >= 1
            if blocks is not None:
                ok = ok and (blocks.ndim == 1 and len(blocks) >= 3 and 1 <= blocks[0] <= self.kernel.MAX_GROUPS
                             and blocks[1] == 0 and blocks[-1] == H and bool((np.diff(blocks[1:]) > 0).all()))
            if not ok:
                raise ValueError(f"the fast engine's saved plan for batch {B} does not fit this model")
            self.plans = {B: Plan(blocks, threads)}

    def step(self, ix, lr):
        return self._run(ix, lr, True)[0]

    def steps(self, ixs, lr):
        return self._run(ixs, lr, True)

    def loss_and_grads(self, ix):
        loss = self._run(ix, 0.0, False)[0]
        # copies (the arena is reused), contiguous as the other engines' gradients are
        grads = {k: self._as_model(k, g).clone(memory_format=torch.contiguous_format) for k, g in self.gviews.items()}
        self.gviews["C"][...] = 0  # dC all zero again for the next step, as an update leaves it
        return loss, grads
