"""The HTML report: the numbers behind every picture are the report's, and in a real browser (Chromium,
when one is installed) every graph node has its verdict's colour, each heatmap draws those numbers,
the class page sorts, and a class of 500 submissions opens in under 2 s."""
from __future__ import annotations

import base64
import json
import math
import os
import re
import shutil
import time

import numpy as np
import pytest
import torch

from ninjagrad.check.core import check_source, prepare
from ninjagrad.check.graph_layout import NODE_H, NODE_W, layout
from ninjagrad.check.html import (
    LUT_SIZE,
    VERDICT_COLOURS,
    as_array,
    class_data,
    heatmaps,
    lut,
    lut_index,
    render_class,
    render_submission,
)
from ninjagrad.check.report import CheckReport

MISTAKES = {  # file -> (the solution's line, what the learner wrote instead)
    "bessel.py": [("dbndiff2 = (1.0/(n-1))*torch.ones_like(bndiff2) * dbnvar",
                   "dbndiff2 = (1.0/n)*torch.ones_like(bndiff2) * dbnvar")],
    "axis.py": [("dbnmeani = (-dbndiff).sum(0, keepdim=True)", "dbnmeani = (-dbndiff).sum(1, keepdim=True)")],
    "many.py": [("dprobs = (1.0 / probs) * dlogprobs", "dprobs = (2.0 / probs) * dlogprobs"),
                ("demb = dembcat.view(emb.shape)", "demb = 0.5 * dembcat.view(emb.shape)"),
                ("dbngain = (bnraw * dhpreact).sum(0, keepdim=True)", "dbngain = bnraw.sum(0) / no_such_name"),
                ("dW1 = embcat.T @ dhprebn", "")],
    "duplicates.py": [("        dC[ix] += demb[k, j]", "        pass\ndC[Xb] += demb")],
}


@pytest.fixture(scope="module")
def reports():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    ctx = prepare(1)
    solution = ctx.ex.read("solution.py")
    out = {"right.py": check_source("right.py", solution, ctx, detail=True)}
    for name, edits in MISTAKES.items():
        src = solution
        for old, new in edits:
            assert old in src
            src = src.replace(old, new)
        out[name] = check_source(name, src, ctx, detail=True)
    torch.set_num_threads(threads)
    return out


def by_name(report):
    return {r["name"]: r for r in report["results"]}


def not_exact(report):
    return [r for r in report["results"] if r["verdict"] != "exact" and r.get("values")]


def embedded(page: str, uid: str = "ng") -> tuple[dict, dict, dict]:
    """What a page carries: its config, its submissions (a class's) and its arrays (decoded)."""
    scripts = dict(re.findall(rf'<script type="[a-z/-]+" id="{uid}-([a-z0-9]+)">(.*?)</script>', page, re.S))
    config = json.loads(scripts.pop("config"))
    subs = {k: json.loads(v) for k, v in scripts.items() if k.startswith("s")}
    blobs = {k: np.frombuffer(base64.b64decode(v), dtype="<f4") for k, v in scripts.items() if k.startswith("b")}
    return config, subs, blobs


# --- the numbers behind the pictures ----------------------------------------------------------------

def test_the_mistakes_are_the_planted_ones(reports):
    assert reports["right.py"]["summary"]["ok"]
    assert by_name(reports["bessel.py"])["bndiff2"]["diagnosis"]["kind"] == "scale"
    assert by_name(reports["axis.py"])["bnmeani"]["verdict"] == "shape"
    many = by_name(reports["many.py"])
    assert [many[x]["verdict"] for x in ("probs", "emb", "bngain", "W1")] == ["wrong", "wrong", "error", "missing"]
    assert by_name(reports["duplicates.py"])["C"]["diagnosis"]["kind"] == "duplicate_index"


