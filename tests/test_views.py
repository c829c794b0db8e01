"""Views against numpy: reshape, transpose, broadcast, expand/squeeze and basic slicing, composed
freely and applied to parameters and to computed intermediates. Views are exact (no tolerance)."""

from __future__ import annotations

import numpy as np
import pytest

import descent as dc
from tests.conftest import evaluate

rng = np.random.default_rng(1)
X = rng.normal(size=(4, 6, 5)).astype(np.float32)

VIEWS = {
    "reshape": (lambda a: a.reshape(20, 6), lambda a: a.reshape(20, 6)),
    "reshape_minus_one": (lambda a: a.reshape((-1, 10)), lambda a: a.reshape(-1, 10)),
    "transpose": (lambda a: a.transpose(2, 0, 1), lambda a: a.transpose(2, 0, 1)),
    "T": (lambda a: a.T, lambda a: a.T),
    "broadcast_to": (
        lambda a: a[:, :1, :].broadcast_to((3, 4, 6, 5)),
        lambda a: np.broadcast_to(a[:, :1, :], (3, 4, 6, 5)),
    ),
    "expand_dims": (lambda a: dc.expand_dims(a, (0, 3)), lambda a: np.expand_dims(a, (0, 3))),
    "squeeze": (lambda a: a[:, :1, 2:3].squeeze(), lambda a: a[:, :1, 2:3].squeeze()),
    "slice": (lambda a: a[1:3, ::2], lambda a: a[1:3, ::2]),
    "slice_negative_step": (lambda a: a[::-1, 4:0:-2, -1], lambda a: a[::-1, 4:0:-2, -1]),
    "int_none_ellipsis": (lambda a: a[2, None, ..., 1:4], lambda a: a[2, None, ..., 1:4]),
    "transpose_then_reshape": (
        lambda a: a.transpose(1, 0, 2).reshape(24, 5),
        lambda a: a.transpose(1, 0, 2).reshape(24, 5),
    ),
    "slice_transpose_reshape_slice": (
        lambda a: a[1:, 1::2].T.reshape(5, 9)[::2, 3:],
        lambda a: a[1:, 1::2].T.reshape(5, 9)[::2, 3:],
    ),
    "reshape_of_strided": (lambda a: a[:, :, 1:4].reshape(4, 2, 3, 3).T, lambda a: a[:, :, 1:4].reshape(4, 2, 3, 3).T),
}


@pytest.mark.parametrize("name", sorted(VIEWS))
def test_view_of_parameter(env: dc.Environment, name: str) -> None:
    ours, theirs = VIEWS[name]
    np.testing.assert_array_equal(evaluate(env, ours, X), theirs(X))


@pytest.mark.parametrize("name", sorted(VIEWS))
def test_view_of_intermediate(env: dc.Environment, name: str) -> None:
    ours, theirs = VIEWS[name]
    result = evaluate(env, lambda a: ours(a * 2.0 + 1.0) - 1.0, X)
    np.testing.assert_allclose(result, theirs(X * np.float32(2) + np.float32(1)) - np.float32(1), rtol=1e-6, atol=1e-6)


PADDED = {"pad": (lambda a: dc.pad(a[:, 1:], [(1, 0), (0, 2), (2, 1)])[::2],
                  lambda a: np.pad(a[:, 1:], [(1, 0), (0, 2), (2, 1)])[::2]),
          "pad of a pad": (lambda a: dc.pad(dc.pad(a, [(0, 0), (1, 1), (0, 0)], 3.0), [(2, 0), (0, 0), (0, 1)]),
                           lambda a: np.pad(np.pad(a, [(0, 0), (1, 1), (0, 0)], constant_values=3.0),
                                            [(2, 0), (0, 0), (0, 1)])),
          "prefix slice (an empty chain)": (lambda a: a.reshape(120)[:7], lambda a: a.reshape(120)[:7])}


@pytest.mark.parametrize("name", sorted(VIEWS) + sorted(PADDED))
def test_the_hosts_reading_of_a_view_is_numpys(env: dc.Environment, name: str) -> None:
    """view.read, which checks uploaded indices where an op reads them through views, loads what numpy does."""
    ours, theirs = {**VIEWS, **PADDED}[name]
    x = env.parameter(f"host_view_{len(name)}_{abs(hash(name))}", X.shape)
    nodes = []
    env.build_graph(lambda s: nodes.append(ours(s.read(x)).node))
    assert nodes[0].op == "view"
    np.testing.assert_array_equal(dc.graph.view.read(nodes[0].attrs.chain, nodes[0].shape, X), theirs(X))


