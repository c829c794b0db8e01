"""Reductions and the softmax family against numpy, over random shapes and axes.

Tolerance: sums accumulate in a different order than numpy's pairwise sum, so rtol 1e-5 and an
absolute tolerance scaled by sqrt(n) * max|x| * 1e-6; max/min/argmax are exact.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import descent as dc
from descent.graph import reductions, split
from tests.conftest import evaluate

rng = np.random.default_rng(3)
CASES = [((7,), None), ((5, 300), 1), ((5, 300), 0), ((4, 6, 5), (0, 2)), ((3, 1, 2), (1,)), ((2, 3, 4, 5), (1, 3)),
         ((1000,), 0), ((33, 65), None), ((1,), 0), ((2, 3), ())]
REDUCTIONS = {
    "sum": (dc.sum, np.sum), "mean": (dc.mean, np.mean), "max": (dc.max, np.max), "min": (dc.min, np.min),
    "prod": (dc.prod, np.prod), "var": (dc.var, np.var), "std": (dc.std, np.std),
}


def _tolerance(x: np.ndarray) -> float:
    return 1e-6 * np.sqrt(max(x.size, 1)) * max(float(np.abs(x).max()), 1.0)


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
@pytest.mark.parametrize("shape, axis", CASES, ids=str)
@pytest.mark.parametrize("keepdims", [False, True])
def test_reduction(env: dc.Environment, name: str, shape, axis, keepdims: bool) -> None:
    ours, theirs = REDUCTIONS[name]
    x = rng.uniform(0.5, 1.5, shape).astype(np.float32) if name == "prod" else rng.normal(size=shape).astype(np.float32)
    if name == "prod" and x.size > 50:
        x = np.float32(1) + (x - 1) * np.float32(0.01)
    expected = theirs(x, axis=axis, keepdims=keepdims)
    result = evaluate(env, lambda a: ours(a, axis, keepdims), x)
    assert result.shape == np.shape(expected)
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=_tolerance(x))


@pytest.mark.parametrize("name", ["argmax", "argmin"])
@pytest.mark.parametrize("shape, axis", [((7,), None), ((5, 300), 1), ((4, 6, 5), 0), ((3, 4), None), ((6, 40), 0)])
def test_arg_reductions(env: dc.Environment, name: str, shape, axis) -> None:
    x = rng.integers(0, 5, shape).astype(np.float32)
    result = evaluate(env, lambda a: getattr(dc, name)(a, axis), x)
    assert result.dtype == np.int32
    np.testing.assert_array_equal(result, getattr(np, name)(x, axis=axis))


def test_integer_and_bool_reductions(env: dc.Environment) -> None:
    x = rng.integers(-100, 100, (6, 50)).astype(np.int32)
    np.testing.assert_array_equal(evaluate(env, lambda a: a.sum(1), x), x.sum(1))
    np.testing.assert_array_equal(evaluate(env, lambda a: a.max(0), x), x.max(0))
    np.testing.assert_array_equal(evaluate(env, lambda a: (a > 0).sum(1), x), (x > 0).sum(1))


def test_any_and_all_as_numpy(env: dc.Environment) -> None:
    x = rng.integers(-1, 2, (4, 5, 3)).astype(np.float32) * rng.integers(0, 2, (4, 5, 3))
    x[0, 0, 0] = np.nan  # true, as in numpy
    for axis, keep in [(None, False), (1, False), ((0, 2), True), (-1, True)]:
        np.testing.assert_array_equal(evaluate(env, lambda a, axis=axis, keep=keep: dc.any(a, axis, keep), x),
                                      np.any(x, axis, keepdims=keep))
        np.testing.assert_array_equal(evaluate(env, lambda a, axis=axis, keep=keep: a.all(axis, keep), x),
                                      np.all(x, axis, keepdims=keep))
    flags = x > 0
    np.testing.assert_array_equal(evaluate(env, lambda a: a.any(0), flags), flags.any(0))
    assert evaluate(env, lambda a: a.any(), flags).dtype == np.bool_
    empty = np.zeros((3, 0, 2), np.int32)
    np.testing.assert_array_equal(evaluate(env, lambda a: dc.any(a, 1) | dc.all(a, (0, 1)) & False, empty),
                                  np.zeros((3, 2), bool))
    np.testing.assert_array_equal(evaluate(env, lambda a: dc.all(a, 1, keepdims=True), empty), np.ones((3, 1, 2), bool))
    constant = evaluate(env, lambda a: dc.astype(dc.broadcast_to(a.scope.constant(2.5), (2, 3)), dc.int32),
                        np.zeros(1, np.int32))  # a cast of a shaped constant keeps its shape
    assert constant.shape == (2, 3) and (constant == 2).all()


def test_softmax_family(env: dc.Environment) -> None:
    x = (rng.normal(size=(8, 37)) * 30).astype(np.float64)
    shifted = x - x.max(axis=1, keepdims=True)
    lse = np.log(np.exp(shifted).sum(1, keepdims=True)) + x.max(axis=1, keepdims=True)
    x32 = x.astype(np.float32)
    np.testing.assert_allclose(evaluate(env, lambda a: dc.softmax(a, 1), x32), np.exp(x - lse), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(evaluate(env, lambda a: dc.log_softmax(a), x32), x - lse, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(evaluate(env, lambda a: dc.logsumexp(a, 1), x32), lse[:, 0], rtol=1e-5, atol=1e-4)
    big = np.array([[1000.0, 1000.0, -1000.0], [-np.inf, 0.0, -np.inf]], np.float32)
    np.testing.assert_allclose(evaluate(env, lambda a: dc.softmax(a, 1), big), [[0.5, 0.5, 0.0], [0.0, 1.0, 0.0]])


@pytest.mark.parametrize("length", [4, 5000], ids=["serial", "tree"])
def test_nan_wins_max_min_and_their_args(env: dc.Environment, length: int) -> None:
    """As numpy: a NaN in a row makes its max, min and logsumexp NaN, and argmax/argmin its first
    NaN's position; integer rows are unaffected."""
    x = rng.normal(size=(3, length)).astype(np.float32)
    x[1, length // 2] = x[1, length - 1] = np.nan
    for name in ("max", "min", "argmax", "argmin", "logsumexp"):
        ours = evaluate(env, lambda a, name=name: getattr(dc, name)(a, 1), x)
        expected = np.log(np.exp(x).sum(1)) if name == "logsumexp" else getattr(np, name)(x, 1)
        np.testing.assert_allclose(ours, expected, rtol=1e-5, err_msg=name)
    integers = rng.integers(-50, 50, (3, length)).astype(np.int32)
    np.testing.assert_array_equal(evaluate(env, lambda a: dc.argmin(a, 1), integers), integers.argmin(1))
    np.testing.assert_array_equal(evaluate(env, lambda a: dc.max(a, 1), integers), integers.max(1))


def test_the_gradient_of_a_nan_max_or_min_goes_to_its_nans(env: dc.Environment) -> None:
    """As PyTorch's max() and max(dim): split evenly between a row's NaNs, the other elements get 0. It
    was NaN for every element of the row (no element equals a NaN max)."""
    x = np.array([[1.0, np.nan, 3.0, np.nan], [4.0, 5.0, 5.0, 2.0]], np.float32)
    rows = {"max": [[0, 0.5, 0, 0.5], [0, 0.5, 0.5, 0]], "min": [[0, 0.5, 0, 0.5], [0, 0, 0, 1]]}
    for name, expected in rows.items():
        reduce = getattr(dc, name)
        ours = evaluate(env, lambda a, reduce=reduce: a.scope.grad(dc.sum(reduce(a, 1)), [a])[0], x)
        np.testing.assert_array_equal(ours, expected, err_msg=name)
    whole = evaluate(env, lambda a: a.scope.grad(dc.max(a), [a])[0], x)
    np.testing.assert_array_equal(whole, [[0, 0.5, 0, 0.5], [0, 0, 0, 0]])


@pytest.mark.parametrize("name", ["sum", "prod", "mean", "var", "std", "logsumexp", "int sum", "bool sum"])
def test_reductions_over_no_elements_give_numpys_values(env: dc.Environment, name: str) -> None:
    """sum 0, prod 1, mean/var/std NaN (numpy warns), logsumexp -inf (scipy's), for every kept element."""
    x = np.zeros((3, 0, 2), np.float32)
    ours, theirs = {"logsumexp": (dc.logsumexp, lambda a, axis: np.full((3, 2), -np.inf, np.float32)),
                    "int sum": (dc.sum, np.sum), "bool sum": (dc.sum, np.sum)}.get(name, REDUCTIONS.get(name, (None,)))
    x = x.astype(np.int32) if name == "int sum" else x.astype(bool) if name == "bool sum" else x
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = theirs(x, axis=1)
    result = evaluate(env, lambda a: ours(a, 1), x)
    assert result.shape == (3, 2)
    np.testing.assert_array_equal(result, expected.astype(result.dtype))


def test_max_min_and_args_over_no_elements_are_refused(env: dc.Environment) -> None:
    x = env.parameter("empty_reduce", (3, 0))
    for reduction in (dc.max, dc.min, dc.argmax, dc.argmin):
        with pytest.raises(dc.ShapeError, match=r"cannot reduce over an empty axis of shape \(3, 0\).*\n  at .*test_"):
            env.build_graph(lambda s, f=reduction: f(s.read(x), 1))


def test_softmax_over_an_empty_axis_is_empty_as_pytorch(env: dc.Environment) -> None:
    import torch
    for shape, axis in [((2, 0), 1), ((0, 3), 0), ((0, 3), 1), ((2, 0, 3), (1, 2))]:
        x = np.zeros(shape, np.float32)
        for ours, theirs in [(dc.softmax, torch.softmax), (dc.log_softmax, torch.log_softmax)]:
            result = evaluate(env, lambda a, f=ours, axis=axis: f(a, axis), x)
            expected = theirs(torch.from_numpy(x), axis if isinstance(axis, int) else axis[0])
            assert result.shape == tuple(expected.shape) == shape


def test_softmax_then_division_is_fused(env: dc.Environment) -> None:
    x = env.parameter("fused_reduce_x", (16, 300))
    y = env.parameter("fused_reduce_y", (16,))

    def build(s: dc.Scope) -> None:
        s.write(y, dc.mean(s.read(x) * 2.0, axis=1) + 1.0)

    graph = env.build_graph(build)
    assert graph.kernel_count == 1
    data = rng.normal(size=(16, 300)).astype(np.float32)
    env.write(x, data)
    env.run(graph)
    np.testing.assert_allclose(env.read(y), (data * 2).mean(1) + 1, rtol=1e-5, atol=1e-5)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_reductions_of_views(env: dc.Environment, data) -> None:
    ndim = data.draw(st.integers(1, 4))
    shape = tuple(data.draw(st.lists(st.integers(1, 9), min_size=ndim, max_size=ndim)))
    axes = tuple(sorted(set(data.draw(st.lists(st.integers(0, ndim - 1), max_size=ndim)))))
    flip = data.draw(st.booleans())
    x = np.random.default_rng(data.draw(st.integers(0, 1000))).normal(size=shape).astype(np.float32)

    def ours(a):
        a = dc.tanh(a.T if flip else a)
        return dc.sum(a * a, axis=axes) if axes else a

    view = np.tanh(x.T if flip else x)
    expected = (view * view).sum(axis=axes) if axes else view
    np.testing.assert_allclose(evaluate(env, ours, x), expected, rtol=1e-5, atol=1e-5)


def test_long_folds_split_between_whole_units(env: dc.Environment) -> None:
    """Partial sums (and partial products) take whole runs of `unit` elements, or an equal part of
    one, where that keeps at least half as many of them: a conv bias gradient over 100 images of
    28 x 28 gets 50 partial sums of two whole images rather than 70 of 1120 elements (index
    arithmetic per element that straddles images); one image splits as before; a weight gradient
    over 100 images of 28 x 28 gets 400 products of a quarter image rather than 560 of 140
    positions."""
    assert split.chunks(16, 78400, split.REDUCE_OUTPUTS, split.REDUCE_MIN_CHUNK) == 70
    assert split.chunks(16, 78400, split.REDUCE_OUTPUTS, split.REDUCE_MIN_CHUNK, unit=784) == 50
    assert split.chunks(16, 78400, split.REDUCE_OUTPUTS, split.REDUCE_MIN_CHUNK, unit=78400) == 70
    assert split.chunks(144, 78400, split.MATMUL_OUTPUTS, split.MATMUL_MIN_CHUNK) == 560
    assert split.chunks(144, 78400, split.MATMUL_OUTPUTS, split.MATMUL_MIN_CHUNK, unit=784) == 400
    assert split.chunks(2304, 19600, split.MATMUL_OUTPUTS, split.MATMUL_MIN_CHUNK, unit=196) == 100
    with pytest.raises(ValueError, match="unit 300 does not divide"):
        split.chunks(1, 1000, 4096, 128, unit=300)
    x = rng.normal(size=(100, 16, 28, 28)).astype(np.float32)
    folds = []

    def bias_gradient(a):
        folds.append(reductions._chunks(a, (0, 2, 3)))
        return dc.sum(a, axis=(0, 2, 3))

    np.testing.assert_allclose(evaluate(env, bias_gradient, x), x.sum(axis=(0, 2, 3)), rtol=1e-5,
                               atol=_tolerance(x))
    assert folds == [50]


QUAD_CASES = {  # name -> (descent fn, numpy fn, input): 96 outputs, so a CPU driver folds each in one thread
    "aligned sum": (lambda a: a.sum(1), lambda a: a.sum(1), rng.normal(size=(96, 48))),
    "padded sum": (lambda a: dc.pad(a, [(0, 0), (2, 2)], 1.0).sum(1),
                   lambda a: np.pad(a, [(0, 0), (2, 2)], constant_values=1.0).sum(1), rng.normal(size=(96, 48))),
    "offset sum": (lambda a: a[:, 1:45].sum(1), lambda a: a[:, 1:45].sum(1), rng.normal(size=(96, 48))),
    "strided max": (lambda a: a.max(0), lambda a: a.max(0), rng.normal(size=(12, 96))),
    "int max": (lambda a: a.max(1), lambda a: a.max(1), rng.integers(-50, 50, (96, 16)).astype(np.int32)),
    "uint sum": (lambda a: a.sum(1), lambda a: a.sum(1).astype(np.uint32),
                 rng.integers(0, 50, (96, 16)).astype(np.uint32)),
    "argmax with ties": (lambda a: dc.argmax(a, 1), lambda a: a.argmax(1).astype(np.int32),
                       rng.integers(0, 3, (96, 8)).astype(np.float32)),
    "argmin with ties": (lambda a: dc.argmin(a, 1), lambda a: a.argmin(1).astype(np.int32),
                       rng.integers(0, 3, (96, 8)).astype(np.float32)),
}


@pytest.mark.parametrize("name", sorted(QUAD_CASES))
def test_serial_reductions_of_four_element_steps(env: dc.Environment, name: str) -> None:
    """A CPU driver's thread that folds a whole reduction of 4k elements takes four at a time: one vec4
    fetch where they lie aligned in a buffer, four loads elsewhere (padding, an odd offset). The
    positions of argmax/argmin stay the first of the ties. Exact but for the float sums (rtol 1e-5)."""
    ours, theirs, x = QUAD_CASES[name]
    x = x.astype(np.float32) if x.dtype == np.float64 else x
    result = evaluate(env, ours, x)
    np.testing.assert_allclose(result, theirs(x), rtol=1e-5, atol=1e-5)
    assert result.dtype == theirs(x).dtype


def test_aligned_rows_are_fetched_as_vec4s_on_cpu_drivers(env: dc.Environment) -> None:
    """The four-element step is the point on lavapipe: a conv bias gradient's sums got 3-4x faster."""
    if env.device.kind != "cpu" or not env.device.limits.max_texel_buffer_elements:
        pytest.skip("four-element steps are for CPU drivers reading texel buffers")
    x = env.parameter("quad_x", (96, 48))
    y = env.parameter("quad_y", (96,))
    graph = env.build_graph(lambda s: s.write(y, s.read(x).sum(1)))
    (source,) = graph.sources
    assert "vec4 four = load_quad(output_index, q);" in source.glsl
    assert re.search(r"texelFetch\(\w+_vec4, ", source.glsl)


CUMULATIVE_CASES = [((5,), 0), ((3, 40), 1), ((40, 3), 0), ((2, 1100), -1), ((4, 5, 6), None), ((70,), 0),
                    ((33,), 0), ((32,), 0), ((1,), 0), ((0,), 0), ((2, 0, 3), 1), ((0, 40), 1), ((3, 4, 5), 1)]


@pytest.mark.parametrize("shape, axis", CUMULATIVE_CASES, ids=str)
@pytest.mark.parametrize("name", ["cumsum", "cumprod"])
def test_cumulative_as_numpy(env: dc.Environment, name: str, shape, axis) -> None:
    """Running sums and products, also of axes longer than one block (`SCAN_BLOCK`, in blocks and
    blocks of blocks), against numpy in float64: rtol 1e-5, and sums atol 1e-6 * sqrt(n) per element."""
    x = (rng.uniform(0.9, 1.1, shape) if name == "cumprod" else rng.normal(size=shape)).astype(np.float32)
    expected = getattr(np, name)(x.astype(np.float64), axis=axis)
    result = evaluate(env, lambda a: getattr(dc, name)(a, axis), x)
    assert result.shape == expected.shape and result.dtype == np.float32
    n = x.size if axis is None else x.shape[axis]
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-6 * np.sqrt(max(n, 1)) * 4)


