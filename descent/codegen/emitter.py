"""Emit the GLSL statements that evaluate fused nodes at an index: one named temporary per value.

An Emitter evaluates graph nodes at view chains applied to a base index variable, loading
realized nodes from their buffers and computing everything else inline. Each (node, chain)
pair is computed once; views only add index arithmetic.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import networkx as nx
import numpy as np

from descent.codegen.index import Index, bounds, render, split_aligned, variable
from descent.graph.dtype import DType, bool_, float32, uint32
from descent.graph.optable import ELEMENTWISE, HELPERS
from descent.graph.view import View, ViewChain, contiguous_strides, is_masked
from descent.schedule.fuse import input_contexts, node_of


def literal(value: bool | int | float, dtype: DType) -> str:
    """A GLSL literal of `dtype` for a Python scalar."""
    if dtype == bool_:
        return "true" if value else "false"
    if dtype == uint32:
        return f"{int(value) % 2**32}u"
    if dtype == float32:
        number = float(np.float32(value))
        if math.isnan(number):
            return "uintBitsToFloat(0x7fc00000u)"
        if math.isinf(number):
            return "uintBitsToFloat(0xff800000u)" if number < 0 else "uintBitsToFloat(0x7f800000u)"
        text = repr(number)
        return f"({text})" if text.startswith("-") else text
    return f"({int(value)})" if int(value) < 0 else str(int(value))


def _called(helpers: tuple[str, ...], expression: str) -> list[str]:
    """The helpers (listed in dependency order) that `expression` calls, directly or through another."""
    called: set[str] = set()
    for helper in reversed(helpers):
        if any(re.search(rf"\b{helper}\(", text) for text in [expression, *(HELPERS[c] for c in called)]):
            called.add(helper)
    return [helper for helper in helpers if helper in called]


def _is_literal(operand: str) -> bool:
    """Whether an emitted operand is a number written out (a constant the driver's compiler folds)."""
    try:
        float(operand.strip("()").removesuffix("u"))
    except ValueError:
        return False
    return True


# division by a literal zero, given x * inf: drivers folded x / 0.0 itself to 0
_BY_ZERO = {"div": "{0}", "floor_divide": "floor({0})", "remainder": "{nan}"}

# GLSL 4.60's keywords and words reserved for future use (types by pattern below), and `main`
_GLSL_WORDS = set("""
    const uniform buffer shared attribute varying coherent volatile restrict readonly writeonly atomic_uint layout
    centroid flat smooth noperspective patch sample invariant precise break continue do for while switch case default
    if else subroutine in out inout int void bool true false float double discard return uint struct lowp mediump
    highp precision demote common partition active asm class union enum typedef template this resource goto inline
    noinline public static extern external interface long short half fixed unsigned superp input output filter sizeof
    cast namespace using main""".split())
_GLSL_TYPES = re.compile(r"[iudbhf]?vec[234]|d?mat[234](x[234])?|[iu]?(sampler|image|texture|subpassInput)\w*")


# GLSL's built-in functions and types that generated code calls: a buffer of the same name would hide them
_GLSL_BUILTINS = {
    "abs", "sign", "floor", "ceil", "trunc", "round", "roundEven", "fract", "mod", "min", "max", "clamp", "mix",
    "step", "sqrt", "inversesqrt", "pow", "exp", "exp2", "log", "log2", "sin", "cos", "tan", "asin", "acos", "atan",
    "sinh", "cosh", "tanh", "isnan", "isinf", "fma", "dot", "length", "floatBitsToInt", "floatBitsToUint",
    "intBitsToFloat", "uintBitsToFloat", "texelFetch", "barrier", "memoryBarrier", "atomicCompSwap",
    "subgroupShuffle", "vec2", "vec4", "ivec4", "uvec4", "bvec4", "highp", "true", "false",
}


def identifier(name: str, taken: frozenset[str] = frozenset()) -> str:
    """A valid, readable GLSL name for a buffer: ASCII letters, digits and single underscores, no
    leading digit, and none a keyword or reserved word, a built-in, a helper of descent's or one of
    the `taken` names (a template's own) would shadow."""
    text = re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9_]", "_", name.replace("param:", "").replace("staged:", "staged_")))
    text = text.strip("_") or "buffer"
    if (text[0].isdigit() or text.startswith("gl_") or text in _GLSL_WORDS or _GLSL_TYPES.fullmatch(text)
            or text in _GLSL_BUILTINS or text in HELPERS or text in taken):
        text = f"p_{text}"
    return text


