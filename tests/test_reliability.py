"""Reliability: checked mode, determinism across processes, memory over long runs, and checkpoints that
survive a kill during a save."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import descent as dc
from descent import nn, optim
from descent.nn import checkpoint

ROOT = Path(__file__).resolve().parents[1]
PYTHONPATH = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])  # keeps kp where it was found


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=600, cwd=ROOT, env={**os.environ, "PYTHONPATH": PYTHONPATH, **env}, check=False)


NAN_PROGRAM = """
    import numpy as np, descent as dc
    env = dc.Environment()
    x = env.parameter("x", (4,), init=np.array([1.0, 2.0, -3.0, 4.0], np.float32))
    y = env.parameter("y", ())
    def build(s):
        a = dc.log(s.read(x))             # line 7: the NaN is born here
        s.write(y, dc.sum(a * 2.0))
    env.run(env.build_graph(build))
    print("result", env.read(y))
"""


def test_checked_mode_names_the_kernel_and_line_of_the_first_nan() -> None:
    unchecked = _python(NAN_PROGRAM)
    assert unchecked.returncode == 0 and "result nan" in unchecked.stdout
    checked = _python(NAN_PROGRAM, DESCENT_DEBUG="1")
    assert checked.returncode != 0
    assert "FloatingPointError: DESCENT_DEBUG: kernel0 stored nan" in checked.stderr
    assert "log" in checked.stderr and "<string>:7" in checked.stderr


def test_checked_mode_undoes_the_writes_of_a_refused_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run stopped at its second kernel's NaN had already stored its first kernel's parameter
    writes: an optimiser step half applied, with the error saying nothing of it."""
    monkeypatch.setenv("DESCENT_DEBUG", "1")
    env = dc.Environment()
    w = env.parameter("w", (8, 8), init=np.ones((8, 8), np.float32))
    count = env.parameter("count", (8, 8), "int32", init=np.ones((8, 8), np.int32))
    out = env.parameter("out", (8, 8), init=np.full((8, 8), 7.0, np.float32))

    def build(s):
        doubled = s.read(w) * 2.0
        s.write(w, doubled)
        s.write(count, s.read(count) + 1)
        s.write(out, dc.log(doubled @ doubled - 100.0))

    graph = env.build_graph(build)
    assert graph.kernel_count == 2 and "param:" in graph.summary().splitlines()[1]  # w or count, by device
    with pytest.raises(FloatingPointError, match=r"kernel1 stored nan.*no parameter keeps this run's writes"):
        env.run(graph)
    np.testing.assert_array_equal(env.read(w), np.ones((8, 8)))
    np.testing.assert_array_equal(env.read(count), np.ones((8, 8)))
    np.testing.assert_array_equal(env.read(out), np.full((8, 8), 7.0))
    # a run input refused for a NaN, or for an index beyond its table, was left uploaded
    x = env.parameter("checked_x", (3,), init=np.array([1.0, 2.0, 3.0], np.float32))
    y = env.parameter("checked_y", (3,))
    logs = env.build_graph(lambda s: s.write(y, dc.log(s.read(x))), inputs=[x])
    with pytest.raises(FloatingPointError, match=r"kernel0 stored nan"):
        env.run(logs, {x: np.array([-1.0, 2.0, 3.0], np.float32)})
    np.testing.assert_array_equal(env.read(x), [1.0, 2.0, 3.0])
    rows = env.parameter("checked_rows", (2,), "int32")
    table = env.parameter("checked_table", (2,), init=np.array([5.0, 5.0], np.float32))
    taken = env.build_graph(lambda s: s.write(table, dc.take(s.read(table), s.read(rows)) + 2.0), inputs=[table])
    with pytest.raises(IndexError, match=r"index 9 in 'checked_rows'"):
        env.write(rows, np.array([0, 9], np.int32))
        env.run(taken, {table: np.array([7.0, 7.0], np.float32)})
    np.testing.assert_array_equal(env.read(table), [5.0, 5.0])


