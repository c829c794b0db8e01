"""Bad input gets a clear error naming the problem, the op and the user's line; never a crash in kp."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

import descent as dc
from descent.compile import spirv
from tests.conftest import evaluate

HERE = Path(__file__).name


def test_mismatched_shapes_name_op_shapes_and_line(env: dc.Environment) -> None:
    x = env.parameter("err_x", (3, 4))
    y = env.parameter("err_y", (5,))

    def build(s: dc.Scope) -> None:
        s.read(x) + s.read(y)

    with pytest.raises(dc.ShapeError) as error:
        env.build_graph(build)
    message = str(error.value)
    assert "add" in message and "(3, 4)" in message and "(5,)" in message
    assert f"{HERE}:" in message


def test_writing_wrong_shape_to_parameter(env: dc.Environment) -> None:
    x = env.parameter("err_w", (3, 4))
    with pytest.raises(dc.ShapeError, match=r"\(2, 2\).*'err_w'.*\(3, 4\)"):
        env.write(x, np.zeros((2, 2), np.float32))
    y = env.parameter("err_w2", (4, 3))
    with pytest.raises(dc.ShapeError, match=r"write: value of shape \(4, 3\).*'err_w'"):
        env.build_graph(lambda s: s.write(x, s.read(y)))


def test_write_dtype_checks(env: dc.Environment) -> None:
    labels = env.parameter("err_labels", (3,), dc.int32)
    with pytest.raises(dc.DTypeError, match="non-integer"):
        env.write(labels, np.array([0.5, 1, 2]))
    with pytest.raises(dc.DTypeError, match="outside the range"):
        env.write(labels, np.array([0, 1, 2**40]))
    for edge, dtype in ((2.0**31, dc.int32), (2.0**32, dc.uint32)):  # float32 edges wrapped: numpy compared in float32
        target = env.parameter(f"err_edge_{dtype.name}", (2,), dtype)
        with pytest.raises(dc.DTypeError, match="outside the range"):
            env.write(target, np.array([0.0, edge], np.float32))
    with pytest.raises(dc.DTypeError):
        env.write(labels, np.array(["a", "b", "c"]))
    env.write(labels, np.array([1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(env.read(labels), [1, 2, 3])


def test_a_float_for_an_integer_constant_or_pad_must_fit(env: dc.Environment) -> None:
    """A float given as an integer constant or pad value wrapped (s.constant(3e9, "int32") was
    -1294967296, s.constant(-2.5, "uint32") 4294967294) and a NaN pad failed in codegen, where a Python
    int, env.write and numpy refuse."""
    ints = np.array([1, 2], np.int32)
    for build, error, message in [
            (lambda s: s.constant(3e9, "int32"), OverflowError, r"constant: 3000000000.0 is out of bounds for int32"),
            (lambda s: s.constant(-2.5, "uint32"), OverflowError, r"constant: -2.5 is out of bounds for uint32"),
            (lambda s: s.constant(np.int64(2**40), "int32"), OverflowError, r"constant: Python integer 1099511627776"),
            (lambda s: dc.pad(s.constant(ints), 1, 3e9), OverflowError, r"pad: 3000000000.0 is out of bounds"),
            (lambda s: dc.pad(s.constant(ints), 1, float("nan")), ValueError, r"pad: nan has no int32 value")]:
        with pytest.raises(error, match=message + r"(.|\n)*test_errors.py"):
            env.build_graph(build)
    np.testing.assert_array_equal(evaluate(env, lambda x: dc.pad(x, 1, 2.7) * 1, ints), [2, 1, 2, 2])
    np.testing.assert_array_equal(evaluate(env, lambda x: x + dc.astype(x.scope.constant(-2.5), "int32"), ints),
                                  [-1, 0])


def test_float64_beyond_float32_is_refused(env: dc.Environment) -> None:
    """1e300 written into a float32 parameter was stored as inf, with only numpy's RuntimeWarning;
    infinities themselves and the largest float32 still store."""
    weights = env.parameter("err_float_range", (3,), init=np.ones(3, np.float32))
    with pytest.raises(dc.DTypeError, match=r"'err_float_range' lie outside the range of float32(.|\n)*test_errors.py"):
        env.write(weights, np.array([1.0, -1e300, 2.0]))
    np.testing.assert_array_equal(env.read(weights), [1, 1, 1])
    env.write(weights, np.array([np.inf, -3.4028234663852886e38, np.nan]))
    np.testing.assert_array_equal(env.read(weights), np.array([np.inf, -3.4028234663852886e38, np.nan], np.float32))


@pytest.mark.parametrize("settings, error, message", [
    (dict(deterministic="no"), TypeError, r"deterministic must be True or False, got 'no'"),
    (dict(device=True), TypeError, r"device must be an index or a name, got True"),
    (dict(device=0.0), TypeError, r"device must be an index or a name, got 0.0"),
    (dict(seed=1.5), TypeError, r"seed must be an int, got 1.5"),
    (dict(seed=2**32), ValueError, r"seed must be in \[0, 2\*\*32\)"),
    (dict(seed=2**64 + 3), ValueError, r"seed must be in \[0, 2\*\*32\)")],
    ids=["deterministic", "device-bool", "device-float", "seed-float", "seed-big", "seed-2**64"])
def test_environment_settings_are_checked(settings: dict, error: type, message: str) -> None:
    """Environment(deterministic="no") switched determinism on, device=True opened device 1 and a
    seed of 2**32 ran as 0 (run refuses it)."""
    with pytest.raises(error, match=r"Environment: " + message + r"(.|\n)*test_errors.py"):
        dc.Environment(**settings)


def test_refused_init_leaves_no_parameter_behind(env: dc.Environment) -> None:
    message = r"(?s)'err_init': init of shape \(3, 4\) does not fit shape \(4, 3\).*test_errors"
    with pytest.raises(dc.ShapeError, match=message):
        env.parameter("err_init", (4, 3), init=np.zeros((3, 4)))
    with pytest.raises(dc.DTypeError, match="non-integer"):
        env.parameter("err_init", (3,), dc.int32, init=np.array([0.5, 1, 2]))
    assert "err_init" not in env.parameters
    retried = env.parameter("err_init", (4, 3), init=np.ones((1, 3)))
    np.testing.assert_array_equal(env.read(retried), np.ones((4, 3)))


def test_an_array_given_as_a_parameter_shape_points_to_init(env: dc.Environment) -> None:
    message = (r"parameter 'err_values': the second argument is a shape, got a int64 array of shape \(2, 3\); "
               r"to start from its values, pass them as init: env.parameter\('err_values', \(2, 3\), 'int32', "
               r"init=values\)\n  at .*test_errors")
    with pytest.raises(TypeError, match=message):
        env.parameter("err_values", np.arange(6).reshape(2, 3))
    with pytest.raises(TypeError, match=r"\(4,\), init=values\)"):
        env.parameter("err_values", np.zeros(4, np.float32))
    assert "err_values" not in env.parameters
    assert env.parameter("err_values", np.array([2, 3])).shape == (2, 3)


@pytest.mark.parametrize("build, error, message", [
    (lambda x, w, v: dc.conv2d(x, w, stride=0), dc.ShapeError, "stride must be at least 1"),
    (lambda x, w, v: dc.conv2d(x, w, padding=(1, -1)), dc.ShapeError, "padding must be at least 0"),
    (lambda x, w, v: dc.conv2d(x, w, dilation=0), dc.ShapeError, "dilation must be at least 1"),
    (lambda x, w, v: dc.max_pool2d(x, 0), dc.ShapeError, "kernel must be at least 1"),
    (lambda x, w, v: dc.avg_pool2d(x, 2, padding=2), dc.ShapeError, r"padding \(2, 2\) must be at most half"),
    (lambda x, w, v: v[0:4:0], ValueError, "slice step cannot be zero"),
    (lambda x, w, v: v[[0, 1], [1, 2]], IndexError, r"with other arrays or integers .* dc.take\(x, indices, axis\)"),
    (lambda x, w, v: x[0, :, [1, 2]], IndexError, "numpy's advanced indexing, which moves axes"),
    (lambda x, w, v: v[v > 1.0], IndexError, "a bool Array: how many elements it selects is known only when"),
    (lambda x, w, v: v[[1.5]], IndexError, "array indices must be integers or bools, not float64"),
    (lambda x, w, v: v[[0, 8]], IndexError, "index 8 is out of bounds for axis 0 with size 8"),
    (lambda x, w, v: v[np.array([True, False])], IndexError, r"bool mask of shape \(2,\) does not match axis 0"),
    (lambda x, w, v: v[..., ...], IndexError, "single ellipsis"),
    (lambda x, w, v: dc.stack([v, v[:2]]), dc.ShapeError,  # it named concat and shapes with the new axis
     r"stack: the arrays must all have one shape, as numpy's; got \(8,\), \(2,\)"),
    (lambda x, w, v: dc.pad(dc.astype(v, "int32"), 1, 2**40), OverflowError, "pad: Python integer 1099511627776 is"),
    (lambda x, w, v: dc.pad(v, 1.5), dc.ShapeError, "pad: widths must be an int, a .before, after. pair"),
    (lambda x, w, v: dc.scatter_add(v, dc.astype(v, "int32"), -2), dc.ShapeError, "size must not be negative"),
    (lambda x, w, v: dc.broadcast_to(v, (-2, 8)), dc.ShapeError, "broadcast_to: a shape cannot have a negative"),
    (lambda x, w, v: dc.one_hot(dc.astype(v, "int32"), -3), dc.ShapeError, "one_hot: classes must not be negative"),
    (lambda x, w, v: v.scope.random_uniform((-2, 3)), dc.ShapeError, "random_uniform: a shape cannot have a"),
    (lambda x, w, v: v.astype("uint8"), TypeError, "dtype 'uint8'; descent has bool, uint32, int32"),
    (lambda x, w, v: v.astype(np.float64), TypeError, "dtype <class 'numpy.float64'>"),
    (lambda x, w, v: v.scope.random_uniform((4.7, 3)), TypeError, r"sizes must be integers, got 4.7"),
    (lambda x, w, v: v.reshape((2, 4.0)), TypeError, r"reshape: sizes must be integers, got 4.0"),
], ids=["stride", "padding", "dilation", "kernel", "pool padding", "step", "two arrays", "array and integer",
        "bool Array", "float list", "list out of range", "mask length", "ellipses", "stack shapes", "pad fill",
        "pad widths", "scatter size", "broadcast size", "one_hot classes", "random shape", "astype uint8",
        "astype float64", "random float shape", "reshape float"])
def test_bad_conv_pool_and_index_arguments(env: dc.Environment, build, error, message) -> None:
    tag = message[:12]
    x, w = env.parameter(f"bad_x{tag}", (1, 1, 6, 6)), env.parameter(f"bad_w{tag}", (1, 1, 3, 3))
    v = env.parameter(f"bad_v{tag}", (8,))
    with pytest.raises(error, match=rf"(?s){message}.*test_errors"):
        env.build_graph(lambda s: build(s.read(x), s.read(w), s.read(v)))


def test_types_and_sizes_descent_does_not_have(env: dc.Environment) -> None:
    """An explicit uint8 or float64 is refused (they became uint32 and float32 and computed other
    values: 300 stayed 300 as 'uint8'), while numpy data of those types is held in descent's types;
    a float size is refused (2.5 became 2) and arange's float stop counts as numpy's."""
    with pytest.raises(TypeError, match=r"unsupported dtype 'float64'.*\n  at .*test_errors"):
        env.parameter("narrow_p", (2,), "float64")
    with pytest.raises(TypeError, match=r"parameter 'narrow_q': sizes must be integers, got 2.5 in \(2.5,\)"):
        env.parameter("narrow_q", (2.5,))
    held = env.parameter("narrow_held", (3,), init=np.array([1.5, 2.5, 3.5]))
    assert held.dtype == dc.float32 and held.shape == (3,)
    out = env.parameter("narrow_out", (3,))
    env.run(env.build_graph(lambda s: s.write(out, s.read(held) + s.constant(np.array([1, 2, 3], np.int64))
                                              + s.arange(2.5, "float32") + np.float64(0.5))))
    np.testing.assert_array_equal(env.read(out), [3.0, 6.0, 9.0])


def test_graph_misuse(env: dc.Environment) -> None:
    x = env.parameter("err_twice", (2,))
    with pytest.raises(dc.GraphError, match=r"build_graph: the function returned an Array and writes no parameter; "
                                            r"a graph keeps only what it writes: store .*\n  at .*test_errors"):
        env.build_graph(lambda s: dc.sin(s.read(x)))  # as a JAX function; it built a graph that did nothing
    with pytest.raises(dc.GraphError, match="written twice"):
        env.build_graph(lambda s: (s.write(x, 1.0), s.write(x, 2.0)))
    kept = {}
    env.build_graph(lambda s: kept.update(a=s.read(x)))
    with pytest.raises(dc.GraphError, match="different graphs"):
        env.build_graph(lambda s: s.write(x, s.read(x) + kept["a"]))
    with pytest.raises(dc.GraphError, match="already exists"):
        env.parameter("err_twice", (2,))
    with pytest.raises(dc.ShapeError, match="reshape"):
        env.build_graph(lambda s: s.read(x).reshape(3))
    with pytest.raises(IndexError, match="out of bounds"):
        env.build_graph(lambda s: s.read(x)[2])
    with pytest.raises(TypeError, match="no value while the graph is built"):
        env.build_graph(lambda s: bool(s.read(x) > 0))
    # numpy made an object array of an Array, and np.sin said only "does not support ufuncs"
    for convert in (np.asarray, np.sin, float):
        with pytest.raises(TypeError, match=r"no value while the graph is built. Use descent's ops \(dc.sin.*\n"
                                            r"  at .*test_errors"):
            env.build_graph(lambda s, convert=convert: s.write(x, convert(s.read(x)[0])))

    def numpy_operands(s: dc.Scope) -> None:  # numpy scalars on the left still make Arrays
        scaled = np.float32(2) * s.read(x) + np.float64(1.0)
        assert isinstance(scaled, dc.Array) and scaled.dtype == dc.float32
        s.write(x, scaled)

    env.build_graph(numpy_operands)


def _refusals_in_another_thread(env: dc.Environment, graph) -> list[dc.GraphError]:
    """Run `graph` from a second thread, waiting for it; the GraphErrors that refused it."""
    errors: list[dc.GraphError] = []

    def other_thread() -> None:
        try:
            env.run(graph)
        except dc.GraphError as error:
            errors.append(error)

    worker = threading.Thread(target=other_thread)
    worker.start()
    worker.join()
    return errors


def test_two_threads_writing_one_parameter(env: dc.Environment) -> None:
    """A run that shares a written parameter with a run another thread still has going is refused;
    the same graphs from one thread, or after that thread synchronizes, run in order."""
    size = 768 if env.device.kind == "cpu" else 4096  # long enough to still run when the thread starts
    a = env.parameter("thread_a", (size, size), init=np.ones((size, size), np.float32))
    shared = env.parameter("thread_shared", (size, size))
    slow = env.build_graph(lambda s: s.write(shared, s.read(a) @ s.read(a) @ s.read(a)))
    fast = env.build_graph(lambda s: s.write(shared, s.read(a) * 2.0))
    env.run(slow)
    errors = _refusals_in_another_thread(env, fast)
    assert len(errors) == 1 and "'thread_shared'" in str(errors[0]) and "another thread" in str(errors[0])
    assert "test_errors.py" in str(errors[0])
    env.synchronize()
    assert not _refusals_in_another_thread(env, fast)
    np.testing.assert_array_equal(env.read(shared), np.full((size, size), 2.0, np.float32))
    env.run(slow)
    env.run(fast)
    np.testing.assert_array_equal(env.read(shared), np.full((size, size), 2.0, np.float32))


def test_two_threads_running_one_graph_with_inputs(env: dc.Environment) -> None:
    """Each run either lands with its own input or is refused with a GraphError: two threads used to
    fill one recording's staging memory (losing an input) or submit one sequence twice (a raw
    Kompute RuntimeError)."""
    total = env.parameter("threads_total", (64,))
    step = env.parameter("threads_step", (64,))
    graph = env.build_graph(lambda s: s.write(total, s.read(total) + s.read(step)), inputs=[step])
    landed, unexpected = [0.0, 0.0], []

    def worker(k: int) -> None:
        for i in range(150):
            value = float(1000 * k + i)
            try:
                env.run(graph, {step: np.full(64, value, np.float32)})
                landed[k] += value
            except dc.GraphError:
                pass
            except Exception as error:  # noqa: BLE001 - any other error is the failure this test looks for
                unexpected.append(error)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not unexpected
    np.testing.assert_array_equal(env.read(total), np.full(64, sum(landed), np.float32))


def test_invalid_shader_shows_glsl_and_compiler_message() -> None:
    with pytest.raises(dc.CompileError) as error:
        spirv.compile_glsl("#version 450\nvoid main() { undefined_name = 1; }\n", "broken", "model.py:3")
    message = str(error.value)
    assert "undefined_name" in message and "   2  void main()" in message and "model.py:3" in message


def _run(code: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    root = str(Path(__file__).resolve().parents[1])
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]), **env}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=environment, cwd=cwd, timeout=120, check=False)


PROGRAM = """
    import numpy as np, descent as dc
    from descent.compile import spirv
    env = dc.Environment()
    x = env.parameter("x", (10,))
    env.write(x, np.arange(10, dtype=np.float32))
    def step(s):
        a = s.read(x)
        for k in range(12):
            a = dc.sin(a[::-1] * 0.5 + k) if k % 2 else dc.cos(a) - 0.25
        s.write(x, a)
    graph = env.build_graph(step)
    env.run(graph)
    print("kernels", graph.kernel_count, "compiled", spirv.stats["compiled"], "cached", spirv.stats["cached"])
