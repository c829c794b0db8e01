"""Modules: named parameters built into an Environment, applied inside a graph-building scope."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from descent import arguments
from descent.errors import DTypeError, GraphError, at_user_line
from descent.graph.array import Array
from descent.graph.dtype import DType, as_dtype, float32
from descent.graph.parameter import Parameter
from descent.graph.scope import Scope

if TYPE_CHECKING:
    from descent.runtime.environment import Environment


class Module:
    """Base of every layer. Subclasses declare parameters in `create` and compute in `forward`.

    Parameters exist once `build(env)` has run: each gets a dotted name (`"0.weight"`) and is
    initialised on the host from the build's seed. Call a built module as `module(s, x)`.
    """

    def __init__(self) -> None:
        self._parameters: dict[str, Parameter] = {}
        self._trainable: dict[str, bool] = {}
        self._children: dict[str, Module] = {}
        self._built = False
        self.name = ""

    def add(self, name: str, module: Module) -> Module:
        """Register a child module under `name` (its parameters become `name.<parameter>`)."""
        if not isinstance(module, Module):
            raise GraphError(at_user_line(
                f"{type(self).__name__}: part {name} is {module!r}, not a Module (wrap a function in a Module "
                "subclass whose forward(s, x) calls it)"))
        if not isinstance(name, str) or not name or "." in name:
            raise GraphError(at_user_line(
                f"{type(self).__name__}: a part's name must be a non-empty string without '.' (it becomes a step "
                f"of its parameters' paths, as in PyTorch), got {name!r}"))
        self._children[name] = module
        return module

    def create(self, env: Environment, rng: np.random.Generator) -> None:
        """Create this module's own parameters with `self.parameter`. Default: none."""

    def parameter(self, env: Environment, name: str, value: np.ndarray, dtype: DType = float32,
                  trainable: bool | None = None) -> Parameter:
        """Create a parameter of this module holding `value`; trainable unless told otherwise where it is
        float32 (an integer or bool table has no gradient, as PyTorch's requires_grad needs a float)."""
        dtype = as_dtype(dtype)
        if trainable is None:
            trainable = dtype.is_float
        elif trainable and not dtype.is_float:
            raise DTypeError(at_user_line(f"{type(self).__name__}: parameter '{name}' is {dtype.name}, which has "
                                          "no gradient to train it by; make it trainable=False"))
        full = f"{self.name}.{name}" if self.name else name
        created = env.parameter(full, value.shape, dtype, init=value)
        self._parameters[name] = created
        self._trainable[name] = trainable
        return created

    def build(self, env: Environment, seed: int = 0, name: str = "") -> Module:
        """Create and initialise every parameter of this module and its children in `env`. A part
        built before (in the same Environment) keeps its parameters, shared with the model it came from.
        Parameters are named `name.<path>`; an unnamed model whose names are taken (a second model in
        one Environment) gets a fresh name (`sequential`, `sequential2`, ...). A failed build leaves
        nothing behind."""
        if self._built:
            raise GraphError(at_user_line(
                f"{type(self).__name__}.build: it is already built (its parameters live in one Environment); "
                "make a new module to build another"))
        foreign = [m for m in self._modules() if any(p.environment is not env for p in m._parameters.values())]
        if foreign:
            raise GraphError(at_user_line(
                f"{type(self).__name__}.build: its part {foreign[0].name} was built in another Environment"))
        seed = arguments.seed(f"{type(self).__name__}.build", seed)
        try:
            self._build_or_undo(env, seed, name)
        except GraphError:
            if name:
                raise
            self._build_or_undo(env, seed, env.unique_name(type(self).__name__.lower()))
        return self

    def _build_or_undo(self, env: Environment, seed: int, name: str) -> None:
        """Build under `name`; where that fails, unbuild the modules it built and drop the parameters
        it made, so that the build can be retried."""
        fresh = [module for module in self._modules() if not module._built]
        existing = set(env.parameters)
        try:
            self._build(env, np.random.default_rng(seed), name)
        except Exception:
            env.discard([parameter for parameter in env.parameters if parameter not in existing])
            for module in fresh:
                module._built, module.name = False, ""
                module._parameters.clear()
                module._trainable.clear()
            raise

    def _modules(self) -> Iterator[Module]:
        return (module for _, module in self._paths(""))

    def _build(self, env: Environment, rng: np.random.Generator, name: str) -> None:
        if self._built:
            return  # a part built before keeps its parameters and name (a trained encoder in a new model)
        self.name = name
        self.create(env, rng)
        self._built = True
        for child_name, child in self._children.items():
            child._build(env, rng, f"{name}.{child_name}" if name else child_name)

    def named_parameters(self, trainable_only: bool = True) -> Iterator[tuple[str, Parameter]]:
        """(Environment name, parameter) of this module and its children, in build order, the trainable
        ones as `parameters()` (trainable_only=False adds running statistics, PyTorch's buffers); a part
        used twice (tied weights) gives its parameters once, as PyTorch's does."""
        for _, trainable, parameter in self._unique_parameters():
            if trainable or not trainable_only:
                yield parameter.name, parameter

    def parameters(self, trainable_only: bool = True) -> list[Parameter]:
        """The parameters of `named_parameters` without their names: the trainable ones of this module and its
        children in build order (trainable_only=False adds running statistics)."""
        return [p for _, p in self.named_parameters(trainable_only)]

    def state_parameters(self) -> dict[str, Parameter]:
        """Every parameter, trainable or not, by its path from this module (`0.weight`, `1.0.bias`), as
        a PyTorch state_dict's keys: the same for the same architecture however its parts were built
        and named (a part built before keeps its Environment name); a part used twice counts once."""
        return {path: parameter for path, _, parameter in self._unique_parameters()}

    def _unique_parameters(self) -> Iterator[tuple[str, bool, Parameter]]:
        """(path from this module, trainable, parameter) of every parameter in build order, those of a
        part used twice once."""
        seen: set[str] = set()
        for path, module in self._paths(""):
            for name, parameter in module._parameters.items():
                if parameter.name not in seen:
                    seen.add(parameter.name)
                    yield f"{path}.{name}" if path else name, module._trainable[name], parameter

    def _paths(self, path: str) -> Iterator[tuple[str, Module]]:
        """(path from the module walked from, module) of this module and every part under it, parents first."""
        yield path, self
        for child_name, child in self._children.items():
            yield from child._paths(f"{path}.{child_name}" if path else child_name)

    def __getattr__(self, name: str) -> Parameter:
        parameters = self.__dict__.get("_parameters", {})
        if name in parameters:
            return parameters[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r} (is it built?)")

    def __call__(self, s: Scope, x: Array | None = None, *rest: Any) -> Array:
        if not isinstance(s, Scope) or x is None or rest:
            given = ", ".join(type(a).__name__ for a in (s, *([] if x is None else [x]), *rest))
            raise TypeError(at_user_line(
                f"{type(self).__name__} is applied inside a graph as module(s, x), s the Scope env.build_graph "
                f"hands your function and x an Array of it (got {given}); on numpy data, "
                "nn.Trainer(env, model).predict(x) runs it"))
        if self.__dict__.get("_children") is None:
            raise GraphError(at_user_line(f"{type(self).__name__}.__init__ must call super().__init__()"))
        if not self._built and type(self).create is not Module.create:
            raise GraphError(at_user_line(
                f"{type(self).__name__} is not built: call .build(env) on the model before using it in a graph"))
        return self.forward(s, x)

    def forward(self, s: Scope, x: Array) -> Array:
        """The module's output for `x` in the scope `s`; subclasses define it, callers call the module itself
        (`module(s, x)`), which checks it is built first."""
        raise NotImplementedError

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self._children.items())
        return f"{type(self).__name__}({inner})"
