"""Print the README's fast-engine tables (markdown), with the machine they were measured on.

    python benchmarks/fast_engine.py                    # engines + dC debate + scaling + peak memory
    python benchmarks/fast_engine.py --steps 1000 --repeats 9
    python benchmarks/fast_engine.py --compare-20k      # also: 20k-step runs, fast vs autograd, on names.txt
    python benchmarks/fast_engine.py --write            # and puts the tables in benchmarks/README.md

Every comparison is made inside this one run, engines taking turns, medians of the repeats: the
machines this project runs on are shared, and absolute figures move with the load (printed).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from readme import command_line, md_table, n_threads, write_section

from ninjagrad import bench

REPO = Path(__file__).resolve().parents[1]
NAMES = REPO.parent / "shared" / "data" / "names.txt"


def peak_rss_mb(engine: str, B: int, H: int, steps: int) -> float:
    """Peak resident memory of a whole `ninjagrad train` process, in MiB (Linux ru_maxrss is KiB)."""
    with tempfile.TemporaryDirectory() as out:
        data = ["--data", str(NAMES)] if NAMES.exists() else []
        cmd = [sys.executable, "-m", "ninjagrad", "train", "--engine", engine, "--steps", str(steps),
               "--batch-size", str(B), "--n-hidden", str(H), "--device", "cpu", "--no-progress",
               "--samples", "0", "--out", str(Path(out) / "run"), *data]
        probe = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True); "
                 "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss if r.returncode == 0 else -1)")
        res = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True, check=True)
        return int(res.stdout.strip()) / 1024


def run_20k(engine: str) -> dict:
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "ninjagrad", "train", "--engine", engine, "--steps", "20000", "--data",
               str(NAMES), "--device", "cpu", "--no-progress", "--samples", "0", "--out", str(Path(out) / "run")]
        subprocess.run(cmd, check=True, capture_output=True)
        return json.loads((Path(out) / "run" / "summary.json").read_text())


def engine_parts(result: dict, steps: int, repeats: int) -> list[str]:
    """The engines' table, the distance to the matmul floor, the dC debate and (when timed) the scaling."""
    parts = [f"Engines, the lecture's MLP (batch 32, n_hidden 200, float32): median of {repeats} repeats of {steps} "
             "steps; steps run as the training loop runs them: each chunk's minibatches drawn with one "
             "`torch.randint`, then `engine.steps` (chunks of 64 for the fast engine, 1 for the torch engines). "
             "\"× autograd\": the autograd engine's time over the row's; \"200k steps\": the median step times the "
             "lecture's 200,000 steps.",
             md_table(["engine", "µs/step", "steps/s", "× autograd", "200k steps"],
                      [[r["engine"], f"{r['us_per_step']:.1f}", f"{r['steps_per_s']:,.0f}", f"{r['vs_autograd']:.1f}×",
                        f"{r['projected_200k_s']:.1f} s"] for r in result["engines"]])]
    fast = next((r for r in result["engines"] if r["engine"] == "fast"), None)
    if fast is not None:
        parts.append(f"Distance to the floor: the six matmuls alone cost {matmul_floor_us():.1f} µs from compiled "
                     f"code; the fast step is {fast['us_per_step']:.1f} µs.")
    parts += ["dC, the lecture's debate (checked against autograd; batch 32, block 3, n_embd 10, repeated rows):",
              md_table(["vocab", "method", "µs/call", "max abs error", "correct"],
                       [[f"{r['V']:,}", r["method"], f"{r['us_per_call']:.1f}", f"{r['max_abs_err']:.1e}",
                         "yes" if r["correct"] else "**no**"] for r in result["dC"]])]
    if "scaling" in result:
        peak = result["scaling"][0]["matmul_peak_gflops"]
        parts += [f"Scaling (GFLOP/s = the six matmuls' FLOPs / step time; this machine's float32 matmul, "
                  f"torch.mm 2048², all cores: {peak:.0f} GFLOP/s):",
                  md_table(["engine", "batch", "n_hidden", "µs/step", "GFLOP/s", "% of matmul peak"],
                           [[r["engine"], r["batch"], r["n_hidden"], f"{r['us_per_step']:.0f}", f"{r['gflops']:.1f}",
                             "" if r["pct_of_matmul_peak"] is None else f"{r['pct_of_matmul_peak']:.0f}%"]
                            for r in result["scaling"]])]
    return parts


