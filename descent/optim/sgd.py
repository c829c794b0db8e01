"""Stochastic gradient descent with momentum, dampening, Nesterov momentum and weight decay (as
torch.optim.SGD)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from descent.arguments import flag, real
from descent.errors import at_user_line
from descent.graph import ops
from descent.graph.array import Array
from descent.graph.parameter import Parameter
from descent.graph.scope import Scope
from descent.optim.optimizer import Optimizer

if TYPE_CHECKING:
    from descent.runtime.environment import Environment


class SGD(Optimizer):
    """v = momentum * v + g, then p -= lr * v (lr * (g + momentum * v) with Nesterov), g the gradient plus
    weight_decay * p; as torch.optim.SGD (without momentum, p -= lr * g)."""

    prefix = "sgd"

    def __init__(self, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False, max_grad_norm: float | None = None) -> None:
        """`dampening` scales the gradient added to the velocity by 1 - dampening, from the second
        step on (the first step's velocity is the gradient, as PyTorch's, whose argument order this is)."""
        super().__init__(lr, max_grad_norm)
        self.momentum = real("SGD", "momentum", momentum, 0.0)
        self.weight_decay = real("SGD", "weight_decay", weight_decay, 0.0)
        self.dampening = real("SGD", "dampening", dampening, 0.0, 1.0)
        nesterov = flag("SGD", "nesterov", nesterov)
        if nesterov and (self.momentum <= 0 or self.dampening):
            raise ValueError(at_user_line("SGD: Nesterov momentum needs momentum > 0 and no dampening"))
        self.nesterov = nesterov

    def create_state(self, env: Environment, parameter: Parameter) -> None:
        if self.momentum:
            self.state_parameter(env, "velocity", parameter)
        if self.momentum and self.dampening:
            self.step_counter(env, parameter)

    def apply(self, s: Scope, lr: Array, parameter: Parameter, value: Array, gradient: Array) -> None:
        step = gradient + value * self.weight_decay if self.weight_decay else gradient
        if self.momentum:
            velocity_parameter = self.state_of("velocity", parameter)
            velocity = s.read(velocity_parameter) * self.momentum
            if self.dampening:
                first = ops.eq(self.take_step(s, parameter), 1.0)
                velocity = ops.where(first, step, velocity + step * (1.0 - self.dampening))
            else:
                velocity = velocity + step
            s.write(velocity_parameter, velocity)
            step = step + velocity * self.momentum if self.nesterov else velocity
        s.write(parameter, value - lr * step)
