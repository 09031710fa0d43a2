"""How often `ninjagrad check` agrees with an independent float64 check, on exercise-1 files.

    python tools/agreement.py NAMES_TXT FILE.py [FILE.py ...]

The independent check shares no code with ninjagrad: it rebuilds the lecture's forward here in float64,
takes autograd's gradients, and runs each file's top-level statements in order (a line that does not
parse is left out). Right after the last statement that writes `d<name>`, that value is compared with
autograd's (within 1e-5 of the gradient's largest magnitude, in its shape or one that gives its values
when broadcast, as the lecture's cmp compares) and replaced by autograd's, so one mistake does not
cascade. A gradient is "right" or not on each side (`exact`/`rounding` count as right for ninjagrad);
gradients that neither side finds, and the ones a file names other than `d<name>`, are left out.
Prints the agreement and every disagreement.
"""
from __future__ import annotations

import ast
import contextlib
import io
import json
import random
import subprocess
import sys
import warnings

import torch
import torch.nn.functional as F

NAMES = ["logprobs", "probs", "counts_sum_inv", "counts_sum", "counts", "norm_logits", "logit_maxes", "logits",
         "h", "W2", "b2", "hpreact", "bngain", "bnbias", "bnraw", "bnvar_inv", "bnvar", "bndiff2", "bndiff",
         "bnmeani", "hprebn", "embcat", "W1", "b1", "emb", "C"]
PARAMS = ("C", "W1", "b1", "W2", "b2", "bngain", "bnbias")
TOL = 1e-5


def lecture_batch(path: str) -> dict:
    """The lecture's data, initialisation and minibatch, in float64."""
    words = open(path, encoding="utf-8").read().splitlines()
    stoi = {s: i + 1 for i, s in enumerate(sorted(set("".join(words))))}
    stoi["."] = 0
    block_size = 3
    random.seed(42)
    random.shuffle(words)
    X, Y = [], []
    for w in words[: int(0.8 * len(words))]:
        context = [0] * block_size
        for ch in w + ".":
            X.append(context)
            Y.append(stoi[ch])
            context = context[1:] + [stoi[ch]]
    Xtr, Ytr = torch.tensor(X), torch.tensor(Y)
    vocab_size, n_embd, n_hidden, n = len(stoi), 10, 64, 32
    g = torch.Generator().manual_seed(2147483647)
    fan_in = n_embd * block_size
    p = {"C": torch.randn((vocab_size, n_embd), generator=g),
         "W1": torch.randn((fan_in, n_hidden), generator=g) * (5 / 3) / fan_in ** 0.5,
         "b1": torch.randn(n_hidden, generator=g) * 0.1,
         "W2": torch.randn((n_hidden, vocab_size), generator=g) * 0.1,
         "b2": torch.randn(vocab_size, generator=g) * 0.1,
         "bngain": torch.randn((1, n_hidden), generator=g) * 0.1 + 1.0,
         "bnbias": torch.randn((1, n_hidden), generator=g) * 0.1}
    ix = torch.randint(0, Xtr.shape[0], (n,), generator=g)
    return {**{k: v.double().requires_grad_() for k, v in p.items()}, "Xb": Xtr[ix], "Yb": Ytr[ix], "n": n,
            "Xtr": Xtr, "Ytr": Ytr, "batch_size": n, "vocab_size": vocab_size, "block_size": block_size,
            "n_hidden": n_hidden, "n_embd": n_embd, "stoi": stoi,
            "itos": {i: s for s, i in stoi.items()}, "words": words}


def forward(v: dict) -> dict:
    """The lecture's forward, step by step; every step's gradient kept."""
    n, s = v["n"], dict(v)
    s["emb"] = v["C"][v["Xb"]]
    s["embcat"] = s["emb"].view(s["emb"].shape[0], -1)
    s["hprebn"] = s["embcat"] @ v["W1"] + v["b1"]
    s["bnmeani"] = 1 / n * s["hprebn"].sum(0, keepdim=True)
    s["bndiff"] = s["hprebn"] - s["bnmeani"]
    s["bndiff2"] = s["bndiff"] ** 2
    s["bnvar"] = 1 / (n - 1) * s["bndiff2"].sum(0, keepdim=True)
    s["bnvar_inv"] = (s["bnvar"] + 1e-5) ** -0.5
    s["bnraw"] = s["bndiff"] * s["bnvar_inv"]
    s["hpreact"] = v["bngain"] * s["bnraw"] + v["bnbias"]
    s["h"] = torch.tanh(s["hpreact"])
    s["logits"] = s["h"] @ v["W2"] + v["b2"]
    s["logit_maxes"] = s["logits"].max(1, keepdim=True).values
    s["norm_logits"] = s["logits"] - s["logit_maxes"]
    s["counts"] = s["norm_logits"].exp()
    s["counts_sum"] = s["counts"].sum(1, keepdims=True)
    s["counts_sum_inv"] = s["counts_sum"] ** -1
    s["probs"] = s["counts"] * s["counts_sum_inv"]
    s["logprobs"] = s["probs"].log()
    s["loss"] = -s["logprobs"][range(n), v["Yb"]].mean()
    for k in NAMES:
        if k not in PARAMS:
            s[k].retain_grad()
    s["loss"].backward()
    return s