def memory_parts(runs: int) -> list[str]:
    """Peak memory of short training processes, the manual and fast engines taking turns."""
    rows = []
    for B, H in ((32, 200), (4096, 1024)):
        mem = {"manual": [], "fast": []}
        for _ in range(runs):  # taking turns: a process's peak varies by up to a third
            for e in mem:
                mem[e].append(peak_rss_mb(e, B, H, 30))
        med = {e: statistics.median(v) for e, v in mem.items()}
        rows.append([B, H] + [f"{med[e]:.0f} ({min(v):.0f}–{max(v):.0f})" for e, v in mem.items()]
                    + [f"{med['fast'] / med['manual']:.2f}"])
    return [f"Peak memory of a `ninjagrad train` process (30 steps; ru_maxrss, MiB; median of {runs} processes per "
            "engine, range in brackets):",
            md_table(["batch", "n_hidden", "manual", "fast", "fast / manual (medians)"], rows)]


def compare_parts() -> list[str]:
    """20k-step runs of the fast and autograd engines on names.txt, same seed."""
    if not NAMES.exists():
        return ["(20k-step comparison skipped: names.txt is not at ../shared/data/)"]
    s = {e: run_20k(e) for e in ("fast", "autograd")}
    return ["20k steps on ../shared/data/names.txt, same seed:",
            md_table(["engine", "train loss", "val loss", "train_seconds"],
                     [[e, f"{v['train_loss']:.4f}", f"{v['val_loss']:.4f}", f"{v['train_seconds']:.1f}"]
                      for e, v in s.items()]),
            f"|val(fast) - val(autograd)| = {abs(s['fast']['val_loss'] - s['autograd']['val_loss']):.4f}"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=500, help="steps per repeat (default 500)")
    ap.add_argument("--repeats", type=int, default=7, help="repeats per figure (default 7)")
    ap.add_argument("--no-scaling", action="store_true")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--memory-runs", type=int, default=5, help="training processes per engine and shape (median)")
    ap.add_argument("--compare-20k", action="store_true", help="20k-step runs of fast and autograd on names.txt")
    ap.add_argument("--threads", type=int, help="torch threads of the torch engines (default: as training chooses)")
    ap.add_argument("--write", action="store_true", help="write the tables into benchmarks/README.md")
    args = ap.parse_args()

    load = os.getloadavg()[0]
    result = bench.run_bench(args.steps, args.repeats, scaling=not args.no_scaling, dc=True, threads=args.threads)
    parts = engine_parts(result, args.steps, args.repeats)
    if not args.no_memory:
        parts += memory_parts(args.memory_runs)
    if args.compare_20k:
        parts += compare_parts()
    m = result["machine"]
    head = (f"## The fast engine\n\n`{command_line()}` on {m['cpu']}, {m['cores']} cores (the torch engines on "
            f"{n_threads(result['torch_threads'])}: {result['threads_why']}), torch {m['torch']}, numpy "
            f"{m['numpy']}, scipy {m['scipy']}, Python {m['python']}, the fast engine's C kernel compiled for "
            f"{m['fast_kernel']}" + (f", GPU {m['gpu']}" if "gpu" in m else "") + f"; load average {load:.2f} "
            f"at the start, {os.getloadavg()[0]:.2f} at the end. Every comparison is made inside this one run, the "
            "engines taking turns, medians of the repeats.")
    text = "\n\n".join([head, *parts])
    print(text)
    if args.write:
        write_section("fast_engine", text)


def matmul_floor_us(repeats: int = 7, calls: int = 2000) -> float:
    """The six matmuls of a lecture step, as the fast engine's compiled step calls BLAS: the floor."""
    from ninjagrad.engines.fast import load_step_kernel

    kernel = load_step_kernel()
    kernel.matmul_floor(32, 30, 200, 27, 10)  # warm up
    return sorted(kernel.matmul_floor(32, 30, 200, 27, calls) * 1e6 for _ in range(repeats))[repeats // 2]


if __name__ == "__main__":
    main()
