"""Turn a graph and its parameter writes into a Schedule: kernels, buffers and slot reuse."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from itertools import groupby

import networkx as nx

from descent.graph.parameter import Parameter
from descent.graph.view import numel
from descent.schedule.fuse import HEAVY, is_buffer, levels, node_of, operand_contexts, realize, split_point, walk
from descent.schedule.kernel import Buffer, Copy, Kernel, Schedule


def parameter_buffer(parameter: Parameter) -> Buffer:
    return Buffer(f"param:{parameter.name}", parameter.dtype, parameter.size, parameter=parameter.name)


@dataclass
class _Draft:
    """A kernel while the plan is made: outputs to compute, and the core if any."""

    level: int
    size: int
    computed: list[int]
    core: int | None = None
    stores: list[tuple[int, str]] = field(default_factory=list)
    values: list[int] = field(default_factory=list)  # see Kernel.values


def schedule(graph: nx.DiGraph, writes: dict[str, tuple[Parameter, int]], computed_operands: bool = False,
             max_grouped: int | None = None, split: frozenset[int] = frozenset()) -> Schedule:
    """Fuse the graph into kernels that compute every parameter write, reads seeing old values; the
    kernels of a level run in whichever order needs fewer bytes of temporaries (`_order_for_memory`).
    `computed_operands`: give computed matmul operands a buffer (see `realize`). `max_grouped`: at
    most this many outputs share an elementwise kernel (each binds buffers, and devices limit them).
    `split`: nodes to compute into buffers of their own (`kernel_split_point`)."""
    writes = {name: (p, node) for name, (p, node) in writes.items() if p.size > 0}
    roots = sorted({node for _, node in writes.values()})
    realized = realize(graph, roots, computed_operands, split)
    drafts = _merge_epilogues(graph, _drafts(graph, set(roots) | realized, realized, max_grouped), set(roots), realized)
    drafts = _merge_arg_reductions(graph, drafts, realized)
    drafts.sort(key=lambda d: d.level)

    buffers: dict[str, Buffer] = {}
    loads_of: dict[int, str] = {}
    read_nodes: dict[str, int] = {}
    for node_id in graph.nodes:
        node = node_of(graph, node_id)
        if is_buffer(node):
            buffer = parameter_buffer(node.attrs)
            buffers[buffer.name] = buffer
            loads_of[node_id] = buffer.name
            read_nodes[node.attrs.name] = node_id
    computed_in = {n: k for k, d in enumerate(drafts) for n in d.computed}
    temporaries = {node_id: f"tmp{node_id}" for node_id in sorted(realized) if node_id in computed_in}
    loads_of.update(temporaries)

    out_walks, operand_walks, loads = [], [], []
    for draft in drafts:
        out_walks.append(walk(graph, [(n, ()) for n in draft.computed], set(draft.computed), realized))
        starts = operand_contexts(graph, node_of(graph, draft.core)) if draft.core is not None else []
        operand_walks.append(walk(graph, starts, set(), realized))
        touched = set(out_walks[-1]) | set(operand_walks[-1])
        own = set(draft.computed) | set(draft.values) | ({draft.core} if draft.core is not None else set())
        loads.append({n: loads_of[n] for n in sorted(touched) if n in loads_of and not (n in own and n in realized)})
    read = {name for kernel_loads in loads for name in kernel_loads.values()}
    for node_id, name in temporaries.items():
        if name in read:  # a realized result only written to a parameter needs no buffer of its own
            node = node_of(graph, node_id)
            buffers[name] = Buffer(name, node.dtype, numel(node.shape))
            drafts[computed_in[node_id]].stores.append((node_id, name))

    copies = []
    for name, (parameter, node_id) in sorted(writes.items()):
        k = computed_in[node_id]
        target = parameter_buffer(parameter)
        buffers[target.name] = target
        if _in_place_is_safe(read_nodes.get(name), k, drafts, out_walks, operand_walks):
            drafts[k].stores.append((node_id, target.name))
        else:
            staging = Buffer(f"staged:{name}", parameter.dtype, parameter.size)
            buffers[staging.name] = staging
            drafts[k].stores.append((node_id, staging.name))
            copies.append(Copy(staging.name, target.name))

    kernels = [Kernel(f"kernel{k}", draft.size, tuple(draft.stores), loads[k], draft.core, draft.level,
                      tuple(draft.values))
               for k, draft in enumerate(drafts)]
    assert all(kernel.outputs for kernel in kernels), "every kernel stores a parameter or a temporary read later"
    plans = [(order, *_assign_slots(order, buffers, copies))
             for order in (kernels, _order_for_memory(kernels, buffers, copies))]
    kernels, buffers, slots = min(plans, key=lambda plan: sum(plan[2]))
    return Schedule(tuple(kernels), buffers, slots, tuple(copies))


def kernel_split_point(graph: nx.DiGraph, kernel: Kernel) -> int | None:
    """A node `kernel` computes inline that, scheduled with a buffer of its own, takes about half of
    the kernel's loads to another kernel (for devices that bind few buffers); None if none would."""
    starts = [(node_id, ()) for node_id, _ in kernel.outputs]
    if kernel.core is not None:
        starts += operand_contexts(graph, node_of(graph, kernel.core))
    return split_point(graph, starts, {node_id for node_id, _ in kernel.outputs}, kernel.loads)


