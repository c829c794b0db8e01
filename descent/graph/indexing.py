"""Data-dependent indexing: take (gather), scatter_add, one_hot."""

from __future__ import annotations

from descent.arguments import is_integer
from descent.errors import DTypeError, ShapeError, at_user_line
from descent.graph import ops
from descent.graph.array import Array, takes_array
from descent.graph.dtype import DType, float32, int32
from descent.graph.view import View, contiguous_strides, numel


def _index_view(outer: tuple[int, ...], indices: tuple[int, ...], inner: tuple[int, ...]) -> View:
    """Maps an element of shape outer + indices + inner to its position in the indices array."""
    strides = (0,) * len(outer) + contiguous_strides(indices) + (0,) * len(inner)
    return View(outer + indices + inner, strides, 0)


def _check_indices(op: str, indices: Array, low: int | None = None, high: int = 0, what: str = "") -> Array:
    """`indices` as int32, after requiring [low, high) of them as given (a uint32 index of 2**32 - 2
    is out of range, not -2)."""
    if indices.dtype.is_float or indices.dtype.name == "bool":
        raise DTypeError(at_user_line(f"{op}: indices must be int32 or uint32, not {indices.dtype.name}"))
    if low is not None:
        if indices.node.op == "const" and not low <= int(indices.node.attrs) < high:  # a number known now
            raise IndexError(at_user_line(f"{op}: index {int(indices.node.attrs)} is out of range for {what}"))
        indices.scope.require_range(indices, low, high, what)
    return ops.astype(indices, int32)


def _size(op: str, name: str, value: object) -> int:
    """A size argument: an int (3.7 is not one), not negative."""
    if not is_integer(value):
        raise TypeError(at_user_line(f"{op}: {name} must be an int, got {value!r}"))
    if value < 0:
        raise ShapeError(at_user_line(f"{op}: {name} must not be negative, got {value}"))
    return int(value)


@takes_array
def take(x: Array, indices: Array, axis: int | None = 0) -> Array:
    """Elements of `x` at `indices` along `axis` (numpy.take; axis None takes from x flattened);
    negative indices count from the end. The result has shape x.shape[:axis] + indices.shape +
    x.shape[axis + 1:]."""
    indices = ops.as_array(indices, x.scope)
    if axis is None:
        x, axis = ops.reshape(x, (x.size,)), 0
    axis = ops._axis(axis, x.ndim, "take")
    if x.shape[axis] == 0 and indices.size:
        raise IndexError(at_user_line(f"take: cannot take from axis {axis} of shape {x.shape}, which has no elements"))
    indices = _check_indices("take", indices, -x.shape[axis], x.shape[axis], f"an axis of size {x.shape[axis]}")
    outer, inner = x.shape[:axis], x.shape[axis + 1 :]
    shape = outer + indices.shape + inner
    view = _index_view(outer, indices.shape, inner)
    return x.scope.add("gather", shape, x.dtype, (x.node_id, indices.node_id), {"axis": axis, "index_view": view})


gather = take


@takes_array
def scatter_add(values: Array, indices: Array, size: int, axis: int = 0) -> Array:
    """The transpose of `take`: an array whose axis `axis` has `size` elements, where element k sums
    every slice of `values` whose index is k. Duplicate indices accumulate."""
    indices = ops.as_array(indices, values.scope)
    _check_indices("scatter_add", indices)
    axis = ops._axis(axis, values.ndim - indices.ndim + 1, "scatter_add")
    outer = values.shape[:axis]
    inner = values.shape[axis + indices.ndim :]
    if values.shape[axis : axis + indices.ndim] != indices.shape:
        raise ShapeError(at_user_line(
            f"scatter_add: values {values.shape} need the indices' shape {indices.shape} at axis {axis}"))
    size = _size("scatter_add", "size", size)
    shape = outer + (size,) + inner
    if numel(shape) == 0:
        raise ShapeError(at_user_line(f"scatter_add: empty result shape {shape}"))
    view = _index_view(outer, indices.shape, inner)
    indices = _check_indices("scatter_add", indices, -size, size, f"an axis of size {size}")
    values = ops.astype(values, float32)
    return values.scope.add("scatter_add", shape, float32, (values.node_id, indices.node_id),
                            {"axis": axis, "index_view": view, "count": indices.size})


@takes_array
def one_hot(indices: Array, classes: int, dtype: DType | str = float32) -> Array:
    """1 where the last axis equals the index, else 0: shape indices.shape + (classes,). Indices are
    checked as take's; one computed in the graph outside [0, classes) gives a row of zeros, as JAX's."""
    classes = _size("one_hot", "classes", classes)
    indices = (_check_indices("one_hot", indices, 0, classes, f"one_hot's {classes} classes (0 to {classes - 1})")
               if classes else _check_indices("one_hot", indices))  # no classes: no element for an index to name
    positions = indices.scope.arange(classes)
    return ops.astype(ops.eq(ops.expand_dims(indices, -1), positions), dtype)