def test_cumulative_of_integers_and_bools_is_exact(env: dc.Environment) -> None:
    """Integers stay int32 and bools count as int32 (numpy gives its default integer), exactly."""
    ints = rng.integers(-1000, 1000, (3, 2000)).astype(np.int32)
    np.testing.assert_array_equal(evaluate(env, lambda a: a.cumsum(1), ints), np.cumsum(ints, 1))
    np.testing.assert_array_equal(evaluate(env, lambda a: dc.cumprod(a, 0), ints[:, :5] % 7),
                                  np.cumprod(ints[:, :5] % 7, 0))
    mask = rng.integers(0, 2, (100,)).astype(bool)
    counted = evaluate(env, dc.cumsum, mask)
    assert counted.dtype == np.int32
    np.testing.assert_array_equal(counted, np.cumsum(mask))


def test_axis_0_of_a_scalar_and_one_axis_for_arg_reductions_as_numpy(env: dc.Environment) -> None:
    """numpy and torch take axis 0 or -1 of a 0-d array (they were a ShapeError); numpy's argmax
    takes one axis, not a tuple (one was accepted)."""
    scalar = np.array(3.0, np.float32)
    for name in ("sum", "max", "argmax", "cumsum"):
        for axis in (0, -1):
            result = evaluate(env, lambda a, name=name, axis=axis: getattr(dc, name)(a, axis), scalar)
            expected = getattr(np, name)(scalar, axis)
            assert result.shape == np.shape(expected), name
            np.testing.assert_array_equal(result, expected)
    with pytest.raises(dc.ShapeError, match="sum: axis 1 is out of range for 0 dimensions"):
        evaluate(env, lambda a: dc.sum(a, 1), scalar)
    with pytest.raises(TypeError, match=r"argmax: axis must be one integer or None, as numpy's, got \(0,\)\n  at "):
        evaluate(env, lambda a: a.argmax((0,)), np.ones((2, 3), np.float32))


