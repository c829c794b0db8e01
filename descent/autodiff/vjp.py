"""The one table of vector-Jacobian products: for every op, the cotangents of its inputs given the
cotangent `g` of its output. Rules build ordinary graph ops, so the backward pass fuses and
replays like the forward pass, and gradients of gradients work where the rules are differentiable."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from descent.graph import indexing, linalg, ops, reductions
from descent.graph.array import Array
from descent.graph.node import Node
from descent.graph.view import numel

Rule = Callable[[Array, Node, list[Array], Array], list[Array | None]]
# float32 is the one float dtype, so a cast makes or takes an integer or bool: no gradient either way
NO_GRADIENT = ("lt", "le", "gt", "ge", "eq", "ne", "isnan", "isinf", "isfinite", "logical_and", "logical_or",
               "logical_not", "bitwise_and", "bitwise_or", "bitwise_xor", "bitwise_not", "floor_divide", "sign",
               "floor", "ceil", "trunc", "round", "cast", "stop_gradient", "uniform", "normal", "arange", "const",
               "read")


def _split_ties(g: Array, a: Array, b: Array, a_loses: Array, b_loses: Array) -> list[Array]:
    """maximum/minimum, as PyTorch: an operand takes the gradient unless it loses, ties split it evenly,
    and where either is NaN (so neither loses) both take it."""
    tie = ops.eq(a, b)
    left = ops.where(a_loses, 0.0, ops.where(tie, g * 0.5, g))
    right = ops.where(b_loses, 0.0, ops.where(tie, g * 0.5, g))
    return [left, right]


def _atan2_gradients(g: Array, a: Array, b: Array) -> list[Array]:
    """d atan2(a, b) = (b da - a db) / (a^2 + b^2); zero at the origin, as PyTorch's (not 0 / 0)."""
    squared = a * a + b * b
    origin = ops.eq(squared, 0.0)
    scale = ops.where(origin, 0.0, g / ops.where(origin, 1.0, squared))
    return [scale * b, -(scale * a)]


def _pow_gradients(g: Array, a: Array, b: Array, y: Array) -> list[Array]:
    """d a**b = b a**(b-1) da + a**b log(a) db: da is zero where b = 0, as PyTorch's (not 0 * inf at
    a = 0); db is zero where a <= 0, where log(a) is undefined (PyTorch: NaN for a < 0, -inf or inf at 0)."""
    positive = ops.gt(a, 0.0)
    return [ops.where(ops.eq(b, 0.0), 0.0, g * b * ops.pow(a, b - 1.0)),
            ops.where(positive, g * y * ops.log(ops.where(positive, a, 1.0)), 0.0)]


def _swap_last(x: Array) -> Array:
    axes = list(range(x.ndim))
    axes[-2], axes[-1] = axes[-1], axes[-2]
    return ops.transpose(x, axes)