"""


def test_second_process_compiles_nothing(tmp_path: Path) -> None:
    first = _run(PROGRAM, DESCENT_CACHE=str(tmp_path))
    second = _run(PROGRAM, DESCENT_CACHE=str(tmp_path))
    assert first.returncode == 0, first.stderr
    assert "kernels 1 compiled 1 cached 0" in first.stdout
    assert "kernels 1 compiled 0 cached 1" in second.stdout, second.stderr


@pytest.mark.parametrize("damage", ["truncate", "swap", "zero"])
def test_a_damaged_cache_file_is_compiled_again(tmp_path: Path, damage: str) -> None:
    """A cache file cut short, emptied or holding another kernel's SPIR-V is compiled again and
    rewritten; the driver used to get it (vk::Device::createComputePipeline: ErrorUnknown, or a wrong result)."""
    other = _run(PROGRAM.replace("0.25", "0.5"), DESCENT_CACHE=str(tmp_path / "other"))
    assert other.returncode == 0, other.stderr
    assert _run(PROGRAM, DESCENT_CACHE=str(tmp_path)).returncode == 0
    others = {path.name: path for path in (tmp_path / "other" / "spirv").iterdir()}  # the loop probe's is shared
    (cached,) = (path for path in (tmp_path / "spirv").iterdir() if path.name not in others)
    (swapped,) = (path for name, path in others.items() if not (tmp_path / "spirv" / name).exists())
    data = cached.read_bytes()
    cached.write_bytes({"truncate": data[:100], "zero": b"", "swap": swapped.read_bytes()}[damage])
    second = _run(PROGRAM + "    print(env.read(x))\n", DESCENT_CACHE=str(tmp_path))
    assert second.returncode == 0, second.stderr
    assert "kernels 1 compiled 1 cached 0" in second.stdout
    assert cached.read_bytes() == data
    third = _run(PROGRAM + "    print(env.read(x))\n", DESCENT_CACHE=str(tmp_path))
    assert "kernels 1 compiled 0 cached 1" in third.stdout and third.stdout == second.stdout.replace(
        "compiled 1 cached 0", "compiled 0 cached 1")


def test_dump_shaders_to_a_file_warns_and_still_runs(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("a file where the dump folder should go")
    result = _run(PROGRAM, DESCENT_CACHE=str(tmp_path / "cache"), DESCENT_DUMP_SHADERS=str(blocked))
    assert result.returncode == 0, result.stderr
    assert f"DESCENT_DUMP_SHADERS={blocked}: cannot write shaders there" in result.stderr


def test_unwritable_cache_warns_and_still_runs(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache folder should go")
    result = _run(PROGRAM, DESCENT_CACHE=str(blocked))
    assert result.returncode == 0, result.stderr
    assert "kernels 1 compiled 1 cached 0" in result.stdout
    assert f"cannot cache SPIR-V at {blocked / 'spirv'} (Not a directory)" in result.stderr
    assert f"{blocked} is a file where a cache folder goes: remove it, or set DESCENT_CACHE" in result.stderr


def test_a_cache_entry_that_cannot_be_replaced_leaves_no_partial_file(tmp_path: Path) -> None:
    """Where the rename into place fails (here a folder stands at an entry's path), the temporary
    .part file was left behind, two more each run, and the warning named it, so it said so per shader."""
    assert _run(PROGRAM, DESCENT_CACHE=str(tmp_path)).returncode == 0
    entries = list((tmp_path / "spirv").iterdir())
    for entry in entries:
        entry.unlink()
        entry.mkdir()
    result = _run(PROGRAM, DESCENT_CACHE=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "kernels 1 compiled 1 cached 0" in result.stdout and "(Is a directory)" in result.stderr
    assert f"A folder stands where the cache entry goes: remove {entries[0]}" in result.stderr  # was "Set
    # DESCENT_CACHE to a writable folder", where the folder is writable
    assert sorted((tmp_path / "spirv").iterdir()) == sorted(entries)


def test_dump_shaders(tmp_path: Path) -> None:
    result = _run(PROGRAM, DESCENT_CACHE=str(tmp_path / "cache"), DESCENT_DUMP_SHADERS=str(tmp_path / "dump"))
    assert result.returncode == 0, result.stderr
    (dumped,) = (tmp_path / "dump").glob("*.comp")
    source = dumped.read_text()
    assert "float sin_" in source and source.count(";\n") > 12
    assert source.endswith("// ops from <string>:10\n")  # the line of the sin and cos


def test_dump_names_every_line_of_a_kernel(tmp_path: Path) -> None:
    """The comment ending a dumped shader named only its first three source lines."""
    program = """
        import numpy as np, descent as dc
        env = dc.Environment()
        x = env.parameter("x", (4,))
        def step(s):
            a = s.read(x) + 1.0
            b = a * 2.0
            c = b - 3.0
            s.write(x, dc.sin(c))
        env.run(env.build_graph(step))
    """
    result = _run(program, DESCENT_CACHE=str(tmp_path / "cache"), DESCENT_DUMP_SHADERS=str(tmp_path / "dump"))
    assert result.returncode == 0, result.stderr
    (dumped,) = (tmp_path / "dump").glob("*.comp")
    assert dumped.read_text().endswith("// ops from <string>:6, <string>:7, <string>:8, <string>:9\n")


@pytest.mark.parametrize("value, on", [("false", False), ("off", False), ("0", False), ("yes", True), ("1", True)])
def test_on_off_variables_read_false_as_off(value: str, on: bool) -> None:
    """DESCENT_DEBUG=false turned debug mode on: anything but '' or '0' counted as on."""
    result = _run("import descent as dc; env = dc.Environment(); print(env.checked, env.deterministic)",
                  DESCENT_DEBUG=value, DESCENT_DETERMINISTIC=value)
    assert result.stdout.split() == [str(on), str(on)], result.stderr
    refused = _run("import descent as dc; dc.Environment()", DESCENT_DEBUG="maybe")
    assert "ValueError: DESCENT_DEBUG='maybe': use 1 (on) or 0 (off)\n  at <string>:1" in refused.stderr


def test_missing_compiler_is_named_and_a_warm_cache_runs_without_it(tmp_path: Path) -> None:
    """Without glslangValidator a shader that is not cached is a CompileError naming the user's line;
    once a run with the compiler has filled the cache, the same program runs without it."""
    no_compiler = str(tmp_path / "bin")
    result = _run(PROGRAM, DESCENT_CACHE=str(tmp_path), PATH=no_compiler)
    assert result.returncode != 0
    assert "CompileError" in result.stderr and "apt-get install glslang-tools" in result.stderr
    assert "  at <string>:" in result.stderr
    warm = _run(PROGRAM, DESCENT_CACHE=str(tmp_path))
    assert warm.returncode == 0, warm.stderr
    result = _run(PROGRAM, DESCENT_CACHE=str(tmp_path), PATH=no_compiler)
    assert result.returncode == 0, result.stderr
    assert "kernels 1 compiled 0 cached 1" in result.stdout


def _compiler(folder: Path, script: str) -> str:
    """A PATH whose glslangValidator is `script`."""
    folder.mkdir()
    compiler = folder / "glslangValidator"
    compiler.write_text(script)
    compiler.chmod(0o755)
    return os.pathsep.join([str(folder), os.environ["PATH"]])


def test_a_compiler_that_fails_or_cannot_run_is_named_not_blamed_on_the_shader(tmp_path: Path) -> None:
    """A glslangValidator that crashed, was killed or printed nothing was reported as having 'rejected
    the shader', with no exit status and no user line; one that could not be run at all (a wrapper whose
    interpreter is gone) raised a bare FileNotFoundError naming a file that exists."""
    version = 'if [ "$1" = --version ]; then echo "Glslang Version: fake"; exit 0; fi\n'
    for name, script, expected in (
            ("crash", f"#!/bin/sh\n{version}echo 'Segmentation fault' >&2; exit 139\n",
             "failed with exit status 139 while compiling the shader for loop_probe: Segmentation fault"),
            ("killed", f"#!/bin/sh\n{version}kill -SEGV $$\n",
             "was killed by signal 11 (SIGSEGV) while compiling the shader for loop_probe: it printed nothing"),
            ("silent", f"#!/bin/sh\n{version}exit 0\n", "exited without writing SPIR-V while compiling"),
            ("unrunnable", "#!/nonexistent/interpreter\n", "cannot be run (No such file or directory); descent "
             "needs it to compile shaders that are not in its cache")):
        result = _run(PROGRAM, DESCENT_CACHE=str(tmp_path / f"cache-{name}"), PATH=_compiler(tmp_path / name, script))
        assert f"CompileError: glslangValidator at {tmp_path / name / 'glslangValidator'}" in result.stderr, name
        assert expected in result.stderr and "  at <string>:4" in result.stderr, result.stderr
        assert "rejected" not in result.stderr
    assert "sudo apt-get install --reinstall glslang-tools" in result.stderr


def test_a_damaged_compiler_version_record_is_written_again(tmp_path: Path) -> None:
    """The record of the compiler that filled the cache, damaged (not UTF-8), raised UnicodeDecodeError
    at every cache miss, and from dc.Environment() where the compiler is not on PATH."""
    record = tmp_path / "spirv" / "compiler-version"
    record.parent.mkdir()
    record.write_bytes(bytes(range(128, 256)))
    result = _run(PROGRAM, DESCENT_CACHE=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert record.read_text().startswith("Glslang Version")
    record.write_bytes(bytes(range(128, 256)))
    result = _run(PROGRAM, DESCENT_CACHE=str(tmp_path), PATH=str(tmp_path / "bin"))
    assert "CompileError: glslangValidator was not found on PATH" in result.stderr, result.stderr


def test_cache_and_dump_folders_expand_a_tilde(tmp_path: Path) -> None:
    """DESCENT_CACHE='~/...' (quoted, as in a unit file or os.environ) made a folder named '~' in the
    working directory."""
    work = tmp_path / "work"
    work.mkdir()
    result = _run(PROGRAM, cwd=work, HOME=str(tmp_path), DESCENT_CACHE="~/cache", DESCENT_DUMP_SHADERS="~/dump")
    assert result.returncode == 0, result.stderr
    assert list((tmp_path / "cache" / "spirv").glob("*.spirv")) and list((tmp_path / "dump").glob("*.comp"))
    assert not (work / "~").exists()


def test_no_vulkan_device_is_named() -> None:
    missing = "/nonexistent/icd.json"
    result = _run(PROGRAM, VK_ICD_FILENAMES=missing, VK_DRIVER_FILES=missing)
    assert result.returncode == 1, result.stderr
    assert "DeviceError" in result.stderr and "mesa-vulkan-drivers" in result.stderr
    assert "VK_DRIVER_FILES names /nonexistent/icd.json, which does not exist" in result.stderr
    assert "  at <string>:4" in result.stderr  # the user's line, as other device errors give


def test_unknown_device_lists_devices() -> None:
    result = _run(PROGRAM, DESCENT_DEVICE="no-such-gpu")
    assert result.returncode == 1
    assert "DESCENT_DEVICE='no-such-gpu': no device name contains 'no-such-gpu'" in result.stderr
    assert "0: " in result.stderr and '  at <string>:4' in result.stderr
    with pytest.raises(dc.DeviceError, match=r"device=7: device index 7 does not exist; the devices are 0: .*\n  at "):
        dc.Environment(device=7)


@pytest.mark.parametrize("call", [
    lambda a: dc.sum(a), lambda a: dc.mean(a, 0), lambda a: dc.argmax(a), lambda a: dc.softmax(a),
    lambda a: dc.transpose(a), lambda a: dc.squeeze(a), lambda a: dc.expand_dims(a, 0), lambda a: dc.clip(a, 0, 1),
    lambda a: dc.take(a, [0]), lambda a: dc.one_hot(a, 3), lambda a: dc.mse(a, a), lambda a: dc.max_pool2d(a, 2),
    lambda a: dc.conv2d(a, a), lambda a: dc.upsample_nearest2d(a, 2), lambda a: dc.adaptive_avg_pool2d(a, 1)],
    ids=["sum", "mean", "argmax", "softmax", "transpose", "squeeze", "expand_dims", "clip", "take", "one_hot", "mse",
         "max_pool2d", "conv2d", "upsample_nearest2d", "adaptive_avg_pool2d"])
def test_a_numpy_array_where_an_array_goes_is_named(call) -> None:
    """dc.sum(numpy_array) and the other functions of one array failed inside with an AttributeError
    ('numpy.ndarray' object has no attribute 'node'), naming neither the function nor the user's line."""
    name = call.__code__.co_names[-1]
    with pytest.raises(dc.DTypeError, match=rf"{name}: cannot use ndarray as an Array operand; a numpy array must "
                                            r"be a parameter or a graph constant first(.|\n)*test_errors.py"):
        call(np.ones((1, 1, 4, 4), np.float32))


