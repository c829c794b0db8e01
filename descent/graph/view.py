"""Zero-copy views: strided, optionally masked index maps from an array's flat index to its source's.

A view chain is a tuple of `View`s; the last one has the array's shape and is applied first. Each
`View` maps a multi-index of its shape to a flat index (`offset + sum(i_k * stride_k)`) in the
contiguous order of the shape before it, or of the source for the first. A masked view reads
`fill` wherever a coordinate falls outside its valid range: that is how padding stays a view.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from descent.errors import at_user_line

Shape = tuple[int, ...]
Mask = tuple[tuple[int, int], ...]


def contiguous_strides(shape: Shape) -> tuple[int, ...]:
    """Row-major strides of a shape, in elements."""
    strides = []
    step = 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


@dataclass(frozen=True)
class View:
    """A strided window: shape, strides (in elements, 0 to broadcast), offset, and an optional
    valid range per axis outside which the value is `fill`."""

    shape: Shape
    strides: tuple[int, ...]
    offset: int = 0
    mask: Mask | None = None
    fill: float = 0.0

    @staticmethod
    def contiguous(shape: Shape) -> View:
        return View(tuple(shape), contiguous_strides(shape), 0)

    @property
    def is_contiguous(self) -> bool:
        return self.offset == 0 and self.mask is None and all(
            size == 1 or stride == expected
            for size, stride, expected in zip(self.shape, self.strides, contiguous_strides(self.shape))
        )

    def bounds(self) -> Mask:
        return self.mask if self.mask is not None else tuple((0, size) for size in self.shape)


ViewChain = tuple[View, ...]


def read(chain: ViewChain, shape: Shape, source: np.ndarray) -> np.ndarray:
    """What a kernel loads through `chain` (of a view of `shape`; an empty chain reads the source in
    order) from `source`, as a numpy array: the host's copy of the index map, to check uploaded values."""
    flat_source = np.asarray(source).ravel()
    index = np.arange(numel(shape))
    filled = np.zeros(index.shape, bool)
    fills = np.zeros(index.shape, np.float64)
    for view in reversed(chain):
        index = np.where(filled, 0, index)  # a filled element's index leads nowhere
        coordinates = np.unravel_index(index, view.shape) if view.shape else ()
        if view.mask is not None:
            outside = ~filled & ~np.logical_and.reduce(
                [(c >= lo) & (c < hi) for c, (lo, hi) in zip(coordinates, view.mask)], axis=0)
            fills[outside], filled = view.fill, filled | outside
        index = view.offset + sum((c * stride for c, stride in zip(coordinates, view.strides)), np.zeros_like(index))
    values = flat_source[np.where(filled, 0, index)] if flat_source.size else np.zeros(index.shape, flat_source.dtype)
    return np.where(filled, fills, values).astype(flat_source.dtype).reshape(shape)


def numel(shape: Shape) -> int:
    return math.prod(shape)


def as_shape(shape: int | Sequence[int], what: str) -> Shape:
    """A shape from an integer or a sequence of integers; a float size is refused by name, as numpy's
    "'float' object cannot be interpreted as an integer" (2.5 used to become 2)."""
    sizes = (shape,) if isinstance(shape, int | np.integer) else tuple(shape)
    for size in sizes:
        if not isinstance(size, int | np.integer):
            raise TypeError(at_user_line(f"{what}: sizes must be integers, got {size!r} in {shape!r}"))
    return tuple(int(size) for size in sizes)


def simplify(chain: ViewChain) -> ViewChain:
    """Drop views that leave the flat index unchanged."""
    return tuple(view for view in chain if not view.is_contiguous)


def is_masked(chain: ViewChain) -> bool:
    return any(view.mask is not None for view in chain)


def _split(chain: ViewChain, shape: Shape) -> tuple[ViewChain, View]:
    """The chain below the view of `shape`, and that view (implicitly contiguous once simplified away)."""
    if chain and chain[-1].shape == tuple(shape):
        return chain[:-1], chain[-1]
    return chain, View.contiguous(shape)


def _with(top: View, shape: Shape, strides: tuple[int, ...], offset: int, mask: Mask | None,
          fill: float | None = None) -> View:
    """A view replacing `top`; a mask that hides nothing is dropped."""
    if mask is not None and all(lo <= 0 and hi >= size for (lo, hi), size in zip(mask, shape)):
        mask = None
    fill = top.fill if fill is None else fill
    return View(tuple(shape), tuple(strides), offset, mask, fill if mask is not None else 0.0)


def reshape(chain: ViewChain, shape: Shape, new_shape: Shape) -> ViewChain:
    """View `shape` as `new_shape` (same number of elements)."""
    rest, top = _split(chain, shape)
    if top.is_contiguous:
        return simplify(rest + (View.contiguous(new_shape),))
    kept = [(size, stride, bound) for size, stride, bound in zip(top.shape, top.strides, top.bounds()) if size != 1]
    dropped_valid = all(lo <= 0 < hi for size, (lo, hi) in zip(top.shape, top.bounds()) if size == 1)
    if dropped_valid and [size for size, _, _ in kept] == [size for size in new_shape if size != 1]:
        strides, mask, position = [], [], 0
        for size in new_shape:
            if size == 1:
                strides.append(0)
                mask.append((0, 1))
            else:
                strides.append(kept[position][1])
                mask.append(kept[position][2])
                position += 1
        view = _with(top, new_shape, tuple(strides), top.offset, tuple(mask) if top.mask else None)
        return simplify(rest + (view,))
    return simplify(chain + (View.contiguous(new_shape),))


