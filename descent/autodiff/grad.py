"""Reverse-mode differentiation over a scope's graph: gradients are new nodes of the same graph."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from descent.autodiff.vjp import NO_GRADIENT, unbroadcast, vjp
from descent.errors import DTypeError, GraphError, ShapeError, at_user_line
from descent.graph import ops
from descent.graph.array import Array
from descent.graph.dtype import float32
from descent.graph.view import broadcast_shapes

if TYPE_CHECKING:
    from descent.graph.scope import Scope


def differentiation_inputs(scope: Scope, node_id: int) -> tuple[int, ...]:
    """What a node is differentiated with respect to: the inputs of its custom gradient rule, a view's
    parent, otherwise its inputs."""
    if node_id in scope.gradient_rules:
        return scope.gradient_rules[node_id].inputs
    node = scope.node(node_id)
    return (node.attrs.parent,) if node.op == "view" else node.inputs


def grad(loss: Array, wrt: Array | Sequence[Array], scope: Scope | None = None) -> list[Array]:
    """Gradients of the scalar `loss` (of `scope`'s graph, where given) with respect to each Array of
    `wrt`, or to `wrt` alone as a list of one, as torch.autograd.grad (zeros where it does not depend
    on one). Arrays used several times accumulate their cotangents."""
    if not isinstance(loss, Array):
        raise TypeError(at_user_line(f"grad: loss must be an Array, got {type(loss).__name__}"))
    if scope is not None and loss.scope is not scope:
        raise GraphError(at_user_line("grad: the loss comes from another graph than this one"))
    scope = loss.scope
    wrt = [wrt] if isinstance(wrt, Array) else wrt
    if not isinstance(wrt, list | tuple):  # a numpy array or a generator would be taken apart
        raise TypeError(at_user_line(f"grad: wrt must be an Array or a list of Arrays, got {type(wrt).__name__}"))
    if loss.size != 1:
        raise ShapeError(at_user_line(f"grad: loss must hold one element, got shape {loss.shape}"))
    if not loss.dtype.is_float:
        raise DTypeError(at_user_line(f"grad: loss must be float32, got {loss.dtype.name}"))
    for k, array in enumerate(wrt):
        if not isinstance(array, Array):
            raise TypeError(at_user_line(f"grad: wrt[{k}] is a {type(array).__name__}, not an Array"))
        if array.scope is not scope:
            raise GraphError(at_user_line(f"grad: wrt[{k}] comes from another graph than the loss"))
        if not array.dtype.is_float:
            raise DTypeError(at_user_line(
                f"grad: array {k} of wrt is {array.dtype.name}, which has no gradient (its gradient was zeros); "
                "differentiate with respect to a float32 array, as PyTorch's requires_grad and JAX's grad need"))
    targets = {array.node_id for array in wrt}
    needed = _needed(scope, loss.node_id, targets)
    cotangents: dict[int, Array] = {loss.node_id: ops.broadcast_to(scope.constant(1.0), loss.shape)}
    for node_id in sorted(needed, reverse=True):
        if node_id not in cotangents:
            continue
        sources = differentiation_inputs(scope, node_id)
        if not sources or not any(s in needed for s in sources):
            continue
        if node_id in scope.gradient_rules:
            contributions = _custom_contributions(scope, scope.gradient_rules[node_id], cotangents[node_id])
        else:
            inputs = [Array(scope, s) for s in sources]
            contributions = vjp(cotangents[node_id], scope.node(node_id), inputs, Array(scope, node_id))
        for source, cotangent in zip(sources, contributions):
            if cotangent is None or source not in needed:
                continue
            shape = scope.node(source).shape
            if cotangent.shape != shape:  # a rule's broadcastable gradient, or a constant the op broadcast
                fits = broadcast_shapes(cotangent.shape, shape) == shape
                cotangent = ops.broadcast_to(cotangent, shape) if fits else unbroadcast(cotangent, shape)
            previous = cotangents.get(source)
            cotangents[source] = cotangent if previous is None else previous + cotangent
    result = []
    for array in wrt:
        gradient = cotangents.get(array.node_id)
        if gradient is None:
            gradient = ops.broadcast_to(scope.constant(0.0), array.shape)
        result.append(ops.astype(gradient, float32))
    return result


def flows(loss: Array, arrays: Sequence[Array]) -> list[bool]:
    """Whether a gradient flows from `loss` to each of `arrays`: a path joins them that passes no op
    without one (stop_gradient, comparisons, casts, rounding), where torch would leave `.grad` None."""
    scope = loss.scope
    reached, stack = set(), [loss.node_id]
    while stack:
        node_id = stack.pop()
        if node_id not in reached:
            reached.add(node_id)
            if node_id in scope.gradient_rules or scope.node(node_id).op not in NO_GRADIENT:
                stack.extend(differentiation_inputs(scope, node_id))
    return [array.node_id in reached for array in arrays]


def _custom_contributions(scope, custom, cotangent: Array) -> list[Array | None]:
    """Call a custom_gradient rule and check that it gives one Array (or None) per input, each of a
    shape that broadcasts to its input's."""
    where = f"the custom_gradient rule set at {custom.location}"
    contributions = custom.rule(cotangent)
    if not isinstance(contributions, list | tuple) or len(contributions) != len(custom.inputs):
        count = len(contributions) if isinstance(contributions, list | tuple) else type(contributions).__name__
        raise GraphError(at_user_line(f"{where} returned {count} instead of a list of {len(custom.inputs)} "
                                      "gradient(s), one Array or None per input"))
    checked = []
    for position, (source, gradient) in enumerate(zip(custom.inputs, contributions)):
        if gradient is not None:
            gradient = ops.as_array(gradient, scope)
            shape = scope.node(source).shape
            if broadcast_shapes(gradient.shape, shape) != shape:
                raise ShapeError(at_user_line(f"{where} returned a gradient of shape {gradient.shape} for input "
                                              f"{position}, which has shape {shape}"))
        checked.append(gradient)
    return checked


def _needed(scope, loss: int, targets: set[int]) -> set[int]:
    """Nodes on some path from a target to the loss: only they need cotangents."""
    reaches: dict[int, bool] = {}
    for node_id in range(loss + 1):
        reaches[node_id] = node_id in targets or any(
            reaches.get(s, False) for s in differentiation_inputs(scope, node_id))
    needed, stack = set(), [loss]
    while stack:
        node_id = stack.pop()
        if node_id in needed or not reaches.get(node_id, False):
            continue
        needed.add(node_id)
        stack.extend(differentiation_inputs(scope, node_id))
    return needed