def _drafts(graph: nx.DiGraph, outputs: set[int], realized: set[int], max_grouped: int | None) -> list[_Draft]:
    """One kernel per heavy node; other outputs share a kernel per (level, element count), at most
    `max_grouped` a kernel."""
    level = levels(graph, outputs, realized)
    drafts = []
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for node_id in sorted(outputs):
        node = node_of(graph, node_id)
        if node.op in HEAVY:
            drafts.append(_Draft(level[node_id], numel(node.shape), [node_id], core=node_id))
        else:
            groups[(level[node_id], numel(node.shape))].append(node_id)
    for (lvl, size), nodes in sorted(groups.items()):
        step = max_grouped or len(nodes)
        drafts += [_Draft(lvl, size, nodes[start:start + step]) for start in range(0, len(nodes), step)]
    return drafts


def _merge_epilogues(graph: nx.DiGraph, drafts: list[_Draft], roots: set[int], realized: set[int]) -> list[_Draft]:
    """Fold an elementwise kernel into the heavy kernel whose result it reads element for element.
    Where later kernels or a parameter write need that result too, the heavy kernel still stores it:
    one kernel fewer, and the result is not loaded back."""
    consumers = _consumers(graph, drafts, realized)
    merged: set[int] = set()
    for draft in drafts:
        core = draft.core
        if core is None or node_of(graph, core).op == "scatter_add":
            continue
        fitting = [k for k, own_index in consumers[core]
                   if own_index and k not in merged and drafts[k].size == draft.size]
        if not fitting:
            continue
        epilogue = drafts[fitting[0]]
        others = [drafts[k] for k, _ in consumers[core] if k != fitting[0]]
        if any(other.level <= epilogue.level for other in others):
            continue
        keep = core in roots or bool(others)
        draft.computed = ([core] if keep else []) + list(epilogue.computed)
        draft.level = epilogue.level
        merged.add(fitting[0])
    return [d for k, d in enumerate(drafts) if k not in merged]


def _consumers(graph: nx.DiGraph, drafts: list[_Draft], realized: set[int]) -> dict[int, list[tuple[int, bool]]]:
    """For each realized node, the drafts that load it and whether each reads it at its own index only."""
    consumers: dict[int, list[tuple[int, bool]]] = defaultdict(list)
    for k, draft in enumerate(drafts):
        if draft.core is not None:
            operands = walk(graph, operand_contexts(graph, node_of(graph, draft.core)), set(), realized)
            for node_id in operands:
                if node_id in realized:
                    consumers[node_id].append((k, False))
        starts = [n for n in draft.computed if n != draft.core]
        touched = walk(graph, [(n, ()) for n in starts], set(starts), realized)
        for node_id, chains in touched.items():
            if node_id in realized and node_id not in draft.computed and node_id != draft.core:
                consumers[node_id].append((k, chains == {()}))
    return consumers