def _coordinate(flat: Index, size: int, step: int, outermost: bool) -> Index:
    coordinate = flat // step
    return coordinate if outermost else coordinate % size


def _merged_axes(view: View) -> list[tuple[int, int, int, bool]]:
    """(size, step, stride, outermost) of runs of adjacent axes that address the source as one axis
    (each stride equals the next axis' size times its stride): fewer divisions in the index."""
    runs: list[list[int]] = []
    for axis, (size, step) in enumerate(zip(view.shape, contiguous_strides(view.shape))):
        if size == 1:
            continue
        stride = view.strides[axis]
        if runs and runs[-1][2] == size * stride:
            runs[-1] = [runs[-1][0] * size, step, stride, runs[-1][3]]
        else:
            runs.append([size, step, stride, axis == 0])
    return [tuple(run) for run in runs]


def view_index(view: View, flat: Index) -> Index:
    """Flat index in the source of `view` for the element at `flat`."""
    if 0 in view.shape:  # it has no elements: a mask outside it keeps every read from using this index
        return Index((), 0)
    result = Index((), view.offset)
    for size, step, stride, outermost in _merged_axes(view):
        if stride:
            result = result + _coordinate(flat, size, step, outermost) * stride
    return result


def view_valid(view: View, flat: Index, names: dict[Index, str]) -> str:
    """GLSL condition: the element at `flat` lies inside the view's mask ("true" where the ranges of
    the index variables prove it, "false" where they rule it out)."""
    if 0 in view.shape:  # a view of no elements, padded into a result that has some
        return "false"
    conditions = []
    for axis, ((lo, hi), size, step) in enumerate(zip(view.bounds(), view.shape, contiguous_strides(view.shape))):
        coordinate = _coordinate(flat, size, step, axis == 0) if size > 1 else Index()
        low, high = bounds(coordinate)
        if lo >= hi or high < lo or low >= hi:
            return "false"
        if lo > max(low, 0):
            conditions.append(f"{render(coordinate, names)} >= {lo}")
        if hi <= high:
            conditions.append(f"{render(coordinate, names)} < {hi}")
    return " && ".join(f"({c})" for c in conditions) or "true"


_INDEX_DECLARATION = re.compile(r"int (index_\d+) = (.*);")


def without_unread_indices(lines: list[str]) -> list[str]:
    """`lines` less the index variables that no later statement reads (a masked view's index that
    its condition came to express through smaller terms), so the GLSL shows only what it computes."""
    kept, read = [], set()
    for line in reversed(lines):
        declaration = _INDEX_DECLARATION.fullmatch(line)
        if declaration and declaration[1] not in read:
            continue
        read |= set(re.findall(r"\w+", declaration[2] if declaration else line))
        kept.append(line)
    return kept[::-1]


