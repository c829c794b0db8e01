"""Fusion: decide which nodes get a buffer, and group the rest into as few kernels as possible.

Elementwise ops and views are evaluated inside the kernel that needs them, at the index that
kernel's thread asks for (views only rewrite that index). Heavy ops (reductions, matmul) are the
cores of their own kernels: their operands are fused into the core's loads, and elementwise
consumers of the same shape into its stores. A node is realized into a buffer when it is a heavy
op, when fusing it would evaluate it at too many different indices, when `contiguous` asks, when
it is the computed source of a gather, when it is a computed matmul operand on a CPU driver, or
when a split into smaller graphs chose it (see `realize`).
"""

from __future__ import annotations

from collections import defaultdict

import networkx as nx

from descent.graph import view as views
from descent.graph.node import Node
from descent.graph.view import ViewChain, numel, simplify

MAX_CONTEXTS = 4  # distinct index maps a fused node may be evaluated at before it gets a buffer
HEAVY = ("reduce", "matmul", "scatter_add")
LEAVES = ("read", "const", "arange")  # nodes with no inputs to fuse

Context = ViewChain  # maps a kernel's base index to a node's flat index
DYNAMIC: Context = (views.View((0,), (0,)),)  # a load at a data-dependent index (gather)


def node_of(graph: nx.DiGraph, node_id: int) -> Node:
    return graph.nodes[node_id]["node"]


def reduce_layout(node: Node, source_shape: tuple[int, ...]) -> tuple[int, int, ViewChain]:
    """(outputs, reduced elements, chain) so that the source at index o * reduced + r is element r
    of the reduction for output o."""
    axes = node.attrs["axes"]
    kept = tuple(a for a in range(len(source_shape)) if a not in axes)
    permuted = tuple(source_shape[a] for a in kept + axes)
    outputs = numel(tuple(source_shape[a] for a in kept))
    reduced = numel(tuple(source_shape[a] for a in axes))
    chain = views.permute((), source_shape, kept + axes)
    chain = views.reshape(chain, permuted, (outputs, reduced))
    return outputs, reduced, chain


def operand_contexts(graph: nx.DiGraph, node: Node) -> list[tuple[int, Context]]:
    """The operands of a heavy node and the chains they are loaded at, from the core's own index."""
    if node.op == "reduce":
        (source,) = node.inputs
        return [(source, reduce_layout(node, node_of(graph, source).shape)[2])]
    return [(source, ()) for source in node.inputs]


def input_contexts(node: Node, context: Context) -> list[tuple[int, Context]]:
    """The inputs of a fused node and the index maps they are evaluated at."""
    if node.op == "view":
        return [(node.inputs[0], simplify(node.attrs.chain + context))]
    if node.op in LEAVES or node.op in HEAVY:
        return []
    if node.op == "gather":
        source, indices = node.inputs
        return [(source, DYNAMIC), (indices, simplify((node.attrs["index_view"],) + context))]
    return [(source, context) for source in node.inputs]


def is_buffer(node: Node) -> bool:
    """Nodes that are always loaded, never computed: parameter reads."""
    return node.op == "read"


def _computed_operand(graph: nx.DiGraph, source: int) -> int | None:
    """The node a matmul operand computes under its views, None when it only loads. A `contiguous`
    of a computed value passes through: that value gets a buffer already (copying it would not help)."""
    while (node := node_of(graph, source)).op == "view" or \
            (node.op == "contiguous" and node_of(graph, node.inputs[0]).op != "view"):
        source = node.inputs[0]
    return None if node_of(graph, source).op in LEAVES + HEAVY else source


