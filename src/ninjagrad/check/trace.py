"""Trace a straight-line forward script under autograd.

A forward script is a list of `name = expression` statements (the lecture's forward pass, or a
user's), after an optional setup section that creates its inputs (setup.py). Running it with the
parameters as autograd leaves gives every named intermediate, its reference gradient, and, edge by
edge, what each consumer contributes to that gradient: the checker needs those contributions to say
"the branch through counts_sum is missing".

Nothing here knows exercise 1's node list: nodes are whatever the script names.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field

import torch

from ..errors import UsageError
from .setup import SetupSection, split_setup


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
    filename: str = "forward.py"  # the script's name, for messages


@dataclass
class Edge:
    """How one consumer statement contributes to a node's gradient."""
    consumer: str  # the consumer's target, e.g. "probs" for an edge of counts
    lineno: int
    source: str
    contribution: torch.Tensor  # this edge's share of the node's gradient
    # for an index read X[idx] that repeats indices: (idx flattened, dY's matching rows), what the
    # buggy `dX[idx] += dY` writes one of per repeat (see keeps_one_repeat)
    repeats: tuple[torch.Tensor, torch.Tensor] | None = None
    paths: list = field(default_factory=list)  # [(Z, Z's line, share)]: split by the consumers Z of `consumer`

    def describe(self) -> str:
        return f"the branch through `{self.consumer}` (forward line {self.lineno}: {self.source})"

    def keeps_one_repeat(self, got: torch.Tensor, atol: float) -> bool:
        """Whether `got` is what `dX[idx] += dY` can give for this edge: every row idx never names is
        0, and every element of a row it names equals that element of one of the rows of dY sent there.

        Which repeat survives is not defined: with more than one thread torch's index_put_ lets them
        race, so the same line gives different survivors from run to run (and element by element), and
        replaying it here would not say what the learner's run kept.
        """
        if self.repeats is None:
            return False
        rows, values = self.repeats
        if got.shape != self.contribution.shape:
            return False
        match = ((got[rows] - values).abs() <= atol).to(torch.int64)  # (n, ...): repeat k fits element
        fits = torch.zeros(got.shape, dtype=torch.int64).index_add_(0, rows, match)  # per element: repeats that fit
        named = torch.zeros(got.shape[0], dtype=torch.bool)
        named[rows] = True
        return bool((fits[named] > 0).all()) and bool((got[~named].abs() <= atol).all())


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


def parse_script(source: str, filename: str) -> tuple[SetupSection | None, list[Statement]]:
    """Split a forward script into its setup section (if any) and its `name = expression` statements."""
    try:
        tree = ast.parse(source, filename=filename)
    except SyntaxError as e:
        raise UsageError(f"{filename}:{e.lineno}: syntax error in the forward script ({e.msg})") from None
    setup = split_setup(tree, filename)
    statements = []
    for node in tree.body[setup.end if setup else 0:]:
        if isinstance(node, (ast.Import, ast.ImportFrom)) or (
                isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)):
            continue  # imports and docstrings: the namespace already has torch and F
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            raise UsageError(f"{filename}:{node.lineno}: a forward script is straight-line code; "
                             "write every statement as `name = expression`")
        for sub in ast.walk(node.value):
            if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute) and \
                    sub.func.attr.endswith("_") and not sub.func.attr.startswith("_"):
                raise UsageError(f"{filename}:{node.lineno}: `.{sub.func.attr}(...)` changes a tensor in place, "
                                 "which the trace cannot follow; use the out-of-place form "
                                 f"(`.{sub.func.attr[:-1]}(...)`) and a new name")
        reads = []
        for sub in ast.walk(node.value):
            if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load) and sub.id not in reads:
                reads.append(sub.id)
        target = node.targets[0].id
        code = compile(ast.Module([node], type_ignores=[]), filename, "exec")
        expr = compile(ast.Expression(node.value), filename, "eval")
        statements.append(Statement(node.lineno, ast.get_source_segment(source, node) or ast.unparse(node),
                                    target, reads, code, expr, node.value, filename))
    if not statements:
        raise UsageError(f"{filename}: no forward statements after the setup; write the forward as "
                         "`name = expression` lines ending with a scalar `loss`")
    return setup, statements


def parse_forward(source: str, filename: str) -> list[Statement]:
    """The `name = expression` statements of a forward script (after its setup section, if any)."""
    return parse_script(source, filename)[1]


def run_forward(statements: list[Statement], namespace: dict) -> dict:
    """Execute the statements in `namespace` (in place) and return it."""
    for st in statements:
        exec(st.code, namespace)
    return namespace


