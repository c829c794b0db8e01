"""Turn a graph and its parameter writes into a Schedule: kernels, buffers and slot reuse."""

from __future__ import annotations

import networkx as nx

from descent.graph.parameter import Parameter
from descent.graph.view import numel
from descent.schedule.fuse import group, is_buffer, node_of, realize, walk
from descent.schedule.kernel import Buffer, Copy, Kernel, Schedule


def parameter_buffer(parameter: Parameter) -> Buffer:
    return Buffer(f"param:{parameter.name}", parameter.dtype, parameter.size, parameter=parameter.name)


def schedule(graph: nx.DiGraph, writes: dict[str, tuple[Parameter, int]]) -> Schedule:
    """Fuse the graph into kernels that compute every parameter write, reads seeing old values."""
    writes = {name: (p, node) for name, (p, node) in writes.items() if p.size > 0}
    roots = sorted({node for _, node in writes.values()})
    realized = realize(graph, roots)
    outputs = set(roots) | realized
    grouped = group(graph, outputs, realized)

    buffers: dict[str, Buffer] = {}
    loads_of: dict[int, str] = {}
    for node_id in graph.nodes:
        node = node_of(graph, node_id)
        if is_buffer(node):
            buffer = parameter_buffer(node.attrs)
            buffers[buffer.name] = buffer
            loads_of[node_id] = buffer.name
    for node_id in sorted(realized):
        node = node_of(graph, node_id)
        buffers[f"tmp{node_id}"] = Buffer(f"tmp{node_id}", node.dtype, numel(node.shape))
        loads_of[node_id] = f"tmp{node_id}"

    walks = [walk(graph, nodes, realized) for _, nodes in grouped]
    kernel_of = {node_id: k for k, (_, nodes) in enumerate(grouped) for node_id in nodes}
    read_nodes = {node_of(graph, n).attrs.name: n for n in graph.nodes if is_buffer(node_of(graph, n))}

    stores: dict[int, list[tuple[int, str]]] = {k: [] for k in range(len(grouped))}
    for node_id in sorted(realized):
        stores[kernel_of[node_id]].append((node_id, f"tmp{node_id}"))
    copies = []
    for name, (parameter, node_id) in sorted(writes.items()):
        k = kernel_of[node_id]
        target = parameter_buffer(parameter)
        buffers[target.name] = target
        if _direct_write_is_safe(read_nodes.get(name), k, grouped, walks):
            stores[k].append((node_id, target.name))
        else:
            staging = Buffer(f"staged:{name}", parameter.dtype, parameter.size)
            buffers[staging.name] = staging
            stores[k].append((node_id, staging.name))
            copies.append(Copy(staging.name, target.name))

    kernels = []
    for k, (_, nodes) in enumerate(grouped):
        touched = walks[k]
        loads = {n: loads_of[n] for n in touched if n in loads_of and not (n in nodes and n in realized)}
        size = numel(node_of(graph, nodes[0]).shape)
        kernels.append(Kernel(f"kernel{k}", size, tuple(stores[k]), loads))
    buffers, slots = _assign_slots(kernels, buffers, copies)
    return Schedule(tuple(kernels), buffers, slots, tuple(copies))


def _direct_write_is_safe(read_node: int | None, k: int, grouped, walks) -> bool:
    """A kernel may overwrite a parameter in place only if every other read of it happened earlier,
    and its own reads are at each thread's own index."""
    if read_node is None:
        return True
    for other, touched in enumerate(walks):
        if read_node not in touched:
            continue
        if other == k:
            if touched[read_node] != {()}:
                return False
        elif grouped[other][0] >= grouped[k][0]:
            return False
    return True


def _assign_slots(kernels: list[Kernel], buffers: dict[str, Buffer], copies: list[Copy]):
    """Give temporaries physical slots, reusing a slot once its last reader has run."""
    last_use: dict[str, int] = {}
    for k, kernel in enumerate(kernels):
        for name in kernel.loads.values():
            last_use[name] = k
    for copy in copies:
        last_use[copy.source] = len(kernels)
    slots: list[int] = []
    free: list[int] = []
    live: dict[str, int] = {}
    assigned = dict(buffers)
    for k, kernel in enumerate(kernels):
        for name, slot in list(live.items()):
            if last_use.get(name, -1) < k:
                free.append(slot)
                del live[name]
        for _, name in kernel.outputs:
            buffer = buffers[name]
            if buffer.parameter is not None:
                continue
            fits = [s for s in free if slots[s] >= buffer.nbytes]
            if fits:
                slot = min(fits, key=lambda s: slots[s])
                free.remove(slot)
            else:
                slot = len(slots)
                slots.append(buffer.nbytes)
            live[name] = slot
            assigned[name] = Buffer(buffer.name, buffer.dtype, buffer.size, None, slot)
    return assigned, tuple(slots)
