"""`ninjagrad plot`: the loss curves of several runs in one picture, and a run's diagnostics redrawn.

It reads run folders as `ninjagrad train` writes them: metrics.csv (each step's minibatch loss),
evals.csv (train and val loss every --eval-every steps), summary.json (the losses at the end),
config.json (model, engine) and diagnostics.npz (diagnostics.py). numpy and matplotlib, no torch.

The overlay draws, one colour per run, the minibatch loss as loss.png does (log10, averaged over
chunks of 1000 steps, n/20 for runs shorter than 2000) as a solid line, and the val loss (log10) at each
evaluation and at the end as a dashed line with dots.

diagnostics.png holds makemore part 3's figures from one run's records. Top row, at the last recorded
step: each nonlinearity's output distribution (legend: mean, std, saturated fraction), the
distribution of the loss's gradient with respect to each output (mean, std) and each weight matrix's
gradient distribution (std, grad:data ratio); the histograms as densities over their bins. Bottom row,
over the recorded steps: each layer's saturated fraction, each layer's output-gradient std, and each
matrix's log10 update:data ratio with the 1e-3 guide (-3) dashed.

The series functions (`train_series`, `val_series`, `histogram_series`, `step_series`) return exactly
the x and y each line is drawn from; tests/test_plot.py holds the drawn lines to them.
"""
from __future__ import annotations

import csv
import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from matplotlib.figure import Figure

from .errors import UsageError

GUIDE = -3.0  # makemore's guide for log10 update:data: about 1e-3 of a parameter's spread per step


class Series(NamedTuple):
    label: str
    x: np.ndarray
    y: np.ndarray


@dataclass
class RunData:
    """What a run folder says about the run's losses and health."""

    path: Path
    name: str  # the folder's name
    label: str  # name (model, engine)
    losses: np.ndarray  # metrics.csv's loss, one per step
    evals: np.ndarray  # (k, 3) step, train loss, val loss from evals.csv and summary.json
    diagnostics: dict[str, np.ndarray] | None  # diagnostics.npz's arrays


# --- reading run folders --------------------------------------------------------------------------------

def read_table(path: Path, header: list[str]) -> np.ndarray:
    """A csv file of numbers under `header`, (rows, columns) float64; UsageError naming the line."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: unreadable ({e})") from None
    if not rows or rows[0] != header:
        raise UsageError(f"{path}:1: expected the header {','.join(header)}; is this a file `ninjagrad train` wrote?")
    out = np.empty((len(rows) - 1, len(header)))
    for i, row in enumerate(rows[1:]):
        try:
            if len(row) != len(header):
                raise ValueError(f"{len(row)} fields, not {len(header)}")
            out[i] = [float(v) for v in row]
        except ValueError as e:
            raise UsageError(f"{path}:{i + 2}: not a row of {len(header)} numbers ({e})") from None
    return out


def read_json(path: Path) -> dict:
    """A JSON object from the run folder ({} when the file is absent); UsageError when it is corrupt."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"{path}: corrupt ({e})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: corrupt (not a JSON object)")
    return data


def run_label(name: str, config: dict) -> str:
    """'name (model, engine)'; the learner's file for a run with --backward."""
    train = config.get("train")
    if not isinstance(train, dict):
        return name
    engine = train.get("engine")
    if engine == "user" and train.get("backward"):
        engine = f"backward {Path(str(train['backward'])).name}"
    return f"{name} ({train.get('model', '?')}, {engine or '?'})"


def read_run(path: str | Path) -> RunData:
    """A run folder's losses, evaluations, label and diagnostics; UsageError for anything else."""
    path = Path(path)
    if not path.is_dir():
        raise UsageError(f"{path}: not a run folder ({'a file' if path.exists() else 'no such folder'}); "
                         "pass folders made by `ninjagrad train`")
    if not (path / "metrics.csv").exists():
        raise UsageError(f"{path}: no metrics.csv, so not a run folder made by `ninjagrad train` (or one that "
                         "has saved no checkpoint yet)")
    losses = read_table(path / "metrics.csv", ["step", "loss", "lr"])[:, 1]
    evals = read_table(path / "evals.csv", ["step", "train_loss", "val_loss"]) if (path / "evals.csv").exists() \
        else np.empty((0, 3))
    summary = read_json(path / "summary.json")
    final = [summary.get(k) for k in ("steps", "train_loss", "val_loss")]
    # evals.csv ends with the last step's losses; summary.json's stand in where it does not (an older run)
    if all(isinstance(v, (int, float)) for v in final) and (not len(evals) or final[0] > evals[-1, 0]):
        evals = np.vstack([evals, np.array(final, dtype=np.float64)])
    name = path.resolve().name
    npz = path / "diagnostics.npz"
    diagnostics = read_diagnostics(npz) if npz.exists() else None
    return RunData(path, name, run_label(name, read_json(path / "config.json")), losses, evals, diagnostics)


