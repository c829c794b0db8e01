"""Reductions over any set of axes, and the softmax family built from them."""

from __future__ import annotations

from collections.abc import Sequence

from descent.errors import ShapeError, at_user_line
from descent.graph import ops, split
from descent.graph.array import Array, takes_array
from descent.graph.dtype import bool_, float32, int32
from descent.graph.view import numel

Axes = int | Sequence[int] | None


def _axes(x: Array, axis: Axes, op: str) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(x.ndim))
    axes = ops.axis_tuple(axis)
    if x.ndim == 0 and set(axes) <= {0, -1}:  # the one "axis" of a scalar, as numpy and torch allow
        return ()
    normalized = tuple(sorted({ops._axis(a, x.ndim, op) for a in axes}))
    if len(normalized) != len(axes):
        raise ShapeError(at_user_line(f"{op}: repeated axis in {axis}"))
    return normalized


def reduce(op: str, x: Array, axis: Axes = None, keepdims: bool = False) -> Array:
    """Fold `x` over `axis` with one of sum, prod, max, min, argmax, argmin, any, all, logsumexp."""
    axes = _axes(x, axis, op)
    empty = numel(tuple(x.shape[a] for a in axes)) == 0
    if empty and op not in _EMPTY:
        raise ShapeError(at_user_line(f"{op}: cannot reduce over an empty axis of shape {x.shape}: {op} has no "
                                      "value for no elements (numpy raises too)"))
    identity = _EMPTY.get(op)
    if op in ("any", "all"):  # max / min of the truth values
        x, op = (x if x.dtype == bool_ else ops.ne(x, 0)), {"any": "max", "all": "min"}[op]
    boolean = x.dtype == bool_ and op in ("max", "min")  # any / all: bool, as numpy
    if x.dtype == bool_:
        x = ops.astype(x, int32)
    kept = tuple(1 if a in axes else size for a, size in enumerate(x.shape))
    dtype = int32 if op.startswith("arg") else x.dtype
    if empty:
        result = ops.broadcast_to(x.scope.constant(identity, dtype), kept)
    elif not axes:
        result = x if not op.startswith("arg") else ops.astype(ops.mul(x, 0), int32)
    elif op == "sum" and (parts := _chunks(x, axes)) > 1:
        result = ops.reshape(_two_stage_sum(x, axes, parts), kept)
    else:
        result = x.scope.add("reduce", kept, dtype, (x.node_id,), {"op": op, "axes": axes})
    if boolean:
        result = ops.astype(result, bool_)
    if keepdims:
        return result
    return ops.reshape(result, tuple(size for a, size in enumerate(x.shape) if a not in axes))


# the value over no elements, as numpy and scipy (any and all as the ints their bools are folded in)
_EMPTY = {"sum": 0, "prod": 1, "logsumexp": float("-inf"), "any": 0, "all": 1}


