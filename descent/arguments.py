"""What counts as an integer or a real number among the Python values users pass as sizes, settings
and hyperparameters: numpy's scalars do, bools do not (`Dense(True, 3)` is a mistake, not a size);
and the checks that refuse the others, naming the setting and its owner."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from descent.errors import ShapeError, at_user_line


def is_integer(value: Any) -> bool:
    """A Python or numpy integer, not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """A Python or numpy real number (an integer too), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _require_real(owner: str, name: str, value: Any) -> None:
    if not is_real(value):
        raise TypeError(at_user_line(f"{owner}: {name} must be a number, got {value!r}"))


def natural(owner: str, name: str, value: Any, least: int = 0) -> int:
    """A size or count setting as an int of at least `least`; numpy integers pass, floats and bools do
    not (as PyTorch)."""
    if not is_integer(value):
        raise TypeError(at_user_line(f"{owner}: {name} must be an int, got {value!r}"))
    if value < least:
        raise ValueError(at_user_line(f"{owner}: {name} must be at least {least}, got {value!r}"))
    return int(value)


def real(owner: str, name: str, value: Any, low: float = -np.inf, high: float = np.inf,
         below_high: bool = False) -> float:
    """A real-valued setting (a numpy scalar too, not a bool): finite, in [low, high] (or [low, high)
    with `below_high`), as a Python float. A NaN or infinite rate, slope or epsilon would train
    silently to NaN, as a negative rate would uphill. A value that is not a number is a TypeError."""
    _require_real(owner, name, value)
    if not np.isfinite(value) or not low <= value <= high or (below_high and value == high):
        if high != np.inf:
            within = f"a number in [{low:g}, {high:g}{')' if below_high else ']'}"
        else:
            within = "a finite number" + ("" if low == -np.inf else f" of at least {low:g}")
        raise ValueError(at_user_line(f"{owner}: {name} must be {within}, got {value!r}"))
    return float(value)


def positive(owner: str, name: str, value: Any) -> float:
    """A real setting above zero (infinity too), such as a norm to clip to, as a Python float."""
    _require_real(owner, name, value)
    if not value > 0:
        raise ValueError(at_user_line(f"{owner}: {name} must be a positive number, got {value!r}"))
    return float(value)


def flag(owner: str, name: str, value: Any) -> bool:
    """A switch given as True or False (a numpy bool too): a string such as "no" would switch it on."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(at_user_line(f"{owner}: {name} must be True or False, got {value!r}"))
    return bool(value)


def seed(owner: str, value: Any) -> int:
    """A random seed: any int (negative too, as numpy's generators take it) reduced to numpy's [0, 2**64)."""
    if not is_integer(value):
        raise TypeError(at_user_line(f"{owner}: seed must be an int, got {value!r}"))
    return int(value) % 2**64


Pair = int | tuple[int, int]
Single = int | tuple[int]


def _whole(value: Any, floats: bool) -> bool:
    """An integer, or with `floats` a float with an integer value (PyTorch takes scale_factor=2.0 but
    refuses stride=2.0)."""
    return is_integer(value) or (floats and is_real(value) and float(value).is_integer())


def sizes(value: Any, name: str, count: int, least: int, floats: bool = False) -> tuple[int, ...]:
    """One setting for all `count` axes or `count` of them, each an int of at least `least` (with
    `floats`, a whole float too)."""
    values = (value,) * count if isinstance(value, numbers.Real) else tuple(value) if hasattr(value, "__len__") else ()
    if len(values) != count or not all(_whole(v, floats) for v in values):
        form = "a pair of ints" if count == 2 else "a 1-tuple"
        error = TypeError if len(values) == count else ShapeError
        raise error(at_user_line(f"{name} must be an int or {form}, got {value!r}"))
    if min(values) < least:
        raise ShapeError(at_user_line(f"{name} must be at least {least}, got {value!r}"))
    return tuple(int(v) for v in values)


def pair(value: Pair, name: str, least: int = 1, floats: bool = False) -> tuple[int, int]:
    """(value, value) or the pair given, each at least `least` (padding 0, strides and sizes 1)."""
    return sizes(value, name, 2, least, floats)


def single(value: Single, name: str, least: int = 1) -> int:
    """A 1-D setting, an int or a 1-tuple as PyTorch takes, at least `least`."""
    return sizes(value, name, 1, least)[0]
