"""Adam and AdamW (as torch.optim.Adam / AdamW), with bias correction from a device step counter."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from descent.arguments import flag, real
from descent.errors import at_user_line
from descent.graph import ops
from descent.graph.array import Array
from descent.graph.parameter import Parameter
from descent.graph.scope import Scope
from descent.optim.optimizer import Optimizer

if TYPE_CHECKING:
    from descent.runtime.environment import Environment


class Adam(Optimizer):
    """p -= lr * m_hat / (sqrt(v_hat) + eps), m_hat and v_hat the bias-corrected running means of the gradient
    and its square; as torch.optim.Adam (weight_decay adds weight_decay * p to the gradient)."""

    prefix = "adam"
    decoupled = False

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, max_grad_norm: float | None = None) -> None:
        """`amsgrad`: divide by the largest second moment seen so far (AMSGrad, as PyTorch's flag)."""
        super().__init__(lr, max_grad_norm)
        if not isinstance(betas, tuple | list | np.ndarray) or np.ndim(betas) != 1 or len(betas) != 2:
            raise ValueError(at_user_line(f"{type(self).__name__}: betas must be a pair, got {betas!r}"))
        name = type(self).__name__
        self.betas = tuple(real(name, f"betas[{k}]", beta, 0.0, 1.0, below_high=True) for k, beta in enumerate(betas))
        self.eps = real(name, "eps", eps, 0.0)
        self.weight_decay = real(name, "weight_decay", weight_decay, 0.0)
        self.amsgrad = flag(name, "amsgrad", amsgrad)

    def create_state(self, env: Environment, parameter: Parameter) -> None:
        self.state_parameter(env, "m", parameter)
        self.state_parameter(env, "v", parameter)
        if self.amsgrad:
            self.state_parameter(env, "v_max", parameter)
        self.step_counter(env, parameter)

    def apply(self, s: Scope, lr: Array, parameter: Parameter, value: Array, gradient: Array) -> None:
        beta1, beta2 = self.betas
        if self.weight_decay and not self.decoupled:
            gradient = gradient + value * self.weight_decay
        if self.weight_decay and self.decoupled:
            value = value * (1.0 - lr * self.weight_decay)
        m_parameter = self.state_of("m", parameter)
        v_parameter = self.state_of("v", parameter)
        m = s.read(m_parameter) * beta1 + gradient * (1.0 - beta1)
        v = s.read(v_parameter) * beta2 + gradient * gradient * (1.0 - beta2)
        s.write(m_parameter, m)
        s.write(v_parameter, v)
        if self.amsgrad:
            v_max_parameter = self.state_of("v_max", parameter)
            v = ops.maximum(s.read(v_max_parameter), v)
            s.write(v_max_parameter, v)
        step = self.take_step(s, parameter)
        correction1, correction2 = _correction(beta1, step), _correction(beta2, step)
        denominator = ops.sqrt(v) / ops.sqrt(correction2) + self.eps
        s.write(parameter, value - (lr / correction1) * m / denominator)


def _correction(beta: float, step: Array) -> Array:
    """1 - beta**step as -expm1(step * log(beta)), with log(beta) in double on the host: in float32,
    1 - pow(0.99999, 1) is 7e-4 off (PyTorch computes it in double)."""
    return -ops.expm1(step * (math.log(beta) if beta > 0 else -math.inf))


class AdamW(Adam):
    """Adam with decoupled weight decay (default 0.01, as PyTorch)."""

    prefix = "adamw"
    decoupled = True

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01, amsgrad: bool = False, max_grad_norm: float | None = None) -> None:
        super().__init__(lr, betas, eps, weight_decay, amsgrad, max_grad_norm)
