"""Fusion: decide which nodes get a buffer, and group the rest into as few kernels as possible.

Elementwise ops and views are evaluated inside the kernel that needs them, at the index that
kernel's thread asks for (views only rewrite that index). A node is realized into a buffer when
it is written to a parameter, or when fusing it would evaluate it at too many different indices.
"""

from __future__ import annotations

from collections import defaultdict

import networkx as nx

from descent.graph.node import Node
from descent.graph.view import ViewChain, numel, simplify

MAX_CONTEXTS = 4  # distinct index maps a fused node may be evaluated at before it gets a buffer

Context = ViewChain  # maps a kernel's flat thread index to a node's flat index


def node_of(graph: nx.DiGraph, node_id: int) -> Node:
    return graph.nodes[node_id]["node"]


def input_contexts(node: Node, context: Context) -> list[tuple[int, Context]]:
    """The inputs of a fused node and the index maps they are evaluated at."""
    if node.op == "view":
        return [(node.inputs[0], simplify(node.attrs + context))]
    if node.op in ("read", "const"):
        return []
    return [(source, context) for source in node.inputs]


def is_buffer(node: Node) -> bool:
    """Nodes that are always loaded, never computed: parameter reads."""
    return node.op == "read"


def realize(graph: nx.DiGraph, roots: list[int]) -> set[int]:
    """Nodes that must be computed once into a buffer rather than fused into their consumers."""
    needed = set(roots)
    for root in roots:
        needed |= nx.ancestors(graph, root)
    realized: set[int] = set()
    contexts: dict[int, set[Context]] = defaultdict(set)
    for root in roots:
        contexts[root].add(())
    for node_id in reversed(list(nx.topological_sort(graph.subgraph(needed)))):
        node = node_of(graph, node_id)
        if node.op in ("read", "const"):
            continue
        seen = contexts[node_id]
        if node.op != "view" and len(seen) > MAX_CONTEXTS:
            realized.add(node_id)
            seen = {()}
        for context in seen:
            for source, source_context in input_contexts(node, context):
                contexts[source].add(source_context)
    return realized


def walk(graph: nx.DiGraph, outputs: list[int], realized: set[int]) -> dict[int, set[Context]]:
    """Every node a kernel with these outputs touches, with the index maps it is evaluated or loaded at.

    The walk stops at parameter reads, constants and realized nodes (other than the outputs),
    which the kernel loads rather than computes.
    """
    contexts: dict[int, set[Context]] = defaultdict(set)
    stack = [(output, ()) for output in outputs]
    top = set(outputs)
    while stack:
        node_id, context = stack.pop()
        if context in contexts[node_id]:
            continue
        contexts[node_id].add(context)
        if node_id in realized and not (node_id in top and context == ()):
            continue
        stack.extend(input_contexts(node_of(graph, node_id), context))
    return contexts


def levels(graph: nx.DiGraph, outputs: set[int], realized: set[int]) -> dict[int, int]:
    """Dispatch level of each output: one more than the deepest realized node it loads."""
    level: dict[int, int] = {}
    for node_id in nx.topological_sort(graph.subgraph(set(outputs).union(*(nx.ancestors(graph, o) for o in outputs)))):
        if node_id not in outputs:
            continue
        loaded = [n for n in walk(graph, [node_id], realized) if n in realized and n != node_id]
        level[node_id] = 1 + max((level[n] for n in loaded), default=-1)
    return level


def group(graph: nx.DiGraph, outputs: set[int], realized: set[int]) -> list[tuple[int, list[int]]]:
    """Outputs grouped into kernels: same level and same element count share a dispatch."""
    level = levels(graph, outputs, realized)
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for node_id in sorted(outputs):
        groups[(level[node_id], numel(node_of(graph, node_id).shape))].append(node_id)
    return [(lvl, nodes) for (lvl, _), nodes in sorted(groups.items())]