@pytest.mark.parametrize("debug", ["0", "1"])
def test_a_refused_run_takes_no_seed(monkeypatch: pytest.MonkeyPatch, debug: str) -> None:
    """A run refused for an index beyond its table (or, checked, for a NaN) advanced the seed counter, so
    the runs after it drew other random numbers than a program without the refused call."""
    monkeypatch.setenv("DESCENT_DEBUG", debug)

    def program(refuse: bool) -> np.ndarray:
        env = dc.Environment(seed=0)
        table = env.parameter("table", (5,), init=np.arange(5, dtype=np.float32))
        rows, x = env.parameter("rows", (2,), "int32"), env.parameter("x", (4,), init=np.ones(4, np.float32))
        out = env.parameter("out", (2, 4))

        def build(s):
            taken = dc.sum(dc.take(s.read(table), s.read(rows)))
            s.write(out, dc.stack([s.random_uniform((4,)) + taken, dc.log(s.read(x))]))

        graph = env.build_graph(build, inputs=[rows, x])
        ones, good = np.ones(4, np.float32), np.array([0, 1], np.int32)
        env.run(graph, {rows: good, x: ones})
        if refuse:
            with pytest.raises(IndexError, match="index 9 in 'rows'"):
                env.run(graph, {rows: np.array([0, 9], np.int32), x: ones})
            if debug == "1":
                with pytest.raises(FloatingPointError, match="stored nan"):
                    env.run(graph, {rows: good, x: -ones})
        env.run(graph, {rows: good, x: ones})
        return env.read(out)

    np.testing.assert_array_equal(program(refuse=True), program(refuse=False))


def test_ctrl_c_in_a_checked_run_changes_no_parameter(monkeypatch: pytest.MonkeyPatch) -> None:
    """DESCENT_DEBUG mode dispatches kernel by kernel: Ctrl-C between two of them left the parameters the
    first had written (Adam's moments updated, the weights not) and the seed counter unadvanced."""
    from descent.runtime.executable import Executable

    monkeypatch.setenv("DESCENT_DEBUG", "1")
    env = dc.Environment(seed=0)
    x = env.parameter("x", (64,), init=np.arange(64, dtype=np.float32))
    total, noise = env.parameter("total", ()), env.parameter("noise", (64,))

    def build(s):
        s.write(total, dc.sum(s.read(x)))
        s.write(noise, s.random_uniform((64,)) + s.read(x))
        s.write(x, s.read(x) * 2.0)

    graph = env.build_graph(build)
    assert len(graph.sources) > 1
    before = {p: env.read(p) for p in (x, total, noise)}
    checks, non_finite = [], Executable._non_finite

    def ctrl_c_after_the_first_kernel(self, name):
        checks.append(name)
        if len(checks) == len(graph.sources[0].writes) + 1:
            raise KeyboardInterrupt
        return non_finite(self, name)

    monkeypatch.setattr(Executable, "_non_finite", ctrl_c_after_the_first_kernel)
    with pytest.raises(KeyboardInterrupt):
        env.run(graph)
    monkeypatch.setattr(Executable, "_non_finite", non_finite)
    for parameter, value in before.items():
        np.testing.assert_array_equal(env.read(parameter), value)
    env.run(graph)
    drawn = env.read(noise)
    env.write(x, before[x])
    env.run(graph, seed=0)
    np.testing.assert_array_equal(env.read(noise), drawn)


