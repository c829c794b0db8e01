"""Argument types the examples share (each refuses a value that would train on nothing or silently wreck a
run), and the one way they stop on a bad argument."""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path
from typing import NoReturn

import descent as dc
from descent.files import check_replaceable


def positive_int(text: str) -> int:
    """An argument that must be a whole number of at least 1 (no epochs, empty batches or empty data sets)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """A learning rate: finite and above 0, since nan, inf or a step uphill would wreck the training silently."""
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value


def output_directory(text: str) -> str:
    """--out: a directory, existing or to be made; refused at once, before any training, when a file stands
    where it or a parent would be, or when the nearest existing one cannot be written in."""
    for place in (Path(text), *Path(text).parents):
        if place.exists():
            if not place.is_dir():
                raise argparse.ArgumentTypeError(f"{place} is a file, not a directory")
            try:
                with tempfile.TemporaryFile(dir=place):
                    pass
            except OSError as error:
                raise argparse.ArgumentTypeError(f"cannot write in {place}: {error.strerror}") from None
            break
    return text


def refuse(parser: argparse.ArgumentParser, option: str, error: Exception) -> NoReturn:
    """Stop with argparse's usage line and descent's message for `option`."""
    parser.error(f"argument {option}: {_message(error)}")


def _message(error: Exception) -> str:
    """descent's message less the line in the example it names (the user's command is what was wrong)."""
    return str(error).split("\n  at ")[0]


def open_environment(parser: argparse.ArgumentParser, device: str | None) -> dc.Environment:
    """The Environment on --device; a device that cannot be opened stops the example, blaming --device
    only where it was given (no driver at all is not the option's fault)."""
    try:
        return dc.Environment(device)
    except dc.DeviceError as error:
        if device is not None:
            refuse(parser, "--device", error)
        parser.exit(2, f"{parser.prog}: error: {_message(error)}\n")


def refuse_unwritable(parser: argparse.ArgumentParser, paths: tuple[Path, ...]) -> None:
    """Stop, before any training, where a file the run writes in --out could not be replaced: a folder
    stands there, or the file is read-only (found only at the first save, the run's work would be lost)."""
    for path in paths:
        try:
            check_replaceable(path)
        except IsADirectoryError:
            refuse(parser, "--out", ValueError(f"{path} is a directory, where this run writes a file"))
        except OSError as error:
            refuse(parser, "--out", ValueError(f"{path} cannot be replaced: {error.strerror}"))


def momentum_float(text: str) -> float:
    """SGD's momentum: in [0, 1), where 1 or more never lets old gradients decay."""
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1, got {text}")
    return value
