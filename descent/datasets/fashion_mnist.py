"""Fashion-MNIST from the IDX files Debian's `dataset-fashion-mnist` package installs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from descent.datasets.idx import DatasetError, read_idx
from descent.errors import at_user_line
from descent.files import checked_path

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60000),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10000)}


def _find(directory: Path, stem: str) -> Path:
    if directory.exists() and not directory.is_dir():
        raise DatasetError(at_user_line(f"{directory} is a file, not the folder that holds the four Fashion-MNIST "
                                        "idx files"))
    for name in (stem + ".gz", stem):
        if (directory / name).exists():
            return directory / name
    raise DatasetError(at_user_line(
        f"Fashion-MNIST file {stem}(.gz) is not in {directory}. Install the data with "
        f"`sudo apt-get install dataset-fashion-mnist` (it goes to {DEFAULT_DIR}), or pass the folder that "
        "holds the four idx files"))


def load(split: str = "train", directory: str | Path = DEFAULT_DIR) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of a split: images float32 (N, 1, 28, 28) scaled to [0, 1], labels int32 (N,)."""
    if split not in _FILES:
        raise ValueError(at_user_line(f"split must be 'train' or 'test', not {split!r}"))
    directory = checked_path(directory, "read Fashion-MNIST from", DatasetError)
    image_stem, label_stem, count = _FILES[split]
    images = read_idx(_find(directory, image_stem))
    labels = read_idx(_find(directory, label_stem))
    if images.shape != (count, 28, 28) or labels.shape != (count,):
        raise DatasetError(at_user_line(f"Fashion-MNIST {split} files in {directory} have shapes {images.shape} and "
                                        f"{labels.shape}, expected ({count}, 28, 28) and ({count},)"))
    if images.dtype != np.uint8 or labels.dtype != np.uint8:
        raise DatasetError(at_user_line(f"Fashion-MNIST {split} files in {directory} hold {images.dtype} images and "
                                        f"{labels.dtype} labels, expected unsigned bytes (uint8)"))
    if labels.max() > 9:
        raise DatasetError(at_user_line(f"Fashion-MNIST {split} labels in {directory} go up to {labels.max()}, "
                                        "expected 0..9"))
    return (images.astype(np.float32) / 255.0).reshape(count, 1, 28, 28), labels.astype(np.int32)
