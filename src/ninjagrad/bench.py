"""`ninjagrad bench`: how fast each engine trains the lecture's MLP, and the lecture's dC debate.

Figures on a shared machine are noisy, so every comparison is made inside one run: the engines take
turns (one block of steps each, repeated), and each figure is the median of the repeats. Steps are
timed as the training loop runs them: the minibatch indices of `engine.chunk_size(B)` steps drawn at once, then
`engine.steps` on them (one step a call for the torch engines; 64 for the fast engine at the lecture's shapes),
on the torch threads a training run of the shape would choose. `--peers` adds other tools' ways to run the
same step (peers.py) to the same table; `--busy` times every row a second time beside a CPU-bound
neighbour process, as on a machine that is doing something else.

The dC debate (the lecture's comments): how to accumulate the embedding's gradient,
dC[v] = sum of demb over every position where X == v. Each way is timed and checked against autograd.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager

import numpy
import scipy
import torch

from .engines import make_engine
from .engines.fast import kernel_missing, load_step_kernel
from .engines.threads import choose_threads, explain, step_size
from .errors import UsageError
from .models import MLP, MLPConfig
from .peers import jax_available, make_peers

LECTURE_STEPS = 200_000
N_TRAIN = 182_625  # training examples of the lecture's names.txt split: the synthetic set has as many


# --- the machine ---------------------------------------------------------------------------------

def machine() -> dict:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "numpy": numpy.__version__,
            "scipy": scipy.__version__}
    try:
        info["fast_kernel"] = load_step_kernel().isa()  # which compiled copy of the step this CPU runs
    except UsageError:
        info["fast_kernel"] = None  # not built: no C compiler at install
    if hasattr(os, "getloadavg"):
        info["load_average_1min"] = round(os.getloadavg()[0], 2)  # other work on the machine skews figures
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


NEIGHBOUR = "import os, sys\nparent = int(sys.argv[1])\nwhile os.getppid() == parent:\n    pass\n"


@contextmanager
def busy_neighbour(busy: bool = True):
    """A CPU-bound process beside the block (a Python loop that never sleeps), as on a machine that is
    doing something else; it stops when the block ends, or by itself when this process is gone (the
    loop checks that its parent is still the same). With busy False, nothing."""
    if not busy:
        yield
        return
    proc = subprocess.Popen([sys.executable, "-c", NEIGHBOUR, str(os.getpid())])
    try:
        time.sleep(0.2)  # started and spinning before the first timed step
        yield
    finally:
        proc.kill()
        proc.wait()


def matmul_gflops(n: int = 2048, repeats: int = 5, device: str = "cpu") -> float:
    """This machine's float32 matmul throughput: an n x n x n product with all threads, best of repeats."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    out = torch.empty(n, n, device=device)
    torch.mm(a, b, out=out)
    best = float("inf")
    for _ in range(repeats):
        if device != "cpu":
            torch.cuda.synchronize()
        t = time.perf_counter()
        torch.mm(a, b, out=out)
        if device != "cpu":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def step_flops(B: int, K: int, H: int, V: int) -> int:
    """Multiply-adds of one step's six matmuls, x2: the forward's two and the backward's four."""
    return 2 * B * (K * H + H * V) * 3


# --- engines ---------------------------------------------------------------------------------------

