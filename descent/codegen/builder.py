"""What every kernel's GLSL is built from: the device's shape, the kernel's bindings and buffer
declarations, the functions generated for its template to call, and the filled-in template.

Fused work becomes small functions the templates call: `load_*` evaluates an operand at a flat
index, `store_output` evaluates a kernel's outputs from its core value and stores them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from string import Template

import networkx as nx

from descent.codegen.emitter import Emitter, identifier, without_unread_indices
from descent.codegen.index import Index, variable
from descent.errors import DeviceError
from descent.graph.dtype import DType, bool_, float32
from descent.graph.view import View, numel, simplify
from descent.schedule.fuse import node_of
from descent.schedule.kernel import Buffer, Kernel

_PACKAGE = Path(__file__).resolve().parents[1]
# descent/shaders once installed from a wheel, the top-level shaders/ in the source tree
SHADERS = _PACKAGE / "shaders" if (_PACKAGE / "shaders").is_dir() else _PACKAGE.parent / "shaders"
LOOP_SLACK = 16  # loop iterations a kernel's short loops may add to its long one
VECTORS = {"float": "vec4", "int": "ivec4", "uint": "uvec4"}  # the four-wide vector of each GLSL scalar


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


def grid(groups: int, max_groups: int) -> tuple[int, int, int]:
    """A dispatch of `groups` workgroups, in rows where one row would pass the device's limit."""
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


class KernelBuilder:
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
        emitter = self.emitter(row_major(axes), quads=quads)
        chains, result = [chain], dtype.glsl
        if quads:
            count = numel(tuple(size for _, size in axes))
            chains, result = [simplify(chain + (View((count,), (4,), e),)) for e in range(4)], VECTORS[dtype.glsl]
        values = [emitter.value(node_id, element) for element in chains]
        self.absorb(emitter)
        self.call_trips[name] = emitter.loop_trips
        parameters = ", ".join(f"int {axis}" for axis, _ in axes)
        return function(f"{result} {name}({parameters})", [*emitter.lines, f"return {result}({', '.join(values)});"])

    def store_function(self, parameters: str, special: dict[int, str], hoist: bool = False) -> str:
        """`store_output(i, parameters)`. With `hoist`, for templates whose threads store many
        elements, values the same at every element (an optimiser's bias corrections, say) are
        globals that `prologue()` computes once; the template calls it where PROLOGUE stands."""
        given = {(node_id, ()): value for node_id, value in special.items()}
        emitter = self.emitter(variable("i", self.kernel.size), given, hoist)
        stores = self.store_lines(emitter)
        self.absorb(emitter)
        self.call_trips["store_output"] = emitter.loop_trips
        return self.prologue_function(emitter) + function(f"void store_output(int i, {parameters})",
                                                           emitter.lines + stores)

    def prologue_function(self, emitter: Emitter) -> str:
        """The globals an emitter hoisted and `prologue()` computing them; empty where it hoisted none."""
        if not emitter.hoisted:
            return ""
        self.prologue = True
        globals_ = "".join(f"{glsl_type} {name};\n" for glsl_type, name, _ in emitter.hoisted)
        lines = [f"{name} = {expression};" for _, name, expression in emitter.hoisted]
        return f"{globals_}\n{function('void prologue()', lines)}\n"

    def quad_store_function(self, core: int) -> str:
        """`store_quad(i, acc)`: the outputs at i .. i + 3 (i a multiple of 4) from the core values in
        `acc`, through `quad_lines` (on lavapipe a lane's fetch or store costs about the same for four
        floats as for one)."""
        lines, emitter = self.quad_lines({core: [f"acc[{e}]" for e in range(4)]}, hoist=True)
        self.call_trips["store_quad"] = emitter.loop_trips
        store = function("void store_quad(int i, vec4 acc)", ["int q = i / 4;", *lines])
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


def row_major(axes: tuple[tuple[str, int], ...]) -> Index:
    """The flat row-major index of variables (name, size) each, outermost first."""
    base = Index()
    for axis, size in axes:
        base = base * size + variable(axis, size)
    return base


def fits_loops(trips: int, device: DeviceShape) -> bool:
    """Whether an invocation whose long loop runs `trips` times stays within the driver's loop limit."""
    return trips + LOOP_SLACK <= device.loop_trips


def require_loops(parts: KernelBuilder, what: str, trips: int, device: DeviceShape) -> None:
    """Refuse a kernel whose invocations would loop `trips` times where the driver ends them sooner."""
    if not fits_loops(trips, device):
        raise DeviceError(f"{parts.kernel.name}: {what} needs {trips} loop iterations in one thread, and this "
                          f"device's driver ends a thread's loops after {device.loop_trips} (lavapipe's guard against "
                          f"endless loops); split it into shorter steps (ops from {', '.join(parts.locations[:3])})")


def element_trips(parts: KernelBuilder, node_id: int, chain, axes: tuple[tuple[str, int], ...]) -> int:
    """Iterations the helpers' loops may run computing one element of `node_id` (a pow with an array
    exponent, say), which a driver's loop limit counts with the loop that goes over the elements."""
    emitter = parts.emitter(row_major(axes))
    emitter.value(node_id, chain)
    return emitter.loop_trips


def function(signature: str, lines: list[str]) -> str:
    """A GLSL function of `lines`, less the index variables nothing reads."""
    return signature + " {\n" + "".join(f"    {line}\n" for line in without_unread_indices(lines)) + "}\n"
