"""descent.nn's layers check their arguments as PyTorch's do: sizes (numpy integers too), settings (numpy
floats too), the input's rank and channels, and the output sizes; what PyTorch builds they build, what
PyTorch refuses they refuse, naming the module, the argument and the user's line."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import pytest
import torch

import descent as dc
from descent import nn
from tests.conftest import evaluate

F = torch.nn.functional
_uid = itertools.count()
LINE = r".*\n  at .*test_layer_arguments\.py:\d+"


def _output(env: dc.Environment, module: nn.Module, x: np.ndarray, training: bool = False,
            weights: np.ndarray | None = None) -> tuple[np.ndarray, list[np.ndarray], dict[str, np.ndarray]]:
    """module(x), the gradients of sum(module(x) * weights) for x and the trainable parameters, and the
    parameters' values after the run."""
    uid = next(_uid)
    if not module._built:
        module.build(env, seed=uid, name=f"arg{uid}")
    parameters = module.parameters(trainable_only=True)
    integer = x.dtype.kind in "iu"
    source = env.parameter(f"arg{uid}.x", x.shape, dc.int32 if integer else dc.float32, init=x)
    holder = {}

    def build(s: dc.Scope) -> None:
        xa, arrays = s.read(source), [s.read(p) for p in parameters]
        out = module(s, xa)
        holder["out"] = env.parameter(f"arg{uid}.out", out.shape)
        s.write(holder["out"], out)
        w = np.ones(out.shape, np.float32) if weights is None else weights
        grads = s.grad(dc.sum(out * s.constant(w)), ([] if integer else [xa]) + arrays)
        holder["grads"] = [env.parameter(f"arg{uid}.g{k}", g.shape) for k, g in enumerate(grads)]
        for p, g in zip(holder["grads"], grads):
            s.write(p, g)

    env.run(env.build_graph(build, training=training))
    values = {name.split(".", 1)[1]: env.read(p) for name, p in module.named_parameters()}
    return env.read(holder["out"]), [env.read(g) for g in holder["grads"]], values


def _build_graph(env: dc.Environment, module: nn.Module, x: np.ndarray | tuple[int, ...],
                 training: bool = False) -> None:
    """Build a graph applying `module` to a parameter of shape `x`, or to the numpy array `x` itself."""
    uid = next(_uid)
    if not module._built:
        module.build(env, seed=uid, name=f"call{uid}")
    if isinstance(x, np.ndarray):
        env.build_graph(lambda s: module(s, x), training=training)
        return
    source = env.parameter(f"call{uid}.x", x)
    env.build_graph(lambda s: module(s, s.read(source)), training=training)


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors is a no-op")
def test_zero_fan_in_builds_with_a_zero_bound_as_pytorch(env: dc.Environment) -> None:
    dense = nn.Dense(0, 3).build(env, name="fan0_dense")
    conv = nn.Conv2D(0, 4, 3).build(env, name="fan0_conv")
    assert env.read(dense.weight).shape == (0, 3) and env.read(conv.weight).shape == (4, 0, 3, 3)
    np.testing.assert_array_equal(env.read(dense.bias), np.zeros(3))  # torch skips the init: its memory is as found
    np.testing.assert_array_equal(env.read(conv.bias), np.zeros(4))
    out, grads, _ = _output(env, dense, np.zeros((2, 0), np.float32))
    np.testing.assert_array_equal(out, torch.nn.Linear(0, 3)(torch.zeros(2, 0)).detach().numpy())
    np.testing.assert_array_equal(grads[-1], [2.0, 2.0, 2.0])


@pytest.mark.parametrize("make, argument", [
    (lambda: nn.Dense(-1, 3), "Dense: inputs must be at least 0, got -1"),
    (lambda: nn.Dense(3, -2), "Dense: outputs must be at least 0, got -2"),
    (lambda: nn.Conv2D(-4, 8, 3), "Conv2D: inputs must be at least 0, got -4"),
    (lambda: nn.Conv2D(4, -8, 3), "Conv2D: outputs must be at least 0, got -8"),
    (lambda: nn.ConvTranspose1D(2, -2, 3), "ConvTranspose1D: outputs must be at least 0, got -2"),
    (lambda: nn.Conv2D(4, 8, 3, groups=0), "Conv2D: groups must be at least 1, got 0"),
    (lambda: nn.BatchNorm(-2), "BatchNorm: channels must be at least 0, got -2"),
    (lambda: nn.LayerNorm(-1), "LayerNorm: shape must be at least 0, got -1"),
    (lambda: nn.LayerNorm((2, -3)), "LayerNorm: shape must be at least 0, got -3"),
    (lambda: nn.Embedding(-1, 4), "Embedding: count must be at least 0, got -1"),
    (lambda: nn.Embedding(4, -1), "Embedding: features must be at least 0, got -1"),
])
def test_negative_sizes_are_refused_by_module_and_argument(make: Callable[[], nn.Module], argument: str) -> None:
    with pytest.raises(ValueError, match=argument + LINE):
        make()


