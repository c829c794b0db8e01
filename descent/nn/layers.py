"""The standard layers. Weights are initialised as PyTorch does (Kaiming uniform with a = sqrt(5),
which bounds both weights and biases by 1 / sqrt(fan_in))."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from descent.arguments import natural, real, sizes
from descent.errors import DTypeError, ShapeError, at_user_line
from descent.graph import conv, indexing, ops, pooling, reductions
from descent.graph.array import Array, array_argument
from descent.graph.dtype import int32
from descent.graph.scope import Scope
from descent.nn.module import Module

if TYPE_CHECKING:
    from descent.runtime.environment import Environment


def _uniform(rng: np.random.Generator, bound: float, shape: tuple[int, ...]) -> np.ndarray:
    return rng.uniform(-bound, bound, shape).astype(np.float32)


def _bound(fan_in: int) -> float:
    """PyTorch's initialisation bound 1 / sqrt(fan_in); 0 where there are no inputs, as PyTorch's."""
    return 1.0 / np.sqrt(fan_in) if fan_in > 0 else 0.0


def module_input(module: Module, x: Any, least_axes: int = 0) -> Array:
    """A module's input: a graph Array with at least `least_axes` axes, refused by the module's name
    otherwise (a numpy array with the hint ops give) before some op deep inside trips on it."""
    name = type(module).__name__
    x = array_argument(name, x)
    if x.ndim < least_axes:
        raise ShapeError(at_user_line(f"{name}: input {x.shape} is {x.ndim}-D; it needs at least {least_axes}-D"))
    return x


class Dense(Module):
    """y = x @ weight + bias, weight (inputs, outputs). `Linear` is the same layer."""

    def __init__(self, inputs: int, outputs: int, bias: bool = True) -> None:
        super().__init__()
        self.inputs, self.outputs = natural("Dense", "inputs", inputs), natural("Dense", "outputs", outputs)
        self.use_bias = bias

    def create(self, env: Environment, rng: np.random.Generator) -> None:
        bound = _bound(self.inputs)
        self.parameter(env, "weight", _uniform(rng, bound, (self.inputs, self.outputs)))
        if self.use_bias:
            self.parameter(env, "bias", _uniform(rng, bound, (self.outputs,)))

    def forward(self, s: Scope, x: Array) -> Array:
        x = module_input(self, x, 1)
        if x.shape[-1] != self.inputs:
            raise ShapeError(at_user_line(f"Dense({self.inputs}, {self.outputs}): input {x.shape} has "
                                          f"{x.shape[-1]} features on its last axis, where it takes {self.inputs}"))
        y = x @ s.read(self.weight)
        return y + s.read(self.bias) if self.use_bias else y

    def __repr__(self) -> str:
        return f"Dense({self.inputs}, {self.outputs}{'' if self.use_bias else ', bias=False'})"


Linear = Dense


def _kernel(kernel: Any, dims: int, module: str) -> tuple[int, ...]:
    """A convolution module's kernel size as a tuple of `dims` positive ints (an int stands for all)."""
    return sizes(kernel, f"{module}: kernel", dims, 1)


