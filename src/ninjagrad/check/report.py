"""Render a check report: a rich table per file (per exercise for a notebook) and a summary line,
or the JSON as it is."""
from __future__ import annotations

import json

from rich.markup import escape
from rich.table import Table

from .html import render_submission
from .statements import shape_str

STYLE = {"exact": "bold green", "rounding": "green", "wrong": "bold red", "shape": "bold red",
         "missing": "yellow", "error": "bold magenta", "uses-autograd": "bold red", "tampering": "bold red"}


def fmt(x, spec=".2g"):
    if x is None:
        return ""
    return x if isinstance(x, str) else format(x, spec)  # "inf" and "nan" arrive as strings from JSON


def plain_str(p: dict | None, sep: str = " / ") -> str:
    """The lecture's cmp line, compressed: exact / approximate / maxdiff of the run without teacher forcing."""
    if not p or p.get("exact") is None:
        return "-"
    return sep.join(("T" if p["exact"] else "F", "T" if p["approximate"] else "F", fmt(p["maxdiff"], ".1e")))


def ulps_str(u) -> str:
    """ULPs as an integer; very large counts (a wrong gradient) in short scientific form."""
    return fmt(u, "d") if not isinstance(u, int) or abs(u) < 10**6 else format(float(u), ".1e")


def note_str(r: dict) -> str:
    d = r.get("diagnosis")
    if d:
        return f"[bold]{d['kind']}[/]: {d['message']}"
    return r.get("note") or ""


NOTES_BELOW = 140  # narrower terminals: the notes go below the table, where they can wrap at full width


def where_str(r: dict) -> str:
    """ (line 7)" or " (cell 12, line 7)" for a verdict that needs its place."""
    if not r.get("line"):
        return ""
    return f" (cell {r['cell']}, line {r['line']})" if r.get("cell") else f" (line {r['line']})"


def cells_str(cells: list) -> str:
    if not cells:
        return ""
    return f", cell {cells[0]}" if len(cells) == 1 else f", cells {cells[0]}-{cells[-1]}"


def render(report: dict, console) -> None:
    what = f"exercise {report['exercise']}" if report.get("exercise") else f"forward {report.get('forward')}"
    title = f"{report['file']}: {what}{cells_str(report.get('cells'))}"
    if report.get("attempted") is False or not report["results"]:
        style = "yellow" if report.get("attempted") is False else "bold magenta"
        console.print(f"[bold]{escape(title)}[/]: [{style}]{escape(report['summary']['text'])}[/]")
        return
    verdict_table(report, title, console)
    run_lines(report, console)
    summary_lines(report, console)


def verdict_table(report: dict, title: str, console) -> None:
    """One row per gradient; on a narrow terminal the notes go below the table, numbered."""
    below = console.width < NOTES_BELOW
    t = Table(title=escape(title), title_justify="left", show_lines=False, expand=False)
    t.add_column("gradient", style="bold", no_wrap=True)
    t.add_column("shape", no_wrap=True)
    t.add_column("verdict", no_wrap=True)
    t.add_column("maxdiff", justify="right", no_wrap=True)
    t.add_column("ulps", justify="right", no_wrap=True)
    t.add_column("plain cmp\nex ap maxdiff" if below else "cmp (plain run)\nexact/approx/maxdiff", no_wrap=True)
    if not below:
        t.add_column("note", overflow="fold", ratio=1)
    notes = []
    for r in report["results"]:
        v = r["verdict"]
        line = where_str(r) if v not in ("exact", "rounding") else ""
        note = note_str({**r, "note": escape(r["note"]) if r.get("note") else None,
                         "diagnosis": ({**r["diagnosis"], "message": escape(r["diagnosis"]["message"])}
                                       if r.get("diagnosis") else None)})
        verdict = f"[{STYLE[v]}]{v}[/]" + ("" if below else line)
        cells = [r.get("dvar") or "d" + r["name"], shape_str(r["shape"]), verdict,
                 fmt(r["maxdiff"]), ulps_str(r["ulps"]), plain_str(r["plain"], " " if below else " / ")]
        if below:
            if note:
                notes.append(f"[bold]d{r['name']}[/] [{STYLE[v]}]{v}[/]{line}: {note}")
                cells[2] += f" [dim]\\[{len(notes)}][/]"
        else:
            cells.append(note)
        t.add_row(*cells)
    console.print(t)
    for i, text in enumerate(notes, 1):  # rich wraps each at the terminal's width
        console.print(f"[dim]\\[{i}][/] {text}")


