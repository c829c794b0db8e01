"""The graph fuzzer: random programs (up to 30 ops) compared with a float64 numpy interpreter of the
same program, values and gradients (against central finite differences of the interpreter).

CI runs DESCENT_FUZZ_CASES cases (default 24) from fixed seeds; set it higher for a longer local run.
Tolerances: values rtol 1e-4 / atol 1e-4 * scale; gradients rtol 2e-2 / atol 2e-3 * scale (FD in
float64 with eps 1e-6 against a float32 gradient through up to 30 ops)."""

from __future__ import annotations

import os

import numpy as np
import pytest

import descent as dc
from tests.fuzz import generate

CASES = int(os.environ.get("DESCENT_FUZZ_CASES", "24"))
# Failures the fuzzer found are kept as the explicit regression tests at the end of this file.


def _evaluate(env: dc.Environment, name: str, program, inputs, weights):
    params = [env.parameter(f"{name}_{k}", x.shape, init=x) for k, x in enumerate(inputs)]
    holder = {}

    def build(s: dc.Scope) -> None:
        arrays = [s.read(p) for p in params]
        values = program.run_descent(arrays)
        last = values[-1]
        holder["value"] = env.parameter(f"{name}_value", last.shape)
        s.write(holder["value"], last)
        loss = dc.sum(last * s.constant(weights))
        holder["grads"] = [env.parameter(f"{name}_g{k}", x.shape) for k, x in enumerate(inputs)]
        for p, g in zip(holder["grads"], s.grad(loss, arrays)):
            s.write(p, g)

    env.run(env.build_graph(build))
    return env.read(holder["value"]), [env.read(g) for g in holder["grads"]]


@pytest.mark.parametrize("seed", range(CASES))
def test_random_program(env: dc.Environment, seed: int) -> None:
    rng = np.random.default_rng(1000 + seed)
    program = generate(rng, int(rng.integers(5, 31)))
    inputs = [rng.normal(size=shape).astype(np.float32) for shape in program.input_shapes]
    expected = program.run_numpy(inputs)[-1]
    weights = rng.normal(size=expected.shape).astype(np.float32)
    value, gradients = _evaluate(env, f"fuzz{seed}", program, inputs, weights)
    scale = max(float(np.abs(expected).max()), 1.0)
    np.testing.assert_allclose(value, expected, rtol=1e-4, atol=1e-4 * scale, err_msg=program.describe())
    eps = 1e-6
    for k, x in enumerate(inputs):
        numeric = np.zeros(x.shape)
        for index in np.ndindex(x.shape):
            shifted = [v.astype(np.float64) for v in inputs]
            shifted[k][index] += eps
            up = (program.run_numpy(shifted)[-1] * weights).sum()
            shifted[k][index] -= 2 * eps
            down = (program.run_numpy(shifted)[-1] * weights).sum()
            numeric[index] = (up - down) / (2 * eps)
        grad_scale = max(float(np.abs(numeric).max()), 1.0)
        np.testing.assert_allclose(gradients[k], numeric, rtol=2e-2, atol=2e-3 * grad_scale,
                                   err_msg=f"d/dv{k}: {program.describe()}")


def test_regression_gather_of_fused_matmul_epilogue(env: dc.Environment) -> None:
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    first, second = np.array([1, 3, 0], np.int32), np.array([2, 2], np.int32)
    xp = env.parameter("regression_x", x.shape, init=x)
    out = env.parameter("regression_out", (2, 3))

    def build(s: dc.Scope) -> None:
        rows = dc.take(dc.tanh(s.read(xp)), s.constant(first), 0)
        s.write(out, dc.take(rows @ rows.T * 0.5, s.constant(second), 0))

    env.run(env.build_graph(build))
    rows = np.tanh(x)[first]
    np.testing.assert_allclose(env.read(out), (rows @ rows.T * 0.5)[second], rtol=1e-5, atol=1e-6)


def test_regression_fused_reduction_still_loaded_by_another_kernel(env: dc.Environment) -> None:
    """A reduction fused as the core of its elementwise consumer while a gradient kernel still needed it."""
    x = np.random.default_rng(1).normal(size=(3, 5)).astype(np.float32)
    xp = env.parameter("regression2_x", x.shape, init=x)
    out = env.parameter("regression2_out", (1, 5))
    grad = env.parameter("regression2_grad", x.shape)

    def build(s: dc.Scope) -> None:
        a = s.read(xp)
        value = dc.tanh(dc.sum(a[1:], 0, keepdims=True))[::-1]
        s.write(out, value)
        (gradient,) = s.grad(dc.sum(value), [a])
        s.write(grad, gradient)

    env.run(env.build_graph(build))
    total = x[1:].sum(0, keepdims=True)
    np.testing.assert_allclose(env.read(out), np.tanh(total), rtol=1e-5)
    expected = np.zeros_like(x)
    expected[1:] = 1 - np.tanh(total) ** 2
    np.testing.assert_allclose(env.read(grad), expected, rtol=1e-5, atol=1e-6)