def test_cumulative_axis_errors(env: dc.Environment) -> None:
    x = env.parameter("cumsum_err", (3, 4))
    with pytest.raises(dc.ShapeError, match="cumsum: axis 2 is out of range for 2 dimensions"):
        env.build_graph(lambda s: dc.cumsum(s.read(x), 2))
    with pytest.raises(dc.DTypeError, match="cumprod: cannot use list as an Array operand"):
        dc.cumprod([1.0, 2.0])


def test_rows_longer_than_a_drivers_loop_limit_fold_completely(env: dc.Environment) -> None:
    """lavapipe ends an invocation's loops after 65535 iterations in all: rows of 70001 elements
    with 64 outputs (one thread a row, on CPU drivers) used to stop at 65535. Now such rows are
    shared among a workgroup's threads wherever one thread's loops would run too long."""
    x = rng.normal(size=(64, 70001)).astype(np.float32)
    np.testing.assert_allclose(evaluate(env, lambda a: dc.sum(a, 1), x), x.sum(1), rtol=1e-5, atol=_tolerance(x))
    np.testing.assert_array_equal(evaluate(env, lambda a: dc.max(a, 1), x), x.max(1))
    np.testing.assert_array_equal(evaluate(env, lambda a: dc.argmin(a, 1), x), x.argmin(1))
    np.testing.assert_allclose(evaluate(env, lambda a: dc.logsumexp(a, 1), x),
                               np.log(np.exp(x.astype(np.float64)).sum(1)), rtol=1e-5)


