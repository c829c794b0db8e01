"""A named, persistent device array owned by an Environment."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from descent.graph.dtype import DType
from descent.graph.view import Shape, numel

if TYPE_CHECKING:
    from descent.runtime.environment import Environment


@dataclass(frozen=True, eq=False)
class Parameter:
    """Handle to a device array that survives across runs; its memory lives in the Environment."""

    name: str
    shape: Shape
    dtype: DType
    environment: Environment = field(repr=False)

    @property
    def size(self) -> int:
        """The number of elements: the product of the shape."""
        return numel(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes its elements take: size * dtype.itemsize."""
        return self.size * self.dtype.itemsize