STEP_FUNCTIONS = {"RoundBackward0", "RoundBackward1", "SignBackward0", "SgnBackward0", "FloorBackward0",
                  "CeilBackward0", "TruncBackward0"}


def check_differentiable(st: Statement, value, ns: dict, earlier: dict):
    """Refuse a step that cuts the graph (.detach(), .item(), .data) or whose derivative is zero
    everywhere (round, sign, floor): there is no gradient to write for what follows it."""
    feeds = [x for x in st.reads if torch.is_tensor(ns.get(x)) and ns[x].requires_grad]
    where = f"{st.filename}:{st.lineno}"
    if not feeds:
        if torch.is_tensor(value) and value.is_floating_point():
            # an input in disguise; and were it random, the float32 and float64 runs would draw different ones
            raise UsageError(f"{where}: `{st.target}` depends on no parameter: it is an input; create it in the "
                             f"setup section and mark it data(...)")
        return
    if torch.is_tensor(value) and value.is_floating_point() and not value.requires_grad:
        raise UsageError(f"{where}: `{st.target}` is cut off from the graph (.detach(), .data, torch.no_grad or a "
                         f"non-differentiable op?); every step from a param(...) to the loss must be differentiable")
    if isinstance(value, float):
        raise UsageError(f"{where}: `{st.target}` is a Python float (.item() or float()?), which leaves autograd; "
                         "keep it a tensor")
    if isinstance(value, (tuple, list)) and any(torch.is_tensor(v) for v in value):
        raise UsageError(f"{where}: `{st.target}` is a {type(value).__name__} of tensors; every node must be one "
                         f"tensor, e.g. `q = {st.target}[0]` in the same line as the split")
    if not (torch.is_tensor(value) and value.grad_fn is not None):
        return
    stop = {t.grad_fn for t in earlier.values() if t.grad_fn is not None}
    todo, seen = [value.grad_fn], set()
    while todo:
        fn = todo.pop()
        if fn is None or fn in seen or fn in stop:
            continue
        seen.add(fn)
        if type(fn).__name__ in STEP_FUNCTIONS:
            op = type(fn).__name__.replace("Backward0", "").replace("Backward1", "").lower()
            raise UsageError(f"{where}: `{st.target}` goes through {op}(), whose derivative is zero wherever it "
                             "exists: no gradient flows back through it; drop the step or make it smooth")
        todo.extend(f for f, _ in fn.next_functions)


def _index_reads(tree: ast.expr, name: str) -> list[ast.expr]:
    """Subscripts `name[...]` in an expression: the reads whose gradient is a scatter-add."""
    return [sub.slice for sub in ast.walk(tree)
            if isinstance(sub, ast.Subscript) and isinstance(sub.value, ast.Name) and sub.value.id == name]


def run_traced(statements: list[Statement], params: dict[str, torch.Tensor], extras: dict, output: str):
    """Run the script with `params` as leaves: (namespace, leaves, the named tensors, the output)."""
    ns = dict(extras)
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    ns.update(leaves)
    tensors = {}
    with torch.enable_grad():
        for st in statements:
            try:
                exec(st.code, ns)
            except Exception as e:  # noqa: BLE001 -- a broken forward is the script's mistake, told as such
                raise UsageError(f"{st.filename}:{st.lineno}: the forward raised {type(e).__name__}: "
                                 f"{(str(e).strip().splitlines() or [''])[0]}") from None
            v = ns[st.target]
            check_differentiable(st, v, ns, tensors)
            if torch.is_tensor(v) and v.requires_grad:
                v.retain_grad()
                tensors[st.target] = v
    return ns, leaves, tensors, scalar_output(statements, ns, output)


def scalar_output(statements: list[Statement], ns: dict, output: str) -> torch.Tensor:
    where = statements[-1].filename if statements else "forward script"
    if output not in ns or not torch.is_tensor(ns[output]) or ns[output].numel() != 1:
        got = ("it never assigns it" if output not in ns else
               f"it is a {type(ns[output]).__name__}" if not torch.is_tensor(ns[output]) else
               f"it has shape {tuple(ns[output].shape)}; reduce it with .mean() or .sum()")
        raise UsageError(f"{where}: the forward must end by computing a scalar `{output}` ({got})")
    if not ns[output].requires_grad:
        raise UsageError(f"{where}: `{output}` does not depend on any parameter; mark the inputs that get "
                         "a gradient with param(...)")
    return ns[output]