def statements(src: str) -> list[ast.stmt]:
    """Top-level statements; a line that does not parse is blanked and the rest parsed again."""
    lines = src.split("\n")
    for _ in range(len(lines)):
        try:
            with warnings.catch_warnings():  # a learner's odd line is theirs to hear about, not this report's
                warnings.simplefilter("ignore", SyntaxWarning)
                return ast.parse("\n".join(lines)).body
        except SyntaxError as e:
            if not e.lineno or e.lineno > len(lines):
                return []
            lines[e.lineno - 1] = ""
    return []


def base_name(node: ast.expr) -> str | None:
    while isinstance(node, (ast.Subscript, ast.Attribute)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def writes(stmt: ast.stmt) -> set[str]:
    """Names a statement assigns, assigns into, or changes with an in-place method (name_(...))."""
    out = set()
    for node in ast.walk(stmt):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            out.add(node.id)
        elif isinstance(node, (ast.Subscript, ast.Attribute)) and isinstance(node.ctx, ast.Store):
            out.add(base_name(node.value))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr.endswith("_"):
            out.add(base_name(node.func.value))
    return out - {None}


def right(value, ref: torch.Tensor) -> bool:
    if not torch.is_tensor(value) or not value.is_floating_point():
        return False
    try:
        v, r = torch.broadcast_tensors(value.double(), ref)
    except RuntimeError:
        return False
    if v.shape != ref.shape and value.numel() != ref.numel():
        return False
    scale = max(ref.abs().max().item(), 1e-30)
    return bool(torch.isfinite(v).all()) and (v - r).abs().max().item() <= TOL * scale


def independent(path: str, space: dict, refs: dict) -> dict[str, str]:
    """d<name> -> right / wrong / error / missing, teacher-forced statement by statement."""
    stmts = statements(open(path, encoding="utf-8").read())
    last = {w[1:]: i for i, s in enumerate(stmts) for w in writes(s) if w.startswith("d") and w[1:] in refs}
    ns = dict(space)
    out = {x: "missing" for x in NAMES}
    for i, s in enumerate(stmts):
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", SyntaxWarning)
                    exec(compile(ast.Module([s], []), path, "exec"), ns)
            failed = False
        except Exception:  # noqa: BLE001 -- a learner's statement that raises is a result
            failed = True
        for x in [x for x, j in last.items() if j == i]:
            out[x] = "error" if failed or "d" + x not in ns else ("right" if right(ns["d" + x], refs[x]) else "wrong")
            ns["d" + x] = refs[x].clone()
    return out


def checker(names_txt: str, files: list[str]) -> dict[str, dict]:
    run = subprocess.run([sys.executable, "-m", "ninjagrad", "check", *files, "--exercise", "1", "--json",
                          "--data", names_txt], capture_output=True, text=True)
    out = {}
    for line in run.stdout.splitlines():
        item = json.loads(line)
        out[item["file"]] = {r["name"]: (r["verdict"], r.get("dvar")) for r in item.get("results", [])}
    return out


def main(names_txt: str, files: list[str]):
    torch.set_default_dtype(torch.float64)
    s = forward(lecture_batch(names_txt))
    refs = {k: s[k].grad.detach().clone() for k in NAMES}
    space = {k: (v.detach() if torch.is_tensor(v) else v) for k, v in s.items()}
    space.update(torch=torch, F=F, cmp=lambda *a, **k: None)
    ours = checker(names_txt, files)
    agree, differ = 0, []
    for path in files:
        theirs = independent(path, space, refs)
        for name, mine in theirs.items():
            verdict, dvar = ours.get(path, {}).get(name, ("missing", None))
            if (dvar and dvar != "d" + name) or (mine == "missing" and verdict == "missing"):
                continue
            if (mine == "right") == (verdict in ("exact", "rounding")):
                agree += 1
            else:
                differ.append((path, name, mine, verdict))
    total = agree + len(differ)
    print(f"{agree} of {total} gradients agree ({100 * agree / max(total, 1):.2f}%), {len(files)} files")
    for path, name, mine, verdict in differ:
        print(f"  {path}: d{name}: independent {mine}, ninjagrad {verdict}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
