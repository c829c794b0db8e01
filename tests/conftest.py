"""Shared fixtures: one Environment on the default device (lavapipe in CI), and a helper that runs an
expression over numpy inputs and returns the result."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import pytest

import descent as dc

_names = itertools.count()


@pytest.fixture(scope="session")
def env() -> dc.Environment:
    return dc.Environment()


def evaluate(env: dc.Environment, fn: Callable[..., dc.Array], *inputs: np.ndarray) -> np.ndarray:
    """Run `fn` on parameters holding `inputs` and return the result as numpy."""
    uid = next(_names)
    parameters = []
    for k, value in enumerate(inputs):
        value = np.asarray(value)
        parameter = env.parameter(f"in{uid}_{k}", value.shape, _dtype_of(value))
        env.write(parameter, value)
        parameters.append(parameter)
    holder = {}

    def build(s: dc.Scope) -> None:
        result = fn(*[s.read(p) for p in parameters])
        holder["out"] = env.parameter(f"out{uid}", result.shape, result.dtype)
        s.write(holder["out"], result)

    graph = env.build_graph(build)
    env.run(graph)
    return env.read(holder["out"])


def _dtype_of(value: np.ndarray) -> dc.DType:
    return {"b": dc.bool_, "i": dc.int32, "u": dc.uint32, "f": dc.float32}[value.dtype.kind]