def realize(graph: nx.DiGraph, roots: list[int], computed_operands: bool = False,
            chosen: frozenset[int] = frozenset()) -> set[int]:
    """Nodes that must be computed once into a buffer rather than fused into their consumers.
    With `computed_operands` (CPU drivers, whose matmul loads each operand element once per block of
    rows or columns) a matmul operand that computes something gets a buffer too. `chosen` nodes get
    one whatever the rules say (see `split_point`)."""
    needed = set(roots)
    for root in roots:
        needed |= nx.ancestors(graph, root)
    realized: set[int] = set(chosen) & needed
    contexts: dict[int, set[Context]] = defaultdict(set)
    for root in roots:
        contexts[root].add(())
    for node_id in reversed(list(nx.topological_sort(graph.subgraph(needed)))):
        node = node_of(graph, node_id)
        if node.op in LEAVES:
            continue
        seen = {()} if node_id in realized else contexts[node_id]
        if node.op == "gather" and node_of(graph, node.inputs[0]).op != "read":
            realized.add(node.inputs[0])
        if node.op in HEAVY:
            realized.add(node_id)
            for source, source_context in operand_contexts(graph, node):
                contexts[source].add(source_context)
                computed = _computed_operand(graph, source) if computed_operands and node.op == "matmul" else None
                if computed is not None:
                    realized.add(computed)
            continue
        if node.op == "contiguous" and node_of(graph, node.inputs[0]).op not in ("view", *LEAVES, *HEAVY):
            realized.add(node.inputs[0])
        if node.op != "view" and len(seen) > MAX_CONTEXTS:
            realized.add(node_id)
            seen = {()}
        for context in seen:
            for source, source_context in input_contexts(node, context):
                contexts[source].add(source_context)
    return realized


def walk(graph: nx.DiGraph, starts: list[tuple[int, Context]], computed: set[int],
         realized: set[int]) -> dict[int, set[Context]]:
    """Every node reached from `starts`, with the chains it is evaluated or loaded at.

    The walk stops at parameter reads, constants, heavy nodes and realized nodes other than
    those in `computed` (which the kernel computes itself, at its base index).
    """
    contexts: dict[int, set[Context]] = defaultdict(set)
    stack = list(starts)
    while stack:
        node_id, context = stack.pop()
        if context in contexts[node_id]:
            continue
        contexts[node_id].add(context)
        if node_id in realized and not (node_id in computed and context == ()):
            continue
        stack.extend(input_contexts(node_of(graph, node_id), context))
    return contexts


def loaded_realized(graph: nx.DiGraph, node_id: int, realized: set[int]) -> list[int]:
    """Realized nodes the computation of `node_id` loads."""
    node = node_of(graph, node_id)
    if node.op in HEAVY:
        starts = operand_contexts(graph, node)
        touched = walk(graph, starts, set(), realized)
    else:
        touched = walk(graph, [(node_id, ())], {node_id}, realized)
    return [n for n in touched if n in realized and n != node_id]


def levels(graph: nx.DiGraph, outputs: set[int], realized: set[int]) -> dict[int, int]:
    """Dispatch level of each output: one more than the deepest realized node it loads."""
    level: dict[int, int] = {}
    needed = set(outputs).union(*(nx.ancestors(graph, o) for o in outputs))
    for node_id in nx.topological_sort(graph.subgraph(needed)):
        if node_id in outputs:
            loaded = loaded_realized(graph, node_id, realized)
            level[node_id] = 1 + max((level[n] for n in loaded), default=-1)
    return level


def split_point(graph: nx.DiGraph, starts: list[tuple[int, Context]], computed: set[int],
                loads: dict[int, str]) -> int | None:
    """A node computed inline by a kernel (walked from `starts`, loading `loads`) whose own loads are
    nearest half of the kernel's: given a buffer, it takes them to a kernel of its own. None when no
    such node loads two or more buffers, so that realizing it would not narrow the kernel."""
    stops = set(loads) | computed
    inline = [n for n in walk(graph, starts, computed, stops)
              if n not in stops and node_of(graph, n).op not in (*LEAVES, *HEAVY, "view")]
    total = len(set(loads.values()))
    best, best_distance = None, None
    for node_id in inline:
        own = {loads[n] for n in walk(graph, [(node_id, ())], {node_id}, stops) if n in loads}
        distance = abs(2 * len(own) - total)
        if len(own) >= 2 and (best_distance is None or distance < best_distance):
            best, best_distance = node_id, distance
    return best
