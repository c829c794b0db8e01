"""What counts as an integer or a real number among the Python values users pass as sizes, settings
and hyperparameters: numpy's scalars do, bools do not (`Dense(True, 3)` is a mistake, not a size)."""

from __future__ import annotations

import numbers
from typing import Any


def is_integer(value: Any) -> bool:
    """A Python or numpy integer, not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """A Python or numpy real number (an integer too), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
