"""Errors that name the problem, the op and the user's line that caused it."""

from __future__ import annotations

import os
import sys

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def user_location() -> str:
    """The `file:line` of the innermost stack frame outside the descent package (code that descent
    generates, such as a dataclass's `__init__`, runs in a descent module's globals and counts as inside)."""
    frame = sys._getframe(1)
    while frame is not None:
        filename = os.path.abspath(frame.f_code.co_filename)
        module = frame.f_globals.get("__name__") or ""
        if not filename.startswith(_PACKAGE_DIR + os.sep) and module.split(".")[0] != "descent":
            return f"{frame.f_code.co_filename}:{frame.f_lineno}"
        frame = frame.f_back
    return "<unknown>"


class DescentError(Exception):
    """Base class of every error descent raises on purpose."""


class ShapeError(DescentError, ValueError):
    """Shapes that do not fit the op, found while the graph is built."""


class DTypeError(DescentError, TypeError):
    """A dtype the op does not accept."""


class GraphError(DescentError):
    """Misuse of a graph-building scope: arrays from another graph, parameters written twice."""


class DeviceError(DescentError, RuntimeError):
    """No usable Vulkan device, or the device cannot hold what was asked."""


class CompileError(DescentError, RuntimeError):
    """glslangValidator is missing or rejected a generated shader."""


def at_user_line(message: str) -> str:
    """Append the user's file and line to an error message."""
    return f"{message}\n  at {user_location()}"
