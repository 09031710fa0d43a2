"""How fast a class's HTML page opens: N submissions of exercise 1, checked for real, as one page.

    python benchmarks/html_class.py                  # 500 submissions; prints size and load times
    python benchmarks/html_class.py -n 100 --keep class.html
    python benchmarks/html_class.py --write          # and puts the figures in benchmarks/README.md

Each submission is the package's solution with 0 to 3 of the mistakes below (a seeded draw: 30% make
none), judged in this process with `check_source(..., detail=True)`; the page is `render_class` of the
reports. Chromium (Debian's, driven by playwright) then opens the file from disk three times; the
figures are the medians of: the page drawn (`window.ninjagradReport.readyAt`, ms after navigation
started), the frame after it painted, the load event, and one submission's page opened from the grid.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from readme import command_line, md_table, write_section

from ninjagrad.bench import machine
from ninjagrad.check.core import check_source, prepare
from ninjagrad.check.html import render_class

MISTAKES = [  # (the solution's text, a learner's version); the first ones are the most common
    ("(1.0/(n-1))*torch.ones_like(bndiff2) * dbnvar", "(1.0/n)*torch.ones_like(bndiff2) * dbnvar"),
    ("dC[ix] += demb[k, j]", "pass\ndC[Xb] += demb"),
    ("dhprebn = dbndiff.clone()", "dhprebn = dbndiff"),
    ("dcounts += torch.ones_like(counts) * dcounts_sum", "pass"),
    ("dhprebn += 1.0/n * (torch.ones_like(hprebn) * dbnmeani)", "pass"),
    ("dW2 = h.T @ dlogits", "dW2 = -(h.T @ dlogits)"),
    ("dprobs = (1.0 / probs) * dlogprobs", "dprobs = (2.0 / probs) * dlogprobs"),
    ("dbnmeani = (-dbndiff).sum(0, keepdim=True)", "dbnmeani = (-dbndiff).sum(1, keepdim=True)"),
    ("dW1 = embcat.T @ dhprebn", "dW1 = dhprebn.T @ embcat"),
    ("db2 = dlogits.sum(0)", "db2 = dlogits"),
    ("dhpreact = (1.0 - h**2) * dh", "dhpreact = (1.0 - h) * dh"),
    ("dcounts_sum = (-counts_sum**-2) * dcounts_sum_inv", "dcounts_sum = (counts_sum**-2) * dcounts_sum_inv"),
    ("dbnvar = (-0.5*(bnvar + 1e-5)**-1.5) * dbnvar_inv", "dbnvar = (-1.0*(bnvar + 1e-5)**-1.5) * dbnvar_inv"),
    ("dembcat = dhprebn @ W1.T", "dembcat = dhprebn @ w1.T"),
    ("db1 = dhprebn.sum(0)", "db1 = ..."),
]


def submissions(n: int, seed: int = 0) -> list[dict]:
    torch.set_num_threads(1)
    ctx = prepare(1)
    solution = ctx.ex.read("solution.py")
    rng = random.Random(seed)
    weights = [1.0 / (1 + 0.3 * i) for i in range(len(MISTAKES))]
    reports = []
    for i in range(n):
        src = solution
        k = 0 if rng.random() < 0.3 else rng.choice([1, 1, 2, 3])
        chosen = set()
        while len(chosen) < k:
            chosen.add(rng.choices(range(len(MISTAKES)), weights)[0])
        for j in sorted(chosen):
            old, new = MISTAKES[j]
            assert old in src, old
            src = src.replace(old, new)
        reports.append(check_source(f"student_{i:03d}.py", src, ctx, detail=True))
    return reports


# ms after navigation started when the frame after the drawing is done (the page is on screen)
PAINTED = "new Promise(done => requestAnimationFrame(() => setTimeout(() => done(performance.now()))))"


def load_times(path: Path, n: int, runs: int = 3) -> dict:
    from playwright.sync_api import sync_playwright

    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        sys.exit("no Chromium found: apt-get install chromium")
    args = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"]
    ready, painted, load, opened = [], [], [], []
    with sync_playwright() as p:
        for _ in range(runs):
            browser = p.chromium.launch(executable_path=exe, args=args)  # a fresh profile each run
            version = browser.version
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            errors = []
            page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
            page.on("console", lambda m, errors=errors: errors.append(m.text) if m.type == "error" else None)
            page.goto(path.as_uri())
            page.wait_for_selector("[data-ng-ready]")
            ready.append(page.evaluate("window.ninjagradReport.readyAt"))
            painted.append(page.evaluate(PAINTED))
            page.wait_for_load_state("load")
            load.append(page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd"))
            t = time.perf_counter()
            page.click(f".ng-grid .ng-row:nth-child({min(7, n)}) a.ng-name")  # a row near the top
            page.wait_for_selector(".ng-subview:not([hidden]) g.ng-node")
            opened.append(1000 * (time.perf_counter() - t))
            if errors:
                sys.exit(f"the page reported errors: {errors}")
            browser.close()
    return {"ready": statistics.median(ready), "painted": statistics.median(painted), "load": statistics.median(load),
            "open": statistics.median(opened), "chromium": version, "runs": runs}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=500, help="submissions (default 500)")
    ap.add_argument("--keep", metavar="FILE", help="write the page to FILE (default: a temporary file)")
    ap.add_argument("--write", action="store_true", help="write the figures into benchmarks/README.md")
    args = ap.parse_args()
    load = os.getloadavg()[0]
    t = time.perf_counter()
    reports = submissions(args.n)
    checked = time.perf_counter() - t
    t = time.perf_counter()
    html = render_class(reports)
    rendered = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.keep) if args.keep else Path(tmp) / "class.html"
        path.write_text(html, encoding="utf-8")
        times = load_times(path.resolve(), args.n)
    wrong = sum(not r["summary"]["ok"] for r in reports)
    m = machine()
    rows = [["submissions checked, in this process (`check_source(..., detail=True)`, one thread)",
             f"{checked:.0f} s ({1e3 * checked / args.n:.0f} ms each)"],
            ["the page rendered (`render_class`)", f"{rendered:.2f} s"],
            ["the page's size", f"{len(html.encode()) / 1e6:.1f} MB"],
            ["drawn (`window.ninjagradReport.readyAt`, after navigation started)", f"{times['ready']:.0f} ms"],
            ["on screen (the frame after the drawing)", f"{times['painted']:.0f} ms"],
            ["the load event", f"{times['load']:.0f} ms"],
            ["a submission's page opened from the grid", f"{times['open']:.0f} ms"]]
    text = (f"## A class's HTML page\n\n`{command_line()}` on {m['cpu']}, {m['cores']} cores, torch {m['torch']}, "
            f"Chromium {times['chromium']} (headless, driven by playwright); load average {load:.2f} at the start, "
            f"{os.getloadavg()[0]:.2f} at the end. {args.n} submissions of exercise 1 ({wrong} with a mistake: "
            "the package's solution with 0 to 3 of the common mistakes in this script, a seeded draw), judged and "
            f"rendered as one page, which Chromium opens from disk {times['runs']} times, a fresh profile each time; "
            "the browser's figures are the medians, in ms after navigation started but the last (from the click "
            "to the submission's graph on screen).\n\n" + md_table(["figure", "value"], rows))
    print(text)
    if args.write:
        write_section("html_class", text)


if __name__ == "__main__":
    main()