@pytest.mark.parametrize("make, argument", [
    (lambda: nn.Conv2D(4, 8, 3, groups=2.0), r"Conv2D: groups must be an int, got 2\.0"),
    (lambda: nn.Dense(2.5, 3), r"Dense: inputs must be an int, got 2\.5"),
    (lambda: nn.Embedding(5, True), "Embedding: features must be an int, got True"),
    (lambda: nn.LayerNorm(4.0), r"LayerNorm: shape must be an int, got 4\.0"),
])
def test_sizes_that_are_not_integers_are_refused_as_pytorch(make: Callable[[], nn.Module], argument: str) -> None:
    with pytest.raises(TypeError, match=argument + LINE):
        make()


@pytest.mark.parametrize("make, error, argument", [
    (lambda: nn.Conv1D(2, 3, 3, stride=2.5), TypeError, r"Conv1D: stride must be an int or a 1-tuple, got 2\.5"),
    (lambda: nn.Conv2D(2, 3, True), TypeError, "Conv2D: kernel must be an int or a pair of ints, got True"),
    (lambda: nn.Conv2D(2, 3, 3, padding=(1,)), dc.ShapeError,
     r"Conv2D: padding must be an int or a pair of ints, got \(1,\)"),
    (lambda: nn.Conv2D(2, 3, 3, dilation=0), dc.ShapeError, "Conv2D: dilation must be at least 1, got 0"),
    (lambda: nn.ConvTranspose1D(2, 3, 3, output_padding=-1), dc.ShapeError,
     "ConvTranspose1D: output_padding must be at least 0"),
    (lambda: nn.MaxPool1D(2.5), TypeError, r"MaxPool1D: kernel must be an int or a 1-tuple, got 2\.5"),
    (lambda: nn.AvgPool2D(2, stride=True), TypeError, "AvgPool2D: stride must be an int or a pair of ints, got True"),
    (lambda: nn.MaxPool2D(2, padding=2), dc.ShapeError,
     r"MaxPool2D: padding \(2, 2\) must be at most half the kernel \(2, 2\)"),
    (lambda: nn.Upsample(scale_factor=1.5), TypeError, r"Upsample: scale_factor must be an int or a pair of ints, "
                                                       r"got 1\.5"),
    (lambda: nn.AdaptiveAvgPool2D(0), dc.ShapeError, "AdaptiveAvgPool2D: output_size must be at least 1, got 0"),
])
def test_settings_are_refused_where_the_module_is_made(make: Callable[[], nn.Module], error: type,
                                                       argument: str) -> None:
    with pytest.raises(error, match=argument + LINE):
        make()


@pytest.mark.parametrize("make, error, argument", [
    (lambda: nn.LeakyReLU("x"), TypeError, "LeakyReLU: negative_slope must be a number, got 'x'"),
    (lambda: nn.LeakyReLU(float("inf")), ValueError, "LeakyReLU: negative_slope must be a finite number, got inf"),
    (lambda: nn.Sin(None), TypeError, "Sin: omega must be a number, got None"),
    (lambda: nn.Softmax(1.5), TypeError, r"Softmax: dim must be an int, got 1\.5"),
])
def test_activation_settings_are_refused_where_the_module_is_made(make, error, argument: str) -> None:
    """LeakyReLU('x') was taken and failed at predict time as 'mul: cannot use str as an Array operand'."""
    with pytest.raises(error, match=argument + LINE):
        make()


