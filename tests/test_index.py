"""The symbolic index arithmetic against brute force: random sums, quotients and remainders of
variables over small ranges, simplified, must equal GLSL's int arithmetic on the same expression
unsimplified at every point where that expression divides only non-negative numbers (the points a
view reads in bounds); bounds must hold everywhere."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from descent.codegen.index import Div, Index, Mod, Var, bounds, divide, remainder, render, variable

SIZES = {"a": 3, "b": 4, "c": 6, "d": 9}
DIVISORS = [1, 2, 3, 4, 5, 6, 8, 9, 12, 16, 18, 24, 36]


def _glsl_div(x: int, d: int) -> int:
    return x // d if x >= 0 else -(-x // d)


def _glsl_mod(x: int, d: int) -> int:
    return x - _glsl_div(x, d) * d


def evaluate(index: Index, values: dict[str, int]) -> int:
    """The value GLSL computes for `index` (truncating division)."""
    total = index.constant
    for atom, coefficient in index.terms:
        if isinstance(atom, Var):
            value = values[atom.name]
        else:
            numerator = evaluate(atom.numerator, values)
            value = _glsl_div(numerator, atom.divisor) if isinstance(atom, Div) else _glsl_mod(numerator, atom.divisor)
        total += coefficient * value
    return total


# A plain expression tree: ("var", name) | ("const", c) | ("add", x, y) | ("mul", x, c) | ("div"|"mod", x, d)
def _trees():
    leaves = st.one_of(st.sampled_from([("var", n) for n in SIZES]), st.integers(-20, 40).map(lambda c: ("const", c)))
    return st.recursive(leaves, lambda inner: st.one_of(
        st.tuples(st.just("add"), inner, inner),
        st.tuples(st.just("mul"), inner, st.sampled_from([-3, -1, 0, 1, 2, 3, 4, 6, 8, 9, 12, 16, 18])),
        st.tuples(st.sampled_from(["div", "mod"]), inner, st.sampled_from(DIVISORS)),
    ), max_leaves=8)


def _naive(tree, values) -> tuple[int, bool]:
    """(GLSL value, whether every numerator divided was non-negative)."""
    kind = tree[0]
    if kind == "var":
        return values[tree[1]], True
    if kind == "const":
        return tree[1], True
    if kind == "add":
        (x, ok_x), (y, ok_y) = _naive(tree[1], values), _naive(tree[2], values)
        return x + y, ok_x and ok_y
    x, ok = _naive(tree[1], values)
    if kind == "mul":
        return x * tree[2], ok
    operation = _glsl_div if kind == "div" else _glsl_mod
    return operation(x, tree[2]), ok and x >= 0


def _symbolic(tree) -> Index:
    kind = tree[0]
    if kind == "var":
        return variable(tree[1], SIZES[tree[1]])
    if kind == "const":
        return Index((), tree[1])
    if kind == "add":
        return _symbolic(tree[1]) + _symbolic(tree[2])
    x = _symbolic(tree[1])
    return x * tree[2] if kind == "mul" else x // tree[2] if kind == "div" else x % tree[2]


@settings(max_examples=600, deadline=None)
@given(_trees())
def test_simplified_index_equals_glsl_arithmetic(tree):
    index = _symbolic(tree)
    low, high = bounds(index)
    for point in itertools.product(*(range(size) for size in SIZES.values())):
        values = dict(zip(SIZES, point))
        expected, in_bounds = _naive(tree, values)
        value = evaluate(index, values)
        assert low <= value <= high, (render(index), values)
        if in_bounds:
            assert value == expected, (tree, render(index), values)


def test_im2col_index_separates_into_row_and_column_parts():
    """The weight-gradient operand of a 3x3 convolution: every division acts on one variable."""
    batch, row, col = variable("batch", 200), variable("row", 144), variable("col", 196)
    flat = (batch * 144 + row) * 196 + col
    unfolded = (flat // 1764) * 256 + (flat // 588 % 3) * 16 + flat // 196 % 3 + (flat // 14 % 14) * 16 + flat % 14
    source = (unfolded // 256) * 196 + (unfolded // 16 % 16) * 14 + unfolded % 16 + (-15)
    text = render(source)
    assert text == "batch * 3136 + (row / 9) * 196 + (row / 3 % 3) * 14 + row % 3 + col + (-15)"


def test_split_digits_recombine():
    """A 2x2 pooling window's element put back at its place in the image: the divisions the window
    view splits the index into cancel, digit by digit, for any coefficient."""
    i = variable("i", 100 * 16 * 28 * 28)
    window = (i // 56) * 56 + (i // 2 % 14) * 2 + (i // 28 % 2) * 28 + i % 2
    assert render(window) == "i"
    assert render((i // 2 % 14) * 6 + (i % 2) * 3 + 5) == "(i % 28) * 3 + 5"
    assert render((i // 2) * 4 + (i % 2) * 2) == "i * 2"
    shifted = variable("c", 7) + (-3)  # may be negative: truncation would make these differ
    assert render((shifted // 2) * 2 + shifted % 2) == "((c + (-3)) / 2) * 2 + (c + (-3)) % 2"


def test_divisions_kept_where_a_numerator_may_be_negative():
    shifted = variable("c", 7) + (-3)
    assert divide(shifted, 2).terms[0][0] == Div(shifted, 2)
    assert remainder(shifted, 2).terms[0][0] == Mod(shifted, 2)
    assert render(divide(variable("c", 7) * 4 + variable("a", 3), 4)) == "c"


def test_two_term_quotients_and_remainders_exhaustively():
    """Every (p*x + q*y + k) / d and % d, and one more division of each, over small ranges: the
    boundary cases (a remainder term that reaches the divisor) that random trees rarely build."""
    for x, y in (("a", "b"), ("c", "d")):
        for p, q, k in itertools.product((1, 2, 3, 4, 6, 9), (1, 2, 3, 4, 6, 9), (-2, 0, 3)):
            for d, m in itertools.product((2, 3, 4, 6, 8, 9, 12), (2, 3, 4)):
                for outer in ("div", "mod"):
                    for inner in ("div", "mod"):
                        tree = (outer, (inner, ("add", ("add", ("mul", ("var", x), p), ("mul", ("var", y), q)),
                                                ("const", k)), d), m)
                        index = _symbolic(tree)
                        for u, v in itertools.product(range(SIZES[x]), range(SIZES[y])):
                            values = {x: u, y: v}
                            expected, in_bounds = _naive(tree, values)
                            if in_bounds:
                                assert evaluate(index, values) == expected, (tree, render(index), values)
