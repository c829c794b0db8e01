"""The lazy Array: a handle to one node of a graph being built, with numpy-style operators."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from descent.errors import DTypeError, at_user_line
from descent.graph.dtype import DType
from descent.graph.view import Shape, numel

if TYPE_CHECKING:
    from descent.graph.node import Node
    from descent.graph.scope import Scope


_NO_VALUE = ("it has no value while the graph is built. Use descent's ops (dc.sin, dc.sum, ...) inside the graph, "
             "and env.read(parameter) for a value after env.run")


class Array:
    """A value that will exist when the graph runs; building it only records an op."""

    __slots__ = ("scope", "node_id")
    __array_priority__ = 1000  # numpy defers to Array's operators: np.float32(2) * a is an Array

    def __init__(self, scope: Scope, node_id: int) -> None:
        self.scope = scope
        self.node_id = node_id

    @property
    def node(self) -> Node:
        """The graph Node this Array stands for (its op, inputs, shape and dtype), from its scope."""
        return self.scope.node(self.node_id)

    @property
    def shape(self) -> Shape:
        """The size of each axis, as a tuple (() for a 0-d Array)."""
        return self.node.shape

    @property
    def dtype(self) -> DType:
        """The element type (bool_, uint32, int32 or float32)."""
        return self.node.dtype

    @property
    def ndim(self) -> int:
        """The number of axes."""
        return len(self.shape)

    @property
    def size(self) -> int:
        """The number of elements: the product of the shape (1 for a 0-d Array)."""
        return numel(self.shape)

    def __repr__(self) -> str:
        return f"Array({self.node.op}, shape={self.shape}, dtype={self.dtype.name})"

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d Array")
        return self.shape[0]

    def __iter__(self) -> Iterator[Array]:
        """The sub-arrays along the first axis, as numpy's iteration (a 0-d Array has none to give)."""
        if not self.shape:
            raise TypeError("iteration over a 0-d Array")
        return (self[k] for k in range(self.shape[0]))

    def __bool__(self) -> bool:
        raise TypeError("an Array has no value while the graph is built; use dc.where for conditions")

    def __float__(self) -> float:
        raise TypeError(at_user_line(f"float() of an Array: {_NO_VALUE}"))

    def __int__(self) -> int:
        raise TypeError(at_user_line(f"int() of an Array: {_NO_VALUE}"))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """Refused: numpy would make an object array of it, or fail inside a ufunc such as np.sin(a)."""
        raise TypeError(at_user_line(f"numpy cannot take a descent Array: {_NO_VALUE}"))

    __hash__ = object.__hash__

    def __add__(self, other: Any) -> Array:
        return ops.add(self, other)

    def __radd__(self, other: Any) -> Array:
        return ops.add(other, self)

    def __sub__(self, other: Any) -> Array:
        return ops.sub(self, other)

    def __rsub__(self, other: Any) -> Array:
        return ops.sub(other, self)

    def __mul__(self, other: Any) -> Array:
        return ops.mul(self, other)

    def __rmul__(self, other: Any) -> Array:
        return ops.mul(other, self)

    def __truediv__(self, other: Any) -> Array:
        return ops.div(self, other)

    def __rtruediv__(self, other: Any) -> Array:
        return ops.div(other, self)

    def __floordiv__(self, other: Any) -> Array:
        return ops.floor_divide(self, other)

    def __rfloordiv__(self, other: Any) -> Array:
        return ops.floor_divide(other, self)

    def __mod__(self, other: Any) -> Array:
        return ops.remainder(self, other)

    def __rmod__(self, other: Any) -> Array:
        return ops.remainder(other, self)

    def __pow__(self, other: Any) -> Array:
        return ops.pow(self, other)

    def __rpow__(self, other: Any) -> Array:
        return ops.pow(other, self)

    def __neg__(self) -> Array:
        return ops.neg(self)

    def __pos__(self) -> Array:
        return self

    def __abs__(self) -> Array:
        return ops.abs(self)

    def __lt__(self, other: Any) -> Array:
        return ops.lt(self, other)

    def __le__(self, other: Any) -> Array:
        return ops.le(self, other)

    def __gt__(self, other: Any) -> Array:
        return ops.gt(self, other)

    def __ge__(self, other: Any) -> Array:
        return ops.ge(self, other)

    def __eq__(self, other: Any) -> Array:  # type: ignore[override]
        return ops.eq(self, other)

    def __ne__(self, other: Any) -> Array:  # type: ignore[override]
        return ops.ne(self, other)

    def __and__(self, other: Any) -> Array:
        return ops.bitwise_and(self, other)

    def __rand__(self, other: Any) -> Array:
        return ops.bitwise_and(other, self)

    def __or__(self, other: Any) -> Array:
        return ops.bitwise_or(self, other)

    def __ror__(self, other: Any) -> Array:
        return ops.bitwise_or(other, self)

    def __xor__(self, other: Any) -> Array:
        return ops.bitwise_xor(self, other)

    def __rxor__(self, other: Any) -> Array:
        return ops.bitwise_xor(other, self)

    def __invert__(self) -> Array:
        return ops.bitwise_not(self)

    def __matmul__(self, other: Array) -> Array:
        return linalg.matmul(self, other)

    def __rmatmul__(self, other: Array) -> Array:
        return linalg.matmul(other, self)

    def sum(self, axis: Any = None, keepdims: bool = False) -> Array:
        """Sum over `axis` (all axes by default), as dc.sum."""
        return reductions.sum(self, axis, keepdims)

    def mean(self, axis: Any = None, keepdims: bool = False) -> Array:
        """Arithmetic mean over `axis` (all axes by default), in float32, as dc.mean."""
        return reductions.mean(self, axis, keepdims)

    def max(self, axis: Any = None, keepdims: bool = False) -> Array:
        """Largest element over `axis` (all axes by default), as dc.max."""
        return reductions.max(self, axis, keepdims)

    def min(self, axis: Any = None, keepdims: bool = False) -> Array:
        """Smallest element over `axis` (all axes by default), as dc.min."""
        return reductions.min(self, axis, keepdims)

    def prod(self, axis: Any = None, keepdims: bool = False) -> Array:
        """Product over `axis` (all axes by default), as dc.prod."""
        return reductions.prod(self, axis, keepdims)

    def any(self, axis: Any = None, keepdims: bool = False) -> Array:
        """Whether any element over `axis` is true (non-zero), as dc.any."""
        return reductions.any(self, axis, keepdims)

    def cumsum(self, axis: int | None = None) -> Array:
        """Running sums along `axis` (of the flattened array by default), as dc.cumsum."""
        return reductions.cumsum(self, axis)

    def cumprod(self, axis: int | None = None) -> Array:
        """Running products along `axis` (of the flattened array by default), as dc.cumprod."""
        return reductions.cumprod(self, axis)

    def all(self, axis: Any = None, keepdims: bool = False) -> Array:
        """Whether every element over `axis` is true (non-zero), as dc.all."""
        return reductions.all(self, axis, keepdims)

    def argmax(self, axis: int | None = None, keepdims: bool = False) -> Array:
        """Index of the first largest element along `axis` (of the flattened array by default), as dc.argmax."""
        return reductions.argmax(self, axis, keepdims)

    def argmin(self, axis: int | None = None, keepdims: bool = False) -> Array:
        """Index of the first smallest element along `axis` (of the flattened array by default), as dc.argmin."""
        return reductions.argmin(self, axis, keepdims)

    def __getitem__(self, index: Any) -> Array:
        return ops.getitem(self, index)

    def reshape(self, *shape: Any) -> Array:
        """Same elements in row-major order, new shape (a tuple or separate ints; one may be -1), as dc.reshape."""
        return ops.reshape(self, shape[0] if len(shape) == 1 and isinstance(shape[0], tuple | list) else shape)

    def transpose(self, *axes: Any) -> Array:
        """Permute the axes (a tuple or separate ints; reversed when none are given), as dc.transpose."""
        return ops.transpose(self, axes[0] if len(axes) == 1 and isinstance(axes[0], tuple | list) else axes or None)

    @property
    def T(self) -> Array:
        """The axes reversed, as transpose() with no axes (numpy's .T)."""
        return ops.transpose(self)

    def broadcast_to(self, shape: Shape) -> Array:
        """Repeat size-1 and missing leading axes to `shape` without copying, as dc.broadcast_to."""
        return ops.broadcast_to(self, shape)

    def expand_dims(self, axis: int | tuple[int, ...]) -> Array:
        """Insert size-1 axes at the positions `axis` of the result, as dc.expand_dims."""
        return ops.expand_dims(self, axis)

    def squeeze(self, axis: int | tuple[int, ...] | None = None) -> Array:
        """Remove size-1 axes (all of them, or those in `axis`), as dc.squeeze."""
        return ops.squeeze(self, axis)

    def astype(self, dtype: DType | str) -> Array:
        """Convert to `dtype` (float to int truncates toward zero), as dc.astype."""
        return ops.astype(self, dtype)


def array_argument(op: str, value: Any) -> Array:
    """`value` if it is an Array, else refused by `op`'s name: a numpy array or a number given where an
    Array must be has no graph to join (a numpy one gets the hint to make it a parameter or constant)."""
    if isinstance(value, Array):
        return value
    hint = ("; a numpy array must be a parameter or a graph constant first (s.constant(array))"
            if isinstance(value, np.ndarray) else "")
    raise DTypeError(at_user_line(f"{op}: cannot use {type(value).__name__} as an Array operand{hint}"))


def takes_array(function: Callable[..., Array]) -> Callable[..., Array]:
    """Check a function's first argument with `array_argument`, before the function reads it."""

    @functools.wraps(function)
    def checked(x: Any, *args: Any, **kwargs: Any) -> Array:
        return function(array_argument(function.__name__, x), *args, **kwargs)

    return checked


from descent.graph import linalg, ops, reductions  # noqa: E402  (they build Arrays; Array methods call them)
