"""Check reports as one self-contained HTML page: a submission's, or a class's.

A submission's page shows, per exercise, the forward's graph with every node coloured by its
gradient's verdict, three heatmaps (yours, autograd's, the difference) for every gradient that is not
exact, and the learner's lines beside the verdicts they produced. A class's page is a grid of
submissions x gradients (sortable by name and score), the most frequent diagnoses with who made them,
and each submission's page one click away. A notebook shows a check result the same way.

What each picture shows is decided here (`heatmaps`, `submission_data`, `class_data`), so tests hold
the numbers behind it to the report; templates/report.js only draws it. The data sits in the page
as JSON, every array as base64 float32 and each distinct one once; a class's submissions are parsed
only when opened, so 500 of them open at once. Nothing is fetched: the page works from disk.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

from .graph_layout import NODE_H, NODE_W, layout

# verdict -> (fill, text on it); one table for the graph, the badges, the grid and the legend
VERDICT_COLOURS = {
    "exact": ("#1b7f3b", "#ffffff"),
    "rounding": ("#8fd18b", "#10331a"),
    "wrong": ("#cf2e2e", "#ffffff"),
    "shape": ("#ee7d2a", "#2b1400"),
    "missing": ("#f2cc4d", "#3a2e00"),
    "error": ("#8e3fb0", "#ffffff"),
    "uses-autograd": ("#b0306a", "#ffffff"),
    "tampering": ("#4a0d12", "#ffffff"),
}
NOT_JUDGED = ("#e4e4e4", "#333333")  # the loss, a given gradient, a node the exercise does not judge
VERDICTS = tuple(VERDICT_COLOURS)
CODES = {"exact": "E", "rounding": "R", "wrong": "W", "shape": "S", "missing": "M", "error": "X",
         "uses-autograd": "A", "tampering": "T"}  # one letter per grid cell; "." not judged there, "F" the file failed
RIGHT = ("exact", "rounding")
MAX_SLICES = 8  # panels of a 3-D gradient: the slices with the largest differences, in index order
NONFINITE = "#000000"

# the diverging scale of every heatmap: blue below zero, white at zero, red above
SCALE_ANCHORS = [(0.0, (24, 62, 128)), (0.22, (62, 126, 196)), (0.5, (248, 248, 248)),
                 (0.78, (214, 88, 68)), (1.0, (120, 16, 30))]
LUT_SIZE = 255  # odd: entry 127 is zero's


def lut() -> list[str]:
    """LUT_SIZE colours; entry k stands for t = (k + 0.5) / LUT_SIZE of the range [-m, m]."""
    out = []
    for k in range(LUT_SIZE):
        t = (k + 0.5) / LUT_SIZE
        (t0, c0), (t1, c1) = next((a, b) for a, b in zip(SCALE_ANCHORS, SCALE_ANCHORS[1:]) if t <= b[0])
        f = (t - t0) / (t1 - t0)
        out.append("#" + "".join(f"{round(a + (b - a) * f):02x}" for a, b in zip(c0, c1)))
    return out


def lut_index(v: float, m: float) -> int | None:
    """The entry of `lut()` that draws v on the scale [-m, m] (None: not finite). report.js does the same."""
    if not np.isfinite(v):
        return None
    if m == 0:
        return LUT_SIZE // 2
    return min(LUT_SIZE - 1, max(0, int(np.floor((v + m) / (2 * m) * LUT_SIZE))))


# --- values ------------------------------------------------------------------------------------

def as_array(nested) -> np.ndarray:
    """A report's nested list as float32; JSON writes inf and nan as strings."""
    def num(x):
        if isinstance(x, list):
            return [num(y) for y in x]
        return float(x)  # float("nan"), float("-inf") read the strings too
    return np.asarray(num(nested), dtype=np.float32)