def test_heatmaps_show_yours_autograds_and_their_difference(reports):
    seen = 0
    for rep in reports.values():
        for r in not_exact(rep):
            h = heatmaps(r)
            ref = np.asarray(r["values"]["ref"], dtype=np.float32)
            mine = None if r["values"]["mine"] is None else np.asarray(r["values"]["mine"], dtype=np.float32)
            assert h.pair == max(np.abs(ref).max(), 0 if mine is None else np.abs(mine).max())
            if mine is None:
                assert all(p.mine is None and p.diff is None for p in h.panels) and h.diff == 0
            else:
                diff = mine.astype(np.float64) - ref.astype(np.float64)
                assert h.diff == np.abs(diff).max() > 0
            if ref.ndim == 3:  # emb (32, 3, 10): one (32, 10) slice per context position
                assert h.axis == 1 and h.slices == 3 and [p.label for p in h.panels] == \
                    [f"d{r['name']}[:, {i}, :]" for i in range(3)]
                parts = [(p.ref, p.mine, p.diff) for p in h.panels]
                assert np.array_equal(np.stack([p[0] for p in parts], axis=1), ref)
                assert np.array_equal(np.stack([p[1] for p in parts], axis=1), mine)
                assert np.array_equal(np.stack([p[2] for p in parts], axis=1), diff)
            else:
                (p,) = h.panels
                assert np.array_equal(p.ref, ref.reshape(p.ref.shape)) and p.ref.ndim == 2
                if mine is not None:
                    assert np.array_equal(p.mine, mine.reshape(p.ref.shape))
                    assert np.array_equal(p.diff, diff.reshape(p.ref.shape))
            seen += 1
    assert seen >= 9  # dhpreact (rounding) in each file, and the planted mistakes


def test_exact_gradients_have_no_heatmaps_and_a_shape_mistake_has_only_autograds(reports):
    assert all(heatmaps(r) is None for r in reports["right.py"]["results"] if r["verdict"] == "exact")
    h = heatmaps(by_name(reports["axis.py"])["bnmeani"])  # (32, 1) for (1, 64): nothing to set side by side
    assert h.panels[0].mine is None and h.panels[0].ref.shape == (1, 64)


def test_a_3d_gradient_is_sliced_along_its_smallest_axis_showing_the_largest_differences():
    ref = np.arange(20 * 2 * 3, dtype=np.float32).reshape(20, 2, 3)
    h = heatmaps({"name": "x", "verdict": "wrong", "values": {"mine": (ref + 1).tolist(), "ref": ref.tolist()}})
    assert h.axis == 1 and h.slices == 2 and [p.ref.shape for p in h.panels] == [(20, 3), (20, 3)]
    big = np.linspace(-1, 1, 10 * 12 * 12, dtype=np.float32).reshape(10, 12, 12)
    mine = big + np.float32(1e-3)
    mine[[3, 9, 5]] += np.float32(7)
    mine[1] += np.float32(0.5)
    h = heatmaps({"name": "x", "verdict": "wrong", "values": {"mine": mine.tolist(), "ref": big.tolist()}})
    assert h.axis == 0 and h.slices == 10 and len(h.panels) == 8
    shown = [int(re.match(r"dx\[(\d+), :, :\]", p.label).group(1)) for p in h.panels]
    assert shown == sorted(shown) and {1, 3, 5, 9} <= set(shown)  # the slices that differ most, in order


def test_values_read_back_from_json_with_inf_and_nan():
    a = as_array([[1.0, "nan"], ["-inf", "inf"]])
    assert a.dtype == np.float32 and math.isnan(a[0, 1]) and a[1, 0] == -np.inf
    r = {"name": "x", "verdict": "wrong", "maxdiff": "nan", "ulps": None,
         "values": {"mine": [[1.0, "nan"], [2.0, 3.0]], "ref": [[1.0, 2.0], [2.0, 3.5]]}}
    h = heatmaps(r)
    assert h.pair == 3.5 and h.diff == 0.5
    page = render_submission({"file": "x.py", "exercise": None, "results": [r], "summary": None})
    assert "NaN" not in page and "Infinity" not in page


