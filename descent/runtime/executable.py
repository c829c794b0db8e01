"""A built graph: compiled kernels bound to device buffers, recorded once into a kp Sequence."""

from __future__ import annotations

from typing import Any

import numpy as np

from descent.codegen.glsl import KernelSource
from descent.runtime import vulkan
from descent.schedule.kernel import Schedule


class Executable:
    """What `env.build_graph` returns: run it with `env.run`; every run replays the recorded commands."""

    def __init__(self, environment: Any, schedule: Schedule, sources: list[KernelSource],
                 spirv: list[bytes], index_parameters: list | None = None, inputs: tuple = ()) -> None:
        self.environment = environment
        self.schedule = schedule
        self.sources = sources
        self.checked = environment.checked
        self.index_parameters = index_parameters or []  # (parameter, axis size, user line) checked mode validates
        self.inputs = inputs  # parameters uploaded at the start of every run
        self._slots = [environment.slot(k, nbytes) for k, nbytes in enumerate(schedule.slots)]
        self._algorithms = [
            environment.algorithm([self._tensor(name) for name in source.bindings], code, source.workgroups)
            for source, code in zip(sources, spirv)
        ]
        self._sequence = self._record(environment.kp)

    def _tensor(self, name: str):
        buffer = self.schedule.buffers[name]
        if buffer.parameter is not None:
            return self.environment.tensor(buffer.parameter)
        return self._slots[buffer.slot]

    def _uploads(self) -> list:
        """Tensors whose staging memory is copied to the device at the start of every run."""
        names = [p.name for p in self.inputs] + ([self.environment.seed_parameter.name] if self.uses_seed else [])
        return [self.environment.tensor(name) for name in dict.fromkeys(names)]

    @property
    def uses_seed(self) -> bool:
        """Whether the graph draws random numbers, so each run uploads a seed first."""
        return f"param:{self.environment.seed_parameter.name}" in self.schedule.buffers

    def _record(self, kp):
        sequence = self.environment.device.manager.sequence()
        if self._uploads():
            sequence.record(kp.OpTensorSyncDevice(self._uploads()))
        previous = None
        for source, algorithm in zip(self.sources, self._algorithms):
            if previous is None:
                tensors = [self._tensor(name) for name in source.bindings]
                source_access = vulkan.ACCESS_SHADER_WRITE | vulkan.ACCESS_TRANSFER_WRITE
                source_stage = vulkan.STAGE_COMPUTE_SHADER | vulkan.STAGE_TRANSFER
            else:
                tensors = [self._tensor(name) for name in previous.writes]
                source_access, source_stage = vulkan.ACCESS_SHADER_WRITE, vulkan.STAGE_COMPUTE_SHADER
            sequence.record(kp.OpMemoryBarrier(
                tensors, source_access, vulkan.ACCESS_SHADER_READ | vulkan.ACCESS_SHADER_WRITE,
                source_stage, vulkan.STAGE_COMPUTE_SHADER))
            sequence.record(kp.OpAlgoDispatch(algorithm))
            previous = source
        if self.schedule.copies:
            staged = [self._tensor(copy.source) for copy in self.schedule.copies]
            targets = [self._tensor(copy.target) for copy in self.schedule.copies]
            sequence.record(kp.OpMemoryBarrier(staged, vulkan.ACCESS_SHADER_WRITE, vulkan.ACCESS_TRANSFER_READ,
                                               vulkan.STAGE_COMPUTE_SHADER, vulkan.STAGE_TRANSFER))
            for source, target in zip(staged, targets):
                sequence.record(kp.OpTensorCopy([source, target]))
            sequence.record(kp.OpMemoryBarrier(
                targets, vulkan.ACCESS_TRANSFER_WRITE,
                vulkan.ACCESS_SHADER_READ | vulkan.ACCESS_SHADER_WRITE | vulkan.ACCESS_TRANSFER_READ,
                vulkan.STAGE_TRANSFER, vulkan.STAGE_COMPUTE_SHADER | vulkan.STAGE_TRANSFER))
        return sequence

    def replay(self) -> None:
        if self.checked:
            self._replay_checked()
        elif self.sources or self.schedule.copies:
            self._sequence.eval()

    def _check_indices(self) -> None:
        """DESCENT_DEBUG mode: every index array that is a parameter must lie in its axis's range."""
        for parameter, extent, location in self.index_parameters:
            values = self.environment.read(parameter)
            bad = np.flatnonzero((values < -extent) | (values >= extent))
            if bad.size:
                raise IndexError(f"DESCENT_DEBUG: index {values.ravel()[bad[0]]} in '{parameter.name}' (element "
                                 f"{bad[0]}) is out of range for an axis of size {extent}; used at {location}")

    def _replay_checked(self) -> None:
        """DESCENT_DEBUG mode: dispatch kernel by kernel and stop at the first NaN or infinity stored."""
        self._check_indices()
        kp = self.environment.kp
        manager = self.environment.device.manager
        if self._uploads():
            manager.sequence().eval(kp.OpTensorSyncDevice(self._uploads()))
        staged_targets = {copy.source: copy.target for copy in self.schedule.copies}
        for source, algorithm in zip(self.sources, self._algorithms):
            sequence = manager.sequence()
            sequence.record(kp.OpAlgoDispatch(algorithm))
            sequence.eval()
            for name in source.writes:
                buffer = self.schedule.buffers[name]
                if not buffer.dtype.is_float:
                    continue
                tensor = self._tensor(name)
                manager.sequence().eval(kp.OpTensorSyncLocal([tensor]))
                values = np.asarray(tensor.data()[: buffer.size])
                bad = np.flatnonzero(~np.isfinite(values))
                if bad.size:
                    raise FloatingPointError(
                        f"DESCENT_DEBUG: {source.name} stored {values[bad[0]]} at element {bad[0]} of "
                        f"{staged_targets.get(name, name)} ({bad.size} non-finite values); it computes "
                        f"{', '.join(dict.fromkeys(source.ops))} from {', '.join(source.locations)}")
        for copy in self.schedule.copies:
            manager.sequence().eval(kp.OpTensorCopy([self._tensor(copy.source), self._tensor(copy.target)]))

    @property
    def kernel_count(self) -> int:
        """Dispatches per run."""
        return len(self.sources)

    @property
    def memory_bytes(self) -> int:
        """Device memory this graph owns beyond the parameters: its temporary slots."""
        return self.schedule.temporary_bytes

    @property
    def shaders(self) -> list[str]:
        """The GLSL of every kernel, in dispatch order."""
        return [source.glsl for source in self.sources]

    def summary(self) -> str:
        lines = [f"{self.kernel_count} kernel(s), {self.memory_bytes} bytes of temporaries"]
        for source in self.sources:
            outputs = ", ".join(source.writes)
            lines.append(f"  {source.name}: {'+'.join(source.ops[-1:])} -> {outputs}; ops from "
                         f"{', '.join(source.locations)}")
        return "\n".join(lines)
