"""Gradient clipping by the global norm of all gradients (torch.nn.utils.clip_grad_norm_, optax's
clip_by_global_norm), built into the graph like any other op."""

from __future__ import annotations

import functools
from collections.abc import Sequence

from descent.arguments import positive
from descent.errors import DTypeError, at_user_line
from descent.graph import ops, reductions
from descent.graph.array import Array
from descent.graph.dtype import float32


def _check_arrays(op: str, gradients: Sequence[Array]) -> None:
    """Gradients are graph Arrays (what s.grad returns), not numpy arrays."""
    for gradient in gradients:
        if not isinstance(gradient, Array):
            raise DTypeError(at_user_line(
                f"{op}: gradients must be Arrays of the graph (as s.grad returns them), got {type(gradient).__name__}"))


def global_norm(gradients: Sequence[Array]) -> Array:
    """The L2 norm of all the gradients taken together, as one vector (in float32)."""
    if not gradients:
        raise ValueError(at_user_line("global_norm: needs at least one gradient"))
    _check_arrays("global_norm", gradients)
    squares = [reductions.sum(ops.astype(g, float32) ** 2) for g in gradients]
    return ops.sqrt(functools.reduce(ops.add, squares))


def clip_by_global_norm(gradients: Sequence[Array], max_norm: float) -> list[Array]:
    """The gradients scaled by max_norm / (norm + 1e-6) where their global norm exceeds max_norm, as
    PyTorch's clip_grad_norm_ (the same direction, a bounded step). No gradients, nothing to clip."""
    positive("clip_by_global_norm", "max_norm", max_norm)
    if not gradients:
        return []
    scale = ops.minimum(max_norm / (global_norm(gradients) + 1e-6), 1.0)
    return [g * scale for g in gradients]
