"""Activation functions as modules (and the functions they apply)."""

from __future__ import annotations

import math

from descent.graph import ops
from descent.graph.array import Array
from descent.graph.scope import Scope
from descent.nn.module import Module


def gelu(x: Array) -> Array:
    """GELU with the tanh approximation (PyTorch's approximate='tanh')."""
    return x * 0.5 * (ops.tanh((x + x * x * x * 0.044715) * math.sqrt(2.0 / math.pi)) + 1.0)


def softplus(x: Array) -> Array:
    """log(1 + exp(x)), stable for large |x|."""
    return ops.maximum(x, 0.0) + ops.log(ops.exp(-ops.abs(x)) + 1.0)


class _Activation(Module):
    function = staticmethod(ops.relu)

    def forward(self, s: Scope, x: Array) -> Array:
        return self.function(x)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ReLU(_Activation):
    function = staticmethod(ops.relu)


class Sigmoid(_Activation):
    function = staticmethod(ops.sigmoid)


class Tanh(_Activation):
    function = staticmethod(ops.tanh)


class GELU(_Activation):
    function = staticmethod(gelu)


class Softplus(_Activation):
    function = staticmethod(softplus)


class LeakyReLU(Module):
    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, s: Scope, x: Array) -> Array:
        return ops.leaky_relu(x, self.negative_slope)

    def __repr__(self) -> str:
        return f"LeakyReLU({self.negative_slope})"


class Sin(Module):
    """sin(omega * x): SIREN's activation (omega = 30 in the paper's first layer)."""

    def __init__(self, omega: float = 1.0) -> None:
        super().__init__()
        self.omega = omega

    def forward(self, s: Scope, x: Array) -> Array:
        return ops.sin(x * self.omega)