def _chunks(x: Array, axes: tuple[int, ...]) -> int:
    """Partial sums for a long reduction, each over whole slices of the axes after the first (a
    conv bias gradient: whole images) where that keeps enough of them."""
    extent = numel(tuple(x.shape[a] for a in axes))
    unit = numel(tuple(x.shape[a] for a in axes[1:]))
    return split.chunks(x.size // extent, extent, split.REDUCE_OUTPUTS, split.REDUCE_MIN_CHUNK, unit)


def _two_stage_sum(x: Array, axes: tuple[int, ...], parts: int) -> Array:
    """sum over `axes` as partial sums over `parts` chunks of the folded elements, then their sum."""
    kept_axes = [a for a in range(x.ndim) if a not in axes]
    kept_shape = tuple(x.shape[a] for a in kept_axes)
    extent = numel(tuple(x.shape[a] for a in axes))
    moved = ops.transpose(x, kept_axes + list(axes))
    partial = reduce("sum", ops.reshape(moved, kept_shape + (parts, extent // parts)), -1)
    return reduce("sum", partial, -1)


@takes_array
def sum(x: Array, axis: Axes = None, keepdims: bool = False) -> Array:  # noqa: A001
    """Sum over `axis` (all axes by default)."""
    return reduce("sum", x, axis, keepdims)


@takes_array
def prod(x: Array, axis: Axes = None, keepdims: bool = False) -> Array:
    """Product over `axis`."""
    return reduce("prod", x, axis, keepdims)


@takes_array
def cumsum(x: Array, axis: int | None = None) -> Array:
    """Running sums along `axis` (of the flattened array by default), as numpy's; bools count as int32."""
    return _cumulative("sum", x, axis)


@takes_array
def cumprod(x: Array, axis: int | None = None) -> Array:
    """Running products along `axis` (of the flattened array by default), as numpy's."""
    return _cumulative("prod", x, axis)


SCAN_BLOCK = 32  # elements a running fold sums directly; longer axes go by blocks and their totals


def _cumulative(op: str, x: Array, axis: int | None) -> Array:
    """A running fold as views and reductions: the axis moved last, then `_scan`."""
    ops._scope_of(f"cum{op}", (x,))
    x = ops.astype(x, int32) if x.dtype == bool_ else x
    if axis is None or (x.ndim == 0 and axis in (0, -1)):  # a scalar's running fold is 1-d, as numpy's
        x, axis = ops.reshape(x, (x.size,)), 0
    axis = ops._axis(axis, x.ndim, f"cum{op}")
    if x.size == 0:
        return x
    order = [a for a in range(x.ndim) if a != axis] + [axis]
    return ops.transpose(_scan(op, ops.transpose(x, order)), [order.index(a) for a in range(x.ndim)])


def _scan(op: str, x: Array) -> Array:
    """The running `op` along the last axis. Up to SCAN_BLOCK elements, each output folds its window
    of the input padded with the identity in front (one reduction over a view); longer axes are
    scanned in blocks, then each block is combined with the running fold of the blocks before it."""
    n = x.shape[-1]
    identity = _EMPTY[op]
    front = [(0, 0)] * (x.ndim - 1)
    if n <= 1:
        return x
    if n <= SCAN_BLOCK:
        return reduce(op, ops.windows(ops.pad(x, front + [(n - 1, 0)], identity), (n,), (1,), (1,)), -1)
    blocks = -(-n // SCAN_BLOCK)
    padded = ops.pad(x, front + [(0, blocks * SCAN_BLOCK - n)], identity)
    local = _scan(op, ops.reshape(padded, x.shape[:-1] + (blocks, SCAN_BLOCK)))
    carried = _scan(op, local[..., -1])
    before = ops.expand_dims(ops.pad(carried[..., :-1], front + [(1, 0)], identity), -1)
    combined = local + before if op == "sum" else local * before
    return ops.reshape(combined, x.shape[:-1] + (blocks * SCAN_BLOCK,))[..., :n]


@takes_array
def max(x: Array, axis: Axes = None, keepdims: bool = False) -> Array:  # noqa: A001
    """Largest element over `axis`."""
    return reduce("max", x, axis, keepdims)


@takes_array
def min(x: Array, axis: Axes = None, keepdims: bool = False) -> Array:  # noqa: A001
    """Smallest element over `axis`."""
    return reduce("min", x, axis, keepdims)


@takes_array
def any(x: Array, axis: Axes = None, keepdims: bool = False) -> Array:  # noqa: A001
    """Whether any element over `axis` is true (non-zero; NaN counts), as numpy: False over none."""
    return reduce("any", x, axis, keepdims)


@takes_array
def all(x: Array, axis: Axes = None, keepdims: bool = False) -> Array:  # noqa: A001
    """Whether every element over `axis` is true (non-zero; NaN counts), as numpy: True over none."""
    return reduce("all", x, axis, keepdims)


@takes_array
def mean(x: Array, axis: Axes = None, keepdims: bool = False) -> Array:
    """Arithmetic mean over `axis`, in float32 (NaN over no elements, as numpy)."""
    count = numel(tuple(x.shape[a] for a in _axes(x, axis, "mean")))
    total = sum(ops.astype(x, float32), axis, keepdims)
    if count == 0:
        return ops.broadcast_to(x.scope.constant(float("nan")), total.shape)
    return ops.mul(total, 1.0 / count)


@takes_array
def var(x: Array, axis: Axes = None, keepdims: bool = False) -> Array:
    """Population variance over `axis` (numpy's default ddof=0)."""
    centred = x - mean(x, axis, keepdims=True)
    return mean(centred * centred, axis, keepdims)


@takes_array
def std(x: Array, axis: Axes = None, keepdims: bool = False) -> Array:
    """Population standard deviation over `axis`; its gradient is zero where it is zero (a constant
    row), as PyTorch's, not 0 * inf."""
    variance = var(x, axis, keepdims)
    constant = ops.eq(variance, 0.0)
    return ops.where(constant, 0.0, ops.sqrt(ops.where(constant, 1.0, variance)))


def _arg(op: str, x: Array, axis: int | None, keepdims: bool) -> Array:
    if axis is not None and not hasattr(axis, "__index__"):
        raise TypeError(at_user_line(f"{op}: axis must be one integer or None, as numpy's, got {axis!r}"))
    if axis is None:
        flat = ops.reshape(x, (x.size,))
        result = reduce(op, flat, 0, keepdims=False)
        return ops.reshape(result, (1,) * x.ndim) if keepdims else result
    return reduce(op, x, axis, keepdims)


@takes_array
def argmax(x: Array, axis: int | None = None, keepdims: bool = False) -> Array:
    """Index of the first largest element along `axis` (of the flattened array by default)."""
    return _arg("argmax", x, axis, keepdims)


@takes_array
def argmin(x: Array, axis: int | None = None, keepdims: bool = False) -> Array:
    """Index of the first smallest element along `axis`."""
    return _arg("argmin", x, axis, keepdims)


@takes_array
def logsumexp(x: Array, axis: Axes = None, keepdims: bool = False) -> Array:
    """log(sum(exp(x))) in one pass: the reduction carries (running max, sum of exp(x - max))."""
    return reduce("logsumexp", ops.astype(x, float32), axis, keepdims)


def _shift(x: Array, axis: Axes, op: str) -> Array:
    """The max along `axis`, kept, with no gradient: the shift changes nothing, and max's rule needs x
    recomputed bit for bit in another kernel, which a driver free to regroup float arithmetic does not
    promise. Over an empty axis it is 0: the softmax of nothing is empty, as PyTorch's."""
    axes = _axes(x, axis, op)
    if numel(tuple(x.shape[a] for a in axes)) == 0:
        kept = tuple(1 if a in axes else size for a, size in enumerate(x.shape))
        return ops.broadcast_to(x.scope.constant(0.0), kept)
    return ops.stop_gradient(max(x, axis, keepdims=True))


@takes_array
def softmax(x: Array, axis: int = -1) -> Array:
    """exp(x - max) / sum(exp(x - max)) along `axis`: stable, and exact to an ulp for large x. Integers
    are taken as float32 (their difference from the max would wrap)."""
    x = ops.astype(x, float32)
    shifted = ops.exp(x - _shift(x, axis, "softmax"))
    return shifted / sum(shifted, axis, keepdims=True)


@takes_array
def log_softmax(x: Array, axis: int = -1) -> Array:
    """(x - max) - log(sum(exp(x - max))) along `axis`: subtracting the max first keeps large logits
    exact (x - logsumexp(x) loses their low bits: 0.02 off at 1e6). Integers are taken as float32."""
    x = ops.astype(x, float32)
    shifted = x - _shift(x, axis, "log_softmax")
    return shifted - ops.log(sum(ops.exp(shifted), axis, keepdims=True))
