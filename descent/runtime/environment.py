"""The Environment: the device, the parameters' memory, and building and running graphs."""

from __future__ import annotations

import hashlib
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from descent import arguments
from descent.errors import DeviceError, DTypeError, GraphError, ShapeError, at_user_line, user_location
from descent.graph.array import Array
from descent.graph.dtype import DType, as_dtype, bool_, float32
from descent.graph.parameter import Parameter
from descent.graph.scope import Scope
from descent.graph.view import as_shape, broadcast_shapes
from descent.runtime.build import compile_scope
from descent.runtime.device import Device, _import_kp, open_device
from descent.runtime.executable import Executable, Held, index_parameters

MAX_IN_FLIGHT = 2  # runs submitted and not yet waited for
SPIN_SECONDS = 0.002  # on GPUs, poll a fence this long before sleeping in the driver's wait (slow to wake)


class Environment:
    """Owns a Vulkan device and the parameters on it; builds graphs from Python functions and runs them."""

    def __init__(self, device: int | str | None = None, seed: int = 0, deterministic: bool | None = None) -> None:
        """Open `device` (index or name substring; default DESCENT_DEVICE, else the first discrete GPU).
        `seed` starts the run counter random numbers use when `run` is given none; `deterministic`
        (default DESCENT_DETERMINISTIC) avoids atomics so every result is bit-identical run to run."""
        if device is not None and (isinstance(device, bool) or not isinstance(device, int | str | np.integer)):
            raise TypeError(at_user_line(f"Environment: device must be an index or a name, got {device!r}"))
        deterministic = (_flag("DESCENT_DETERMINISTIC") if deterministic is None
                         else arguments.flag("Environment", "deterministic", deterministic))
        _device_seed("Environment", seed)
        self.device: Device = (open_device(device) if device is not None
                               else open_device(os.environ.get("DESCENT_DEVICE"), "DESCENT_DEVICE"))
        self.kp = _import_kp()
        self.deterministic = deterministic
        self.checked = _flag("DESCENT_DEBUG")
        self.parameters: dict[str, Parameter] = {}
        self._tensors: dict[str, Any] = {}
        self._transfer = self.device.manager.sequence()
        self._constants: dict[tuple, Parameter] = {}
        self._next_seed = int(seed)
        self._slots: dict[tuple, Any] = {}  # ("slot", index, bytes, element type) -> kp tensor
        self._algorithms: dict[tuple, Any] = {}  # ("algorithm", SPIR-V, tensors, workgroups, formats) -> kp pipeline
        self._users: dict[tuple, int] = {}  # a slot's or pipeline's key -> the live graphs holding it
        self._in_flight: list[Pending] = []
        self._lock = threading.RLock()  # runs may come from several threads; the queue takes one at a time
        self._spin = SPIN_SECONDS if self.device.kind != "cpu" else 0.0  # a CPU driver needs the core we'd spin on
        weakref.finalize(self, _wait_all, self._in_flight, 0.0)
        self.seed_parameter = self.parameter("descent.seed", (), "uint32")

    def __repr__(self) -> str:
        return f"Environment(device={self.device.index}: {self.device.name!r}, {len(self.parameters)} parameters)"

    def parameter(self, name: str, shape: tuple[int, ...] | int, dtype: DType | str = float32,
                  init: np.ndarray | float | None = None) -> Parameter:
        """Create a persistent device array (zeros unless `init` is given)."""
        if not isinstance(name, str) or not name:
            raise TypeError(at_user_line(f"parameter: the name must be a non-empty string, got {name!r}"))
        if isinstance(shape, np.ndarray) and (shape.ndim > 1 or shape.dtype.kind not in "iu") and init is None:
            kind = {"i": "'int32', ", "u": "'uint32', ", "b": "'bool', "}.get(shape.dtype.kind, "")
            raise TypeError(at_user_line(
                f"parameter '{name}': the second argument is a shape, got a {shape.dtype} array of shape "
                f"{shape.shape}; to start from its values, pass them as init: "
                f"env.parameter({name!r}, {shape.shape}, {kind}init=values)"))
        shape = as_shape(shape, f"parameter '{name}'")
        if any(s < 0 for s in shape):
            raise ShapeError(at_user_line(f"parameter '{name}': negative size in shape {shape}"))
        if name in self.parameters:
            raise GraphError(at_user_line(f"parameter '{name}' already exists in this Environment"))
        parameter = Parameter(name, shape, as_dtype(dtype), self)
        if init is not None:
            init = np.asarray(init)
            if broadcast_shapes(init.shape, shape) != shape:
                raise ShapeError(at_user_line(
                    f"parameter '{name}': init of shape {init.shape} does not fit shape {shape}"))
        limit = self.device.limits.max_storage_buffer_range
        if parameter.nbytes > limit:
            raise DeviceError(at_user_line(
                f"parameter '{name}' needs {parameter.nbytes} bytes, more than this device's storage-buffer "
                f"range of {limit} bytes ({self.device.name}); use a smaller shape"))
        self._tensors[name] = self.allocate(parameter.size, parameter.dtype.numpy, self.kp.TensorTypes.device,
                                            f"parameter '{name}'")
        self.parameters[name] = parameter
        try:
            if init is not None:
                self.write(parameter, np.broadcast_to(init, shape))
            else:
                self._sync([self._tensors[name]], to_device=True)
        except Exception:  # a refused init leaves no half-made parameter behind: the retry can take the name
            del self.parameters[name], self._tensors[name]
            raise
        return parameter

    def discard(self, names: list[str]) -> None:
        """Drop parameters that no graph uses yet (those a failed model build made), freeing their names."""
        for name in names:
            del self.parameters[name], self._tensors[name]

    @property
    def device_bytes(self) -> int:
        """Device memory this Environment holds: every parameter (model, optimiser state, inputs,
        constants) and the temporary slots its graphs share."""
        parameters = sum(max(p.size, 1) * p.dtype.itemsize for p in self.parameters.values())
        with self._lock:  # a graph dropped in another thread may free slots meanwhile
            return parameters + sum(max(key[2] // 4, 1) * 4 for key in self._slots)

    def unique_name(self, prefix: str) -> str:
        """`prefix`, or `prefix2`, `prefix3`... : the first that no parameter name starts with."""
        taken = {name.split(".")[0] for name in self.parameters}
        candidate, number = prefix, 1
        while candidate in taken:
            number += 1
            candidate = f"{prefix}{number}"
        return candidate

    def constant_parameter(self, array: np.ndarray, dtype: DType) -> Parameter:
        """A hidden parameter holding a numpy constant of a graph; equal constants share one."""
        key = (dtype.name, array.shape, hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest())
        if key not in self._constants:
            self._constants[key] = self.parameter(self.unique_name(f"constant{len(self._constants) + 1}"),
                                                  array.shape, dtype, init=array)
        return self._constants[key]

    def tensor(self, name: str) -> Any:
        """The kp tensor holding the parameter named `name` in device memory (what executables bind)."""
        return self._tensors[name]

    def slot(self, index: int, nbytes: int, dtype: np.dtype | type = np.float32) -> tuple[tuple, Any]:
        """Device memory for a graph's temporary slot, and the key to `release` it by. Temporaries are
        dead once a run ends and runs never overlap, so live graphs share the Environment's slots:
        rebuilding a graph allocates nothing. `dtype` is the element type kp knows it by (a staged
        write is copied only to its own type)."""
        key = ("slot", index, nbytes, np.dtype(dtype).str)
        with self._lock:
            if key not in self._slots:
                kind = self.kp.TensorTypes.device if self.checked else self.kp.TensorTypes.storage  # read when checked
                self._slots[key] = self.allocate(nbytes // np.dtype(dtype).itemsize, dtype, kind, "a temporary")
            self._users[key] = self._users.get(key, 0) + 1
            return key, self._slots[key]

    def allocate(self, size: int, dtype: np.dtype | type, kind: Any, what: str) -> Any:
        """A kp tensor of `size` zeros (at least one) of `kind`; a failed allocation, on the device or of
        the host array that fills it, becomes an error naming what and how much."""
        nbytes = max(size, 1) * np.dtype(dtype).itemsize
        try:
            return self.device.manager.tensor_t(np.zeros(max(size, 1), dtype), kind)
        except (RuntimeError, MemoryError) as error:
            raise DeviceError(at_user_line(
                f"could not allocate {nbytes} bytes of device memory for {what} on {self.device.name} "
                f"({self.device_bytes} bytes held already): {error or type(error).__name__}; use smaller "
                f"shapes or batches")) from None

    def algorithm(self, tensors: list, spirv: bytes, workgroups: tuple[int, int, int],
                  texel_formats: tuple[int, ...] = ()) -> tuple[tuple, Any]:
        """A compiled pipeline bound to `tensors`, and the key to `release` it by. Live graphs binding the
        same kernel to the same buffers share it (creating pipelines costs driver time and, on some
        drivers, memory never returned). A non-zero VkFormat in `texel_formats` binds that tensor as a
        uniform texel buffer."""
        key = ("algorithm", spirv, tuple(tensors), tuple(workgroups), tuple(texel_formats))
        with self._lock:
            if key not in self._algorithms:
                self._algorithms[key] = self.device.manager.algorithm(list(tensors), spirv, list(workgroups),
                                                                      texel_formats=list(texel_formats))
            self._users[key] = self._users.get(key, 0) + 1
            return key, self._algorithms[key]

    def release(self, held: Held, failed: bool = False) -> None:
        """A graph is gone, or `failed` to build: free the slots and pipelines no live graph holds any
        more (see `Held`)."""
        if not (held.ran or failed):
            return
        with self._lock:
            for key in held.keys:
                self._users[key] -= 1
                if not self._users[key]:
                    del self._users[key]
                    (self._slots if key[0] == "slot" else self._algorithms).pop(key)
            held.keys.clear()

    def _check(self, parameter: Parameter) -> None:
        if not isinstance(parameter, Parameter) or parameter.environment is not self:
            raise GraphError(at_user_line(f"{parameter!r} is not a parameter of this Environment"))

    def write(self, parameter: Parameter, value: np.ndarray | float | int) -> None:
        """Upload `value` into the parameter; its shape must match exactly and its values fit the dtype."""
        converted = self._convert(parameter, value)
        self.synchronize()
        if parameter.size:
            self._tensors[parameter.name].data()[: parameter.size] = converted
        self._sync([self._tensors[parameter.name]], to_device=True)

    def _convert(self, parameter: Parameter, value: np.ndarray | float | int, where: str = "write") -> np.ndarray:
        """Check `value` against the parameter and return it flat, in the parameter's dtype (errors name `where`)."""
        self._check(parameter)
        array = np.asarray(value)
        if array.shape != parameter.shape:
            raise ShapeError(at_user_line(
                f"{where}: array of shape {array.shape} does not fit parameter '{parameter.name}' "
                f"of shape {parameter.shape}"))
        if array.dtype.kind not in "biuf":
            raise DTypeError(at_user_line(f"{where}: cannot store {array.dtype} data in '{parameter.name}'"))
        dtype = parameter.dtype
        if dtype == bool_:
            return array.astype(bool).astype(np.uint32).ravel()
        if array.dtype == dtype.numpy:
            return array.ravel()
        integral = np.isfinite(array) & (array == np.round(array)) if array.dtype.kind == "f" else True
        if not dtype.is_float and not np.all(integral):
            raise DTypeError(at_user_line(
                f"{where}: '{parameter.name}' holds {dtype.name}, but the array has non-integer values"))
        if not dtype.is_float and array.size:
            info = np.iinfo(dtype.numpy)
            if array.min().item() < info.min or array.max().item() > info.max:  # Python compares exactly
                raise DTypeError(at_user_line(
                    f"{where}: values of '{parameter.name}' lie outside the range of {dtype.name}"))
        with np.errstate(over="ignore"):
            converted = array.astype(dtype.numpy)
        if dtype.is_float and array.dtype.kind == "f" and np.any(np.isinf(converted) & np.isfinite(array)):
            raise DTypeError(at_user_line(
                f"{where}: values of '{parameter.name}' lie outside the range of {dtype.name} (its largest is "
                f"{np.finfo(dtype.numpy).max:.7g}); they would be stored as infinity"))
        return converted.ravel()

    def read(self, parameter: Parameter) -> np.ndarray:
        """Download the parameter's current value as a new numpy array (after the runs submitted so far)."""
        self._check(parameter)
        tensor = self._tensors[parameter.name]
        self._sync([tensor], to_device=False)
        data = np.array(tensor.data()[: parameter.size], copy=True)
        if parameter.dtype == bool_:
            data = data != 0
        return data.reshape(parameter.shape)

    def stored(self, parameter: Parameter) -> np.ndarray:
        """The parameter's current value, flat and in its storage type (bool as uint32): what an
        upload of it copies."""
        return self.read(parameter).ravel().astype(parameter.dtype.numpy)

    def _sync(self, tensors: list, to_device: bool) -> None:
        self.synchronize()
        op = self.kp.OpTensorSyncDevice(tensors) if to_device else self.kp.OpTensorSyncLocal(tensors)
        self._transfer.eval(op)

    def synchronize(self) -> None:
        """Wait until every run submitted so far has finished on the device."""
        with self._lock:
            _wait_all(self._in_flight, self._spin)

    def exclusive(self) -> threading.RLock:
        """The lock a run holds from choosing its recording until it is submitted, so that two
        threads never fill one recording's staging memory or submit one sequence twice."""
        return self._lock

    def submit(self, sequence: Any, graph: Executable, counter_seed: bool = False) -> None:
        """Submit a recorded run of `graph` without waiting for it; at most MAX_IN_FLIGHT are pending.
        The caller holds `exclusive()` and has called `check_other_threads` before staging its inputs.
        With `counter_seed` (the run took the counter's seed) the counter advances exactly when the run
        is submitted, even where Ctrl-C lands just before or after: a seed is never used twice or skipped."""
        with self._lock:
            if len(self._in_flight) >= MAX_IN_FLIGHT:
                _wait(self._in_flight[0].sequence, self._spin)
                self._in_flight.pop(0)
            self._in_flight.append(Pending(sequence, graph, threading.get_ident()))
            if counter_seed:
                self.seed_taken(graph)
            try:
                sequence.eval_async()
            except BaseException:
                if counter_seed and graph.uses_seed and not sequence.is_running():
                    self._next_seed -= 1  # not submitted after all
                raise

    def check_other_threads(self, graph: Executable) -> None:
        """Refuse a run that shares a written parameter with a run another thread still has going:
        which one lands first would be a race."""
        me = threading.get_ident()
        for pending in self._in_flight:
            if pending.thread == me:
                continue
            other = pending.graph
            shared = graph.writes & (other.writes | other.reads) | graph.reads & other.writes
            if shared and not pending.sequence.is_complete():
                raise GraphError(at_user_line(
                    f"run: parameter '{sorted(shared)[0]}' is shared with a graph (built at {other.location}) that "
                    "another thread is still running and one of them writes it, so the result would depend on "
                    "which finishes first; call env.synchronize() in that thread first, or run both from one thread"))

    def wait_for(self, sequence: Any) -> None:
        """Wait for `sequence` if it is still pending (before its staging memory is written again). A pending
        run is forgotten only once waited for: Ctrl-C during the wait leaves it tracked, so the next run of
        its recording waits for it rather than failing to submit it a second time."""
        with self._lock:
            for pending in self._in_flight:
                if pending.sequence is sequence:
                    _wait(sequence, self._spin)
                    self._in_flight.remove(pending)
                    return

    def build_graph(self, fn: Callable[[Scope], Any], training: bool = False,
                    inputs: Sequence[Parameter] = ()) -> Executable:
        """Trace `fn(scope)` into a graph, fuse it into kernels, compile them and record the run.
        `inputs` are parameters given new values at each `run`: their uploads are recorded into the
        graph's command buffer, so a training step is one submission. A build that fails leaves no
        constant of its own behind."""
        if not isinstance(inputs, list | tuple):
            raise TypeError(at_user_line(f"build_graph: inputs must be a list of parameters, got {inputs!r}"))
        for parameter in inputs:
            self._check(parameter)
        constants = dict(self._constants)
        try:
            return self._build(fn, training, tuple(inputs))
        except BaseException:
            made = [key for key in self._constants if key not in constants]
            self.discard([self._constants.pop(key).name for key in made])
            raise

    def _build(self, fn: Callable[[Scope], Any], training: bool, inputs: tuple[Parameter, ...]) -> Executable:
        scope = Scope(self, training=training)
        returned = fn(scope)
        if isinstance(returned, Array) and not scope.writes:
            raise GraphError(at_user_line(
                "build_graph: the function returned an Array and writes no parameter; a graph keeps only what "
                "it writes: store the result with s.write(parameter, value) and read it with env.read(parameter)"))
        plan, sources, spirv = compile_scope(scope, self.device, self.deterministic)
        return Executable(self, plan, sources, spirv, index_parameters(scope), inputs, user_location())

    def run(self, graph: Executable, inputs: dict[Parameter, np.ndarray] | None = None,
            seed: int | None = None) -> None:
        """Run a built graph: upload `inputs` (parameters declared with build_graph(inputs=...); one
        left out keeps its current value) and submit the recorded command buffer. It returns before
        the device finishes; `read`, `write` and `synchronize` wait. Random numbers come from `seed`,
        or, when it is None, from a counter that advances with every run of a graph that draws them."""
        if not isinstance(graph, Executable):
            raise TypeError(at_user_line(f"run: expects a graph from env.build_graph, got {type(graph).__name__}"))
        if graph.environment is not self:
            raise GraphError(at_user_line("run: that graph was built by another Environment"))
        if inputs is not None and not isinstance(inputs, dict):
            raise TypeError(at_user_line(f"run: inputs must be a dict {{parameter: values}}, "
                                         f"got {type(inputs).__name__}"))
        inputs = inputs or {}
        if seed is not None:
            _device_seed("run", seed)
        for parameter in inputs:
            if parameter not in graph.inputs:
                raise GraphError(at_user_line(
                    f"run: '{getattr(parameter, 'name', parameter)}' is not an input of this graph; declare it "
                    "with build_graph(..., inputs=[...]) or use env.write"))
        with self._lock:  # the counter's seed is read and advanced by one run at a time
            graph.submit(self.run_values(graph, inputs, seed), counter_seed=seed is None)

    def run_values(self, graph: Executable, inputs: dict[Parameter, np.ndarray] | None = None,
                   seed: int | None = None) -> dict[str, np.ndarray]:
        """What a run of `graph` uploads, by parameter name: `inputs` (checked), the current values of
        inputs not given, and the seed, the counter's when none is given (`seed_taken` advances it once
        the run is submitted, so a refused run leaves it)."""
        inputs = inputs or {}
        values = {p.name: self._convert(p, inputs[p], "run") if p in inputs else self.stored(p) for p in graph.inputs}
        if graph.uses_seed:
            seed = self._next_seed % 2**32 if seed is None else seed
            values[self.seed_parameter.name] = np.array([seed], np.uint32)
        return values

    def seed_taken(self, graph: Executable) -> None:
        """A run of `graph` with the counter's seed was submitted: the next one draws other numbers."""
        if graph.uses_seed:
            self._next_seed += 1


@dataclass
class Pending:
    """A submitted run not yet waited for."""

    sequence: Any
    graph: Executable
    thread: int


def _device_seed(owner: str, seed: Any) -> None:
    """Refuse a seed that is not an int in [0, 2**32): the device's generator takes 32 bits, and a
    larger one (2**64 too) would run as another."""
    arguments.seed(owner, seed)
    if not 0 <= seed < 2**32:
        raise ValueError(at_user_line(f"{owner}: seed must be in [0, 2**32) (the device's generator takes 32 bits), "
                                      f"got {seed}"))


def _flag(variable: str) -> bool:
    """An on/off environment variable: unset, empty, 0, false, no or off is off; 1, true, yes or on is on."""
    value = os.environ.get(variable, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ValueError(at_user_line(f"{variable}={os.environ[variable]!r}: use 1 (on) or 0 (off)"))


def _wait(sequence, spin: float) -> None:
    """Wait for a submitted sequence: poll its fence for up to `spin` seconds, then block. One not
    submitted (an interrupt came between its tracking and its submission) has nothing to wait for."""
    if not sequence.is_running():
        return
    if spin:
        deadline = time.perf_counter() + spin
        while not sequence.is_complete() and time.perf_counter() < deadline:
            pass
    sequence.eval_await()


def _wait_all(in_flight: list[Pending], spin: float) -> None:
    """Wait for every pending run, oldest first, each forgotten only once waited for."""
    while in_flight:
        _wait(in_flight[0].sequence, spin)
        in_flight.pop(0)