def test_an_input_upload_counts_as_a_write_for_other_threads(env: dc.Environment) -> None:
    """A run input is written when its run uploads it, but only kernel writes counted: another thread
    reading it while that run was in flight was not refused, and what it read depended on timing."""
    size = 768 if env.device.kind == "cpu" else 4096
    a = env.parameter("upload_a", (size, size), init=np.ones((size, size), np.float32))
    batch = env.parameter("upload_batch", (size,))
    seen = env.parameter("upload_seen", (size,))
    slow = env.build_graph(lambda s: s.write(a, s.read(a) @ s.read(a) @ s.read(a) + s.read(batch)), inputs=[batch])
    reader = env.build_graph(lambda s: s.write(seen, s.read(batch) * 1.0))
    env.run(slow, {batch: np.full(size, 5.0, np.float32)})
    errors = _refusals_in_another_thread(env, reader)
    env.synchronize()
    assert len(errors) == 1 and "'upload_batch'" in str(errors[0]) and "another thread" in str(errors[0])


def test_run_and_build_arguments_are_checked(env: dc.Environment) -> None:
    """A list for run's inputs met numpy's "truth value is ambiguous"; a function given to run was
    "built by another Environment"; a single Parameter as build_graph's inputs was "not iterable";
    seed=1.9 ran as seed 1 and seed=2**32 as seed 0; a name that is not a string broke later graphs."""
    x = env.parameter("arguments_x", (3,))
    graph = env.build_graph(lambda s: s.write(x, s.read(x) + s.random_uniform((3,))), inputs=[x])
    for call, error, message in [
            (lambda: env.run(graph, [np.ones(3, np.float32)]), TypeError, r"run: inputs must be a dict"),
            (lambda: env.run(lambda s: None), TypeError, r"run: expects a graph from env.build_graph, got function"),
            (lambda: env.build_graph(lambda s: None, inputs=x), TypeError, r"build_graph: inputs must be a list"),
            (lambda: env.run(graph, seed=1.9), TypeError, r"run: seed must be an int, got 1.9"),
            (lambda: env.run(graph, seed=2**32), ValueError, r"run: seed must be in \[0, 2\*\*32\)"),
            (lambda: env.run(graph, seed=2**64 + 3), ValueError, r"run: seed must be in \[0, 2\*\*32\)"),
            (lambda: env.parameter(7, (2,)), TypeError, r"parameter: the name must be a non-empty string, got 7")]:
        with pytest.raises(error, match=message + r"(.|\n)*test_errors.py"):
            call()
    env.run(graph, seed=2**32 - 1)


