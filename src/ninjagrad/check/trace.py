"""Trace a straight-line forward script under autograd.

A forward script is a list of `name = expression` statements (the lecture's forward pass, or a
user's). Running it with the parameters as autograd leaves gives every named intermediate, its
reference gradient, and, edge by edge, what each consumer contributes to that gradient: the
checker needs those contributions to say "the branch through counts_sum is missing".

Nothing here knows exercise 1's node list: nodes are whatever the script names.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field

import torch

from ..errors import UsageError


@dataclass
class Statement:
    """One top-level statement `target = value` of a forward script."""
    lineno: int
    source: str  # the statement as written, for messages
    target: str
    reads: list[str]  # names read, in order of appearance, without repeats
    code: object  # compiled `target = value`
    expr: object  # compiled `value` alone (an eval code object)
    tree: ast.expr  # the value's AST, to find index reads such as C[Xb]


@dataclass
class Edge:
    """How one consumer statement contributes to a node's gradient."""
    consumer: str  # the consumer's target, e.g. "probs" for an edge of counts
    lineno: int
    source: str
    contribution: torch.Tensor  # this edge's share of the node's gradient
    lost_duplicates: torch.Tensor | None = None  # what `dX[idx] += dY` would give instead (index reads)
    paths: list = field(default_factory=list)  # [(Z, Z's line, share)]: split by the consumers Z of `consumer`

    def describe(self) -> str:
        return f"the branch through `{self.consumer}` (forward line {self.lineno}: {self.source})"


@dataclass
class Trace:
    """A forward script run once under autograd, at one dtype."""
    dtype: torch.dtype
    statements: list[Statement]
    namespace: dict  # detached forward values, parameters and extras (torch, F, n, Xb, ...)
    grads: dict[str, torch.Tensor]  # reference gradient of every node (detached)
    nodes: list[str]  # nodes that carry a gradient, in backward order (output first)
    edges: dict[str, list[Edge]] = field(default_factory=dict)
    scale: dict[str, float] = field(default_factory=dict)  # per node: the size of its upstream gradients
    output: str = "loss"
    loss: float = float("nan")
    params: tuple[str, ...] = ()

    def consumer_of(self, name: str) -> list[Edge]:
        return self.edges.get(name, [])


def parse_forward(source: str, filename: str) -> list[Statement]:
    """Split a forward script into `name = expression` statements."""
    try:
        tree = ast.parse(source, filename=filename)
    except SyntaxError as e:
        raise UsageError(f"{filename}:{e.lineno}: syntax error in the forward script ({e.msg})") from None
    statements = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)) or (
                isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)):
            continue  # imports and docstrings: the namespace already has torch and F
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            raise UsageError(f"{filename}:{node.lineno}: a forward script is straight-line code; "
                             "write every statement as `name = expression`")
        reads = []
        for sub in ast.walk(node.value):
            if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load) and sub.id not in reads:
                reads.append(sub.id)
        target = node.targets[0].id
        code = compile(ast.Module([node], type_ignores=[]), filename, "exec")
        expr = compile(ast.Expression(node.value), filename, "eval")
        statements.append(Statement(node.lineno, ast.get_source_segment(source, node) or ast.unparse(node),
                                    target, reads, code, expr, node.value))
    return statements


def run_forward(statements: list[Statement], namespace: dict) -> dict:
    """Execute the statements in `namespace` (in place) and return it."""
    for st in statements:
        exec(st.code, namespace)
    return namespace


def _index_reads(tree: ast.expr, name: str) -> list[ast.expr]:
    """Subscripts `name[...]` in an expression: the reads whose gradient is a scatter-add."""
    return [sub.slice for sub in ast.walk(tree)
            if isinstance(sub, ast.Subscript) and isinstance(sub.value, ast.Name) and sub.value.id == name]