class Emitter:
    """Statements evaluating nodes at `base` (a GLSL int variable) through view chains. With `hoist`,
    values the same at every base index go to `hoisted` as (type, name, expression) instead, for a
    caller that evaluates many indices to compute once."""

    def __init__(self, graph: nx.DiGraph, loads: dict[int, str], buffers: dict[str, tuple[str, DType, int]],
                 base: Index, special: dict[tuple[int, ViewChain], str] | None = None,
                 texels: dict[str, str] | None = None, hoist: bool = False,
                 quads: Callable[[str], str | None] | None = None) -> None:
        self.graph = graph
        self.loads = loads
        self.buffers = buffers  # logical buffer -> (GLSL name, dtype, elements)
        self.texels = texels or {}  # GLSL name of a buffer -> the texel buffer it is read through
        self.quads = quads  # logical float buffer -> a vec4 texel view of it, or None
        self.base = render(base)
        self.special = special or {}  # (node, chain) -> a value the caller provides, such as a matmul's sum
        self._special_nodes = {node_id for node_id, _ in self.special}
        self.lines: list[str] = []
        self.hoist = hoist
        self.hoisted: list[tuple[str, str, str]] = []
        self._hoisting = False
        self._invariants: dict[tuple[int, ViewChain], bool] = {}
        self._declared: dict[tuple[bool, str, str], str] = {}
        self.helpers: dict[str, str] = {}
        self.loop_trips = 0  # iterations the helpers' loops may run in the code emitted so far
        self.locations: list[str] = []
        self.ops: list[str] = []
        self._values: dict[tuple[int, ViewChain], str] = {}
        self._expressions: dict[ViewChain, Index] = {(): base}
        self._indices: dict[ViewChain, str] = {(): self.base}
        self._variables: dict[Index, str] = {}  # indices held in GLSL variables
        self._names: dict[int, dict[ViewChain, int]] = {}
        self._count = 0

    def fresh(self, stem: str) -> str:
        self._count += 1
        return f"{stem}_{self._count}"

    def _name(self, node_id: int, chain: ViewChain, stem: str) -> str:
        numbering = self._names.setdefault(node_id, {})
        number = numbering.setdefault(chain, len(numbering))
        suffix = f"_{number}" if number else ""
        return f"{stem}_{node_id}{suffix}"

    def expression(self, chain: ViewChain) -> Index:
        """The flat index reached through `chain` from the base index, as symbolic arithmetic."""
        if chain not in self._expressions:
            self._expressions[chain] = view_index(chain[0], self.expression(chain[1:]))
        return self._expressions[chain]

    def index(self, chain: ViewChain) -> str:
        """A variable (or a bare name or number) holding the flat index reached through `chain`."""
        if chain not in self._indices:
            expression = self.expression(chain)
            text = render(expression, self._variables)
            if text.isidentifier() or not expression.terms:
                self._indices[chain] = text
            else:
                variable_name = self.fresh("index")
                self.lines.append(f"int {variable_name} = {text};")
                self._indices[chain] = self._variables[expression] = variable_name
        return self._indices[chain]

    def valid(self, own: ViewChain, outer: ViewChain) -> list[tuple[str, View]]:
        """(condition, view) for each masked view of `own`, evaluated after the views in `outer`."""
        result = []
        for k, view in enumerate(own):
            if view.mask is not None:
                inner = own[k + 1 :] + outer
                self.index(inner)  # held in a variable, which the condition then reads
                result.append((view_valid(view, self.expression(inner), self._variables), view))
        return result

    def element(self, name: str, dtype: DType, index: str) -> str:
        """The value of buffer `name` at `index`, from a storage buffer or through a texel fetch."""
        element = f"texelFetch({self.texels[name]}, {index}).r" if name in self.texels else f"{name}[{index}]"
        return f"{element} != 0u" if dtype == bool_ else element

    def declare(self, glsl_type: str, name: str, expression: str) -> str:
        """The variable holding `expression`: the one an identical earlier statement declared (two
        view chains may reach the same element), else `name` in a new statement, hoisted while a
        hoisted value is evaluated."""
        key = (self._hoisting, glsl_type, expression)
        if key not in self._declared:
            self._declared[key] = name
            if self._hoisting:
                self.hoisted.append((glsl_type, name, expression))
            else:
                self.lines.append(f"{glsl_type} {name} = {expression};")
        return self._declared[key]

    def invariant(self, node_id: int, chain: ViewChain = ()) -> bool:
        """Whether a node at `chain` has the same value at every base index: constants, loads at a
        constant index and what is computed from them alone."""
        key = (node_id, chain)
        if key not in self._invariants:
            node = node_of(self.graph, node_id)
            definition = ELEMENTWISE.get(node.op)
            if node.op == "const":
                result = True
            elif node_id in self._special_nodes or node.op in ("arange", "gather") or is_masked(chain):
                result = False
            elif node_id in self.loads:
                result = not self.expression(chain).terms
            elif definition is not None and "{index}" in definition.glsl:
                result = False
            elif node.op == "view" and is_masked(node.attrs.chain):
                result = False
            else:
                result = all(self.invariant(source, inner) for source, inner in input_contexts(node, chain))
            self._invariants[key] = result
        return self._invariants[key]

    def load(self, node_id: int, chain: ViewChain) -> str:
        node = node_of(self.graph, node_id)
        name, dtype, size = self.buffers[self.loads[node_id]]
        quad = self._quad(self.loads[node_id], chain) if dtype == float32 else None
        if quad is not None:
            return self.declare(node.dtype.glsl, self._name(node_id, chain, name), quad)
        index = self.index(chain)
        if is_masked(chain):
            index = f"clamp({index}, 0, {max(size - 1, 0)})"
        element = self.element(name, dtype, index)
        return self.declare(node.dtype.glsl, self._name(node_id, chain, name), element)

    def _quad(self, buffer: str, chain: ViewChain) -> str | None:
        """Element e of a vec4 fetch where the index is 4 * (something) + e and the buffer has a vec4
        view: the four elements a quad of indices reads cost one fetch, shared through `declare`."""
        texels = self.quads(buffer) if self.quads is not None and not is_masked(chain) else None
        if texels is None:
            return None
        split = split_aligned(self.expression(chain), 4)
        if split is None:
            return None
        quad, element = split
        fetch = f"texelFetch({texels}, {render(quad)})"
        name = self.declare("vec4", self.fresh(f"{self.buffers[buffer][0]}_quad"), fetch)
        return f"{name}[{element}]"

    def value(self, node_id: int, chain: ViewChain = ()) -> str:
        """GLSL expression (a variable or literal) of node `node_id` at `chain` from the base index."""
        if (node_id, chain) not in self._values:
            for operand in self._operands_first(node_id, chain):
                self._value(*operand)
        return self._value(node_id, chain)

    def _operands(self, node_id: int, chain: ViewChain) -> list[tuple[int, ViewChain]]:
        """The (node, chain) pairs that evaluating `node_id` at `chain` evaluates first."""
        node = node_of(self.graph, node_id)
        if (node_id, chain) in self.special or node_id in self.loads or node.op in ("const", "arange"):
            return []
        operands = input_contexts(node, chain)
        return operands[1:] if node.op == "gather" else operands  # a gather loads its source itself

    def _operands_first(self, node_id: int, chain: ViewChain) -> list[tuple[int, ViewChain]]:
        """The pairs not yet evaluated below (node_id, chain), each after its operands and in the order
        a depth-first evaluation meets them: evaluated in turn, no call recurses deeper than one op (a
        fused chain of hundreds of ops would exceed Python's recursion limit)."""
        order: list[tuple[int, ViewChain]] = []
        seen: set[tuple[int, ViewChain]] = set()
        stack: list[tuple[tuple[int, ViewChain], bool]] = [((node_id, chain), False)]
        while stack:
            key, expanded = stack.pop()
            if expanded:
                order.append(key)
            elif key not in seen and key not in self._values:
                seen.add(key)
                stack.append((key, True))
                stack.extend((operand, False) for operand in reversed(self._operands(*key)))
        return order[:-1]

    def _value(self, node_id: int, chain: ViewChain) -> str:
        key = (node_id, chain)
        if key in self._values:
            return self._values[key]
        node = node_of(self.graph, node_id)
        if key in self.special:
            return self.special[key]
        if node.op == "const":
            return literal(node.attrs, node.dtype)
        if node.op == "arange":
            return f"{node.dtype.glsl}({self.index(chain)})"
        if self.hoist and not self._hoisting and self.invariant(node_id, chain):
            self._hoisting = True
            try:
                return self._value(node_id, chain)
            finally:
                self._hoisting = False
        if node_id in self.loads:
            result = self.load(node_id, chain)
        elif node.op == "view":
            ((source, source_chain),) = input_contexts(node, chain)
            inner = self.value(source, source_chain)
            conditions = self.valid(node.attrs.chain, chain)
            if not conditions:
                result = inner
            else:
                expression = inner
                for condition, view in conditions:  # from the source out: the view applied first is tested first
                    expression = f"{condition} ? {expression} : {literal(view.fill, node.dtype)}"
                result = self.declare(node.dtype.glsl, self._name(node_id, chain, "padded"), expression)
        else:
            result = self._compute(node_id, node, chain)
        self._values[key] = result
        return result

    def _compute(self, node_id: int, node, chain: ViewChain) -> str:
        if node.op == "gather":
            return self._gather(node_id, node, chain)
        operands = [self.value(source, source_chain) for source, source_chain in input_contexts(node, chain)]
        if node.op == "cast":
            expression = f"{node.dtype.glsl}({operands[0]})"
        elif node.op in ELEMENTWISE:
            definition = ELEMENTWISE[node.op]
            glsl = definition.float_glsl if definition.float_glsl and node.dtype == float32 else definition.glsl
            for helper in _called(definition.helpers, glsl):
                self.helpers[helper] = HELPERS[helper]
            if not (node.op == "pow" and _is_literal(operands[1])):  # the loop over a constant exponent unrolls
                self.loop_trips += definition.loop_trips[node.dtype == float32]
            index = self.index(chain) if "{index}" in glsl else ""
            expression = glsl.format(*operands, index=index)
            if node.op in _BY_ZERO and operands[1] in ("0.0", "(-0.0)"):  # drivers fold x / 0.0 to 0
                infinity = literal(math.copysign(math.inf, float(operands[1].strip("()"))), float32)
                expression = _BY_ZERO[node.op].format(f"{operands[0]} * {infinity}", nan=literal(math.nan, float32))
        else:
            raise NotImplementedError(f"codegen cannot fuse op {node.op!r}")
        return self._statement(node_id, node, chain, expression)

    def _statement(self, node_id: int, node, chain: ViewChain, expression: str) -> str:
        name = self._name(node_id, chain, node.op)
        result = self.declare(node.dtype.glsl, name, expression)
        if result == name:
            self.locations.append(node.location)
            self.ops.append(node.op)
        return result

    def _gather(self, node_id: int, node, chain: ViewChain) -> str:
        """Load the source buffer at the position an index array names (wrapped and clamped in range)."""
        (source, _), (indices, index_chain) = input_contexts(node, chain)
        position = self.value(indices, index_chain)
        source_shape = node_of(self.graph, source).shape
        axis = node.attrs["axis"]
        extent = source_shape[axis]
        inner = math.prod(source_shape[axis + 1 :])
        count = math.prod(node_of(self.graph, indices).shape)
        flat = self.expression(chain)
        wrapped = self.fresh("position")
        wrap = f"{position} < 0 ? {position} + {extent} : {position}"
        self.lines.append(f"int {wrapped} = clamp({wrap}, 0, {extent - 1});")
        element = render(((flat // (count * inner)) * extent + variable(wrapped, extent)) * inner + flat % inner,
                         self._variables)
        name, dtype, size = self.buffers[self.loads[source]]
        if is_masked(chain):  # a padded position's value is discarded, but its read must stay in the buffer
            element = f"clamp({element}, 0, {max(size - 1, 0)})"
        loaded = self.element(name, dtype, element)
        return self._statement(node_id, node, chain, loaded)
