"""Matrix products with numpy's matmul semantics."""

from __future__ import annotations

from descent.errors import ShapeError, at_user_line
from descent.graph import ops, reductions, split
from descent.graph.array import Array
from descent.graph.dtype import float32
from descent.graph.view import broadcast_shapes


def matmul(a: Array, b: Array) -> Array:
    """a @ b: 1-D operands are promoted to matrices and the added axis removed; batch axes broadcast.
    Integer operands are multiplied in float32."""
    return matmul_in_units(a, b, 1)


def matmul_in_units(a: Array, b: Array, unit: int) -> Array:
    """a @ b where the shared axis comes in runs of `unit` elements (`unit` divides it): a long
    product split into partial products splits it between runs where that leaves enough parts,
    keeping each run's index arithmetic whole (conv2d's weight gradient, a run per image)."""
    scope = ops._scope_of("matmul", (a, b))
    a, b = ops.as_array(a, scope), ops.as_array(b, scope)
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError(at_user_line(f"matmul: operands must have at least one axis, got {a.shape} and {b.shape}"))
    a, b = ops.astype(a, float32), ops.astype(b, float32)
    left = ops.expand_dims(a, 0) if a.ndim == 1 else a
    right = ops.expand_dims(b, -1) if b.ndim == 1 else b
    if left.shape[-1] != right.shape[-2]:
        raise ShapeError(at_user_line(
            f"matmul: shapes {a.shape} and {b.shape} do not fit: {left.shape[-1]} != {right.shape[-2]}"))
    batch = broadcast_shapes(left.shape[:-2], right.shape[:-2])
    if batch is None:
        raise ShapeError(at_user_line(f"matmul: batch axes of {a.shape} and {b.shape} do not broadcast"))
    left = ops.broadcast_to(left, batch + left.shape[-2:])
    right = ops.broadcast_to(right, batch + right.shape[-2:])
    m, depth, n = left.shape[-2], left.shape[-1], right.shape[-1]
    outputs = m * n * (left.size // max(m * depth, 1))
    parts = split.chunks(outputs, depth, split.MATMUL_OUTPUTS, split.MATMUL_MIN_CHUNK, unit)
    if parts > 1 and outputs < split.MATMUL_SPLIT_BELOW and outputs * depth >= split.MATMUL_MIN_WORK:
        result = _split_depth(scope, left, right, batch, parts)
    else:
        result = scope.add("matmul", batch + (m, n), float32, (left.node_id, right.node_id))
    if a.ndim == 1:
        result = ops.squeeze(result, -2)
    if b.ndim == 1:
        result = ops.squeeze(result, -1)
    return result


def _split_depth(scope, left: Array, right: Array, batch: tuple[int, ...], parts: int) -> Array:
    """left @ right as `parts` products over chunks of the shared axis (a batch axis), then their sum."""
    m, depth, n = left.shape[-2], left.shape[-1], right.shape[-1]
    chunk = depth // parts
    rank = len(batch)
    order = list(range(rank)) + [rank + 1, rank, rank + 2]
    left = ops.transpose(ops.reshape(left, batch + (m, parts, chunk)), order)
    right = ops.reshape(right, batch + (parts, chunk, n))
    partial = scope.add("matmul", batch + (parts, m, n), float32, (left.node_id, right.node_id))
    return reductions.sum(partial, rank)
