"""GLSL for one fused elementwise kernel: named temporaries, one statement a line."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import networkx as nx
import numpy as np

from descent.graph.dtype import DType, bool_, float32, uint32
from descent.graph.optable import ELEMENTWISE
from descent.graph.view import View, ViewChain, contiguous_strides
from descent.schedule.fuse import Context, input_contexts, node_of
from descent.schedule.kernel import Buffer, Kernel


@dataclass(frozen=True)
class KernelSource:
    """A kernel's GLSL, the logical buffers bound at bindings 0..n-1, and its workgroup grid."""

    name: str
    glsl: str
    bindings: tuple[str, ...]
    workgroups: tuple[int, int, int]
    locations: tuple[str, ...]  # user lines of the ops fused into it
    ops: tuple[str, ...]  # the computed ops, one per GLSL statement


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
        return f"({text})" if number < 0 or text.startswith("-") else text
    return f"({int(value)})" if int(value) < 0 else str(int(value))


def identifier(name: str) -> str:
    return re.sub(r"\W", "_", name)


def index_expression(chain: ViewChain, flat: str) -> str:
    """The source flat index of the element at `flat` after the view chain is applied."""
    for view in reversed(chain):
        flat = _view_index(view, flat)
    return flat


def _view_index(view: View, flat: str) -> str:
    base = flat if flat.isidentifier() else f"({flat})"
    terms = []
    for axis, (size, stride, step) in enumerate(zip(view.shape, view.strides, contiguous_strides(view.shape))):
        if size == 1 or stride == 0:
            continue
        coordinate = base if step == 1 else f"{base} / {step}"
        if axis > 0:
            coordinate = f"{coordinate} % {size}"
        terms.append(coordinate if stride == 1 else f"({coordinate}) * {stride if stride > 0 else f'({stride})'}")
    if view.offset or not terms:
        terms.append(str(view.offset))
    return " + ".join(terms)


class _Emitter:
    """Emits the statements of one kernel body, evaluating each (node, context) once."""

    def __init__(self, graph: nx.DiGraph, kernel: Kernel, buffer_names: dict[str, str]) -> None:
        self.graph = graph
        self.kernel = kernel
        self.buffer_names = buffer_names
        self.lines: list[str] = []
        self.values: dict[tuple[int, Context], str] = {}
        self.indices: dict[str, str] = {"i": "i"}
        self.context_ids: dict[int, dict[Context, int]] = {}
        self.helpers: dict[str, str] = {}
        self.locations: list[str] = []
        self.ops: list[str] = []

    def name(self, node_id: int, context: Context, stem: str) -> str:
        numbering = self.context_ids.setdefault(node_id, {})
        number = numbering.setdefault(context, len(numbering))
        return f"{stem}_{node_id}" if number == 0 else f"{stem}_{node_id}_{number}"

    def index(self, chain: ViewChain) -> str:
        expression = index_expression(chain, "i")
        if expression not in self.indices:
            variable = f"index_{len(self.indices)}"
            self.lines.append(f"int {variable} = {expression};")
            self.indices[expression] = variable
        return self.indices[expression]

    def load(self, node_id: int, context: Context, buffer: str) -> str:
        node = node_of(self.graph, node_id)
        variable = self.name(node_id, context, self.buffer_names[buffer])
        element = f"{self.buffer_names[buffer]}[{self.index(context)}]"
        if node.dtype == bool_:
            element = f"{element} != 0u"
        self.lines.append(f"{node.dtype.glsl} {variable} = {element};")
        return variable

    def value(self, node_id: int, context: Context) -> str:
        key = (node_id, context)
        if key in self.values:
            return self.values[key]
        node = node_of(self.graph, node_id)
        if node.op == "const":
            return literal(node.attrs, node.dtype)
        if node_id in self.kernel.loads:
            result = self.load(node_id, context, self.kernel.loads[node_id])
        elif node.op == "view":
            ((source, source_context),) = input_contexts(node, context)
            result = self.value(source, source_context)
        else:
            operands = [self.value(s, c) for s, c in input_contexts(node, context)]
            if node.op == "cast":
                expression = f"{node.dtype.glsl}({operands[0]})"
            else:
                definition = ELEMENTWISE[node.op]
                if definition.helper:
                    self.helpers[node.op] = definition.helper
                expression = definition.glsl.format(*operands)
            result = self.name(node_id, context, node.op)
            self.lines.append(f"{node.dtype.glsl} {result} = {expression};")
            self.locations.append(node.location)
            self.ops.append(node.op)
        self.values[key] = result
        return result


def generate(graph: nx.DiGraph, kernel: Kernel, buffers: dict[str, Buffer], local_size: int,
             max_groups: int) -> KernelSource:
    """The GLSL source of a fused elementwise kernel and how to bind and dispatch it."""
    stored = [name for _, name in kernel.outputs]
    loaded = sorted(set(kernel.loads.values()))
    bindings = tuple(loaded + [name for name in dict.fromkeys(stored) if name not in loaded])
    buffer_names = {name: identifier(name.replace("param:", "").replace("staged:", "staged_")) for name in bindings}
    emitter = _Emitter(graph, kernel, buffer_names)
    results = [(emitter.value(node_id, ()), node_id, name) for node_id, name in kernel.outputs]

    declarations = []
    for binding, name in enumerate(bindings):
        access = "readonly " if name not in stored else "" if name in loaded else "writeonly "
        storage = buffers[name].dtype.storage_glsl
        block = f"Buffer{binding}"
        declarations.append(
            f"layout(std430, binding = {binding}) {access}buffer {block} {{ {storage} {buffer_names[name]}[]; }};"
        )
    stores = []
    for value, node_id, name in results:
        dtype = node_of(graph, node_id).dtype
        stored_value = f"uint({value})" if dtype == bool_ else value
        stores.append(f"{buffer_names[name]}[i] = {stored_value};")

    groups = max(1, -(-kernel.size // local_size))
    rows = -(-groups // max_groups)
    workgroups = (-(-groups // rows), rows, 1)
    body = "\n".join("    " + line for line in emitter.lines + stores)
    helpers = "".join(helper + "\n\n" for helper in emitter.helpers.values())
    glsl = f"""#version 450
// {kernel.name}: {kernel.size} elements, outputs {", ".join(stored)}
layout(local_size_x = {local_size}) in;

{chr(10).join(declarations)}

{helpers}void main() {{
    int i = int((gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x) * {local_size}u + gl_LocalInvocationID.x);
    if (i >= {kernel.size}) {{
        return;
    }}
{body}
}}
"""
    return KernelSource(kernel.name, glsl, bindings, workgroups, tuple(dict.fromkeys(emitter.locations)),
                        tuple(emitter.ops))
