"""The element types an Array can hold and how they map to numpy and GLSL."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from descent.errors import at_user_line


@dataclass(frozen=True)
class DType:
    """An element type: its name, numpy storage type and GLSL value/storage types."""

    name: str
    numpy: type
    glsl: str
    storage_glsl: str
    rank: int

    def __repr__(self) -> str:
        return f"dc.{self.name}"

    @property
    def itemsize(self) -> int:
        """Bytes per element: 4 for every type (bool is held as a 32-bit uint)."""
        return 4

    @property
    def is_float(self) -> bool:
        """Whether this is a floating-point type (float32 is the only one)."""
        return self.name == "float32"


bool_ = DType("bool", np.uint32, "bool", "uint", 0)
uint32 = DType("uint32", np.uint32, "uint", "uint", 1)
int32 = DType("int32", np.int32, "int", "int", 2)
float32 = DType("float32", np.float32, "float", "float", 3)

ALL_DTYPES = (bool_, uint32, int32, float32)
_BY_NAME = {d.name: d for d in ALL_DTYPES}
_FROM_NUMPY = {np.dtype(d.numpy): d for d in (uint32, int32, float32)} | {np.dtype(np.bool_): bool_}
_HELD_AS = {  # numpy data of these types is held in the descent type that holds its values (floats rounded)
    np.dtype(np.uint8): uint32,
    np.dtype(np.uint16): uint32,
    np.dtype(np.int8): int32,
    np.dtype(np.int16): int32,
    np.dtype(np.int64): int32,
    np.dtype(np.float16): float32,
    np.dtype(np.float64): float32,
}


def as_dtype(value: DType | str | type | np.dtype) -> DType:
    """Resolve a descent dtype, its name, a Python type or a numpy dtype to a descent dtype. A type
    descent does not have (uint8, float64) is refused: computing in another would give other results."""
    if isinstance(value, DType):
        return value
    if isinstance(value, str) and value in _BY_NAME:
        return _BY_NAME[value]
    if value is bool:
        return bool_
    if value is int:
        return int32
    if value is float:
        return float32
    try:
        return _FROM_NUMPY[np.dtype(value)]
    except (TypeError, KeyError):
        names = ", ".join(_BY_NAME)
        raise TypeError(at_user_line(f"unsupported dtype {value!r}; descent has {names}")) from None


def data_dtype(value: np.dtype | type) -> DType:
    """The descent dtype that holds numpy data (or a numpy scalar) of this type: float64 data is
    float32 on the device, int64 int32 and uint8 uint32, as JAX holds them without x64."""
    try:
        return _HELD_AS[np.dtype(value)]
    except (TypeError, KeyError):
        return as_dtype(value)


def outside(x: Any, target: DType) -> bool:
    """Whether `x` is a Python integer that the integer type `target` cannot hold."""
    if target not in (int32, uint32) or not isinstance(x, int) or isinstance(x, bool):
        return False
    low, high = (-(2**31), 2**31) if target == int32 else (0, 2**32)
    return not low <= x < high


def check_scalar(owner: str, value: Any, target: DType) -> None:
    """A number stored as `target` must be one it holds, as numpy's conversion requires: an integer
    within range, or a float whose truncation toward zero is (NaN and infinity have none)."""
    if target not in (int32, uint32) or isinstance(value, bool):
        return
    whole = value
    if isinstance(value, float | np.floating):
        if not np.isfinite(value):
            raise ValueError(at_user_line(f"{owner}: {value} has no {target.name} value"))
        whole = int(value)
    elif isinstance(value, np.integer):
        whole = int(value)
    if outside(whole, target):
        shown = f"Python integer {value}" if type(value) is int else value  # numpy's words
        raise OverflowError(at_user_line(f"{owner}: {shown} is out of bounds for {target.name}"))


def promote(*dtypes: DType) -> DType:
    """The common type of several operands: bool < uint32 < int32 < float32."""
    return max(dtypes, key=lambda d: d.rank)
