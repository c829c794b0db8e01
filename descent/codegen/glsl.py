"""GLSL for each kernel: a hand-written template from shaders/ filled with generated functions.

Fused work becomes small functions the templates call: `load_*` evaluates an operand at a flat
index, `store_output` evaluates a kernel's outputs from its core value and stores them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from string import Template

import networkx as nx

from descent.codegen.emitter import Emitter, identifier, literal, without_unread_indices
from descent.codegen.index import Index, Var, render, split_aligned, variable
from descent.errors import DeviceError
from descent.graph.dtype import DType, bool_, float32, int32
from descent.graph.node import ConvWindows
from descent.graph.view import View, is_masked, numel, simplify
from descent.schedule.fuse import input_contexts, node_of, operand_contexts, reduce_layout
from descent.schedule.kernel import Buffer, Kernel

_PACKAGE = Path(__file__).resolve().parents[1]
# descent/shaders once installed from a wheel, the top-level shaders/ in the source tree
SHADERS = _PACKAGE / "shaders" if (_PACKAGE / "shaders").is_dir() else _PACKAGE.parent / "shaders"
SERIAL_REDUCTION = 32  # reductions at most this long are folded by one thread each
CPU_SERIAL_OUTPUTS = 64  # on a CPU driver, where a barrier switches every SIMD batch of the workgroup
# in and out, this many outputs keep every core busy folding one output per thread
LOOP_SLACK = 16  # loop iterations a kernel's short loops may add to its long one


@cache
def _template_names() -> frozenset[str]:
    """Every name the shader templates use (locals such as `q` and `lane`, functions, constants)."""
    return frozenset(name for path in SHADERS.glob("*.comp") for name in re.findall(r"[A-Za-z_]\w*", path.read_text()))


@dataclass(frozen=True)
class KernelSource:
    """A kernel's GLSL, the logical buffers bound at bindings 0..n-1, and its workgroup grid."""

    name: str
    glsl: str
    bindings: tuple[str, ...]
    workgroups: tuple[int, int, int]
    locations: tuple[str, ...]  # user lines of the ops fused into it
    ops: tuple[str, ...]  # the ops it computes, one per GLSL statement or core
    writes: tuple[str, ...]  # logical buffers it stores to
    texel_bindings: tuple[tuple[int, int], ...] = ()  # (binding, components) of uniform texel buffers


@dataclass(frozen=True)
class DeviceShape:
    """What codegen needs to know of the device."""

    local_size: int
    max_groups: int
    shared_memory: int
    deterministic: bool = False  # scatter_add without atomics
    cpu: bool = False  # a CPU driver (lavapipe): prefer kernels without shared memory and barriers
    texel_elements: int = 0  # read-only buffers up to this many elements are read as texel buffers
    subgroup_size: int = 32  # a CPU driver's SIMD width: the workgroup size of its matmul
    shuffle: bool = False  # subgroup shuffles, with a workgroup of subgroup_size being one subgroup
    loop_trips: int = 2**31 - 1  # loop iterations an invocation may run in all (lavapipe: 65535)
    max_local_size: int = 256  # the largest workgroup: more threads share a reduction too long for one's loops


@cache
def template(name: str) -> Template:
    """The hand-written GLSL template shaders/NAME.comp, read once."""
    return Template((SHADERS / f"{name}.comp").read_text())