def test_views_do_not_materialise(env: dc.Environment) -> None:
    out = env.parameter("views_out", (5, 4))
    x = env.parameter("views_x", (4, 6, 5))

    def build(s: dc.Scope) -> None:
        a = s.read(x)
        s.write(out, a[:, 1, :].T * 2.0 + a[:, 2, :].T)

    graph = env.build_graph(build)
    assert graph.kernel_count == 1
    assert graph.memory_bytes == 0
    env.write(x, X)
    env.run(graph)
    np.testing.assert_array_equal(env.read(out), X[:, 1, :].T * 2 + X[:, 2, :].T)


def test_0d_and_size_one(env: dc.Environment) -> None:
    s0 = np.array(3.0, np.float32)
    np.testing.assert_array_equal(evaluate(env, lambda a, b: a + b, s0, X[:, :1, :1]), s0 + X[:, :1, :1])
    np.testing.assert_array_equal(evaluate(env, lambda a: a.reshape(()), X[:1, :1, :1]), X[:1, :1, :1].reshape(()))


def test_iteration_squeeze_concat_and_arange_refuse_or_accept_as_numpy(env: dc.Environment) -> None:
    """Iterating a 0-d Array is a TypeError (it gave nothing); an n-d one gives its rows. squeeze
    refuses a repeated axis, concat and stack arrays not in a list (the message blamed `if`), and
    arange of a negative stop is empty (it was a negative-size error)."""
    def rows(a):
        with pytest.raises(TypeError, match="iteration over a 0-d Array"):
            list(dc.sum(a))
        with pytest.raises(dc.ShapeError, match=r"squeeze: repeated axis in \(0, -3\)"):
            a[:1].squeeze((0, -3))
        for join in (dc.concat, dc.stack):
            with pytest.raises(TypeError, match=rf"{join.__name__}: takes a list or tuple of arrays.*\n  at .*test_"):
                join(a, a)
        assert a.scope.arange(-1).shape == (0,)
        return dc.stack(list(a)[::-1])

    np.testing.assert_array_equal(evaluate(env, rows, X), X[::-1])


def test_views_past_32_bit_indices_are_refused(env: dc.Environment) -> None:
    """A view of more than 2**31 - 1 elements is refused where it is made: its int32 index
    arithmetic wrapped (a diagonal read through a padded 7e9-element view gave 0 from x[2] on)."""
    def huge(a, width=700_000_000):
        padded = dc.pad(a, ((0, 0), (width, width)))
        return padded.reshape(-1)[width + 3::2 * width + 5] * 1.0

    with pytest.raises(dc.ShapeError, match=r"pad: shape \(4, 1400000006\) has 5,600,000,024 elements; shaders index "
                                            r"with 32-bit ints.*at most 2,147,483,647\n  at .*test_views"):
        evaluate(env, huge, X[:, :, 0])
    with pytest.raises(dc.ShapeError, match=r"expand: shape \(50000, 50000\) has 2,500,000,000 elements"):
        evaluate(env, lambda a: dc.broadcast_to(a[0, 0, :1], (50000, 50000))[::50001, 0], X)


def test_pad_of_a_pad_with_another_fill(env: dc.Environment) -> None:
    """The view applied first decides: the outer pad's fill, then the inner's (concat and stack pad
    each part with 0, so a part padded with anything else nests two fills)."""
    a = np.array([[1.0, 2.0]], np.float32)
    nines = np.full((1, 3), 9.0, np.float32)
    cases = [
        (lambda x: dc.pad(dc.pad(x, 1, 5.0), 1, 7.0), np.pad(np.pad(a, 1, constant_values=5), 1, constant_values=7)),
        (lambda x: dc.concat([dc.pad(x, ((0, 0), (1, 0)), 5.0), x.scope.constant(nines)], 0),
         np.concatenate([np.pad(a, ((0, 0), (1, 0)), constant_values=5), nines], 0)),
        (lambda x: dc.stack([dc.pad(x, 1, float("-inf"))] * 2), np.stack([np.pad(a, 1, constant_values=-np.inf)] * 2)),
        (lambda x: dc.pad(dc.pad(x, ((0, 0), (1, 1)), 5.0), ((0, 0), (1, 1)), mode="reflect"),
         np.pad(np.pad(a, ((0, 0), (1, 1)), constant_values=5), ((0, 0), (1, 1)), mode="reflect")),
    ]
    for ours, expected in cases:
        np.testing.assert_array_equal(evaluate(env, ours, a), expected)