def reference_grads(loss: torch.Tensor, leaves: dict, tensors: dict, output: str, where: str) -> dict:
    """Autograd's gradient of every leaf and named tensor (detached)."""
    try:
        with torch.enable_grad():
            loss.backward()
    except RuntimeError as e:
        raise UsageError(f"{where}: autograd cannot differentiate the forward "
                         f"({(str(e).strip().splitlines() or [''])[0]})") from None
    return {k: t.grad.detach() for k, t in {**leaves, **tensors}.items() if t.grad is not None and k != output}


def edges_of(statements: list[Statement], namespace: dict, grads: dict, upstream: dict) -> dict[str, list[Edge]]:
    """Every edge X -> Y: Y's expression re-evaluated with only X as a leaf, dY pulled back through it."""
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
            edge.repeats = repeated_rows(st, x, local, namespace, dY)
            edges.setdefault(x, []).append(edge)
    return edges


def repeated_rows(st: Statement, x: str, local: dict, namespace: dict, dY: torch.Tensor):
    """For an index read X[idx] that repeats indices: (idx flattened, dY's matching rows)."""
    out = None
    for sl in _index_reads(st.tree, x):
        idx = eval(compile(ast.Expression(sl), "<index>", "eval"), local)
        if torch.is_tensor(idx) and not idx.is_floating_point() and idx.numel() > idx.unique().numel():
            rows = idx.reshape(-1).to(torch.int64) % namespace[x].shape[0]  # negative indices too
            out = (rows.cpu(), dY.detach().reshape(rows.shape[0], *namespace[x].shape[1:]).cpu())
    return out


def split_by_path(statements: list[Statement], namespace: dict, edges: dict[str, list[Edge]]):
    """One level finer: the edge X -> Y split by Y's own consumers Z (X -> Y -> Z), so that a mistake
    confined to one path (Bessel's n-1 in the variance path of a fused batchnorm) can be named."""
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


def backward_order(statements: list[Statement], grads: dict) -> list[str]:
    """The nodes in backward order: walking the statements from the last, a node is due at its first consumer."""
    first_consumer = {}
    for i, st in enumerate(statements):
        for x in st.reads:
            first_consumer.setdefault(x, i)
    nodes = []
    for i in range(len(statements) - 1, -1, -1):
        for x in statements[i].reads:
            if x in grads and first_consumer[x] == i and x not in nodes:
                nodes.append(x)
    return nodes


def scales(nodes: list[str], grads: dict, edges: dict, upstream: dict) -> dict[str, float]:
    """Per node: the size of its gradient and of the gradients flowing into it (what "close" is relative to)."""
    out = {}
    for x in nodes:
        s = grads[x].abs().max().item()
        for e in edges.get(x, []):
            s = max(s, upstream[e.consumer].abs().max().item())
        out[x] = s if s > 0 else 1.0
    return out


def trace_forward(statements: list[Statement], params: dict[str, torch.Tensor], extras: dict,
                  output: str = "loss") -> Trace:
    """Run the script with `params` as leaves; keep every intermediate, its reference gradient, and what
    each consumer contributes to it."""
    dtype = next(iter(params.values())).dtype
    ns, leaves, tensors, loss = run_traced(statements, params, extras, output)
    where = statements[-1].filename if statements else "forward script"
    grads = reference_grads(loss, leaves, tensors, output, where)
    namespace = {k: (v.detach() if torch.is_tensor(v) else v) for k, v in ns.items() if k != "__builtins__"}
    upstream = {**grads, output: torch.ones_like(loss.detach())}
    edges = edges_of(statements, namespace, grads, upstream)
    split_by_path(statements, namespace, edges)
    nodes = backward_order(statements, grads)
    return Trace(dtype, statements, namespace, grads, nodes, edges, scales(nodes, grads, edges, upstream), output,
                 loss.item(), tuple(params))


def pullback(trace: Trace, x: str, upstream: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list[Edge]]:
    """The vector-Jacobian product at node x for other upstream gradients (consumer -> its gradient):
    their sum, and each consumer's share as an Edge (for diagnoses)."""
    by_target = {st.target: st for st in trace.statements}
    total = torch.zeros_like(trace.namespace[x])
    edges = []
    for e in trace.edges.get(x, []):
        st = by_target[e.consumer]
        local = dict(trace.namespace)
        leaf = trace.namespace[x].clone().requires_grad_(True)
        local[x] = leaf
        with torch.enable_grad():
            y = eval(st.expr, local)
            (share,) = torch.autograd.grad((y * upstream[e.consumer]).sum(), leaf, allow_unused=True)
        share = torch.zeros_like(total) if share is None else share.detach()
        total = total + share
        edges.append(Edge(e.consumer, e.lineno, e.source, share))
    return total, edges