ELEMENTWISE_RULES: dict[str, Rule] = {
    "add": lambda g, n, x, y: [g, g],
    "sub": lambda g, n, x, y: [g, -g],
    "mul": lambda g, n, x, y: [g * x[1], g * x[0]],
    "div": lambda g, n, x, y: [g / x[1], -(g * y) / x[1]],
    "remainder": lambda g, n, x, y: [g, -(g * ops.floor_divide(x[0], x[1]))],
    "pow": lambda g, n, x, y: _pow_gradients(g, x[0], x[1], y),
    "maximum": lambda g, n, x, y: _split_ties(g, x[0], x[1], ops.lt(x[0], x[1]), ops.gt(x[0], x[1])),
    "minimum": lambda g, n, x, y: _split_ties(g, x[0], x[1], ops.gt(x[0], x[1]), ops.lt(x[0], x[1])),
    "where": lambda g, n, x, y: [None, ops.where(x[0], g, 0.0), ops.where(x[0], 0.0, g)],
    "neg": lambda g, n, x, y: [-g],
    "contiguous": lambda g, n, x, y: [g],
    "abs": lambda g, n, x, y: [g * ops.where(ops.gt(x[0], 0), 1.0, ops.where(ops.lt(x[0], 0), -1.0, 0.0))],
    "exp": lambda g, n, x, y: [g * y],
    "log": lambda g, n, x, y: [g / x[0]],
    "log1p": lambda g, n, x, y: [g / (x[0] + 1.0)],
    "exp2": lambda g, n, x, y: [g * y * math.log(2.0)],
    "expm1": lambda g, n, x, y: [g * (y + 1.0)],
    "log2": lambda g, n, x, y: [g / (x[0] * math.log(2.0))],
    "log10": lambda g, n, x, y: [g / (x[0] * math.log(10.0))],
    "sinh": lambda g, n, x, y: [g * ops.cosh(x[0])],
    "cosh": lambda g, n, x, y: [g * ops.sinh(x[0])],
    "asin": lambda g, n, x, y: [g * ops.rsqrt(1.0 - x[0] * x[0])],
    "acos": lambda g, n, x, y: [-(g * ops.rsqrt(1.0 - x[0] * x[0]))],
    "atan": lambda g, n, x, y: [g / (x[0] * x[0] + 1.0)],
    "atan2": lambda g, n, x, y: _atan2_gradients(g, x[0], x[1]),
    "sqrt": lambda g, n, x, y: [g * 0.5 / y],
    "rsqrt": lambda g, n, x, y: [g * -0.5 * y * y * y],
    "sin": lambda g, n, x, y: [g * ops.cos(x[0])],
    "cos": lambda g, n, x, y: [-(g * ops.sin(x[0]))],
    "tan": lambda g, n, x, y: [g * (y * y + 1.0)],
    "tanh": lambda g, n, x, y: [g * (1.0 - y * y)],
    "sigmoid": lambda g, n, x, y: [g * y * (1.0 - y)],
    "erf": lambda g, n, x, y: [g * (2.0 / math.sqrt(math.pi)) * ops.exp(-(x[0] * x[0]))],
    "relu": lambda g, n, x, y: [ops.where(ops.le(x[0], 0), 0.0, g)],
}


def unbroadcast(g: Array, shape: tuple[int, ...]) -> Array:
    """g summed down to `shape`, which broadcasts to g's: the cotangent of an operand that was broadcast."""
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + k for k, s in enumerate(shape) if s == 1 and g.shape[lead + k] != 1)
    return ops.reshape(reductions.sum(g, axes, keepdims=True), shape) if axes else g


def _place(g: Array, axis: int, start: int, step: int, length: int) -> Array:
    """Put g's elements along `axis` at positions start + j * step of a zero array of `length`."""
    count = g.shape[axis]
    if step > 1:
        shape = g.shape[: axis + 1] + (1,) + g.shape[axis + 1 :]
        widths = [(0, 0)] * (g.ndim + 1)
        widths[axis + 1] = (0, step - 1)
        g = ops.pad(ops.reshape(g, shape), widths)
        g = ops.reshape(g, g.shape[:axis] + (count * step,) + g.shape[axis + 2 :])
        g = ops.getitem(g, (slice(None),) * axis + (slice(0, (count - 1) * step + 1),))
    widths = [(0, 0)] * g.ndim
    widths[axis] = (start, length - start - g.shape[axis])
    return ops.pad(g, widths)


def _window_rule(g: Array, parent: Array, starts: tuple, steps: tuple) -> Array:
    for axis, (start, step) in enumerate(zip(starts, steps)):
        if step < 0:
            g = ops.getitem(g, (slice(None),) * axis + (slice(None, None, -1),))
            start, step = start + (g.shape[axis] - 1) * step, -step
        g = _place(g, axis, start, step, parent.shape[axis])
    return g


def _windows_rule(g: Array, parent: Array, kernel: tuple, stride: tuple, dilation: tuple) -> Array:
    """Sum every window's cotangent back onto the input positions it read (col2im). Windows that
    tile the input (stride = kernel, no dilation) read each position at most once: a view suffices."""
    spatial = len(kernel)
    lead = parent.ndim - spatial
    if tuple(stride) == tuple(kernel) and all(d == 1 for d in dilation):
        outputs = g.shape[lead : lead + spatial]
        interleaved = tuple(range(lead)) + tuple(a for k in range(spatial) for a in (lead + k, lead + spatial + k))
        tiles = ops.reshape(ops.transpose(g, interleaved),
                            g.shape[:lead] + tuple(o * k for o, k in zip(outputs, kernel)))
        rest = [(0, 0)] * lead + [(0, parent.shape[lead + k] - outputs[k] * kernel[k]) for k in range(spatial)]
        return ops.pad(tiles, rest) if any(hi for _, hi in rest) else tiles
    total = None
    for offsets in np.ndindex(*kernel):
        part = ops.getitem(g, (slice(None),) * (lead + spatial) + tuple(int(k) for k in offsets))
        for k, offset in enumerate(offsets):
            part = _place(part, lead + k, int(offset) * dilation[k], stride[k], parent.shape[lead + k])
        total = part if total is None else total + part
    return total