def test_loops_of_fused_powers_count_against_a_drivers_loop_limit(env: dc.Environment) -> None:
    """A power with an array exponent loops over its bits: up to 32 iterations an int32 element, 7 a
    float32 one. Rows of 4001 and 10007 such elements (prime lengths, which fold in one pass), one thread
    a row, stopped at lavapipe's 65535 iterations in all: the sum of 4001 ones was 2850."""
    ones, exponents = np.ones((64, 4001), np.int32), np.full((64, 4001), 2**20 + 1, np.int32)
    np.testing.assert_array_equal(evaluate(env, lambda a, e: dc.sum(a**e, 1), ones, exponents), np.full(64, 4001))
    x = rng.uniform(0.999, 1.001, size=(64, 10007)).astype(np.float32)
    powers = np.full(10007, 64.0, np.float32)
    expected = (x.astype(np.float64) ** 64).sum(1)
    np.testing.assert_allclose(evaluate(env, lambda a, p: dc.sum(a**p, 1), x, powers), expected, rtol=1e-4)


def test_kernels_keep_within_a_drivers_loop_limit() -> None:
    """With a loop limit of 200 iterations an invocation (as if measured so): long rows move to
    wider workgroups and still fold right; what no workgroup can hold is refused with the reason."""
    import dataclasses

    env = dc.Environment()
    env.device = dataclasses.replace(env.device, limits=dataclasses.replace(env.device.limits, max_loop_trips=200))
    x = rng.normal(size=(64, 1000)).astype(np.float32)
    np.testing.assert_allclose(evaluate(env, lambda a: dc.sum(a, 1), x), x.sum(1), rtol=1e-5, atol=_tolerance(x))
    wide = rng.normal(size=(2, 60001)).astype(np.float32)
    np.testing.assert_allclose(evaluate(env, lambda a: dc.sum(a, 1), wide), wide.sum(1), rtol=1e-5,
                               atol=_tolerance(wide))
    message = r"needs \d+ loop iterations in one thread, and this device's driver ends a thread's loops after 200"
    with pytest.raises(dc.DeviceError, match="a max of 600000 elements .*" + message):
        evaluate(env, lambda a: dc.max(a, 1), np.zeros((2, 600000), np.float32))
    with pytest.raises(dc.DeviceError, match="a matmul over K = 5003 " + message):
        evaluate(env, lambda a, b: a @ b, np.zeros((64, 5003), np.float32), np.zeros((5003, 64), np.float32))