def trace_forward(statements: list[Statement], params: dict[str, torch.Tensor], extras: dict,
                  output: str = "loss") -> Trace:
    """Run the script with `params` as leaves; keep every intermediate and its reference gradient."""
    dtype = next(iter(params.values())).dtype
    ns = dict(extras)
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    ns.update(leaves)
    with torch.enable_grad():
        tensors = {}
        for st in statements:
            exec(st.code, ns)
            v = ns[st.target]
            if torch.is_tensor(v) and v.requires_grad:
                v.retain_grad()
                tensors[st.target] = v
        if output not in ns or not torch.is_tensor(ns[output]) or ns[output].numel() != 1:
            raise UsageError(f"forward script: it must end by computing the scalar `{output}`")
        loss = ns[output]
        loss.backward()
    grads = {k: t.grad.detach() for k, t in {**leaves, **tensors}.items() if t.grad is not None and k != output}
    namespace = {k: (v.detach() if torch.is_tensor(v) else v) for k, v in ns.items() if k != "__builtins__"}

    # every edge X -> Y: re-evaluate Y's expression with only X as a leaf, pull dY back through it
    upstream = dict(grads)
    upstream[output] = torch.ones_like(loss.detach())
    edges: dict[str, list[Edge]] = {}
    for st in statements:
        dY = upstream.get(st.target)
        if dY is None:
            continue
        for x in st.reads:
            if x not in grads:
                continue
            local = dict(namespace)
            leaf = namespace[x].clone().requires_grad_(True)
            local[x] = leaf
            with torch.enable_grad():
                y = eval(st.expr, local)
                # (y * dY).sum() pulls back exactly dY; grad_outputs= would import sympy (~1 s) on first use
                (contrib,) = torch.autograd.grad((y * dY).sum(), leaf, allow_unused=True)
            if contrib is None:
                contrib = torch.zeros_like(namespace[x])
            edge = Edge(st.target, st.lineno, st.source, contrib.detach())
            for sl in _index_reads(st.tree, x):
                idx = eval(compile(ast.Expression(sl), "<index>", "eval"), local)
                if torch.is_tensor(idx) and not idx.is_floating_point() and idx.numel() > idx.unique().numel():
                    lost = torch.zeros_like(namespace[x])
                    lost[idx] += dY  # what the buggy `dX[idx] += dY` computes: one of each repeat survives
                    edge.lost_duplicates = lost
            edges.setdefault(x, []).append(edge)

    # one level finer: the edge X -> Y split by Y's own consumers Z (X -> Y -> Z), so that a mistake
    # confined to one path (Bessel's n-1 in the variance path of a fused batchnorm) can be named
    by_target = {st.target: st for st in statements}
    for x, xs in edges.items():
        for edge in xs:
            downstream = edges.get(edge.consumer, [])
            if len(downstream) < 2:
                continue
            st = by_target[edge.consumer]
            local = dict(namespace)
            leaf = namespace[x].clone().requires_grad_(True)
            local[x] = leaf
            with torch.enable_grad():
                y = eval(st.expr, local)
                for z in downstream:
                    (share,) = torch.autograd.grad((y * z.contribution).sum(), leaf, retain_graph=True,
                                                   allow_unused=True)
                    if share is not None:
                        edge.paths.append((z.consumer, z.source, share.detach()))

    # backward order: walk the statements from the last; a node becomes due at its first consumer
    first_consumer = {}
    for i, st in enumerate(statements):
        for x in st.reads:
            first_consumer.setdefault(x, i)
    nodes = []
    for i in range(len(statements) - 1, -1, -1):
        for x in statements[i].reads:
            if x in grads and first_consumer[x] == i and x not in nodes:
                nodes.append(x)

    scale = {}
    for x in nodes:
        s = grads[x].abs().max().item()
        for e in edges.get(x, []):
            s = max(s, upstream[e.consumer].abs().max().item())
        scale[x] = s if s > 0 else 1.0
    return Trace(dtype, statements, namespace, grads, nodes, edges, scale, output, loss.item(), tuple(params))
