"""A built graph: compiled kernels bound to device buffers, recorded into kp Sequences that runs replay."""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from descent.codegen.builder import KernelSource
from descent.errors import at_user_line
from descent.graph import view as views
from descent.graph.parameter import Parameter
from descent.graph.scope import IndexRange, Scope
from descent.graph.view import ViewChain
from descent.runtime import vulkan
from descent.schedule.kernel import Schedule

if TYPE_CHECKING:
    from descent.runtime.environment import Environment

RECORDINGS = 2  # command buffers per graph: one can be filled with the next batch while the other runs


@dataclass
class Recording:
    """One recorded command buffer of a graph, with host-visible staging memory of its own for the
    parameters it uploads, so the next run's inputs can be written while this one is in flight."""

    sequence: Any
    staging: dict[str, np.ndarray]  # parameter name -> numpy view of the mapped staging memory
    buffers: list  # the kp host tensors behind `staging`, held so that its mapped memory stays valid
    kernels: list[int]  # position of each kernel's dispatch among the recorded operations


@dataclass(frozen=True)
class IndexSource:
    """Indices an op reads from a parameter, through steps from the parameter to the op (a view as a
    (chain, shape) pair, a cast as the numpy dtype name it casts to), and the range it requires."""

    parameter: Parameter
    steps: tuple[tuple[ViewChain, tuple[int, ...]] | str, ...]
    required: IndexRange

    @property
    def viewed(self) -> bool:
        """Whether a view lies between the parameter and the op, so the op may not read every element."""
        return any(not isinstance(step, str) for step in self.steps)

    def indices(self, stored: np.ndarray, casts: bool = True) -> np.ndarray:
        """The values the op takes as indices from the parameter's value `stored` (of the parameter's
        shape when viewed), cast as the device casts them (a float truncated, a negative int32 wrapped
        as uint32) unless `casts` is False."""
        found = np.asarray(stored)
        with np.errstate(invalid="ignore", over="ignore"):
            for step in self.steps:
                if not isinstance(step, str):
                    found = views.read(*step, found)
                elif casts:
                    found = found.astype(step)
        return found

    def out_of_range(self, stored: np.ndarray) -> str | None:
        """Why the parameter's value `stored` gives the op an index outside its range, or None."""
        raw = np.asarray(stored).reshape(self.parameter.shape)
        found = self.indices(raw)
        bad = np.flatnonzero((found < self.required.low) | (found >= self.required.high))
        if not bad.size:
            return None
        position = bad[0] if found.ndim <= 1 else tuple(int(k) for k in np.unravel_index(bad[0], found.shape))
        element = f"element {position}" + (" of the view the op reads" if self.viewed else "")
        value = found.ravel()[bad[0]]
        before = self.indices(raw, casts=False).ravel()[bad[0]]
        cast = f" (cast from {before})" if before != value else ""
        return (f"index {value}{cast} in '{self.parameter.name}' ({element}) is out of range for "
                f"{self.required.what}; used at {self.required.location}")


@dataclass
class Held:
    """What a graph holds of its Environment's shared slots and pipelines, and whether it has run: the
    Environment frees them when the graph is gone, except those of a graph that never ran: lavapipe
    22.3 never returns the memory of a pipeline destroyed before its first dispatch (80 KB for a
    one-line kernel, 3.4 MB for a small MLP's forward graph), so building such a graph again and again
    would leak; kept, the pipelines serve the next build."""

    keys: list[tuple] = field(default_factory=list)
    ran: bool = False