def test_a_failed_build_leaves_no_constants_and_profile_checks_its_inputs(env: dc.Environment) -> None:
    """Each refused build kept the numpy constants it had made as hidden parameters (20 builds, 20
    parameters, and the name 'constant1' taken); profile() ran a graph with an index run() refuses,
    writing a clamped result."""
    before = dict(env.parameters)
    table = env.parameter("failed_build_table", (4, 3))

    def refused(s: dc.Scope) -> None:
        s.read(table) + s.constant(np.arange(3, dtype=np.float32) + 0.5)
        raise RuntimeError("the user's function fails")

    for _ in range(3):
        with pytest.raises(RuntimeError, match="the user's function fails"):
            env.build_graph(refused)
    assert set(env.parameters) - set(before) == {"failed_build_table"}
    index = env.parameter("profile_index", (2,), dc.int32)
    out = env.parameter("profile_out", (2, 3), init=np.full((2, 3), -1.0, np.float32))
    graph = env.build_graph(lambda s: s.write(out, dc.take(s.read(table), s.read(index), 0)), inputs=[index])
    env.write(index, np.array([1, 7], np.int32))
    with pytest.raises(IndexError, match=r"index 7 in 'profile_index' \(element 1\) is out of range"):
        graph.profile()
    np.testing.assert_array_equal(env.read(out), -1.0)


def test_a_temporary_over_the_buffer_range_names_the_users_line(env: dc.Environment) -> None:
    """It was a DeviceError naming neither what it was nor the user's line."""
    side = int(np.sqrt(env.device.limits.max_storage_buffer_range // 4)) + 64
    x = env.parameter("temporary_x", (side,))
    with pytest.raises(dc.DeviceError, match=r"build_graph: an intermediate array that a kernel stores takes "
                                             r"\d+ bytes, more than the device's storage-buffer range(.|\n)*"
                                             r"test_errors.py"):
        env.build_graph(lambda s: s.write(x, dc.contiguous(s.read(x)[:, None] * s.read(x)[None, :]).sum(axis=0)))
