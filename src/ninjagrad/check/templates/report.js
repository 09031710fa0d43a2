/* ninjagrad check report: draws what html.py embeds in the page (report.html.j2) into its root <div>.
   A submission: per exercise, the forward's graph with every node coloured by its gradient's verdict,
   three heatmaps (yours, autograd's, the difference) per gradient that is not exact, and the learner's
   lines beside their verdicts. A class: the grid of submissions x gradients, the frequent diagnoses,
   each submission drawn when it is opened. Plain DOM, SVG and canvas; nothing is fetched. */
(function () {
  "use strict";
  var VERSION = 1;
  if (window.ninjagradReport && window.ninjagradReport.version === VERSION) return;

  var SVGNS = "http://www.w3.org/2000/svg";
  var SEVERITY = "FTXAMSWRE.";  // grid letters, worst first: a column sorts its mistakes to the top
  var NODE_FONT = "11px system-ui, -apple-system, 'Segoe UI', sans-serif";

  // --- small helpers ------------------------------------------------------------------------------

  function put(e, attrs, kids) {
    for (var k in attrs || {}) {
      var v = attrs[k];
      if (v === null || v === undefined || v === false) continue;
      if (k.slice(0, 2) === "on") e.addEventListener(k.slice(2), v);
      else if (k === "text") e.textContent = v;
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    (kids || []).forEach(function add(c) {
      if (c === null || c === undefined || c === false) return;
      if (Array.isArray(c)) c.forEach(add);
      else e.appendChild(typeof c === "object" ? c : document.createTextNode(String(c)));
    });
    return e;
  }
  function el(tag, attrs) { return put(document.createElement(tag), attrs, [].slice.call(arguments, 2)); }
  function svg(tag, attrs) { return put(document.createElementNS(SVGNS, tag), attrs, [].slice.call(arguments, 2)); }

  function num(x, digits) {  // `digits` significant digits (3 unless given)
    if (x === null || x === undefined) return "";
    if (typeof x === "string") return x;  // "inf", "nan"
    if (x === 0) return "0";
    var d = digits || 3, a = Math.abs(x);
    return a < 1e-3 || a >= 1e4 ? x.toExponential(d - 1) : String(+x.toPrecision(d));
  }
  function ulps(u) {
    if (u === null || u === undefined) return "";
    return Math.abs(u) < 1e6 ? u.toLocaleString("en-US") : u.toExponential(1);
  }
  function shapeStr(s) { return "(" + (s || []).join(", ") + ((s || []).length === 1 ? ",)" : ")"); }
  function dvar(r) { return r.dvar || "d" + r.name; }
  function where(r) {
    if (!r.line) return "";
    return r.cell !== null && r.cell !== undefined ? "cell " + r.cell + ", line " + r.line : "line " + r.line;
  }

  var measure = document.createElement("canvas").getContext("2d");
  function fit(text, px) {  // the longest prefix of text that fits in px (with an ellipsis when cut)
    measure.font = NODE_FONT;
    if (measure.measureText(text).width <= px) return text;
    var lo = 0, hi = text.length;
    while (lo < hi) {
      var mid = (lo + hi + 1) >> 1;
      if (measure.measureText(text.slice(0, mid) + "\u2026").width <= px) lo = mid; else hi = mid - 1;
    }
    return text.slice(0, lo) + "\u2026";
  }

  function blob(page, id) {  // base64 little-endian float32 -> Float32Array, decoded once
    if (id === null || id === undefined) return null;
    if (!page.blobs[id]) {
      var bin = atob(document.getElementById(page.uid + "-" + id).textContent.trim());
      var view = new DataView(new ArrayBuffer(bin.length));
      for (var i = 0; i < bin.length; i++) view.setUint8(i, bin.charCodeAt(i));
      var out = new Float32Array(bin.length / 4);
      for (var j = 0; j < out.length; j++) out[j] = view.getFloat32(4 * j, true);
      page.blobs[id] = out;
    }
    return page.blobs[id];
  }

  function colours(page, verdict) { return page.config.colours[verdict] || page.config.notJudged; }
  function badge(page, verdict, text, attrs) {
    var c = colours(page, verdict);
    return el(attrs && attrs.href ? "a" : "span", Object.assign({class: "ng-badge",
      style: "background:" + c[0] + ";color:" + c[1]}, attrs || {}), text || verdict);
  }

  // --- heatmaps ------------------------------------------------------------------------------------

  function lutIndex(v, m, n) {  // as html.lut_index
    if (!isFinite(v)) return -1;
    if (m === 0) return (n - 1) >> 1;
    return Math.min(n - 1, Math.max(0, Math.floor((v + m) / (2 * m) * n)));
  }
  function rgbTable(page) {
    if (!page.rgb) {
      page.rgb = page.config.lut.map(function (h) {
        return [parseInt(h.slice(1, 3), 16), parseInt(h.slice(3, 5), 16), parseInt(h.slice(5, 7), 16)];
      });
      page.rgbNonfinite = [0, 2, 4].map(function (i) { return parseInt(page.config.nonfinite.slice(1 + i, 3 + i), 16); });
    }
    return page.rgb;
  }
  function cellSize(rows, cols) {
    var cell = Math.max(1, Math.min(14, Math.floor(204 / cols), Math.floor(240 / rows)));
    return [cell, rows === 1 ? Math.max(cell, 18) : cell];
  }

  function heatCanvas(page, values, rows, cols, m) {
    var rgb = rgbTable(page), n = rgb.length;
    var cv = el("canvas", {class: "ng-heat", width: cols, height: rows});
    var ctx = cv.getContext("2d"), img = ctx.createImageData(cols, rows);
    for (var i = 0; i < values.length; i++) {
      var k = lutIndex(values[i], m, n), c = k < 0 ? page.rgbNonfinite : rgb[k];
      img.data[4 * i] = c[0]; img.data[4 * i + 1] = c[1]; img.data[4 * i + 2] = c[2]; img.data[4 * i + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
    var size = cellSize(rows, cols);
    cv.style.width = cols * size[0] + "px";  // shrinks with the page: max-width and aspect-ratio in the CSS
    cv.style.aspectRatio = cols * size[0] + " / " + rows * size[1];
    return cv;
  }

  function colourBar(page, m, label) {
    var rgb = rgbTable(page), cv = el("canvas", {class: "ng-bar", width: rgb.length, height: 1});
    var ctx = cv.getContext("2d"), img = ctx.createImageData(rgb.length, 1);
    rgb.forEach(function (c, i) { img.data.set([c[0], c[1], c[2], 255], 4 * i); });
    ctx.putImageData(img, 0, 0);
    return el("div", {class: "ng-scale"}, el("span", {class: "ng-scale-label"}, label),
      el("span", {}, num(-m)), cv, el("span", {}, "+" + num(m)));
  }

  function showTip(page, ev, panel, rows, cols) {
    var cv = ev.currentTarget, box = cv.getBoundingClientRect();
    var j = Math.floor((ev.clientX - box.left) / box.width * cols), i = Math.floor((ev.clientY - box.top) / box.height * rows);
    if (i < 0 || j < 0 || i >= rows || j >= cols) return;
    var k = i * cols + j, parts = [panel.label + "[" + i + ", " + j + "]"];
    if (panel.mine) parts.push("yours " + num(panel.mine[k]));
    parts.push("autograd's " + num(panel.ref[k]));
    if (panel.diff) parts.push("difference " + num(panel.diff[k]));
    page.tip.textContent = parts.join("   ");
    page.tip.style.left = ev.clientX + 14 + "px";
    page.tip.style.top = ev.clientY + 14 + "px";
    page.tip.hidden = false;
  }

  function figure(page, r, pi, which, values, p, m, panel) {
    var f = el("figure", {class: "ng-fig"});
    if (!values) {
      var size = cellSize(p.rows, p.cols);
      f.appendChild(el("div", {class: "ng-nomap", style: "width:" + p.cols * size[0] + "px;min-height:" +
        Math.min(p.rows * size[1], 120) + "px"}, which === "yours" ? "your gradient has another shape: no values " +
        "to set beside autograd's" : "no difference: the shapes differ"));
    } else {
      var cv = heatCanvas(page, values, p.rows, p.cols, m);
      cv.ngValues = values;  // the numbers this picture shows (tests read them)
      put(cv, {"data-name": r.name, "data-which": which, "data-panel": pi, "data-scale": m,
        onmousemove: function (ev) { showTip(page, ev, panel, p.rows, p.cols); },
        onmouseleave: function () { page.tip.hidden = true; }});
      f.appendChild(cv);
    }
    f.appendChild(el("figcaption", {}, which));
    return f;
  }

  function heatView(page, r) {
    var h = r.heat;
    if (!h) return null;
    var box = el("div", {class: "ng-maps"}), panels = el("div", {class: "ng-panels"});
    box.appendChild(panels);
    h.panels.forEach(function (p, pi) {
      var mine = blob(page, p.mine), ref = blob(page, p.ref), diff = null;
      if (mine) {
        diff = new Float64Array(ref.length);
        for (var i = 0; i < ref.length; i++) diff[i] = mine[i] - ref[i];  // float32 values, float64 difference
      }
      var panel = {label: p.label, mine: mine, ref: ref, diff: diff};
      panels.appendChild(el("div", {class: "ng-panel"},
        h.panels.length > 1 || p.label !== dvar(r) ? el("div", {class: "ng-panel-label"}, p.label) : null,
        el("div", {class: "ng-figs"},
          figure(page, r, pi, "yours", mine, p, h.pair, panel),
          figure(page, r, pi, "autograd's", ref, p, h.pair, panel),
          figure(page, r, pi, "difference", diff, p, h.diff, panel))));
    });
    box.appendChild(el("div", {class: "ng-scales"}, colourBar(page, h.pair, "yours and autograd's"),
      h.panels.some(function (p) { return p.mine; }) ? colourBar(page, h.diff, "difference (yours \u2212 autograd's)") : null));
    if (h.slices > h.panels.length)
      box.appendChild(el("p", {class: "ng-dim"}, "the " + h.panels.length + " of " + h.slices + " slices along axis " +
        h.axis + " with the largest differences"));
    return box;
  }

  // --- one submission --------------------------------------------------------------------------------

  function verdictLine(r) {  // a node's second line: short numbers, the card has them in full
    var parts = [r.verdict];
    if (r.verdict !== "exact" && r.maxdiff !== null && r.maxdiff !== undefined)
      parts.push("maxdiff " + num(r.maxdiff, 2));
    if (r.verdict !== "exact" && r.ulps !== null && r.ulps !== undefined)
      parts.push((Math.abs(r.ulps) < 1e4 ? ulps(r.ulps) : r.ulps.toExponential(1).replace("e+", "e")) + " ulps");
    if ((r.verdict === "error" || r.verdict === "missing") && r.line) parts.push(where(r));
    return parts.join(" \u00b7 ");
  }
  function diagText(r) { return r.diagnosis ? r.diagnosis.kind + ": " + r.diagnosis.message : (r.note || ""); }

  function focusResult(page, ri, name) {
    var target = document.getElementById(page.uid + "-r" + ri + "-" + name) ||
      page.root.querySelector("#" + page.uid + "-g" + ri + " [data-name='" + name + "']");
    if (!target) return;
    target.scrollIntoView({block: "center", behavior: "smooth"});
    target.classList.remove("ng-flash");
    void target.getBoundingClientRect();
    target.classList.add("ng-flash");
  }

  function graphView(page, rep, ri) {
    var g = page.config.layouts[rep.graph], W = page.config.node.w, H = page.config.node.h;
    var byName = {};
    rep.results.forEach(function (r) { byName[r.name] = r; });
    var arrow = page.uid + "-arrow" + ri;
    var s = svg("svg", {class: "ng-graph", id: page.uid + "-g" + ri, width: g.width, height: g.height,
      viewBox: "0 0 " + g.width + " " + g.height, role: "img",
      "aria-label": "the forward's graph, each node coloured by its gradient's verdict"},
      svg("defs", {}, svg("marker", {id: arrow, viewBox: "0 0 8 8", refX: 7, refY: 4, markerWidth: 7,
        markerHeight: 7, orient: "auto"}, svg("path", {d: "M0,0 L8,4 L0,8 z", class: "ng-arrowhead"}))));
    var edges = svg("g", {class: "ng-edges"});
    g.edges.forEach(function (e) {
      var p = e.points, d = "M" + p[0][0] + "," + p[0][1];
      for (var i = 1; i < p.length; i++) {
        var my = (p[i - 1][1] + p[i][1]) / 2;
        d += " C" + p[i - 1][0] + "," + my + " " + p[i][0] + "," + my + " " + p[i][0] + "," + p[i][1];
      }
      edges.appendChild(svg("path", {d: d, class: "ng-edge", "marker-end": "url(#" + arrow + ")",
        "data-from": e.from, "data-to": e.to}));
    });
    s.appendChild(edges);
    g.nodes.forEach(function (n) {
      var r = byName[n.name], c = r ? colours(page, r.verdict) : page.config.notJudged;
      var second = r ? verdictLine(r) : rep.unjudged[n.name] || "not judged here", third = r ? diagText(r) : (n.source || "");
      var tip = [n.name + " " + shapeStr(n.shape), n.source || n.kind, r ? "d" + n.name + ": " + verdictLine(r) : second,
        r ? diagText(r) : ""].filter(Boolean).join("\n");
      var node = svg("g", {class: "ng-node" + (r ? "" : " ng-unjudged"), "data-name": n.name,
        "data-verdict": r ? r.verdict : "none", transform: "translate(" + n.x + "," + n.y + ")", tabindex: 0,
        onclick: function () { if (r) focusResult(page, ri, n.name); }},
        svg("title", {}, tip),
        svg("rect", {class: "ng-box", width: W, height: H, rx: 7, fill: c[0]}),
        svg("text", {x: 10, y: 17, fill: c[1], class: "ng-node-name"}, n.name),
        svg("text", {x: W - 10, y: 17, fill: c[1], "text-anchor": "end", class: "ng-node-shape"}, shapeStr(n.shape)),
        svg("text", {x: 10, y: 34, fill: c[1], class: "ng-node-line"}, fit(second, W - 20)),
        svg("text", {x: 10, y: 49, fill: c[1], class: "ng-node-line ng-node-diag"}, fit(third, W - 20)));
      s.appendChild(node);
    });
    return el("div", {class: "ng-graph-wrap"}, s);
  }

  function legend(page) {
    return el("div", {class: "ng-legend"}, Object.keys(page.config.colours).map(function (v) { return badge(page, v); }),
      el("span", {class: "ng-badge ng-unjudged-badge", style: "background:" + page.config.notJudged[0] + ";color:" +
        page.config.notJudged[1]}, "not judged"));
  }

  function card(page, rep, ri, r) {
    var src = r.at !== null && r.at !== undefined ? rep.lines[r.at] : null;
    return el("div", {class: "ng-card", id: page.uid + "-r" + ri + "-" + r.name, "data-name": r.name, "data-verdict": r.verdict,
      style: "border-left-color:" + colours(page, r.verdict)[0]},
      el("div", {class: "ng-card-head"}, badge(page, r.verdict), el("b", {}, dvar(r)), el("span", {class: "ng-dim"}, shapeStr(r.shape)),
        r.maxdiff !== null && r.maxdiff !== undefined ? el("span", {}, "maxdiff " + num(r.maxdiff)) : null,
        r.ulps !== null && r.ulps !== undefined ? el("span", {}, ulps(r.ulps) + " ulps") : null,
        r.line ? el("span", {class: "ng-dim"}, where(r)) : null),
      r.diagnosis ? el("p", {class: "ng-diag"}, el("b", {}, r.diagnosis.kind), ": " + r.diagnosis.message) : null,
      r.note ? el("p", {class: "ng-note"}, r.note) : null,
      src ? el("pre", {class: "ng-src"}, src.text) : null,
      heatView(page, r));
  }

  function linesView(page, rep, ri) {
    var byName = {};
    rep.results.forEach(function (r) { byName[r.name] = r; });
    var rows = rep.lines.map(function (u) {
      var first = u.results.length ? byName[u.results[0]] : null;
      return el("tr", {class: u.results.length || u.problems.length ? "ng-judged" : "",
        style: first ? "box-shadow:inset 4px 0 " + colours(page, first.verdict)[0] : null},
        el("td", {class: "ng-ln"}, u.cell !== null && u.cell !== undefined ? u.cell + ":" + u.line : u.line),
        el("td", {}, el("pre", {class: "ng-text"}, u.text)),
        el("td", {class: "ng-verdicts"}, u.results.map(function (name) {
          var r = byName[name];
          return badge(page, r.verdict, dvar(r) + " " + r.verdict, {href: "#", title: diagText(r),
            onclick: function (ev) { ev.preventDefault(); focusResult(page, ri, name); }});
        }), u.problems.map(function (m) { return badge(page, "error", "raised", {title: m}); })));
    });
    var loose = rep.results.filter(function (r) { return r.at === null || r.at === undefined; });
    if (loose.length)
      rows.push(el("tr", {class: "ng-judged"}, el("td", {class: "ng-ln"}, "\u2013"),
        el("td", {}, el("pre", {class: "ng-text ng-dim"}, "(not at one of your lines)")),
        el("td", {class: "ng-verdicts"}, loose.map(function (r) {
          return badge(page, r.verdict, dvar(r) + " " + r.verdict, {title: diagText(r)});
        }))));
    return el("table", {class: "ng-code"}, el("tbody", {}, rows));
  }

  function summaryLine(page, s) {
    if (!s) return null;
    return el("div", {class: "ng-summary"}, Object.keys(page.config.colours).filter(function (v) { return s[v]; })
      .map(function (v) { return badge(page, v, s[v] + " " + v); }),
      el("span", {class: s.ok ? "ng-ok" : "ng-bad"}, s.text));
  }

  function envLine(rep) {
    var env = rep.environment || {}, s = rep.summary || {}, out = [];
    if (env.torch) {
      out.push(el("p", {class: "ng-dim"}, "torch " + env.torch + ", " + env.device + ", " + env.dtype + "; data: " + env.data +
        (env.seed !== null && env.seed !== undefined ? ", seed " + env.seed : "") +
        (env.forward && env.forward !== "the lecture's" ? "; judged against " + env.forward + " forward" : "")));
    }
    if (s.cascade)
      out.push(el("p", {class: "ng-dim"}, "Without teacher forcing, the lecture's cmp would print exact: False for " +
        s.plain_not_exact + " of them, " + s.cascade + " of which are right here: one mismatch upstream changes every gradient below it."));
    if (env.solution_not_exact && env.solution_not_exact.length)
      out.push(el("p", {class: "ng-dim"}, "On this platform the package's own solution is not bit-exact for " +
        env.solution_not_exact.map(function (x) { return "d" + x; }).join(", ") + ": there, 'rounding' is the best possible verdict."));
    return out;
  }

  function reportView(page, rep, ri) {
    var sec = el("section", {class: "ng-report", "data-exercise": rep.exercise === null ? "" : rep.exercise},
      el("h2", {}, rep.title), summaryLine(page, rep.summary));
    if (rep.failed) { sec.appendChild(el("p", {class: "ng-failed"}, rep.failed)); return sec; }
    if (rep.attempted === false || !rep.results.length) return sec;
    put(sec, {}, envLine(rep));
    if (rep.tampering)
      sec.appendChild(el("p", {class: "ng-failed"}, "tampering: " + where(rep.tampering) + " " + rep.tampering.what +
        ": gradients computed from there on are not judged"));
    if (rep.stopped)
      sec.appendChild(el("p", {class: "ng-failed"}, "the submission's process ended early (" +
        ((rep.stopped.status || 0) >= 0 ? "exit status " + rep.stopped.status : "signal " + -rep.stopped.status) +
        (rep.stopped.where ? ", in " + rep.stopped.where : "") + "): gradients due after that are errors"));
    var wrong = rep.results.filter(function (r) { return r.verdict !== "exact"; });
    var right = el("div", {class: "ng-col"},
      el("h3", {}, wrong.length ? "Gradients that are not exact (" + wrong.length + ")" : "Every gradient is exact"),
      wrong.map(function (r) { return card(page, rep, ri, r); }),
      rep.lines.length ? el("h3", {}, "Your lines") : null,
      rep.lines.length ? linesView(page, rep, ri) : null);
    var left = rep.graph ? el("div", {class: "ng-col ng-col-graph"},
      el("h3", {}, "The forward, each node coloured by its gradient's verdict"), legend(page), graphView(page, rep, ri)) : null;
    sec.appendChild(el("div", {class: "ng-body"}, right, left));  // drawn reversed: see .ng-body
    return sec;
  }

  function submissionView(page, sub) {
    return el("div", {class: "ng-sub"},
      el("header", {class: "ng-head"}, el("h1", {}, sub.file || "this submission"),
        sub.total ? el("p", {class: "ng-score"}, sub.right + " of " + sub.total + " gradients right") : null),
      sub.reports.map(function (rep, ri) { return reportView(page, rep, ri); }));
  }

  // --- a class -------------------------------------------------------------------------------------

  function classView(page) {
    var K = page.config.class, root = page.root, uid = page.uid;
    var rows = K.rows, cols = K.columns;
    var css = Object.keys(page.config.codes).map(function (code) {
      var c = colours(page, page.config.codes[code]);
      return "#" + uid + " .c-" + code + "{background:" + c[0] + "}";
    }).join("\n") + "\n#" + uid + " .c-F{background:#555}";
    root.appendChild(el("style", {}, css));

    var classBox = el("div", {class: "ng-class"}), subBox = el("div", {class: "ng-subview", hidden: true});
    root.appendChild(classBox);
    root.appendChild(subBox);
    var allRight = rows.filter(function (r) { return r.total && r.right === r.total && !r.failed; }).length;
    classBox.appendChild(el("header", {class: "ng-head"},
      el("h1", {}, rows.length + " submission" + (rows.length === 1 ? "" : "s") +
        (K.exercises.length ? ", exercise" + (K.exercises.length > 1 ? "s " : " ") + K.exercises.join(", ") : "")),
      el("p", {class: "ng-score"}, allRight + " of " + rows.length + " have every gradient right")));

    // the frequent diagnoses
    var shown = 12;
    var diags = el("ol", {class: "ng-diags"});
    function fileLink(i) { return el("a", {href: "#s" + i, class: "ng-file"}, rows[i].file); }
    K.diagnoses.forEach(function (d, k) {
      var col = cols[d.column], who = d.who;
      var li = el("li", {class: "ng-diag-item", hidden: k >= shown},
        el("span", {class: "ng-count"}, d.count),
        badge(page, d.verdict, d.kind ? d.verdict + ": " + d.kind : d.verdict),
        el("b", {}, "d" + d.name), K.exercises.length > 1 ? el("span", {class: "ng-dim"}, " exercise " + col.exercise) : null,
        d.message ? el("div", {class: "ng-diag-msg", title: d.message}, d.message) : null,
        el("div", {class: "ng-who"}, who.slice(0, 10).map(fileLink),
          who.length > 10 ? el("details", {}, el("summary", {}, "and " + (who.length - 10) + " more"),
            who.slice(10).map(function (i) { return [fileLink(i), " "]; })) : null));
      diags.appendChild(li);
    });
    var more = K.diagnoses.length > shown ? el("button", {type: "button", class: "ng-more", onclick: function () {
      [].forEach.call(diags.children, function (li) { li.hidden = false; });
      more.remove();
    }}, "show all " + K.diagnoses.length) : null;
    var diagBox = el("section", {class: "ng-diags-box"},
      el("h2", {}, K.diagnoses.length ? "The most frequent mistakes" : "No mistakes"), diags, more);

    // the grid: rows of fixed-size cells; a row off screen is neither laid out nor painted
    // (content-visibility), so 500 rows open as fast as 50
    var head = el("div", {class: "ng-row ng-headrow", role: "row"},
      el("div", {class: "ng-sort ng-name", role: "columnheader", "data-key": "name", "aria-sort": "none"}, "submission"),
      el("div", {class: "ng-sort ng-scorecell", role: "columnheader", "data-key": "score", "aria-sort": "none"}, "score"),
      cols.map(function (c, i) {
        return el("div", {class: "ng-sort ng-colh", role: "columnheader", "data-key": "c" + i,
          title: "d" + c.name + " (exercise " + c.exercise + ")", "aria-sort": "none"}, el("span", {}, c.label));
      }));
    var trs = rows.map(function (r, i) {
      var tr = el("div", {class: "ng-row", role: "row", "data-row": i, "data-file": r.file},
        el("a", {class: "ng-name", role: "rowheader", href: "#s" + i, title: r.file + (r.summary || r.failed ?
          ": " + (r.summary || r.failed) : "")}, r.file),
        el("span", {class: "ng-scorecell", role: "gridcell"}, r.failed ? "failed" : r.right + "/" + r.total));
      for (var j = 0; j < cols.length; j++) {
        var code = r.codes[j], kind = r.kinds[j];
        var verdict = code === "F" ? "not judged: " + r.failed : code === "." ? "not judged" : page.config.codes[code];
        tr.appendChild(el("span", {class: "ng-cell c-" + (code === "." ? "none" : code), role: "gridcell", "data-col": j,
          title: r.file + "  d" + cols[j].name + ": " + verdict + (kind ? " (" + kind + ")" : "")}));
      }
      return tr;
    });
    var tbody = el("div", {class: "ng-rows", role: "rowgroup"}, trs);
    var order = rows.map(function (r, i) { return i; });
    var sortKey = null, sortDir = 1;
    function score(r) { return r.failed || !r.total ? -1 : r.right / r.total; }
    function byName(a, b) { return rows[a].file.localeCompare(rows[b].file, undefined, {numeric: true}); }
    function sortBy(key) {
      sortDir = sortKey === key ? -sortDir : (key === "name" ? 1 : -1);
      sortKey = key;
      var cmp;
      if (key === "name") cmp = function (a, b) { return sortDir * byName(a, b); };
      else if (key === "score") cmp = function (a, b) { return sortDir * (score(rows[a]) - score(rows[b])) || byName(a, b); };
      else {
        var j = +key.slice(1);
        cmp = function (a, b) {  // "descending" puts the worst verdicts first
          return -sortDir * (SEVERITY.indexOf(rows[a].codes[j]) - SEVERITY.indexOf(rows[b].codes[j])) || byName(a, b);
        };
      }
      order.sort(cmp);
      order.forEach(function (i) { tbody.appendChild(trs[i]); });
      [].forEach.call(head.children, function (th) {
        th.setAttribute("aria-sort", th.getAttribute("data-key") !== key ? "none" : sortDir > 0 ? "ascending" : "descending");
      });
    }
    head.addEventListener("click", function (ev) {
      var th = ev.target.closest("[data-key]");
      if (th) sortBy(th.getAttribute("data-key"));
    });
    tbody.addEventListener("click", function (ev) {
      var td = ev.target.closest(".ng-cell");
      if (!td) return;
      var i = +td.parentNode.getAttribute("data-row"), c = cols[+td.getAttribute("data-col")];
      page.pending = c;
      location.hash = "#s" + i;
    });
    var filter = el("input", {type: "search", placeholder: "filter by name", class: "ng-filter", oninput: function () {
      var q = filter.value.toLowerCase();
      trs.forEach(function (tr, i) { tr.hidden = q && rows[i].file.toLowerCase().indexOf(q) < 0; });
    }});
    classBox.appendChild(el("div", {class: "ng-class-body"}, el("section", {class: "ng-grid-box"},
      el("h2", {}, "Every submission \u00d7 gradient"),
      el("p", {class: "ng-dim"}, "Click a column's head to sort by it (again to reverse); a name or a cell opens that submission."),
      el("div", {class: "ng-grid-tools"}, filter, legend(page)),
      el("div", {class: "ng-grid-scroll"}, el("div", {class: "ng-grid", role: "grid", "aria-rowcount": rows.length + 1},
        head, tbody))), diagBox));

    function open(i) {
      var data = JSON.parse(document.getElementById(uid + "-s" + i).textContent);
      var pos = order.indexOf(i);
      var nav = el("nav", {class: "ng-nav"}, el("a", {href: "#"}, "\u2190 all submissions"),
        pos > 0 ? el("a", {href: "#s" + order[pos - 1]}, "\u2039 " + rows[order[pos - 1]].file) : null,
        pos < order.length - 1 ? el("a", {href: "#s" + order[pos + 1]}, rows[order[pos + 1]].file + " \u203a") : null);
      if (rows[i].failed) data.reports = [{title: "not judged", failed: rows[i].failed, results: [], lines: []}];
      subBox.textContent = "";
      subBox.appendChild(nav);
      subBox.appendChild(submissionView(page, data));
      classBox.hidden = true;
      subBox.hidden = false;
      var c = page.pending;
      page.pending = null;
      var ri = c ? data.reports.findIndex(function (rep) { return (rep.exercise || 0) === c.exercise; }) : -1;
      if (ri >= 0) focusResult(page, ri, c.name); else window.scrollTo(0, 0);
    }
    function route() {
      var m = /^#s(\d+)$/.exec(location.hash);
      if (m && +m[1] < rows.length) open(+m[1]);
      else { subBox.hidden = true; subBox.textContent = ""; classBox.hidden = false; }
    }
    window.addEventListener("hashchange", route);
    page.sortBy = sortBy;
    page.open = open;
    route();
  }

  // --- mounting ------------------------------------------------------------------------------------

  function mount(uid) {
    var root = document.getElementById(uid);
    if (!root || root.getAttribute("data-ng-ready")) return;
    var page = {uid: uid, root: root, blobs: {},
      config: JSON.parse(document.getElementById(uid + "-config").textContent)};
    window.ninjagradReport.pages[uid] = page;
    root.textContent = "";
    page.tip = el("div", {class: "ng-tip", hidden: true});
    root.appendChild(page.tip);
    if (page.config.kind === "class") classView(page);
    else root.appendChild(submissionView(page, page.config.submission));
    root.setAttribute("data-ng-ready", "1");
    window.ninjagradReport.readyAt = performance.now();
  }

  window.ninjagradReport = {version: VERSION, mount: mount, pages: {}, lutIndex: lutIndex};
})();