def absmax(*arrays) -> float:
    """The largest finite magnitude (0 when there is none): the half-width of a symmetric scale."""
    m = 0.0
    for a in arrays:
        if a is not None:
            fin = np.abs(a[np.isfinite(a)])
            if fin.size:
                m = max(m, float(fin.max()))
    return m


@dataclass
class Panel:
    label: str  # what slice of the gradient it shows, e.g. "demb[:, 1, :]"
    mine: np.ndarray | None  # 2-D float32; None when the shapes differ
    ref: np.ndarray  # 2-D float32
    diff: np.ndarray | None  # 2-D float64: mine - ref


@dataclass
class Heat:
    """The three heatmaps of a gradient that is not exact: yours and autograd's on one scale
    [-pair, pair], the difference on its own [-diff, diff]."""
    pair: float
    diff: float
    panels: list[Panel]
    slices: int  # how many slices the gradient has (panels shows at most MAX_SLICES)
    axis: int | None  # the axis a 3-D gradient is sliced along


def heatmaps(r: dict) -> Heat | None:
    """What the heatmaps of result `r` show, from its values; None for an exact gradient or no values."""
    v = r.get("values")
    if r.get("verdict") == "exact" or not v or v.get("ref") is None:
        return None
    ref = as_array(v["ref"])
    mine = as_array(v["mine"]) if v.get("mine") is not None else None
    if mine is not None and mine.shape != ref.shape:
        mine = None
    diff = mine.astype(np.float64) - ref.astype(np.float64) if mine is not None else None
    pair, dscale = absmax(ref, mine), absmax(diff)
    name = r.get("dvar") or "d" + r["name"]
    if ref.ndim <= 2:
        as2d = (lambda a: a.reshape(1, -1)) if ref.ndim < 2 else (lambda a: a)
        label = name if ref.ndim == 2 else f"{name} (as one row)"
        return Heat(pair, dscale, [Panel(label, None if mine is None else as2d(mine), as2d(ref),
                                         None if diff is None else as2d(diff))], 1, None)
    lead = ref.shape[:-2]
    if ref.ndim == 3:
        axis = int(np.argmin(ref.shape))  # emb (32, 3, 10): three (32, 10) slices
    else:  # the leading axes as one
        axis = 0
        flat = (-1,) + ref.shape[-2:]
        ref, mine, diff = (None if a is None else a.reshape(flat) for a in (ref, mine, diff))
    count = ref.shape[axis]
    chosen = list(range(count))
    if count > MAX_SLICES:
        if diff is not None:
            size = np.nan_to_num(np.abs(np.moveaxis(diff, axis, 0)).reshape(count, -1), nan=np.inf).max(axis=1)
            chosen = sorted(np.argsort(-size, kind="stable")[:MAX_SLICES].tolist())
        else:
            chosen = chosen[:MAX_SLICES]
    panels = []
    for i in chosen:
        if len(lead) == 1:
            where = [":"] * 3
            where[axis] = str(i)
        else:
            where = [str(j) for j in np.unravel_index(i, lead)] + [":", ":"]
        panels.append(Panel(f"{name}[{', '.join(where)}]", *(None if a is None else np.take(a, i, axis=axis)
                                                             for a in (mine, ref, diff))))
    return Heat(pair, dscale, panels, count, axis)


class Blobs:
    """Float32 arrays for the page, each distinct one stored once (a class repeats autograd's values)."""

    def __init__(self):
        self.ids: dict[bytes, str] = {}
        self.data: dict[str, str] = {}

    def add(self, a: np.ndarray | None) -> str | None:
        if a is None:
            return None
        raw = np.ascontiguousarray(a, dtype="<f4").tobytes()
        key = hashlib.blake2b(raw, digest_size=16).digest()
        if key not in self.ids:
            self.ids[key] = f"b{len(self.ids)}"
            self.data[self.ids[key]] = base64.b64encode(raw).decode("ascii")
        return self.ids[key]


# --- what a submission's page shows ---------------------------------------------------------------

