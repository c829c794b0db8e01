"""Reading IDX files (the MNIST family's format), gzip-compressed or raw, with numpy."""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from descent.errors import DescentError, at_user_line
from descent.files import checked_path

_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"),
          0x0E: np.dtype(">f8")}


class DatasetError(DescentError, ValueError):
    """A data file that is missing or malformed."""


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in an IDX file; checks the magic number and that the size matches the header."""
    path = checked_path(path, "read an IDX file from", DatasetError)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError, zlib.error) as error:
        raise DatasetError(at_user_line(f"cannot read {path}: {error}")) from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _TYPES:
        found = f"bad magic number {data[:4].hex()}" if data else "it is empty"
        raise DatasetError(at_user_line(f"{path} is not an IDX file ({found})"))
    dtype, ndim = np.dtype(_TYPES[data[2]]), data[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim))
    expected = header + math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        raise DatasetError(at_user_line(f"{path} holds {len(data)} bytes but its header {shape} needs {expected}"))
    return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))
