"""RMSprop (as torch.optim.RMSprop): steps scaled by a running root mean square of the gradients."""

from __future__ import annotations

from typing import TYPE_CHECKING

from descent.arguments import flag, real
from descent.graph import ops
from descent.graph.array import Array
from descent.graph.parameter import Parameter
from descent.graph.scope import Scope
from descent.optim.optimizer import Optimizer

if TYPE_CHECKING:
    from descent.runtime.environment import Environment


class RMSprop(Optimizer):
    """v = alpha * v + (1 - alpha) * g * g, then p -= lr * g / (sqrt(v) + eps), g the gradient plus
    weight_decay * p; as torch.optim.RMSprop."""

    prefix = "rmsprop"

    def __init__(self, lr: float = 0.01, alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0,
                 momentum: float = 0.0, centered: bool = False, max_grad_norm: float | None = None) -> None:
        """`centered`: divide by the gradients' running standard deviation instead of their root mean
        square; `momentum`: accumulate the scaled steps in a velocity (both as PyTorch's)."""
        super().__init__(lr, max_grad_norm)
        self.alpha, self.eps = real("RMSprop", "alpha", alpha, 0.0), real("RMSprop", "eps", eps, 0.0)
        self.weight_decay = real("RMSprop", "weight_decay", weight_decay, 0.0)
        self.momentum = real("RMSprop", "momentum", momentum, 0.0)
        self.centered = flag("RMSprop", "centered", centered)

    def create_state(self, env: Environment, parameter: Parameter) -> None:
        self.state_parameter(env, "square_avg", parameter)
        if self.centered:
            self.state_parameter(env, "grad_avg", parameter)
        if self.momentum:
            self.state_parameter(env, "velocity", parameter)

    def apply(self, s: Scope, lr: Array, parameter: Parameter, value: Array, gradient: Array) -> None:
        if self.weight_decay:
            gradient = gradient + value * self.weight_decay
        square_parameter = self.state_of("square_avg", parameter)
        square_avg = s.read(square_parameter) * self.alpha + gradient * gradient * (1.0 - self.alpha)
        s.write(square_parameter, square_avg)
        if self.centered:
            mean_parameter = self.state_of("grad_avg", parameter)
            grad_avg = s.read(mean_parameter) * self.alpha + gradient * (1.0 - self.alpha)
            s.write(mean_parameter, grad_avg)
            square_avg = square_avg - grad_avg * grad_avg
        step = gradient / (ops.sqrt(square_avg) + self.eps)
        if self.momentum:
            velocity_parameter = self.state_of("velocity", parameter)
            step = s.read(velocity_parameter) * self.momentum + step
            s.write(velocity_parameter, step)
        s.write(parameter, value - lr * step)