@pytest.mark.parametrize("widths", [2, (3,), (4, 1), ((1, 2),), ((0, 1), (2, 0))], ids=str)
def test_pad_widths_in_numpys_forms(env: dc.Environment, widths) -> None:
    """n, (n,), (before, after) and ((before, after),) pad every axis alike; a pair per axis pads each."""
    x = rng.normal(size=(2, 3)).astype(np.float32)
    np.testing.assert_array_equal(evaluate(env, lambda a: dc.pad(a, widths, 7.0), x),
                                  np.pad(x, widths, constant_values=7.0))
    ints = np.arange(6, dtype=np.int32).reshape(2, 3)
    np.testing.assert_array_equal(evaluate(env, lambda a: dc.pad(a, widths, -9), ints),
                                  np.pad(ints, widths, constant_values=-9))


def test_reflect_pad_of_an_empty_array_and_take_from_an_empty_axis(env: dc.Environment) -> None:
    """As numpy: zero reflect widths on an empty axis give the empty result; taking from an axis
    with no elements is an IndexError (it read outside the buffer)."""
    empty = env.parameter("reflect_empty", (0, 3))
    out = env.parameter("reflect_out", (0, 5))
    env.run(env.build_graph(lambda s: s.write(out, dc.pad(s.read(empty), ((0, 0), (1, 1)), mode="reflect"))))
    assert env.read(out).shape == (0, 5)
    with pytest.raises(IndexError, match=r"take: cannot take from axis 0 of shape \(0, 3\).*\n  at .*test_views"):
        env.build_graph(lambda s: dc.take(s.read(empty), s.constant(np.array([0, 1], np.int32)), 0))


def test_slices_that_select_nothing_are_empty_arrays_as_numpy(env: dc.Environment) -> None:
    """a[2:2] was refused ('gives an empty Array'); so was a pad cropping an axis to nothing."""
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    for index in [np.s_[2:2], np.s_[:, 5:], np.s_[::-1, 3:1], np.s_[1:1, None]]:
        result = evaluate(env, lambda a, index=index: a[index] * 2.0, x)
        assert result.shape == x[index].shape and result.dtype == np.float32
    np.testing.assert_array_equal(evaluate(env, lambda a: dc.sum(a[1:1], 0), x), np.zeros(4))
    np.testing.assert_array_equal(evaluate(env, lambda a: dc.concat([a[:0], a], 0), x), x)
    np.testing.assert_array_equal(evaluate(env, lambda a: dc.pad(a, [(0, 0), (-4, 2)], 7.0), x), np.full((3, 2), 7.0))
    gradient = evaluate(env, lambda a: a.scope.grad(dc.sum(a[2:2] * 3.0) + dc.sum(a[0]), [a])[0], x)
    np.testing.assert_array_equal(gradient, np.array([[1.0] * 4, [0.0] * 4, [0.0] * 4]))


def test_numpy_integer_axes_bool_scalar_index_and_axis_none(env: dc.Environment) -> None:
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    axis = np.int64(1)
    np.testing.assert_array_equal(evaluate(env, lambda a: dc.sum(a, axis=axis), x), x.sum(axis=1))
    np.testing.assert_array_equal(evaluate(env, lambda a: dc.argmax(a, axis=np.int32(-1)), x), x.argmax(axis=-1))
    np.testing.assert_array_equal(evaluate(env, lambda a: dc.expand_dims(a, axis), x), np.expand_dims(x, 1))
    np.testing.assert_array_equal(evaluate(env, lambda a: a[True], x), x[True])
    np.testing.assert_array_equal(evaluate(env, lambda a: a[:, True, 1], x), x[:, True, 1])
    assert evaluate(env, lambda a: a[False], x).shape == x[False].shape == (0, 2, 3, 4)
    assert evaluate(env, lambda a: a[..., False, 1], x).shape == x[..., False, 1].shape == (2, 3, 0)
    indices = np.array([23, 0, 5], np.int32)
    np.testing.assert_array_equal(evaluate(env, lambda a: dc.take(a, a.scope.constant(indices), axis=None), x),
                                  np.take(x, indices, axis=None))
    np.testing.assert_array_equal(evaluate(env, lambda a: dc.concat([a, a[0]], axis=None), x),
                                  np.concatenate([x, x[0]], axis=None))


@pytest.mark.parametrize("index", [(0, slice(None), True), (True, True), (True, False), (True, slice(None), 0),
                                   (slice(None), True, slice(None), False), (Ellipsis, True, 1), (True, Ellipsis, 1),
                                   (None, True, 0), (True, slice(1, 3), 2, False), (1, True, 2),
                                   (slice(None), np.int64(1), np.bool_(True))], ids=str)
