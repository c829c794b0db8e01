"""GLSL for each kernel, from the template of its kind: elementwise, reduce, scatter_add, matmul, or
on a CPU driver a direct convolution (one module each)."""

from __future__ import annotations

import networkx as nx

from descent.codegen.builder import DeviceShape, KernelBuilder, KernelSource
from descent.codegen.conv import conv_direct, conv_tile
from descent.codegen.elementwise import elementwise
from descent.codegen.matmul import matmul
from descent.codegen.reduce import reduce
from descent.codegen.scatter import scatter_add
from descent.graph.node import ConvWindows
from descent.schedule.fuse import node_of, operand_contexts
from descent.schedule.kernel import Buffer, Kernel


def generate(graph: nx.DiGraph, kernel: Kernel, buffers: dict[str, Buffer],
             device: DeviceShape) -> list[KernelSource]:
    """The GLSL sources of a kernel (one dispatch each) and how to bind and dispatch them."""
    core = None if kernel.core is None else node_of(graph, kernel.core)
    if core is not None and core.op == "scatter_add":  # builds its kernels' parts itself (atomics change them)
        return scatter_add(graph, kernel, buffers, core, device)
    parts = KernelBuilder(graph, kernel, buffers, texel_elements=device.texel_elements)
    if core is None:
        return [elementwise(parts, device)]
    if core.op == "reduce":
        return [reduce(parts, core, device)]
    operands = operand_contexts(graph, core)
    if device.cpu and isinstance(core.attrs, ConvWindows) and (tile := conv_tile(parts, core, operands, device)):
        return [conv_direct(parts, core, operands, device, tile)]
    return [matmul(parts, core, operands, device)]
