"""The lazy Array: a handle to one node of a graph being built, with numpy-style operators."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from descent.graph.dtype import DType
from descent.graph.view import Shape, numel

if TYPE_CHECKING:
    from descent.graph.scope import Scope


class Array:
    """A value that will exist when the graph runs; building it only records an op."""

    __slots__ = ("scope", "node_id")
    __array_ufunc__ = None  # numpy defers to Array's operators: np.float32(2) * a is an Array

    def __init__(self, scope: Scope, node_id: int) -> None:
        self.scope = scope
        self.node_id = node_id

    @property
    def node(self):
        return self.scope.node(self.node_id)

    @property
    def shape(self) -> Shape:
        return self.node.shape

    @property
    def dtype(self) -> DType:
        return self.node.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
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
        return reductions.sum(self, axis, keepdims)

    def mean(self, axis: Any = None, keepdims: bool = False) -> Array:
        return reductions.mean(self, axis, keepdims)

    def max(self, axis: Any = None, keepdims: bool = False) -> Array:
        return reductions.max(self, axis, keepdims)

    def min(self, axis: Any = None, keepdims: bool = False) -> Array:
        return reductions.min(self, axis, keepdims)

    def prod(self, axis: Any = None, keepdims: bool = False) -> Array:
        return reductions.prod(self, axis, keepdims)

    def any(self, axis: Any = None, keepdims: bool = False) -> Array:
        return reductions.any(self, axis, keepdims)

    def cumsum(self, axis: int | None = None) -> Array:
        return reductions.cumsum(self, axis)

    def cumprod(self, axis: int | None = None) -> Array:
        return reductions.cumprod(self, axis)

    def all(self, axis: Any = None, keepdims: bool = False) -> Array:
        return reductions.all(self, axis, keepdims)

    def argmax(self, axis: int | None = None, keepdims: bool = False) -> Array:
        return reductions.argmax(self, axis, keepdims)

    def argmin(self, axis: int | None = None, keepdims: bool = False) -> Array:
        return reductions.argmin(self, axis, keepdims)

    def __getitem__(self, index: Any) -> Array:
        return ops.getitem(self, index)

    def reshape(self, *shape: Any) -> Array:
        return ops.reshape(self, shape[0] if len(shape) == 1 and isinstance(shape[0], tuple | list) else shape)

    def transpose(self, *axes: Any) -> Array:
        return ops.transpose(self, axes[0] if len(axes) == 1 and isinstance(axes[0], tuple | list) else axes or None)

    @property
    def T(self) -> Array:
        return ops.transpose(self)

    def broadcast_to(self, shape: Shape) -> Array:
        return ops.broadcast_to(self, shape)

    def expand_dims(self, axis: int | tuple[int, ...]) -> Array:
        return ops.expand_dims(self, axis)

    def squeeze(self, axis: int | tuple[int, ...] | None = None) -> Array:
        return ops.squeeze(self, axis)

    def astype(self, dtype: DType | str) -> Array:
        return ops.astype(self, dtype)


from descent.graph import linalg, ops, reductions  # noqa: E402  (they build Arrays; Array methods call them)
