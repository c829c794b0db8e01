"""Elementwise kernels: an element a thread, or four on a CPU driver."""

from __future__ import annotations

from descent.codegen.builder import DeviceShape, KernelBuilder, KernelSource, grid
from descent.codegen.emitter import without_unread_indices
from descent.codegen.index import variable


def elementwise(parts: KernelBuilder, device: DeviceShape) -> KernelSource:
    """A kernel without a core: every output evaluated and stored at its own index."""
    kernel = parts.kernel
    if device.cpu and parts.texel_elements and kernel.size % 4 == 0:
        return _elementwise_quads(parts, device)
    emitter = parts.emitter(variable("i", kernel.size))
    stores = parts.store_lines(emitter)
    parts.absorb(emitter)
    body = _body(emitter.lines + stores)
    workgroups = grid(-(-kernel.size // device.local_size), device.max_groups)
    return parts.fill("elementwise", workgroups, SIZE=kernel.size, LOCAL_SIZE=device.local_size, BODY=body)


def _elementwise_quads(parts: KernelBuilder, device: DeviceShape) -> KernelSource:
    """A CPU driver's elementwise kernel: four adjacent elements a thread (`quad_lines`), since a lane's
    vec4 fetch or store costs what a float's does."""
    quads = parts.kernel.size // 4
    lines, _ = parts.quad_lines()
    body = _body(lines)
    workgroups = grid(-(-quads // device.local_size), device.max_groups)
    return parts.fill("elementwise_quads", workgroups, SIZE=parts.kernel.size, QUADS=quads,
                      LOCAL_SIZE=device.local_size, BODY=body)


def _body(lines: list[str]) -> str:
    """`lines` indented as a template's body, less the index variables nothing reads."""
    return "\n".join(f"    {line}" for line in without_unread_indices(lines))