def run_lines(report: dict, console) -> None:
    """What happened to the run as a whole: tampering, an early end, lines that failed and assign nothing."""
    if report.get("tampering"):
        t = report["tampering"]
        console.print(f"[bold red]tampering[/]: {where_str(t).strip(' ()')} {escape(t['what'])}: gradients computed "
                      "from there on are not judged")
    if report.get("stopped"):
        st = report["stopped"]
        how = f"exit status {st['status']}" if (st.get("status") or 0) >= 0 else f"signal {-st['status']}"
        console.print(f"[bold magenta]the submission's process ended early[/] ({how}"
                      f"{', in ' + st['where'] if st.get('where') else ''}): gradients due after that are errors")
    for p in report.get("problems", []):
        console.print(f"[magenta]{where_str(p).strip(' ()')}[/]: {escape(p['message'])} (assigns no gradient; "
                      "ignored)")


def summary_lines(report: dict, console) -> None:
    """The verdicts counted, where they were judged, and what the lecture's own cmp would have said."""
    env = report.get("environment", {})
    s = report["summary"]
    style = "bold green" if s["ok"] else "bold red"
    seed = f", seed {env['seed']}" if env.get("seed") is not None else ""
    console.print(f"[{style}]{escape(s['text'])}[/] ({s['total']} gradient{'s' * (s['total'] != 1)}; torch "
                  f"{env.get('torch')}, {env.get('device')}, {env.get('dtype')}, data: "
                  f"{escape(str(env.get('data')))}{seed})")
    if env.get("forward") and env["forward"] != "the lecture's":
        console.print(f"judged against {escape(env['forward'])} forward")
    if s.get("cascade"):
        console.print(f"without teacher forcing, the lecture's cmp would print exact: False for "
                      f"{s['plain_not_exact']} of them, {s['cascade']} of which are right here: one mismatch "
                      "upstream changes every gradient below it.")
    if env.get("solution_not_exact"):
        console.print(f"on this platform the package's own solution is not bit-exact for "
                      f"{', '.join('d' + x for x in env['solution_not_exact'])}: there, 'rounding' is the best "
                      "possible verdict.")


def render_failure(item: dict, console) -> None:
    """A file that could not be judged: usage error, time limit, crash."""
    console.print(f"[bold magenta]{escape(item['file'])}[/]: {escape(item['error'])}")


def as_json_line(item: dict) -> str:
    return json.dumps(item, allow_nan=False, default=str) if _finite(item) else json.dumps(_clean(item))


def _finite(x) -> bool:
    if isinstance(x, float):
        return x == x and x not in (float("inf"), float("-inf"))
    if isinstance(x, dict):
        return all(_finite(v) for v in x.values())
    if isinstance(x, list):
        return all(_finite(v) for v in x)
    return True


def _clean(x):
    """JSON has no inf or nan: write them as strings."""
    if isinstance(x, float) and not _finite(x):
        return str(x)
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_clean(v) for v in x]
    return x


class CheckReport:
    """A check's report that shows itself: as HTML in a notebook, as the terminal's table elsewhere.

    It reads like the JSON report (`report["results"]`, `report["summary"]["ok"]`)."""

    WIDTH = 130  # characters: the notes column sits beside the table

    def __init__(self, report: dict):
        self.report = report

    def __getitem__(self, key):
        return self.report[key]

    @property
    def ok(self) -> bool:
        return bool(self.report["summary"]["ok"])

    def _console(self):
        from rich.console import Console
        return Console(record=True, width=self.WIDTH, file=_Discard(), force_terminal=False, force_jupyter=False,
                       color_system="truecolor")

    def __repr__(self) -> str:
        console = self._console()
        render(self.report, console)
        return console.export_text(styles=False).rstrip()

    def _repr_html_(self) -> str:
        """The HTML report's page of this result (graph, heatmaps, lines), as a notebook's output."""
        return render_submission(self.report, fragment=True)


class _Discard:
    """A file that drops what is written: the recorded console exports, it does not print."""

    def write(self, text):
        return len(text)

    def flush(self):
        pass