def _view_rule(g: Array, node: Node, parent: Array) -> Array:
    op = node.attrs
    if op.kind == "reshape":
        return ops.reshape(g, parent.shape)
    if op.kind == "permute":
        return ops.transpose(g, tuple(int(a) for a in np.argsort(op.args)))
    if op.kind == "expand":
        return unbroadcast(g, parent.shape)
    if op.kind == "window":
        return _window_rule(g, parent, *op.args)
    if op.kind == "pad":
        widths, _ = op.args
        if numel(parent.shape) == 0:  # an empty part (of a concat): slicing out nothing is refused
            return ops.broadcast_to(g.scope.constant(0, g.dtype), parent.shape)
        return ops.getitem(g, tuple(slice(lo, lo + size) for (lo, _), size in zip(widths, parent.shape)))
    if op.kind == "windows":
        return _windows_rule(g, parent, *op.args)
    raise NotImplementedError(f"no gradient rule for view kind {op.kind!r}")


def _reduce_rule(g: Array, node: Node, x: Array, y: Array) -> Array | None:
    kind = node.attrs["op"]
    if kind.startswith("arg"):
        return None
    spread = ops.broadcast_to(g, x.shape)
    if kind == "sum":
        return spread
    if kind == "prod":
        return spread * _product_of_others(x, node.attrs["axes"], ops.broadcast_to(y, x.shape))
    if kind == "logsumexp":
        return spread * ops.exp(x - ops.broadcast_to(y, x.shape))
    extreme = ops.broadcast_to(y, x.shape)
    hit = ops.astype(ops.logical_or(ops.eq(x, extreme), ops.logical_and(ops.isnan(x), ops.isnan(extreme))), g.dtype)
    ties = reductions.sum(hit, node.attrs["axes"], keepdims=True)
    return spread * hit / ops.broadcast_to(ties, x.shape)


def _product_of_others(x: Array, axes: tuple[int, ...], product: Array) -> Array:
    """For each element, the product of the other elements it is reduced with: product / x where x is
    not zero (0 where another element is, and through `product` its derivative with respect to that
    zero, for second order); where it is, the product of the nonzero others if it is the only zero, else 0."""
    zero = ops.eq(x, 0.0)
    ones_for_zeros = ops.where(zero, 1.0, x)
    zeros = ops.broadcast_to(reductions.sum(ops.astype(zero, x.dtype), axes, keepdims=True), x.shape)
    nonzero = ops.broadcast_to(reductions.prod(ones_for_zeros, axes, keepdims=True), x.shape)
    return ops.where(zero, ops.where(ops.eq(zeros, 1.0), nonzero, 0.0), product / ones_for_zeros)


def vjp(g: Array, node: Node, inputs: list[Array], output: Array) -> list[Array | None]:
    """Cotangents of `inputs` (for a view: of its parent) given the cotangent g of `output`."""
    if node.op in NO_GRADIENT:
        return [None] * len(inputs)
    if node.op in ELEMENTWISE_RULES:
        return ELEMENTWISE_RULES[node.op](g, node, inputs, output)
    if node.op == "view":
        return [_view_rule(g, node, inputs[0])]
    if node.op == "reduce":
        return [_reduce_rule(g, node, inputs[0], output)]
    if node.op == "matmul":
        a, b = inputs
        return [linalg.matmul(g, _swap_last(b)), linalg.matmul(_swap_last(a), g)]
    if node.op == "gather":
        x, indices = inputs
        return [indexing.scatter_add(g, indices, x.shape[node.attrs["axis"]], node.attrs["axis"]), None]
    if node.op == "scatter_add":
        values, indices = inputs
        return [indexing.take(g, indices, node.attrs["axis"]), None]
    raise NotImplementedError(f"no gradient rule for op {node.op!r}")


def ops_with_rules() -> set[str]:
    """Every op name this table covers (views by kind, reductions by kind)."""
    return set(NO_GRADIENT) | set(ELEMENTWISE_RULES) | {"view", "reduce", "matmul", "gather", "scatter_add"}