# diagnostics.npz's arrays and their shapes, in letters: R records, L layers, P parameters, BINS, 2
ARRAYS = {"steps": "R", "layers": "L", "kinds": "L", "sources": "L", "params": "P", "shapes": "P", "matrix": "P",
          "act_counts": "RLB", "act_range": "RL2", "act_mean": "RL", "act_std": "RL", "act_saturated": "RL",
          "grad_counts": "RLB", "grad_range": "RL2", "grad_mean": "RL", "grad_std": "RL",
          "param_counts": "RPB", "param_range": "RP2", "param_grad_std": "RP", "grad_data": "RP",
          "update_data": "RP"}


def read_diagnostics(path: Path) -> dict[str, np.ndarray]:
    """diagnostics.npz's arrays, each checked against ARRAYS; UsageError when the file is not that."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in ARRAYS}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise UsageError(f"{path}: corrupt or not diagnostics.npz ({str(e).splitlines()[0][:120]})") from None
    sizes = {"R": len(arrays["steps"]), "L": len(arrays["layers"]), "P": len(arrays["params"]),
             "B": arrays["act_counts"].shape[-1], "2": 2}
    for k, letters in ARRAYS.items():
        if arrays[k].shape != tuple(sizes[c] for c in letters):
            raise UsageError(f"{path}: corrupt ({k} has shape {arrays[k].shape}, expected {letters})")
    if sizes["R"] == 0:
        raise UsageError(f"{path}: holds no record")
    return arrays


# --- the loss overlay -------------------------------------------------------------------------------------

def train_series(run: RunData) -> Series:
    """The minibatch loss as loss.png draws it: log10 per step, averaged over chunks of 1000 steps
    (of n // 20 for runs of n < 2000 steps), at each chunk's middle."""
    n = len(run.losses)
    chunk = 1000 if n >= 2000 else max(1, n // 20)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.log10(run.losses[: n - n % chunk]).reshape(-1, chunk).mean(1)
    return Series(f"{run.label} train", (np.arange(len(y)) + 0.5) * chunk, y)


def val_series(run: RunData) -> Series:
    """log10 of the val loss at each evaluation and at the end."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return Series(f"{run.label} val", run.evals[:, 0], np.log10(run.evals[:, 2]))


def draw_losses(runs: list[RunData], path: Path) -> Figure:
    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    for i, run in enumerate(runs):
        colour = f"C{i % 10}"
        train, val = train_series(run), val_series(run)
        ax.plot(train.x, train.y, color=colour, lw=1.2, label=train.label)
        if len(val.x):
            ax.plot(val.x, val.y, color=colour, ls="--", marker="o", ms=3, label=val.label)
    ax.set_xlabel("step")
    ax.set_ylabel("log10 loss")
    ax.set_title("train (minibatch, chunk means) and val loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save(fig, path)
    return fig


def save(fig: Figure, path: Path):
    """The figure as a PNG, atomically (written beside, then renamed)."""
    tmp = path.with_name("." + path.name + ".tmp.png")
    try:
        fig.savefig(tmp, dpi=100)
        tmp.replace(path)
    except OSError as e:
        raise UsageError(f"{path}: cannot write ({e.strerror})") from None


# --- diagnostics.png ----------------------------------------------------------------------------------------

def density(counts: np.ndarray, span: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A histogram as a density at its bins' centres (area 1; zeros for an empty one)."""
    lo, hi = span
    width = (hi - lo) / len(counts)
    total = counts.sum()
    return lo + (np.arange(len(counts)) + 0.5) * width, counts / (total * width) if total else np.zeros(len(counts))


def fmt(v: float, spec: str) -> str:
    return format(v, spec) if math.isfinite(v) else str(v)


def histogram_series(d: dict, which: str, record: int = -1) -> list[Series]:
    """The top row's lines at one record: which = "act" (outputs), "grad" (their gradients) or
    "param" (the weight matrices' gradients)."""
    out = []
    if which == "param":
        for j in np.flatnonzero(d["matrix"]):
            label = (f"{d['params'][j]} ({d['shapes'][j]}): std {fmt(d['param_grad_std'][record, j], '.1e')}, "
                     f"grad:data {fmt(d['grad_data'][record, j], '.1e')}")
            out.append(Series(label, *density(d["param_counts"][record, j], d["param_range"][record, j])))
        return out
    for j, layer in enumerate(d["layers"]):
        mean, std = d[f"{which}_mean"][record, j], d[f"{which}_std"][record, j]
        if which == "act":
            label = (f"{layer}: mean {fmt(mean, '+.2f')}, std {fmt(std, '.2f')}, "
                     f"saturated {fmt(100 * d['act_saturated'][record, j], '.1f')}%")
        else:
            mine = "" if d["sources"][j] == "model" else f" [{d['sources'][j]}]"
            label = f"{layer}{mine}: mean {fmt(mean, '+.1e')}, std {fmt(std, '.1e')}"
        out.append(Series(label, *density(d[f"{which}_counts"][record, j], d[f"{which}_range"][record, j])))
    return out


def step_series(d: dict, which: str) -> list[Series]:
    """The bottom row's lines over the recorded steps: which = "saturated" (percent per layer),
    "grad_std" (per layer) or "update" (log10 update:data per weight matrix)."""
    steps = d["steps"]
    if which == "update":
        return [Series(str(d["params"][j]), steps, d["update_data"][:, j]) for j in np.flatnonzero(d["matrix"])]
    y = 100 * d["act_saturated"] if which == "saturated" else d["grad_std"]
    return [Series(str(layer), steps, y[:, j]) for j, layer in enumerate(d["layers"])]


PANELS = [  # (series, title, x label) of each panel, row by row; the top row at the last record
    ("act", "output distribution", "output"),
    ("grad", "output-gradient distribution", "gradient"),
    ("param", "weight-gradient distribution", "gradient"),
    ("saturated", "saturated (%)", "step"),
    ("grad_std", "output-gradient std", "step"),
    ("update", "log10 update:data ratio", "step"),
]


def draw_diagnostics(d: dict, path: Path, title: str) -> Figure:
    fig = Figure(figsize=(18, 9))
    for ax, (which, name, xlabel) in zip(fig.subplots(2, 3).ravel(), PANELS):
        lines = histogram_series(d, which) if xlabel != "step" else step_series(d, which)
        dots = "o" if xlabel == "step" and len(d["steps"]) < 30 else None
        for s in lines:
            ax.plot(s.x, s.y, label=s.label, lw=1.2, marker=dots, ms=3)
        if which == "update":
            ax.axhline(GUIDE, color="k", ls="--", lw=1, label="1e-3 guide")
        if which == "grad_std":
            ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        many = len(lines) > 8
        ax.legend(fontsize=6 if many else 7, ncol=2 if many else 1)
    fig.suptitle(f"{title}; distributions at step {int(d['steps'][-1])}")
    fig.tight_layout()
    save(fig, path)
    return fig


def redraw_diagnostics(run_dir: str | Path, out: Path) -> RunData:
    """diagnostics.png of the run in run_dir, drawn from its diagnostics.npz into `out`."""
    run = read_run(run_dir)
    if run.diagnostics is None:
        raise UsageError(f"{run.path}: no diagnostics.npz; train with --diagnostics-every K to record them")
    draw_diagnostics(run.diagnostics, out, run.label)
    return run


# --- the command ----------------------------------------------------------------------------------------

def diagnostics_paths(runs: list[RunData], out: Path) -> dict[int, Path]:
    """Where each run with diagnostics gets its figure: diagnostics-<run name>.png beside `out` (the run's
    position added when two runs share a name)."""
    names = [r.name for r in runs]
    return {i: out.with_name(f"diagnostics-{r.name}" + (f"-{i + 1}" if names.count(r.name) > 1 else "") + ".png")
            for i, r in enumerate(runs) if r.diagnostics is not None}


def cmd_plot(args) -> int:
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise UsageError(f"--out {out}: the picture is a PNG; name a .png file")
    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: no folder {out.parent}")
    runs = [read_run(p) for p in args.runs]
    draw_losses(runs, out)
    print(f"{out}: train and val loss of {len(runs)} run{'s' * (len(runs) > 1)}")
    if not args.no_diagnostics:
        for i, path in diagnostics_paths(runs, out).items():
            draw_diagnostics(runs[i].diagnostics, path, runs[i].label)
            print(f"{path}: diagnostics of {runs[i].path}, {len(runs[i].diagnostics['steps'])} records")
    return 0