def _grid(groups: int, max_groups: int) -> tuple[int, int, int]:
    groups = max(groups, 1)
    rows = -(-groups // max_groups)
    return (-(-groups // rows), rows, 1)


def _distinct(names: list[str]) -> list[str]:
    """The names, those given more than once numbered by position (`a_b_1`), never as another name
    already is: buffers "a b", "a_b" and "a_b_1" are `a_b_0`, `a_b_4` and `a_b_1`."""
    used = {name for name in names if names.count(name) == 1}
    distinct = []
    for position, name in enumerate(names):
        if names.count(name) > 1:
            number = position
            while f"{name}_{number}" in used:
                number += len(names)
            name = f"{name}_{number}"
            used.add(name)
        distinct.append(name)
    return distinct


class _Kernel:
    """Bindings, declarations and generated functions of one kernel under construction."""

    def __init__(self, graph: nx.DiGraph, kernel: Kernel, buffers: dict[str, Buffer], atomic: bool = False,
                 texel_elements: int = 0) -> None:
        self.graph = graph
        self.kernel = kernel
        self.stored = tuple(dict.fromkeys(name for _, name in kernel.outputs))
        loaded = sorted(set(kernel.loads.values()))
        texels = [name for name in loaded
                  if 0 < buffers[name].size <= texel_elements and not (atomic and name in self.stored)]
        in_place = [name for name in texels if name in self.stored]  # read as texels, written as storage
        storage = [name for name in loaded if name not in texels] + [name for name in self.stored if name not in loaded]
        self.bindings = tuple(texels + storage + in_place)
        self.texel_bindings = [(binding, 1) for binding in range(len(texels))]
        self.texel_elements = texel_elements
        unique = texels + storage
        names = _distinct([identifier(name, _template_names()) for name in unique])
        self.table = {name: (glsl_name, buffers[name].dtype, buffers[name].size)
                      for name, glsl_name in zip(unique, names)}
        self.texels = {}  # GLSL name of a buffer -> the texel buffer it is read through
        self.declarations = []
        sampler = {"float": "samplerBuffer", "int": "isamplerBuffer", "uint": "usamplerBuffer"}
        for binding, name in enumerate(texels):
            glsl_name, dtype, _ = self.table[name]
            texel_name = f"{glsl_name}_texels" if name in in_place else glsl_name
            self.texels[glsl_name] = texel_name
            self.declarations.append(f"layout(binding = {binding}) uniform {sampler[dtype.storage_glsl]} {texel_name};")
        self.storage_bindings = {name: binding for binding, name in enumerate(storage + in_place, start=len(texels))}
        for name, binding in self.storage_bindings.items():
            glsl_name, dtype, _ = self.table[name]
            access, kind = "", dtype.storage_glsl
            if atomic and name in self.stored:
                kind = "uint"  # compare-and-swap float adds read and write the bits as uint
            elif name not in self.stored:
                access = "readonly "
            elif name not in loaded or name in in_place:
                access = "writeonly "
            self.declarations.append(f"layout(std430, binding = {binding}) {access}buffer Buffer{binding} "
                                     f"{{ {kind} {glsl_name}[]; }};")
        self.aliases: dict[str, str] = {}  # vector views of buffers: storage at the same binding (read-only
        # for a loaded one, write-only for a stored one), texel at one of their own
        self.helpers: dict[str, str] = {}
        self.call_trips: dict[str, int] = {}  # generated function -> iterations its helpers' loops may run a call
        self.locations: list[str] = []
        self.ops: list[str] = []
        self.prologue = False  # the store function reads globals that prologue() sets

    def vector_texels(self, name: str) -> str | None:
        """The GLSL name of a vec4 texel-buffer view of a loaded float buffer (a binding of its own),
        None where it has none: a buffer not of whole vec4s, a device that reads no texel buffers, a
        buffer too large for one."""
        glsl_name, dtype, size = self.table[name]
        if dtype != float32 or size % 4 or not 0 < size // 4 <= self.texel_elements:
            return None
        view = f"{glsl_name}_vec4"
        if view not in self.aliases:
            binding = len(self.bindings)
            self.bindings += (name,)
            self.texel_bindings.append((binding, 4))
            self.aliases[view] = f"layout(binding = {binding}) uniform samplerBuffer {view};"
        return view

    def vector_view(self, name: str, vector: str, access: str = "readonly") -> str:
        """The GLSL name of a `vector` view of a storage buffer (the same binding, declared again),
        read-only or, for a stored buffer, write-only."""
        binding = self.storage_bindings[name]
        suffix = vector if access == "readonly" else f"{vector}_out"
        view = f"{self.table[name][0]}_{suffix}"
        self.aliases[view] = (f"layout(std430, binding = {binding}) {access} buffer Buffer{binding}_{suffix} "
                              f"{{ {vector} {view}[]; }};")
        return view

    def emitter(self, base: Index, special: dict[tuple[int, tuple], str] | None = None, hoist: bool = False,
                quads: bool = False) -> Emitter:
        return Emitter(self.graph, self.kernel.loads, self.table, base, special, texels=self.texels, hoist=hoist,
                       quads=self.vector_texels if quads else None)

    def absorb(self, emitter: Emitter) -> None:
        self.helpers.update(emitter.helpers)
        self.locations += emitter.locations
        self.ops += emitter.ops

    def store_lines(self, emitter: Emitter) -> list[str]:
        """Evaluate every output at the emitter's base index and store it there."""
        values = [(emitter.value(node_id), node_id, name) for node_id, name in self.kernel.outputs]
        lines = []
        for value, node_id, name in values:
            lines.append(f"{self.table[name][0]}[{emitter.base}] = {self.storage_value(node_id, value)};")
        return lines

    def storage_value(self, node_id: int, value: str) -> str:
        """A node's value as its buffer holds it (bools as uint)."""
        return f"uint({value})" if node_of(self.graph, node_id).dtype == bool_ else value

    def quad_lines(self, special: dict[int, list[str]] | None = None, hoist: bool = False) -> tuple[list[str], Emitter]:
        """Statements computing and storing every output at the four elements 4q .. 4q + 3 (a GLSL
        int q): loads at 4 * (something) + e and loads the four share are fetched once, float
        outputs are stored as one vec4. `special` gives a node's value at each of the four."""
        quads = self.kernel.size // 4
        # simplified as input_contexts builds chains: with one quad, lane 0's view is the identity
        lanes = [simplify((View((quads,), (4,), e),)) for e in range(4)]
        given = {(node_id, lane): value for node_id, values in (special or {}).items()
                 for lane, value in zip(lanes, values)}
        emitter = self.emitter(variable("q", quads), given, hoist, quads=True)
        values = {node_id: [emitter.value(node_id, lane) for lane in lanes] for node_id, _ in self.kernel.outputs}
        stores = []
        for node_id, name in self.kernel.outputs:
            if self.table[name][1] == float32 and node_of(self.graph, node_id).dtype == float32:
                stores.append(f"{self.vector_view(name, 'vec4', 'writeonly')}[q] = vec4({', '.join(values[node_id])});")
                continue
            stores += [f"{self.table[name][0]}[{emitter.index(lane)}] = {self.storage_value(node_id, value)};"
                       for lane, value in zip(lanes, values[node_id])]
        self.absorb(emitter)
        return emitter.lines + stores, emitter

    def load_function(self, name: str, node_id: int, chain, dtype: DType, axes: tuple[tuple[str, int], ...],
                      quads: bool = False) -> str:
        """`name(axes...)`: the node at `chain` from the row-major index of `axes` ((name, size) each),
        whose ranges simplify the index arithmetic. With `quads`, the node at the four elements
        4q .. 4q + 3 of that index, as a vector; loads the four share at an aligned index are one fetch."""
        emitter = self.emitter(_row_major(axes), quads=quads)
        chains, result = [chain], dtype.glsl
        if quads:
            count = numel(tuple(size for _, size in axes))
            chains, result = [simplify(chain + (View((count,), (4,), e),)) for e in range(4)], _VECTORS[dtype.glsl]
        values = [emitter.value(node_id, element) for element in chains]
        self.absorb(emitter)
        self.call_trips[name] = emitter.loop_trips
        parameters = ", ".join(f"int {axis}" for axis, _ in axes)
        return _function(f"{result} {name}({parameters})", [*emitter.lines, f"return {result}({', '.join(values)});"])

    def store_function(self, parameters: str, special: dict[int, str], hoist: bool = False) -> str:
        """`store_output(i, parameters)`. With `hoist`, for templates whose threads store many
        elements, values the same at every element (an optimiser's bias corrections, say) are
        globals that `prologue()` computes once; the template calls it where PROLOGUE stands."""
        given = {(node_id, ()): value for node_id, value in special.items()}
        emitter = self.emitter(variable("i", self.kernel.size), given, hoist)
        stores = self.store_lines(emitter)
        self.absorb(emitter)
        self.call_trips["store_output"] = emitter.loop_trips
        return self.prologue_function(emitter) + _function(f"void store_output(int i, {parameters})",
                                                           emitter.lines + stores)

    def prologue_function(self, emitter: Emitter) -> str:
        """The globals an emitter hoisted and `prologue()` computing them; empty where it hoisted none."""
        if not emitter.hoisted:
            return ""
        self.prologue = True
        globals_ = "".join(f"{glsl_type} {name};\n" for glsl_type, name, _ in emitter.hoisted)
        lines = [f"{name} = {expression};" for _, name, expression in emitter.hoisted]
        return f"{globals_}\n{_function('void prologue()', lines)}\n"

    def quad_store_function(self, core: int) -> str:
        """`store_quad(i, acc)`: the outputs at i .. i + 3 (i a multiple of 4) from the core values in
        `acc`, through `quad_lines` (on lavapipe a lane's fetch or store costs about the same for four
        floats as for one)."""
        lines, emitter = self.quad_lines({core: [f"acc[{e}]" for e in range(4)]}, hoist=True)
        self.call_trips["store_quad"] = emitter.loop_trips
        store = _function("void store_quad(int i, vec4 acc)", ["int q = i / 4;", *lines])
        return self.prologue_function(emitter) + store

    def fill(self, name: str, workgroups: tuple[int, int, int], **values) -> KernelSource:
        """The template `name` filled in, declaring only the buffers and views that its code names."""
        helpers = "".join(helper + "\n\n" for helper in self.helpers.values())

        def text(declarations: list[str]) -> str:
            return template(name).substitute(
                NAME=self.kernel.name, BUFFERS="\n".join(declarations), HELPERS=helpers,
                PROLOGUE="prologue();" if self.prologue else "", STORES=", ".join(self.stored), **values)

        code = text([])
        glsl = text([line for line in self.declarations + list(self.aliases.values())
                     if re.search(rf"\b{_declared_name(line)}\b", code)])
        glsl = "\n".join(line for line in glsl.split("\n") if line.strip() or not line)  # an empty PROLOGUE
        return KernelSource(self.kernel.name, glsl, self.bindings, workgroups,
                            tuple(dict.fromkeys(self.locations)), tuple(self.ops), self.stored,
                            tuple(self.texel_bindings))


def _declared_name(declaration: str) -> str:
    """The variable a buffer declaration names (`... name;` or `... { type name[]; };`)."""
    return re.search(r"(\w+)(?:\[\])?;(?: \};)?$", declaration)[1]


def _row_major(axes: tuple[tuple[str, int], ...]) -> Index:
    """The flat row-major index of variables (name, size) each, outermost first."""
    base = Index()
    for axis, size in axes:
        base = base * size + variable(axis, size)
    return base


def generate(graph: nx.DiGraph, kernel: Kernel, buffers: dict[str, Buffer],
             device: DeviceShape) -> list[KernelSource]:
    """The GLSL sources of a kernel (one dispatch each) and how to bind and dispatch them."""
    parts = _Kernel(graph, kernel, buffers, texel_elements=device.texel_elements)
    if kernel.core is None:
        return [_elementwise(parts, device)]
    core = node_of(graph, kernel.core)
    if core.op == "reduce":
        return [_reduce(parts, core, device)]
    if core.op == "scatter_add":
        return _scatter_add(graph, kernel, buffers, core, device)
    return [_matmul(parts, core, device)]


def _elementwise(parts: _Kernel, device: DeviceShape) -> KernelSource:
    kernel = parts.kernel
    if device.cpu and parts.texel_elements and kernel.size % 4 == 0:
        return _elementwise_quads(parts, device)
    emitter = parts.emitter(variable("i", kernel.size))
    stores = parts.store_lines(emitter)
    parts.absorb(emitter)
    body = _body(emitter.lines + stores)
    workgroups = _grid(-(-kernel.size // device.local_size), device.max_groups)
    return parts.fill("elementwise", workgroups, SIZE=kernel.size, LOCAL_SIZE=device.local_size, BODY=body)


def _elementwise_quads(parts: _Kernel, device: DeviceShape) -> KernelSource:
    """A CPU driver's elementwise kernel: four adjacent elements a thread (`quad_lines`), since a lane's
    vec4 fetch or store costs what a float's does."""
    quads = parts.kernel.size // 4
    lines, _ = parts.quad_lines()
    body = _body(lines)
    workgroups = _grid(-(-quads // device.local_size), device.max_groups)
    return parts.fill("elementwise_quads", workgroups, SIZE=parts.kernel.size, QUADS=quads,
                      LOCAL_SIZE=device.local_size, BODY=body)


def _combine(op: str, dtype: DType) -> str:
    """combine()'s body: merge `other` (found at other_position) into `value`. Float max, min and
    their args let NaN win, as numpy does."""
    if op in ("sum", "prod"):
        return f"value {'+' if op == 'sum' else '*'}= other;"
    if op == "logsumexp":
        return ("float top = isnan(value.x) || isnan(other.x) ? value.x + other.x : max(value.x, other.x);\n"
                "    float mine = value.x == top ? value.y : value.y * exp(value.x - top);\n"
                "    float theirs = other.x == top ? other.y : other.y * exp(other.x - top);\n"
                "    value = vec2(top, mine + theirs);")
    floats = dtype == float32
    if not op.startswith("arg"):
        fold = f"{op}(value, other)"
        return f"value = isnan(value) || isnan(other) ? value + other : {fold};" if floats else f"value = {fold};"
    better = ">" if op == "argmax" else "<"
    wins = f"other {better} value || (other == value && other_position < position)"
    if floats:
        wins = f"isnan(other) ? !isnan(value) || other_position < position : !isnan(value) && ({wins})"
    return f"if ({wins}) {{\n        value = other;\n        position = other_position;\n    }}"


def _identity(op: str, dtype: DType) -> str:
    if op == "sum":
        return literal(0, dtype)
    if op == "prod":
        return literal(1, dtype)
    if op == "logsumexp":
        return f"vec2({literal(float('-inf'), float32)}, 0.0)"
    lowest = op in ("max", "argmax")
    if dtype == float32:
        return literal(float("-inf") if lowest else float("inf"), dtype)
    if dtype == int32:
        return "(-2147483647 - 1)" if lowest else "2147483647"
    return "0u" if lowest else "4294967295u"


def _fits_loops(trips: int, device: DeviceShape) -> bool:
    """Whether an invocation whose long loop runs `trips` times stays within the driver's loop limit."""
    return trips + LOOP_SLACK <= device.loop_trips


def _require_loops(parts: _Kernel, what: str, trips: int, device: DeviceShape) -> None:
    """Refuse a kernel whose invocations would loop `trips` times where the driver ends them sooner."""
    if not _fits_loops(trips, device):
        raise DeviceError(f"{parts.kernel.name}: {what} needs {trips} loop iterations in one thread, and this "
                          f"device's driver ends a thread's loops after {device.loop_trips} (lavapipe's guard against "
                          f"endless loops); split it into shorter steps (ops from {', '.join(parts.locations[:3])})")


def _element_trips(parts: _Kernel, node_id: int, chain, axes: tuple[tuple[str, int], ...]) -> int:
    """Iterations the helpers' loops may run computing one element of `node_id` (a pow with an array
    exponent, say), which a driver's loop limit counts with the loop that goes over the elements."""
    emitter = parts.emitter(_row_major(axes))
    emitter.value(node_id, chain)
    return emitter.loop_trips


def _reduce(parts: _Kernel, core, device: DeviceShape) -> KernelSource:
    kernel = parts.kernel
    (source,) = core.inputs
    dtype = node_of(parts.graph, source).dtype
    outputs, reduced, chain = reduce_layout(core, node_of(parts.graph, source).shape)
    op = core.attrs["op"]
    accumulator, lift, finish = dtype.glsl, "x", "value"
    if op.startswith("arg"):
        finish = "position"
    elif op == "logsumexp":
        accumulator, lift, finish = "vec2", "vec2(x, 1.0)", "(value.x + log(value.y))"
    given = {kernel.core: finish} | {node_id: "value" for node_id in kernel.values}
    store = parts.store_function(f"{accumulator} value, int position", given)
    per_element = 1 + _element_trips(parts, source, chain, (("output_index", outputs), ("element", reduced)))

    def trips(threads: int) -> int:  # a thread's strided share of the elements, the tree's steps, the store
        return -(-reduced // threads) * per_element + (threads.bit_length() if threads > 1 else 0) + \
            parts.call_trips["store_output"]

    serial = (reduced <= SERIAL_REDUCTION or (device.cpu and outputs >= CPU_SERIAL_OUTPUTS)) and \
        _fits_loops(trips(1), device)
    quads = serial and device.cpu and bool(parts.texel_elements) and reduced % 4 == 0
    if quads:
        functions = parts.load_function("load_quad", source, chain, dtype,
                                        (("output_index", outputs), ("q", reduced // 4)), quads=True)
    else:
        functions = parts.load_function("load_input", source, chain, dtype,
                                        (("output_index", outputs), ("element", reduced)))
    functions += "\n" + store
    parts.ops += [f"{op}-reduce"] + [f"{op[3:]}-reduce" for _ in kernel.values]
    parts.locations.append(core.location)
    if serial:
        local = device.local_size
        workgroups = _grid(-(-outputs // local), device.max_groups)
    else:
        local = min(device.local_size, 1 << max(5, (reduced - 1).bit_length()))
        while not _fits_loops(trips(local), device) and 2 * local <= device.max_local_size:
            local *= 2
        workgroups = _grid(outputs, device.max_groups)
        _require_loops(parts, f"a {op} of {reduced} elements over {local} threads", trips(local), device)
    return parts.fill("reduce", workgroups, REDUCTION=" and ".join([op] + [op[3:]] * bool(kernel.values)),
                      REDUCED=reduced, OUTPUTS=outputs,
                      SERIAL=int(serial), QUADS=int(quads), LOCAL_SIZE=local, FUNCTIONS=functions,
                      TYPE=accumulator, INPUT=dtype.glsl, INPUT4=_VECTORS[dtype.glsl], LIFT=lift,
                      COMBINE=_combine(op, dtype), IDENTITY=_identity(op, dtype))


def _scatter_add(graph: nx.DiGraph, kernel: Kernel, buffers: dict[str, Buffer], core,
                 device: DeviceShape) -> list[KernelSource]:
    values, indices = core.inputs
    axis = core.attrs["axis"]
    extent = core.shape[axis]
    inner = math.prod(core.shape[axis + 1 :])
    value_count = math.prod(node_of(graph, values).shape)
    deterministic = device.deterministic
    parts = _Kernel(graph, kernel, buffers, atomic=not deterministic, texel_elements=device.texel_elements)
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
        zero = _Kernel(graph, Kernel(kernel.name + "_zero", kernel.size, kernel.outputs, {}), buffers)
        body = "\n".join(f"    {zero.table[name][0]}[i] = 0.0;" for name in zero.stored)
        sources.append(zero.fill("elementwise", _grid(-(-kernel.size // device.local_size), device.max_groups),
                                 SIZE=kernel.size, LOCAL_SIZE=device.local_size, BODY=body))
    parts.ops.append("scatter_add")
    parts.locations.append(core.location)
    if deterministic:
        per_index = 1 + parts.call_trips["load_index"] + parts.call_trips["load_values"]
        _require_loops(parts, f"a deterministic scatter_add of {core.attrs['count']} indices",
                       core.attrs["count"] * per_index + parts.call_trips["store_output"], device)
    workgroups = _grid(-(-threads // device.local_size), device.max_groups)
    sources.append(parts.fill("scatter_add", workgroups, VALUES=value_count, SIZE=kernel.size, EXTENT=extent,
                              COUNT=core.attrs["count"], INNER=inner, DETERMINISTIC=int(deterministic),
                              LOCAL_SIZE=device.local_size, FUNCTIONS=functions))
    return sources


def _accumulate_function(parts: _Kernel) -> str:
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


CPU_BLOCKS = ((16, 16), (8, 8), (4, 4))  # register blocks (rows, columns) of the CPU matmul: plain large,
# fused large, small products; columns in fours, so that where N is a multiple of 4 so is every block
MATMUL_DEPTH = 8  # depth of the shared slices of A and B
SUBGROUP_TILES_PER_GROUP = 16  # a CPU driver pays per workgroup: with a short K, 16 tiles a workgroup
# were 1.2-1.25x one on lavapipe
CPU_MIN_WORKGROUPS = 64  # ... while leaving this many workgroups to share among the cores
# tiles go down the rows first where a strip of B (K x 4 * LANES floats) is at most this many bytes; on
# lavapipe that was 1.1x faster for 100x784x300 and 1000x784x300, and 1.3x slower for 2048^3 and 4096^3
SUBGROUP_ROWS_FIRST_STRIP = 128 * 1024
MIN_MATMUL_WORKGROUPS = 256  # below this, smaller tiles: more workgroups beat more reuse per workgroup


def _tiles(m: int, n: int, batch: int) -> tuple[int, int]:
    """Output tile of one workgroup: up to 128 x 128, halved while the grid would leave a GPU idle."""
    tile_m, tile_n = (128 if e > 64 else 64 if e > 32 else 32 if e > 16 else 16 for e in (m, n))
    while -(-m // tile_m) * -(-n // tile_n) * batch < MIN_MATMUL_WORKGROUPS and max(tile_m, tile_n) > 16:
        if tile_m >= tile_n:
            tile_m //= 2
        else:
            tile_n //= 2
    return tile_m, tile_n


def _matmul(parts: _Kernel, core, device: DeviceShape) -> KernelSource:
    kernel = parts.kernel
    (a, chain_a), (b, chain_b) = operand_contexts(parts.graph, core)
    if device.cpu and isinstance(core.attrs, ConvWindows):
        tile = _conv_tile(parts, core, ((a, chain_a), (b, chain_b)), device)
        if tile:
            return _conv_direct(parts, core, ((a, chain_a), (b, chain_b)), device, tile)
    *batch_shape, m, n = core.shape
    k = node_of(parts.graph, a).shape[-1]
    batch = kernel.size // (m * n)
    a_axes, b_axes = _operand_axes(batch, m, k), _operand_axes(batch, k, n)
    # the operands' element loads, defined below only where a kernel calls them (vector reads do not)
    load_a = parts.load_function("load_a", a, chain_a, float32, a_axes)
    load_b = parts.load_function("load_b", b, chain_b, float32, b_axes)
    lanes = device.subgroup_size
    vector_b = None
    if device.cpu and device.shuffle and lanes % 4 == 0 and n >= 2 * lanes and n % 4 == 0:
        # measured on lavapipe: 1.2-1.5x the direct kernel where B is a plain buffer, slower where
        # B is computed (four loads a lane per step of K then cost more than the shuffles save)
        # B is read as vec4s along its rows or, transposed (a dense layer's input gradient), along K
        vector_b = next(((read, along) for along in ("col", "row")
                         if (read := _vector_read(parts, b, chain_b, b_axes, along))), None)
    store_quads = device.cpu and n % 4 == 0  # a lane's four adjacent outputs stored together
    if store_quads:
        functions = parts.quad_store_function(kernel.core)
    else:
        functions = parts.store_function("float acc", {kernel.core: "acc"}, hoist=True)
    fused = any(op != "contiguous" for op in parts.ops)  # computes more than it loads
    parts.ops.append("matmul")
    parts.locations.append(core.location)
    if vector_b:
        return _subgroup_matmul(parts, (a, chain_a), load_a, vector_b, (batch, m, k, n), device, functions)
    if device.cpu:
        # lavapipe compiles at first dispatch: a 16 x 16 block with fused loads or an optimiser
        # update in its stores unrolls into code LLVM needs ~50 s for; 8 x 8 takes ~3 s
        block = CPU_BLOCKS[2] if m * n * k < 1 << 12 else CPU_BLOCKS[1] if fused else CPU_BLOCKS[0]
        read_a, read_b = _vector_read(parts, a, chain_a, a_axes, "col"), _vector_read(parts, b, chain_b, b_axes, "col")
        vector = bool(read_a or read_b)
        block_m, block_n = min(block[0], m), min(block[1], -(-n // 4) * 4 if vector else n)
        if vector:
            functions += "\n" + _fetch_function("fetch_a", "load_a", load_a, read_a, (m, k), (block_m, 4), 4)
            functions += "\n" + _fetch_function("fetch_b", "load_b", load_b, read_b, (k, n), (4, block_n), 4)
        else:
            functions += "\n" + load_a + "\n" + load_b
        depth = 4 if vector else 2  # matmul_direct_vec4's steps of K, matmul_direct's (DEPTH)
        loads = depth * (block_m * parts.call_trips["load_a"] + block_n * parts.call_trips["load_b"])
        stores = block_m * block_n // (4 if store_quads else 1) * parts.call_trips[
            "store_quad" if store_quads else "store_output"]
        _require_loops(parts, f"a matmul over K = {k}", -(-k // depth) * (1 + loads) + stores, device)
        blocks = batch * -(-m // block_m) * -(-n // block_n)
        # one subgroup (a CPU driver's SIMD width) per workgroup: the most workgroups to share among cores
        workgroups = _grid(-(-blocks // device.subgroup_size), device.max_groups)
        return parts.fill("matmul_direct_vec4" if vector else "matmul_direct", workgroups, BATCH=batch, M=m, N=n,
                          K=k, BLOCK_M=block_m, BLOCK_N=block_n, LOCAL_SIZE=device.subgroup_size,
                          STORE_QUADS=int(store_quads), FUNCTIONS=functions)
    tile_m, tile_n = _tiles(m, n, batch)
    width = min(4, tile_m // 16, tile_n // 16)
    shallowest = max(256 * width // tile_m, 256 * width // tile_n)  # each thread stages whole vectors
    tile_k = max(MATMUL_DEPTH, shallowest)
    while (tile_m + width + tile_n) * tile_k * 4 > device.shared_memory and tile_k > shallowest:
        tile_k //= 2
    workgroups = (-(-n // tile_n), -(-m // tile_m), batch)
    _require_loops(parts, f"a matmul over K = {k}", -(-k // tile_k) * (tile_k + 4), device)
    read_a = _vector_read(parts, a, chain_a, a_axes, "col", width)
    read_b = _vector_read(parts, b, chain_b, b_axes, "col", width)
    functions += "\n" + _fetch_function("fetch_a", "load_a", load_a, read_a, (m, k), (tile_m, tile_k), width)
    functions += "\n" + _fetch_function("fetch_b", "load_b", load_b, read_b, (k, n), (tile_k, tile_n), width)
    return parts.fill("matmul", workgroups, BATCH=batch, M=m, N=n, K=k, TILE_M=tile_m, TILE_N=tile_n,
                      TILE_K=tile_k, WIDTH=width, VEC=_vector(width), PART="v" if width == 1 else "v[c]",
                      FUNCTIONS=functions)


CONV_ACCUMULATORS = 448  # outputs a thread of the direct convolution sums in registers (lavapipe, ConvNet's
# conv 16->32 at batch 100: 16 channels x 2 rows x 14 columns was the fastest of the hand-written blocks tried)
CONV_BLOCK_M = 8  # output channels a block keeps while it narrows for the limits, before it takes one row
CONV_UNROLLED_TRIPS = 32  # longest loop Mesa unrolls on lavapipe (its max_unroll_iterations): a
# longer one leaves the thread's blocks in memory (conv 1->16 over 28 x 28 at batch 100, 56 trips: 2.3x slower)
CONV_UNROLLED = 4608  # multiply-adds of one channel's step: the driver compiles them unrolled at first dispatch


def _conv_tile(parts: _Kernel, core, operands, device: DeviceShape) -> tuple[int, int] | None:
    """(BLOCK_M, ROWS) of conv_direct.comp for a matmul conv2d made, or None where the matmul is
    faster or the threads would not fit. With one input channel the matmul was faster (the
    ConvNet's conv 1->16 over 28 x 28 at batch 100 on lavapipe: 2.60 ms, direct 2.67-3.37 ms over
    six blocks from 2 x 2 to 16 x 1; a channel loop of one trip reuses nothing). A block holds at
    most CONV_ACCUMULATORS outputs and unrolls at most CONV_UNROLLED multiply-adds a channel, its
    output rows always whole, each of its loops at most CONV_UNROLLED_TRIPS long (an image too
    wide or a kernel too tall goes to the matmul), and a thread's loop trips fit the driver's
    limit."""
    windows = core.attrs
    *_, m, n = core.shape
    kh, kw = windows.kernel
    oh, ow = windows.output
    channels = windows.channels
    (a_id, chain_a), (b_id, chain_b) = operands
    a, b = node_of(parts.graph, a_id), node_of(parts.graph, b_id)
    if a.shape[-1] != channels * kh * kw or b.shape[-1] != n or n != oh * ow:
        return None
    if channels == 1 or max(ow + kw - 1, kh + 1) > CONV_UNROLLED_TRIPS:
        return None
    blocks, rows = -(-m // 16), min(2, oh)

    def fits(block_m: int, rows: int) -> bool:
        outputs = block_m * rows * ow
        return outputs <= CONV_ACCUMULATORS and outputs * kh * kw <= CONV_UNROLLED

    while not fits(-(-m // blocks), rows):
        if -(-m // blocks) > CONV_BLOCK_M or rows == 1:
            if blocks >= m:
                return None
            blocks *= 2
        else:
            rows = 1
    block_m = -(-m // blocks)
    batch = parts.kernel.size // (m * n)
    load_a = _element_trips(parts, a_id, chain_a, _operand_axes(batch, m, a.shape[-1]))
    load_b = _element_trips(parts, b_id, chain_b, _operand_axes(batch, a.shape[-1], n))
    trips = channels * (1 + block_m * kh * kw * load_a + (rows + kh - 1) * (ow + kw - 1) * load_b)
    return (block_m, rows) if _fits_loops(trips, device) else None


def _conv_direct(parts: _Kernel, core, operands, device: DeviceShape, tile: tuple[int, int]) -> KernelSource:
    """A CPU driver's matmul that conv2d made (stride and dilation 1), in conv_direct.comp: the left
    operand (the weights) loaded element by element, the right one (the windows over the padded
    input) at (batch, channel, ky, kx, y, x), whose ranges reduce its index to the input's row and
    column, each input element loaded once a thread."""
    kernel = parts.kernel
    windows = core.attrs
    block_m, rows = tile
    (a, chain_a), (b, chain_b) = operands
    *_, m, n = core.shape
    k = node_of(parts.graph, a).shape[-1]
    batch = kernel.size // (m * n)
    kh, kw = windows.kernel
    oh, ow = windows.output
    input_axes = (("batch", batch), ("channel", windows.channels), ("ky", kh), ("kx", kw), ("y", oh), ("x", ow))
    functions = parts.load_function("load_a", a, chain_a, float32, _operand_axes(batch, m, k))
    functions += "\n" + parts.load_function("load_b", b, chain_b, float32, input_axes)
    store_quads = n % 4 == 0 and rows * ow % 4 == 0  # every block's outputs start at a multiple of 4
    if store_quads:
        functions = parts.quad_store_function(kernel.core) + "\n" + functions
    else:
        functions = parts.store_function("float acc", {kernel.core: "acc"}, hoist=True) + "\n" + functions
    stores = block_m * rows * ow // (4 if store_quads else 1) * parts.call_trips[
        "store_quad" if store_quads else "store_output"]
    loads = block_m * kh * kw * parts.call_trips["load_a"]
    loads += (rows + kh - 1) * (ow + kw - 1) * parts.call_trips["load_b"]
    _require_loops(parts, f"a convolution over {windows.channels} channels", windows.channels * (1 + loads) + stores,
                   device)
    parts.ops.append("matmul")
    parts.locations.append(core.location)
    lanes = batch * -(-m // block_m) * -(-oh // rows)
    workgroups = _grid(-(-lanes // device.subgroup_size), device.max_groups)
    return parts.fill("conv_direct", workgroups, BATCH=batch, M=m, N=n, K=k, CHANNELS=windows.channels, KH=kh,
                      KW=kw, OUT_H=oh, OUT_W=ow, BLOCK_M=block_m, ROWS=rows, LOCAL_SIZE=device.subgroup_size,
                      STORE_QUADS=int(store_quads), FUNCTIONS=functions)


def _operand_axes(batch: int, rows: int, cols: int) -> tuple[tuple[str, int], ...]:
    """The index variables a matmul operand is loaded at: (batch, row, col)."""
    return ("batch", batch), ("row", rows), ("col", cols)


def _subgroup_matmul(parts: _Kernel, a, load_a: str, vector_b: tuple[str, str], sizes: tuple[int, int, int, int],
                     device: DeviceShape, functions: str) -> KernelSource:
    """A CPU driver's matmul in matmul_subgroup.comp: `fetch_part` loads a lane's share of each
    LANES x LANES slice of A, as vec4s along K or along rows where `_vector_read` finds them, else
    element by element; `fetch_slice` fetches the lane's four columns of B over the slice: a vec4
    along a row of B per step of K, or along K per column where B is transposed (`vector_b`: the
    read and its axis). Only the last slice (`tail`) checks the end of K."""
    batch, m, k, n = sizes
    lanes = device.subgroup_size
    a_axes = _operand_axes(batch, m, k)
    along_k = _vector_read(parts, *a, a_axes, "col")
    along_rows = None if along_k else _vector_read(parts, *a, a_axes, "row")
    # rows past M and columns past N are read clamped to the last one, not branched around: their
    # sums are never stored. Steps past K must add zero, and only the tail slice checks for them.
    rows = [f"row = min(row, {m - (4 if along_rows else 1)});"] if m % lanes else []
    a_tail = f"tail && col >= {k}" if k % lanes else ""
    if along_k:  # the lane's row, LANES steps of K as PARTS vec4s
        shared = "part[(j) / 4][(j) % 4], uint(r)"
        lines = ["int row = row0 + lane;", *rows, "int col = k0 + 4 * q;", *_zero_outside(a_tail), f"return {along_k};"]
    elif along_rows:  # the LANES rows, at the lane's step of K
        shared = "part[(r) / 4][(r) % 4], uint(j)"
        lines = ["int row = row0 + 4 * q;", *rows, "int col = k0 + lane;", *_zero_outside(a_tail),
                 f"return {along_rows};"]
    else:
        shared = "part[(r) / 4][(r) % 4], uint(j)"
        functions += "\n" + load_a
        value = f"{a_tail} ? 0.0 : load_a(batch, row, col)" if a_tail else "load_a(batch, row, col)"
        lines = ["vec4 part;", "int col = k0 + lane;", "for (int c = 0; c < 4; c++) {",
                 "    int row = row0 + 4 * q + c;", *(f"    {line}" for line in rows), f"    part[c] = {value};", "}",
                 "return part;"]
    functions += "\n" + _function("vec4 fetch_part(int batch, int row0, int k0, int lane, int q, bool tail)", lines)
    functions += f"\n#define A_VALUE(part, r, j) subgroupShuffle({shared})\n"
    b_tail = f"tail && row >= {k}" if k % lanes else ""
    read, along = vector_b
    if along == "col":  # a row of B: the lane's four columns at one step of K
        columns = [f"col = min(col, {n - 4});"] if n % (4 * lanes) else []
        slice_lines = ["for (int j = 0; j < LANES; j++) {", "    b[j] = fetch_b(batch, k0 + j, col, tail);", "}"]
    else:  # a column of B: four steps of K at one of the lane's columns
        columns = [f"col = min(col, {n - 1});"] if n % (4 * lanes) else []
        slice_lines = ["for (int c = 0; c < 4; c++) {", "    for (int h = 0; h < PARTS; h++) {",
                       "        vec4 steps = fetch_b(batch, k0 + 4 * h, col + c, tail);",
                       "        for (int e = 0; e < 4; e++) {", "            b[4 * h + e][c] = steps[e];", "        }",
                       "    }", "}"]
    lines = [*columns, *_zero_outside(b_tail), f"return {read};"]
    functions += "\n" + _function("vec4 fetch_b(int batch, int row, int col, bool tail)", lines)
    functions += "\n" + _function("void fetch_slice(int batch, int k0, int col, bool tail, out vec4 b[LANES])",
                                  slice_lines)
    tiles = batch * -(-m // lanes) * -(-n // (4 * lanes))
    per_group = max(1, min(SUBGROUP_TILES_PER_GROUP, tiles // CPU_MIN_WORKGROUPS))
    tile_trips = (k // lanes + 1) * (1 + lanes * parts.call_trips["load_a"]) + lanes * parts.call_trips["store_quad"]
    while per_group > 1 and not _fits_loops(per_group * tile_trips, device):  # each tile loops over K
        per_group //= 2
    _require_loops(parts, f"a matmul over K = {k}", per_group * tile_trips, device)
    rows_first = k * 4 * lanes * 4 <= SUBGROUP_ROWS_FIRST_STRIP
    return parts.fill("matmul_subgroup", _grid(-(-tiles // per_group), device.max_groups), BATCH=batch, M=m, N=n, K=k,
                      LANES=lanes, PER_GROUP=per_group, ROWS_FIRST=int(rows_first), FUNCTIONS=functions)


def _zero_outside(condition: str, vector: str = "vec4") -> list[str]:
    """Lines returning a zero `vector` where the condition (if any) holds."""
    return [f"if ({condition}) {{", f"    return {vector}(0.0);", "}"] if condition else []


def _body(lines: list[str]) -> str:
    """`lines` indented as a template's body, less the index variables nothing reads."""
    return "\n".join(f"    {line}" for line in without_unread_indices(lines))


def _function(signature: str, lines: list[str]) -> str:
    return signature + " {\n" + "".join(f"    {line}\n" for line in without_unread_indices(lines)) + "}\n"


def _vector_read(parts: _Kernel, operand: int, chain, axes: tuple[tuple[str, int], ...], along: str,
                 width: int = 4) -> str | None:
    """A read of `width` of the operand's elements from axis `along` (at a multiple of `width`) on,
    where it is a float buffer read through views that place them next to each other at an aligned
    offset: a vec4 texel fetch where the device reads texel buffers, else a vector view of the
    storage buffer; None where it is not."""
    sizes = dict(axes)
    if width == 1 or sizes[along] % width or (parts.texel_elements and width != 4):
        return None
    while operand not in parts.kernel.loads and node_of(parts.graph, operand).op in ("view", "contiguous"):
        ((operand, chain),) = input_contexts(node_of(parts.graph, operand), chain)
    buffer = parts.kernel.loads.get(operand)
    if buffer is None or is_masked(chain) or parts.table[buffer][1] != float32:
        return None
    index = parts.emitter(_row_major(axes)).expression(chain)
    step = Var(along, sizes[along])
    if (step, 1) not in index.terms or any(step in _atoms(atom) for atom, _ in index.terms if atom != step):
        return None
    split = split_aligned(index + Index(((step, -1),)), width)  # the rest: whole vectors
    if split is None or split[1]:
        return None
    if not parts.texel_elements:
        return f"{parts.vector_view(buffer, _vector(width))}[({render(index)}) / {width}]"
    texels = parts.vector_texels(buffer)
    return texels and f"texelFetch({texels}, ({render(index)}) / 4)"


def _atoms(atom) -> set:
    """The variables an index atom depends on."""
    if isinstance(atom, Var):
        return {atom}
    return set().union(*(_atoms(inner) for inner, _ in atom.numerator.terms))


def _fetch_function(name: str, load: str, definition: str, read: str | None, shape: tuple[int, int],
                    tile: tuple[int, int], width: int) -> str:
    """`name(batch, row, col)`: `width` elements from (row, col) along a row of an operand's rows x
    cols matrices, zero past its edges: one vector `read` (from `_vector_read`) where there is one,
    else element by element through the function `load`, whose `definition` then comes first."""
    rows, cols = shape
    vector = _vector(width)
    if read:
        outside = [f"row >= {rows}"] * bool(rows % tile[0]) + [f"col >= {cols}"] * bool(cols % tile[1])
        lines = [*_zero_outside(" || ".join(outside), vector), f"return {read};"]
    else:
        inside = [f"row < {rows}"] * bool(rows % tile[0]) + [f"column < {cols}"] * bool(cols % tile[1] or cols % width)
        element = f"{load}(batch, row, column)"
        value = f"{' && '.join(inside)} ? {element} : 0.0" if inside else element
        lines = [f"{vector} group;", f"for (int j = 0; j < {width}; j++) {{", "    int column = col + j;",
                 f"    PART(group, j) = {value};", "}", "return group;"]
    fetch = _function(f"{vector} {name}(int batch, int row, int col)", lines)
    return fetch if read else definition + "\n" + fetch


_VECTORS = {"float": "vec4", "int": "ivec4", "uint": "uvec4"}


def _vector(width: int) -> str:
    return "float" if width == 1 else f"vec{width}"