def test_an_interrupted_wait_leaves_the_graph_working(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C during the wait for a run, in env.synchronize or in the next env.run, dropped the run from those
    in flight before it was waited for: every second run of that graph after raised kp's 'evalAsync called
    when an eval async was called without successful wait', forever."""
    from descent.runtime import environment

    env = dc.Environment()
    x, count = env.parameter("x", (8,)), env.parameter("count", ())
    graph = env.build_graph(lambda s: s.write(count, s.read(count) + s.read(x)[0]), inputs=[x])
    ones = np.ones(8, np.float32)
    wait = environment._wait
    for interrupted in (env.synchronize, lambda: env.run(graph, {x: ones})):
        env.run(graph, {x: ones})
        env.run(graph, {x: ones})  # both recordings in flight
        pressed = []

        def ctrl_c(sequence, spin, pressed=pressed):
            if not pressed:
                pressed.append(True)
                raise KeyboardInterrupt
            wait(sequence, spin)

        monkeypatch.setattr(environment, "_wait", ctrl_c)
        with pytest.raises(KeyboardInterrupt):
            interrupted()
        monkeypatch.setattr(environment, "_wait", wait)
        before = float(env.read(count))
        for _ in range(4):
            env.run(graph, {x: ones})
        assert float(env.read(count)) == before + 4


def test_ctrl_c_at_any_moment_of_a_run_loop_leaves_the_graph_working() -> None:
    """The same with a real signal landing anywhere in a loop of runs, as Ctrl-C does (before the fix 56 of 60
    such loops were followed by errors), including between a run's tracking and its submission. The run
    counter's seed advances exactly when a run is submitted: Ctrl-C landing during or just after the
    submission left it unadvanced, so the next run drew the interrupted run's random numbers again."""
    program = """
        import signal, numpy as np, descent as dc
        env = dc.Environment()
        x, count, drawn = env.parameter("x", (256,)), env.parameter("count", ()), env.parameter("drawn", (4,))

        def build(s):
            s.write(count, s.read(count) + 1.0 + 0.0 * dc.sum(s.read(x)))
            s.write(drawn, s.random_uniform((4,)))

        graph = env.build_graph(build, inputs=[x])
        rng, values, armed, explicit = np.random.default_rng(0), np.ones(256, np.float32), [False], 0
        def handler(*_):
            if armed[0]:
                armed[0] = False
                raise KeyboardInterrupt
        signal.signal(signal.SIGALRM, handler)
        for trial in range(60):
            armed[0] = True
            signal.setitimer(signal.ITIMER_REAL, rng.uniform(1e-4, 3e-3))
            try:
                while True:
                    env.run(graph, {x: values})
            except KeyboardInterrupt:
                pass
            before = float(env.read(count))
            taken = int(before) - explicit  # runs submitted with the counter's seed: 0, 1, ...
            env.run(graph, {x: values})
            after = env.read(drawn)
            env.run(graph, {x: values}, seed=taken)
            explicit += 1
            assert np.array_equal(after, env.read(drawn)), ("seed", trial, taken)
            for _ in range(2):
                env.run(graph, {x: values})
            assert float(env.read(count)) == before + 4, (trial, before, float(env.read(count)))
        print("60 interrupted loops")
    """
    result = _python(program)
    assert result.returncode == 0 and "60 interrupted loops" in result.stdout, result.stderr[-2000:]


def test_runs_from_two_threads_never_share_a_seed() -> None:
    """Two threads running graphs that draw random numbers read the run counter's seed before either
    advanced it, so both drew the same numbers (about 1 run in 5 of 600 did)."""
    env = dc.Environment()
    outs = [env.parameter(f"out{i}", (4,)) for i in range(2)]
    xs = [env.parameter(f"x{i}", (64,)) for i in range(2)]
    graphs = [env.build_graph(lambda s, i=i: s.write(outs[i], s.random_uniform((4,)) + 0.0 * dc.sum(s.read(xs[i]))),
                              inputs=[xs[i]]) for i in range(2)]
    drawn: list[tuple[float, ...]] = []

    def work(i: int) -> None:
        ones = np.ones(64, np.float32)
        for _ in range(200):
            env.run(graphs[i], {xs[i]: ones})
            drawn.append(tuple(env.read(outs[i])))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(drawn) == 400 and len(set(drawn)) == 400


def test_checked_mode_says_a_nan_came_in_with_the_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """A NaN in a run's batch or in a weight was blamed on the first kernel that passed it on, as if
    its arithmetic had made it."""
    monkeypatch.setenv("DESCENT_DEBUG", "1")
    env = dc.Environment()
    x = env.parameter("batch_x", (2, 3))
    w = env.parameter("weight", (3,), init=np.array([1.0, np.inf, 2.0], np.float32))
    y = env.parameter("batch_y", (2,))
    scaled = env.build_graph(lambda s: s.write(y, dc.sum(s.read(x) * 2.0, axis=1)), inputs=[x])
    with pytest.raises(FloatingPointError, match=r"kernel0 stored nan at element 1 of param:batch_y .*"
                       r"its run input 'batch_x' already held nan at element 4 \(1 non-finite value\): "
                       r"the values came in with it, not from this kernel"):
        env.run(scaled, {x: np.array([[1, 2, 3], [4, np.nan, 6]], np.float32)})
    weighted = env.build_graph(lambda s: s.write(y, dc.sum(s.read(x) * s.read(w), axis=1)), inputs=[x])
    with pytest.raises(FloatingPointError, match=r"its parameter 'weight' already held inf at element 1"):
        env.run(weighted, {x: np.ones((2, 3), np.float32)})
    logs = env.build_graph(lambda s: s.write(y, dc.sum(dc.log(s.read(x)), axis=1)), inputs=[x])
    with pytest.raises(FloatingPointError, match=r"kernel0 stored nan") as refused:
        env.run(logs, {x: -np.ones((2, 3), np.float32)})
    assert "already held" not in str(refused.value)


VALIDATED_PROGRAM = """
    import numpy as np, descent as dc
    from descent import nn, optim
    env = dc.Environment()
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 20)).astype(np.float32), rng.integers(0, 5, 32).astype(np.int32)
    model = nn.Sequential(nn.Dense(20, 16), nn.ReLU(), nn.Dropout(0.2), nn.Dense(16, 5)).build(env, seed=0)
    trainer = nn.Trainer(env, model, optimizer=optim.Adam(1e-2))
    trainer.fit(x, y, epochs=2, batch_size=12, progress=False)
    trainer.evaluate(x, y)
    w = env.parameter("w", (3, 3), init=np.arange(9, dtype=np.float32).reshape(3, 3))
    staged = env.build_graph(lambda s: s.write(w, s.read(w).T @ s.read(w)))
    env.run(staged)
    empty = env.parameter("empty", (0,))
    for build in (lambda s: None, lambda s: s.write(empty, s.read(empty) * 2.0)):
        env.run(env.build_graph(build))
    staged.profile(repeats=2)
    print("sum", env.read(w).sum())
"""

WRONG_ON_PURPOSE = """
    import numpy as np, descent as dc
    from descent.runtime import vulkan
    env = dc.Environment()
    barrier = env.kp.OpMemoryBarrier([env.device.manager.tensor_t(np.zeros(4, np.float32))], vulkan.ACCESS_SHADER_WRITE,
                                     vulkan.ACCESS_SHADER_READ, vulkan.STAGE_TRANSFER, vulkan.STAGE_TRANSFER)
    env.device.manager.sequence().eval(barrier)
"""


def test_command_buffers_pass_vulkan_validation(tmp_path: Path) -> None:
    """Under the Khronos validation layer with synchronization checks: a staged write copied from a
    buffer made without transfer use, an empty graph submitted a command buffer never recorded, the
    loop probe wrote a buffer after a copy with no barrier, profile's timestamp queries were never
    reset and kp recorded sequences again from a pool that does not allow it. lavapipe forgave all
    five; the Vulkan spec leaves them undefined."""
    folders = [*filter(None, os.environ.get("VK_LAYER_PATH", "").split(os.pathsep)),
               "/usr/share/vulkan/explicit_layer.d", "/etc/vulkan/explicit_layer.d"]
    layers = [Path(folder) / "VkLayer_khronos_validation.json" for folder in folders]
    if not any(layer.exists() for layer in layers):
        pytest.skip("the Khronos validation layer is not installed (Debian: vulkan-validationlayers)")
    (tmp_path / "vk_layer_settings.txt").write_text(
        "khronos_validation.debug_action = VK_DBG_LAYER_ACTION_LOG_MSG\n"
        "khronos_validation.report_flags = error,warn\n"
        "khronos_validation.log_filename = stdout\n"
        "khronos_validation.enables = VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT\n")

    def messages(program: str) -> list[str]:
        result = _python(program, VK_INSTANCE_LAYERS="VK_LAYER_KHRONOS_validation",
                         VK_LAYER_SETTINGS_PATH=str(tmp_path))
        assert result.returncode == 0, result.stderr
        return [line for line in result.stdout.splitlines() if "Validation" in line or "SYNC-HAZARD" in line]

    assert any("VUID-vkCmdPipelineBarrier-srcAccessMask" in line for line in messages(WRONG_ON_PURPOSE)), \
        "the layer did not report a barrier made wrong on purpose: it is not looking"
    reported = messages(VALIDATED_PROGRAM)
    assert not reported, "\n".join(reported[:5])


INDEX_PROGRAM = """
    import numpy as np, descent as dc
    env = dc.Environment()
    table = env.parameter("table", (5, 2))
    rows = env.parameter("rows", (3,), "int32", init=np.array([0, 4, 7], np.int32))
    out = env.parameter("out", (3, 2))
    graph = env.build_graph(lambda s: s.write(out, dc.take(s.read(table), s.read(rows))))
    env.run(graph)
    print("ran")
"""


def test_checked_mode_flags_out_of_range_indices() -> None:
    unchecked = _python(INDEX_PROGRAM)
    assert unchecked.returncode == 0 and "ran" in unchecked.stdout  # clamped: memory-safe, but silent
    checked = _python(INDEX_PROGRAM, DESCENT_DEBUG="1")
    assert checked.returncode != 0
    assert "index 7 in 'rows' (element 2) is out of range for an axis of size 5" in checked.stderr


DETERMINISM_PROGRAM = """
    import numpy as np, descent as dc, sys
    from descent import nn, optim
    env = dc.Environment()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 10, 64).astype(np.int32)
    model = nn.Sequential(nn.Conv2D(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2D(2), nn.Flatten(),
                          nn.Dropout(0.3), nn.Dense(64, 10)).build(env, seed=1)
    trainer = nn.Trainer(env, model, optimizer=optim.Adam(1e-2))
    trainer.fit(x, y, epochs=3, batch_size=16, progress=False)
    weights = np.concatenate([env.read(p).ravel() for p in model.parameters()])
    np.save(sys.argv[1], weights)
"""


def test_training_is_bit_identical_across_processes(tmp_path: Path) -> None:
    outputs = []
    for k in range(2):
        path = tmp_path / f"run{k}.npy"
        result = subprocess.run([sys.executable, "-c", textwrap.dedent(DETERMINISM_PROGRAM), str(path)],
                                cwd=ROOT, capture_output=True, text=True, timeout=600,
                                env={**os.environ, "PYTHONPATH": PYTHONPATH}, check=False)
        assert result.returncode == 0, result.stderr
        outputs.append(np.load(path))
    np.testing.assert_array_equal(outputs[0], outputs[1])


MEMORY_PROGRAM = """
    import gc, numpy as np, descent as dc
    from descent import nn, optim

    def rss():
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * 4096

    env = dc.Environment()
    model = nn.Sequential(nn.Dense(32, 64), nn.ReLU(), nn.Dense(64, 10)).build(env)
    trainer = nn.Trainer(env, model, optimizer=optim.Adam(1e-3))
    x = np.random.default_rng(0).normal(size=(32, 32)).astype(np.float32)
    y = np.zeros(32, np.int32)
    graph, xp, yp, _ = trainer._graph("train", x, y)
    def replays(count):
        for _ in range(count):
            env.run(graph)
    replays(1000)
    start = rss()
    replays(5000)
    middle = rss()
    replays(5000)
    end = rss()
    print("replays", (middle - start) // 1024, (end - middle) // 1024)

    out = env.parameter("out", (32, 10))
    def build(s):
        s.write(out, model(s, s.read(xp)) * 2.0)
    for _ in range(100):
        env.build_graph(build)
    gc.collect()
    start = rss()
    for _ in range(450):
        env.build_graph(build)
    gc.collect()
    middle = rss()
    for _ in range(450):
        env.build_graph(build)
    gc.collect()
    end = rss()
    print("builds", (middle - start) // 1024, (end - middle) // 1024)
"""


def test_long_runs_keep_memory_flat() -> None:
    """10,000 replays of a training graph and 1,000 graph builds: resident memory (which on lavapipe
    includes device memory) must not keep growing. Growth is compared between two equal halves."""
    result = _python(MEMORY_PROGRAM)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.strip().splitlines())
    first, second = (int(v) for v in lines["replays"].split())
    assert second < 1024, f"replays grew resident memory by {second} KiB per 5,000 after warm-up"
    first, second = (int(v) for v in lines["builds"].split())
    assert second < 8 * 1024, f"graph builds grew resident memory by {second} KiB per 450 after warm-up"
    print(result.stdout)