@pytest.mark.parametrize("module, torch_module, shape", [
    (nn.Conv2D(3, 4, 3, padding=1), torch.nn.Conv2d(3, 4, 3, padding=1), (3, 5, 6)),
    (nn.Conv1D(2, 3, 3, stride=2), torch.nn.Conv1d(2, 3, 3, stride=2), (2, 9)),
    (nn.ConvTranspose2D(3, 2, 2, stride=2), torch.nn.ConvTranspose2d(3, 2, 2, stride=2), (3, 4, 4)),
])
def test_convolutions_take_unbatched_input_as_pytorch(env: dc.Environment, module, torch_module, shape) -> None:
    x = np.random.default_rng(3).normal(size=shape).astype(np.float32)
    out, grads, values = _output(env, module, x)
    with torch.no_grad():
        torch_module.weight.copy_(torch.from_numpy(values["weight"]))
        torch_module.bias.copy_(torch.from_numpy(values["bias"]))
    tx = torch.tensor(x, requires_grad=True)
    expected = torch_module(tx)
    expected.sum().backward()
    np.testing.assert_allclose(out, expected.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grads[0], tx.grad.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("make", [lambda: nn.Conv1D(2, 3, 3, stride=2.0), lambda: nn.Conv2D(2, 3, 3, stride=2.0),
                                  lambda: nn.Conv2D(2, 3, 3.0), lambda: nn.MaxPool2D(2.0),
                                  lambda: nn.Conv2D(2, 3, 3, dilation=(1, 2.0))])
def test_float_sizes_are_refused_as_pytorch_refuses_them(make: Callable[[], nn.Module]) -> None:
    with pytest.raises(TypeError, match=r"must be an int or a (pair of ints|1-tuple), got"):
        make()


def test_upsample_takes_a_whole_float_scale_as_pytorch() -> None:
    assert nn.Upsample(scale_factor=2.0).scale_factor == (2, 2)


def test_upsample_and_adaptive_pooling_take_pytorch_s_keywords(env: dc.Environment) -> None:
    """Upsample's one argument was named size but meant a scale factor, so Upsample(size=(10, 10)) scaled by
    10 without an error, and PyTorch's scale_factor= and output_size= were refused naming a private class."""
    x = np.random.default_rng(3).normal(size=(1, 2, 5, 5)).astype(np.float32)
    for ours, theirs in ((nn.Upsample(size=(10, 15)), torch.nn.Upsample(size=(10, 15))),
                         (nn.Upsample(10), torch.nn.Upsample(10)),
                         (nn.Upsample(scale_factor=(2, 3)), torch.nn.Upsample(scale_factor=(2, 3))),
                         (nn.AdaptiveAvgPool2D(output_size=(2, 3)), torch.nn.AdaptiveAvgPool2d(output_size=(2, 3)))):
        out = evaluate(env, lambda a, module=ours: module(a.scope, a), x)
        np.testing.assert_allclose(out, theirs(torch.from_numpy(x)).numpy(), rtol=1e-6, atol=1e-6)
    assert repr(nn.Upsample(size=4)) == "Upsample(size=(4, 4), mode='nearest')"
    for make, message in ((lambda: nn.Upsample(), "Upsample: give size or scale_factor, as PyTorch's, not neither"),
                          (lambda: nn.Upsample(4, 2), "Upsample: give size or scale_factor, as PyTorch's, not both"),
                          (lambda: nn.Upsample(scale_factor=2, mode="bilinear"),
                           "Upsample: mode 'bilinear' is not supported, only 'nearest'")):
        with pytest.raises(ValueError, match=message):
            make()
    with pytest.raises(dc.ShapeError, match=r"Upsample: size \(7, 7\) is not a whole multiple of the input's \(5, 5\)"):
        evaluate(env, lambda a: nn.Upsample(7)(a.scope, a), x)


def test_zero_sizes_build_as_pytorch_and_batchnorm_refuses_no_channels(env: dc.Environment) -> None:
    out, _, _ = _output(env, nn.LayerNorm(0), np.zeros((2, 0), np.float32))
    assert out.shape == tuple(torch.nn.LayerNorm(0)(torch.zeros(2, 0)).shape) == (2, 0)
    out, _, _ = _output(env, nn.Embedding(0, 4), np.zeros((0,), np.int32))
    assert out.shape == tuple(torch.nn.Embedding(0, 4)(torch.zeros(0, dtype=torch.long)).shape) == (0, 4)
    empty = nn.BatchNorm(0).build(env, name="zero_bn")
    with pytest.raises(IndexError):
        torch.nn.BatchNorm1d(0)(torch.zeros(4, 0))
    for training in (True, False):
        with pytest.raises(dc.ShapeError, match=r"BatchNorm\(0\): input \(4, 0\) has no channels to normalise"):
            _build_graph(env, empty, (4, 0), training)


def test_numpy_numbers_are_taken_where_python_numbers_are(env: dc.Environment) -> None:
    x = np.random.default_rng(1).normal(size=(6, 3)).astype(np.float32) * 2 + 1
    norm = nn.BatchNorm(np.int64(3), momentum=np.float32(0.25), eps=np.float64(1e-3))
    _output(env, norm, x, training=True)
    reference = torch.nn.BatchNorm1d(3, momentum=0.25, eps=1e-3)
    reference(torch.from_numpy(x))
    np.testing.assert_allclose(env.read(norm.running_mean), reference.running_mean.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(env.read(norm.running_var), reference.running_var.numpy(), rtol=1e-5, atol=1e-6)
    layer = nn.LayerNorm(np.int64(3))
    assert layer.shape == (3,) and type(layer.shape[0]) is int
    out, _, values = _output(env, layer, x)
    np.testing.assert_allclose(out, F.layer_norm(torch.from_numpy(x), (3,)).numpy(), rtol=1e-5, atol=1e-5)
    conv = nn.Conv2D(np.int64(4), np.int32(6), 3, groups=np.int64(2)).build(env, name="numpy_groups_conv")
    assert conv.weight.shape == (6, 2, 3, 3)
    dropout = nn.Dropout(np.float32(0.5))
    assert dropout.p == 0.5


@pytest.mark.parametrize("beta, threshold", [(1.0, 20.0), (2, 20.0), (2.0, 1.0), (0.5, 3.0), (-1.0, 20.0),
                                             (np.float32(3.0), np.int64(5))])
def test_softplus_takes_beta_and_threshold_as_pytorch(env: dc.Environment, beta: float, threshold: float) -> None:
    x = np.array([[-30.0, -10.0, -2.0, -0.4, 0.0, 0.3, 0.49, 0.51, 1.0, 1.9, 2.1, 5.0, 10.5, 30.0]], np.float32)
    weights = np.linspace(-1.0, 2.0, x.size, dtype=np.float32).reshape(x.shape)
    out, grads, _ = _output(env, nn.Softplus(beta=beta, threshold=threshold), x, weights=weights)
    tx = torch.tensor(x, requires_grad=True)
    expected = F.softplus(tx, beta=float(beta), threshold=float(threshold))
    (expected * torch.from_numpy(weights)).sum().backward()
    np.testing.assert_allclose(out, expected.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads[0], tx.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_softplus_settings_are_checked_and_shown() -> None:
    assert repr(nn.Softplus(beta=2)) == "Softplus(beta=2.0, threshold=20.0)"
    with pytest.raises(ValueError, match="Softplus: beta must not be 0" + LINE):
        nn.Softplus(beta=0)
    with pytest.raises(TypeError, match="Softplus: threshold must be a number, got 'high'" + LINE):
        nn.Softplus(threshold="high")


def test_dropout_of_one_zeroes_everything_while_training(env: dc.Environment) -> None:
    x = np.arange(1.0, 13.0, dtype=np.float32).reshape(3, 4)
    out, grads, _ = _output(env, nn.Dropout(1.0), x, training=True)
    expected = torch.nn.Dropout(1.0).train()(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(grads[0], np.zeros_like(x))
    out, grads, _ = _output(env, nn.Dropout(1), x, training=False)
    np.testing.assert_array_equal(out, torch.nn.Dropout(1.0).eval()(torch.from_numpy(x)).numpy())
    with pytest.raises(ValueError, match=r"Dropout: p must be a number in \[0, 1\], got 1\.5" + LINE):
        nn.Dropout(1.5)


@pytest.mark.parametrize("module, torch_module, shape, message", [
    (nn.ConvTranspose2D(2, 2, 1, padding=1), torch.nn.ConvTranspose2d(2, 2, 1, padding=1), (1, 2, 2, 2),
     r"conv_transpose2d: given input size per channel \(2, 2\), the calculated output size per channel \(0, 0\) "
     r"is too small"),
    (nn.ConvTranspose2D(2, 2, 1, padding=(0, 1)), torch.nn.ConvTranspose2d(2, 2, 1, padding=(0, 1)), (1, 2, 1, 1),
     r"conv_transpose2d: given input size per channel \(1, 1\), the calculated output size per channel \(1, -1\) "
     r"is too small"),
    (nn.ConvTranspose1D(2, 2, 2, padding=1), torch.nn.ConvTranspose1d(2, 2, 2, padding=1), (1, 2, 1),
     r"conv_transpose1d: given input size per channel \(1,\), the calculated output size per channel \(0,\) "
     r"is too small"),
])
def test_transposed_convolutions_refuse_outputs_too_small(env: dc.Environment, module: nn.Module,
                                                          torch_module: torch.nn.Module, shape: tuple[int, ...],
                                                          message: str) -> None:
    with pytest.raises(RuntimeError, match="too small"):
        torch_module(torch.zeros(shape))
    with pytest.raises(dc.ShapeError, match=message + LINE):
        _build_graph(env, module, shape)


@pytest.mark.parametrize("module, shape, message", [
    (nn.Conv2D(4, 8, 3), (1, 3, 5, 5),
     r"Conv2D\(4, 8, \(3, 3\), groups=1\): input \(1, 3, 5, 5\) must be \(N, 4, H, W\) or \(4, H, W\): 4 "
     "channels before the spatial axes"),
    (nn.Conv2D(4, 8, 3), (3, 5, 5), r"Conv2D\(4, 8, \(3, 3\), groups=1\): input \(3, 5, 5\) must be \(N, 4, H, W\)"),
    (nn.Conv2D(4, 8, 3), (5, 5), r"Conv2D\(4, 8, \(3, 3\), groups=1\): input \(5, 5\) must be \(N, 4, H, W\)"),
    (nn.Conv1D(4, 8, 3), (2, 3, 7), r"Conv1D\(4, 8, 3, groups=1\): input \(2, 3, 7\) must be \(N, 4, L\) or \(4, L\)"),
    (nn.ConvTranspose2D(4, 8, 3), (1, 3, 5, 5),
     r"ConvTranspose2D\(4, 8, \(3, 3\), groups=1\): input \(1, 3, 5, 5\) must be \(N, 4, H, W\)"),
    (nn.ConvTranspose1D(4, 8, 3), (1, 3, 5),
     r"ConvTranspose1D\(4, 8, 3, groups=1\): input \(1, 3, 5\) must be \(N, 4, L\)"),
    (nn.MaxPool2D(2), (4,), r"MaxPool2D: input \(4,\) is 1-D; it must be 3-D or 4-D \(channels first\)"),
    (nn.MaxPool2D(2), (1, 2, 3, 4, 4), r"MaxPool2D: input \(1, 2, 3, 4, 4\) is 5-D; it must be 3-D or 4-D"),
    (nn.AvgPool1D(2), (), r"AvgPool1D: input \(\) is 0-D; it must be 2-D or 3-D \(channels first\)"),
    (nn.AvgPool1D(2), (2, 3, 4, 4), r"AvgPool1D: input \(2, 3, 4, 4\) is 4-D; it must be 2-D or 3-D"),
    (nn.BlurMaxPool2D(), (2, 4, 4), r"BlurMaxPool2D: input \(2, 4, 4\) must be 4-D \(N, C, H, W\)"),
    (nn.Dense(1, 2), (), r"Dense: input \(\) is 0-D; it needs at least 1-D"),
    (nn.Flatten(), (), r"Flatten: input \(\) is 0-D; it needs at least 2-D"),
])
def test_inputs_of_the_wrong_rank_or_channels_are_refused_by_the_module(env: dc.Environment, module: nn.Module,
                                                                        shape: tuple[int, ...], message: str) -> None:
    with pytest.raises(dc.ShapeError, match=message + LINE):
        _build_graph(env, module, shape)


@pytest.mark.parametrize("module", [nn.LayerNorm(4), nn.BatchNorm(2), nn.Flatten(), nn.Softmax(), nn.Dense(4, 3),
                                    nn.Conv1D(2, 3, 1), nn.Embedding(3, 2), nn.MaxPool1D(2),
                                    nn.Upsample(scale_factor=2)])
def test_a_numpy_array_as_input_is_refused_by_the_module(env: dc.Environment, module: nn.Module) -> None:
    name = type(module).__name__
    with pytest.raises(dc.DTypeError, match=f"{name}: cannot use ndarray as an Array operand; a numpy array must be "
                                            r"a parameter or a graph constant first \(s\.constant\(array\)\)" + LINE):
        _build_graph(env, module, np.ones((2, 2, 4), np.float32), training=True)


def test_flatten_keeps_an_empty_batch_and_needs_two_axes_as_pytorch(env: dc.Environment) -> None:
    for shape in [(0, 3, 2), (2, 0, 3)]:
        out, _, _ = _output(env, nn.Flatten(), np.zeros(shape, np.float32))
        assert out.shape == tuple(torch.nn.Flatten()(torch.zeros(shape)).shape)
    with pytest.raises(IndexError, match="Dimension out of range"):
        torch.nn.Flatten()(torch.zeros(5))
    with pytest.raises(dc.ShapeError, match=r"Flatten: input \(5,\) is 1-D; it needs at least 2-D" + LINE):
        _build_graph(env, nn.Flatten(), (5,))
