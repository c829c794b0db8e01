"""A node of the lazy graph: one op, its operands and the type and shape of its result."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from descent.graph.dtype import DType
from descent.graph.view import Shape, ViewChain


@dataclass(frozen=True)
class Node:
    """One op of a graph.

    `op` is "read" (attrs: the Parameter), "const" (attrs: the Python scalar), "view"
    (attrs: a ViewOp), "cast", "arange", "gather", a heavy op ("reduce", "matmul" (attrs: a
    ConvWindows where conv2d made it, else None), "scatter_add"), or a name from the elementwise table.
    """

    op: str
    shape: Shape
    dtype: DType
    inputs: tuple[int, ...] = ()
    attrs: Any = None
    location: str = ""


@dataclass(frozen=True)
class ViewOp:
    """A view node's attrs. Its one input is the non-view node it indexes (`chain` maps into it, so
    stacked views cost one index computation); `parent`, `kind` and `args` record the single view
    op that made it, which is what autodiff needs."""

    chain: ViewChain
    parent: int
    kind: str  # reshape, permute, expand, window, pad, windows
    args: tuple = ()


@dataclass(frozen=True)
class ConvWindows:
    """The attrs of a matmul that conv2d made with a stride and dilation of 1 (None for any other
    matmul), so that a CPU driver's codegen can run it as a direct convolution. The product is
    (batch * groups) x (M x C*KH*KW) @ (C*KH*KW x OH*OW): its right operand at (b, (c, ky, kx),
    (y, x)) is element (c, y + ky, x + kx) of group b % groups of image b // groups of the padded
    input, which is OH + KH - 1 by OW + KW - 1 (padding, and any fused ops, are in that operand's
    views)."""

    groups: int
    channels: int  # input channels per group
    kernel: tuple[int, int]  # KH, KW
    output: tuple[int, int]  # OH, OW
