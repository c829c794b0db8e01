"""Plain data that the scheduler hands to codegen and the runtime."""

from __future__ import annotations

from dataclasses import dataclass

from descent.graph.dtype import DType


@dataclass(frozen=True)
class Buffer:
    """A logical device buffer: a parameter's own memory, or a temporary the plan places in a slot."""

    name: str
    dtype: DType
    size: int  # elements
    parameter: str | None = None  # the parameter it is, for parameter buffers
    slot: int | None = None  # the shared physical slot, for temporaries

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize


@dataclass(frozen=True)
class Kernel:
    """One dispatch. Elementwise kernels evaluate their outputs at every thread's flat index; a kernel
    with a `core` (a reduction or matmul) computes the core and evaluates its outputs from it."""

    name: str
    size: int  # elements of each output
    outputs: tuple[tuple[int, str], ...]  # (node id, logical buffer name)
    loads: dict[int, str]  # node id -> logical buffer it is loaded from
    core: int | None = None
    level: int = 0
    values: tuple[int, ...] = ()  # max/min reductions of an argmax/argmin core's elements: its accumulator's value


@dataclass(frozen=True)
class Copy:
    """A buffer copy run after every kernel: a deferred parameter write."""

    source: str
    target: str


@dataclass(frozen=True)
class Schedule:
    """Kernels in dispatch order, the buffers they use and the slots temporaries share."""

    kernels: tuple[Kernel, ...]
    buffers: dict[str, Buffer]
    slots: tuple[int, ...]  # bytes of each physical temporary slot
    copies: tuple[Copy, ...]

    @property
    def temporary_bytes(self) -> int:
        return sum(self.slots)
