"""How fast the torch engines step on one thread and on every core, quiet and beside a busy neighbour.

    python benchmarks/threads.py                 # every shape below; prints a markdown table
    python benchmarks/threads.py --write         # and puts it in benchmarks/README.md
    python benchmarks/threads.py --shapes mlp:32x200 transformer:32

The table behind the rule of `ninjagrad/engines/threads.py` (one thread for a step whose matmuls average
fewer than ALL_CORES_FROM multiply-adds, every core for larger ones). For each shape, the manual and autograd
engines take turns on one thread and on every core, first on the machine as it is, then with a CPU-bound neighbour
process (`bench.busy_neighbour`) beside them; each figure is the median of the repeats.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from readme import command_line, md_table, write_section

from ninjagrad import bench
from ninjagrad.engines import make_engine
from ninjagrad.engines.threads import ALL_CORES_FROM, choose_threads, cores, step_size
from ninjagrad.models import MODELS

# model:BxH for the MLP (batch x n_hidden), model:B for the others (their default sizes)
SHAPES = ["mlp:32x200", "mlp:256x200", "mlp:32x1024", "mlp:1024x200", "mlp:256x1024", "mlp:4096x200",
          "mlp:4096x1024", "mlp:8192x1024", "wavenet:32", "transformer:32", "transformer:128", "transformer:256"]
ENGINES = ("manual", "autograd")
BLOCK_SECONDS = 0.25  # steps per timed block: about this long on one thread


def parse_shape(text: str) -> tuple[str, int, dict]:
    """'mlp:32x200' -> ('mlp', 32, {'n_hidden': 200}); 'wavenet:32' -> ('wavenet', 32, {})."""
    model, size = text.split(":")
    B, *H = size.split("x")
    return model, int(B), ({"n_hidden": int(H[0])} if H else {})


def make(model: str, B: int, extra: dict, engine: str):
    """A model of the shape on a synthetic training set, and its engine."""
    cls, config_cls = MODELS[model]
    config = config_cls(vocab_size=27, **extra)
    X, Y = bench.synthetic_data(27, config.block_size)
    m = cls.create(config, torch.Generator().manual_seed(42))
    return make_engine(engine, m, X, Y), X.shape[0]


def steps_for(engine, N: int, B: int) -> int:
    """Steps of about BLOCK_SECONDS on one thread (at least 3)."""
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    engine.step(torch.randint(0, N, (B,), generator=g), 0.01)
    t = time.perf_counter()
    for _ in range(3):
        engine.step(torch.randint(0, N, (B,), generator=g), 0.01)
    per_step = (time.perf_counter() - t) / 3
    return max(3, int(BLOCK_SECONDS / per_step))


def measure(shape: str, repeats: int, n: int) -> dict:
    model, B, extra = parse_shape(shape)
    engines, threads = {}, {}
    for name in ENGINES:
        for t in sorted({1, n}):
            key = f"{name} {t}"
            engines[key], N = make(model, B, extra, name)
            threads[key] = t
    first = next(iter(engines.values()))
    Xb, Yb = first.Xtr[:B], first.Ytr[:B]
    size = step_size(first.model, Xb, Yb)
    steps = steps_for(first, N, B)
    out = {"shape": shape, "size": size, "steps": steps}
    for busy in (False, True):
        with bench.busy_neighbour(busy):
            times = bench.time_engines(engines, N, B, steps, repeats, threads=threads)
        out["busy" if busy else "quiet"] = {k: statistics.median(v) for k, v in times.items()}
    return out


def table(results: list[dict], n: int) -> str:
    rows = []
    for r in results:
        for name in ENGINES:
            q1, qn = r["quiet"][f"{name} 1"], r["quiet"][f"{name} {n}"]
            b1, bn = r["busy"][f"{name} 1"], r["busy"][f"{name} {n}"]
            size = r["size"]
            rows.append([r["shape"], f"{size.madds / 1e6:.1f}", f"{size.matmuls}", f"{size.per_matmul() / 1e6:.1f}",
                         name, f"{q1 * 1e3:.3f}", f"{qn * 1e3:.3f}", f"{qn / q1:.2f}", f"{b1 * 1e3:.3f}",
                         f"{bn * 1e3:.3f}", f"{bn / b1:.2f}", choose_threads(size, n)])
    return md_table(["shape", "forward M multiply-adds", "matmuls", "M each", "engine", "as is, 1 thread (ms)",
                     f"as is, {n} (ms)", f"{n} / 1", "busy, 1 thread (ms)", f"busy, {n} (ms)", f"{n} / 1",
                     "rule"], rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", nargs="+", default=SHAPES, help="model:BxH (mlp) or model:B")
    ap.add_argument("--repeats", type=int, default=5, help="repeats per figure (default 5)")
    ap.add_argument("--write", action="store_true", help="write the table into benchmarks/README.md")
    args = ap.parse_args()
    n = cores()
    load = os.getloadavg()[0]
    results = []
    for shape in args.shapes:
        results.append(measure(shape, args.repeats, n))
        print(f"measured {shape}", flush=True)
    m = bench.machine()
    text = (f"## Threads of the torch engines\n\n`{command_line()}` on {m['cpu']}, {n} cores, torch "
            f"{m['torch']}; load average {load:.2f} at the start, {os.getloadavg()[0]:.2f} at the end. "
            f"Milliseconds per step, median of {args.repeats} repeats, the engines and thread counts taking turns; "
            "\"as is\": the machine with whatever else runs on it (the load average above), \"busy\": with one "
            "CPU-bound neighbour process beside them as well. The MLP shapes are batch x n_hidden; the WaveNet and "
            "the transformer have their default sizes, batch as given. \"M each\": the forward's multiply-adds a "
            "matmul, on average; \"rule\": the threads `engines/threads.py` gives the shape here (one thread "
            f"below {ALL_CORES_FROM / 1e6:.0f} M multiply-adds a matmul, every core from there).\n\n"
            + table(results, n))
    print(text)
    if args.write:
        write_section("threads", text)


if __name__ == "__main__":
    main()
