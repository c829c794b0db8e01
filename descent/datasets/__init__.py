"""Data sets read from files installed by packages: nothing is downloaded at run time."""

from descent.datasets import fashion_mnist
from descent.datasets.idx import DatasetError, read_idx

__all__ = ["DatasetError", "fashion_mnist", "read_idx"]
