"""Matrix products with numpy's matmul semantics."""

from __future__ import annotations

from typing import Any

from descent.errors import ShapeError, at_user_line
from descent.graph import ops, reductions, split
from descent.graph.array import Array
from descent.graph.dtype import float32
from descent.graph.view import broadcast_shapes, numel


def matmul(a: Array, b: Array) -> Array:
    """a @ b: 1-D operands are promoted to matrices and the added axis removed; batch axes broadcast.
    Integer operands are multiplied in float32."""
    return matmul_in_units(a, b, 1)


def matmul_in_units(a: Array, b: Array, unit: int, attrs: Any = None) -> Array:
    """a @ b where the shared axis comes in runs of `unit` elements (`unit` divides it). A product with
    few outputs and much work, or a long shared axis, is split into partial products and their sum,
    between runs where that leaves enough parts, keeping each run's index arithmetic whole (conv2d's
    weight gradient, a run per image). `attrs` (conv2d's ConvWindows) go on the product's node where
    it is one node of the operands as given; a split product's nodes get none."""
    a, b = ops._scalar_or_array("matmul", a), ops._scalar_or_array("matmul", b)
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
    target = max(split.MATMUL_OUTPUTS, outputs * -(-depth // split.MATMUL_LONG_FOLD))  # chunks within the fold
    parts = split.chunks(outputs, depth, target, split.MATMUL_MIN_CHUNK, unit)
    if depth > split.MATMUL_LONG_FOLD and parts == 1:  # no divisor to split a long fold at: zeros make one
        left, right, parts = _padded_depth(left, right, unit)
        depth = left.shape[-1]
    few_outputs = outputs < split.MATMUL_SPLIT_BELOW and outputs * depth >= split.MATMUL_MIN_WORK
    if depth == 0 or outputs == 0:  # a sum of nothing, or no sums: no kernel to index through empty axes
        result = ops.broadcast_to(scope.constant(0.0, float32), batch + (m, n))
    elif parts > 1 and (few_outputs or depth > split.MATMUL_LONG_FOLD):
        result = _split_depth(scope, left, right, batch, parts)
    else:
        result = scope.add("matmul", batch + (m, n), float32, (left.node_id, right.node_id), attrs)
    if a.ndim == 1:
        result = ops.squeeze(result, -2)
    if b.ndim == 1:
        result = ops.squeeze(result, -1)
    return result


def _padded_depth(left: Array, right: Array, unit: int) -> tuple[Array, Array, int]:
    """left and right with zeros added along the shared axis, to a length that splits into parts of
    at most MATMUL_LONG_FOLD (whole runs of `unit`), and that number of parts."""
    depth = left.shape[-1]
    parts = -(-depth // split.MATMUL_LONG_FOLD)
    chunk = -(-depth // (parts * unit)) * unit
    extra = parts * chunk - depth
    left = ops.pad(left, [(0, 0)] * (left.ndim - 1) + [(0, extra)])
    right = ops.pad(right, [(0, 0)] * (right.ndim - 2) + [(0, extra), (0, 0)])
    return left, right, parts


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


def einsum(subscripts: str, *operands: Array) -> Array:
    """Einstein summation as numpy's `einsum`: 'ij,jk->ik', implicit output (the letters seen once,
    sorted), '...' for broadcast leading axes, repeated letters in one operand for diagonals. Each
    contraction of two operands is one matrix product. The result is float32, as matmul's: integer
    operands are multiplied in float32."""
    operands = tuple(ops._scalar_or_array("einsum", x) for x in operands)
    scope = ops._scope_of("einsum", operands)
    arrays = [ops.astype(ops.as_array(x, scope), float32) for x in operands]
    terms, output = _parse_einsum(subscripts, [a.ndim for a in arrays])
    _einsum_sizes(subscripts, terms, arrays)
    pairs = [_diagonals(x, term, subscripts) for x, term in zip(arrays, terms)]
    x, term = pairs[0]
    for k, (y, other) in enumerate(pairs[1:], start=1):
        later = set(output).union(*(t for _, t in pairs[k + 1:]))
        x, term = _sum_unused(x, term, later | set(other))
        y, other = _sum_unused(y, other, later | set(term))
        x, term = _contract(x, term, y, other, later)
    x, term = _sum_unused(x, term, set(output))
    return ops.transpose(x, [term.index(letter) for letter in output])


def _parse_einsum(subscripts: str, ranks: list[int]) -> tuple[list[str], str]:
    """Each operand's letters and the output's, with '...' replaced by one placeholder letter per
    broadcast axis (right-aligned, as numpy broadcasts)."""
    def fail(why: str) -> ShapeError:
        return ShapeError(at_user_line(f"einsum: {why} in subscripts {subscripts!r}"))

    text = subscripts.replace(" ", "")
    if text.count("->") > 1:
        raise fail("more than one '->'")
    inputs, arrow, output = text.partition("->")
    terms = inputs.split(",")
    if len(terms) != len(ranks):
        raise fail(f"{len(terms)} operand terms for {len(ranks)} operands")
    for term in terms + [output]:
        bare = term.replace("...", "", 1)
        if not all(c.isascii() and c.isalpha() for c in bare):
            raise fail(f"term {term!r} has a character that is not a letter or one '...'")
    widths = [rank - len(term.replace("...", "")) for term, rank in zip(terms, ranks)]
    for term, rank, width in zip(terms, ranks, widths):
        if width < 0 or (width > 0 and "..." not in term):
            raise fail(f"term {term!r} does not fit an operand of {rank} axes")
    width = max(widths, default=0)
    broadcast = "".join(chr(0x391 + k) for k in range(width))  # Greek capitals: never user letters
    terms = [t.replace("...", broadcast[width - w:]) for t, w in zip(terms, widths)]
    seen = "".join(terms)
    if arrow:
        if width and "..." not in output:
            raise fail("the output needs '...' for the broadcast axes of the operands")
        output = output.replace("...", broadcast)
        for letter in output:
            if output.count(letter) > 1:
                raise fail(f"output letter {letter!r} repeats")
            if letter not in seen:
                raise fail(f"output letter {letter!r} is in no operand")
    else:
        output = broadcast + "".join(sorted(c for c in set(seen) if seen.count(c) == 1 and c not in broadcast))
    return terms, output


def _einsum_sizes(subscripts: str, terms: list[str], arrays: list[Array]) -> None:
    """Refuses a letter whose sizes differ other than by 1 (which broadcasts, as in numpy)."""
    sizes: dict[str, int] = {}
    for term, x in zip(terms, arrays):
        for letter, size in zip(term, x.shape):
            known = sizes.setdefault(letter, size)
            if known != size and 1 not in (known, size):
                shown = "'...'" if ord(letter) > 127 else repr(letter)
                raise ShapeError(at_user_line(
                    f"einsum: {shown} has sizes {known} and {size} in subscripts {subscripts!r} "
                    f"(operand shapes {', '.join(str(a.shape) for a in arrays)})"))
            sizes[letter] = size if known == 1 else known


def _diagonals(x: Array, term: str, subscripts: str) -> tuple[Array, str]:
    """x with each letter repeated in `term` reduced to its diagonal: the repeated axes moved last,
    merged and read with a step of n + 1 (an empty array stays empty)."""
    for letter in dict.fromkeys(term):
        while term.count(letter) > 1:
            first = term.index(letter)
            second = term.index(letter, first + 1)
            if x.shape[first] != x.shape[second]:
                raise ShapeError(at_user_line(
                    f"einsum: repeated {letter!r} has sizes {x.shape[first]} and {x.shape[second]} in one operand "
                    f"in subscripts {subscripts!r}"))
            n = x.shape[first]
            rest = [a for a in range(x.ndim) if a not in (first, second)]
            moved = ops.transpose(x, rest + [first, second])
            if x.size == 0:
                x = ops.broadcast_to(x.scope.constant(0.0), moved.shape[:-1])
            else:
                x = ops.reshape(moved, moved.shape[:-2] + (n * n,))[(Ellipsis, slice(None, None, n + 1))]
            term = "".join(term[a] for a in rest) + letter
    return x, term


def _sum_unused(x: Array, term: str, needed: set[str]) -> tuple[Array, str]:
    """x summed over the letters no later step needs."""
    axes = tuple(a for a, letter in enumerate(term) if letter not in needed)
    if not axes:
        return x, term
    return reductions.sum(x, axes), "".join(c for c in term if c in needed)


def _contract(x: Array, term: str, y: Array, other: str, later: set[str]) -> tuple[Array, str]:
    """The product of two operands summed over the letters they share that no later step needs: a
    batched matrix product (batch, left, shared) @ (batch, shared, right), or an elementwise product
    where nothing is shared."""
    batch = [c for c in term if c in other and c in later]
    shared = [c for c in term if c in other and c not in later]
    left = [c for c in term if c not in other]
    right = [c for c in other if c not in term]
    present = [dict(zip(term, x.shape)), dict(zip(other, y.shape))]
    size = {c: next((p[c] for p in present if p.get(c, 1) != 1), 1) for c in term + other}  # 1 broadcasts

    def arrange(a: Array, letters: str, order: list[str]) -> Array:
        a = ops.transpose(a, [letters.index(c) for c in order])
        return ops.broadcast_to(a, tuple(size[c] for c in order))

    sizes = [size[c] for c in batch + left + right]
    if not shared:
        a = ops.reshape(arrange(x, term, batch + left), sizes[:len(batch + left)] + [1] * len(right))
        b = ops.reshape(arrange(y, other, batch + right),
                        sizes[:len(batch)] + [1] * len(left) + sizes[len(batch + left):])
        return ops.mul(a, b), "".join(batch + left + right)
    extent = {name: numel(tuple(size[c] for c in group))
              for name, group in (("batch", batch), ("left", left), ("shared", shared), ("right", right))}
    a = ops.reshape(arrange(x, term, batch + left + shared), (extent["batch"], extent["left"], extent["shared"]))
    b = ops.reshape(arrange(y, other, batch + shared + right), (extent["batch"], extent["shared"], extent["right"]))
    return ops.reshape(matmul(a, b), sizes), "".join(batch + left + right)
