"""scatter_add: atomic compare-and-swap adds into a zeroed output, or, deterministic, an output a thread."""

from __future__ import annotations

import math

import networkx as nx

from descent.codegen.builder import DeviceShape, KernelBuilder, KernelSource, grid, require_loops
from descent.graph.dtype import float32, int32
from descent.schedule.fuse import node_of
from descent.schedule.kernel import Buffer, Kernel


def scatter_add(graph: nx.DiGraph, kernel: Kernel, buffers: dict[str, Buffer], core,
                 device: DeviceShape) -> list[KernelSource]:
    """Sums of values into an output at indices along an axis: with atomics, a kernel zeroing the
    output and one adding each value; deterministic, one kernel summing each output's values itself."""
    values, indices = core.inputs
    axis = core.attrs["axis"]
    extent = core.shape[axis]
    inner = math.prod(core.shape[axis + 1 :])
    value_count = math.prod(node_of(graph, values).shape)
    deterministic = device.deterministic
    parts = KernelBuilder(graph, kernel, buffers, atomic=not deterministic, texel_elements=device.texel_elements)
    functions = parts.load_function("load_values", values, (), float32, (("index", value_count),))
    functions += "\n" + parts.load_function("load_index", indices, (), int32,
                                           (("index", math.prod(node_of(graph, indices).shape)),))
    sources = []
    if deterministic:
        functions += "\n" + parts.store_function("float acc", {kernel.core: "acc"})
        threads = kernel.size
    else:
        functions += "\n" + _accumulate_function(parts)
        threads = value_count
        zero = KernelBuilder(graph, Kernel(kernel.name + "_zero", kernel.size, kernel.outputs, {}), buffers)
        body = "\n".join(f"    {zero.table[name][0]}[i] = 0.0;" for name in zero.stored)
        sources.append(zero.fill("elementwise", grid(-(-kernel.size // device.local_size), device.max_groups),
                                 SIZE=kernel.size, LOCAL_SIZE=device.local_size, BODY=body))
    parts.ops.append("scatter_add")
    parts.locations.append(core.location)
    if deterministic:
        per_index = 1 + parts.call_trips["load_index"] + parts.call_trips["load_values"]
        require_loops(parts, f"a deterministic scatter_add of {core.attrs['count']} indices",
                       core.attrs["count"] * per_index + parts.call_trips["store_output"], device)
    workgroups = grid(-(-threads // device.local_size), device.max_groups)
    sources.append(parts.fill("scatter_add", workgroups, VALUES=value_count, SIZE=kernel.size, EXTENT=extent,
                              COUNT=core.attrs["count"], INNER=inner, DETERMINISTIC=int(deterministic),
                              LOCAL_SIZE=device.local_size, FUNCTIONS=functions))
    return sources


def _accumulate_function(parts: KernelBuilder) -> str:
    """Atomically add a float to each output buffer (declared uint) with a compare-and-swap loop."""
    body = ""
    for name in parts.stored:
        buffer = parts.table[name][0]
        body += (f"    uint expected_{buffer} = {buffer}[target];\n"
                 f"    while (true) {{\n"
                 f"        uint sum = floatBitsToUint(uintBitsToFloat(expected_{buffer}) + value);\n"
                 f"        uint previous = atomicCompSwap({buffer}[target], expected_{buffer}, sum);\n"
                 f"        if (previous == expected_{buffer}) {{\n"
                 f"            break;\n"
                 f"        }}\n"
                 f"        expected_{buffer} = previous;\n"
                 f"    }}\n")
    return f"void accumulate(int target, float value) {{\n{body}}}\n"