def finite(x):
    """JSON has no inf or nan: write them as strings, as the JSON report does."""
    if isinstance(x, float) and not np.isfinite(x):
        return str(x)
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite(v) for v in x]
    return x


def heat_data(r: dict, blobs: Blobs) -> dict | None:
    h = heatmaps(r)
    if h is None:
        return None
    panels = [{"label": p.label, "rows": int(p.ref.shape[0]), "cols": int(p.ref.shape[1]),
               "mine": blobs.add(p.mine), "ref": blobs.add(p.ref)} for p in h.panels]
    return {"pair": h.pair, "diff": h.diff, "panels": panels, "slices": h.slices, "axis": h.axis}


def place_lines(lines: list[dict], results: list[dict], problems: list[dict]) -> list[dict]:
    """The learner's statements, each with the gradients judged at it (their last assignment) and the
    problems raised in it. A result's line may fall inside a statement of several lines (a loop)."""
    out = [{**u, "results": [], "problems": []} for u in lines]

    def at(cell, line) -> int | None:
        for k, u in enumerate(out):
            if u.get("cell") == cell and u["line"] <= line <= u["line"] + u["text"].count("\n"):
                return k
        return None

    for r in results:
        k = at(r.get("cell"), r["line"]) if r.get("line") else None
        r["at"] = k
        if k is not None:
            out[k]["results"].append(r["name"])
    for p in problems:
        k = at(p.get("cell"), p["line"]) if p.get("line") else None
        if k is not None:
            out[k]["problems"].append(p["message"])
    return out


class Layouts:
    """Graph drawings, one per distinct graph (a class's submissions of one exercise share theirs)."""

    def __init__(self):
        self.ids: dict[str, str] = {}
        self.data: dict[str, dict] = {}

    def add(self, graph: dict | None) -> str | None:
        if not graph or not graph.get("nodes"):
            return None
        key = json.dumps(graph, sort_keys=True)
        if key not in self.ids:
            gid = self.ids[key] = f"g{len(self.ids)}"
            lay = layout([n["name"] for n in graph["nodes"]], [tuple(e) for e in graph["edges"]])
            self.data[gid] = {
                "nodes": [{**n, "x": lay.nodes[n["name"]][0], "y": lay.nodes[n["name"]][1]} for n in graph["nodes"]],
                "edges": [{"from": a, "to": b, "points": pts} for a, b, pts in lay.edges],
                "width": lay.width, "height": lay.height}
        return self.ids[key]


def report_title(rep: dict) -> str:
    what = f"exercise {rep['exercise']}" if rep.get("exercise") else f"forward {rep.get('forward') or ''}".strip()
    cells = rep.get("cells") or []
    if cells:
        what += f", cell {cells[0]}" if len(cells) == 1 else f", cells {cells[0]}-{cells[-1]}"
    return what


def report_data(rep: dict, blobs: Blobs, layouts: Layouts) -> dict:
    """One exercise's report as its page section draws it."""
    if "results" not in rep:  # the file could not be judged (usage error, time limit, crash)
        return {"file": rep.get("file"), "failed": rep.get("error", "not judged"), "title": "not judged",
                "results": [], "lines": [], "summary": None}
    results = []
    for r in rep["results"]:
        d = {k: v for k, v in r.items() if k not in ("values", "plain")}  # the values: as heatmaps
        d["heat"] = heat_data(r, blobs)
        d["colour"] = VERDICT_COLOURS.get(r["verdict"], NOT_JUDGED)[0]
        results.append(d)
    lines = place_lines(rep.get("lines") or [], results, rep.get("problems") or [])
    env = rep.get("environment") or {}
    judged = {r["name"] for r in results}
    graph = rep.get("graph")
    return finite({
        "file": rep.get("file"), "exercise": rep.get("exercise"), "title": report_title(rep),
        "attempted": rep.get("attempted", True), "summary": rep.get("summary"), "environment": env,
        "results": results, "lines": lines, "problems": rep.get("problems") or [],
        "tampering": rep.get("tampering"), "stopped": rep.get("stopped"),
        "graph": layouts.add(graph),
        "unjudged": {n["name"]: "the loss" if n["kind"] == "output" else "not judged here"
                     for n in (graph or {}).get("nodes", []) if n["name"] not in judged},
    })