OUT_OF_MEMORY_PROGRAM = """
    import resource, numpy as np, descent as dc
    env = dc.Environment()
    x = env.parameter("x", (4,), init=np.arange(4, dtype=np.float32))
    y = env.parameter("y", (4,))
    graph = env.build_graph(lambda s: s.write(y, s.read(x) * 2.0))
    size = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (size + (1 << 30), resource.getrlimit(resource.RLIMIT_AS)[1]))
    names = []
    try:
        for k in range(64):
            env.parameter(f"big{k}", (16 << 20,))
            names.append(f"big{k}")
        print("never refused")
    except dc.DeviceError as error:
        print("refused", len(names), str(error).replace(chr(10), " "))
    size, refusals = 16 << 20, 0
    while refusals < 40:  # smaller ones, made until refused too: each refusal gives back what it made
        try:
            env.parameter(f"smaller{len(names)}", (size,))
            names.append(f"smaller{len(names)}")
        except dc.DeviceError:
            refusals, size = refusals + 1, size * 93 // 100
    env.discard(names)
    env.run(graph)
    print("after", env.read(y).tolist())
"""


def test_running_out_of_memory_is_an_error_that_leaves_the_environment_working(env) -> None:
    """Parameters of 64 MiB made under an address-space limit 1 GiB above the process's size: the one
    that does not fit is refused with DeviceError naming it (Kompute bound a failed allocation and
    lavapipe crashed), and so are smaller ones after it (a refused tensor gave back memory it had not
    mapped and crashed); after freeing the others a graph built before still runs. A CPU driver's
    device memory is the process's; under such a limit NVIDIA's driver itself crashed (H100, 2026-11-24)."""
    if env.device.kind != "cpu":
        pytest.skip("an address-space limit runs out the memory of a CPU driver only")
    result = _python(OUT_OF_MEMORY_PROGRAM)
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-2000:]}"
    lines = dict(line.split(" ", 1) for line in result.stdout.strip().splitlines())
    made, message = lines["refused"].split(" ", 1)
    assert 1 <= int(made) < 16, result.stdout
    assert f"could not allocate 67108864 bytes of device memory for parameter 'big{made}'" in message, message
    assert "Kompute Tensor could not allocate 67108864 bytes of device memory: ErrorOutOfDeviceMemory" in message
    assert "<string>:12" in message, message
    assert lines["after"] == "[0.0, 2.0, 4.0, 6.0]"


