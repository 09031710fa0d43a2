"""A layered drawing of a forward's graph for the HTML report: data flows down, one layer per step.

Four small passes in the manner of Sugiyama's: layers (the longest path from the inputs, each
parameter pulled down to just above its first reader), dummy points where an edge skips layers,
the order within each layer by the barycentre of its neighbours (sweeps down and up, keeping the
order with the fewest crossings), and x positions pulled towards the neighbours' without overlap
(least squares under the order, by pooling adjacent violators). Every node is a box of one size.
"""
from __future__ import annotations

from dataclasses import dataclass

NODE_W, NODE_H = 216, 56  # px: a node's box (name and shape, verdict and distance, diagnosis)
GAP_X, GAP_Y = 24, 30  # px between boxes of one layer / between layers
DUMMY_W = 12  # px: the room an edge takes where it passes a layer
MARGIN = 8
SWEEPS = 8  # down-and-up ordering sweeps; x-placement passes
INPUT_PULL = 0.25  # how much an input (a node that reads nothing) pulls on where its reader goes


@dataclass
class Layout:
    nodes: dict[str, tuple[float, float]]  # name -> (x, y) of its box's top-left corner
    edges: list[tuple[str, str, list[tuple[float, float]]]]  # (from, to, points from the bottom of `from`
    #                                                          to the top of `to`, two per layer it passes)
    width: float
    height: float


def layer_of(names: list[str], edges: list[tuple[str, str]]) -> dict[str, int]:
    """Longest path from the inputs; a node that only feeds others sits just above its first reader."""
    index = {x: i for i, x in enumerate(names)}
    preds = {x: [a for a, b in edges if b == x] for x in names}
    succs = {x: [b for a, b in edges if a == x] for x in names}
    layer: dict[str, int] = {}
    for x in names:  # data-flow order: what a node reads comes first
        layer[x] = 1 + max((layer[p] for p in preds[x] if index[p] < index[x]), default=-1)
    for x in reversed(names):
        if not preds[x] and succs[x]:
            layer[x] = min(layer[s] for s in succs[x]) - 1
    low = min(layer.values(), default=0)
    return {x: v - low for x, v in layer.items()}


def crossings(rows: list[list[str]], down: dict[str, list[str]]) -> int:
    """Edge crossings between adjacent layers (small graphs: every pair of edges)."""
    total = 0
    for upper, lower in zip(rows, rows[1:]):
        pos = {x: i for i, x in enumerate(lower)}
        pairs = [(i, pos[b]) for i, a in enumerate(upper) for b in down[a] if b in pos]
        total += sum(1 for k, (a1, b1) in enumerate(pairs) for a2, b2 in pairs[k + 1:]
                     if (a1 - a2) * (b1 - b2) < 0)
    return total


def order_layers(rows: list[list[str]], up: dict, down: dict) -> list[list[str]]:
    """Barycentre sweeps; the order with the fewest crossings wins (ties: the earlier one)."""
    best, best_c = [list(r) for r in rows], crossings(rows, down)
    rows = [list(r) for r in rows]
    for sweep in range(2 * SWEEPS):
        going_down = sweep % 2 == 0
        span = range(1, len(rows)) if going_down else range(len(rows) - 2, -1, -1)
        for li in span:
            ref = rows[li - 1] if going_down else rows[li + 1]
            pos = {x: i for i, x in enumerate(ref)}
            keys = {}
            for i, x in enumerate(rows[li]):
                near = [pos[y] for y in (up[x] if going_down else down[x]) if y in pos]
                keys[x] = sum(near) / len(near) if near else i
            rows[li].sort(key=lambda x: keys[x])
        c = crossings(rows, down)
        if c < best_c:
            best, best_c = [list(r) for r in rows], c
    return best