def submission_data(items: list[dict], blobs: Blobs, layouts: Layouts) -> dict:
    """One file's page: its reports (one per exercise of a notebook), or why it could not be judged."""
    reports = [report_data(it, blobs, layouts) for it in items]
    right, total = score(items)
    return {"file": items[0].get("file") if items else "", "reports": reports, "right": right, "total": total}


def score(items: list[dict]) -> tuple[int, int]:
    """Gradients right (exact or rounding) and judged, over a file's reports."""
    results = [r for it in items for r in it.get("results") or []]
    return sum(r["verdict"] in RIGHT for r in results), len(results)


# --- what a class's page shows ---------------------------------------------------------------------

def by_file(items: list[dict]) -> dict[str, list[dict]]:
    """Reports grouped by the file they judge, in the order the files first appear."""
    groups: dict[str, list[dict]] = {}
    for it in items:
        groups.setdefault(str(it.get("file")), []).append(it)
    return groups


def columns_of(groups: dict[str, list[dict]]) -> list[tuple]:
    """(exercise, node) of every gradient judged in the class: by exercise, each in its reports' order."""
    seen: dict[tuple, int] = {}
    for items in groups.values():
        for it in items:
            for r in it.get("results") or []:
                seen.setdefault((it.get("exercise") or 0, r["name"]), len(seen))
    return sorted(seen, key=lambda c: (c[0], seen[c]))


LINE_REF = re.compile(r"\b(cell \d+, )?line \d+")


def diagnosis_key(it: dict, r: dict) -> tuple | None:
    """What makes two mistakes the same: exercise, gradient, verdict and the diagnosis's kind."""
    if r["verdict"] in RIGHT:
        return None
    d = r.get("diagnosis")
    return (it.get("exercise") or 0, r["name"], r["verdict"], d["kind"] if d else None)


def class_data(groups: dict[str, list[dict]]) -> dict:
    """The grid (a row per file, a letter per gradient), and the diagnoses by how many made them."""
    cols = columns_of(groups)
    col_index = {c: i for i, c in enumerate(cols)}
    several = len({c[0] for c in cols}) > 1
    rows, found = [], {}
    for fi, (path, items) in enumerate(groups.items()):
        codes = ["."] * len(cols)
        kinds = {}
        failed = next((it.get("error") for it in items if "results" not in it), None)
        for it in items:
            for r in it.get("results") or []:
                c = col_index[(it.get("exercise") or 0, r["name"])]
                codes[c] = CODES.get(r["verdict"], "X")
                if r.get("diagnosis"):
                    kinds[c] = r["diagnosis"]["kind"]
                key = diagnosis_key(it, r)
                if key is not None:
                    entry = found.setdefault(key, {"who": [], "messages": {}})
                    if fi not in entry["who"]:
                        entry["who"].append(fi)
                    text = (r["diagnosis"] or {}).get("message") if r.get("diagnosis") else r.get("note")
                    if text:
                        text = LINE_REF.sub("line …", text)
                        entry["messages"][text] = entry["messages"].get(text, 0) + 1
        if failed is not None:
            codes = ["F"] * len(cols)
        right, total = score(items)
        rows.append({"file": path, "right": right, "total": total, "codes": "".join(codes), "kinds": kinds,
                     "failed": failed,
                     "summary": "; ".join(it["summary"]["text"] for it in items if it.get("summary"))})
    diagnoses = []
    for (ex, name, verdict, kind), e in found.items():
        message = max(e["messages"], key=e["messages"].get) if e["messages"] else ""
        diagnoses.append({"exercise": ex, "name": name, "verdict": verdict, "kind": kind, "message": message,
                          "count": len(e["who"]), "who": e["who"], "column": col_index[(ex, name)]})
    diagnoses.sort(key=lambda d: (-d["count"], d["column"], d["kind"] or ""))
    return finite({
        "columns": [{"exercise": ex, "name": name, "label": f"{ex}: d{name}" if several else f"d{name}"}
                    for ex, name in cols],
        "rows": rows, "diagnoses": diagnoses,
        "exercises": sorted({ex for ex, _ in cols}),
    })