SAVE_PROGRAM = """
    import sys, numpy as np, descent as dc
    from descent.nn import checkpoint
    env = dc.Environment()
    big = env.parameter("big", (12_000_000,), init=np.full(12_000_000, 1.0, np.float32))
    path = sys.argv[1]
    checkpoint.save(env, {"big": big}, path)
    env.write(big, np.full(12_000_000, 2.0, np.float32))
    print("first save done", flush=True)
    while True:
        checkpoint.save(env, {"big": big}, path)
"""


def test_killed_save_leaves_the_previous_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "model.npz"
    process = subprocess.Popen([sys.executable, "-c", textwrap.dedent(SAVE_PROGRAM), str(path)], cwd=ROOT,
                               stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": PYTHONPATH})
    assert process.stdout.readline().strip() == "first save done"
    deadline = time.time() + 60
    while not list(tmp_path.glob(".model.npz.*.partial")) and time.time() < deadline:
        time.sleep(0.005)
    assert list(tmp_path.glob(".model.npz.*.partial")), "the second save never started"
    process.send_signal(signal.SIGKILL)
    process.wait()
    with np.load(path) as stored:
        values = stored["big"]
    assert values.shape == (12_000_000,) and values.min() in (1.0, 2.0) and values.min() == values.max()
    env = dc.Environment()
    small = env.parameter("small", (3,))
    checkpoint.save(env, {"small": small}, path)
    assert not list(tmp_path.glob(".model.npz.*.partial")), "the killed save's temporary was left for good"


def test_a_save_refuses_a_read_only_file_and_a_device_or_pipe(env, tmp_path: Path) -> None:
    """A save renames its temporary over the target, which needs only the folder's permission: it replaced
    a checkpoint the user had made read-only, and put a regular file where a pipe or device was (as root,
    a save to /dev/null would have replaced it)."""
    value = env.parameter("value", (3,))
    pipe = tmp_path / "pipe.npz"
    os.mkfifo(pipe)
    (tmp_path / "link.npz").symlink_to(pipe)
    for target in (pipe, tmp_path / "link.npz"):
        with pytest.raises(nn.CheckpointError, match=r"it is not a regular file \(a device, pipe or socket\)"):
            checkpoint.save(env, {"value": value}, target)
        assert stat.S_ISFIFO(pipe.stat().st_mode)
    protected = tmp_path / "best.npz"
    protected.write_bytes(b"the best run")
    protected.chmod(0o444)
    save = [sys.executable, "-c", "import sys; from descent.files import write_atomically; "
            "write_atomically(sys.argv[1], lambda handle: handle.write(b'new'))", str(protected)]
    if os.geteuid() == 0:  # as an ordinary user: without root's bypass of file permissions
        save = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", *save]
    result = subprocess.run(save, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": PYTHONPATH},
                            check=False)
    assert "PermissionError: [Errno 13] the file is read-only" in result.stderr, result.stderr
    assert protected.read_bytes() == b"the best run"


def test_uploaded_index_inputs_are_checked_every_run(env) -> None:
    table = env.parameter("checked_table", (5, 2), init=np.arange(10, dtype=np.float32).reshape(5, 2))
    ids = env.parameter("checked_ids", (3,), "int32")
    out = env.parameter("checked_out", (3, 2))
    graph = env.build_graph(lambda s: s.write(out, dc.take(s.read(table), s.read(ids))), inputs=[ids])
    env.run(graph, {ids: np.array([4, -5, 1], np.int32)})
    np.testing.assert_array_equal(env.read(out), [[8, 9], [0, 1], [2, 3]])
    with pytest.raises(IndexError, match=r"index 5 in 'checked_ids' \(element 1\) is out of range for an axis of "
                                         r"size 5; used at .*test_reliability\.py:\d+\n  at .*test_reliability"):
        env.run(graph, {ids: np.array([0, 5, 1], np.int32)})
    np.testing.assert_array_equal(env.read(out), [[8, 9], [0, 1], [2, 3]])
    embedding = nn.Embedding(4, 2).build(env, name="checked_embedding")
    tokens = env.parameter("checked_tokens", (2,), "uint32")
    vectors = env.parameter("checked_vectors", (2, 2))
    graph = env.build_graph(lambda s: s.write(vectors, embedding(s, s.read(tokens))), inputs=[tokens])
    with pytest.raises(IndexError, match="index 4 in 'checked_tokens'"):
        env.run(graph, {tokens: np.array([3, 4], np.uint32)})
    rows = env.parameter("checked_rows", (2,), "uint32")  # 2**32 - 2 passed as -2 once cast to int32
    graph = env.build_graph(lambda s: s.write(vectors, dc.take(s.read(table), s.read(rows))), inputs=[rows])
    with pytest.raises(IndexError, match=r"index 4294967294 in 'checked_rows' \(element 1\) is out of range"):
        env.run(graph, {rows: np.array([1, 2**32 - 2], np.uint32)})
    sums = env.parameter("checked_sums", (5, 2))
    graph = env.build_graph(lambda s: s.write(sums, dc.scatter_add(s.read(vectors), s.read(rows), 5)), inputs=[rows])
    with pytest.raises(IndexError, match=r"index 4294967295 in 'checked_rows' \(element 0\) is out of range"):
        env.run(graph, {rows: np.array([2**32 - 1, 0], np.uint32)})
    env.run(graph, {rows: np.array([4, 0], np.uint32)})


def test_only_the_indices_an_op_reads_through_views_are_checked(env) -> None:
    table = env.parameter("viewed_table", (5, 2), init=np.arange(10, dtype=np.float32).reshape(5, 2))
    ids = env.parameter("viewed_ids", (2, 3), "int32")
    out = env.parameter("viewed_out", (2, 2))
    graph = env.build_graph(lambda s: s.write(out, dc.take(s.read(table), s.read(ids)[::-1, 1:].T[0])), inputs=[ids])
    env.run(graph, {ids: np.array([[9, 4, -8], [-9, 1, 7]], np.int32)})  # the op reads ids[::-1, 1]: [1, 4]
    np.testing.assert_array_equal(env.read(out), [[2, 3], [8, 9]])
    with pytest.raises(IndexError, match=r"index 5 in 'viewed_ids' \(element 0 of the view the op reads\) is out of "
                                         r"range for an axis of size 5"):
        env.run(graph, {ids: np.array([[0, 4, 0], [0, 5, 0]], np.int32)})


def test_indices_are_checked_as_the_device_takes_them_through_casts_and_copies(env) -> None:
    """The check took the raw values: a float -0.5, which truncates to index 0, was refused, and a copy
    (contiguous) between the parameter and the op hid the indices from the check."""
    embedding = nn.Embedding(10, 2).build(env, name="cast_embedding")
    floats = env.parameter("cast_floats", (2,))
    vectors = env.parameter("cast_vectors", (2, 2))
    graph = env.build_graph(lambda s: s.write(vectors, embedding(s, dc.astype(s.read(floats), "int32"))),
                            inputs=[floats])
    env.run(graph, {floats: np.array([-0.5, 9.7], np.float32)})
    np.testing.assert_array_equal(env.read(vectors), env.read(embedding.parameters()[0])[[0, 9]])
    with pytest.raises(IndexError, match=r"index 10 \(cast from 10.5\) in 'cast_floats' \(element 1\) is out of"):
        env.run(graph, {floats: np.array([1.0, 10.5], np.float32)})
    tokens = env.parameter("copied_tokens", (2,), "int32")
    graph = env.build_graph(lambda s: s.write(vectors, embedding(s, dc.contiguous(s.read(tokens)[::-1]))),
                            inputs=[tokens])
    with pytest.raises(IndexError, match=r"index 12 in 'copied_tokens' \(element 0 of the view the op reads\) is out"):
        env.run(graph, {tokens: np.array([1, 12], np.int32)})


def test_bool_embedding_indices_a_step_that_is_no_function_and_an_unknown_pad_mode_are_refused(env) -> None:
    embedding = nn.Embedding(4, 2).build(env, name="bool_embedding")
    flags = env.parameter("bool_flags", (2,), "bool")
    with pytest.raises(dc.DTypeError, match=r"Embedding: indices must be integers, got bool.*\n  at .*test_rel"):
        env.build_graph(lambda s: embedding(s, s.read(flags)))
    with pytest.raises(RuntimeError, match="Expected tensor for argument #1 'indices' to have one of"):
        torch.nn.Embedding(4, 2)(torch.tensor([True, False]))
    target = env.parameter("update_target", (2,))
    with pytest.raises(dc.GraphError, match=r"update: step must be a function of the value, got 3.0.*\n  at .*test_"):
        env.build_graph(lambda s: s.update(target, 3.0))
    with pytest.raises(ValueError, match=r"pad: mode must be 'constant' or 'reflect', not 'edge'\n  at .*test_rel"):
        env.build_graph(lambda s: s.write(target, dc.pad(s.read(target), 1, mode="edge")[1:3]))


def test_an_index_error_names_the_element_by_its_position(env) -> None:
    """A run names an N-D input's bad element by its position; a Trainer names it in the user's x, before
    any step (the run's check named 'trainer.x0' and the element of a shuffled batch)."""
    embedding = nn.Embedding(4, 2).build(env, name="positions")
    tokens = env.parameter("position_tokens", (2, 2), "int32")
    vectors = env.parameter("position_vectors", (2, 2, 2))
    graph = env.build_graph(lambda s: s.write(vectors, embedding(s, s.read(tokens))), inputs=[tokens])
    with pytest.raises(IndexError, match=r"index 7 in 'position_tokens' \(element \(1, 1\)\) is out of range for Emb"):
        env.run(graph, {tokens: np.array([[0, 1], [2, 7]], np.int32)})
    model = nn.Sequential(nn.Embedding(4, 2), nn.Flatten(), nn.Dense(4, 3)).build(env, name="trained_positions")
    trainer = nn.Trainer(env, model, optimizer=optim.SGD(0.1))
    x = np.array([[0, 1], [2, 3], [1, 1], [3, 0], [2, 2], [0, 7]], np.int32)
    before = [env.read(p) for p in model.parameters()]
    pattern = r"{}: x\[5, 1\] = 7 is out of range for Embedding\(4, 2\), which takes 0 to 3 .*\(1 of 12 elements are\)"
    with pytest.raises(IndexError, match=pattern.format("fit")):
        trainer.fit(x, np.zeros(6, np.int32), batch_size=2, progress=False)
    assert all(np.array_equal(env.read(p), b) for p, b in zip(model.parameters(), before))
    with pytest.raises(IndexError, match=pattern.format("predict")):
        trainer.predict(x, batch_size=4)
    with pytest.raises(IndexError, match=pattern.format("evaluate")):
        trainer.evaluate(x, np.zeros(6, np.int32), batch_size=4)
    with pytest.raises(IndexError, match=pattern.format("fit: validation_data")):
        trainer.fit(x[:5], np.zeros(5, np.int32), validation_data=(x, np.zeros(6, np.int32)), progress=False)


def test_embedding_and_cross_entropy_refuse_indices_pytorch_refuses(env) -> None:
    """Negative Embedding indices (take would wrap them, as numpy) and labels outside the classes (a row
    of zeros in the one-hot targets) raise before the run, as PyTorch raises."""
    embedding = nn.Embedding(4, 2).build(env, name="negative_embedding")
    tokens = env.parameter("negative_tokens", (2,), "int32")
    vectors = env.parameter("negative_vectors", (2, 2))
    graph = env.build_graph(lambda s: s.write(vectors, embedding(s, s.read(tokens))), inputs=[tokens])
    with pytest.raises(IndexError, match=r"index -1 in 'negative_tokens' \(element 1\) is out of range for "
                                         r"Embedding\(4, 2\), which takes 0 to 3"):
        env.run(graph, {tokens: np.array([3, -1], np.int32)})
    with pytest.raises(IndexError):
        torch.nn.Embedding(4, 2)(torch.tensor([3, -1]))
    logits = env.parameter("label_logits", (3, 5))
    labels = env.parameter("label_values", (3,), "int32")
    loss = env.parameter("label_loss", ())
    graph = env.build_graph(lambda s: s.write(loss, dc.softmax_cross_entropy(s.read(logits), s.read(labels))),
                            inputs=[labels])
    env.run(graph, {labels: np.array([0, 4, 1], np.int32)})
    for bad in (5, -1):
        with pytest.raises(IndexError, match=f"index {bad} in 'label_values' \\(element 1\\) is out of range for "
                                             r"softmax_cross_entropy's 5 classes \(0 to 4\)"):
            env.run(graph, {labels: np.array([0, bad, 1], np.int32)})
        with pytest.raises(IndexError):
            torch.nn.functional.cross_entropy(torch.zeros(3, 5), torch.tensor([0, bad, 1]))
