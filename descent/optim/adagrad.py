"""Adagrad (as torch.optim.Adagrad): each coordinate's step divided by the root of its summed squared
gradients."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from descent.arguments import real
from descent.graph import ops
from descent.graph.array import Array
from descent.graph.parameter import Parameter
from descent.graph.scope import Scope
from descent.optim.optimizer import Optimizer

if TYPE_CHECKING:
    from descent.runtime.environment import Environment


class Adagrad(Optimizer):
    """s += g * g, then p -= lr * g / (sqrt(s) + eps), per coordinate, g the gradient plus weight_decay * p;
    as torch.optim.Adagrad."""

    prefix = "adagrad"

    def __init__(self, lr: float = 0.01, lr_decay: float = 0.0, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10,
                 max_grad_norm: float | None = None) -> None:
        """`lr_decay` d: step t uses lr / (1 + (t - 1) d), counted on the device (as PyTorch's)."""
        super().__init__(lr, max_grad_norm)
        self.lr_decay = real("Adagrad", "lr_decay", lr_decay, 0.0)
        self.weight_decay = real("Adagrad", "weight_decay", weight_decay, 0.0)
        self.eps = real("Adagrad", "eps", eps, 0.0)
        self.initial_accumulator_value = real("Adagrad", "initial_accumulator_value", initial_accumulator_value, 0.0)

    def create_state(self, env: Environment, parameter: Parameter) -> None:
        start = np.full(parameter.shape, self.initial_accumulator_value, np.float32)
        self.state_parameter(env, "sum", parameter, start)
        if self.lr_decay:
            self.step_counter(env, parameter)

    def apply(self, s: Scope, lr: Array, parameter: Parameter, value: Array, gradient: Array) -> None:
        if self.weight_decay:
            gradient = gradient + value * self.weight_decay
        sum_parameter = self.state_of("sum", parameter)
        total = s.read(sum_parameter) + gradient * gradient
        s.write(sum_parameter, total)
        rate = lr / ((self.take_step(s, parameter) - 1.0) * self.lr_decay + 1.0) if self.lr_decay else lr
        s.write(parameter, value - rate * gradient / (ops.sqrt(total) + self.eps))