def permute(chain: ViewChain, shape: Shape, axes: tuple[int, ...]) -> ViewChain:
    """Reorder the axes: axis k of the result is axis `axes[k]` of the input."""
    rest, top = _split(chain, shape)
    mask = tuple(top.bounds()[a] for a in axes) if top.mask else None
    view = _with(top, tuple(top.shape[a] for a in axes), tuple(top.strides[a] for a in axes), top.offset, mask)
    return simplify(rest + (view,))


def expand(chain: ViewChain, shape: Shape, new_shape: Shape) -> ViewChain:
    """Broadcast to `new_shape` (numpy rules, already checked): repeated axes get stride 0."""
    rest, top = _split(chain, shape)
    lead = len(new_shape) - len(shape)
    strides = [0] * lead
    mask = [(0, size) for size in new_shape[:lead]]
    for size, stride, (lo, hi), target in zip(top.shape, top.strides, top.bounds(), new_shape[lead:]):
        strides.append(stride if size == target else 0)
        mask.append((lo, hi) if size == target else ((0, target) if lo <= 0 < hi else (0, 0)))
    view = _with(top, new_shape, tuple(strides), top.offset, tuple(mask) if top.mask else None)
    return simplify(rest + (view,))


def _window_bounds(lo: int, hi: int, start: int, step: int, size: int) -> tuple[int, int]:
    """Result coordinates j (0 <= j < size) whose source coordinate start + j * step lies in [lo, hi)."""
    if step > 0:
        first = max(0, -(-(lo - start) // step))
        last = min(size, -(-(hi - start) // step))
    else:
        first = max(0, -(-(start - hi + 1) // -step))
        last = min(size, (start - lo) // -step + 1)
    return (first, max(first, last))


def window(chain: ViewChain, shape: Shape, starts: Shape, steps: Shape, new_shape: Shape) -> ViewChain:
    """Strided slicing: axis k keeps `new_shape[k]` elements from `starts[k]` every `steps[k]`."""
    rest, top = _split(chain, shape)
    offset = top.offset + sum(start * stride for start, stride in zip(starts, top.strides))
    strides = tuple(stride * step for stride, step in zip(top.strides, steps))
    mask = None
    if top.mask:
        mask = tuple(_window_bounds(lo, hi, start, step, size)
                     for (lo, hi), start, step, size in zip(top.bounds(), starts, steps, new_shape))
    return simplify(rest + (_with(top, new_shape, strides, offset, mask),))


def pad(chain: ViewChain, shape: Shape, widths: tuple[tuple[int, int], ...], value: float) -> ViewChain:
    """Grow each axis by (before, after) elements that read `value`."""
    rest, top = _split(chain, shape)
    if top.mask is not None and top.fill != value:
        rest, top = chain, View.contiguous(shape)
    new_shape = tuple(size + lo + hi for size, (lo, hi) in zip(shape, widths))
    offset = top.offset - sum(lo * stride for (lo, _), stride in zip(widths, top.strides))
    mask = tuple((b_lo + lo, b_hi + lo) for (b_lo, b_hi), (lo, _) in zip(top.bounds(), widths))
    return simplify(rest + (_with(top, new_shape, top.strides, offset, mask, float(value)),))


def window_count(size: int, kernel: int, stride: int, dilation: int) -> int:
    """How many windows of `kernel` elements, `dilation` apart, fit along `size` at steps of `stride`."""
    return (size - dilation * (kernel - 1) - 1) // stride + 1


def windows(chain: ViewChain, shape: Shape, kernel: Shape, stride: Shape, dilation: Shape) -> ViewChain:
    """Sliding windows over the trailing axes: (..., S1, S2) becomes (..., O1, O2, K1, K2) where
    element (o, k) is source element o * stride + k * dilation. Overlapping windows share memory."""
    rest, top = _split(chain, shape)
    if top.mask is not None:
        rest, top = chain, View.contiguous(shape)
    spatial = len(kernel)
    lead = len(shape) - spatial
    outputs = tuple(window_count(size, k, s, d) for size, k, s, d in zip(shape[lead:], kernel, stride, dilation))
    strides = (top.strides[:lead] + tuple(top.strides[lead + k] * stride[k] for k in range(spatial))
               + tuple(top.strides[lead + k] * dilation[k] for k in range(spatial)))
    new_shape = tuple(shape[:lead]) + outputs + tuple(kernel)
    return simplify(rest + (View(new_shape, strides, top.offset),))


def broadcast_shapes(*shapes: Shape) -> Shape | None:
    """The numpy broadcast of several shapes, or None when they do not broadcast."""
    ndim = max(len(s) for s in shapes)
    result = []
    for axis in range(ndim):
        sizes = {s[axis - ndim + len(s)] for s in shapes if axis - ndim + len(s) >= 0}
        sizes.discard(1)
        if len(sizes) > 1:
            return None
        result.append(sizes.pop() if sizes else 1)
    return tuple(result)