def test_the_colour_scale_puts_zero_at_white_and_the_ends_at_the_ends():
    colours = lut()
    assert len(colours) == LUT_SIZE and colours[LUT_SIZE // 2] == "#f8f8f8"
    assert lut_index(0.0, 2.0) == LUT_SIZE // 2 and lut_index(-2.0, 2.0) == 0 and lut_index(2.0, 2.0) == LUT_SIZE - 1
    assert lut_index(float("nan"), 1.0) is None and lut_index(0.0, 0.0) == LUT_SIZE // 2
    reds = [int(c[1:3], 16) - int(c[5:7], 16) for c in colours]
    assert reds[0] < 0 < reds[-1]  # blue below zero, red above


def test_the_page_embeds_every_heatmaps_numbers(reports):
    rep = reports["many.py"]
    page = render_submission(rep)
    config, _, blobs = embedded(page)
    results = {r["name"]: r for r in config["submission"]["reports"][0]["results"]}
    for r in not_exact(rep):
        h, data = heatmaps(r), results[r["name"]]["heat"]
        assert math.isclose(data["pair"], h.pair) and math.isclose(data["diff"], h.diff)
        for p, d in zip(h.panels, data["panels"], strict=True):
            assert (d["rows"], d["cols"]) == p.ref.shape and d["label"] == p.label
            assert np.array_equal(blobs[d["ref"]].reshape(p.ref.shape), p.ref)
            assert np.array_equal(blobs[d["mine"]].reshape(p.ref.shape), p.mine)
    assert all(results[r["name"]]["heat"] is None for r in rep["results"] if r["verdict"] == "exact")


def test_every_graph_node_is_on_the_page_with_its_verdicts_colour(reports):
    for name in ("many.py", "bessel.py"):
        rep = reports[name]
        config, _, _ = embedded(render_submission(rep))
        section = config["submission"]["reports"][0]
        drawn = config["layouts"][section["graph"]]["nodes"]
        assert [n["name"] for n in drawn] == [n["name"] for n in rep["graph"]["nodes"]]
        verdicts = {r["name"]: r["verdict"] for r in rep["results"]}
        colours = {r["name"]: r["colour"] for r in section["results"]}
        for n in drawn:
            if n["name"] in verdicts:
                assert colours[n["name"]] == VERDICT_COLOURS[verdicts[n["name"]]][0]
            else:
                assert section["unjudged"][n["name"]] == ("the loss" if n["name"] == "loss" else "not judged here")
        assert set(verdicts) | set(section["unjudged"]) == {n["name"] for n in drawn}


def test_the_layout_draws_data_flowing_down_without_overlaps(reports):
    g = reports["right.py"]["graph"]
    lay = layout([n["name"] for n in g["nodes"]], [tuple(e) for e in g["edges"]])
    boxes = list(lay.nodes.values())
    for i, (x1, y1) in enumerate(boxes):
        assert 0 <= x1 and x1 + NODE_W <= lay.width and 0 <= y1 and y1 + NODE_H <= lay.height
        for x2, y2 in boxes[i + 1:]:
            assert abs(x1 - x2) >= NODE_W or abs(y1 - y2) >= NODE_H
    assert len(lay.edges) == len(g["edges"])
    for a, b, points in lay.edges:
        (ax, ay), (bx, by) = lay.nodes[a], lay.nodes[b]
        assert points[0][1] == ay + NODE_H and points[-1][1] == by
        assert ax <= points[0][0] <= ax + NODE_W and bx <= points[-1][0] <= bx + NODE_W
        assert all(p[1] <= q[1] for p, q in zip(points, points[1:]))
    y = {n: lay.nodes[n][1] for n in lay.nodes}
    assert y["C"] < y["emb"] < y["hprebn"] < y["h"] < y["logits"] < y["loss"]


def test_the_learners_lines_carry_the_verdicts_they_produced(reports):
    rep = reports["bessel.py"]
    config, _, _ = embedded(render_submission(rep))
    section = config["submission"]["reports"][0]
    lines = section["lines"]
    assert [u["text"] for u in lines] == [u["text"] for u in rep["lines"]]
    for r in section["results"]:
        u = lines[r["at"]]
        assert r["name"] in u["results"] and (r["dvar"] or "d" + r["name"]) in u["text"]
    (bessel,) = [u for u in lines if "bndiff2" in u["results"]]
    assert "(1.0/n)" in bessel["text"]
    many = embedded(render_submission(reports["many.py"]))[0]["submission"]["reports"][0]
    raised = [u for u in many["lines"] if u["problems"] or "bngain" in u["results"]]
    assert raised and "no_such_name" in raised[0]["text"]
    assert {r["name"]: r["at"] for r in many["results"]}["W1"] is None  # never assigned: at no line


def test_a_class_grid_and_its_frequent_diagnoses(reports):
    items = [reports[k] for k in ("right.py", "bessel.py", "many.py", "duplicates.py")]
    twin = json.loads(json.dumps(reports["bessel.py"]))
    twin["file"] = "bessel_too.py"
    failure = {"file": "broken.py", "exit": 2, "error": "broken.py: line 3: invalid syntax"}
    notebook = [dict(reports["right.py"], file="nb.ipynb", exercise=1),
                {"exercise": 2, "file": "nb.ipynb", "cells": [9], "attempted": False, "results": [],
                 "summary": {"ok": None, "text": "not attempted (nothing written)"}, "problems": []}]
    from ninjagrad.check.html import by_file
    data = class_data(by_file(items + [twin, failure] + notebook))
    files = [r["file"] for r in data["rows"]]
    assert files == ["right.py", "bessel.py", "many.py", "duplicates.py", "bessel_too.py", "broken.py", "nb.ipynb"]
    names = [c["name"] for c in data["columns"]]
    assert names == [r["name"] for r in reports["right.py"]["results"]]
    for row, it in zip(data["rows"], items + [twin]):
        verdicts = {r["name"]: r["verdict"] for r in it["results"]}
        assert row["codes"] == "".join({"exact": "E", "rounding": "R", "wrong": "W", "shape": "S", "missing": "M",
                                        "error": "X"}[verdicts[n]] for n in names)
        assert (row["right"], row["total"]) == (sum(v in ("exact", "rounding") for v in verdicts.values()), 26)
    assert data["rows"][5]["codes"] == "F" * 26 and data["rows"][5]["failed"].endswith("invalid syntax")
    top = data["diagnoses"][0]
    assert (top["name"], top["kind"], top["count"], top["who"]) == ("bndiff2", "scale", 2, [1, 4])
    assert "Bessel" in top["message"]
    kinds = {(d["name"], d["verdict"], d["kind"]): d["who"] for d in data["diagnoses"]}
    assert kinds[("C", "wrong", "duplicate_index")] == [3]
    assert kinds[("W1", "missing", None)] == [2] and kinds[("bngain", "error", None)] == [2]
    assert all(d["verdict"] not in ("exact", "rounding") for d in data["diagnoses"])


def test_every_verdict_has_a_colour_and_a_letter(reports):
    from ninjagrad.check.core import VERDICT_ORDER
    from ninjagrad.check.html import CODES, by_file
    assert set(VERDICT_ORDER) <= set(VERDICT_COLOURS) and set(VERDICT_ORDER) <= set(CODES)
    assert len(set(CODES.values())) == len(CODES) and not {".", "F"} & set(CODES.values())
    rep = json.loads(json.dumps(reports["bessel.py"]))
    rep["results"][-1].update(verdict="tampering", values=None)
    rep["tampering"] = {"line": 58, "cell": None, "what": "writes a file"}
    config, _, _ = embedded(render_submission(rep))
    section = config["submission"]["reports"][0]
    assert section["results"][-1]["colour"] == VERDICT_COLOURS["tampering"][0] and section["tampering"]["line"] == 58
    assert class_data(by_file([rep]))["rows"][0]["codes"][-1] == "T"


def test_a_notebooks_exercises_are_columns_of_their_own(reports):
    one = dict(reports["right.py"], file="a.ipynb", exercise=1)
    two = {"exercise": 2, "file": "a.ipynb", "cells": [5], "results": [dict(by_name(reports["bessel.py"])["logits"])],
           "summary": {"ok": True, "text": "1 exact"}, "problems": []}
    from ninjagrad.check.html import by_file
    data = class_data(by_file([one, two, dict(reports["bessel.py"], exercise=1)]))
    assert data["columns"][-1] == {"exercise": 2, "name": "logits", "label": "2: dlogits"}
    assert data["columns"][0]["label"] == "1: dlogprobs"
    assert data["rows"][1]["codes"][-1] == "."  # bessel.py has no exercise 2


def test_a_class_page_holds_every_submissions_page(reports):
    items = [reports[k] for k in ("right.py", "bessel.py", "many.py")]
    page = render_class(items)
    config, subs, blobs = embedded(page)
    assert config["kind"] == "class" and sorted(subs) == ["s0", "s1", "s2"]
    assert [s["file"] for s in subs.values()] == ["right.py", "bessel.py", "many.py"]
    assert len(config["layouts"]) == 1  # one exercise, one drawing of its graph
    # autograd's dhpreact is the same in every file: the page holds it once
    refs = [s["reports"][0]["results"] for s in subs.values()]
    ref_ids = {next(r for r in rs if r["name"] == "hpreact")["heat"]["panels"][0]["ref"] for rs in refs}
    assert len(ref_ids) == 1
    assert all(len(b) for b in blobs.values())


def test_a_report_without_details_still_gets_its_page(reports):
    """A report made without detail=True: no graph, no lines, no values; the verdicts still show."""
    bare = {k: v for k, v in reports["bessel.py"].items() if k not in ("graph", "lines")}
    bare["results"] = [{k: v for k, v in r.items() if k != "values"} for r in bare["results"]]
    config, _, blobs = embedded(render_submission(bare))
    section = config["submission"]["reports"][0]
    assert section["graph"] is None and section["lines"] == [] and not blobs and not config["layouts"]
    assert all(r["heat"] is None and r["at"] is None for r in section["results"])
    assert len(section["results"]) == 26


EVIL = "</script><script>alert(1)</script><!--.py"


def test_names_and_lines_are_text_never_markup(reports):
    rep = json.loads(json.dumps(reports["bessel.py"]))
    rep["file"] = EVIL
    rep["lines"][0]["text"] += "  # </script><b>"
    for page in (render_submission(rep), render_class([rep, reports["right.py"]])):
        assert "<script>alert" not in page and "<!--.py" not in page and "# </script><b>" not in page


def test_a_check_result_in_a_notebook_is_this_page(reports):
    shown = CheckReport(reports["bessel.py"])
    html1, html2 = shown._repr_html_(), shown._repr_html_()
    assert not html1.lstrip().startswith("<!doctype") and 'class="ngr"' in html1
    uid = re.search(r'class="ngr" id="(ng[0-9a-f]+)"', html1).group(1)
    assert uid not in html2  # two outputs in one notebook never share ids
    config, _, _ = embedded(html1, uid)
    assert config["submission"]["reports"][0]["graph"] in config["layouts"]
    assert "dbndiff2" in html1 and "wrong" in html1  # the plain table, shown where scripts do not run
    assert "dbndiff2" in repr(shown)  # the terminal's table is unchanged


# --- in a browser -------------------------------------------------------------------------------------

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def chromium_path() -> str | None:
    for name in (os.environ.get("NINJAGRAD_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


@pytest.fixture(scope="module")
def browser():
    path = chromium_path()
    if path is None:
        pytest.skip("no Chromium found (apt-get install chromium, or set NINJAGRAD_CHROMIUM to a browser's path)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield b
        b.close()


def open_page(browser, path, width=1400):
    page = browser.new_page(viewport={"width": width, "height": 900})
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request",
            lambda r: errors.append(f"fetched {r.url}") if not r.url.startswith(("file:", "data:")) else None)
    page.goto(path.as_uri())
    page.wait_for_selector("[data-ng-ready]")
    return page, errors


def rgb(hex_colour: str) -> str:
    return "rgb({}, {}, {})".format(*(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)))


NODES_JS = """() => Array.from(document.querySelectorAll('g.ng-node')).map(g => ({
    name: g.dataset.name, verdict: g.dataset.verdict,
    fill: getComputedStyle(g.querySelector('rect')).fill,
    text: Array.from(g.querySelectorAll('text')).map(t => t.textContent).join(' | ')}))"""

HEATS_JS = """() => Array.from(document.querySelectorAll('canvas.ng-heat')).map(c => {
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    return {name: c.dataset.name, which: c.dataset.which, panel: +c.dataset.panel, scale: +c.dataset.scale,
            rows: c.height, cols: c.width, values: Array.from(c.ngValues), pixels: Array.from(d),
            shown: c.getBoundingClientRect().width > 0};
})"""


def test_a_submission_page_in_a_browser(browser, reports, tmp_path):
    rep = reports["many.py"]
    path = tmp_path / "many.html"
    path.write_text(render_submission(rep), encoding="utf-8")
    page, errors = open_page(browser, path)
    nodes = page.evaluate(NODES_JS)
    verdicts = {r["name"]: r["verdict"] for r in rep["results"]}
    assert [n["name"] for n in nodes] == [n["name"] for n in rep["graph"]["nodes"]]
    for n in nodes:
        v = verdicts.get(n["name"])
        assert n["verdict"] == (v or "none")
        assert n["fill"] == rgb(VERDICT_COLOURS[v][0] if v else "#e4e4e4"), n
    probs = next(n for n in nodes if n["name"] == "probs")["text"]
    maxdiff = format(by_name(rep)["probs"]["maxdiff"], ".2g")
    assert f"(32, 27) | wrong · maxdiff {maxdiff} · 8.4e6 ulps | scale: dprobs is 2 times" in probs

    heats = page.evaluate(HEATS_JS)
    colours = [tuple(int(c[i:i + 2], 16) for i in (1, 3, 5)) for c in lut()]
    expected = 0
    for r in not_exact(rep):
        h = heatmaps(r)
        for pi, p in enumerate(h.panels):
            for which, values, scale in (("yours", p.mine, h.pair), ("autograd's", p.ref, h.pair),
                                         ("difference", p.diff, h.diff)):
                drawn = [c for c in heats if (c["name"], c["which"], c["panel"]) == (r["name"], which, pi)]
                if values is None:
                    assert not drawn
                    continue
                (c,) = drawn
                expected += 1
                assert c["shown"] and (c["rows"], c["cols"]) == values.shape and c["scale"] == scale
                assert np.array_equal(np.asarray(c["values"]).reshape(values.shape), values.astype(np.float64))
                flat = values.reshape(-1)
                for k in range(0, flat.size, max(1, flat.size // 97)):  # the pixels are the scale's colours
                    assert tuple(c["pixels"][4 * k:4 * k + 3]) == colours[lut_index(float(flat[k]), scale)]
    assert expected == len(heats) >= 9
    cards = page.eval_on_selector_all(".ng-card", "cs => cs.map(c => c.dataset.name)")
    assert cards == [r["name"] for r in rep["results"] if r["verdict"] != "exact"]
    badges = page.eval_on_selector_all(".ng-code tr", "trs => trs.map(t => t.innerText)")
    assert any("(2.0 / probs)" in t and "dprobs wrong" in t for t in badges)
    page.click("g.ng-node[data-name='probs']")  # a node leads to its card
    page.wait_for_function("document.querySelector('.ng-card[data-name=probs]').classList.contains('ng-flash')")
    assert errors == []


def test_a_class_page_sorts_and_opens_each_submission(browser, reports, tmp_path):
    items = [reports[k] for k in ("right.py", "bessel.py", "many.py", "duplicates.py", "axis.py")]
    items.append({"file": "broken.py", "exit": 2, "error": "broken.py: line 3: invalid syntax"})
    path = tmp_path / "class.html"
    path.write_text(render_class(items), encoding="utf-8")
    page, errors = open_page(browser, path)
    rows = "() => Array.from(document.querySelectorAll('.ng-grid .ng-row[data-file]')).map(t => t.dataset.file)"
    assert page.evaluate(rows) == ["right.py", "bessel.py", "many.py", "duplicates.py", "axis.py", "broken.py"]
    page.click("[data-key=score]")
    assert page.evaluate(rows) == ["right.py", "axis.py", "bessel.py", "duplicates.py", "many.py", "broken.py"]
    page.click("[data-key=score]")
    assert page.evaluate(rows) == ["broken.py", "many.py", "axis.py", "bessel.py", "duplicates.py", "right.py"]
    page.click("[data-key=name]")
    assert page.evaluate(rows) == ["axis.py", "bessel.py", "broken.py", "duplicates.py", "many.py", "right.py"]
    page.click("[data-key=name]")
    assert page.evaluate(rows)[0] == "right.py"
    cells = page.evaluate("() => Array.from(document.querySelectorAll('[data-file=\"bessel.py\"] .ng-cell'))"
                          ".map(td => getComputedStyle(td).backgroundColor)")
    verdicts = [r["verdict"] for r in reports["bessel.py"]["results"]]
    assert cells == [rgb(VERDICT_COLOURS[v][0]) for v in verdicts]
    top = page.inner_text(".ng-diag-item")
    assert "dbndiff2" in top or "dprobs" in top

    page.click("[data-file='bessel.py'] a.ng-name")  # one click to the submission's page
    page.wait_for_selector(".ng-subview:not([hidden]) g.ng-node")
    nodes = page.evaluate(NODES_JS)
    assert {n["name"]: n["verdict"] for n in nodes if n["verdict"] != "none"} == \
        {r["name"]: r["verdict"] for r in reports["bessel.py"]["results"]}
    assert page.locator(".ng-subview canvas.ng-heat").count() == 6  # dbndiff2 and dhpreact, three each
    page.go_back()
    page.wait_for_selector(".ng-class:not([hidden])")
    page.click("[data-file='many.py'] .ng-cell[data-col='1']")  # a cell: its submission, at that gradient
    page.wait_for_function("document.querySelector('.ng-subview .ng-card[data-name=probs]')")
    assert page.inner_text(".ng-subview h1") == "many.py"
    assert errors == []


def test_names_show_as_text_in_a_browser(browser, reports, tmp_path):
    rep = json.loads(json.dumps(reports["bessel.py"]))
    rep["file"] = EVIL
    rep["lines"][0]["text"] += "  # </script><b>"
    path = tmp_path / "evil.html"
    path.write_text(render_submission(rep), encoding="utf-8")
    page, errors = open_page(browser, path)
    assert page.inner_text("h1") == EVIL and page.locator("b:text('x')").count() == 0
    assert page.inner_text(".ng-code tr >> nth=0").count("</script><b>") == 1
    assert errors == []


HOST = """<!doctype html><meta charset="utf-8"><body><p>a notebook</p><div id="out0"></div><div id="out1"></div>
<script>
// as JupyterLab shows an output: the HTML as innerHTML, then each script run again as a new element
OUTPUTS.forEach(function (html, i) {
  var box = document.getElementById("out" + i);
  box.innerHTML = html;
  box.querySelectorAll("script").forEach(function (old) {
    var s = document.createElement("script");
    if (old.type) s.type = old.type;
    if (old.id) s.id = old.id;
    s.textContent = old.textContent;
    old.replaceWith(s);
  });
});
</script>"""


def test_two_results_in_one_notebook_draw_side_by_side(browser, reports, tmp_path):
    outputs = [CheckReport(reports[k])._repr_html_() for k in ("bessel.py", "many.py")]
    path = tmp_path / "notebook.html"
    path.write_text(HOST.replace("OUTPUTS", json.dumps(outputs).replace("</", "<\\/")), encoding="utf-8")
    page, errors = open_page(browser, path)
    page.wait_for_function("document.querySelectorAll('[data-ng-ready]').length == 2")
    for i, name in enumerate(("bessel.py", "many.py")):
        nodes = page.evaluate(f"() => Array.from(document.querySelectorAll('#out{i} g.ng-node'))"
                              ".map(g => [g.dataset.name, g.dataset.verdict])")
        verdicts = {r["name"]: r["verdict"] for r in reports[name]["results"]}
        assert dict(nodes) == {n["name"]: verdicts.get(n["name"], "none") for n in reports[name]["graph"]["nodes"]}
        assert page.inner_text(f"#out{i} h1") == name
    assert page.locator("#out1 canvas.ng-heat").count() > page.locator("#out0 canvas.ng-heat").count() > 0
    assert page.evaluate("getComputedStyle(document.querySelector('body > p')).fontSize") == "16px"  # scoped CSS
    assert errors == []


def synthetic_class(reports, n: int) -> list[dict]:
    """n submissions of exercise 1 made from the real reports, each with its own values (none shared)."""
    rng = np.random.default_rng(0)
    bases = [reports[k] for k in ("bessel.py", "many.py", "duplicates.py", "axis.py", "right.py")]
    items = []
    for i in range(n):
        base = bases[i % len(bases)]
        rep = {**base, "file": f"student_{i:03d}.py", "results": []}
        for r in base["results"]:
            v = r.get("values")
            if v and v.get("mine") is not None:
                mine = np.asarray(v["mine"], dtype=np.float32)
                mine = mine * np.float32(1 + 1e-3 * rng.standard_normal())
                r = {**r, "values": {"mine": mine.tolist(), "ref": v["ref"]}}
            rep["results"].append(r)
        items.append(rep)
    return items


@pytest.mark.slow
def test_500_submissions_open_and_work(browser, reports, tmp_path):
    """The class page of 500 submissions draws its whole grid and stays usable. How fast it opens is a
    benchmark (benchmarks/html_class.py), not a test: a shared machine's timings are noise."""
    t = time.perf_counter()
    html = render_class(synthetic_class(reports, 500))
    rendered = time.perf_counter() - t
    path = tmp_path / "class500.html"
    path.write_text(html, encoding="utf-8")
    t = time.perf_counter()
    page, errors = open_page(browser, path)
    wall = time.perf_counter() - t
    ready = page.evaluate("window.ninjagradReport.readyAt")  # ms after navigation started
    painted = page.evaluate(
        "new Promise(done => requestAnimationFrame(() => setTimeout(() => done(performance.now()))))")
    assert page.locator(".ng-grid .ng-row[data-file]").count() == 500
    print(f"\n500 submissions: {len(html) / 1e6:.1f} MB, rendered in {rendered:.2f} s, drawn {ready:.0f} ms and on "
          f"screen {painted:.0f} ms after navigation ({wall:.2f} s from the test's goto)")
    assert errors == []
    page.click("[data-key=score]")
    page.click("[data-file='student_497.py'] a.ng-name")
    page.wait_for_selector(".ng-subview:not([hidden]) canvas.ng-heat")
    assert errors == []
