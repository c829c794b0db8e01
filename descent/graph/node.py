"""A node of the lazy graph: one op, its operands and the type and shape of its result."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from descent.graph.dtype import DType
from descent.graph.view import Shape


@dataclass(frozen=True)
class Node:
    """One op of a graph.

    `op` is "read" (attrs: the Parameter), "const" (attrs: the Python scalar), "view"
    (attrs: the ViewChain onto its one input), "cast", or a name from the elementwise table.
    """

    op: str
    shape: Shape
    dtype: DType
    inputs: tuple[int, ...] = ()
    attrs: Any = None
    location: str = ""
