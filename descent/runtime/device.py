"""Opening the Vulkan device through kp, and the limits the scheduler and codegen must respect."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from descent.compile.spirv import compile_glsl
from descent.errors import DeviceError, at_user_line
from descent.runtime import vulkan
from descent.runtime.probe import count_devices

SUBGROUP_FEATURE_SHUFFLE = 0x10  # VK_SUBGROUP_FEATURE_SHUFFLE_BIT
DEVICE_TYPES = {0: "other", 1: "integrated", 2: "discrete", 3: "virtual", 4: "cpu"}
UNLIMITED = 2**31 - 1
LOOP_PROBE_TRIPS = 1 << 20
_MEASURED_LOOP_TRIPS: dict[tuple[int, str], int] = {}  # per device, once a process
LOOP_PROBE = """#version 450
// loop_probe: how many iterations of one long loop an invocation runs (descent.runtime.device._loop_trips)
layout(local_size_x = 1) in;
layout(std430, binding = 0) buffer Probe { uint data[]; };

void main() {
    uint trips = 0u;
    for (uint i = 0u; i < data[0]; i++) {
        trips += 1u + data[1];
    }
    data[2] = trips;
}
"""


@dataclass(frozen=True)
class DeviceLimits:
    """Limits read from the device at run time, never assumed."""

    max_storage_buffer_range: int
    max_shared_memory: int
    max_workgroup_count: tuple[int, int, int]
    max_workgroup_invocations: int
    max_workgroup_size: tuple[int, int, int]
    subgroup_size: int
    subgroup_shuffle: bool  # GL_KHR_shader_subgroup_shuffle's operations are supported
    max_storage_buffers: int
    max_texel_buffer_elements: int
    timestamp_period: float  # nanoseconds per GPU timestamp tick
    max_loop_trips: int = UNLIMITED  # loop iterations an invocation may run in all (measured: `_loop_trips`)


@dataclass(frozen=True)
class Device:
    """An opened device: its kp Manager, index, name, type and limits."""

    manager: Any
    index: int
    name: str
    kind: str
    limits: DeviceLimits


def _limits(properties: dict) -> DeviceLimits:
    return DeviceLimits(
        max_storage_buffer_range=properties["max_storage_buffer_range"],
        max_shared_memory=properties["max_compute_shared_memory_size"],
        max_workgroup_count=tuple(properties["max_work_group_count"]),
        max_workgroup_invocations=properties["max_work_group_invocations"],
        max_workgroup_size=tuple(properties["max_work_group_size"]),
        subgroup_size=properties["subgroup_size"],
        subgroup_shuffle=bool(properties["subgroup_operations"] & SUBGROUP_FEATURE_SHUFFLE),
        max_storage_buffers=properties["max_per_stage_descriptor_storage_buffers"],
        max_texel_buffer_elements=properties["max_texel_buffer_elements"],
        timestamp_period=float(properties["timestamp_period"]),
    )


def _import_kp():
    try:
        import kp
    except ImportError as error:
        raise DeviceError(at_user_line(f"the Kompute module `kp` is not importable ({error}); "
                                       "run `./run.sh setup`")) from None
    if not hasattr(kp, "OpMemoryBarrier") or not hasattr(kp.Sequence, "is_complete"):
        raise DeviceError(at_user_line("this `kp` lacks descent's bindings (OpMemoryBarrier, Sequence.is_complete); "
                                       "run `./run.sh setup` to build the patched one"))
    logging.getLogger("kp").setLevel(logging.ERROR)
    return kp


def choose(devices: list[dict], spec: int | str | None, source: str = "device") -> int:
    """Index of the device `spec` names (index or name substring); else the first discrete GPU, else 0.
    `source` names where the spec came from (the argument or DESCENT_DEVICE) in errors."""
    names = ", ".join(f"{k}: {d['device_name']}" for k, d in enumerate(devices))
    if spec is None or spec == "":
        discrete = [k for k, d in enumerate(devices) if d["device_type"] == 2]
        return discrete[0] if discrete else 0
    if isinstance(spec, int) or str(spec).isdigit():
        index = int(spec)
        if not 0 <= index < len(devices):
            raise DeviceError(at_user_line(f"{source}={spec!r}: device index {index} does not exist; "
                                           f"the devices are {names}"))
        return index
    matches = [k for k, d in enumerate(devices) if str(spec).lower() in d["device_name"].lower()]
    if not matches:
        raise DeviceError(at_user_line(f"{source}={spec!r}: no device name contains {spec!r}; the devices are {names}"))
    return matches[0]


def open_device(spec: int | str | None = None, source: str = "device") -> Device:
    """Open the device `spec` picks (see `choose`)."""
    count_devices()
    kp = _import_kp()
    manager = kp.Manager()
    devices = manager.list_devices()
    try:
        index = choose(devices, spec, source)
    except DeviceError:
        manager.destroy()
        raise
    if index != 0:
        manager.destroy()
        manager = kp.Manager(index)
    properties = devices[index]
    if "max_texel_buffer_elements" not in properties:
        manager.destroy()
        raise DeviceError(at_user_line("this `kp` lacks descent's texel-buffer bindings; run `./run.sh setup` to "
                                       "build the patched one"))
    key = (index, properties["device_name"])
    if key not in _MEASURED_LOOP_TRIPS:
        _MEASURED_LOOP_TRIPS[key] = _loop_trips(kp, manager)
    limits = replace(_limits(properties), max_loop_trips=_MEASURED_LOOP_TRIPS[key])
    return Device(manager, index, properties["device_name"], DEVICE_TYPES.get(properties["device_type"], "other"),
                  limits)


def _loop_trips(kp, manager) -> int:
    """The loop iterations a kernel invocation may run, all its loops together, before the driver ends
    them: no Vulkan limit reports it, and lavapipe stops every loop of an invocation after 65535 in all
    (a guard against endless loops), so a longer fold would end early with a wrong result. Measured
    by a loop of LOOP_PROBE_TRIPS iterations; one that runs them all means no limit below that."""
    tensor = manager.tensor_t(np.array([LOOP_PROBE_TRIPS, 0, 0], np.uint32))
    algorithm = manager.algorithm([tensor], compile_glsl(LOOP_PROBE, "loop_probe", probe=True), [1, 1, 1])
    sequence = manager.sequence()
    sequence.record(kp.OpTensorSyncDevice([tensor]))
    sequence.record(kp.OpMemoryBarrier([tensor], vulkan.ACCESS_TRANSFER_WRITE,
                                       vulkan.ACCESS_SHADER_READ | vulkan.ACCESS_SHADER_WRITE,
                                       vulkan.STAGE_TRANSFER, vulkan.STAGE_COMPUTE_SHADER))
    sequence.record(kp.OpAlgoDispatch(algorithm))
    sequence.record(kp.OpTensorSyncLocal([tensor]))
    sequence.eval()
    trips = int(tensor.data()[2])
    return UNLIMITED if trips >= LOOP_PROBE_TRIPS else trips