def synthetic_data(vocab: int = 27, block_size: int = 3, n: int = N_TRAIN, seed: int = 0, device: str = "cpu"):
    """A training set shaped like the lecture's (random characters: speed does not depend on them)."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randint(0, vocab, (n, block_size), generator=g)
    Y = torch.randint(0, vocab, (n,), generator=g)
    return X.to(device), Y.to(device)


def make_engines(names, B=32, H=200, E=10, T=3, V=27, device="cpu", dtype=torch.float32, seed=42, peers=False):
    """Each named engine (and with `peers`, each peer this machine can run) on its own copy of one model."""
    X, Y = synthetic_data(V, T, device=device)

    def make_model():
        return MLP.create(MLPConfig(vocab_size=V, block_size=T, n_embd=E, n_hidden=H),
                          torch.Generator().manual_seed(seed), device=device, dtype=dtype)

    engines = {name: make_engine(name, make_model(), X, Y) for name in names}
    if peers:
        engines.update(make_peers(make_model, X, Y))
    return engines, X.shape[0]


def torch_threads(engines: dict, B: int, given: int | None) -> tuple[int, str]:
    """The torch threads of the engines' steps, and why: `given` (--threads), else what a training run
    of this shape would choose (engines/threads.py)."""
    if given is not None:
        return given, "--threads"
    e = next(iter(engines.values()))
    size = step_size(e.model, e.Xtr[:B], e.Ytr[:B])
    return choose_threads(size), f"as training chooses: {explain(size)}"


def time_engines(engines: dict, N: int, B: int, steps: int, repeats: int, lr: float = 0.01,
                 device: str = "cpu", threads: dict[str, int] | None = None) -> dict[str, list[float]]:
    """Seconds per step of each engine, `repeats` times, the engines taking turns; `threads` gives
    torch's thread count for an engine's steps (an engine not named runs with the process's setting)."""
    threads = threads or {}
    default_threads = torch.get_num_threads()
    g = torch.Generator().manual_seed(1)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def run(e, steps):  # as train.py runs them: a chunk of minibatches drawn at once, then the engine's steps
        done = 0
        while done < steps:
            n = min(e.chunk_size(B), steps - done)
            e.steps(torch.randint(0, N, (n, B), generator=g).to(device), lr)
            done += n

    for name, e in engines.items():  # warm caches, allocators and (for cuda) record the graphs; the fast
        # engine times its ways to run large steps in prepare, so that only the way it keeps is timed; one
        # block as long as a timed one, so that every chunk length has been compiled (torch.compile, jax)
        torch.set_num_threads(threads.get(name, default_threads))
        e.prepare(B)
        run(e, steps)
    times: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(repeats):
        for name, e in engines.items():
            sync()
            torch.set_num_threads(threads.get(name, default_threads))
            # a moment for the threads the previous engine woke (torch's OpenMP, OpenBLAS) to stop
            # spinning, as they would have in a run of this engine alone; then one untimed call, so
            # that the timed block starts with warm caches and a core that is not idling down
            time.sleep(0.2)
            run(e, min(steps, e.chunk_size(B)))
            t = time.perf_counter()
            run(e, steps)
            sync()
            times[name].append((time.perf_counter() - t) / steps)
    torch.set_num_threads(default_threads)
    return times


def engine_rows(times: dict[str, list[float]], prefix: str = "") -> dict[str, dict]:
    """Each engine's median seconds per step as the table's figures, keys prefixed (e.g. "busy_")."""
    base = statistics.median(times["autograd"])
    rows = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        rows[name] = {prefix + "us_per_step": med * 1e6, prefix + "steps_per_s": 1 / med,
                      prefix + "vs_autograd": base / med, prefix + "projected_200k_s": med * LECTURE_STEPS,
                      prefix + "repeats_us": [round(x * 1e6, 2) for x in ts]}
    return rows


def engine_table(steps: int, repeats: int, B: int = 32, H: int = 200, threads: int | None = None,
                 peers: bool = False, busy: bool = False) -> dict:
    """Every engine at the lecture's shapes (with `peers`, torch.compile and JAX beside them; the CUDA
    graph engine where a GPU is present); with `busy`, timed a second time beside a busy neighbour."""
    missing = kernel_missing()
    engines, N = make_engines(["autograd", "manual"] + (["fast"] if missing is None else []), B=B, H=H, peers=peers)
    n, why = torch_threads(engines, B, threads)
    per_engine = dict.fromkeys(engines, n)
    quiet = time_engines(engines, N, B, steps, repeats, threads=per_engine)
    rows = engine_rows(quiet)
    if busy:
        with busy_neighbour():
            for name, r in engine_rows(time_engines(engines, N, B, steps, repeats, threads=per_engine),
                                       "busy_").items():
                rows[name].update(r)
    if torch.cuda.is_available():
        cuda_engines, N = make_engines(["fast"], B=B, H=H, device="cuda")
        t = time_engines(cuda_engines, N, B, steps, repeats, device="cuda")["fast"]
        rows["fast (cuda)"] = engine_rows({"autograd": quiet["autograd"], "fast (cuda)": t})["fast (cuda)"]
    out = {"rows": [{"engine": name, **r} for name, r in rows.items()], "torch_threads": n, "threads_why": why,
           "missing": {}}
    if missing is not None:
        out["missing"]["fast"] = missing
    if peers and not jax_available():
        out["missing"]["jax"] = "JAX is not installed; `pip install jax` adds its two rows (it is optional)"
    return out


def scaling_table(steps: int, repeats: int, batches=(32, 256, 4096), hiddens=(200, 1024),
                  threads: int | None = None) -> list[dict]:
    """The fast engine (and the manual one, for reference, on the threads training would give it)
    from the lecture's shapes to large ones."""
    rows = []
    peak = matmul_gflops()
    names = ["manual"] + (["fast"] if kernel_missing() is None else [])
    for H in hiddens:
        for B in batches:
            engines, N = make_engines(names, B=B, H=H)
            n = max(8, min(steps, int(steps * 32 * 200 / (B * H))))
            nt, _ = torch_threads(engines, B, threads)
            t = time_engines(engines, N, B, n, repeats, threads=dict.fromkeys(engines, nt))
            flops = step_flops(B, 30, H, 27)
            for name in names:
                med = statistics.median(t[name])
                rows.append({"engine": name, "batch": B, "n_hidden": H, "torch_threads": nt, "us_per_step": med * 1e6,
                             "gflops": flops / med / 1e9, "pct_of_matmul_peak": 100 * flops / med / 1e9 / peak,
                             "matmul_peak_gflops": peak})
            if torch.cuda.is_available() and B >= 1024:
                cuda_engines, N = make_engines(["fast"], B=B, H=H, device="cuda")
                med = statistics.median(time_engines(cuda_engines, N, B, n, repeats, device="cuda")["fast"])
                rows.append({"engine": "fast (cuda)", "batch": B, "n_hidden": H, "us_per_step": med * 1e6,
                             "gflops": flops / med / 1e9, "pct_of_matmul_peak": None, "matmul_peak_gflops": None})
    return rows


# --- the dC debate ---------------------------------------------------------------------------------

def dC_python_loop(demb, X, V):
    """The lecture's loop: one row at a time."""
    dC = torch.zeros((V, demb.shape[-1]), dtype=demb.dtype)
    for k in range(X.shape[0]):
        for j in range(X.shape[1]):
            dC[X[k, j]] += demb[k, j]
    return dC


def dC_index_add(demb, X, V):
    """index_add_ accumulates repeated indices (what ops.embedding_backward uses)."""
    dC = torch.zeros((V, demb.shape[-1]), dtype=demb.dtype)
    return dC.index_add_(0, X.view(-1), demb.view(-1, demb.shape[-1]))


def dC_one_hot_matmul(demb, X, V):
    """one_hot(X)^T demb: a (V, B*T) by (B*T, E) matmul, mostly multiplying zeros."""
    onehot = torch.nn.functional.one_hot(X.view(-1), V).to(demb.dtype)  # (B*T, V)
    return onehot.T @ demb.view(-1, demb.shape[-1])


def dC_einsum(demb, X, V):
    """The same contraction written as an einsum."""
    onehot = torch.nn.functional.one_hot(X, V).to(demb.dtype)  # (B, T, V)
    return torch.einsum("btv,bte->ve", onehot, demb)


def dC_index_put(demb, X, V):
    """index_put_ with accumulate=True: without it, repeated rows would keep only one contribution."""
    dC = torch.zeros((V, demb.shape[-1]), dtype=demb.dtype)
    return dC.index_put_((X.view(-1),), demb.view(-1, demb.shape[-1]), accumulate=True)


DC_METHODS = {"python loop": dC_python_loop, "index_add_": dC_index_add, "one-hot matmul": dC_one_hot_matmul,
              "einsum": dC_einsum, "index_put_(accumulate=True)": dC_index_put}


def dC_reference(C, X, demb):
    """autograd's dC for emb = C[X] and upstream gradient demb."""
    leaf = C.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (leaf[X] * demb).sum().backward()
    return leaf.grad


def dC_check(fn, C, X, demb) -> tuple[float, bool]:
    """Largest difference from autograd's dC, and whether it is float rounding (not a dropped term)."""
    ref = dC_reference(C, X, demb)
    err = (fn(demb, X, C.shape[0]) - ref).abs().max().item()
    return err, bool(err <= 1e-5 * max(1.0, ref.abs().max().item()))


def dC_table(repeats: int, shapes=None) -> list[dict]:
    """Each way to compute dC, timed (median µs per call) and checked against autograd."""
    shapes = shapes or [("lecture", 32, 3, 10, 27), ("large vocab", 32, 3, 10, 50_000)]
    rows = []
    for label, B, T, E, V in shapes:
        g = torch.Generator().manual_seed(0)
        C = torch.randn(V, E, generator=g)
        X = torch.randint(0, V, (B, T), generator=g)
        X[1] = X[0, 0]  # repeated rows, as real batches have ('.' at the start of many windows)
        demb = torch.randn(B, T, E, generator=g)
        for name, fn in DC_METHODS.items():
            err, correct = dC_check(fn, C, X, demb)
            t = time.perf_counter()
            fn(demb, X, V)
            calls = max(1, min(1000, int(0.02 / max(time.perf_counter() - t, 1e-7))))  # ~20 ms per repeat
            ts = []
            for _ in range(repeats):
                t = time.perf_counter()
                for _ in range(calls):
                    fn(demb, X, V)
                ts.append((time.perf_counter() - t) / calls)
            rows.append({"shape": label, "B": B, "T": T, "E": E, "V": V, "method": name,
                         "us_per_call": statistics.median(ts) * 1e6, "max_abs_err": err, "correct": correct})
    return rows


# --- the subcommand (its flags are in cli.py) ------------------------------------------------------

def run_bench(steps: int, repeats: int, scaling: bool = False, dc: bool = True, threads: int | None = None,
              peers: bool = False, busy: bool = False) -> dict:
    out = {"machine": machine(), "steps_per_repeat": steps, "repeats": repeats}
    table = engine_table(steps, repeats, threads=threads, peers=peers, busy=busy)
    out["engines"] = table.pop("rows")
    out.update(table)  # torch_threads, threads_why, and what is missing
    if dc:
        out["dC"] = dC_table(repeats)
    if scaling:
        out["scaling"] = scaling_table(steps, repeats, threads=threads)
    return out


def cmd_bench(args) -> int:
    if args.steps < 1:
        raise UsageError(f"--steps {args.steps}: time at least one step per repeat")
    if args.repeats < 5:
        raise UsageError(f"--repeats {args.repeats}: use at least 5, so the median means something")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads {args.threads}: use 1 or more")
    result = run_bench(args.steps, args.repeats, scaling=args.scaling, dc=not args.no_dc, threads=args.threads,
                       peers=args.peers, busy=args.busy)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    from rich.console import Console

    console = Console()
    for table in tables(result):
        console.print(table)
    return 0


def times_text(x: float | None) -> str:
    return "" if x is None else f"{x:.1f}"


def tables(result: dict) -> list:
    from rich.table import Table

    m = result["machine"]
    out = []
    busy = "busy_us_per_step" in result["engines"][0]
    t = Table(title=f"engines, lecture MLP (batch 32, n_hidden 200), median of {result['repeats']} x "
                    f"{result['steps_per_repeat']} steps — {m['cpu']}, {m['cores']} cores, "
                    f"load {m.get('load_average_1min', '?')}; torch threads {result['torch_threads']} "
                    f"({result['threads_why']})" + ("; busy: beside a CPU-bound neighbour process" if busy else ""))
    cols = ["engine", "µs/step", "× autograd", "200k steps"]
    cols = cols + ["busy: µs/step", "× autograd", "200k steps"] if busy else cols[:2] + ["steps/s"] + cols[2:]
    for col in cols:
        t.add_column(col, justify="right" if col != "engine" else "left", overflow="fold")
    for r in result["engines"]:
        cells = [r["engine"], f"{r['us_per_step']:.1f}", times_text(r["vs_autograd"]), f"{r['projected_200k_s']:.1f} s"]
        if busy:
            cells += [f"{r['busy_us_per_step']:.1f}", times_text(r["busy_vs_autograd"]),
                      f"{r['busy_projected_200k_s']:.1f} s"]
        else:
            cells.insert(2, f"{r['steps_per_s']:,.0f}")
        t.add_row(*cells)
    out.append(t)
    for name, why in result.get("missing", {}).items():
        out.append(f"no {name} rows: {why}")
    if "dC" in result:
        t = Table(title="dC = sum of demb over positions where X == v (checked against autograd)")
        for col in ("shape", "method", "µs/call", "max |err|", "correct"):
            t.add_column(col)
        for r in result["dC"]:
            t.add_row(f"{r['shape']} (V={r['V']:,})", r["method"], f"{r['us_per_call']:.1f}",
                      f"{r['max_abs_err']:.1e}", "yes" if r["correct"] else "NO")
        out.append(t)
    if "scaling" in result:
        peak = next((r["matmul_peak_gflops"] for r in result["scaling"] if r["matmul_peak_gflops"]), None)
        t = Table(title=f"scaling (six matmuls' FLOPs / step time); float32 matmul peak here {peak:.0f} GFLOP/s")
        for col in ("engine", "batch", "n_hidden", "µs/step", "GFLOP/s", "% of peak"):
            t.add_column(col)
        for r in result["scaling"]:
            pct = "" if r["pct_of_matmul_peak"] is None else f"{r['pct_of_matmul_peak']:.0f}%"
            t.add_row(r["engine"], str(r["batch"]), str(r["n_hidden"]), f"{r['us_per_step']:.1f}",
                      f"{r['gflops']:.1f}", pct)
        out.append(t)
    return out