# --- the page ----------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def environment():
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("ninjagrad.check", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]), trim_blocks=True,
                             lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.policies["json.dumps_kwargs"] = {"sort_keys": False, "separators": (",", ":"), "allow_nan": False}
    return env


@lru_cache(maxsize=2)
def asset(name: str) -> str:
    text = resources.files("ninjagrad.check").joinpath("templates", name).read_text(encoding="utf-8")
    assert "</script" not in text.lower() and "</style" not in text.lower(), name  # it sits inside one
    return text


def page_config(kind: str, uid: str, layouts: Layouts) -> dict:
    return {"kind": kind, "uid": uid, "colours": {v: list(c) for v, c in VERDICT_COLOURS.items()},
            "notJudged": list(NOT_JUDGED), "nonfinite": NONFINITE, "lut": lut(), "layouts": layouts.data,
            "node": {"w": NODE_W, "h": NODE_H}, "codes": {c: v for v, c in CODES.items()}}


def render(template: str, **context) -> str:
    from markupsafe import Markup

    return environment().get_template(template).render(css=Markup(asset("report.css")),
                                                       js=Markup(asset("report.js")), **context)


def render_submission(reports: dict | list[dict], fragment: bool = False) -> str:
    """The page of one file: a report, or a notebook's reports (one per exercise). `fragment`: a <div>
    to put into another page (a notebook's output) instead of a whole document."""
    items = [reports] if isinstance(reports, dict) else list(reports)
    uid = f"ng{uuid.uuid4().hex[:10]}" if fragment else "ng"
    blobs, layouts = Blobs(), Layouts()
    sub = submission_data(items, blobs, layouts)
    config = {**page_config("submission", uid, layouts), "submission": sub}
    return render("report.html.j2", fragment=fragment, uid=uid, title=f"ninjagrad check: {sub['file']}",
                  config=config, blobs=blobs.data, subs={}, fallback=fallback_rows(items))


def render_class(items: list[dict]) -> str:
    """The page of a class: every file's reports (and files that could not be judged), grouped by file."""
    groups = by_file(items)
    blobs, layouts = Blobs(), Layouts()
    subs = {f"s{i}": submission_data(its, blobs, layouts) for i, its in enumerate(groups.values())}
    klass = class_data(groups)
    config = {**page_config("class", "ng", layouts), "class": klass}
    return render("report.html.j2", fragment=False, uid="ng", title=f"ninjagrad check: {len(groups)} submissions",
                  config=config, blobs=blobs.data, subs=subs, fallback=[])


def render_html(items: list[dict]) -> str:
    """`ninjagrad check ... --html FILE`: one file's page, or a class's when the items judge several."""
    return render_submission(items) if len(by_file(items)) == 1 else render_class(items)


def fallback_rows(items: list[dict]) -> list[dict]:
    """The verdicts as a plain table, shown where the page's script does not run (an untrusted notebook)."""
    rows = []
    for it in items:
        for r in it.get("results") or []:
            d = r.get("diagnosis")
            rows.append({"title": report_title(it), "name": r.get("dvar") or "d" + r["name"], "verdict": r["verdict"],
                         "colour": VERDICT_COLOURS.get(r["verdict"], NOT_JUDGED)[0],
                         "text": f"{d['kind']}: {d['message']}" if d else (r.get("note") or "")})
    return rows
