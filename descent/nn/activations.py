"""Activation functions as modules (and the functions they apply)."""

from __future__ import annotations

import math

from descent.arguments import is_integer, real
from descent.errors import at_user_line
from descent.graph import ops, reductions
from descent.graph.array import Array
from descent.graph.scope import Scope
from descent.nn.layers import module_input
from descent.nn.module import Module


def gelu(x: Array, approximate: str = "none") -> Array:
    """x * Phi(x), Phi the standard normal CDF: exact through erf, or with approximate="tanh" the
    tanh form (both as PyTorch's). The tanh form is computed as x sigmoid(2 z), equal to x (1 + tanh z) / 2,
    whose float32 tail does not round to 0 where tanh z rounds to -1 (x < -4.5)."""
    if _approximation("gelu", approximate) == "tanh":
        return x * ops.sigmoid((x + x * x * x * 0.044715) * math.sqrt(8.0 / math.pi))
    return x * 0.5 * (ops.erf(x * (1.0 / math.sqrt(2.0))) + 1.0)


def _approximation(where: str, approximate: str) -> str:
    if approximate not in ("none", "tanh"):
        raise ValueError(at_user_line(f"{where}: approximate must be 'none' or 'tanh', got {approximate!r}"))
    return approximate


def silu(x: Array) -> Array:
    """x * sigmoid(x) (SiLU, also called swish). Its gradient is PyTorch's s (1 + x (1 - s)): through
    the product rule, g * x overflowed to inf before meeting sigmoid's 0 at |x| near 3e38 (NaN)."""
    s = ops.sigmoid(x)
    return x.scope.custom_gradient(x * s, (x,), lambda g: [g * (s * (1.0 + x * (1.0 - s)))])


def softplus(x: Array, beta: float = 1.0, threshold: float = 20.0) -> Array:
    """log(1 + exp(beta x)) / beta, stable for large |x|, and x itself where beta x > threshold (PyTorch's)."""
    scaled = x * beta
    smooth = ops.log1p_exp(scaled) * (1.0 / beta)
    return ops.where(ops.gt(scaled, threshold), x, smooth)


class _Activation(Module):
    """Applies `function` to its input, followed by the module's settings in order."""

    function = staticmethod(ops.relu)
    settings: tuple[str, ...] = ()  # the settings' attributes, named as in PyTorch

    def forward(self, s: Scope, x: Array) -> Array:
        return self.function(module_input(self, x), *(getattr(self, name) for name in self.settings))

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.settings)
        return f"{type(self).__name__}({shown})"


class ReLU(_Activation):
    """max(x, 0), NaN kept (PyTorch's ReLU)."""

    function = staticmethod(ops.relu)


class Sigmoid(_Activation):
    """1 / (1 + exp(-x)) (PyTorch's Sigmoid)."""

    function = staticmethod(ops.sigmoid)


class Tanh(_Activation):
    """tanh(x) (PyTorch's Tanh)."""

    function = staticmethod(ops.tanh)


class GELU(_Activation):
    """x * Phi(x); approximate="tanh" for the tanh form (PyTorch's GELU)."""

    function = staticmethod(gelu)
    settings = ("approximate",)

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        self.approximate = _approximation("GELU", approximate)


class Softplus(_Activation):
    """log(1 + exp(beta x)) / beta, linear where beta x > threshold (PyTorch's Softplus)."""

    function = staticmethod(softplus)
    settings = ("beta", "threshold")

    def __init__(self, beta: float = 1.0, threshold: float = 20.0) -> None:
        super().__init__()
        self.beta, self.threshold = real("Softplus", "beta", beta), real("Softplus", "threshold", threshold)
        if self.beta == 0.0:
            raise ValueError(at_user_line("Softplus: beta must not be 0 (it divides by beta)"))


class SiLU(_Activation):
    """x * sigmoid(x), also called swish (PyTorch's SiLU)."""

    function = staticmethod(silu)


class Identity(_Activation):
    """Its input unchanged: a placeholder where a model takes a layer."""

    function = staticmethod(lambda x: x)


class Softmax(_Activation):
    """exp(x) / sum(exp(x)) along `dim` (as PyTorch's Softmax)."""

    function = staticmethod(reductions.softmax)
    settings = ("dim",)

    def __init__(self, dim: int = -1) -> None:
        super().__init__()
        if not is_integer(dim):
            raise TypeError(at_user_line(f"{type(self).__name__}: dim must be an int, got {dim!r}"))
        self.dim = int(dim)


class LogSoftmax(Softmax):
    """x - logsumexp(x) along `dim`."""

    function = staticmethod(reductions.log_softmax)


class LeakyReLU(_Activation):
    """x where x > 0, else negative_slope * x (PyTorch's LeakyReLU)."""

    function = staticmethod(ops.leaky_relu)
    settings = ("negative_slope",)

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = real("LeakyReLU", "negative_slope", negative_slope)


def _scaled_sin(x: Array, omega: float) -> Array:
    return ops.sin(x * omega)


class Sin(_Activation):
    """sin(omega * x): SIREN's activation (omega = 30 in the paper's first layer)."""

    function = staticmethod(_scaled_sin)
    settings = ("omega",)

    def __init__(self, omega: float = 1.0) -> None:
        super().__init__()
        self.omega = real("Sin", "omega", omega)
