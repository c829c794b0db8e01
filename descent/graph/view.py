"""Zero-copy views: strided index maps from an array's flat index to its source's flat index.

A view chain is a tuple of `View`s; the last one has the array's shape and is applied first.
Each `View` maps a multi-index of its shape to a flat index (`offset + sum(i_k * stride_k)`) in the
contiguous order of the shape before it, or of the source buffer for the first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Shape = tuple[int, ...]


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
    """A strided window: shape, strides (in elements, 0 to broadcast) and offset."""

    shape: Shape
    strides: tuple[int, ...]
    offset: int = 0

    @staticmethod
    def contiguous(shape: Shape) -> View:
        return View(tuple(shape), contiguous_strides(shape), 0)

    @property
    def is_contiguous(self) -> bool:
        return self.offset == 0 and all(
            size == 1 or stride == expected
            for size, stride, expected in zip(self.shape, self.strides, contiguous_strides(self.shape))
        )


ViewChain = tuple[View, ...]


def numel(shape: Shape) -> int:
    return math.prod(shape)


def simplify(chain: ViewChain) -> ViewChain:
    """Drop views that leave the flat index unchanged."""
    return tuple(view for view in chain if not view.is_contiguous)


def _split(chain: ViewChain, shape: Shape) -> tuple[ViewChain, View]:
    """The chain below the view of `shape`, and that view (implicitly contiguous once simplified away)."""
    if chain and chain[-1].shape == tuple(shape):
        return chain[:-1], chain[-1]
    return chain, View.contiguous(shape)


def reshape(chain: ViewChain, shape: Shape, new_shape: Shape) -> ViewChain:
    """View `shape` as `new_shape` (same number of elements)."""
    rest, top = _split(chain, shape)
    if top.is_contiguous:
        return simplify(rest + (View.contiguous(new_shape),))
    kept = [(size, stride) for size, stride in zip(top.shape, top.strides) if size != 1]
    if [size for size, _ in kept] == [size for size in new_shape if size != 1]:
        strides, position = [], 0
        for size in new_shape:
            if size == 1:
                strides.append(0)
            else:
                strides.append(kept[position][1])
                position += 1
        return simplify(rest + (View(tuple(new_shape), tuple(strides), top.offset),))
    return simplify(chain + (View.contiguous(new_shape),))


def permute(chain: ViewChain, shape: Shape, axes: tuple[int, ...]) -> ViewChain:
    """Reorder the axes: axis k of the result is axis `axes[k]` of the input."""
    rest, top = _split(chain, shape)
    view = View(tuple(top.shape[a] for a in axes), tuple(top.strides[a] for a in axes), top.offset)
    return simplify(rest + (view,))


def expand(chain: ViewChain, shape: Shape, new_shape: Shape) -> ViewChain:
    """Broadcast to `new_shape` (numpy rules, already checked): repeated axes get stride 0."""
    rest, top = _split(chain, shape)
    lead = len(new_shape) - len(shape)
    strides = [0] * lead
    for size, stride, target in zip(top.shape, top.strides, new_shape[lead:]):
        strides.append(stride if size == target else 0)
    return simplify(rest + (View(tuple(new_shape), tuple(strides), top.offset),))


def window(chain: ViewChain, shape: Shape, starts: Shape, steps: Shape, new_shape: Shape) -> ViewChain:
    """Basic slicing: axis k keeps `new_shape[k]` elements from `starts[k]` every `steps[k]`."""
    rest, top = _split(chain, shape)
    offset = top.offset + sum(start * stride for start, stride in zip(starts, top.strides))
    strides = tuple(stride * step for stride, step in zip(top.strides, steps))
    return simplify(rest + (View(tuple(new_shape), strides, offset),))


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
