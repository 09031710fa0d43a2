"""Inside Jupyter: `%load_ext ninjagrad`, then `%%ninjagrad` on a cell of hand-written gradients.

The cell is judged against the notebook's own forward, as it stands in the kernel: the cells run so
far (IPython's input history) are read as `ninjagrad check` reads a notebook, the statements that
compute `loss` are sliced out of them, and their live parameters and inputs are traced again in
float32 and float64. The cell's gradients are judged with teacher forcing, every gradient above the
first one it assigns given as autograd's (as a notebook holds the learner's own by then), and then
the cell runs as usual, so the next cells see what it assigned.

    %%ninjagrad
    dlogprobs = torch.zeros_like(logprobs)
    dlogprobs[range(n), Yb] = -1.0/n

The result shows as a table (HTML in the notebook, text in a terminal). Options: `--strict-shapes`,
`--exercise N` (2: dlogits, 3: dhprebn given dhpreact; default: whatever the cell assigns).
"""
from __future__ import annotations

import argparse
import shlex

from ..errors import UsageError
from .core import check_program, upstream_of
from .layout import EX3_GIVEN, forward_end
from .learner import MAIN, LearnerSide, LocalLearner
from .notebook import forward_values, own_context, traced
from .own_forward import slice_spec
from .report import CheckReport
from .runner import Program
from .submission import code_cell


def parse_line(line: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="%%ninjagrad", add_help=False)
    p.add_argument("--exercise", type=int, choices=[1, 2, 3])
    p.add_argument("--strict-shapes", action="store_true")
    try:
        return p.parse_args(shlex.split(line))
    except SystemExit:
        raise UsageError(f"%%ninjagrad {line}: options are --exercise N (1, 2 or 3) and --strict-shapes") from None


def check_cell(cell: str, history: list[str], namespace: dict, exercise: int | None = None,
               strict_shapes: bool = False) -> CheckReport:
    """Judge `cell` against the forward found in `history` (earlier cells), with the live `namespace`."""
    cells = [code_cell(i, text, "<notebook>") for i, text in enumerate(history, 1)]
    this = code_cell(len(history) + 1, cell, "<notebook>")
    past = [u for c in cells for u in c.units]
    end = forward_end(past + this.units)
    if end is None or end >= len(past):
        raise UsageError("no forward found: run the cell that computes `loss` (the chunked forward) first, and "
                         "assign gradients d<name> of its tensors in this cell")
    try:
        spec = slice_spec(past[: end + 1], past[end], namespace)
    except ValueError as e:
        raise UsageError(str(e)) from None
    fw, t32, t64 = traced(spec)
    side = LearnerSide()  # the notebook's own names, under the forward's traced values
    side.setup_ns = {k: v for k, v in namespace.items() if not k.startswith("_")}
    side.set_forward(MAIN, forward_values(fw, t32), forward_values(fw, t64))
    prog = Program("this cell", this.units)
    prog.learn(set(t32.grads))
    written = set(prog.written())
    assigned = [x for x in t32.nodes if prog.dvar(x) in written]
    if exercise == 2:
        judged, extra = ["logits"], []
    elif exercise == 3:
        judged, extra = ["hprebn"], [EX3_GIVEN]
    else:
        judged, extra = assigned, []
    judged = [x for x in judged if x in t32.grads]
    if not judged:
        raise UsageError("this cell assigns no gradient d<name> of the forward's tensors "
                         f"({', '.join('d' + x for x in t32.nodes[:6])}, ...)")
    given = list(dict.fromkeys(upstream_of(t32, judged) + [x for x in extra if x in t32.grads]))
    ctx = own_context(exercise or 1, fw, t32, t64, judged, given, "the notebook's batch")
    report = check_program(prog, ctx, strict_shapes, detail=True, learner=LocalLearner(side))
    report["file"] = "this cell"
    report["cells"] = []
    return CheckReport(report)


def ninjagrad_magic(line: str, cell: str):
    """`%%ninjagrad [--exercise N] [--strict-shapes]`: judge the cell's gradients, then run it."""
    from IPython import get_ipython

    ip = get_ipython()
    raw = list(ip.history_manager.input_hist_raw)
    history = raw[1:-1] if raw and raw[-1].lstrip().startswith("%%ninjagrad") else raw[1:]
    try:
        args = parse_line(line)
        report = check_cell(cell, history, ip.user_ns, args.exercise, args.strict_shapes)
    except UsageError as e:
        print(f"ninjagrad: {e}")
        report = None
    ip.run_cell(cell, store_history=False)
    return report


def load_ipython_extension(ip):
    ip.register_magic_function(ninjagrad_magic, magic_kind="cell", magic_name="ninjagrad")
