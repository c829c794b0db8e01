"""Pooling over the last two axes of NCHW arrays (the last one of NCL): sliding-window views folded by
a max or a mean, no window ever copied; and nearest-neighbour upsampling, a broadcast view."""

from __future__ import annotations

import numpy as np

from descent.arguments import Pair, Single, pair, single
from descent.errors import ShapeError, at_user_line
from descent.graph import ops, reductions
from descent.graph.array import Array, takes_array
from descent.graph.conv import check_fits, height_of_one
from descent.graph.dtype import float32
from descent.graph.indexing import take


def pool_settings(op: str, kernel: Pair, stride: Pair | None, padding: Pair) -> tuple[tuple[int, int], ...]:
    """A pooling's kernel, stride (the kernel by default) and padding as pairs (a 1-D one's over a
    height of one). Padding is at most half the window, as PyTorch's: wider makes windows of padding only."""
    if op.lower().endswith("1d"):
        kernel, padding = (1, single(kernel, f"{op}: kernel")), (0, single(padding, f"{op}: padding", 0))
        stride = kernel if stride is None else (1, single(stride, f"{op}: stride"))
    else:
        kernel, padding = pair(kernel, f"{op}: kernel"), pair(padding, f"{op}: padding", 0)
        stride = kernel if stride is None else pair(stride, f"{op}: stride")
    if any(p > k // 2 for p, k in zip(padding, kernel)):
        shown = (padding[1], kernel[1]) if op.lower().endswith("1d") else (padding, kernel)
        raise ShapeError(at_user_line(f"{op}: padding {shown[0]} must be at most half the kernel {shown[1]}"))
    return kernel, stride, padding


@takes_array
def max_pool2d(x: Array, kernel: Pair, stride: Pair | None = None, padding: Pair = 0) -> Array:
    """Maximum over each window of the last two axes; padding reads -inf. As in PyTorch, a window's
    gradient goes to its first largest element (not split among ties)."""
    kernel, stride, padding = pool_settings("max_pool2d", kernel, stride, padding)
    check_fits("max_pool2d", x, kernel, padding, (1, 1))
    return _max_pool(x, kernel, stride, padding)


@takes_array
def avg_pool2d(x: Array, kernel: Pair, stride: Pair | None = None, padding: Pair = 0) -> Array:
    """Mean over each window of the last two axes; zero padding counts (PyTorch's default)."""
    kernel, stride, padding = pool_settings("avg_pool2d", kernel, stride, padding)
    check_fits("avg_pool2d", x, kernel, padding, (1, 1))
    return _avg_pool(x, kernel, stride, padding)


@takes_array
def adaptive_avg_pool2d(x: Array, output_size: Pair) -> Array:
    """Mean over windows that split the last two axes into `output_size` (as PyTorch's: window i of n
    over a length L spans floor(i L / n) to ceil((i + 1) L / n)). Where the sizes divide, it is
    avg_pool2d; else the windows overlap or differ in length, and each axis is pooled in turn by
    gathering its windows' elements."""
    out = pair(output_size, "adaptive_avg_pool2d: output_size")
    if x.ndim < 2:
        raise ShapeError(at_user_line(f"adaptive_avg_pool2d: needs at least 2 axes to pool, got shape {x.shape}"))
    sizes = x.shape[-2:]
    if 0 in sizes:
        raise ShapeError(at_user_line(f"adaptive_avg_pool2d: cannot pool an empty axis: the last two of {x.shape} "
                                      "must have elements (PyTorch refuses them too)"))
    if sizes[0] % out[0] == 0 and sizes[1] % out[1] == 0:
        kernel = (sizes[0] // out[0], sizes[1] // out[1])
        return _avg_pool(x, kernel, kernel, (0, 0))
    return _adaptive_mean(_adaptive_mean(ops.astype(x, float32), -2, out[0]), -1, out[1])


def _adaptive_mean(x: Array, axis: int, windows: int) -> Array:
    """Means over PyTorch's adaptive windows along `axis` (-2 or -1): each window's elements gathered,
    as many as the longest window has, the extra ones selected away (a product with 0 would spread an
    inf or NaN into every window)."""
    size = x.shape[axis]
    starts = np.arange(windows) * size // windows
    lengths = -(-(np.arange(1, windows + 1) * size) // windows) - starts
    offsets = np.arange(lengths.max())
    index = np.minimum(starts[:, None] + offsets, (starts + lengths - 1)[:, None]).astype(np.int32)
    trailing = (1,) * (-axis - 1)
    inside = (offsets < lengths[:, None]).reshape(index.shape + trailing)
    counts = lengths.astype(np.float32).reshape((windows,) + trailing)
    gathered = take(x, x.scope.constant(index), axis=x.ndim + axis)
    kept = ops.where(x.scope.constant(inside), gathered, 0.0)
    return reductions.sum(kept, axis=axis) / x.scope.constant(counts)


@takes_array
def upsample_nearest2d(x: Array, scale: Pair) -> Array:
    """Each element of the last two axes repeated `scale` times along each (PyTorch's interpolate with
    mode 'nearest' and an integer scale_factor): a view, no copy."""
    sh, sw = pair(scale, "upsample_nearest2d: scale", floats=True)
    if x.ndim < 2:
        raise ShapeError(at_user_line(f"upsample_nearest2d: needs at least 2 axes, got shape {x.shape}"))
    lead, (h, w) = x.shape[:-2], x.shape[-2:]
    repeated = ops.broadcast_to(ops.reshape(x, lead + (h, 1, w, 1)), lead + (h, sh, w, sw))
    return ops.reshape(repeated, lead + (h * sh, w * sw))


@takes_array
def max_pool1d(x: Array, kernel: Single, stride: Single | None = None, padding: Single = 0) -> Array:
    """Maximum over each window of the last axis; padding reads -inf, and a window's gradient goes
    to its first largest element, as in PyTorch."""
    kernel, stride, padding = pool_settings("max_pool1d", kernel, stride, padding)
    check_fits("max_pool1d", x, kernel[1:], padding[1:], (1,))
    return ops.squeeze(_max_pool(height_of_one(x, "max_pool1d"), kernel, stride, padding), -2)


@takes_array
def avg_pool1d(x: Array, kernel: Single, stride: Single | None = None, padding: Single = 0) -> Array:
    """Mean over each window of the last axis; zero padding counts (PyTorch's default)."""
    kernel, stride, padding = pool_settings("avg_pool1d", kernel, stride, padding)
    check_fits("avg_pool1d", x, kernel[1:], padding[1:], (1,))
    return ops.squeeze(_avg_pool(height_of_one(x, "avg_pool1d"), kernel, stride, padding), -2)


def _max_pool(x: Array, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]) -> Array:
    """Max pooling over the last two axes, settings already checked."""
    widths = [(0, 0)] * (x.ndim - 2) + [(padding[0], padding[0]), (padding[1], padding[1])]
    lowest = {"float32": float("-inf"), "int32": -(2**31), "uint32": 0, "bool": False}[x.dtype.name]
    patches = ops.windows(ops.pad(x, widths, lowest), kernel, stride, (1, 1))
    pooled = reductions.max(patches, axis=(-2, -1))

    def to_first_maximum(cotangent: Array) -> list[Array]:
        """The argmax shares the max's kernel (the scheduler merges them), so the forward pass reads
        each window once and the backward pass compares positions, not values."""
        first = reductions.reduce("argmax", patches, (-2, -1), keepdims=True)
        if x.dtype == float32 and any(padding):  # a window of -inf elements: its first, never the padding
            lowest = ops.eq(ops.reshape(pooled, pooled.shape + (1, 1)), float("-inf"))
            first = ops.where(lowest, x.scope.constant(_first_inside(x.shape[-2:], kernel, stride, padding)), first)
        positions = ops.reshape(x.scope.arange(kernel[0] * kernel[1]), kernel)
        spread = ops.reshape(cotangent, pooled.shape + (1, 1))
        return [ops.where(ops.eq(first, positions), spread, 0.0)]

    return x.scope.custom_gradient(pooled, (patches,), to_first_maximum)


def _first_inside(size: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int],
                  padding: tuple[int, int]) -> np.ndarray:
    """(OH, OW, 1, 1): the position in each padded window (row-major) of its first element inside the input."""
    firsts = []
    for length, k, step, pad in zip(size, kernel, stride, padding):
        starts = np.arange(0, length + 2 * pad - k + 1, step) - pad
        firsts.append(np.maximum(-starts, 0))
    return (firsts[0][:, None] * kernel[1] + firsts[1][None, :]).astype(np.int32)[:, :, None, None]


def _avg_pool(x: Array, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]) -> Array:
    """Average pooling over the last two axes, settings already checked."""
    widths = [(0, 0)] * (x.ndim - 2) + [(padding[0], padding[0]), (padding[1], padding[1])]
    patches = ops.windows(ops.pad(ops.astype(x, float32), widths), kernel, stride, (1, 1))
    return reductions.mean(patches, axis=(-2, -1))
