"""Stochastic gradient descent with momentum, Nesterov momentum and weight decay (as torch.optim.SGD)."""

from __future__ import annotations

from typing import Any

from descent.graph.array import Array
from descent.graph.parameter import Parameter
from descent.graph.scope import Scope
from descent.optim.optimizer import Optimizer


class SGD(Optimizer):
    prefix = "sgd"

    def __init__(self, lr: float = 0.01, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0) -> None:
        super().__init__(lr)
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        self.momentum, self.nesterov, self.weight_decay = momentum, nesterov, weight_decay

    def create_state(self, env: Any, parameter: Parameter) -> None:
        if self.momentum:
            self.state_parameter(env, "velocity", parameter)

    def apply(self, s: Scope, lr: Array, parameter: Parameter, value: Array, gradient: Array) -> None:
        step = gradient + value * self.weight_decay if self.weight_decay else gradient
        if self.momentum:
            velocity_parameter = self.state[f"{self.prefix}.velocity.{parameter.name}"]
            velocity = s.read(velocity_parameter) * self.momentum + step
            s.write(velocity_parameter, velocity)
            step = step + velocity * self.momentum if self.nesterov else velocity
        s.write(parameter, value - lr * step)
