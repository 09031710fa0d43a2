"""Time the fast engine's CPU kernels at large shapes: µs/step and % of this machine's matmul peak.

    python benchmarks/fast_blocked.py                       # 4096x1024, 4096x200, 256x1024
    python benchmarks/fast_blocked.py --shapes 4096x1024 --repeats 9 --widths 64 128 256
    python benchmarks/fast_blocked.py --write               # and puts the table in benchmarks/README.md

Candidates (step, BLAS threads): the whole-batch step (a _fast_step.Step without blocks) on one core; the
same with BLAS on all cores; and the blocked step (a Step given a `blocks` layout) on one core and with one
block group per core, each calling a one-thread BLAS. All take turns inside one process and
the medians of the repeats are printed: the machine is shared, and the load average is printed with
them. % of peak = bench.step_flops(B, K, H, V) / time / bench.matmul_gflops().
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch
from readme import command_line, md_table, write_section

from ninjagrad import bench
from ninjagrad.engines.fast import FastEngine, block_width, cores, make_blocks, set_blas_threads
from ninjagrad.models import MLP, MLPConfig

T, E, V = 3, 10, 27


def candidates(H: int, widths: list[int]) -> list[tuple]:
    """(label, blocks, BLAS threads) of each way to run a step."""
    n = cores()
    out = [("whole batch, 1 thread", None, 1), (f"whole batch, BLAS {n} threads", None, n)]
    for groups in sorted({1, n}):
        for w in widths or [block_width(H, groups)]:
            out.append((f"blocked, {groups} thread{'s' * (groups > 1)}, w={w}", make_blocks(H, groups, w), 1))
    return out


def time_shape(B: int, H: int, steps: int, repeats: int, widths: list[int], dtype, settle: float) -> list[tuple]:
    """Median seconds per step of each candidate; they take turns, `steps` steps a turn."""
    g = torch.Generator().manual_seed(0)
    X, Y = torch.randint(0, V, (20_000, T), generator=g), torch.randint(0, V, (20_000,), generator=g)
    model = MLP.create(MLPConfig(vocab_size=V, block_size=T, n_embd=E, n_hidden=H),
                       torch.Generator().manual_seed(1), dtype=dtype)
    eng = FastEngine(model, X, Y)  # its arenas, data layout and compiled kernels
    ixs = torch.randint(0, X.shape[0], (steps, B), generator=g).numpy()
    losses = np.empty(steps)
    cands = candidates(H, widths)
    kernels = [eng._new_step(B, blocks) for _, blocks, _ in cands]
    times = [[] for _ in cands]

    def run(i):
        set_blas_threads(cands[i][2])
        time.sleep(settle)  # the previous candidate's BLAS threads spin for a while after their last call
        t = time.perf_counter()
        kernels[i].run(ixs, 1e-3, True, losses)
        return (time.perf_counter() - t) / steps

    for i in range(len(cands)):
        run(i)  # warm-up: touch the arenas, start the threads
    for _ in range(repeats):
        for i in range(len(cands)):
            times[i].append(run(i))
    return [(c[0], statistics.median(t)) for c, t in zip(cands, times)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", nargs="+", default=["4096x1024", "4096x200", "256x1024"], help="BxH, B batch size")
    ap.add_argument("--steps", type=int, default=0, help="steps per turn (default: ~150 ms of work)")
    ap.add_argument("--repeats", type=int, default=7, help="turns per candidate; the median is printed (default 7)")
    ap.add_argument("--widths", type=int, nargs="*", default=[],
                    help="block widths for the blocked step (default: fast.block_width)")
    ap.add_argument("--settle", type=float, default=0.3,
                    help="seconds to sleep before each turn, so spinning threads of the last one stop (default 0.3)")
    ap.add_argument("--float64", action="store_true", help="time float64 instead of float32")
    ap.add_argument("--write", action="store_true", help="write the table into benchmarks/README.md")
    args = ap.parse_args()
    load = os.getloadavg()[0]
    peak = bench.matmul_gflops()
    dtype = torch.float64 if args.float64 else torch.float32
    print(f"matmul peak (torch 2048^3 sgemm, {torch.get_num_threads()} threads): {peak:.0f} GFLOP/s; "
          f"{cores()} cores; {dtype}; load average {load:.2f} at the start", flush=True)
    rows = []
    for shape in args.shapes:
        B, H = (int(s) for s in shape.lower().split("x"))
        steps = args.steps or max(3, int(150e-3 / (bench.step_flops(B, T * E, H, V) / 30e9)))
        for label, sec in time_shape(B, H, steps, args.repeats, args.widths, dtype, args.settle):
            gf = bench.step_flops(B, T * E, H, V) / sec / 1e9
            rows.append([f"{B}x{H}", label, f"{sec * 1e6:,.0f}", f"{gf:.0f}", f"{100 * gf / peak:.0f}%"])
            print(f"measured {B}x{H}, {label}", flush=True)
    m = bench.machine()
    text = (f"## The fast engine's kernels at large shapes\n\n`{command_line()}` on {m['cpu']}, {cores()} cores, "
            f"torch {m['torch']}, numpy {m['numpy']}, scipy {m['scipy']}, the kernel compiled for "
            f"{m['fast_kernel']}; {str(dtype).removeprefix('torch.')}; load average {load:.2f} at the start, "
            f"{os.getloadavg()[0]:.2f} at the end. The lecture's MLP (block 3, n_embd 10, vocabulary 27) at batch "
            f"x n_hidden as given: µs per step, median of {args.repeats} turns (the candidates taking turns, "
            f"{args.settle} s of sleep before each). Candidates: the whole-batch step on one thread, the same with "
            "BLAS on every core, and the blocked step (its hidden units in blocks of width w) on one thread and "
            "with one block group per core. GFLOP/s: the step's six matmuls' FLOPs over its time; % of peak: of "
            f"this machine's float32 matmul, torch.mm 2048³ on {torch.get_num_threads()} threads ({peak:.0f} "
            "GFLOP/s here).\n\n" + md_table(["B x H", "candidate", "µs/step", "GFLOP/s", "% of peak"], rows))
    print(text)
    if args.write:
        write_section("fast_blocked", text)


if __name__ == "__main__":
    main()