class _Conv(Module):
    """A convolution over `len(kernel)` spatial axes; weight (outputs, inputs // groups, *kernel)."""

    convolve = staticmethod(conv.conv2d)
    output_padding: tuple[int, ...] | None = None  # transposed convolutions only

    def __init__(self, inputs: int, outputs: int, kernel: tuple[int, ...], stride: Any, padding: Any, dilation: Any,
                 groups: int, bias: bool) -> None:
        super().__init__()
        name = type(self).__name__
        inputs, outputs = natural(name, "inputs", inputs), natural(name, "outputs", outputs)
        groups = natural(name, "groups", groups, least=1)
        if inputs % groups or outputs % groups:
            raise ShapeError(at_user_line(f"{name}: {inputs} inputs and {outputs} outputs must both "
                                          f"divide into {groups} group(s)"))
        self.inputs, self.outputs, self.kernel, self.groups, self.use_bias = inputs, outputs, kernel, groups, bias
        self.stride = self._setting("stride", stride)
        self.padding = self._padding(padding)
        self.dilation = self._setting("dilation", dilation)

    def _setting(self, name: str, value: Any, least: int = 1) -> tuple[int, ...]:
        """A stride, padding or dilation checked where the module is made, one per spatial axis."""
        return sizes(value, f"{type(self).__name__}: {name}", len(self.kernel), least)

    def _padding(self, padding: Any) -> tuple[int, ...] | str:
        """The padding as numbers per axis, or PyTorch's 'valid' or 'same' (stride 1), checked here."""
        if isinstance(padding, str):
            conv.padding_mode(type(self).__name__, padding, self.stride)
            return padding
        return self._setting("padding", padding, 0)

    def weight_shape(self) -> tuple[int, ...]:
        return (self.outputs, self.inputs // self.groups) + self.kernel

    def create(self, env: Environment, rng: np.random.Generator) -> None:
        shape = self.weight_shape()
        bound = _bound(int(np.prod(shape[1:])))  # PyTorch's fan-in, for both forms
        self.parameter(env, "weight", _uniform(rng, bound, shape))
        if self.use_bias:
            self.parameter(env, "bias", _uniform(rng, bound, (self.outputs,)))

    def settings(self) -> tuple:
        """The convolution's arguments after the bias, in its function's order."""
        return self.stride, self.padding, self.dilation, self.groups

    def forward(self, s: Scope, x: Array) -> Array:
        bias = s.read(self.bias) if self.use_bias else None
        return self.convolve(self._checked(x), s.read(self.weight), bias, *self.settings())

    def _checked(self, x: Any) -> Array:
        """The input, refused by this module's name unless it is (N, inputs, *spatial) or, unbatched,
        (inputs, *spatial), as PyTorch's."""
        x = module_input(self, x)
        spatial = ("L",) if len(self.kernel) == 1 else ("H", "W")
        if x.ndim not in (1 + len(spatial), 2 + len(spatial)) or x.shape[x.ndim - 1 - len(spatial)] != self.inputs:
            batched, single = ", ".join(("N", str(self.inputs)) + spatial), ", ".join((str(self.inputs),) + spatial)
            raise ShapeError(at_user_line(f"{self!r}: input {x.shape} must be ({batched}) or ({single}): "
                                          f"{self.inputs} channels before the spatial axes"))
        return x

    def __repr__(self) -> str:
        kernel = self.kernel[0] if len(self.kernel) == 1 else self.kernel
        spatial = {"stride": (self.stride, 1), "padding": (self.padding, 0),
                   "output_padding": (self.output_padding, 0), "dilation": (self.dilation, 1)}
        shown = [f"{name}={value!r}" if isinstance(value, str) else f"{name}={value[0] if len(value) == 1 else value}"
                 for name, (value, default) in spatial.items()
                 if value is not None and value != (default,) * len(self.kernel)]
        shown += [f"groups={self.groups}"] + ([] if self.use_bias else ["bias=False"])
        return f"{type(self).__name__}({self.inputs}, {self.outputs}, {kernel}, {', '.join(shown)})"


class Conv1D(_Conv):
    """1-D convolution over NCL input; weight (outputs, inputs // groups, K)."""

    convolve = staticmethod(conv.conv1d)

    def __init__(self, inputs: int, outputs: int, kernel: int, stride: int = 1, padding: int | str = 0,
                 dilation: int = 1, groups: int = 1, bias: bool = True) -> None:
        super().__init__(inputs, outputs, _kernel(kernel, 1, "Conv1D"), stride, padding, dilation, groups, bias)


class Conv2D(_Conv):
    """2-D convolution over NCHW input; weight (outputs, inputs // groups, KH, KW)."""

    convolve = staticmethod(conv.conv2d)

    def __init__(self, inputs: int, outputs: int, kernel: int | tuple[int, int], stride: int = 1,
                 padding: int | tuple[int, int] | str = 0, dilation: int = 1, groups: int = 1,
                 bias: bool = True) -> None:
        super().__init__(inputs, outputs, _kernel(kernel, 2, "Conv2D"), stride, padding, dilation, groups, bias)


class _ConvTranspose(_Conv):
    """The transpose of a convolution; weight (inputs, outputs // groups, *kernel), as PyTorch's."""

    convolve = staticmethod(conv.conv_transpose2d)

    def __init__(self, inputs: int, outputs: int, kernel: tuple[int, ...], stride: Any, padding: Any,
                 output_padding: Any, groups: int, bias: bool, dilation: Any) -> None:
        super().__init__(inputs, outputs, kernel, stride, padding, dilation, groups, bias)
        self.output_padding = self._setting("output_padding", output_padding, 0)

    def _padding(self, padding: Any) -> tuple[int, ...]:
        """Numbers only: PyTorch's transposed convolutions take no 'same' or 'valid'."""
        return self._setting("padding", padding, 0)

    def weight_shape(self) -> tuple[int, ...]:
        return (self.inputs, self.outputs // self.groups) + self.kernel

    def settings(self) -> tuple:
        return self.stride, self.padding, self.output_padding, self.groups, self.dilation


class ConvTranspose1D(_ConvTranspose):
    """Transposed 1-D convolution (upsampling) over NCL input; weight (inputs, outputs // groups, K); the
    arguments in PyTorch's order (groups, bias, then dilation)."""

    convolve = staticmethod(conv.conv_transpose1d)

    def __init__(self, inputs: int, outputs: int, kernel: int, stride: int = 1, padding: int = 0,
                 output_padding: int = 0, groups: int = 1, bias: bool = True, dilation: int = 1) -> None:
        super().__init__(inputs, outputs, _kernel(kernel, 1, "ConvTranspose1D"), stride, padding, output_padding,
                         groups, bias, dilation)


class ConvTranspose2D(_ConvTranspose):
    """Transposed 2-D convolution (upsampling) over NCHW input; weight (inputs, outputs // groups, KH, KW); the
    arguments in PyTorch's order (groups, bias, then dilation)."""

    convolve = staticmethod(conv.conv_transpose2d)

    def __init__(self, inputs: int, outputs: int, kernel: int | tuple[int, int], stride: int = 1, padding: int = 0,
                 output_padding: int = 0, groups: int = 1, bias: bool = True, dilation: int = 1) -> None:
        super().__init__(inputs, outputs, _kernel(kernel, 2, "ConvTranspose2D"), stride, padding, output_padding,
                         groups, bias, dilation)


class Embedding(Module):
    """Rows of a (count, features) table picked by integer indices; initialised N(0, 1) as PyTorch."""

    def __init__(self, count: int, features: int) -> None:
        super().__init__()
        self.count, self.features = natural("Embedding", "count", count), natural("Embedding", "features", features)

    def create(self, env: Environment, rng: np.random.Generator) -> None:
        self.parameter(env, "weight", rng.normal(size=(self.count, self.features)).astype(np.float32))

    def forward(self, s: Scope, x: Array) -> Array:
        x = module_input(self, x)
        if x.dtype.is_float or x.dtype.name == "bool":
            raise DTypeError(at_user_line(
                f"Embedding: indices must be integers, got {x.dtype.name}; pass them as int32 (x.astype(np.int32))"))
        indices = ops.astype(x, int32)
        s.require_range(indices, 0, self.count,
                        f"{self!r}, which takes 0 to {self.count - 1} (no negatives, as PyTorch's)")
        return indexing.take(s.read(self.weight), indices, 0)

    def __repr__(self) -> str:
        return f"Embedding({self.count}, {self.features})"


class Dropout(Module):
    """Zeroes each element with probability p while training (scaling the rest by 1 / (1 - p); p = 1
    zeroes all), as PyTorch's, by a product, so a dropped inf or NaN is NaN; the identity in graphs built
    with training=False."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = real("Dropout", "p", p, 0.0, 1.0)

    def forward(self, s: Scope, x: Array) -> Array:
        x = module_input(self, x)
        if not s.training or self.p == 0.0:
            return x
        keep = ops.ge(s.random_uniform(x.shape), self.p)  # never where p is 1, so its scale is never taken
        scale = 1.0 / (1.0 - self.p) if self.p < 1.0 else 1.0
        return x * ops.where(keep, scale, 0.0)  # a product, as PyTorch's: a dropped inf or NaN gives NaN

    def __repr__(self) -> str:
        return f"Dropout(p={self.p})"


class _Pool(Module):
    """Pooling over the last `axes` axes by its function, of (C, *spatial) or (N, C, *spatial) input as PyTorch's."""

    pool = staticmethod(pooling.max_pool2d)
    axes = 2

    def __init__(self, kernel: int, stride: int | None = None, padding: int = 0) -> None:
        super().__init__()
        pooling.pool_settings(type(self).__name__, kernel, stride, padding)
        self.kernel, self.stride, self.padding = kernel, stride, padding

    def forward(self, s: Scope, x: Array) -> Array:
        x = module_input(self, x)
        if x.ndim not in (self.axes + 1, self.axes + 2):
            raise ShapeError(at_user_line(f"{type(self).__name__}: input {x.shape} is {x.ndim}-D; it must be "
                                          f"{self.axes + 1}-D or {self.axes + 2}-D (channels first)"))
        return self.pool(x, self.kernel, self.stride, self.padding)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.kernel!r}, stride={self.stride!r}, padding={self.padding!r})"


