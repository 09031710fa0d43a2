"""The compiled engine against the manual one: µs per step at each model's default shapes, and how
long compiling takes, cold (empty inductor cache) and warm (the cache the cold run filled).

    python benchmarks/compiled_engine.py                      # wavenet and transformer, defaults
    python benchmarks/compiled_engine.py --write              # and puts the table in benchmarks/README.md
    python benchmarks/compiled_engine.py --models wavenet --steps 320 --repeats 9
    OMP_NUM_THREADS=1 python benchmarks/compiled_engine.py    # torch on one thread

Timing follows `ninjagrad bench`: the engines take turns (a pause, one untimed chunk, then a timed
block of steps run as train.py runs them), `--repeats` times, and each figure is the median. Every
block is timed twice: by the wall clock, as bench does, and by the process's CPU time, which moves far
less when other processes share the cores (the load average is printed before and after). Compile
times come from fresh processes: `prepare` (one step, compile included) with an empty inductor cache,
then again with the cache that run left.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from readme import command_line, md_table, n_threads, write_section

from ninjagrad.bench import machine, synthetic_data
from ninjagrad.engines import make_engine
from ninjagrad.models import MODELS
from ninjagrad.optim import make_optimizer

LR = {"sgd": 0.01, "adamw": 1e-3}
STEPS = {"mlp": 640, "wavenet": 320, "transformer": 48}  # steps per repeat when --steps is not given


def make_pair(model_name: str, seed: int = 42):
    """The manual and compiled engines on the same default-sized model and a synthetic training set
    (random characters: speed does not depend on them)."""
    cls, config_cls = MODELS[model_name]
    config = config_cls()
    X, Y = synthetic_data(config.vocab_size, config.block_size)
    engines = {}
    for name in ("manual", "compiled"):
        model = cls.create(config, torch.Generator().manual_seed(seed))
        engines[name] = make_engine(name, model, X, Y, make_optimizer(model.default_optimizer))
    return engines, X.shape[0], LR[model.default_optimizer]


def time_pair(engines: dict, N: int, B: int, steps: int, repeats: int, lr: float) -> dict:
    """Seconds per step of each engine, wall clock and CPU time, `repeats` times, taking turns."""
    g = torch.Generator().manual_seed(1)

    def run(e, n_steps):  # as train.py runs them: a chunk's minibatches drawn at once, then the engine's steps
        done = 0
        while done < n_steps:
            n = min(e.chunk_size(B), n_steps - done)
            e.steps(torch.randint(0, N, (n, B), generator=g), lr)
            done += n

    for e in engines.values():
        e.prepare(B)
        run(e, steps)
    out = {name: {"wall": [], "cpu": []} for name in engines}
    for _ in range(repeats):
        for name, e in engines.items():
            time.sleep(0.2)  # the previous engine's threads stop spinning, as in `ninjagrad bench`
            run(e, min(steps, e.chunk_size(B)))
            w, c = time.perf_counter(), time.process_time()
            run(e, steps)
            out[name]["wall"].append((time.perf_counter() - w) / steps)
            out[name]["cpu"].append((time.process_time() - c) / steps)
    return out


def compile_seconds(model_name: str, cache_dir: str) -> float:
    """`prepare` of the compiled engine (one step, compile included) in a fresh process."""
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache_dir}
    r = subprocess.run([sys.executable, __file__, "--compile-only", model_name], env=env, capture_output=True,
                       text=True, check=True)
    return float(r.stdout.strip().splitlines()[-1])


def compile_only(model_name: str):
    engines, _, _ = make_pair(model_name)
    t = time.perf_counter()
    engines["compiled"].prepare(32)
    print(time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["wavenet", "transformer"],
                    choices=["mlp", "wavenet", "transformer"])
    ap.add_argument("--steps", type=int, default=None,
                    help="steps per repeat (default: 640 mlp, 320 wavenet, 48 transformer)")
    ap.add_argument("--repeats", type=int, default=7, help="repeats per figure (default 7)")
    ap.add_argument("--no-compile-times", action="store_true", help="skip the cold and warm compile measurements")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    ap.add_argument("--write", action="store_true", help="write the table into benchmarks/README.md")
    ap.add_argument("--compile-only", metavar="MODEL", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.compile_only:
        return compile_only(args.compile_only)

    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory(prefix="inductor-cache-") as cache:
        for name in args.models:
            row = {"model": name}
            if not args.no_compile_times:
                row["compile_cold_s"] = compile_seconds(name, cache)
                row["compile_warm_s"] = compile_seconds(name, cache)
            engines, N, lr = make_pair(name)
            steps = args.steps or STEPS[name]
            t = time_pair(engines, N, 32, steps, args.repeats, lr)
            for clock in ("wall", "cpu"):
                m, c = (statistics.median(t[e][clock]) * 1e6 for e in ("manual", "compiled"))
                row.update({f"manual_{clock}_us": m, f"compiled_{clock}_us": c, f"ratio_{clock}": m / c})
            row["repeats_us"] = {e: [round(x * 1e6) for x in t[e]["wall"]] for e in t}
            rows.append(row)
    result = {"machine": machine(), "load_before": [round(x, 2) for x in load_before],
              "load_after": [round(x, 2) for x in os.getloadavg()], "steps": args.steps, "repeats": args.repeats,
              "rows": rows}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    m = result["machine"]
    table = []
    for r in rows:
        compile_cell = f"{r['compile_cold_s']:.1f} / {r['compile_warm_s']:.1f}" if "compile_cold_s" in r else "-"
        table.append([r["model"], f"{r['manual_wall_us']:.0f}", f"{r['compiled_wall_us']:.0f}",
                      f"{r['ratio_wall']:.2f}x", f"{r['manual_cpu_us']:.0f}", f"{r['compiled_cpu_us']:.0f}",
                      f"{r['ratio_cpu']:.2f}x", compile_cell])
    steps = args.steps or " or ".join(f"{STEPS[n]} ({n})" for n in args.models)
    text = (f"## The compiled engine against the manual one\n\n`{command_line()}` on {m['cpu']}, "
            f"{m['cores']} cores, torch {m['torch']} ({n_threads(m['torch_threads'])}); load average "
            f"{result['load_before'][0]:.2f} at the start, {result['load_after'][0]:.2f} at the end. Each model at "
            f"its default sizes, batch 32, its default optimizer; µs per step, median of {args.repeats} repeats of "
            f"{steps} steps, the two engines taking turns. \"µs/step\": wall clock; \"CPU µs\": the process's CPU "
            "time, which moves less when other processes share the cores; \"speed-up\": manual over compiled. "
            + ("\"compile s\": not measured in this run (--no-compile-times)." if args.no_compile_times else
               "\"compile s\": the compiled engine's first step (compile included) in a fresh process, with an "
               "empty inductor cache (cold) and then with the cache that run left (warm).") + "\n\n"
            + md_table(["model", "manual µs/step", "compiled µs/step", "speed-up", "manual CPU µs", "compiled CPU µs",
                        "speed-up (CPU)", "compile s (cold / warm)"], table))
    print(text)
    if args.write:
        write_section("compiled_engine", text)


if __name__ == "__main__":
    main()