class Executable:
    """What `env.build_graph` returns: run it with `env.run`. A run replays one of its recorded
    sequences, taken in turn (with DESCENT_DEBUG, it dispatches kernel by kernel and checks each)."""

    def __init__(self, environment: Environment, schedule: Schedule, sources: list[KernelSource],
                 spirv: list[bytes], index_parameters: list | None = None, inputs: tuple = (),
                 location: str = "") -> None:
        self.environment = environment
        self.schedule = schedule
        self.sources = sources
        self.checked = environment.checked
        self.index_parameters: list[IndexSource] = index_parameters or []  # indices checked before a run
        self.inputs = inputs  # parameters uploaded at the start of every run
        self.location = location  # the user's line that built it
        written = [n for source in sources for n in source.writes] + [c.target for c in schedule.copies]
        self.writes = {schedule.buffers[n].parameter for n in written if schedule.buffers[n].parameter}
        self.writes |= {parameter.name for parameter in inputs}  # uploaded at the start of every run
        self.reads = {b.parameter for b in schedule.buffers.values() if b.parameter} - self.writes
        # a staged parameter write is copied by kp, which copies only between tensors of one element type
        copied_as = {schedule.buffers[copy.source].slot: environment.tensor(schedule.buffers[copy.target].parameter)
                     for copy in schedule.copies}
        self._held = Held()
        weakref.finalize(self, environment.release, self._held).atexit = False
        try:
            self._slots = []
            for k, nbytes in enumerate(schedule.slots):
                key, tensor = environment.slot(k, nbytes, copied_as[k].data().dtype if k in copied_as else np.float32)
                self._held.keys.append(key)
                self._slots.append(tensor)
            self._algorithms = []
            for source, code in zip(sources, spirv):
                key, algorithm = environment.algorithm([self._tensor(name) for name in source.bindings], code,
                                                       source.workgroups, self._texel_formats(source))
                self._held.keys.append(key)
                self._algorithms.append(algorithm)
            self._recordings = [] if self.checked else [self._record(environment.kp) for _ in range(RECORDINGS)]
        except BaseException:  # out of device memory, say: what this graph took goes back
            environment.release(self._held, failed=True)
            raise
        self._turn = 0

    def _texel_formats(self, source: KernelSource) -> tuple[int, ...]:
        """The VkFormat of each binding read as a texel buffer, 0 for a storage buffer."""
        if not source.texel_bindings:
            return ()
        components = dict(source.texel_bindings)
        buffers = self.schedule.buffers
        return tuple(vulkan.TEXEL_FORMATS[buffers[name].dtype.storage_glsl, components[k]] if k in components else 0
                     for k, name in enumerate(source.bindings))

    def _tensor(self, name: str):
        buffer = self.schedule.buffers[name]
        if buffer.parameter is not None:
            return self.environment.tensor(buffer.parameter)
        return self._slots[buffer.slot]

    @property
    def uploads(self) -> list:
        """Parameters copied from host memory to the device at the start of every run."""
        seed = [self.environment.seed_parameter] if self.uses_seed else []
        return list(dict.fromkeys([*self.inputs, *seed]))

    @property
    def commands(self) -> bool:
        """Whether a run records anything: a kernel, an upload or a copy."""
        return bool(self.sources or self.uploads or self.schedule.copies)

    @property
    def uses_seed(self) -> bool:
        """Whether the graph draws random numbers, so each run uploads a seed first."""
        return f"param:{self.environment.seed_parameter.name}" in self.schedule.buffers

    def _record(self, kp, timestamps: bool = False) -> Recording:
        environment = self.environment
        operations = 3 * len(self.sources) + 2 * len(self.uploads) + len(self.schedule.copies) + 4
        sequence = environment.device.manager.sequence(0, operations if timestamps else 0)
        recorded: list = []
        kernels: list[int] = []

        def record(op) -> None:
            recorded.append(op)
            sequence.record(op)

        touched = [self._tensor(name) for name in dict.fromkeys(n for s in self.sources for n in s.bindings)]
        uploads = [environment.tensor(p.name) for p in self.uploads]
        targets = [self._tensor(copy.target) for copy in self.schedule.copies]
        everything = list(dict.fromkeys([*touched, *uploads, *targets]))
        any_access = (vulkan.ACCESS_SHADER_READ | vulkan.ACCESS_SHADER_WRITE
                      | vulkan.ACCESS_TRANSFER_READ | vulkan.ACCESS_TRANSFER_WRITE)
        both_stages = vulkan.STAGE_COMPUTE_SHADER | vulkan.STAGE_TRANSFER
        if everything:  # order this run after whatever was submitted before it
            record(kp.OpMemoryBarrier(everything, vulkan.ACCESS_SHADER_WRITE | vulkan.ACCESS_TRANSFER_WRITE,
                                      any_access, both_stages, both_stages))
        staging, buffers = {}, []
        for parameter, device_tensor in zip(self.uploads, uploads):
            host = environment.allocate(parameter.size, parameter.dtype.numpy, kp.TensorTypes.host,
                                        f"the staging copy of run input '{parameter.name}'")
            buffers.append(host)
            staging[parameter.name] = host.data()[: parameter.size]
            record(kp.OpTensorCopy([host, device_tensor]))
        previous = None
        for source, algorithm in zip(self.sources, self._algorithms):
            if previous is None:
                if uploads:
                    record(kp.OpMemoryBarrier(uploads, vulkan.ACCESS_TRANSFER_WRITE,
                                              vulkan.ACCESS_SHADER_READ | vulkan.ACCESS_SHADER_WRITE,
                                              vulkan.STAGE_TRANSFER, vulkan.STAGE_COMPUTE_SHADER))
            else:
                record(kp.OpMemoryBarrier(
                    [self._tensor(name) for name in previous.writes], vulkan.ACCESS_SHADER_WRITE,
                    vulkan.ACCESS_SHADER_READ | vulkan.ACCESS_SHADER_WRITE,
                    vulkan.STAGE_COMPUTE_SHADER, vulkan.STAGE_COMPUTE_SHADER))
            kernels.append(len(recorded))
            record(kp.OpAlgoDispatch(algorithm))
            previous = source
        if self.schedule.copies:
            staged = [self._tensor(copy.source) for copy in self.schedule.copies]
            record(kp.OpMemoryBarrier(staged, vulkan.ACCESS_SHADER_WRITE, vulkan.ACCESS_TRANSFER_READ,
                                      vulkan.STAGE_COMPUTE_SHADER, vulkan.STAGE_TRANSFER))
            for source, target in zip(staged, targets):
                record(kp.OpTensorCopy([source, target]))
            record(kp.OpMemoryBarrier(targets, vulkan.ACCESS_TRANSFER_WRITE, any_access,
                                      vulkan.STAGE_TRANSFER, both_stages))
        return Recording(sequence, staging, buffers, kernels)

    def submit(self, values: dict[str, np.ndarray], counter_seed: bool = False) -> None:
        """Start one run: `values` (parameter name -> array of the parameter's dtype and size) go into
        the next recording's staging memory, then its command buffer is submitted without waiting.
        `counter_seed`: the values hold the environment's counter seed, to advance once submitted."""
        self._check_indices(values)
        if self.checked:
            self._replay_checked(values)
            if counter_seed:
                self.environment.seed_taken(self)
            return
        environment = self.environment
        with environment.exclusive():
            environment.check_other_threads(self)
            if not self.commands:  # nothing to do; Vulkan does not allow submitting an empty command buffer
                return
            recording = self._recordings[self._turn]
            self._turn = (self._turn + 1) % len(self._recordings)
            environment.wait_for(recording.sequence)
            for name, view in recording.staging.items():
                view[...] = values[name]
            self._held.ran = True
            environment.submit(recording.sequence, self, counter_seed)

    def profile(self, repeats: int = 5) -> list[tuple[str, str, float]]:
        """Run the graph `repeats` times, as `repeats` calls of env.run(graph) would (its writes take
        effect, each run uploads its inputs' current values and takes the next seed), and return, per
        kernel, its name, its ops and the median device time in microseconds (from GPU timestamps)."""
        environment = self.environment
        environment.synchronize()
        with environment.exclusive():
            environment.check_other_threads(self)
        if not self.commands:
            return []
        recording = self._record(environment.kp, timestamps=True)
        period_us = environment.device.limits.timestamp_period / 1000.0
        times = []
        for _ in range(repeats):
            with environment.exclusive():  # one seed a run, also with runs in other threads
                values = environment.run_values(self)
                self._check_indices(values)
                for name, value in values.items():
                    recording.staging[name][...] = value
                environment.seed_taken(self)  # before the eval: Ctrl-C in it must not hand the seed out again
                recording.sequence.eval()
            self._held.ran = True
            stamps = np.array(recording.sequence.get_timestamps(), np.float64)
            times.append([(stamps[k + 1] - stamps[k]) * period_us for k in recording.kernels])
        median = np.median(np.array(times), axis=0) if times else []
        return [(source.name, "+".join(dict.fromkeys(source.ops)), float(t)) for source, t in zip(self.sources, median)]

    def _check_indices(self, values: dict[str, np.ndarray] | None = None) -> None:
        """Indices read from parameters must lie in the range their op requires: the uploaded `values` every
        run (a host-side check), or in DESCENT_DEBUG mode every index parameter as it is on the device."""
        for source in self.index_parameters:
            name = source.parameter.name
            if values is None:
                stored = self.environment.read(source.parameter)
            elif name in values:
                stored = values[name]
            else:
                continue
            if (problem := source.out_of_range(stored)) is not None:
                raise IndexError(at_user_line(f"run: {problem}"))

    def _replay_checked(self, values: dict[str, np.ndarray]) -> None:
        """DESCENT_DEBUG mode: dispatch kernel by kernel and stop at the first NaN or infinity stored,
        putting back the parameters earlier kernels wrote, so a refused or interrupted run changes none."""
        environment = self.environment
        written = self.writes | {parameter.name for parameter in self.uploads}  # the seed too
        before = {environment.parameters[name]: environment.read(environment.parameters[name]) for name in written}
        try:
            for parameter in self.uploads:
                environment.write(parameter, values[parameter.name].reshape(parameter.shape))
            self._check_indices()
            self._dispatch_checked()
        except (FloatingPointError, IndexError, KeyboardInterrupt):
            for parameter, value in before.items():
                environment.write(parameter, value)
            raise

    def _dispatch_checked(self) -> None:
        """Dispatch the kernels one at a time, checking each one's float stores; a run that gets
        through them all has dispatched every pipeline (see `Held`)."""
        environment = self.environment
        kp = environment.kp
        manager = environment.device.manager
        staged_targets = {copy.source: copy.target for copy in self.schedule.copies}
        for source, algorithm in zip(self.sources, self._algorithms):
            sequence = manager.sequence()
            sequence.record(kp.OpAlgoDispatch(algorithm))
            sequence.eval()
            for name in source.writes:
                if (found := self._non_finite(name)) is None:
                    continue
                value, position, count = found
                raise FloatingPointError(
                    f"DESCENT_DEBUG: {source.name} stored {value} at element {position} of "
                    f"{staged_targets.get(name, name)} ({_count(count)}); it computes "
                    f"{', '.join(dict.fromkeys(source.ops))} from {', '.join(source.locations)}"
                    f"{self._non_finite_inputs(source)}; no parameter keeps this run's writes")
        self._held.ran = True
        for copy in self.schedule.copies:
            manager.sequence().eval(kp.OpTensorCopy([self._tensor(copy.source), self._tensor(copy.target)]))

    def _non_finite(self, name: str) -> tuple[float, int, int] | None:
        """The first NaN or infinity in float buffer `name` as the device holds it now (value, element,
        count of them), or None."""
        buffer = self.schedule.buffers[name]
        if not buffer.dtype.is_float:
            return None
        tensor = self._tensor(name)
        self.environment.device.manager.sequence().eval(self.environment.kp.OpTensorSyncLocal([tensor]))
        stored = np.asarray(tensor.data()[: buffer.size])
        bad = np.flatnonzero(~np.isfinite(stored))
        return (stored[bad[0]], int(bad[0]), bad.size) if bad.size else None

    def _non_finite_inputs(self, source: KernelSource) -> str:
        """The parameters `source` reads that already held a NaN or infinity (a run input, a weight), as a
        clause for its error: the kernel passed them on rather than making them."""
        clauses, inputs = [], {parameter.name for parameter in self.inputs}
        for name in dict.fromkeys(source.bindings):
            parameter = self.schedule.buffers[name].parameter
            if parameter is None or name in source.writes or (found := self._non_finite(name)) is None:
                continue
            value, position, count = found
            kind = "run input" if parameter in inputs else "parameter"
            clauses.append(f"{kind} '{parameter}' already held {value} at element {position} ({_count(count)})")
        if not clauses:
            return ""
        return f"; its {'; its '.join(clauses)}: the values came in with it, not from this kernel"

    @property
    def kernel_count(self) -> int:
        """Dispatches per run."""
        return len(self.sources)

    @property
    def memory_bytes(self) -> int:
        """Bytes of the temporary slots this graph binds beyond the parameters; live graphs share
        slots, so `env.device_bytes` counts each once where a sum of these would not."""
        return self.schedule.temporary_bytes

    @property
    def shaders(self) -> list[str]:
        """The GLSL of every kernel, in dispatch order."""
        return [source.glsl for source in self.sources]

    def summary(self) -> str:
        """A readable report: the kernel count and bytes of temporaries, then each kernel's last op, the buffers
        it writes and the user lines of the ops fused into it."""
        lines = [f"{self.kernel_count} kernel(s), {self.memory_bytes} bytes of temporaries"]
        for source in self.sources:
            outputs = ", ".join(source.writes)
            lines.append(f"  {source.name}: {'+'.join(source.ops[-1:])} -> {outputs}; ops from "
                         f"{', '.join(source.locations)}")
        return "\n".join(lines)


def _count(non_finite: int) -> str:
    return f"{non_finite} non-finite value{'s' * (non_finite != 1)}"


def index_parameters(scope: Scope) -> list[IndexSource]:
    """Every index range the graph requires of indices read from a parameter, with the views and casts
    between (an op that copies, contiguous, is passed through)."""
    found = []
    for required in scope.index_ranges:
        source, steps = scope.node(required.node_id), []
        while source.op in ("cast", "view", "contiguous"):
            if source.op == "view":
                steps.insert(0, (source.attrs.chain, source.shape))
            elif source.op == "cast":
                steps.insert(0, np.dtype(source.dtype.numpy).name)
            source = scope.node(source.inputs[0])
        if source.op == "read":
            found.append(IndexSource(source.attrs, tuple(steps), required))
    return found