def nearest_in_order(targets: list[float], gaps: list[float]) -> list[float]:
    """x minimising sum (x_i - t_i)^2 subject to x_{i+1} - x_i >= gaps[i] (pool adjacent violators)."""
    offsets = [0.0]
    for g in gaps:
        offsets.append(offsets[-1] + g)
    blocks: list[list[float]] = []  # [mean, count]
    for t, o in zip(targets, offsets):
        blocks.append([t - o, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, c2 = blocks.pop()
            m1, c1 = blocks.pop()
            blocks.append([(m1 * c1 + m2 * c2) / (c1 + c2), c1 + c2])
    ys = [m for m, c in blocks for _ in range(int(c))]
    return [y + o for y, o in zip(ys, offsets)]


@dataclass
class Spread:
    """The graph with a dummy point wherever an edge passes a layer: every edge then joins adjacent layers."""
    known: set[str]  # the real nodes
    layer: dict[str, int]
    up: dict[str, list[str]]
    down: dict[str, list[str]]
    width: dict[str, float]
    chains: list[list[str]]  # per edge: the nodes it passes, dummies included

    def is_input(self, v: str) -> bool:
        return v in self.known and not self.up[v]


def spread(names: list[str], edges: list[tuple[str, str]]) -> Spread:
    g = Spread(set(names), layer_of(names, edges), {x: [] for x in names}, {x: [] for x in names},
               {x: NODE_W for x in names}, [])
    for k, (a, b) in enumerate(edges):
        chain = [a]
        for li in range(g.layer[a] + 1, g.layer[b]):
            d = f"\0{k}.{li}"  # a dummy: no forward name holds a NUL
            g.layer[d], g.width[d], g.up[d], g.down[d] = li, DUMMY_W, [], []
            chain.append(d)
        chain.append(b)
        for u, v in zip(chain, chain[1:]):
            g.down[u].append(v)
            g.up[v].append(u)
        g.chains.append(chain)
    return g


def rows_of(g: Spread, names: list[str]) -> list[list[str]]:
    """The nodes of each layer, ordered for few crossings."""
    rows: list[list[str]] = [[] for _ in range(max(g.layer.values(), default=-1) + 1)]
    for x in list(names) + [d for c in g.chains for d in c[1:-1]]:
        rows[g.layer[x]].append(x)
    for li, row in enumerate(rows):  # inputs (parameters) on both sides of the steps they sit beside
        inputs = [x for x in row if g.is_input(x)]
        rows[li] = inputs[0::2][::-1] + [x for x in row if x not in inputs] + inputs[1::2]
    return order_layers(rows, g.up, g.down)


def place(g: Spread, rows: list[list[str]]) -> dict[str, float]:
    """Each node's centre x: packed, then pulled towards its neighbours' in sweeps down and up, keeping the
    order and the gaps."""
    # an input pulls its reader less than a step does: the chain of steps stays straight
    weight = {v: INPUT_PULL if g.is_input(v) else 1.0 for v in g.layer}
    centre: dict[str, float] = {}
    for row in rows:
        x = 0.0
        for v in row:
            centre[v] = x + g.width[v] / 2
            x += g.width[v] + GAP_X
    for sweep in range(2 * SWEEPS):
        going_down = sweep % 2 == 0
        for row in (rows[1:] if going_down else rows[-2::-1]):
            targets = []
            for v in row:
                near = g.up[v] if going_down else g.down[v]
                w = [weight[u] for u in near]
                targets.append(sum(centre[u] * wu for u, wu in zip(near, w)) / sum(w) if near else centre[v])
            gaps = [(g.width[a] + g.width[b]) / 2 + GAP_X for a, b in zip(row, row[1:])]
            for v, c in zip(row, nearest_in_order(targets, gaps)):
                centre[v] = c
    left = min((centre[v] - g.width[v] / 2 for v in centre), default=0.0)
    return {v: c + MARGIN - left for v, c in centre.items()}


def port(g: Spread, centre: dict[str, float], v: str, other: str, outgoing: bool) -> float:
    """Where an edge meets a box: its ends spread along the edge, in the order of their other ends."""
    if v not in g.known:
        return centre[v]
    ends = g.down[v] if outgoing else g.up[v]
    ranked = sorted(ends, key=lambda u: centre[u])
    return centre[v] - NODE_W / 2 + NODE_W * (ranked.index(other) + 1) / (len(ranked) + 1)


def layout(names: list[str], edges: list[tuple[str, str]]) -> Layout:
    """Boxes for `names` (data-flow order) and routed edges, data flowing down."""
    names = list(dict.fromkeys(names))
    known = set(names)
    edges = list(dict.fromkeys((a, b) for a, b in edges if a in known and b in known and a != b))
    g = spread(names, edges)
    rows = rows_of(g, names)
    centre = place(g, rows)
    top = {li: MARGIN + li * (NODE_H + GAP_Y) for li in range(len(rows))}
    routed = []
    for (a, b), chain in zip(edges, g.chains):
        points = [(port(g, centre, a, chain[1], True), top[g.layer[a]] + NODE_H)]
        for d in chain[1:-1]:
            points += [(centre[d], top[g.layer[d]]), (centre[d], top[g.layer[d]] + NODE_H)]
        points.append((port(g, centre, b, chain[-2], False), top[g.layer[b]]))
        routed.append((a, b, [(round(x, 1), round(y, 1)) for x, y in points]))
    boxes = {x: (round(centre[x] - NODE_W / 2, 1), float(top[g.layer[x]])) for x in names}
    w = max((centre[v] + g.width[v] / 2 for v in centre), default=0.0) + MARGIN
    h = MARGIN + len(rows) * (NODE_H + GAP_Y) - GAP_Y + MARGIN if rows else 2 * MARGIN
    return Layout(boxes, routed, round(w, 1), float(h))
