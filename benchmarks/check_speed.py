"""How long `ninjagrad check` takes, start-up included, as a learner runs it; and where one check spends it.

    python benchmarks/check_speed.py                 # every case, 5 runs each; prints two markdown tables
    python benchmarks/check_speed.py --write         # and puts them in benchmarks/README.md
    python benchmarks/check_speed.py --cases ex1 torch --repeats 9

Each figure is the wall time of a whole process (`subprocess.run`, `time.perf_counter`), from a folder
holding the files below and no names.txt (so the lecture's batch comes from the default corpus, as for a
learner who has not downloaded names.txt). The cases take turns, each run once on the machine as it is and
once beside a CPU-bound neighbour process (`ninjagrad.bench.busy_neighbour`, what
`../shared/tools/with-busy-neighbour` does); one untimed pass over every case comes first (disk caches).
`python -c "import torch"` is the floor: every judge process imports torch.

The second table times the phases of one check of exercise 1, after the first table's runs: the judge
process by benchmarks/check_phases.py, the `ninjagrad check` process around it as its wall time less the
judge's seconds that `--json` reports.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from html_class import MISTAKES
from readme import command_line, md_table, ninjagrad_cli, write_section

from ninjagrad.bench import busy_neighbour, machine

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
NOTEBOOK = REPO / "examples" / "notebook" / "backprop_ninja.ipynb"
CLASS_SIZE = 10
CASES = {  # name: (what is checked, the command as a user types it; files relative to the work folder)
    "python": ("Python's start-up alone", ["python", "-c", "pass"]),
    "torch": ("the floor: importing torch", ["python", "-c", "import torch"]),
    "ex1": ("exercise 1, the package's solution", ["ninjagrad", "check", "ex1.py"]),
    "cell": ("exercise 1 pasted as a notebook cell, with a mistake", ["ninjagrad", "check", "cell.py"]),
    "notebook": ("the example notebook (exercises 1-3)", ["ninjagrad", "check", NOTEBOOK.name]),
    "ex2": ("exercise 2, the package's solution", ["ninjagrad", "check", "ex2.py"]),
    "ex3": ("exercise 3, the package's solution", ["ninjagrad", "check", "ex3.py"]),
    "class": (f"a class: {CLASS_SIZE} files of exercise 1, 9 with a mistake",
              ["ninjagrad", "check", "--jobs", "2", "student_*.py"]),  # the pattern as the shell expands it
}
# the lecture's compare helper, as a learner's notebook defines it; the checker mutes it
CMP = ("def cmp(s, dt, t):\n    ex = torch.all(dt == t.grad).item()\n    app = torch.allclose(dt, t.grad)\n"
       "    maxdiff = (dt - t.grad).abs().max().item()\n"
       "    print(f'{s:15s} | exact: {str(ex):5s} | approximate: {str(app):5s} | maxdiff: {maxdiff}')\n\n")
CMP_CALLS = ["logprobs", "probs", "counts", "logits", "h", "bndiff2", "bndiff", "hprebn", "W1", "C"]


def argv_of(command: list[str], folder: Path) -> list[str]:
    """The command as a user types it, run here: this environment's Python and ninjagrad, a file pattern
    expanded as the shell does."""
    head = {"python": [sys.executable], "ninjagrad": ninjagrad_cli()}[command[0]]
    argv = []
    for a in command[1:]:
        argv += sorted(p.name for p in folder.glob(a)) if "*" in a else [a]
    return head + argv


def write_files(folder: Path):
    """The exercises' solutions as the CLI writes them, the pasted cell, the class's files and the notebook."""
    shutil.copy(NOTEBOOK, folder / NOTEBOOK.name)
    for n in (1, 2, 3):
        subprocess.run(ninjagrad_cli() + ["exercise", str(n), "--solution", "-o", f"ex{n}.py"], cwd=folder,
                       check=True, capture_output=True)
    solution = (folder / "ex1.py").read_text(encoding="utf-8")
    code = "\n".join(line for line in solution.splitlines() if not line.startswith("#"))  # no banner, no tag
    wrong, right = MISTAKES[0][1], MISTAKES[0][0]  # dbndiff2 divided by n: Bessel's n-1 forgotten
    calls = "".join(f"cmp('{x}', d{x}, {x})\n" for x in CMP_CALLS)
    (folder / "cell.py").write_text(CMP + code.replace(right, wrong) + "\n\n" + calls, encoding="utf-8")
    for i in range(CLASS_SIZE):
        src = solution if i == 0 else solution.replace(*MISTAKES[(i - 1) % len(MISTAKES)])
        (folder / f"student_{i:02d}.py").write_text(src, encoding="utf-8")


def run_once(argv: list[str], folder: Path) -> tuple[float, int]:
    t = time.perf_counter()
    r = subprocess.run(argv, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t, r.returncode


def time_cases(names: list[str], folder: Path, repeats: int) -> dict:
    """Seconds of each case as is and beside a busy neighbour, the cases taking turns; exit statuses."""
    out = {n: {"quiet": [], "busy": [], "exit": set()} for n in names}
    for n in names:
        run_once(argv_of(CASES[n][1], folder), folder)  # disk caches warm
    for r in range(repeats):
        for n in names:
            for busy in (False, True):
                with busy_neighbour(busy):
                    s, code = run_once(argv_of(CASES[n][1], folder), folder)
                out[n]["busy" if busy else "quiet"].append(s)
                out[n]["exit"].add(code)
        print(f"repeat {r + 1}/{repeats} done", flush=True)
    return out


def time_phases(folder: Path, repeats: int) -> dict[str, list[float]]:
    """The phases of checking ex1.py, each run: Python's start-up, benchmarks/check_phases.py's answer and the
    exit after it (its process's wall time less the two), and a whole `ninjagrad check --json ex1.py` with the
    part of it outside its judge (its wall time less the judge's)."""
    phases: dict[str, list[float]] = {}
    for _ in range(repeats):
        seconds = {"python": run_once([sys.executable, "-c", "pass"], folder)[0]}
        t = time.perf_counter()
        r = subprocess.run([sys.executable, str(HERE / "check_phases.py"), "ex1.py"], cwd=folder,
                           capture_output=True, text=True, check=True)
        wall = time.perf_counter() - t
        seconds.update(json.loads(r.stdout.splitlines()[-1]))
        seconds["exit"] = wall - seconds["python"] - seconds["total"]
        t = time.perf_counter()
        r = subprocess.run(ninjagrad_cli() + ["check", "--json", "ex1.py"], cwd=folder, capture_output=True,
                           text=True)
        seconds["whole"] = time.perf_counter() - t
        seconds["parent"] = seconds["whole"] - json.loads(r.stdout.splitlines()[0])["seconds"]
        for k, v in seconds.items():
            phases.setdefault(k, []).append(v)
    return phases


# (key in time_phases' answer or derived()'s, what it is), in the order a check goes through them
PHASE_ROWS = [
    ("parent", "`ninjagrad check --json` around its judge: its own Python start-up and imports, starting the "
               "judge, printing the answer"),
    ("python", "judge: Python's start-up (as `python -c pass`)"),
    ("torch", "judge: `import torch`"),
    ("modules", "judge: the checker's modules"),
    ("plan", "judge: the file read, what to judge in it"),
    ("fork", "judge: the learner's process forked"),
    ("corpus", "judge: the words read (default corpus) and split 80/10/10 (`batch._splits`)"),
    ("init", "judge: the lecture's init and minibatch"),
    ("traces", "judge: the forward traced, float32 and float64"),
    ("solution", "judge: the package's solution on it"),
    ("exercise", "judge: the rest of preparing the exercise (`core.prepare`: its files read)"),
    ("read", "judge: the submission sent to the learner's process"),
    ("namespaces", "judge: the forward's values sent to it"),
    ("judging", "judge: the submission run and every gradient judged (`core.check_program`)"),
    ("close", "judge: the learner's process ended"),
    ("rest", "judge: the rest (the worker's arguments, the report written)"),
    ("exit", "judge: its exit after the answer (`os._exit`, no teardown)"),
]
# what the judge's total is made of (check_phases.py's keys; "prepare" holds setup, traces and solution)
LEAVES = ("torch", "modules", "plan", "fork", "prepare", "read", "namespaces", "judging", "close")


def derived(phases: dict[str, list[float]]) -> dict[str, list[float]]:
    """The phases that are differences of the measured ones, run by run."""
    p = phases
    runs = range(len(p["total"]))
    return {"init": [p["setup"][i] - p["corpus"][i] for i in runs],
            "exercise": [p["prepare"][i] - p["setup"][i] - p["traces"][i] - p["solution"][i] for i in runs],
            "rest": [p["total"][i] - sum(p[k][i] for k in LEAVES) for i in runs]}


def phase_table(phases: dict[str, list[float]]) -> str:
    """One row a phase: median and min over the runs, and the median's share of the whole check's."""
    values = {**phases, **derived(phases)}
    whole = statistics.median(phases["whole"])
    rows, total = [], 0.0
    for k, what in PHASE_ROWS:
        m = statistics.median(values[k])
        total += m
        rows.append([what, f"{m:.2f}", f"{min(values[k]):.2f}", f"{100 * m / whole:.0f}%"])
    rows.append(["sum of the medians", f"{total:.2f}", "", f"{100 * total / whole:.0f}%"])
    rows.append(["the whole check: `ninjagrad check --json ex1.py`", f"{whole:.2f}", f"{min(phases['whole']):.2f}",
                 "100%"])
    return md_table(["phase of `ninjagrad check ex1.py`", "median (s)", "min (s)", "of the whole check (median)"],
                    rows)


def shown(command: list[str]) -> str:
    """The command as typed: arguments quoted where the shell needs it, a file pattern left for it to expand."""
    return " ".join(a if "*" in a else shlex.quote(a) for a in command)


def case_table(names: list[str], times: dict) -> str:
    floor = statistics.median(times["torch"]["quiet"]) if "torch" in times else None
    rows = []
    for n in names:
        what, command = CASES[n]
        t = times[n]
        q, b = statistics.median(t["quiet"]), statistics.median(t["busy"])
        rows.append([what, f"`{shown(command)}`", "/".join(str(c) for c in sorted(t["exit"])),
                     f"{q:.2f} ({min(t['quiet']):.2f})", f"{b:.2f} ({min(t['busy']):.2f})", f"{b / q:.2f}",
                     "" if floor is None or n in ("python", "torch") else f"{q - floor:.2f}"])
    return md_table(["what", "command", "exit", "as is: median (min), s", "busy: median (min), s", "busy / as is",
                     "as is, above the floor (s)"], rows)


def section(command: str, repeats: int, load: tuple[float, float], times: dict, phases: dict | None) -> str:
    m = machine()
    names = [n for n in CASES if n in times]
    text = (f"## How long `ninjagrad check` takes\n\n`{command}` on {m['cpu']}, {m['cores']} cores, torch "
            f"{m['torch']} (each judge on one thread, as the checker sets it), Python {m['python']}; load average "
            f"{load[0]:.2f} at the start, {load[1]:.2f} at the end. Seconds of the whole process, start-up "
            "included, as a learner runs it from a folder without names.txt (the batch from the default corpus); "
            f"median (and min) of {repeats} runs, the cases taking turns. \"as is\": the machine with whatever "
            "else runs on it (the load average above); \"busy\": beside one CPU-bound neighbour process as well. "
            "\"above the floor\": the median less that of `python -c \"import torch\"`, which every judge process "
            "pays. ex1.py, ex2.py and ex3.py are what `ninjagrad exercise N --solution -o exN.py` writes; cell.py "
            "is exercise 1 as a learner pastes it from a notebook cell: the lecture's `cmp` defined, the "
            "solution's lines with `dbndiff2` divided by n instead of n-1, and ten `cmp` calls; the class's files "
            "are the solution and nine single mistakes of `benchmarks/html_class.py`; backprop_ninja.ipynb is a "
            "copy of examples/notebook/backprop_ninja.ipynb. Exit 1: a file has a wrong gradient, as it "
            "should.\n\n" + case_table(names, times))
    if phases is not None:
        text += (f"\n\nWhere one check of exercise 1 spends its time (median and min of {repeats} runs, as is, "
                 "after the runs above): the judge process timed phase by phase by `benchmarks/check_phases.py`; "
                 "the `ninjagrad check` process around it is the wall time of `ninjagrad check --json ex1.py` less "
                 "the judge's seconds that it reports. \"of the whole check\": of the median of those "
                 "`ninjagrad check --json ex1.py` runs, the last row (the judge's phases are timed in processes of "
                 "their own, so the sum of the medians and the whole differ by more than rounding).\n\n"
                 + phase_table(phases))
    return text


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES), help="which (default: all)")
    ap.add_argument("--repeats", type=int, default=5, help="runs of each case, as is and busy (default 5)")
    ap.add_argument("--no-phases", action="store_true", help="skip the phases of one check of exercise 1")
    ap.add_argument("--write", action="store_true", help="write the tables into benchmarks/README.md")
    args = ap.parse_args()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="check-speed-") as tmp:
        folder = Path(tmp)
        write_files(folder)
        times = time_cases(args.cases, folder, args.repeats)
        phases = None if args.no_phases else time_phases(folder, args.repeats)
    text = section(command_line(), args.repeats, (load, os.getloadavg()[0]), times, phases)
    print(text)
    if args.write:
        write_section("check_speed", text)


if __name__ == "__main__":
    main()
