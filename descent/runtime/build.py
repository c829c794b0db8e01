"""Building a traced graph for a device: schedule its kernels, generate their GLSL and compile it to
SPIR-V, within the device's limits (the stages after graph building and autodiff, chained in order)."""

from __future__ import annotations

from descent.codegen.builder import DeviceShape, KernelSource
from descent.codegen.glsl import generate
from descent.compile.spirv import compile_glsl
from descent.errors import DeviceError, at_user_line
from descent.graph.scope import Scope
from descent.runtime.device import Device
from descent.schedule.kernel import Schedule
from descent.schedule.plan import kernel_split_point, schedule

LOCAL_SIZE = 256  # threads of an elementwise or reduction workgroup, where the device allows that many


def compile_scope(scope: Scope, device: Device,
                  deterministic: bool) -> tuple[Schedule, list[KernelSource], list[bytes]]:
    """The schedule of a traced scope's graph, its kernels' sources and their SPIR-V, shaped for `device`."""
    cpu = device.kind == "cpu"
    limits = device.limits
    shape = DeviceShape(
        local_size=min(LOCAL_SIZE, limits.max_workgroup_invocations, limits.max_workgroup_size[0]),
        max_groups=limits.max_workgroup_count[0],
        shared_memory=limits.max_shared_memory,
        deterministic=deterministic,
        cpu=cpu,
        texel_elements=limits.max_texel_buffer_elements if cpu else 0,
        subgroup_size=max(1, min(limits.subgroup_size, limits.max_workgroup_size[0])),
        shuffle=limits.subgroup_shuffle and limits.subgroup_size <= limits.max_workgroup_size[0],
        loop_trips=limits.max_loop_trips,
        max_local_size=min(limits.max_workgroup_invocations, limits.max_workgroup_size[0]),
    )
    plan, sources = _within_bindings(scope, cpu, shape, limits.max_storage_buffers)
    for nbytes in plan.slots:
        if nbytes > limits.max_storage_buffer_range:
            raise DeviceError(at_user_line(
                f"build_graph: an intermediate array that a kernel stores takes {nbytes} bytes, more than "
                f"the device's storage-buffer range of {limits.max_storage_buffer_range} bytes "
                f"({device.name}); compute it in smaller parts"))
    spirv = [compile_glsl(s.glsl, s.name, ", ".join(dict.fromkeys(s.locations))) for s in sources]
    return plan, sources, spirv


def _within_bindings(scope: Scope, cpu: bool, shape: DeviceShape, limit: int) -> tuple[Schedule, list[KernelSource]]:
    """The schedule and its kernels' sources, each binding at most `limit` buffers. Where a kernel
    binds more, it is scheduled again: with fewer outputs a kernel where it shares many (an
    optimiser's updates of every parameter at once, or those folded into a reduction or a matmul as its
    epilogue), else with a part of its inline work given a buffer and a kernel of its own (a concat of
    many arrays)."""
    max_grouped, split = None, frozenset()
    while True:
        plan = schedule(scope.graph, scope.writes, computed_operands=cpu, max_grouped=max_grouped, split=split)
        generated = [(kernel, source) for kernel in plan.kernels
                     for source in generate(scope.graph, kernel, plan.buffers, shape)]
        wide = [(kernel, source) for kernel, source in generated if len(source.bindings) > limit]
        if not wide:
            return plan, [source for _, source in generated]
        shared = [count for kernel, _ in wide if (count := len({node_id for node_id, _ in kernel.outputs})) > 1]
        if shared and max_grouped != 1:
            max_grouped = max(1, min(max(shared) // 2, (max_grouped or max(shared)) - 1))
            continue
        points = [(kernel_split_point(scope.graph, kernel), source) for kernel, source in wide]
        for point, source in points:
            if point is None:
                raise DeviceError(f"{source.name} binds {len(source.bindings)} buffers; this device allows {limit} "
                                  f"(ops from {', '.join(source.locations[:3])})")
        split |= {point for point, _ in points}