def _merge_arg_reductions(graph: nx.DiGraph, drafts: list[_Draft], realized: set[int]) -> list[_Draft]:
    """Give a max (min) reduction to the kernel of an argmax (argmin) of the same elements, whose
    accumulator holds the value as well as its position: the elements are read once (max pooling's
    value and the position its gradient goes to)."""
    arg_of: dict[tuple, int] = {}
    for k, draft in enumerate(drafts):
        core = node_of(graph, draft.core) if draft.core is not None else None
        if core is not None and core.op == "reduce" and core.attrs["op"] in ("argmax", "argmin"):
            arg_of.setdefault((core.inputs[0], core.attrs["axes"], core.attrs["op"][3:]), k)
    if not arg_of:
        return drafts
    consumers = _consumers(graph, drafts, realized)
    merged: set[int] = set()
    for k, draft in enumerate(drafts):
        core = node_of(graph, draft.core) if draft.core is not None else None
        if core is None or core.op != "reduce":
            continue
        target = arg_of.get((core.inputs[0], core.attrs["axes"], core.attrs["op"]))
        if target is None or drafts[target].values:
            continue
        arg = drafts[target]
        level = max(draft.level, arg.level)
        made = {draft.core, arg.core, *draft.computed, *arg.computed}
        reads = [(reader, own_index) for node_id in made for reader, own_index in consumers[node_id]]
        if any(reader in (k, target) and not own_index for reader, own_index in reads):
            continue  # one of the two reads the other's result at other elements (overlapping windows)
        if any(drafts[reader].level <= level for reader, _ in reads if reader not in (k, target)):
            continue
        arg.computed = list(dict.fromkeys(arg.computed + draft.computed))
        arg.values = [draft.core]
        arg.level = level
        merged.add(k)
    return [d for k, d in enumerate(drafts) if k not in merged]


def _in_place_is_safe(read_node: int | None, k: int, drafts: list[_Draft], out_walks, operand_walks) -> bool:
    """A kernel may overwrite a parameter in place only if every other read of it happened at an
    earlier level, and its own reads are at each thread's own index."""
    if read_node is None:
        return True
    for other in range(len(drafts)):
        if read_node not in out_walks[other] and read_node not in operand_walks[other]:
            continue
        if other == k:
            if read_node in operand_walks[k] or out_walks[k][read_node] != {()}:
                return False
        elif drafts[other].level >= drafts[k].level:
            return False
    return True


def _order_for_memory(kernels: list[Kernel], buffers: dict[str, Buffer], copies: list[Copy]) -> list[Kernel]:
    """Within each level (its kernels are independent of each other) run first the kernel that frees
    the most temporary bytes net of those it adds, so that later outputs can reuse the freed slots.
    A greedy order: `schedule` keeps it only where its slots take fewer bytes."""
    readers = Counter(name for kernel in kernels for name in set(kernel.loads.values()))
    readers.update(copy.source for copy in copies)

    def temporary(name: str) -> int:
        return buffers[name].nbytes if buffers[name].parameter is None else 0

    def growth(kernel: Kernel) -> int:
        freed = sum(temporary(name) for name in set(kernel.loads.values()) if readers[name] == 1)
        return sum(temporary(name) for _, name in kernel.outputs) - freed

    ordered = []
    for _, group in groupby(kernels, key=lambda kernel: kernel.level):
        pending = list(group)
        while pending:
            chosen = min(pending, key=growth)
            pending.remove(chosen)
            readers.subtract(set(chosen.loads.values()))
            ordered.append(chosen)
    return [replace(kernel, name=f"kernel{k}") for k, kernel in enumerate(ordered)]


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
            if buffer.parameter is not None or name in live:
                continue
            staged = name.startswith("staged:")  # copied whole into its parameter: needs its exact size
            fits = [s for s in free if slots[s] == buffer.nbytes or (slots[s] > buffer.nbytes and not staged)]
            if fits:
                slot = min(fits, key=lambda s: slots[s])
                free.remove(slot)
            else:
                slot = len(slots)
                slots.append(buffer.nbytes)
            live[name] = slot
            assigned[name] = Buffer(buffer.name, buffer.dtype, buffer.size, None, slot)
    return assigned, tuple(slots)