def test_the_loop_limit_is_measured() -> None:
    """lavapipe's is 65535; other drivers have none the probe finds (it runs 2**20 iterations)."""
    limits = dc.Environment().device.limits
    from descent.runtime.device import LOOP_PROBE_TRIPS, UNLIMITED
    if "llvmpipe" in dc.Environment().device.name:
        assert limits.max_loop_trips == 65535
    else:
        assert limits.max_loop_trips == UNLIMITED or 0 < limits.max_loop_trips < LOOP_PROBE_TRIPS


def test_softmax_gradients_of_fused_rows_and_log_softmax_of_large_logits(env: dc.Environment) -> None:
    """softmax of a fused product whose rows are not whole vec4s: its max, recomputed in another kernel
    that the driver may round differently, found no equal element and the gradient was 0/0. And
    log_softmax of logits near 1e6 as torch's: x - logsumexp(x) lost their low bits."""
    import torch

    a, b = rng.normal(size=(200, 6)).astype(np.float32), rng.normal(size=(200, 6)).astype(np.float32)
    weights = rng.normal(size=(200, 6)).astype(np.float32)

    def gradient(p, q, w):
        return p.scope.grad(dc.sum(dc.softmax((p * q) * 0.2, -1) * w), [p])[0]

    ta = torch.from_numpy(a).requires_grad_()
    (torch.softmax((ta * torch.from_numpy(b)) * 0.2, -1) * torch.from_numpy(weights)).sum().backward()
    np.testing.assert_allclose(evaluate(env, gradient, a, b, weights), ta.grad.numpy(), rtol=1e-4, atol=1e-6)
    logits = rng.normal(size=(8, 10)).astype(np.float32) + 1e6
    np.testing.assert_allclose(evaluate(env, lambda x: dc.log_softmax(x, -1), logits),
                               torch.log_softmax(torch.from_numpy(logits), -1).numpy(), rtol=0, atol=1e-5)
