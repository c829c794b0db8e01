"""Property test: random elementwise expressions over random views, compared with numpy.

Every op here is continuous (the `where` case picks between two expressions equal at the switch),
so float32 rounding differences between the device and numpy cannot flip a result."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import descent as dc
from tests.conftest import evaluate

UNARY = [
    (dc.sin, np.sin), (dc.cos, np.cos), (dc.tanh, np.tanh), (dc.sigmoid, lambda x: 1 / (1 + np.exp(-x))),
    (dc.abs, np.abs), (lambda x: -x, np.negative), (dc.relu, lambda x: np.maximum(x, 0)),
    (lambda x: dc.exp(dc.clip(x, -4.0, 4.0)), lambda x: np.exp(np.clip(x, -4, 4))),
    (lambda x: dc.sqrt(dc.abs(x) + 1.0), lambda x: np.sqrt(np.abs(x) + 1)),
]
BINARY = [
    (lambda a, b: a + b, np.add), (lambda a, b: a - b, np.subtract), (lambda a, b: a * b, np.multiply),
    (dc.maximum, np.maximum), (dc.minimum, np.minimum),
    (lambda a, b: a / (dc.abs(b) + 1.0), lambda a, b: a / (np.abs(b) + 1)),
    (lambda a, b: dc.where(a > b, a * 0.5 + b * 0.5, b), lambda a, b: np.where(a > b, a * 0.5 + b * 0.5, b)),
]
VIEWS = [
    (lambda x: x, lambda x: x), (lambda x: x.T, lambda x: x.T), (lambda x: x[::-1], lambda x: x[::-1]),
    (lambda x: x[:, ::-1], lambda x: x[:, ::-1]),
    (lambda x: x.reshape(-1).reshape(x.shape[0], -1), lambda x: x.reshape(-1).reshape(x.shape[0], -1)),
]


@st.composite
def expressions(draw, depth: int):
    """A pair of functions (descent, numpy) of one square matrix."""
    if depth == 0:
        return (lambda x: x, lambda x: x)
    kind = draw(st.sampled_from(["unary", "binary", "view"]))
    if kind == "unary":
        ours, theirs = draw(st.sampled_from(UNARY))
        inner = draw(expressions(depth - 1))
        return (lambda x: ours(inner[0](x)), lambda x: theirs(inner[1](x)))
    if kind == "view":
        ours, theirs = draw(st.sampled_from(VIEWS))
        inner = draw(expressions(depth - 1))
        return (lambda x: ours(inner[0](x)), lambda x: theirs(inner[1](x)))
    ours, theirs = draw(st.sampled_from(BINARY))
    left, right = draw(expressions(depth - 1)), draw(expressions(draw(st.integers(0, depth - 1))))
    return (lambda x: ours(left[0](x), right[0](x)), lambda x: theirs(left[1](x), right[1](x)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(expression=expressions(depth=5), size=st.integers(1, 9), seed=st.integers(0, 2**31))
def test_random_expressions_match_numpy(env: dc.Environment, expression, size: int, seed: int) -> None:
    x = np.random.default_rng(seed).normal(size=(size, size)).astype(np.float32)
    ours, theirs = expression
    # float32 on the device against float64 numpy; atol 5e-5 covers float32 cancellation in depth-5
    # chains of O(1) values (a fresh hypothesis database found an error of 1.9e-5 at a value of 0.045)
    expected = theirs(x.astype(np.float64))
    np.testing.assert_allclose(evaluate(env, ours, x), expected, rtol=1e-4, atol=5e-5)


@st.composite
def einsum_cases(draw):
    """Subscripts of one to three operands over up to five letters, each operand a random subset of
    them (a letter may repeat in one operand: a diagonal), and the output a random subset of the
    letters used; the sizes 1 to 4, a size 1 sometimes standing for a broadcast axis."""
    letters = "abcde"[:draw(st.integers(1, 5))]
    sizes = {c: draw(st.integers(1, 4)) for c in letters}
    terms = [draw(st.lists(st.sampled_from(letters), max_size=4)) for _ in range(draw(st.integers(1, 3)))]
    used = sorted({c for term in terms for c in term})
    output = draw(st.permutations(used)).copy()[:draw(st.integers(0, len(used)))]
    shapes = [tuple(1 if draw(st.integers(0, 5)) == 0 and term.count(c) == 1 else sizes[c] for c in term)
              for term in terms]
    return ",".join("".join(t) for t in terms) + "->" + "".join(output), shapes


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=einsum_cases(), seed=st.integers(0, 2**31))
def test_random_einsums_match_numpy(env: dc.Environment, case, seed: int) -> None:
    """Against numpy's einsum in float64: atol 1e-5 times the number of products summed per output."""
    subscripts, shapes = case
    rng = np.random.default_rng(seed)
    arrays = [rng.normal(size=shape).astype(np.float32) for shape in shapes]
    expected = np.einsum(subscripts, *[a.astype(np.float64) for a in arrays])
    result = evaluate(env, lambda *xs: dc.einsum(subscripts, *xs), *arrays)
    assert result.shape == expected.shape
    sizes: dict[str, int] = {}
    for term, shape in zip(subscripts.split("->")[0].split(","), shapes):
        for letter, size in zip(term, shape):
            sizes[letter] = max(sizes.get(letter, 1), size)
    summed = np.prod([sizes[c] for c in sizes]) // np.prod([sizes[c] for c in subscripts.split("->")[1]])
    np.testing.assert_allclose(result, expected, rtol=1e-4, atol=1e-5 * summed)
