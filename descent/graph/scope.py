"""The graph-building scope: what `env.build_graph(fn)` hands to `fn` as `s`."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import networkx as nx
import numpy as np

from descent.errors import GraphError, ShapeError, at_user_line, user_location
from descent.graph.array import Array
from descent.graph.dtype import DType, as_dtype, check_scalar, data_dtype
from descent.graph.node import Node
from descent.graph.view import Shape, as_shape, broadcast_shapes, numel

if TYPE_CHECKING:
    from descent.runtime.environment import Environment

if TYPE_CHECKING:
    from descent.graph.parameter import Parameter


@dataclass(frozen=True)
class GradientRule:
    """A custom gradient: the node ids it differentiates with respect to, the rule, and where it was set."""

    inputs: tuple[int, ...]
    rule: Callable[[Array], Sequence[Array | None]]
    location: str


@dataclass(frozen=True)
class IndexRange:
    """Indices (a node id) an op requires in [low, high): `what` they index, for the error, and where."""

    node_id: int
    low: int
    high: int
    what: str
    location: str


class Scope:
    """Records ops into a networkx DiGraph; nothing runs until the graph is built and run."""

    def __init__(self, environment: Environment, training: bool = False) -> None:
        self.graph = nx.DiGraph()
        self.environment = environment
        self.training = training
        self.writes: dict[str, tuple[Parameter, int]] = {}
        self._reads: dict[str, int] = {}
        self._streams = 0
        self.gradient_rules: dict[int, GradientRule] = {}
        self.index_ranges: list[IndexRange] = []

    def add(self, op: str, shape: Shape, dtype: DType, inputs: tuple[int, ...] = (), attrs: Any = None) -> Array:
        """Append a node and return the Array that names it."""
        shape = as_shape(shape, op)
        if any(size < 0 for size in shape):
            raise ShapeError(at_user_line(f"{op}: a shape cannot have a negative size, got {shape}"))
        if (elements := numel(shape)) > _MOST_ELEMENTS:
            name = attrs.kind if op == "view" else op
            raise ShapeError(at_user_line(
                f"{name}: shape {shape} has {elements:,} elements; shaders index with 32-bit ints, "
                f"so an array, or a view of one, holds at most {_MOST_ELEMENTS:,}"))
        node_id = self.graph.number_of_nodes()
        node = Node(op, shape, dtype, tuple(inputs), attrs, user_location())
        self.graph.add_node(node_id, node=node)
        for position, source in enumerate(inputs):
            self.graph.add_edge(source, node_id, position=position)
        return Array(self, node_id)

    def custom_gradient(self, output: Array, inputs: Sequence[Array],
                        rule: Callable[[Array], Sequence[Array | None]]) -> Array:
        """Differentiate `output` with respect to `inputs` by `rule(cotangent)` (one gradient or None per
        input, each of its input's shape or broadcastable to it) instead of through the ops that
        computed it. Returns `output` as a node of its own, made after the inputs, so that the rule
        applies to this use of it only (not to `output`'s other uses, nor to an input it is)."""
        from descent.graph import ops

        for array in (output, *inputs):
            if not isinstance(array, Array) or array.scope is not self:
                raise GraphError(at_user_line("custom_gradient: output and inputs must be Arrays of this graph"))
        if not callable(rule):
            raise GraphError(at_user_line(f"custom_gradient: rule must be a function of the cotangent, got {rule!r}"))
        ruled = ops.stop_gradient(output)
        self.gradient_rules[ruled.node_id] = GradientRule(tuple(a.node_id for a in inputs), rule, user_location())
        return ruled

    def require_range(self, indices: Array, low: int, high: int, what: str) -> None:
        """Require `indices` in [low, high): where they come from a parameter (an uploaded batch), the
        runtime checks each run's values before it starts, and refuses them naming `what` they index."""
        self.index_ranges.append(IndexRange(indices.node_id, low, high, what, user_location()))

    def node(self, node_id: int) -> Node:
        """The Node with id `node_id` in this scope's graph."""
        return self.graph.nodes[node_id]["node"]

    def read(self, parameter: Parameter) -> Array:
        """The parameter's value as it was when the run started."""
        self._check_parameter(parameter)
        if parameter.name not in self._reads:
            self._reads[parameter.name] = self.add("read", parameter.shape, parameter.dtype, attrs=parameter).node_id
        return Array(self, self._reads[parameter.name])

    def write(self, parameter: Parameter, value: Array | float | int) -> None:
        """Store `value` into the parameter when the graph runs; reads in the same run see the old value."""
        from descent.graph import ops

        self._check_parameter(parameter)
        value = ops.as_array(value, self)
        if value.shape != parameter.shape:
            if broadcast_shapes(value.shape, parameter.shape) == parameter.shape:
                value = ops.broadcast_to(value, parameter.shape)
            else:
                raise ShapeError(
                    at_user_line(
                        f"write: value of shape {value.shape} does not fit parameter "
                        f"'{parameter.name}' of shape {parameter.shape}"
                    )
                )
        if value.dtype != parameter.dtype:
            value = ops.astype(value, parameter.dtype)
        if parameter.name in self.writes:
            raise GraphError(at_user_line(f"write: parameter '{parameter.name}' is written twice in one graph"))
        self.writes[parameter.name] = (parameter, value.node_id)

    def update(self, parameter: Parameter, step: Callable[[Array], Array]) -> None:
        """Write `step(value)`, where value is what this graph writes to the parameter so far, or its
        value when the run starts: updates chain in order, as an eager framework's do (a BatchNorm
        applied twice in one step moves its running statistics twice)."""
        if not callable(step):
            raise GraphError(at_user_line(f"update: step must be a function of the value, got {step!r}; "
                                          "write(parameter, value) stores a value"))
        earlier = self.writes.pop(parameter.name, None)
        current = Array(self, earlier[1]) if earlier else self.read(parameter)
        try:
            self.write(parameter, step(current))
        except Exception:
            if earlier:
                self.writes[parameter.name] = earlier
            raise

    def constant(self, value: Any, dtype: DType | str | None = None) -> Array:
        """A constant: Python scalars are inlined into shaders, numpy arrays uploaded once at build. Each
        call makes a node of its own, so a gradient with respect to it is its own (equal numpy constants
        share a buffer, not a gradient)."""
        from descent.graph import ops

        if np.isscalar(value) or (isinstance(value, np.ndarray) and value.ndim == 0):
            typed = isinstance(value, np.ndarray | np.generic)
            scalar = value.item() if typed else value
            resolved = as_dtype(dtype) if dtype is not None else data_dtype(value.dtype if typed else type(scalar))
            check_scalar("constant", scalar, resolved)
            return self.add("const", (), resolved, attrs=scalar)
        array = np.asarray(value)
        resolved = as_dtype(dtype) if dtype is not None else data_dtype(array.dtype)
        parameter = self.environment.constant_parameter(array, resolved)
        return ops.reshape(self.read(parameter), array.shape)

    def grad(self, loss: Array, wrt: Array | Sequence[Array]) -> list[Array]:
        """Gradients of the scalar `loss` with respect to each Array of `wrt` (or to one Array, as a list
        of one), as new Arrays of this graph."""
        from descent.autodiff.grad import grad

        return grad(loss, wrt, self)

    def arange(self, stop: float, dtype: DType | str = "int32") -> Array:
        """0, 1, ... below `stop` (numpy's arange(stop)): computed from the index where it is used, never stored."""
        if not isinstance(stop, int | float | np.integer | np.floating) or not math.isfinite(stop):
            raise TypeError(at_user_line(f"arange: stop must be a finite number, got {stop!r}"))
        return self.add("arange", (max(math.ceil(stop), 0),), as_dtype(dtype))

    def random_uniform(self, shape: tuple[int, ...], low: float = 0.0, high: float = 1.0) -> Array:
        """Uniform float32 numbers in [low, high), a counter-based hash of the run's seed and the index."""
        from descent.graph import ops

        uniform = self._random("uniform", shape)
        if (low, high) == (0.0, 1.0):
            return uniform
        below_high = float(np.nextafter(np.float32(high), np.float32(low)))  # u * (high - low) + low can round up
        scaled = uniform * (high - low) + low
        return ops.minimum(scaled, below_high) if high > low else scaled

    def random_normal(self, shape: tuple[int, ...], mean: float = 0.0, std: float = 1.0) -> Array:
        """Normal float32 numbers (Box-Muller over two hashed uniforms)."""
        return self._random("normal", shape) * std + mean

    def _random(self, distribution: str, shape: tuple[int, ...]) -> Array:
        from descent.graph import ops

        shape = as_shape(shape, f"random_{distribution}")
        if any(size < 0 for size in shape):
            raise ShapeError(at_user_line(f"random_{distribution}: a shape cannot have a negative size, got {shape}"))
        self._streams += 1
        stream = (self._streams * 0x9E3779B9) % 2**32
        seed = ops.add(self.read(self.environment.seed_parameter), self.constant(stream, "uint32"))
        return ops.elementwise(distribution, ops.broadcast_to(seed, shape))

    def _check_parameter(self, parameter: Parameter) -> None:
        owner = getattr(parameter, "environment", None)
        if owner is not self.environment:
            raise GraphError(at_user_line(f"parameter {parameter!r} belongs to another Environment"))


_MOST_ELEMENTS = 2**31 - 1
