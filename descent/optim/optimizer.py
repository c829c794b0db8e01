"""The optimiser interface: state lives in device parameters, the update is part of the training graph."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from descent.arguments import positive, real
from descent.errors import GraphError, at_user_line
from descent.graph import ops
from descent.graph.array import Array
from descent.graph.parameter import Parameter
from descent.graph.scope import Scope
from descent.optim.clip import clip_by_global_norm

if TYPE_CHECKING:
    from descent.runtime.environment import Environment


class Optimizer:
    """Builds its state (and a device scalar learning rate) once, then writes updates inside graphs.
    `max_grad_norm`: scale the gradients down to that global norm first, where it is exceeded (as
    torch.nn.utils.clip_grad_norm_ before each step)."""

    prefix = "optim"  # the kind, naming its state in checkpoints

    def __new__(cls, *args: Any, **kwargs: Any) -> Optimizer:
        """Refuse PyTorch's Optimizer(model.parameters(), lr=...) by name, before Python's "got multiple
        values for argument 'lr'"."""
        if args and isinstance(args[0], list | tuple | Iterator | dict):
            raise ValueError(at_user_line(
                f"{cls.__name__}: the first argument is the learning rate; a Trainer hands the optimiser "
                f"the model's parameters (Trainer(env, model, optimizer={cls.__name__}(lr=...)))"))
        return super().__new__(cls)

    def __init__(self, lr: float, max_grad_norm: float | None = None) -> None:
        self.initial_lr = real(type(self).__name__, "lr", lr, 0.0)
        self.max_grad_norm = None if max_grad_norm is None else positive(type(self).__name__, "max_grad_norm",
                                                                         max_grad_norm)
        self.environment: Environment | None = None
        self.name = self.prefix  # its state's prefix in the Environment, unique once built (`adam2`)
        self.lr_parameter: Parameter | None = None
        self.state: dict[str, Parameter] = {}
        self.built_for: list[Parameter] = []

    def build(self, env: Environment, parameters: list[Parameter]) -> None:
        """Create the learning-rate scalar and per-parameter state in `env`."""
        not_float = [p.name for p in parameters if not p.dtype.is_float]
        if not_float:  # they never have a gradient; an update would truncate into them
            raise TypeError(at_user_line(
                f"{type(self).__name__}.build: parameter(s) {not_float} are not float32; an optimiser trains "
                "float parameters only"))
        if self.environment is not None:
            raise GraphError(at_user_line(
                f"{type(self).__name__}: this optimiser already holds the state of another Trainer's parameters; "
                "give each Trainer an optimiser of its own"))
        self.environment = env
        self.name = env.unique_name(self.prefix)
        self.lr_parameter = env.parameter(f"{self.name}.lr", (), init=np.float32(self.initial_lr))
        self.built_for = list(parameters)
        for parameter in parameters:
            self.create_state(env, parameter)

    def create_state(self, env: Environment, parameter: Parameter) -> None:
        """Create the state one parameter needs. Default: none."""

    def step_counter(self, env: Environment, parameter: Parameter) -> Parameter:
        """A device scalar counting `parameter`'s steps (Adam's bias correction, SGD's first step,
        Adagrad's decay): one per parameter, as PyTorch's, so a parameter that first gets a gradient
        later starts at step 1; kept in the state so checkpoints carry it."""
        return self.state_parameter(env, "step", parameter, np.float32(0))

    def take_step(self, s: Scope, parameter: Parameter) -> Array:
        """Count a step of `parameter` in the graph being built; returns its steps with this one. The count
        is computed once into a buffer the updates read: recomputed in each from the counter's old value,
        the counter's new value would have to be staged and copied after every run."""
        counter = self.state_of("step", parameter)
        taken = s.read(counter) + 1.0
        s.write(counter, taken)
        return ops.contiguous(taken)

    def step_counters(self) -> list[Parameter]:
        """The step counters `step_counter` made, in the order of the parameters they count."""
        return [self.state[name] for p in self.built_for if (name := self._state_name("step", p)) in self.state]

    def counts(self) -> list[Parameter]:
        """The learning rate and the step counters: the state that is never negative or NaN."""
        return [p for p in (self.lr_parameter, *self.step_counters()) if p is not None]

    def state_parameter(self, env: Environment, kind: str, parameter: Parameter,
                        value: np.ndarray | None = None) -> Parameter:
        """Create `parameter`'s `kind` state in `env` (zeros of its shape unless `value` is given), kept in
        `self.state` as `<name>.<kind>.<parameter name>` so checkpoints carry it."""
        name = self._state_name(kind, parameter)
        created = env.parameter(name, parameter.shape if value is None else np.shape(value),
                                init=np.zeros(parameter.shape, np.float32) if value is None else value)
        self.state[name] = created
        return created

    def state_of(self, kind: str, parameter: Parameter) -> Parameter:
        """The `kind` state (m, velocity, ...) that `state_parameter` created for `parameter`."""
        return self.state[self._state_name(kind, parameter)]

    def _state_name(self, kind: str, parameter: Parameter) -> str:
        return f"{self.name}.{kind}.{parameter.name}"

    def named_state(self, names: dict[str, str] | None = None) -> dict[str, Parameter]:
        """The learning rate and state by names that do not count the optimisers built before this
        one in the Environment (a second Adam's `adam2.m.w` is `adam.m.w` here), so a checkpoint
        loads into a script that builds only this model; `names` renames the parameters state is kept for."""
        named = {self.lr_parameter.name: self.lr_parameter, **self.state}
        result = {}
        for name, parameter in named.items():
            parts = name[len(self.name) + 1:].split(".", 1)  # [kind, parameter name], or ["lr"], ["step"]
            if len(parts) == 2 and names:
                parts[1] = names.get(parts[1], parts[1])
            result[".".join([self.prefix, *parts])] = parameter
        return result

    @property
    def lr(self) -> float:
        """The current learning rate (read back from the device; before a Trainer builds the
        optimiser, the one it will start with)."""
        return self.initial_lr if self.lr_parameter is None else float(self.environment.read(self.lr_parameter))

    def set_lr(self, value: float) -> None:
        """Change the learning rate without rebuilding any graph: it is a device scalar (before a
        Trainer builds the optimiser, the rate it starts with)."""
        value = real(type(self).__name__, "lr", value, 0.0)
        if self.lr_parameter is None:
            self.initial_lr = value
        else:
            self.environment.write(self.lr_parameter, np.float32(value))

    def update(self, s: Scope, parameters: list[Parameter], values: list[Array], gradients: list[Array]) -> None:
        """Write every parameter's new value (and the new state) in the graph being built."""
        name = type(self).__name__
        if self.environment is None:
            raise GraphError(at_user_line(f"{name}.update: call build(env, parameters) first (a Trainer does)"))
        unknown = [p.name for p in parameters if not any(p is built for built in self.built_for)]
        if unknown:
            raise GraphError(at_user_line(f"{name}.update: parameter(s) {unknown} were not given to build, "
                                          "so it has no state for them"))
        if not len(parameters) == len(values) == len(gradients):
            raise ValueError(at_user_line(f"{name}.update: {len(parameters)} parameters, {len(values)} values and "
                                          f"{len(gradients)} gradients; it takes one of each per parameter"))
        lr = s.read(self.lr_parameter)
        if self.max_grad_norm is not None:
            gradients = clip_by_global_norm(gradients, self.max_grad_norm)
        for parameter, value, gradient in zip(parameters, values, gradients):
            self.apply(s, lr, parameter, value, gradient)

    def apply(self, s: Scope, lr: Array, parameter: Parameter, value: Array, gradient: Array) -> None:
        """Write one parameter's new value (and its state's) in the graph being built, from the device learning
        rate `lr`, its current `value` and its `gradient`. Each optimiser defines it."""
        raise NotImplementedError