class MaxPool1D(_Pool):
    """Maximum over each window of `kernel` elements along the last axis (stride defaults to the kernel)."""

    pool = staticmethod(pooling.max_pool1d)
    axes = 1


class AvgPool1D(_Pool):
    """Mean over each window of `kernel` elements along the last axis (stride defaults to the kernel)."""

    pool = staticmethod(pooling.avg_pool1d)
    axes = 1


class MaxPool2D(_Pool):
    """Maximum over each kernel x kernel window (stride defaults to the kernel)."""

    pool = staticmethod(pooling.max_pool2d)


class AvgPool2D(_Pool):
    """Mean over each kernel x kernel window (stride defaults to the kernel)."""

    pool = staticmethod(pooling.avg_pool2d)


class AdaptiveAvgPool2D(Module):
    """Mean over windows that split H and W into the output size given (1: global average pooling)."""

    def __init__(self, output_size: int | tuple[int, int]) -> None:
        super().__init__()
        self.output_size = sizes(output_size, "AdaptiveAvgPool2D: output_size", 2, 1)

    def forward(self, s: Scope, x: Array) -> Array:
        return pooling.adaptive_avg_pool2d(module_input(self, x, 2), self.output_size)

    def __repr__(self) -> str:
        return f"AdaptiveAvgPool2D(output_size={self.output_size})"


