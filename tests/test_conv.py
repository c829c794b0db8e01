"""Convolution, transposed convolution, pooling (2-D and 1-D), pad, concat and stack against torch CPU and numpy.

Tolerance for convolutions: rtol 1e-4, atol 1e-4 * sqrt(C * KH * KW) (float32 sums in another order).
Pooling, padding and joining are exact."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import descent as dc
from descent import nn
from tests.conftest import evaluate

rng = np.random.default_rng(5)
F = torch.nn.functional


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a)


CONVS = [
    dict(x=(1, 1, 5, 5), w=(1, 1, 3, 3)),
    dict(x=(2, 1, 28, 28), w=(16, 1, 3, 3), padding=1),
    dict(x=(2, 16, 14, 14), w=(32, 8, 3, 3), padding=1, groups=2),
    dict(x=(2, 4, 9, 8), w=(6, 2, 3, 3), stride=2, padding=1, groups=2),
    dict(x=(1, 3, 11, 7), w=(4, 3, 2, 3), stride=(2, 1), padding=(0, 2), dilation=(2, 1)),
    dict(x=(3, 6, 5, 5), w=(6, 1, 3, 3), padding=1, groups=6),
]


@pytest.mark.parametrize("case", CONVS, ids=lambda c: str(c))
@pytest.mark.parametrize("with_bias", [False, True])
def test_conv2d_matches_torch(env: dc.Environment, case: dict, with_bias: bool) -> None:
    options = {k: v for k, v in case.items() if k not in ("x", "w")}
    x = rng.normal(size=case["x"]).astype(np.float32)
    w = rng.normal(size=case["w"]).astype(np.float32)
    b = rng.normal(size=case["w"][0]).astype(np.float32)
    expected = F.conv2d(_t(x), _t(w), _t(b) if with_bias else None, **options).numpy()
    if with_bias:
        result = evaluate(env, lambda a, k, c: dc.conv2d(a, k, c, **options), x, w, b)
    else:
        result = evaluate(env, lambda a, k: dc.conv2d(a, k, **options), x, w)
    tolerance = 1e-4 * np.sqrt(np.prod(case["w"][1:]))
    np.testing.assert_allclose(result, expected, rtol=1e-4, atol=tolerance)


TRANSPOSED = [
    ("conv_transpose2d", dict(x=(1, 2, 4, 4), w=(2, 3, 3, 3))),
    ("conv_transpose2d", dict(x=(2, 4, 9, 8), w=(4, 3, 3, 3), stride=2, padding=1, output_padding=1, groups=2)),
    ("conv_transpose2d", dict(x=(1, 3, 5, 6), w=(3, 2, 2, 4), stride=(3, 2), padding=(0, 1), dilation=(1, 2))),
    ("conv_transpose1d", dict(x=(2, 4, 7), w=(4, 3, 3))),
    ("conv_transpose1d", dict(x=(1, 4, 6), w=(4, 2, 4), stride=3, padding=1, output_padding=1, groups=2)),
]


@pytest.mark.parametrize("function, case", TRANSPOSED, ids=str)
def test_conv_transpose_matches_torch(env: dc.Environment, function: str, case: dict) -> None:
    options = {k: v for k, v in case.items() if k not in ("x", "w")}
    x = rng.normal(size=case["x"]).astype(np.float32)
    w = rng.normal(size=case["w"]).astype(np.float32)
    expected = getattr(F, function)(_t(x), _t(w), **options).numpy()
    result = evaluate(env, lambda a, k: getattr(dc, function)(a, k, **options), x, w)
    np.testing.assert_allclose(result, expected, rtol=1e-4, atol=1e-4 * np.sqrt(np.prod(case["w"])))


def test_strided_conv_transpose_of_an_empty_batch(env: dc.Environment) -> None:
    """As torch: (0, 3, 5, 5) through a stride-2 transpose is (0, 4, 11, 11); spacing out no elements
    sliced an empty view, which getitem refuses."""
    weight = rng.normal(size=(3, 4, 3, 3)).astype(np.float32)
    empty = np.zeros((0, 3, 5, 5), np.float32)
    assert evaluate(env, lambda a, w: dc.conv_transpose2d(a, w, stride=2), empty, weight).shape == (0, 4, 11, 11)
    assert evaluate(env, lambda a, w: dc.conv_transpose1d(a, w, stride=2), empty[:, :, 0], weight[..., 0]).shape == \
        (0, 4, 11)


def test_conv_transpose2d_reads_flipped_weights_as_vectors(env: dc.Environment) -> None:
    """The flipped weights of a transposed convolution (conv2d's input gradient) are copied on a CPU
    driver, so its matmul fetches them four at a time instead of one by one. (Rows 40 wide: narrower
    ones go to the direct convolution, which fetches weights one by one.)"""
    if env.device.kind != "cpu" or not env.device.limits.max_texel_buffer_elements:
        pytest.skip("the copy pays on CPU drivers, which read operands through texel buffers")
    x = rng.normal(size=(2, 16, 3, 40)).astype(np.float32)
    w = rng.normal(size=(16, 4, 3, 3)).astype(np.float32)
    weights = env.parameter("flip_w", w.shape, init=w)
    inputs = env.parameter("flip_x", x.shape, init=x)
    out = env.parameter("flip_out", (2, 8, 3, 40))
    graph = env.build_graph(lambda s: s.write(out, dc.conv_transpose2d(s.read(inputs), s.read(weights), padding=1,
                                                                        groups=2)))
    env.run(graph)
    (source,) = [source for source in graph.sources if "matmul" in source.ops]
    fetch_a = source.glsl.split("vec4 fetch_a(")[1].split("\n}\n")[0]
    assert "_vec4, " in fetch_a and "load_a" not in fetch_a, fetch_a
    expected = F.conv_transpose2d(_t(x), _t(w), padding=1, groups=2).numpy()
    np.testing.assert_allclose(env.read(out), expected, rtol=1e-4, atol=1e-4 * np.sqrt(16 * 9))


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")  # torch's, on its copy
@pytest.mark.parametrize("function, x, w, options", [
    ("conv2d", (2, 3, 7, 8), (4, 3, 3, 4), dict(padding="same", dilation=(1, 2))),
    ("conv2d", (1, 2, 5, 5), (2, 1, 2, 2), dict(padding="same", groups=2)),
    ("conv2d", (2, 3, 9, 4), (4, 3, 5, 1), dict(padding="same", dilation=(2, 1))),
    ("conv2d", (2, 3, 6, 6), (4, 3, 3, 3), dict(padding="valid", dilation=2)),
    ("conv1d", (2, 3, 10), (4, 3, 4), dict(padding="same", dilation=3)),
    ("conv1d", (2, 3, 10), (4, 3, 4), dict(padding="valid", stride=2)),
])
def test_same_and_valid_padding_match_torch(env: dc.Environment, function: str, x, w, options: dict) -> None:
    """PyTorch's string paddings (they were refused): 'same' pads an odd total's extra one after. Values
    and the gradients of input, weight and bias."""
    x, w = rng.normal(size=x).astype(np.float32), rng.normal(size=w).astype(np.float32)
    b = rng.normal(size=w.shape[0]).astype(np.float32)
    tx, tw, tb = (_t(a).requires_grad_() for a in (x, w, b))
    expected = getattr(F, function)(tx, tw, tb, **options)
    g = rng.normal(size=expected.shape).astype(np.float32)
    (expected * _t(g)).sum().backward()

    def value_and_gradients(a, k, c, cotangent):
        out = getattr(dc, function)(a, k, c, **options)
        return dc.concat([out.reshape(-1), *(d.reshape(-1) for d in a.scope.grad(dc.sum(out * cotangent), [a, k, c]))])

    result = evaluate(env, value_and_gradients, x, w, b, g)
    sizes = np.cumsum([expected.numel(), x.size, w.size])
    for ours, theirs in zip(np.split(result, sizes), (expected.detach(), tx.grad, tw.grad, tb.grad)):
        np.testing.assert_allclose(ours, theirs.numpy().reshape(-1), rtol=1e-4, atol=2e-4 * np.sqrt(x.size))


def test_same_padding_in_modules_and_its_errors(env: dc.Environment) -> None:
    model = nn.Conv2D(3, 4, (2, 3), padding="same").build(env, name="same_conv")
    x = rng.normal(size=(2, 3, 5, 6)).astype(np.float32)
    theirs = torch.nn.Conv2d(3, 4, (2, 3), padding="same")
    with torch.no_grad():
        theirs.weight.copy_(_t(env.read(model.weight)))
        theirs.bias.copy_(_t(env.read(model.bias)))
    result = evaluate(env, lambda a: model(a.scope, a), x)
    np.testing.assert_allclose(result, theirs(_t(x)).detach().numpy(), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"Conv1D: padding='same' needs a stride of 1, as PyTorch's, got stride \(2"):
        nn.Conv1D(3, 4, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="strided"):
        torch.nn.Conv1d(3, 4, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match=r"conv2d: padding must be a number, one per axis, 'valid' or 'same', got 'fu"):
        evaluate(env, lambda a: dc.conv2d(a, a[:1], padding="full"), x)
    with pytest.raises(dc.ShapeError, match="ConvTranspose2D: padding must be an int or a pair of ints, got 'same'"):
        nn.ConvTranspose2D(3, 4, 3, padding="same")


def test_padded_conv2d_declares_only_what_it_reads(env: dc.Environment) -> None:
    """The GLSL declares no index variable (a padded input's load checks the padding through the
    index's coordinates, not the index) and no buffer or view (a CPU driver reads the weights as
    vec4s, not floats) that nothing reads or writes."""
    x = rng.normal(size=(2, 4, 6, 6)).astype(np.float32)
    w = rng.normal(size=(8, 4, 3, 3)).astype(np.float32)
    inputs = env.parameter("unread_x", x.shape, init=x)
    weights = env.parameter("unread_w", w.shape, init=w)
    out = env.parameter("unread_out", (2, 8, 6, 6))
    graph = env.build_graph(lambda s: s.write(out, dc.conv2d(s.read(inputs), s.read(weights), padding=1)))
    env.run(graph)
    for source in graph.sources:
        declared = re.findall(r"int (index_\d+) =", source.glsl)
        declared += re.findall(r"^layout\(.*\) (?:uniform \w+|.*buffer \w+ \{ \w+) (\w+)(?:\[\])?;", source.glsl,
                               re.MULTILINE)
        for name in declared:
            assert len(re.findall(rf"\b{name}\b", source.glsl)) > 1, f"{name} is never used in {source.name}"
    expected = F.conv2d(_t(x), _t(w), padding=1).numpy()
    np.testing.assert_allclose(env.read(out), expected, rtol=1e-4, atol=1e-4 * np.sqrt(4 * 9))


@pytest.mark.parametrize("kernel, stride, padding", [(2, None, 0), (3, 2, 1), ((2, 3), (1, 2), (1, 0)), (2, 1, 0)])
def test_pooling_matches_torch(env: dc.Environment, kernel, stride, padding) -> None:
    x = rng.normal(size=(2, 3, 9, 8)).astype(np.float32)
    expected = F.max_pool2d(_t(x), kernel, stride, padding).numpy()
    np.testing.assert_array_equal(evaluate(env, lambda a: dc.max_pool2d(a, kernel, stride, padding), x), expected)
    expected = F.avg_pool2d(_t(x), kernel, stride, padding).numpy()
    result = evaluate(env, lambda a: dc.avg_pool2d(a, kernel, stride, padding), x)
    np.testing.assert_allclose(result, expected, rtol=1e-6, atol=1e-6)


CONVS_1D = [
    dict(x=(2, 3, 11), w=(4, 3, 3)),
    dict(x=(2, 4, 16), w=(6, 2, 5), stride=2, padding=2, groups=2),
    dict(x=(1, 2, 13), w=(3, 2, 3), stride=(3,), padding=(1,), dilation=(2,)),
]


@pytest.mark.parametrize("case", CONVS_1D, ids=lambda c: str(c))
def test_conv1d_matches_torch(env: dc.Environment, case: dict) -> None:
    """Values and the gradients of input, weight and bias, against torch."""
    options = {k: v for k, v in case.items() if k not in ("x", "w")}
    x = rng.normal(size=case["x"]).astype(np.float32)
    w = rng.normal(size=case["w"]).astype(np.float32)
    b = rng.normal(size=case["w"][0]).astype(np.float32)
    tx, tw, tb = (_t(a).requires_grad_() for a in (x, w, b))
    expected = F.conv1d(tx, tw, tb, **options)
    g = rng.normal(size=expected.shape).astype(np.float32)
    (expected * _t(g)).sum().backward()

    def value_and_gradients(a, k, c, cotangent):
        out = dc.conv1d(a, k, c, **options)
        return dc.concat([out.reshape(-1), *(d.reshape(-1) for d in a.scope.grad(dc.sum(out * cotangent), [a, k, c]))])

    result = evaluate(env, value_and_gradients, x, w, b, g)
    sizes = np.cumsum([expected.numel(), x.size, w.size])
    tolerance = 1e-4 * np.sqrt(np.prod(case["w"][1:]) * max(g.shape[-1], 1))
    for ours, theirs in zip(np.split(result, sizes), (expected.detach(), tx.grad, tw.grad, tb.grad)):
        np.testing.assert_allclose(ours, theirs.numpy().reshape(-1), rtol=1e-4, atol=tolerance)


@pytest.mark.parametrize("kernel, stride, padding", [(2, None, 0), (3, 2, 1), (4, 1, 2)])
def test_pooling_1d_matches_torch(env: dc.Environment, kernel, stride, padding) -> None:
    x = rng.normal(size=(2, 3, 13)).astype(np.float32)
    expected = F.max_pool1d(_t(x), kernel, stride, padding).numpy()
    np.testing.assert_array_equal(evaluate(env, lambda a: dc.max_pool1d(a, kernel, stride, padding), x), expected)
    expected = F.avg_pool1d(_t(x), kernel, stride, padding).numpy()
    result = evaluate(env, lambda a: dc.avg_pool1d(a, kernel, stride, padding), x)
    np.testing.assert_allclose(result, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("function, shape", [("max_pool1d", (2, 3, 10)), ("max_pool2d", (2, 2, 5, 6))])
def test_overlapping_max_pool_with_its_gradient_in_one_graph(env: dc.Environment, function: str, shape) -> None:
    """Windows of stride 1 overlap, so the input's gradient reads the argmax of neighbouring windows:
    the scheduler must not compute that argmax in the kernel of the gradient (it did, and codegen failed)."""
    x = rng.normal(size=shape).astype(np.float32)
    tx = _t(x).requires_grad_()
    expected = getattr(F, function)(tx, 3, 1, 1)
    expected.sum().backward()
    source = env.parameter(f"overlap_{function}_x", shape, init=x)
    pooled = env.parameter(f"overlap_{function}_out", shape)
    gradient = env.parameter(f"overlap_{function}_grad", shape)

    def build(s: dc.Scope) -> None:
        a = s.read(source)
        out = getattr(dc, function)(a, 3, 1, 1)
        s.write(pooled, out)
        s.write(gradient, s.grad(dc.sum(out), [a])[0])

    env.run(env.build_graph(build))
    np.testing.assert_array_equal(env.read(pooled), expected.detach().numpy())
    np.testing.assert_array_equal(env.read(gradient), tx.grad.numpy())


@pytest.mark.parametrize("kernel, stride, padding", [(3, 1, 1), ((3, 2), (2, 1), (1, 1)), (2, 2, 1)])
def test_max_pool_gradient_of_a_window_of_minus_inf_goes_to_its_first_element(env: dc.Environment, kernel,
                                                                              stride, padding) -> None:
    """Padding reads -inf, so a window whose elements are all -inf had its first padded position as its
    argmax, and its gradient was lost; torch gives it to the window's first element of the input."""
    x = rng.normal(size=(2, 1, 5, 4)).astype(np.float32)
    x[0] = -np.inf
    x[1, 0, :2] = -np.inf
    tx = torch.from_numpy(x).requires_grad_()
    expected = torch.nn.functional.max_pool2d(tx, kernel, stride, padding)
    weights = rng.normal(size=expected.shape).astype(np.float32)
    (expected * torch.from_numpy(weights)).sum().backward()
    gradient = evaluate(env, lambda a: a.scope.grad((dc.max_pool2d(a, kernel, stride, padding)
                                                     * a.scope.constant(weights)).sum(), [a])[0], x)
    np.testing.assert_allclose(gradient, tx.grad.numpy(), rtol=1e-6)
    pooled_1d = evaluate(env, lambda a: a.scope.grad(dc.max_pool1d(a, 3, 1, 1).sum(), [a])[0], x[:, 0, 0])
    np.testing.assert_array_equal(pooled_1d, [[2, 1, 1, 0], [2, 1, 1, 0]])


def test_max_pool_pads_integers_and_bools_with_their_lowest_value(env: dc.Environment) -> None:
    flags = np.array([[[True, False, False, False]]])
    np.testing.assert_array_equal(evaluate(env, lambda a: dc.max_pool1d(a, 3, 1, 1), flags),
                                  [[[True, True, False, False]]])
    numbers = np.array([[[-7, -9, -3, -2**31]]], np.int32)
    np.testing.assert_array_equal(evaluate(env, lambda a: dc.max_pool1d(a, 3, 2, 1), numbers), [[[-7, -3]]])


def test_pad_concat_stack(env: dc.Environment) -> None:
    x = rng.normal(size=(3, 4, 5)).astype(np.float32)
    widths = [(1, 0), (0, 2), (3, 1)]
    expected = np.pad(x, widths, constant_values=7)
    np.testing.assert_array_equal(evaluate(env, lambda a: dc.pad(a, widths, 7.0), x), expected)
    np.testing.assert_array_equal(evaluate(env, lambda a: dc.pad(a, widths, mode="reflect"), x),
                                  np.pad(x, widths, mode="reflect"))
    np.testing.assert_array_equal(evaluate(env, lambda a: dc.pad(a, [(-1, 0), (1, -2), (0, 0)]), x),
                                  np.pad(x[1:, :2], [(0, 0), (1, 0), (0, 0)]))
    np.testing.assert_array_equal(evaluate(env, lambda a: dc.concat([a, a * 2, a[:, :1]], 1), x),
                                  np.concatenate([x, x * 2, x[:, :1]], 1))
    np.testing.assert_array_equal(evaluate(env, lambda a: dc.stack([a, -a], -1), x), np.stack([x, -x], -1))
    flags = x > 0
    expected = np.concatenate([flags, ~flags])
    np.testing.assert_array_equal(evaluate(env, lambda a: dc.concat([a, ~a], 0), flags), expected)


@pytest.mark.parametrize("shape, output_size", [((2, 3, 8, 6), 1), ((2, 3, 8, 6), (4, 3)), ((1, 2, 7, 5), (3, 2)),
                                                 ((2, 5, 4), (3, 4)), ((1, 1, 5, 9), (5, 4))])
def test_adaptive_avg_pool2d_matches_torch(env: dc.Environment, shape, output_size) -> None:
    """Sizes that divide (avg_pool2d) and that do not (overlapping windows of two lengths), against
    torch, values and gradients."""
    x = rng.normal(size=shape).astype(np.float32)
    weights = rng.normal(size=shape[:-2] + tuple(np.broadcast_to(output_size, 2))).astype(np.float32)
    tx = torch.from_numpy(x).requires_grad_()
    expected = torch.nn.functional.adaptive_avg_pool2d(tx, output_size)
    (expected * torch.from_numpy(weights)).sum().backward()
    np.testing.assert_allclose(evaluate(env, lambda a: dc.adaptive_avg_pool2d(a, output_size), x),
                               expected.detach().numpy(), rtol=1e-5, atol=1e-6)
    gradient = evaluate(env, lambda a: a.scope.grad((dc.adaptive_avg_pool2d(a, output_size)
                                                     * a.scope.constant(weights)).sum(), [a])[0], x)
    np.testing.assert_allclose(gradient, tx.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_adaptive_avg_pool2d_keeps_inf_and_nan_in_their_windows(env: dc.Environment) -> None:
    """Uneven windows were P_h @ x @ P_w^T, so an inf met the matrices' zeros (0 * inf = NaN) and spread
    into every window; an empty axis was a ZeroDivisionError. Values and gradients against torch."""
    x = np.array([[[[1, 2, 3, 4, np.inf, 6], [1, np.nan, 0, 0, 0, 0], [5, 4, 3, 2, 1, 0]]]], np.float32)
    tx = torch.from_numpy(x).requires_grad_()
    expected = torch.nn.functional.adaptive_avg_pool2d(tx, (2, 4))
    expected.sum().backward()
    np.testing.assert_allclose(evaluate(env, lambda a: dc.adaptive_avg_pool2d(a, (2, 4)), x),
                               expected.detach().numpy(), rtol=1e-6)
    gradient = evaluate(env, lambda a: a.scope.grad(dc.adaptive_avg_pool2d(a, (2, 4)).sum(), [a])[0], x)
    np.testing.assert_allclose(gradient, tx.grad.numpy(), rtol=1e-6)
    with pytest.raises(dc.ShapeError, match=r"adaptive_avg_pool2d: cannot pool an empty axis: the last two of "
                                            r"\(1, 0, 6\)(.|\n)*test_conv.py"):
        evaluate(env, lambda a: dc.adaptive_avg_pool2d(a[:, :0], 2), x[0])


def test_upsample_nearest_and_modules_match_torch(env: dc.Environment) -> None:
    x = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    tx = torch.from_numpy(x).requires_grad_()
    expected = torch.nn.functional.interpolate(tx, scale_factor=(2, 3))
    weights = rng.normal(size=expected.shape).astype(np.float32)
    (expected * torch.from_numpy(weights)).sum().backward()
    np.testing.assert_array_equal(evaluate(env, lambda a: dc.upsample_nearest2d(a, (2, 3)), x),
                                  expected.detach().numpy())
    gradient = evaluate(env, lambda a: a.scope.grad((dc.upsample_nearest2d(a, (2, 3))
                                                     * a.scope.constant(weights)).sum(), [a])[0], x)
    np.testing.assert_allclose(gradient, tx.grad.numpy(), rtol=1e-5, atol=1e-6)
    model = nn.Sequential(nn.Upsample(scale_factor=2), nn.AdaptiveAvgPool2D(1)).build(env)
    np.testing.assert_allclose(evaluate(env, lambda a: model(a.scope, a), x), x.mean(axis=(2, 3), keepdims=True),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(dc.ShapeError, match="scale must be at least 1, got 0"):
        evaluate(env, lambda a: dc.upsample_nearest2d(a, 0), x)
    np.testing.assert_array_equal(evaluate(env, lambda a: nn.Upsample(scale_factor=2.0)(a.scope, a), x),
                                  torch.nn.functional.interpolate(tx, scale_factor=2.0).detach().numpy())
    with pytest.raises(TypeError, match=r"scale must be an int or a pair of ints, got 2\.5"):
        evaluate(env, lambda a: dc.upsample_nearest2d(a, 2.5), x)
    with pytest.raises(dc.ShapeError, match="adaptive_avg_pool2d: needs at least 2 axes"):
        evaluate(env, lambda a: dc.adaptive_avg_pool2d(a, 1), x[0, 0, 0])


def test_pad_of_a_constant_and_concat_of_signed_zeros(env: dc.Environment) -> None:
    """A padded constant is padded (it was the constant everywhere); concat selects each part, so
    -0.0, NaN and infinities come through as they are (a sum of padded parts made -0.0 + 0.0 = 0.0)."""
    padded = evaluate(env, lambda a: a + dc.pad(dc.broadcast_to(a.scope.constant(2.0), (2,)), [(1, 1)]),
                      np.zeros(4, np.float32))
    np.testing.assert_array_equal(padded, [0.0, 2.0, 2.0, 0.0])
    x = np.array([-0.0, 0.0, np.nan, -np.inf], np.float32)
    y = np.array([0.0, -0.0, 1.0, np.inf], np.float32)
    result = evaluate(env, lambda a, b: dc.stack([a, b]), x, y)
    np.testing.assert_array_equal(result, np.stack([x, y]))
    np.testing.assert_array_equal(np.signbit(result), np.signbit(np.stack([x, y])))


def test_conv_shape_errors(env: dc.Environment) -> None:
    x = env.parameter("conv_err_x", (1, 4, 8, 8))
    w = env.parameter("conv_err_w", (6, 3, 3, 3))
    with pytest.raises(dc.ShapeError, match="conv2d: input"):
        env.build_graph(lambda s: dc.conv2d(s.read(x), s.read(w), groups=2))
    with pytest.raises(dc.ShapeError, match="does not fit input"):
        env.build_graph(lambda s: dc.max_pool2d(s.read(x), 9))
    signal = env.parameter("conv_err_signal", (1, 4, 8))
    kernel = env.parameter("conv_err_kernel", (6, 3, 3))
    with pytest.raises(dc.ShapeError, match=r"conv1d: input \(1, 4, 8\) with 2 group\(s\) needs weight \(O, 2, K\)"):
        env.build_graph(lambda s: dc.conv1d(s.read(signal), s.read(kernel), groups=2))
    with pytest.raises(dc.ShapeError, match="conv1d: input .* must both be 3-D"):
        env.build_graph(lambda s: dc.conv1d(s.read(x), s.read(w)))
    with pytest.raises(dc.ShapeError, match="stride must be an int or a 1-tuple"):
        env.build_graph(lambda s: dc.conv1d(s.read(signal), s.read(kernel), stride=(1, 2)))
    with pytest.raises(dc.ShapeError, match=r"conv1d: kernel 3 \(dilation 4, padding 0\) does not fit input \(1, 4,"):
        env.build_graph(lambda s: dc.conv1d(s.read(signal), s.read(kernel)[:, :2], dilation=4, groups=2))
    with pytest.raises(dc.ShapeError, match=r"avg_pool1d: kernel 9 \(dilation 1, padding 0\) does not fit"):
        env.build_graph(lambda s: dc.avg_pool1d(s.read(signal), 9))
    transposed = env.parameter("conv_err_transposed", (4, 2, 3))
    with pytest.raises(ValueError, match="conv_transpose1d: groups must be at least 1, got 0"):
        env.build_graph(lambda s: dc.conv_transpose1d(s.read(signal), s.read(transposed), groups=0))
    for groups in (2.0, True):  # PyTorch: TypeError; 2.0 reached a reshape, True became one group
        with pytest.raises(TypeError, match=f"conv2d: groups must be an int, got {groups}"):
            env.build_graph(lambda s, groups=groups: dc.conv2d(s.read(x), s.read(w), groups=groups))
        with pytest.raises(TypeError, match=f"conv_transpose1d: groups must be an int, got {groups}"):
            env.build_graph(lambda s, groups=groups: dc.conv_transpose1d(s.read(signal), s.read(transposed),
                                                                         groups=groups))
    with pytest.raises(dc.ShapeError, match=r"conv_transpose2d: output_padding \(0, 2\) must be smaller than"):
        env.build_graph(lambda s: dc.conv_transpose2d(s.read(x), s.read(w)[:4], stride=2, output_padding=(0, 2)))
    strided = evaluate(env, lambda a, k: dc.conv1d(a, k, stride=np.int64(2)), np.ones((1, 4, 8), np.float32),
                       np.ones((6, 4, 3), np.float32))
    assert strided.shape == (1, 6, 3)
    with pytest.raises(dc.ShapeError, match=r"conv_transpose1d: bias \(8,\) must have shape \(2,\)"):
        env.build_graph(lambda s: dc.conv_transpose1d(s.read(signal), s.read(transposed), s.read(signal)[0, 0]))
    with pytest.raises(dc.ShapeError, match="max_pool1d: padding 2 must be at most half the kernel 3"):
        env.build_graph(lambda s: dc.max_pool1d(s.read(signal), 3, padding=2))
    with pytest.raises(dc.ShapeError, match="avg_pool1d: needs an array with a last axis"):
        env.build_graph(lambda s: dc.avg_pool1d(s.read(signal)[0, 0, 0], 3))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_convolutions(env: dc.Environment, data) -> None:
    groups = data.draw(st.sampled_from([1, 2]))
    c, o = groups * data.draw(st.integers(1, 3)), groups * data.draw(st.integers(1, 3))
    kh, kw = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    stride = (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2)))
    padding = (data.draw(st.integers(0, 2)), data.draw(st.integers(0, 2)))
    h, w = data.draw(st.integers(kh, 9)), data.draw(st.integers(kw, 9))
    x = rng.normal(size=(data.draw(st.integers(1, 2)), c, h, w)).astype(np.float32)
    k = rng.normal(size=(o, c // groups, kh, kw)).astype(np.float32)
    expected = F.conv2d(_t(x), _t(k), stride=stride, padding=padding, groups=groups).numpy()
    result = evaluate(env, lambda a, b: dc.conv2d(a, b, stride=stride, padding=padding, groups=groups), x, k)
    np.testing.assert_allclose(result, expected, rtol=1e-4, atol=1e-4 * np.sqrt(c * kh * kw))


def test_conv2d_gradients_fold_whole_images(env: dc.Environment) -> None:
    """A batch long enough that the weight gradient's product over (images x positions) is split
    into partial products, and the bias gradient's sum into partial sums: each part takes whole
    images or an equal part of one (96 parts of 150 positions, not 100 of 144 that straddle
    images), and the gradients match torch's. Tolerance: rtol 1e-4, atol 1e-4 * sqrt(fold length)."""
    x = rng.normal(size=(16, 8, 30, 30)).astype(np.float32)
    w = rng.normal(size=(16, 4, 3, 3)).astype(np.float32)
    b = rng.normal(size=16).astype(np.float32)
    g = rng.normal(size=(16, 16, 30, 30)).astype(np.float32)
    tx, tw, tb = (_t(a).requires_grad_() for a in (x, w, b))
    (F.conv2d(tx, tw, tb, padding=1, groups=2) * _t(g)).sum().backward()
    named = {"x": x, "w": w, "b": b, "g": g}
    parameters = [env.parameter(f"fold_{name}", a.shape, init=a) for name, a in named.items()]
    outputs = [env.parameter(f"fold_d{name}", named[name].shape) for name in "xwb"]

    def step(s: dc.Scope) -> None:
        xs, ws, bs, gs = (s.read(p) for p in parameters)
        loss = dc.sum(dc.conv2d(xs, ws, bs, padding=1, groups=2) * gs)
        for out, gradient in zip(outputs, s.grad(loss, [xs, ws, bs])):
            s.write(out, gradient)

    graph = env.build_graph(step)
    env.run(graph)
    folds = [int(length) for s in graph.sources if "matmul" in s.ops
             for length in re.findall(r"x \(8 x (\d+)\) @ \(\d+ x 36\)", s.glsl)]
    assert len(folds) == 1 and folds[0] < 16 * 900 and (900 % folds[0] == 0 or folds[0] % 900 == 0), folds
    for out, expected in zip(outputs, (tx.grad, tw.grad, tb.grad)):
        np.testing.assert_allclose(env.read(out), expected.numpy(), rtol=1e-4, atol=1e-4 * np.sqrt(16 * 900))


def test_unbatched_input_to_the_convolution_functions_as_torch(env: dc.Environment) -> None:
    """F.conv2d and the others take one unbatched (C, H, W) or (C, L) input; dc's refused it (the
    modules took it). Values against torch."""
    image, signal = rng.normal(size=(4, 6, 5)).astype(np.float32), rng.normal(size=(4, 7)).astype(np.float32)
    w2, w1 = rng.normal(size=(6, 2, 3, 3)).astype(np.float32), rng.normal(size=(4, 3, 3)).astype(np.float32)
    t = torch.nn.functional
    cases = [(dc.conv2d, t.conv2d, image, w2, {"padding": 1, "groups": 2}),
             (dc.conv1d, t.conv1d, signal, w1[:, :2], {"stride": 2, "groups": 2}),
             (dc.conv_transpose2d, t.conv_transpose2d, image, w2[:4], {"stride": 2}),
             (dc.conv_transpose1d, t.conv_transpose1d, signal, w1, {"dilation": 2})]
    for ours, theirs, x, w, options in cases:
        expected = theirs(torch.from_numpy(x), torch.from_numpy(w), **options).numpy()
        np.testing.assert_allclose(evaluate(env, lambda a, k, f=ours, o=options: f(a, k, **o), x, w), expected,
                                   rtol=1e-5, atol=1e-5, err_msg=ours.__name__)


def test_convolution_and_pooling_errors_name_their_function(env: dc.Environment) -> None:
    """A pool of a 1-D array blamed `pad`, a kernel of size 0 `windows`; a bad stride or padding named
    no function; nn.Upsample resized the last two axes of 3-D and 5-D inputs, which PyTorch's takes as
    (N, C, L) and (N, C, D, H, W)."""
    x = env.parameter("named_errors_x", (1, 3, 5, 5))
    w = env.parameter("named_errors_w", (4, 3, 0, 3))
    for call, message in [(lambda s: dc.max_pool2d(s.read(x)[0, 0, 0], 2), r"max_pool2d: needs at least 2 axes"),
                          (lambda s: dc.avg_pool2d(s.read(x)[0, 0, 0], 2), r"avg_pool2d: needs at least 2 axes"),
                          (lambda s: dc.conv2d(s.read(x), s.read(w)), r"conv2d: weight \(4, 3, 0, 3\) has a kernel "
                                                                       r"size of 0"),
                          (lambda s: dc.conv2d(s.read(x), s.read(w)[..., :1, :], stride=0),
                           r"conv2d: stride must be at least 1, got 0"),
                          (lambda s: dc.conv_transpose2d(s.read(x), s.read(w)[:3, ..., :1, :], padding=-1),
                           r"conv_transpose2d: padding must be at least 0, got -1"),
                          (lambda s: nn.Upsample(10)(s, s.read(x)[0]), r"Upsample: input \(3, 5, 5\) must be 4-D "
                                                                       r"\(N, C, H, W\); PyTorch's would take 3-D")]:
        with pytest.raises(dc.ShapeError, match=message + r"(.|\n)*test_conv.py"):
            env.build_graph(call)
    with pytest.raises(dc.DTypeError, match=r"conv2d: cannot use float as an Array operand"):
        env.build_graph(lambda s: dc.conv2d(s.read(x), s.read(w)[..., :1, :], 0.5))


def _direct(env: dc.Environment, graph) -> list[str]:
    """The headers (first lines after #version) of a graph's matmul kernels that are direct convolutions."""
    return [source.glsl.split("\n")[1] for source in graph.sources
            if "matmul" in source.ops and "float load_input(int batch, int channel, int y, int x)" in source.glsl]


def test_convnet_convolutions_run_as_direct_convolutions_on_a_cpu_driver(env: dc.Environment) -> None:
    """On a CPU driver, the example ConvNet's conv2 (forward, and its input gradient, which is a
    convolution too) runs as a direct convolution (shaders/conv_direct.comp), not as a matmul over
    its windows; conv1 (one input channel) and the weight gradients stay matmuls. Gradients match
    torch's. Tolerance: rtol 1e-4, atol 1e-4 * sqrt(longest fold). Average pooling in place of the
    ConvNet's max pooling, and inputs of its own: a max over a window of nearly equal values picks
    an element by the last bit of the convolution (the shared rng's state depends on the draws of
    hypothesis tests before, and one fresh-clone run took the other element of a near tie: 1 %
    off in conv1's weight gradient)."""
    if env.device.kind != "cpu":
        pytest.skip("the direct convolution is a CPU driver's kernel")
    model = nn.Sequential(nn.Conv2D(1, 16, 3, padding=1), nn.LeakyReLU(0.01), nn.AvgPool2D(2),
                          nn.Conv2D(16, 32, 3, padding=1, groups=2), nn.LeakyReLU(0.01)).build(env, name="direct_net")
    own = np.random.default_rng(11)
    x = own.normal(size=(4, 1, 28, 28)).astype(np.float32)
    g = own.normal(size=(4, 32, 14, 14)).astype(np.float32)
    xp, gp = env.parameter("direct_net_x", x.shape, init=x), env.parameter("direct_net_g", g.shape, init=g)
    parameters = model.parameters()
    outputs = [env.parameter(f"direct_net_d{k}", p.shape) for k, p in enumerate(parameters)]

    def step(s: dc.Scope) -> None:
        loss = dc.sum(model(s, s.read(xp)) * s.read(gp))
        for out, gradient in zip(outputs, s.grad(loss, [s.read(p) for p in parameters])):
            s.write(out, gradient)

    graph = env.build_graph(step)
    env.run(graph)
    headers = _direct(env, graph)
    for shape in ("8 x (16 x 72) @ (72 x 196)", "8 x (8 x 144) @ (144 x 196)"):
        assert any(shape in header for header in headers), (shape, headers)
    assert len(headers) == 2, headers
    theirs = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.LeakyReLU(0.01), torch.nn.AvgPool2d(2),
                                 torch.nn.Conv2d(16, 32, 3, padding=1, groups=2), torch.nn.LeakyReLU(0.01))
    with torch.no_grad():
        for mine, their in zip(parameters, theirs.parameters()):
            their.copy_(_t(env.read(mine)))
    (theirs(_t(x)) * _t(g)).sum().backward()
    for out, their in zip(outputs, theirs.parameters()):
        np.testing.assert_allclose(env.read(out), their.grad.numpy(), rtol=1e-4, atol=1e-4 * np.sqrt(4 * 28 * 28))


DIRECT = [  # x, w, options, whether conv2d's forward runs as a direct convolution on a CPU driver
    ((1, 3, 7, 9), (5, 3, 3, 3), dict(padding=1), True),  # batch 1, 5 output channels, odd sizes
    ((3, 4, 11, 6), (6, 2, 5, 5), dict(padding=2, groups=2), True),
    ((2, 8, 9, 13), (20, 2, 1, 1), dict(groups=4), True),  # 1 x 1, 5 output channels a group
    ((2, 6, 10, 7), (12, 6, 3, 5), dict(padding="same"), True),  # non-square
    ((2, 3, 8, 5), (4, 3, 2, 3), dict(), True),  # valid, even kernel height
    ((2, 4, 7, 8), (8, 4, 3, 3), dict(padding=1), True),  # 7 rows: the last block of two has one
    ((3, 2, 6, 30), (20, 2, 3, 3), dict(padding=1), True),  # 32 padded columns, the widest; 2 blocks of 10 channels
    ((1, 2, 3, 40), (3, 2, 3, 3), dict(padding=1), False),  # 42 padded columns: the matmul
    ((2, 1, 9, 11), (4, 1, 3, 3), dict(padding=1), False),  # one input channel: the matmul
    ((2, 4, 9, 8), (6, 2, 3, 3), dict(stride=2, padding=1, groups=2), False),  # strided: the matmul
]


@pytest.mark.parametrize("x_shape, w_shape, options, direct", DIRECT, ids=str)
@pytest.mark.parametrize("activations", [False, True])
def test_direct_convolutions_and_their_gradients_match_torch(env: dc.Environment, x_shape, w_shape, options: dict,
                                                            direct: bool, activations: bool) -> None:
    """conv2d's value and the gradients of its input, weight and bias against torch's, over the
    shapes the direct convolution takes on a CPU driver (and two it leaves to the matmul), with or
    without a leaky ReLU of its input and a ReLU after the bias. Tolerance: rtol 1e-4, atol
    1e-4 * sqrt(longest fold)."""
    x, w = rng.normal(size=x_shape).astype(np.float32), rng.normal(size=w_shape).astype(np.float32)
    b = rng.normal(size=w_shape[0]).astype(np.float32)
    tx, tw, tb = (_t(a).requires_grad_() for a in (x, w, b))
    expected = F.conv2d(F.leaky_relu(tx, 0.1) if activations else tx, tw, tb, **options)
    expected = F.relu(expected) if activations else expected
    g = rng.normal(size=expected.shape).astype(np.float32)
    (expected * _t(g)).sum().backward()
    named = {"x": x, "w": w, "b": b, "g": g}
    uid = f"direct_{len(env.parameters)}"
    parameters = [env.parameter(f"{uid}_{name}", a.shape, init=a) for name, a in named.items()]
    outputs = [env.parameter(f"{uid}_out", expected.shape)] + [env.parameter(f"{uid}_d{n}", named[n].shape)
                                                               for n in "xwb"]

    def step(s: dc.Scope) -> None:
        xs, ws, bs, gs = (s.read(p) for p in parameters)
        out = dc.conv2d(dc.leaky_relu(xs, 0.1) if activations else xs, ws, bs, **options)
        out = dc.relu(out) if activations else out
        s.write(outputs[0], out)
        for target, gradient in zip(outputs[1:], s.grad(dc.sum(out * gs), [xs, ws, bs])):
            s.write(target, gradient)

    graph = env.build_graph(step)
    env.run(graph)
    if env.device.kind == "cpu":
        forward = f"x ({w_shape[0] // options.get('groups', 1)} x {np.prod(w_shape[1:])}) @"
        assert any(forward in header for header in _direct(env, graph)) == direct, _direct(env, graph)
    fold = max(np.prod(w_shape[1:]), w_shape[0] * np.prod(w_shape[2:]), x_shape[0] * np.prod(expected.shape[2:]))
    for out, theirs in zip(outputs, (expected.detach(), tx.grad, tw.grad, tb.grad)):
        np.testing.assert_allclose(env.read(out), theirs.numpy(), rtol=1e-4, atol=1e-4 * np.sqrt(fold))


def test_transposed_convolutions_take_pytorch_s_argument_order(env) -> None:
    """conv_transpose took dilation before groups (PyTorch: groups, then dilation), so code ported with
    positional arguments built another convolution without an error."""
    draw = np.random.default_rng(11)
    x, w = draw.normal(size=(1, 4, 6, 6)).astype(np.float32), draw.normal(size=(4, 3, 3, 3)).astype(np.float32)
    out = evaluate(env, lambda a, b: dc.conv_transpose2d(a, b, None, 1, 0, 0, 2, 3), x, w)
    expected = torch.nn.functional.conv_transpose2d(_t(x), _t(w), None, 1, 0, 0, 2, 3).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    out = evaluate(env, lambda a, b: dc.conv_transpose1d(a, b, None, 1, 0, 0, 2, 3), x[:, :, 0], w[..., 0])
    expected = torch.nn.functional.conv_transpose1d(_t(x[:, :, 0]), _t(w[..., 0]), None, 1, 0, 0, 2, 3).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    for ours, theirs in ((nn.ConvTranspose2D(4, 6, 3, 1, 0, 0, 2, False, 3),
                          torch.nn.ConvTranspose2d(4, 6, 3, 1, 0, 0, 2, False, 3)),
                         (nn.ConvTranspose1D(4, 6, 3, 1, 0, 0, 2, False, 3),
                          torch.nn.ConvTranspose1d(4, 6, 3, 1, 0, 0, 2, False, 3))):
        assert ours.groups == theirs.groups and ours.dilation == theirs.dilation and ours.use_bias is False
        assert ours.weight_shape() == tuple(theirs.weight.shape)
    assert repr(nn.ConvTranspose2D(4, 6, 3, 1, 0, 0, 2, False, 3)) == \
        "ConvTranspose2D(4, 6, (3, 3), dilation=(3, 3), groups=2, bias=False)"  # it showed groups alone
    assert repr(nn.Conv1D(4, 6, 3, stride=2, padding=1)) == "Conv1D(4, 6, 3, stride=2, padding=1, groups=1)"
