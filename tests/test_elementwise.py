"""Every elementwise op against numpy, with broadcasting, scalars and dtypes.

Tolerances: arithmetic rtol 1e-6; transcendental functions rtol 1e-4, atol 1e-5 (GPU libm-style
approximations are allowed by the Vulkan spec to be a few ulp off, more near poles).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import descent as dc
from tests.conftest import evaluate

rng = np.random.default_rng(0)
SHAPES = [(), (1,), (7,), (3, 5), (2, 3, 4), (1, 1)]

UNARY = {
    "neg": (lambda x: -x, np.negative, (-3, 3)),
    "contiguous": (dc.contiguous, lambda x: x, (-3, 3)),
    "abs": (dc.abs, np.abs, (-3, 3)),
    "sign": (dc.sign, np.sign, (-3, 3)),
    "exp": (dc.exp, np.exp, (-5, 5)),
    "log": (dc.log, np.log, (0.01, 10)),
    "log1p": (dc.log1p, np.log1p, (-0.5, 10)),
    "sqrt": (dc.sqrt, np.sqrt, (0, 10)),
    "rsqrt": (dc.rsqrt, lambda x: 1 / np.sqrt(x), (0.1, 10)),
    "sin": (dc.sin, np.sin, (-6, 6)),
    "cos": (dc.cos, np.cos, (-6, 6)),
    "tan": (dc.tan, np.tan, (-1.2, 1.2)),
    "tanh": (dc.tanh, np.tanh, (-30, 30)),
    "sigmoid": (dc.sigmoid, lambda x: 1 / (1 + np.exp(-x)), (-30, 30)),
    "erf": (dc.erf, np.vectorize(math.erf), (-4, 4)),
    "relu": (dc.relu, lambda x: np.maximum(x, 0), (-3, 3)),
    "leaky_relu": (lambda x: dc.leaky_relu(x, 0.1), lambda x: np.where(x > 0, x, 0.1 * x), (-3, 3)),
    "exp2": (dc.exp2, np.exp2, (-5, 5)),
    "expm1": (dc.expm1, np.expm1, (-3, 3)),
    "log2": (dc.log2, np.log2, (0.01, 10)),
    "log10": (dc.log10, np.log10, (0.01, 10)),
    "sinh": (dc.sinh, np.sinh, (-5, 5)),
    "cosh": (dc.cosh, np.cosh, (-5, 5)),
    "asin": (dc.asin, np.arcsin, (-1, 1)),
    "acos": (dc.acos, np.arccos, (-1, 1)),
    "atan": (dc.atan, np.arctan, (-10, 10)),
    "floor": (dc.floor, np.floor, (-5, 5)),
    "ceil": (dc.ceil, np.ceil, (-5, 5)),
    "trunc": (dc.trunc, np.trunc, (-5, 5)),
    "round": (dc.round, np.round, (-5, 5)),
    "clip": (lambda x: dc.clip(x, -1.0, 0.5), lambda x: np.clip(x, -1.0, 0.5), (-3, 3)),
}
EXACT = {"contiguous", "neg", "abs", "sign", "relu", "leaky_relu", "floor", "ceil", "trunc", "round", "clip"}


@pytest.mark.parametrize("name", sorted(UNARY))
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_unary(env: dc.Environment, name: str, shape: tuple[int, ...]) -> None:
    ours, theirs, (lo, hi) = UNARY[name]
    x = rng.uniform(lo, hi, shape).astype(np.float32)
    if name == "round" and x.size > 1:
        x.reshape(-1)[:2] = (2.5, -0.5)
    rtol, atol = (0, 0) if name in EXACT else (1e-4, 1e-5)
    np.testing.assert_allclose(evaluate(env, ours, x), theirs(x), rtol=rtol, atol=atol)


BINARY = {
    "add": (lambda a, b: a + b, np.add),
    "sub": (lambda a, b: a - b, np.subtract),
    "mul": (lambda a, b: a * b, np.multiply),
    "div": (lambda a, b: a / b, np.divide),
    "maximum": (dc.maximum, np.maximum),
    "minimum": (dc.minimum, np.minimum),
    "pow": (lambda a, b: dc.abs(a) ** b, lambda a, b: np.abs(a) ** b),
    "atan2": (dc.atan2, np.arctan2),
}
BROADCASTS = [((3, 4), (3, 4)), ((3, 1), (1, 4)), ((5,), (2, 5)), ((), (3,)), ((2, 1, 3), (4, 1)), ((4, 1), ())]


@pytest.mark.parametrize("name", sorted(BINARY))
@pytest.mark.parametrize("shapes", BROADCASTS, ids=str)
def test_binary_broadcasting(env: dc.Environment, name: str, shapes) -> None:
    ours, theirs = BINARY[name]
    a = rng.uniform(0.5, 2, shapes[0]).astype(np.float32) * rng.choice([-1, 1], shapes[0]).astype(np.float32)
    b = rng.uniform(0.5, 2, shapes[1]).astype(np.float32)
    np.testing.assert_allclose(evaluate(env, ours, a, b), theirs(a, b), rtol=1e-5, atol=1e-6)


def test_pow_negative_base_integral_exponent(env: dc.Environment) -> None:
    a = np.array([-2.0, -2.0, -0.5, 0.0, 3.0, -1.5], np.float32)
    b = np.array([3.0, 2.0, -1.0, 2.0, 0.5, 0.5], np.float32)
    with np.errstate(invalid="ignore"):
        expected = a**b
    np.testing.assert_allclose(evaluate(env, lambda x, y: x**y, a, b), expected, rtol=1e-5, equal_nan=True)


@pytest.mark.parametrize("scalar", [2, 0.5, -3.0])
def test_scalar_operands(env: dc.Environment, scalar: float) -> None:
    x = rng.uniform(0.5, 2, (3, 4)).astype(np.float32)
    expected = np.stack([x + scalar, scalar - x, x * scalar, scalar / x, x**2, np.float32(2.0) ** x])
    result = evaluate(env, lambda a: dc_stack([a + scalar, scalar - a, a * scalar, scalar / a, a**2, 2.0**a]), x)
    np.testing.assert_allclose(result, expected, rtol=1e-5)


def dc_stack(arrays: list[dc.Array]) -> dc.Array:
    """Stack by summing masked broadcasts: enough for tests until concat exists."""
    count = len(arrays)
    total = None
    for k, a in enumerate(arrays):
        onehot = np.zeros((count,) + (1,) * a.ndim, np.float32)
        onehot[k] = 1
        term = a.scope.constant(onehot) * dc.expand_dims(a, 0)
        total = term if total is None else total + term
    return total


COMPARISONS = {
    "lt": (lambda a, b: a < b, np.less),
    "le": (lambda a, b: a <= b, np.less_equal),
    "gt": (lambda a, b: a > b, np.greater),
    "ge": (lambda a, b: a >= b, np.greater_equal),
    "eq": (lambda a, b: a == b, np.equal),
    "ne": (lambda a, b: a != b, np.not_equal),
}


@pytest.mark.parametrize("name", sorted(COMPARISONS))
def test_comparisons(env: dc.Environment, name: str) -> None:
    ours, theirs = COMPARISONS[name]
    a = rng.integers(0, 3, (4, 5)).astype(np.float32)
    b = rng.integers(0, 3, (5,)).astype(np.float32)
    result = evaluate(env, ours, a, b)
    assert result.dtype == np.bool_
    np.testing.assert_array_equal(result, theirs(a, b))


def test_where_and_logical(env: dc.Environment) -> None:
    a = rng.normal(size=(3, 4)).astype(np.float32)
    b = rng.normal(size=(4,)).astype(np.float32)
    result = evaluate(env, lambda x, y: dc.where(x > y, x, y * 2), a, b)
    np.testing.assert_array_equal(result, np.where(a > b, a, b * 2))
    np.testing.assert_array_equal(evaluate(env, lambda x, y: dc.select(x > 0, 1.0, y), a, b), np.where(a > 0, 1.0, b))
    result = evaluate(env, lambda x, y: ((x > 0) & (y > 0)) | ~(x > y), a, b)
    np.testing.assert_array_equal(result, ((a > 0) & (b > 0)) | ~(a > b))


@pytest.mark.parametrize("dtype", [np.int32, np.uint32])
def test_floor_divide_and_remainder_on_integers_as_numpy(env: dc.Environment, dtype) -> None:
    values = np.arange(-7, 8) if dtype == np.int32 else np.arange(0, 15)
    a = values.astype(dtype).reshape(-1, 1)
    b = np.array([-3, -2, -1, 0, 1, 2, 5] if dtype == np.int32 else [0, 1, 2, 5, 7], dtype)
    with np.errstate(divide="ignore"):
        expected = np.stack([a // b, a % b])
    result = evaluate(env, lambda x, y: dc.stack([x // y, x % y]), a, b)
    assert result.dtype == dtype
    np.testing.assert_array_equal(result, expected)
    shifted = a + dtype(8)
    np.testing.assert_array_equal(evaluate(env, lambda x: dc.stack([7 // x, 7 % x, x // 3, x % 3]), shifted),
                                  np.stack([7 // shifted, 7 % shifted, shifted // 3, shifted % 3]))


def test_floor_divide_and_remainder_on_floats_as_numpy(env: dc.Environment) -> None:
    a = np.array([-7.5, -3.0, -0.2, 0.0, 0.7, 3.25, 9.0], np.float32).reshape(-1, 1)
    b = np.array([-2.5, -0.75, 0.6, 4.0], np.float32)
    result = evaluate(env, lambda x, y: dc.stack([x // y, x % y, 2.0 // (x + y), x % 2 + y * 0]), a, b)
    expected = np.stack([a // b, a % b, 2.0 // (a + b), a % 2 + b * 0])
    np.testing.assert_allclose(result, expected, rtol=1e-6, atol=1e-6)
    assert evaluate(env, lambda x: x // 2, np.arange(3, dtype=np.int32)).dtype == np.int32
    assert evaluate(env, lambda x: x // 2.0, np.arange(3, dtype=np.int32)).dtype == np.float32


@pytest.mark.parametrize("dtype", [np.int32, np.uint32])
def test_integer_pow_stays_integer_and_exact(env: dc.Environment, dtype) -> None:
    a = np.arange(-9 if dtype == np.int32 else 0, 10).astype(dtype).reshape(-1, 1)
    b = np.arange(0, 12).astype(dtype)
    result = evaluate(env, lambda x, y: x**y, a, b)
    assert result.dtype == dtype
    np.testing.assert_array_equal(result, a**b)  # 9 ** 11 wraps in int32 as numpy's does
    np.testing.assert_array_equal(evaluate(env, lambda x: 3**x + x**2, b), 3**b + b**2)
    assert evaluate(env, lambda x: x**0.5, b).dtype == np.float32


def test_integer_pow_with_negative_exponents(env: dc.Environment) -> None:
    a = np.array([1, -1, -1, 2, -3, 0], np.int32)
    b = np.array([-3, -2, -3, -1, -2, 2], np.int32)
    np.testing.assert_array_equal(evaluate(env, lambda x, y: x**y, a, b), [1, 1, -1, 0, 0, 0])
    with pytest.raises(ValueError, match=r"pow: integers to the negative power -2 are not allowed.*\n  at .*test_"):
        evaluate(env, lambda x: x**-2, a)
    floats = a[:5].astype(np.float32)
    np.testing.assert_allclose(evaluate(env, lambda x: x.astype("float32") ** -2, a[:5]), floats**-2.0)


def test_float_floor_divide_and_remainder_exactly_as_numpy(env: dc.Environment) -> None:
    """The quotient is mended by the exact remainder (a Dekker product), so `1.0 // 0.1` is 9 as in
    numpy (1.0 / 0.1 rounds to 10 in float32) and `%` is numpy's fmod-based value, bit for bit,
    wherever |a / b| < 2 ** 24."""
    a = (rng.normal(size=4000) * np.repeat([1.0, 100.0], 2000)).astype(np.float32)
    b = rng.normal(size=4000).astype(np.float32)
    b[::2] = np.round(b[::2] * 10) / 10 + np.float32(0.1)  # decimal divisors, never exact in binary
    b[b == 0] = 0.5
    a[:3], b[:3] = [1.0, -1.0, 0.3], [0.1, 0.1, 0.1]
    a[3:7], b[3:7] = [-1e-8, 1e-8, 1e30, -1.2435955e30], [1.0, -1.0, 1e35, -1.4058631e27]  # tiny and huge
    np.testing.assert_array_equal(evaluate(env, lambda x, y: x // y, a, b), a // b)
    np.testing.assert_array_equal(evaluate(env, lambda x, y: x % y, a, b), a % b)


def test_float_remainder_beyond_two_to_the_24_is_numpy_s_exact_fmod(env: dc.Environment) -> None:
    """Where |a / b| >= 2 ** 24 the remainder comes from the mantissas in integers, exact as numpy's
    fmod: it was a - b * floor(a / b) rounded (1e9 % 6.2831855 gave -64, 123456789 % 7 gave 8)."""
    a = (rng.uniform(1, 2, 3000) * 10.0 ** rng.integers(7, 38, 3000) * rng.choice([-1, 1], 3000)).astype(np.float32)
    b = (rng.uniform(1, 2, 3000) * 10.0 ** rng.integers(-30, 3, 3000) * rng.choice([-1, 1], 3000)).astype(np.float32)
    a[:4], b[:4] = [1e9, 123456789.0, 1e20, -3e38], [6.2831855, 7.0, 1e-30, 1e-3]
    with np.errstate(over="ignore"):
        wide = np.abs(a / b) >= 2 ** 24
    assert wide.mean() > 0.9
    ours = evaluate(env, lambda x, y: x % y, a, b)
    np.testing.assert_array_equal(ours, np.remainder(a, b))
    np.testing.assert_array_equal(np.signbit(ours), np.signbit(np.remainder(a, b)))
    assert np.all(np.abs(ours) < np.abs(b))


def test_arithmetic_at_special_values_as_numpy(env: dc.Environment) -> None:
    """Every float binary op over a grid of signed zeros, infinities and NaN; `//` and `%` keep
    numpy's signs too (x % inf is x where the signs agree, inf where they differ; a zero remainder
    takes the divisor's sign)."""
    values = [-np.inf, -5.0, -0.5, -0.0, 0.0, 0.5, 3.0, np.inf, np.nan]
    a = np.array(values, np.float32).reshape(-1, 1)
    b = np.array(values, np.float32)
    ops = [(lambda x, y: x + y, np.add), (lambda x, y: x - y, np.subtract), (lambda x, y: x * y, np.multiply),
           (lambda x, y: x / y, np.divide), (dc.maximum, np.maximum), (dc.minimum, np.minimum),
           (lambda x, y: x // y, np.floor_divide), (lambda x, y: x % y, np.remainder)]
    result = evaluate(env, lambda x, y: dc.stack([ours(x, y) for ours, _ in ops]), a, b)
    with np.errstate(all="ignore"):
        expected = np.stack([theirs(a, b) for _, theirs in ops])
    np.testing.assert_allclose(result, expected, rtol=3e-7, atol=0)  # Vulkan allows / 2.5 ulp; inf and NaN exact
    numbers = ~np.isnan(expected[-2:])  # a NaN's sign means nothing
    np.testing.assert_array_equal(np.signbit(result[-2:][numbers]), np.signbit(expected[-2:][numbers]))


@pytest.mark.parametrize("dtype", [np.int32, np.uint32])
def test_bitwise_ops_on_integers_work_bit_by_bit(env: dc.Environment, dtype) -> None:
    low = -2**31 if dtype == np.int32 else 0
    a = rng.integers(low, 2**31, (5, 4)).astype(dtype)
    b = rng.integers(low, 2**31, (4,)).astype(dtype)
    result = evaluate(env, lambda x, y: ((x & y) | (x ^ 0x0F0F)) ^ ~y, a, b)
    assert result.dtype == dtype
    np.testing.assert_array_equal(result, ((a & b) | (a ^ dtype(0x0F0F))) ^ ~b)
    np.testing.assert_array_equal(evaluate(env, lambda x: 6 & x, a), 6 & a)


def test_bitwise_ops_refuse_floats_and_keep_bools_logical(env: dc.Environment) -> None:
    a = rng.normal(size=(3,)).astype(np.float32)
    mask = np.array([True, False, True])
    np.testing.assert_array_equal(evaluate(env, lambda m: (m ^ True) & ~m | m, mask), (mask ^ True) & ~mask | mask)
    with pytest.raises(dc.DTypeError, match="bitwise_and: needs integer or bool operands, got float32"):
        evaluate(env, lambda x: x & 1, a)
    with pytest.raises(dc.DTypeError, match="bitwise_not"):
        evaluate(env, lambda x: ~x, a)


def test_integer_arithmetic_and_casts(env: dc.Environment) -> None:
    a = rng.integers(-50, 50, (6, 4)).astype(np.int32)
    b = rng.integers(1, 9, (4,)).astype(np.int32)
    result = evaluate(env, lambda x, y: x * y - 3 + dc.abs(x), a, b)
    assert result.dtype == np.int32
    np.testing.assert_array_equal(result, a * b - 3 + np.abs(a))
    quotient = evaluate(env, lambda x, y: x / y, a, b)
    assert quotient.dtype == np.float32
    np.testing.assert_allclose(quotient, (a / b).astype(np.float32), rtol=1e-6)
    f = rng.uniform(-9, 9, (10,)).astype(np.float32)
    np.testing.assert_array_equal(evaluate(env, lambda x: x.astype(dc.int32), f), f.astype(np.int32))
    np.testing.assert_array_equal(evaluate(env, lambda x: x.astype("float32") * 0.5, a), a.astype(np.float32) * 0.5)
    np.testing.assert_array_equal(evaluate(env, lambda x: (x > 0).astype(dc.float32), f), (f > 0).astype(np.float32))
    u = rng.integers(0, 1000, (5,)).astype(np.uint32)
    np.testing.assert_array_equal(evaluate(env, lambda x: x * 3 + 1, u), u * 3 + 1)


def test_nan_propagates_and_division_by_a_literal_zero(env: dc.Environment) -> None:
    """NaN passes through maximum, minimum, relu as in numpy; x / 0.0 is inf, -inf or NaN
    (a driver folds a division by the literal 0.0 to 0 unless codegen writes it as x * inf)."""
    x = np.array([1.0, -1.0, 0.0, 2.0, np.nan], np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        cases = {
            "maximum": (lambda a: dc.maximum(a, 0.5), np.maximum(x, 0.5)),
            "maximum, NaN second": (lambda a: dc.maximum(0.5, a), np.maximum(0.5, x)),
            "minimum": (lambda a: dc.minimum(a, 0.5), np.minimum(x, 0.5)),
            # a NaN branch of a + b gave x + (-x), which lavapipe folds to 0
            "maximum of x and -x": (lambda a: dc.maximum(a, -a), np.maximum(x, -x)),
            "minimum of x and -x": (lambda a: dc.minimum(a, -a), np.minimum(x, -x)),
            "relu": (dc.relu, np.where(x <= 0, 0, x)),
            "/ 0.0": (lambda a: a / 0.0, x / np.float32(0.0)),
            "/ -0.0": (lambda a: a / -0.0, x / np.float32(-0.0)),
        }
    for name, (fn, expected) in cases.items():
        np.testing.assert_array_equal(evaluate(env, fn, x), expected, err_msg=name)


def test_clip_keeps_nan_of_x_and_of_its_bounds(env: dc.Environment) -> None:
    """NaN in x or in either bound (a Python number or an array) gives NaN, as numpy's clip; other
    elements are clipped as before."""
    x = np.array([1.0, -1.0, 0.5, 2.0, np.nan], np.float32)
    lo = np.array([0.0, np.nan, 0.0, 0.0, 0.0], np.float32)
    hi = np.array([0.8, 0.8, np.nan, 0.8, 0.8], np.float32)
    np.testing.assert_array_equal(evaluate(env, lambda a: dc.clip(a, 0.0, 1.0), x), np.clip(x, 0, 1))
    np.testing.assert_array_equal(evaluate(env, lambda a: dc.clip(a, None, 0.5), x), np.clip(x, None, 0.5))
    np.testing.assert_array_equal(evaluate(env, dc.clip, x, lo, hi), np.clip(x, lo, hi))
    np.testing.assert_array_equal(evaluate(env, lambda a: dc.clip(a, float("nan"), 1.0), x), np.full(5, np.nan))
    integers = np.array([-5, 0, 7], np.int32)
    np.testing.assert_array_equal(evaluate(env, lambda a: dc.clip(a, -1, 3), integers), np.clip(integers, -1, 3))


def test_isnan_isinf_isfinite(env: dc.Environment) -> None:
    x = np.array([1.0, -np.inf, np.inf, np.nan, 0.0, -3e38], np.float32)
    for name in ("isnan", "isinf", "isfinite"):
        ours, theirs = getattr(dc, name), getattr(np, name)
        np.testing.assert_array_equal(evaluate(env, ours, x), theirs(x), err_msg=name)
        for values in (np.array([3, -1], np.int32), np.array([True, False])):
            np.testing.assert_array_equal(evaluate(env, ours, values), theirs(values), err_msg=f"{name} {values}")
        assert ours(float("nan")) is bool(theirs(float("nan")))


def test_numpy_scalars_are_operands_and_arrays_are_refused(env: dc.Environment) -> None:
    """numpy scalars act as Python scalars on either side; a numpy array names the fix."""
    x = np.array([1.0, -2.0, 3.0], np.float32)
    np.testing.assert_array_equal(evaluate(env, lambda a: np.float64(2) * a + a * np.int64(1), x), 3 * x)
    np.testing.assert_array_equal(evaluate(env, lambda a: dc.maximum(a, np.float32(0)) - np.float32(1), x),
                                  np.maximum(x, 0) - 1)
    integers = evaluate(env, lambda a: a * np.int64(3), np.array([1, 2], np.int32))
    assert integers.dtype == np.int32 and integers.tolist() == [3, 6]
    with pytest.raises(dc.DTypeError, match=r"(?s)add: cannot use ndarray .*s\.constant.*test_elementwise"):
        env.build_graph(lambda s: s.constant(x) + np.ones(3))


def test_int_array_with_float_scalar_promotes_to_float(env: dc.Environment) -> None:
    a = np.arange(6, dtype=np.int32)
    result = evaluate(env, lambda x: x * 0.5, a)
    assert result.dtype == np.float32
    np.testing.assert_array_equal(result, a * np.float32(0.5))


def test_nan_and_small_values_through_sign_tanh_pow(env: dc.Environment) -> None:
    x = np.array([np.nan, -np.inf, np.inf, -1e-7, 1e-5, 1e-3, 0.1, 0.124, 0.126, -0.9, 0.0], np.float32)
    np.testing.assert_array_equal(evaluate(env, dc.sign, x), np.sign(x))
    result = evaluate(env, dc.tanh, x)
    np.testing.assert_allclose(result, np.tanh(x.astype(np.float64)), rtol=2e-6, atol=0)  # relative, even near 0
    np.testing.assert_array_equal(evaluate(env, lambda a: 1.0**a, x), np.ones_like(x))


def test_pow_special_values_as_numpy(env: dc.Environment) -> None:
    """C99's pow at zeros, ones, infinities and NaN, signed zeros included (numpy follows C99)."""
    values = [-np.inf, -65.0, -3.0, -2.0, -1.0, -0.5, -0.0, 0.0, 0.5, 1.0, 2.0, 3.0, 65.0, np.inf, np.nan]
    base = np.array(values, np.float32).reshape(-1, 1)
    exponent = np.array(values, np.float32)
    with np.errstate(all="ignore"):
        expected = base**exponent
    result = evaluate(env, lambda a, b: a**b, base, exponent)
    np.testing.assert_allclose(result, expected, rtol=1e-5, equal_nan=True)  # exp2(log2) of 3**65; infinities exact
    numbers = ~np.isnan(expected)  # a NaN's sign means nothing
    np.testing.assert_array_equal(np.signbit(result[numbers]), np.signbit(expected[numbers]))


def test_inverse_trigonometric_and_hyperbolic_within_four_ulp(env: dc.Environment) -> None:
    """descent's own asin, acos, atan, atan2, sinh and expm1 (Vulkan lets the GLSL built-ins be
    4096 ulp off) within 4 ulp of float64 numpy, relative accuracy kept near zero."""
    tiny = np.float32([1e-30, -3e-8, 1e-6, -0.01, 0.1])
    unit = np.concatenate([tiny, rng.uniform(-1, 1, 3000).astype(np.float32), np.float32([-1, 1, 0.4142])])
    wide = np.concatenate([unit, rng.normal(0, 20, 1000).astype(np.float32), np.float32([2.4142, 2.4143])])
    cases = [(dc.asin, np.arcsin, unit), (dc.acos, np.arccos, unit), (dc.atan, np.arctan, wide),
             (dc.sinh, np.sinh, unit), (dc.expm1, np.expm1, unit)]  # further out, exp's own error (3 + 2|x| ulp)
    for ours, theirs, x in cases:
        expected = theirs(x.astype(np.float64))
        ulp = np.spacing(np.abs(expected).astype(np.float32)).astype(np.float64)
        assert np.max(np.abs(evaluate(env, ours, x) - expected) / ulp) <= 4, ours.__name__
    y, x = rng.normal(size=(2, 3000)).astype(np.float32)
    expected = np.arctan2(y.astype(np.float64), x.astype(np.float64))
    ulp = np.spacing(np.abs(expected).astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(evaluate(env, dc.atan2, y, x) - expected) / ulp) <= 4


def test_logarithms_and_pow_near_one(env: dc.Environment) -> None:
    """Near 1, where GLSL's log and log2 are only 2^-21 off in absolute terms (thousands of ulp of a
    small result), log, log2 and log10 sum log1p's series, and pow takes its logarithm from them."""
    x = np.concatenate([1 + rng.uniform(-0.1, 0.1, 3000), [1 + 2**-23, 1 - 2**-24]]).astype(np.float32)
    for ours, theirs in [(dc.log, np.log), (dc.log2, np.log2), (dc.log10, np.log10)]:
        expected = theirs(x.astype(np.float64))
        ulp = np.spacing(np.abs(expected).astype(np.float32)).astype(np.float64)
        assert np.max(np.abs(evaluate(env, ours, x) - expected) / ulp) <= 4, ours.__name__
    base = np.float32([0.99999994, 1.0000001, 0.95, 1.05])
    exponent = np.float32([16777215, 1e6, 200.5, -100.5])
    np.testing.assert_allclose(evaluate(env, lambda a, b: a**b, base, exponent),
                               base.astype(np.float64) ** exponent, rtol=1e-5)


def test_new_math_functions_at_special_values_as_numpy(env: dc.Environment) -> None:
    """NaN, infinities, signed zeros and arguments outside the domain (asin(2) is NaN) as numpy."""
    x = np.float32([np.nan, -np.inf, np.inf, -0.0, 0.0, -1.0, 1.0, -2.0, 2.0, 100.0, -100.0])
    cases = [(dc.exp2, np.exp2), (dc.expm1, np.expm1), (dc.log2, np.log2), (dc.log10, np.log10),
             (dc.sinh, np.sinh), (dc.cosh, np.cosh), (dc.asin, np.arcsin), (dc.acos, np.arccos),
             (dc.atan, np.arctan), (dc.ceil, np.ceil), (dc.trunc, np.trunc)]
    for ours, theirs in cases:
        with np.errstate(all="ignore"):
            expected = theirs(x.astype(np.float64)).astype(np.float32)
        result = evaluate(env, ours, x)
        np.testing.assert_allclose(result, expected, rtol=1e-6, err_msg=ours.__name__)
        numbers = ~np.isnan(expected)
        np.testing.assert_array_equal(np.signbit(result[numbers]), np.signbit(expected[numbers]), ours.__name__)
    grid = np.float32([-np.inf, -2.0, -0.0, 0.0, 3.0, np.inf, np.nan])
    expected = np.arctan2(grid.reshape(-1, 1), grid)
    result = evaluate(env, dc.atan2, grid.reshape(-1, 1), grid)
    np.testing.assert_allclose(result, expected, rtol=1e-6)
    numbers = ~np.isnan(expected)
    np.testing.assert_array_equal(np.signbit(result[numbers]), np.signbit(expected[numbers]))
    assert dc.arctan2 is dc.atan2 and dc.arcsin is dc.asin
    assert evaluate(env, dc.ceil, np.arange(3, dtype=np.int32)).dtype == np.int32
    with pytest.raises(dc.GraphError, match="ceil: needs at least one Array operand"):
        env.build_graph(lambda s: dc.ceil(2.5))


def test_division_by_a_literal_zero_as_numpy(env: dc.Environment) -> None:
    x = np.array([-2.5, 0.0, 3.0], np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = np.stack([x / 0.0, x // 0.0, x % 0.0, x // -0.0])
    result = evaluate(env, lambda a: dc.stack([a / 0.0, a // 0.0, a % 0.0, a // -0.0]), x)
    np.testing.assert_array_equal(result, expected)


def test_integers_keep_their_type_through_floor_and_round(env: dc.Environment) -> None:
    x = np.array([16777217, -3, 5], np.int32)
    for fn in (dc.floor, dc.round):
        result = evaluate(env, fn, x)
        assert result.dtype == np.int32
        np.testing.assert_array_equal(result, x)


def test_bools_combine_as_numpy(env: dc.Environment) -> None:
    a = np.array([True, True, False, False])
    b = np.array([True, False, True, False])
    result = evaluate(env, lambda x, y: dc.stack([x + y, x * y, dc.maximum(x, y), dc.minimum(x, y), x + True]), a, b)
    assert result.dtype == np.bool_
    np.testing.assert_array_equal(result, np.stack([a + b, a * b, np.maximum(a, b), np.minimum(a, b), a + True]))
    assert evaluate(env, lambda x: dc.max(x), a).dtype == np.bool_
    np.testing.assert_array_equal(evaluate(env, lambda x, y: dc.sum(x + y), a, b), 3)
    with pytest.raises(dc.DTypeError, match=r"sub is not defined on bools \(as numpy\); use \^ or ~"):
        evaluate(env, lambda x, y: x - y, a, b)


def test_mixed_signedness_and_out_of_range_integers_are_refused(env: dc.Environment) -> None:
    i = np.array([-1, 5], np.int32)
    u = np.array([4294967295, 3], np.uint32)
    with pytest.raises(dc.DTypeError, match=r"eq: int32 and uint32 operands would need int64.*\n  at .*test_"):
        evaluate(env, lambda x, y: x == y, i, u)
    with pytest.raises(dc.DTypeError, match="concat: int32 and uint32"):
        evaluate(env, lambda x, y: dc.concat([x, y]), i, u)
    with pytest.raises(OverflowError, match=r"sub: Python integer -1 is out of bounds for uint32\n  at .*test_"):
        evaluate(env, lambda y: y - -1, u)
    with pytest.raises(OverflowError, match="add: Python integer 2147483648 is out of bounds for int32"):
        evaluate(env, lambda x: x + 2**31, i)
    np.testing.assert_array_equal(evaluate(env, lambda x: x + (2**31 - 1), i), i + np.int32(2**31 - 1))
    np.testing.assert_array_equal(evaluate(env, lambda x, y: x + y.astype("int32"), i, u), [-2, 8])


def test_constants_promote_as_arrays_of_their_type_and_must_fit_it(env: dc.Environment) -> None:
    """s.constant makes a 0-d Array of its dtype, which promotes as one (it promoted as a Python
    scalar: an int32 constant added to uint32 wrapped, a uint32 constant minus 4 became int32 -1); a
    value its type cannot hold is an OverflowError (it wrapped, or failed in glslangValidator)."""
    u = np.array([0, 5], np.uint32)
    with pytest.raises(dc.DTypeError, match=r"add: int32 and uint32 operands.*\n  at .*test_elementwise"):
        evaluate(env, lambda y: y + y.scope.constant(-1), u)
    result = evaluate(env, lambda y: y.scope.constant(3, "uint32") - 4 + y[:0].sum(), u)
    assert result.dtype == np.uint32 and result == 2**32 - 1
    assert evaluate(env, lambda y: y + y.scope.constant(np.uint32(2)), u).dtype == np.uint32
    np.testing.assert_array_equal(evaluate(env, lambda y: y.scope.constant(-1).astype("uint32") + y, u), u - 1)
    for value, dtype, error, message in ((-1, "uint32", OverflowError, "Python integer -1 is out of bounds for uint32"),
                                         (2**40, None, OverflowError,
                                          "Python integer 1099511627776 is out of bounds for int32"),
                                         (2**31, "int32", OverflowError,
                                          "Python integer 2147483648 is out of bounds for int32"),
                                         (float("nan"), "int32", ValueError, "nan has no int32 value")):
        with pytest.raises(error, match="constant: " + message + r"\n  at .*test_elementwise"):
            evaluate(env, lambda y, value=value, dtype=dtype: y + y.scope.constant(value, dtype), u)


@pytest.mark.parametrize("compare", [lambda a, k: a < k, lambda a, k: a <= k, lambda a, k: a > k,
                                     lambda a, k: a >= k, lambda a, k: a == k, lambda a, k: a != k,
                                     lambda a, k: k < a, lambda a, k: k >= a])
def test_comparisons_with_integers_beyond_the_type_answer_as_numpy(env: dc.Environment, compare) -> None:
    """numpy 2 answers these (all true or all false) where arithmetic with the same integer overflows."""
    for values in (np.array([-1, 5, 2**31 - 1], np.int32), np.array([4294967295, 3, 0], np.uint32)):
        for k in (2**40, -(2**40), 2**32, -1, 2**31):
            result = evaluate(env, lambda a, k=k: compare(a, k), values)
            np.testing.assert_array_equal(result, compare(values, k), err_msg=f"{values.dtype} {k}")


@pytest.mark.parametrize("compare", [lambda a, k: a < k, lambda a, k: a <= k, lambda a, k: a > k,
                                     lambda a, k: a >= k, lambda a, k: a == k, lambda a, k: a != k,
                                     lambda a, k: k < a, lambda a, k: k >= a])
def test_comparisons_of_integers_with_floats_are_exact_as_numpy(env: dc.Environment, compare) -> None:
    """numpy compares in float64, where each int32 and uint32 is exact; in float32 16777217 == 16777216.0
    held and 2**31 - 1 < 2**31 - 0.5 did not."""
    for values in (np.array([16777216, 16777217, -3, 0, 2**31 - 1, -(2**31)], np.int32),
                   np.array([16777216, 16777217, 3, 0, 2**32 - 1, 2**31], np.uint32)):
        for k in (16777217.0, 16777216.5, 2.5, -2.5, -0.0, 2**31 - 0.5, -(2**31) - 0.5, 2**32 - 0.5, 1e30,
                  float("inf"), float("-inf"), float("nan")):
            result = evaluate(env, lambda a, k=k: compare(a, k), values)
            np.testing.assert_array_equal(result, compare(values, k), err_msg=f"{values.dtype} {k}")


def test_clip_of_integers_by_bounds_beyond_their_type_is_numpys(env: dc.Environment) -> None:
    """A bound no value of the type reaches is no bound (it raised OverflowError, naming `where`)."""
    i, u = np.array([-3, 5, 2**31 - 1], np.int32), np.array([0, 3, 7], np.uint32)
    np.testing.assert_array_equal(evaluate(env, lambda a: dc.clip(a, -(2**40), 2**40), i), np.clip(i, -(2**40), 2**40))
    np.testing.assert_array_equal(evaluate(env, lambda a: dc.clip(a, -1, 5), u), np.clip(u, -1, 5))


def test_pow_with_integral_exponents_is_exact_where_the_result_is(env: dc.Environment) -> None:
    base = np.array([10.0, 3.0, 5.0, -2.0, 0.0, -0.0, 1.5, -7.0], np.float32)
    exponent = np.array([3.0, 10.0, 4.0, -3.0, -1.0, -1.0, 2.0, 5.0], np.float32)
    with np.errstate(divide="ignore"):
        expected = base**exponent
    np.testing.assert_array_equal(evaluate(env, lambda a, b: a**b, base, exponent), expected)


def test_erf_is_accurate_near_zero_and_in_the_tails(env: dc.Environment) -> None:
    x = np.concatenate([np.linspace(-6, 6, 241), [1e-7, -3e-5, 0.0, 0.4999, 0.5001]]).astype(np.float32)
    expected = np.vectorize(math.erf)(x.astype(np.float64))
    result = evaluate(env, dc.erf, x)
    np.testing.assert_allclose(result, expected, rtol=0, atol=3e-7)
    small = np.abs(x) < 0.5
    np.testing.assert_allclose(result[small], expected[small], rtol=3e-7, atol=0)


def test_log1p_and_the_losses_built_on_it_keep_tiny_values(env: dc.Environment) -> None:
    x = np.array([1e-30, -1e-8, 3e-5, -0.0999, 0.1001, 0.05, 2.0], np.float32)
    # a series below 0.1 (a few ulp), log(1 + x) above it, where rounding 1 + x costs up to ~6e-7 near 0.1
    np.testing.assert_allclose(evaluate(env, dc.log1p, x), np.log1p(x.astype(np.float64)), rtol=1e-6, atol=0)
    logits = np.array([[15.0], [17.0], [30.0]], np.float32)
    targets = np.ones_like(logits)
    result = evaluate(env, lambda a, t: dc.binary_cross_entropy_with_logits(a, t, reduction="none"), logits, targets)
    np.testing.assert_allclose(result, np.log1p(np.exp(-logits.astype(np.float64))), rtol=1e-5)


def test_odd_functions_keep_the_sign_of_zero(env: dc.Environment) -> None:
    """tanh(-0.0) and erf(-0.0) were +0.0: their series added x * x**2 * (a negative term), +0.0, to -0.0."""
    x = np.array([-0.0, 0.0], np.float32)
    for name in ("tanh", "erf", "sinh", "expm1", "log1p", "atan", "asin", "sin", "tan"):
        result = evaluate(env, getattr(dc, name), x)
        np.testing.assert_array_equal(np.signbit(result), [True, False], err_msg=name)
        np.testing.assert_array_equal(result, 0.0, err_msg=name)


def test_pow_exponent_gradient_at_a_zero_base_is_zero(env: dc.Environment) -> None:
    """At a = 0 with b < 0 the rule multiplied a**b = inf by log(1) = 0: NaN, where the README promises 0."""
    a = np.array([0.0, -0.0, 0.0, 2.0, -2.0], np.float32)
    b = np.array([-1.0, -1.0, 2.0, 3.0, 2.0], np.float32)
    gradient = evaluate(env, lambda x, y: x.scope.grad(dc.sum(x**y), [y])[0], a, b)
    np.testing.assert_allclose(gradient, [0, 0, 0, 8 * np.log(2), 0], rtol=1e-6)
