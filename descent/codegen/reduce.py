"""Reductions: an output a thread, or a workgroup's tree for each output where it is long."""

from __future__ import annotations

from descent.codegen.builder import (
    VECTORS,
    DeviceShape,
    KernelBuilder,
    KernelSource,
    element_trips,
    fits_loops,
    grid,
    require_loops,
)
from descent.codegen.emitter import literal
from descent.graph.dtype import DType, float32, int32
from descent.schedule.fuse import node_of, reduce_layout

SERIAL_REDUCTION = 32  # reductions at most this long are folded by one thread each
CPU_SERIAL_OUTPUTS = 64  # on a CPU driver, where a barrier switches every SIMD batch of the workgroup
# in and out, this many outputs keep every core busy folding one output per thread


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


def reduce(parts: KernelBuilder, core, device: DeviceShape) -> KernelSource:
    """A reduction of the core's input along its reduced axes, with the outputs fused after it."""
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
    per_element = 1 + element_trips(parts, source, chain, (("output_index", outputs), ("element", reduced)))

    def trips(threads: int) -> int:  # a thread's strided share of the elements, the tree's steps, the store
        return -(-reduced // threads) * per_element + (threads.bit_length() if threads > 1 else 0) + \
            parts.call_trips["store_output"]

    serial = (reduced <= SERIAL_REDUCTION or (device.cpu and outputs >= CPU_SERIAL_OUTPUTS)) and \
        fits_loops(trips(1), device)
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
        workgroups = grid(-(-outputs // local), device.max_groups)
    else:
        local = min(device.local_size, 1 << max(5, (reduced - 1).bit_length()))
        while not fits_loops(trips(local), device) and 2 * local <= device.max_local_size:
            local *= 2
        workgroups = grid(outputs, device.max_groups)
        require_loops(parts, f"a {op} of {reduced} elements over {local} threads", trips(local), device)
    return parts.fill("reduce", workgroups, REDUCTION=" and ".join([op] + [op[3:]] * bool(kernel.values)),
                      REDUCED=reduced, OUTPUTS=outputs,
                      SERIAL=int(serial), QUADS=int(quads), LOCAL_SIZE=local, FUNCTIONS=functions,
                      TYPE=accumulator, INPUT=dtype.glsl, INPUT4=VECTORS[dtype.glsl], LIFT=lift,
                      COMBINE=_combine(op, dtype), IDENTITY=_identity(op, dtype))
