"""Graph rewrites the compiled engine hands inductor, each the same value to float32 rounding.

Inductor runs `Rewrites` on the step's graph (aten ops, after its own passes) just before it generates
code. Kept apart from compiled.py because importing inductor takes ~2 s, which only runs of the
compiled engine should pay.

    x ** -0.5  ->  rsqrt(x)          batchnorm's and layernorm's 1/std
    a @ b      ->  sum_k a b          batched products of small matrices (attention's), as loops
    tanh(x)    ->  a rational fit near 0, exp beyond  float32 only; within 3.5 ulp of tanh
"""
from __future__ import annotations

import torch
from torch._inductor.custom_graph_pass import CustomGraphPass

aten = torch.ops.aten

# tanh(x) ~ x P(x^2) / Q(x^2) near 0: the fit of tools/fit_tanh.py that engines/fast_step.c evaluates,
# Horner's coefficients from the constant term up.
TANH_P = (0.99999997955849318, 0.1338106156974242, 0.0034956303708691652, 2.0609761731129804e-05,
          1.3355576286382071e-08)
TANH_Q = (1.0, 0.46714377195989493, 0.025877144001049568, 0.00032857032057243506, 7.7769381794564071e-07)
TANH_SMALL = 0.55  # below it the rational fit; from it 1 - 2 / (exp(2|x|) + 1), which cancels near 0
TANH_BIG = 10.0  # |x| clamped here: tanh is 1 in float32 from 9.01, and exp(2|x|) would overflow from 44.4


def call(op, *args):
    """Run an aten op now: the `emit` that makes the functions below compute values (for tests)
    instead of graph nodes."""
    return op(*args)


def horner(emit, s, coeffs):
    """c0 + s (c1 + s (c2 + ...))"""
    acc = emit(aten.mul.Tensor, s, coeffs[-1])
    for c in reversed(coeffs[1:-1]):
        acc = emit(aten.mul.Tensor, emit(aten.add.Tensor, acc, c), s)
    return emit(aten.add.Tensor, acc, coeffs[0])


def tanh_float32(x, emit=call):
    """tanh(x) from one exp, one division and nine multiply-adds, where Sleef's vectorised tanh costs
    several times that (tanh was an eighth of the compiled WaveNet step, and GELU's a fifth of the
    transformer's). Below |x| = 0.55 the rational fit x P / Q, within 3.5 ulp of tanh; from there
    1 - 2 / (e + 1), e = exp(2|x|), within 1.5 ulp, and 0.6 from |x| = 2 on, where tanh's derivative
    1 - h^2 rests on h's last bits. The two share one division: r = x P / Q or 2 / (e + 1)."""
    s = emit(aten.mul.Tensor, x, x)
    a = emit(aten.abs.default, x)
    e = emit(aten.exp.default, emit(aten.mul.Tensor, emit(aten.clamp_max.default, a, TANH_BIG), 2.0))
    near_zero = emit(aten.lt.Scalar, a, TANH_SMALL)
    r = emit(aten.div.Tensor,
             emit(aten.where.ScalarOther, near_zero, emit(aten.mul.Tensor, x, horner(emit, s, TANH_P)), 2.0),
             emit(aten.where.self, near_zero, horner(emit, s, TANH_Q), emit(aten.add.Tensor, e, 1.0)))
    far = emit(aten.copysign.Tensor, emit(aten.add.Tensor, emit(aten.neg.default, r), 1.0), x)  # +-(1 - r)
    return emit(aten.where.self, near_zero, r, far)


def rsqrt(x, emit=call):
    """x ** -0.5 as rsqrt: inductor computes the per-channel 1/std again inside every loop that reads
    it, and its vectorised pow costs several times a square root (a third of the WaveNet's batchnorm
    loops' time)."""
    return emit(aten.rsqrt.default, x)


SMALL_BMM = 32  # a batched matmul whose three sizes are at most this is written out as loops


def small_bmm(a, b, emit=call):
    """a @ b for (n, M, K) @ (n, K, N) as sum_k a[:, :, k, None] * b[:, None, k, :]: BLAS pays a fixed
    cost per matrix, ~1 µs, that the transformer's 8 x 16 attention products of 128 heads never earn
    back (a seventh of its step); as loops inductor fuses them with the softmax around them."""
    product = emit(aten.mul.Tensor, emit(aten.unsqueeze.default, a, 3), emit(aten.unsqueeze.default, b, 1))
    return emit(aten.sum.dim_IntList, product, [2])  # (n, M, N)


def is_float32_tanh(node) -> bool:
    return node.target is aten.tanh.default and node.meta["val"].dtype == torch.float32


def is_inverse_sqrt(node) -> bool:
    return node.target is aten.pow.Tensor_Scalar and node.args[1] == -0.5


def is_small_bmm(node) -> bool:
    if node.target is not aten.bmm.default:
        return False
    _, M, K = node.args[0].meta["val"].shape
    N = node.args[1].meta["val"].shape[2]
    return max(M, K, N) <= SMALL_BMM


# (which nodes, what replaces them, how many of the node's first arguments that function takes)
REWRITES = [(is_float32_tanh, tanh_float32, 1), (is_inverse_sqrt, rsqrt, 1), (is_small_bmm, small_bmm, 2)]


class Rewrites(CustomGraphPass):
    """Replaces every node a rule of REWRITES matches with what the rule's function emits for it."""

    def __call__(self, graph: torch.fx.Graph):
        def emit(op, *args):
            node = graph.call_function(op, args)
            # inductor reads each node's fake value (shape, dtype): the op run on the inputs' fake values
            fakes = [a.meta["val"] if isinstance(a, torch.fx.Node) else a for a in args]
            with next(f for f in fakes if isinstance(f, torch.Tensor)).fake_mode:
                node.meta["val"] = op(*fakes)
            return node

        for node in list(graph.nodes):
            if node.op != "call_function":
                continue
            for matches, replace, arity in REWRITES:
                if matches(node):
                    with graph.inserting_before(node):
                        new = replace(*node.args[:arity], emit=emit)
                    node.replace_all_uses_with(new)
                    graph.erase_node(node)
                    break

    def uuid(self) -> str:
        return "ninjagrad-rewrites-7"  # part of inductor's cache key: change it when a rewrite changes