class Upsample(Module):
    """Nearest-neighbour upsampling of H and W (PyTorch's default mode) to `size` or by `scale_factor`, one
    of them, as PyTorch's; the scale must be whole (a size a whole multiple of the input's)."""

    def __init__(self, size: int | tuple[int, int] | None = None,
                 scale_factor: float | tuple[float, float] | None = None, mode: str = "nearest") -> None:
        super().__init__()
        if (size is None) == (scale_factor is None):
            raise ValueError(at_user_line("Upsample: give size or scale_factor, as PyTorch's, not "
                                          + ("both" if size is not None else "neither")))
        if mode != "nearest":
            raise ValueError(at_user_line(f"Upsample: mode {mode!r} is not supported, only 'nearest' "
                                          "(PyTorch's default)"))
        self.size = None if size is None else sizes(size, "Upsample: size", 2, 1)
        self.scale_factor = (None if scale_factor is None
                             else sizes(scale_factor, "Upsample: scale_factor", 2, 1, floats=True))
        self.mode = mode

    def forward(self, s: Scope, x: Array) -> Array:
        x = module_input(self, x)
        if x.ndim != 4:  # PyTorch's Upsample resizes the axes after (N, C) of 3-D to 5-D input
            raise ShapeError(at_user_line(
                f"Upsample: input {x.shape} must be 4-D (N, C, H, W); PyTorch's would take 3-D input as (N, C, L) "
                "and 5-D as (N, C, D, H, W), which this one does not resize (one image (C, H, W): pass x[None])"))
        scale = self.scale_factor
        if scale is None:
            if any(n == 0 or size % n for size, n in zip(self.size, x.shape[2:])):
                raise ShapeError(at_user_line(f"Upsample: size {self.size} is not a whole multiple of the input's "
                                              f"{x.shape[2:]}; this nearest upsampling scales by whole numbers"))
            scale = tuple(size // n for size, n in zip(self.size, x.shape[2:]))
        return pooling.upsample_nearest2d(x, scale)

    def __repr__(self) -> str:
        setting = f"size={self.size}" if self.size is not None else f"scale_factor={self.scale_factor}"
        return f"Upsample({setting}, mode={self.mode!r})"


class BlurMaxPool2D(Module):
    """Anti-aliased max pooling (Zhang 2019): max pool 2x2 with stride 1, then a fixed [1 2 1] x [1 2 1] / 16
    blur applied per channel with stride 2 and zero padding 1, as the Rust descent's (and kornia's); Zhang's
    BlurPool pads by reflection, so here a constant image's border comes out darker."""

    def forward(self, s: Scope, x: Array) -> Array:
        x = module_input(self, x)
        if x.ndim != 4:
            raise ShapeError(at_user_line(f"BlurMaxPool2D: input {x.shape} must be 4-D (N, C, H, W)"))
        pooled = pooling.max_pool2d(x, 2, 1)
        taps = np.array([1.0, 2.0, 1.0], np.float32)
        blur = np.outer(taps, taps) / 16.0
        channels = x.shape[1]
        weight = s.constant(np.broadcast_to(blur, (channels, 1, 3, 3)).astype(np.float32))
        return conv.conv2d(pooled, weight, None, stride=2, padding=1, groups=channels)


class Flatten(Module):
    """(N, ...) -> (N, prod(...)), also where N is 0; at least 2 axes, as PyTorch's Flatten (start_dim 1)."""

    def forward(self, s: Scope, x: Array) -> Array:
        x = module_input(self, x, 2)
        return ops.reshape(x, (x.shape[0], int(np.prod(x.shape[1:]))))


class BatchNorm(Module):
    """Batch normalisation over all axes but the channel axis 1 (works for (N, C) and (N, C, H, W)).
    Training graphs normalise with batch statistics and update the running ones (momentum 0.1,
    unbiased variance, as PyTorch; each use updates them, so one applied twice moves them twice);
    other graphs use the running statistics."""

    def __init__(self, channels: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.channels = natural("BatchNorm", "channels", channels)
        self.eps = real("BatchNorm", "eps", eps)
        self.momentum = real("BatchNorm", "momentum", momentum, 0.0, 1.0)

    def create(self, env: Environment, rng: np.random.Generator) -> None:
        self.parameter(env, "weight", np.ones(self.channels, np.float32))
        self.parameter(env, "bias", np.zeros(self.channels, np.float32))
        self.parameter(env, "running_mean", np.zeros(self.channels, np.float32), trainable=False)
        self.parameter(env, "running_var", np.ones(self.channels, np.float32), trainable=False)

    def forward(self, s: Scope, x: Array) -> Array:
        x = module_input(self, x)
        if x.ndim < 2 or x.shape[1] != self.channels:
            raise ShapeError(at_user_line(
                f"BatchNorm({self.channels}): input {x.shape} needs {self.channels} channels on axis 1"))
        if self.channels == 0:
            raise ShapeError(at_user_line(f"BatchNorm(0): input {x.shape} has no channels to normalise (as PyTorch)"))
        shape = (1, self.channels) + (1,) * (x.ndim - 2)
        axes = (0,) + tuple(range(2, x.ndim))
        if s.training and x.size:  # an empty batch leaves the running statistics alone, as PyTorch's
            count = x.size // self.channels
            if count == 1:
                raise ShapeError(at_user_line(
                    f"BatchNorm: training needs more than one value per channel, got input {x.shape} (as PyTorch); "
                    "a last batch of one example can be dropped with fit(..., drop_last=True)"))
            mean = reductions.mean(x, axes, keepdims=True)
            variance = reductions.mean((x - mean) * (x - mean), axes, keepdims=True)
            unbiased = ops.reshape(variance, (self.channels,)) * (count / (count - 1))
            m = self.momentum
            batch_mean = ops.stop_gradient(ops.reshape(mean, (self.channels,)))
            s.update(self.running_mean, lambda running: running * (1 - m) + batch_mean * m)
            s.update(self.running_var, lambda running: running * (1 - m) + ops.stop_gradient(unbiased) * m)
        else:
            mean = ops.reshape(s.read(self.running_mean), shape)
            variance = ops.reshape(s.read(self.running_var), shape)
        normalised = (x - mean) * ops.rsqrt(variance + self.eps)
        return normalised * ops.reshape(s.read(self.weight), shape) + ops.reshape(s.read(self.bias), shape)

    def __repr__(self) -> str:
        return f"BatchNorm({self.channels}, eps={self.eps}, momentum={self.momentum})"


class LayerNorm(Module):
    """Normalise over the trailing axes of `shape` (an int for the last axis alone), then scale and
    shift per element of those axes, as PyTorch's LayerNorm(normalized_shape)."""

    def __init__(self, shape: int | tuple[int, ...], eps: float = 1e-5) -> None:
        super().__init__()
        sizes = tuple(shape) if isinstance(shape, Iterable) else (shape,)
        if not sizes:
            raise ShapeError(at_user_line("LayerNorm: shape must name at least one axis, got () (as PyTorch's)"))
        self.shape = tuple(natural("LayerNorm", "shape", n) for n in sizes)
        self.eps = real("LayerNorm", "eps", eps)

    def create(self, env: Environment, rng: np.random.Generator) -> None:
        self.parameter(env, "weight", np.ones(self.shape, np.float32))
        self.parameter(env, "bias", np.zeros(self.shape, np.float32))

    def forward(self, s: Scope, x: Array) -> Array:
        x = module_input(self, x)
        if x.shape[-len(self.shape):] != self.shape:
            raise ShapeError(at_user_line(f"LayerNorm{self.shape}: input {x.shape} does not end in {self.shape}"))
        axes = tuple(range(x.ndim - len(self.shape), x.ndim))
        mean = reductions.mean(x, axes, keepdims=True)
        variance = reductions.mean((x - mean) * (x - mean), axes, keepdims=True)
        return (x - mean) * ops.rsqrt(variance + self.eps) * s.read(self.weight) + s.read(self.bias)

    def __repr__(self) -> str:
        return f"LayerNorm({self.shape}, eps={self.eps})"


class Sequential(Module):
    """Apply modules in order; their parameters are named by position ("0.weight", ...)."""

    def __init__(self, *modules: Module) -> None:
        super().__init__()
        for index, module in enumerate(modules):
            self.add(str(index), module)

    def forward(self, s: Scope, x: Array) -> Array:
        for module in self._children.values():
            x = module(s, x)
        return x

    def __repr__(self) -> str:
        parts = "".join(f"  {m!r},\n".replace("\n", "\n  ").rstrip(" ") for m in self._children.values())
        return f"Sequential(\n{parts})"
