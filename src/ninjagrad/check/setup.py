"""The setup section of a forward script: where its inputs come from, marked param(...) or data(...).

A forward script may open with a setup section that creates its own inputs, so that any script is an
exercise without a model behind it:

    B, T, C = 4, 8, 16                       # plain numbers: constants the forward may read
    x = param(torch.randn(B, T, C))          # param: a leaf that gets a gradient (d<name> is judged)
    Y = data(torch.randint(0, C, (B, T)))    # data: an input without a gradient
    h = torch.tanh(x)                        # the forward: `name = expression`, one per line ...
    loss = F.cross_entropy(h.view(-1, C), Y.view(-1))   # ... ending with a scalar `loss`

The setup section is every top-level statement up to and including the last one that calls param(...)
or data(...). It is ordinary Python, run once with torch's generator seeded (`--seed`); every tensor
it leaves behind must be marked, so that nothing becomes an input by accident. Parameters are rounded
to float32 (the learner's precision); the float64 trace that tells rounding from bugs starts from the
very same values.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass

import torch

from ..errors import UsageError
from .statements import MARKS, describe_exc, error_line, setup_end, writes_of


@dataclass
class SetupSection:
    """The statements before the forward proper, compiled as one block."""
    filename: str
    code: object  # compiled module of the setup statements
    linenos: dict  # name -> line of the statement that last assigned it (for messages)
    end: int  # index of the first forward statement in the module's body


def split_setup(tree: ast.Module, filename: str) -> SetupSection | None:
    """The setup section of a parsed script, or None when it has none (a built-in exercise's model
    provides the inputs)."""
    end = setup_end(tree)
    if end == 0:
        return None
    body = tree.body[:end]
    linenos = {}
    for node in body:
        for name in writes_of(node):
            linenos[name] = node.lineno
    code = compile(ast.Module(body, type_ignores=[]), filename, "exec")
    return SetupSection(filename, code, linenos, end)


def run_setup(section: SetupSection, namespace: dict, seed: int, device: str = "cpu"):
    """Run the setup in `namespace`; return (params, data, constants) it created.

    params: floating tensors marked param(...), as float32; data: tensors marked data(...);
    constants: numbers (and tuples or lists of them) the forward may read."""
    marked: dict[int, str] = {}

    def mark(kind):
        def fn(t, *rest):
            if rest or not torch.is_tensor(t):
                raise UsageError(f"{section.filename}: {kind}(...) takes one tensor, e.g. "
                                 f"{kind}(torch.randn(4, 8)); got {type(t).__name__}")
            if kind == "param" and not t.is_floating_point():
                raise UsageError(f"{section.filename}: param(...) needs a floating-point tensor (it gets a "
                                 f"gradient); mark integer inputs such as targets with data(...)")
            marked[id(t)] = kind
            return t
        return fn

    ns = dict(namespace)
    ns.update(param=mark("param"), data=mark("data"), __name__="__ninjagrad_setup__")
    before = set(ns)
    with torch.random.fork_rng(devices=[]):  # seeded here; the caller's random state is left alone
        torch.manual_seed(seed)
        try:
            exec(section.code, ns)
        except UsageError:
            raise
        except Exception as e:  # noqa: BLE001 -- any error in the script's setup is the script's
            line = error_line(e, section.filename, 0)
            raise UsageError(f"{section.filename}:{line}: the setup section raised {describe_exc(e)}") from None
    params, data, constants = {}, {}, {}
    for name, value in ns.items():
        if name in MARKS or name.startswith("__") or (name in before and ns[name] is namespace.get(name)):
            continue
        line = section.linenos.get(name, 0)
        if torch.is_tensor(value):
            kind = marked.get(id(value))
            if kind is None:
                raise UsageError(f"{section.filename}:{line}: `{name}` is a tensor the setup does not mark; "
                                 f"wrap it in param(...) (it gets a gradient) or data(...) (it does not)")
            if kind == "param":
                params[name] = value.detach().to(device=device, dtype=torch.float32)
            else:
                dtype = torch.float32 if value.is_floating_point() else value.dtype  # float64 comes later
                data[name] = value.detach().to(device=device, dtype=dtype)
        elif isinstance(value, (bool, int, float, str)) or (
                isinstance(value, (tuple, list)) and all(isinstance(v, (int, float)) for v in value)):
            constants[name] = value
        elif callable(value) or type(value).__name__ == "module" or isinstance(value, torch.Generator):
            constants[name] = value  # helpers the setup imported or defined, a generator it seeded
        else:
            raise UsageError(f"{section.filename}:{line}: `{name}` is a {type(value).__name__}; the setup may "
                             f"leave tensors marked param(...)/data(...) and plain numbers; `del {name}` at its end")
    if not params:
        raise UsageError(f"{section.filename}: the setup marks no parameter; wrap the inputs that get a gradient "
                         "in param(...), e.g. x = param(torch.randn(4, 8))")
    return params, data, constants