def test_bools_among_other_scalar_indices_are_numpys(env: dc.Environment, index: tuple) -> None:
    """Each bool was a new axis where it stood: x[0, :, True] gave (3, 1, 4) where numpy gives (1, 3, 4),
    x[True, True] (1, 1, 2, 3, 4) where numpy gives (1, 2, 3, 4). numpy takes bools and integers
    together as one advanced index."""
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    result = evaluate(env, lambda a: a[index] * 1.0, x)
    assert result.shape == x[index].shape
    np.testing.assert_array_equal(result, x[index])
    gradient = evaluate(env, lambda a: a.scope.grad(dc.sum(a[index] * a[index]), [a])[0], x)
    expected = np.zeros_like(x)
    expected[index] = 2 * x[index]
    np.testing.assert_array_equal(gradient, expected)


_MASK = np.array([True, False, True])
_ARRAY_INDICES = {  # x of shape (2, 3, 4) indexed as numpy; True: the int32 numpy array goes in as a graph Array
    "[:, [2, 0, 2]]": ((slice(None), [2, 0, 2]), False), "[..., list]": ((Ellipsis, [3, -1]), False),
    "[[1]]": (([1],), False), "[0-d numpy]": ((np.array(1),), False), "[:, []]": ((slice(None), []), False),
    "[None, :, mask, ::-1]": ((None, slice(None), _MASK, slice(None, None, -1)), False),
    "[:, Array 2-d]": ((slice(None), np.array([[0, 2], [-1, 1]], np.int32)), True),
    "[..., Array 0-d]": ((Ellipsis, np.array(2, np.int32)), True),
}


@pytest.mark.parametrize("name", list(_ARRAY_INDICES))
def test_one_array_index_among_slices_as_numpy(env: dc.Environment, name: str) -> None:
    """x[:, indices] takes along the axis as numpy (values, and gradients that add up repeated indices);
    it was refused as 'not basic indexing', also for a 0-d numpy integer numpy takes as an integer."""
    index, as_array = _ARRAY_INDICES[name]

    def make(a: dc.Array) -> tuple:
        return tuple(a.scope.constant(i) if as_array and isinstance(i, np.ndarray) else i for i in index)

    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    result = evaluate(env, lambda a: a[make(a)] * 1.0, x)
    assert result.shape == x[index].shape
    np.testing.assert_array_equal(result, x[index])
    gradient = evaluate(env, lambda a: a.scope.grad(dc.sum(a[make(a)] * a[make(a)]), [a])[0], x)
    expected = np.zeros_like(x)
    np.add.at(expected, index, 2 * x[index])
    np.testing.assert_array_equal(gradient, expected)


def test_empty_views_padded_and_pad_arguments_numpy_refuses(env: dc.Environment) -> None:
    """A stack of empty slices padded into a non-empty result failed in codegen (ZeroDivisionError);
    a reflect pad's value was ignored and a crop past the axis made it empty, where numpy refuses."""
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    widths = [(0, 0), (1, 0), (0, 0)]
    np.testing.assert_array_equal(evaluate(env, lambda a: dc.pad(dc.stack([a[:0], a[:0]]), widths), x),
                                  np.pad(np.stack([x[:0], x[:0]]), widths))
    with pytest.raises(ValueError, match=r"pad: value 5.0 is for mode 'constant'(.|\n)*test_views.py"):
        evaluate(env, lambda a: dc.pad(a, 1, 5.0, mode="reflect"), x)
    with pytest.raises(dc.ShapeError, match=r"pad: widths \(-2, -2\) crop more than the 3 elements of axis 0"):
        evaluate(env, lambda a: dc.pad(a, (-2, -2)), x)


def test_empty_parts_of_non_empty_kernels_as_numpy(env: dc.Environment) -> None:
    """Found by a fuzzer: an empty product concatenated to an array (ZeroDivisionError in the matmul's
    codegen), and a pad of a softmax over a sum with an empty stack (ZeroDivisionError in the index)."""
    a, b, c = np.zeros((0, 3), np.float32), np.ones((3, 2), np.float32), np.full((1, 2), 2.0, np.float32)
    np.testing.assert_array_equal(evaluate(env, lambda p, q, r: dc.concat([p @ q, r], 0), a, b, c),
                                  np.concatenate([a @ b, c], 0))
    x = np.zeros((0, 1, 7, 5), np.float32)
    widths = [(1, 2), (2, 2), (0, 1), (0, 0), (2, 2)]

    def padded(p: dc.Array) -> dc.Array:
        stacked = dc.stack([p, p, p + p], 3)[:, 2:0:2, :, ::3]
        return dc.pad(dc.softmax(p + p + stacked[::-1], 4), widths, 0.5)

    np.testing.assert_array_equal(evaluate(env, padded, x), np.full((3, 4, 8, 7, 9), 0.5, np.float32))
