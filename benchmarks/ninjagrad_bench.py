"""`ninjagrad bench`'s tables as markdown: the engines and their peers at the lecture's step, as a user runs it.

    python benchmarks/ninjagrad_bench.py                      # ninjagrad bench --busy --peers --no-dc
    python benchmarks/ninjagrad_bench.py --write              # and puts the tables in benchmarks/README.md
    python benchmarks/ninjagrad_bench.py --scaling --repeats 9  # other flags go to ninjagrad bench instead

The figures are `ninjagrad bench --json`'s, run as a subprocess with the flags given (by default the ones the
top-level README quotes); this script only lays them out, with the machine and the load average around the run.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

from readme import command_line, md_table, n_threads, ninjagrad_cli, write_section

DEFAULT_FLAGS = ["--busy", "--peers", "--no-dc"]  # the top-level README's "Speed" row


def times(x) -> str:
    return "" if x is None else f"{x:.1f}×"


def engine_table(rows: list[dict]) -> str:
    busy = "busy_us_per_step" in rows[0]
    header = ["engine", "µs/step", "steps/s", "× autograd", "200k steps (s)"]
    if busy:
        header += ["busy: µs/step", "× autograd", "200k steps (s)"]
    out = []
    for r in rows:
        cells = [r["engine"], f"{r['us_per_step']:.1f}", f"{r['steps_per_s']:,.0f}", times(r["vs_autograd"]),
                 f"{r['projected_200k_s']:.1f}"]
        if busy:
            cells += [f"{r['busy_us_per_step']:.1f}", times(r["busy_vs_autograd"]), f"{r['busy_projected_200k_s']:.1f}"]
        out.append(cells)
    return md_table(header, out)


def dc_table(rows: list[dict]) -> str:
    return md_table(["shape", "method", "µs/call", "max abs error", "correct"],
                    [[f"{r['shape']} (V={r['V']:,})", r["method"], f"{r['us_per_call']:.1f}",
                      f"{r['max_abs_err']:.1e}", "yes" if r["correct"] else "**no**"] for r in rows])


def scaling_table(rows: list[dict]) -> str:
    return md_table(["engine", "batch", "n_hidden", "µs/step", "GFLOP/s", "% of matmul peak"],
                    [[r["engine"], r["batch"], r["n_hidden"], f"{r['us_per_step']:.1f}", f"{r['gflops']:.1f}",
                      "" if r["pct_of_matmul_peak"] is None else f"{r['pct_of_matmul_peak']:.0f}%"] for r in rows])


def section(result: dict, flags: list[str], load: tuple[float, float], seconds: float) -> str:
    m = result["machine"]
    command = shlex.join(["ninjagrad", "bench", *flags])
    busy = "busy_us_per_step" in result["engines"][0]
    text = (f"## `ninjagrad bench`: the engines and their peers\n\n`{command_line()}` runs "
            f"`{command}` on {m['cpu']}, {m['cores']} cores, torch {m['torch']}, numpy {m['numpy']}, scipy "
            f"{m['scipy']}, Python {m['python']}, the fast engine's kernel compiled for {m['fast_kernel']}; "
            f"load average {load[0]:.2f} at the start, {load[1]:.2f} at the end; {seconds:.0f} s in all. The "
            f"lecture's MLP (batch 32, n_hidden 200, float32): median of {result['repeats']} repeats of "
            f"{result['steps_per_repeat']} steps, the engines taking turns, torch on "
            f"{n_threads(result['torch_threads'])} ({result['threads_why']}). \"× autograd\": the autograd "
            "engine's time over the row's; \"200k steps\": the median step times the lecture's 200,000 steps"
            + ("; \"busy\": every row timed again beside one CPU-bound neighbour process" if busy else "")
            + ".\n\n" + engine_table(result["engines"]))
    for name, why in result["missing"].items():
        text += f"\n\nNo {name} rows: {why}"
    if "dC" in result:
        text += ("\n\nThe lecture's dC debate: each way to accumulate the embedding's gradient, timed and checked "
                 "against autograd.\n\n" + dc_table(result["dC"]))
    if "scaling" in result:
        text += ("\n\nScaling: GFLOP/s = the six matmuls' FLOPs / step time; % of this machine's float32 "
                 "matmul (torch.mm 2048², all cores).\n\n" + scaling_table(result["scaling"]))
    return text


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 epilog="Any other flag is passed to `ninjagrad bench` (default: "
                                        + " ".join(DEFAULT_FLAGS) + ").")
    ap.add_argument("--write", action="store_true", help="write the tables into benchmarks/README.md")
    args, given = ap.parse_known_args()
    flags = given or DEFAULT_FLAGS
    before = os.getloadavg()[0]
    t = time.perf_counter()
    r = subprocess.run(ninjagrad_cli() + ["bench", *flags, "--json"], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"ninjagrad bench failed (exit {r.returncode}): {r.stderr.strip()[-2000:]}")
    seconds = time.perf_counter() - t
    text = section(json.loads(r.stdout), flags, (before, os.getloadavg()[0]), seconds)
    print(text)
    if args.write:
        write_section("ninjagrad_bench", text)


if __name__ == "__main__":
    main()
