"""Fusion and scheduling: kernel counts, buffer reuse, and reads that see old values."""

from __future__ import annotations

import dataclasses
import gc

import numpy as np
import pytest

import descent as dc
from tests.conftest import evaluate

rng = np.random.default_rng(2)


def test_long_chain_over_views_is_one_kernel(env: dc.Environment) -> None:
    x = env.parameter("chain_x", (6, 8))
    out = env.parameter("chain_out", (4, 3))
    data = rng.uniform(0.5, 1.5, (6, 8)).astype(np.float32)
    env.write(x, data)

    def ours(a):
        b = dc.exp(a[1:5, ::2] * 0.5)
        c = dc.sqrt(b + 1.0).T
        d = dc.tanh(c - 0.25) * dc.sigmoid(c)
        e = dc.maximum(d.reshape(2, 8), 0.1).reshape(4, 4)[:, 1:]
        return dc.log(e + 2.0) / 3.0 + dc.sin(e) ** 2.0

    def build(s: dc.Scope) -> None:
        s.write(out, ours(s.read(x)))

    graph = env.build_graph(build)
    assert graph.kernel_count == 1
    assert len(graph.sources[0].ops) >= 10
    env.run(graph)

    b = np.exp(data[1:5, ::2] * 0.5)
    c = np.sqrt(b + 1).T
    d = np.tanh(c - 0.25) / (1 + np.exp(-c))
    e = np.maximum(d.reshape(2, 8), 0.1).reshape(4, 4)[:, 1:]
    np.testing.assert_allclose(env.read(out), np.log(e + 2) / 3 + np.sin(e) ** 2, rtol=1e-4, atol=1e-5)


def test_outputs_of_equal_size_share_a_kernel(env: dc.Environment) -> None:
    x = env.parameter("share_x", (3, 4))
    y = env.parameter("share_y", (4, 3))
    z = env.parameter("share_z", (5,))

    def build(s: dc.Scope) -> None:
        a = s.read(x)
        s.write(y, dc.exp(a).T)
        s.write(x, a * 2.0)
        s.write(z, 1.0)

    graph = env.build_graph(build)
    assert graph.kernel_count == 2
    data = rng.normal(size=(3, 4)).astype(np.float32)
    env.write(x, data)
    env.run(graph)
    np.testing.assert_allclose(env.read(y), np.exp(data).T, rtol=1e-5)
    np.testing.assert_array_equal(env.read(x), data * 2)
    np.testing.assert_array_equal(env.read(z), np.ones(5, np.float32))


def test_reads_see_old_values_when_parameters_swap(env: dc.Environment) -> None:
    a = env.parameter("swap_a", (2, 3))
    b = env.parameter("swap_b", (2, 3))
    va, vb = rng.normal(size=(2, 3)).astype(np.float32), rng.normal(size=(2, 3)).astype(np.float32)
    env.write(a, va)
    env.write(b, vb)

    def build(s: dc.Scope) -> None:
        old_a, old_b = s.read(a), s.read(b)
        s.write(a, old_b)
        s.write(b, old_a + old_b)

    graph = env.build_graph(build)
    env.run(graph)
    np.testing.assert_array_equal(env.read(a), vb)
    np.testing.assert_array_equal(env.read(b), va + vb)


def test_in_place_transpose_is_staged(env: dc.Environment) -> None:
    m = env.parameter("square", (33, 33))
    data = rng.normal(size=(33, 33)).astype(np.float32)
    env.write(m, data)

    def build(s: dc.Scope) -> None:
        s.write(m, s.read(m).T + 1.0)

    graph = env.build_graph(build)
    env.run(graph)
    np.testing.assert_array_equal(env.read(m), data.T + 1)
    env.run(graph)
    np.testing.assert_array_equal(env.read(m), (data.T + 1).T + 1)


@pytest.mark.parametrize("checked", [False, True], ids=["replayed", "DESCENT_DEBUG"])
def test_staged_writes_of_integer_and_bool_parameters(monkeypatch, checked: bool) -> None:
    """An int32, uint32 or bool parameter written from a view of itself is staged and copied back: the
    staging memory must have the parameter's element type, since kp copies only between equal types."""
    monkeypatch.setenv("DESCENT_DEBUG", "1" if checked else "0")
    env = dc.Environment()
    ints = env.parameter("staged_ints", (5,), dc.int32, init=np.arange(5, dtype=np.int32))
    flags = env.parameter("staged_flags", (4,), dc.bool_, init=np.array([True, False, False, False]))
    words = env.parameter("staged_words", (2, 2), dc.uint32, init=np.array([[1, 2], [3, 4]], np.uint32))
    graph = env.build_graph(lambda s: (s.write(ints, s.read(ints)[::-1] * 2), s.write(flags, ~s.read(flags)[::-1]),
                                       s.write(words, s.read(words).T)))
    env.run(graph)
    np.testing.assert_array_equal(env.read(ints), [8, 6, 4, 2, 0])
    np.testing.assert_array_equal(env.read(flags), [True, True, True, False])
    np.testing.assert_array_equal(env.read(words), [[1, 3], [2, 4]])


def test_widely_reused_intermediate_is_realised_once(env: dc.Environment) -> None:
    data = rng.normal(size=(8, 8)).astype(np.float32) * 0.1

    def ours(a):
        for _ in range(6):
            a = dc.tanh(a + a.T * 0.5 + a[::-1, :] * 0.25)
        return a

    expected = data
    for _ in range(6):
        expected = np.tanh(expected + expected.T * 0.5 + expected[::-1, :] * 0.25)
    np.testing.assert_allclose(evaluate(env, ours, data), expected, rtol=1e-4, atol=1e-5)


def test_temporaries_share_slots(env: dc.Environment) -> None:
    x = env.parameter("slots_x", (16, 16))
    out = env.parameter("slots_out", (16, 16))
    data = rng.normal(size=(16, 16)).astype(np.float32) * 0.1

    def build(s: dc.Scope) -> None:
        a = s.read(x)
        for _ in range(8):
            a = dc.tanh(a + a.T + a[::-1] + a[:, ::-1] + a[::-1, ::-1])
        s.write(out, a)

    graph = env.build_graph(build)
    temporaries = [b for b in graph.schedule.buffers.values() if b.slot is not None]
    assert len(temporaries) >= 4
    assert len(graph.schedule.slots) < len(temporaries)
    env.write(x, data)
    env.run(graph)
    expected = data
    for _ in range(8):
        expected = np.tanh(expected + expected.T + expected[::-1] + expected[:, ::-1] + expected[::-1, ::-1])
    np.testing.assert_allclose(env.read(out), expected, rtol=1e-4, atol=1e-5)


def test_independent_kernels_run_in_the_order_that_frees_slots(env: dc.Environment) -> None:
    x = env.parameter("order_x", (64, 64), init=rng.normal(size=(64, 64)).astype(np.float32))
    w = env.parameter("order_w", (64, 64), init=rng.normal(size=(64, 64)).astype(np.float32) * 0.1)
    doubled = env.parameter("order_doubled", (64, 64))
    product = env.parameter("order_product", (64, 64))

    def build(s: dc.Scope) -> None:
        sines = dc.contiguous(dc.sin(s.read(x)))
        hidden = dc.contiguous(dc.cos(s.read(x))) @ s.read(w)
        s.write(doubled, sines * 2.0)
        s.write(product, hidden @ s.read(w))

    graph = env.build_graph(build)
    # the kernel that reads the sines last runs before the one that makes `hidden`, which then takes
    # the sines' slot: two slots of 64 x 64 floats, not three
    assert graph.schedule.slots == (64 * 64 * 4, 64 * 64 * 4)
    env.run(graph)
    xs, ws = env.read(x), env.read(w)
    np.testing.assert_allclose(env.read(doubled), np.sin(xs) * 2, rtol=1e-4, atol=1e-5)  # the suite's sin tolerance
    np.testing.assert_allclose(env.read(product), np.cos(xs) @ ws @ ws, rtol=1e-4, atol=1e-4)


def test_result_written_only_to_a_parameter_has_no_temporary(env: dc.Environment) -> None:
    a = env.parameter("only_a", (32, 48), init=rng.normal(size=(32, 48)).astype(np.float32))
    b = env.parameter("only_b", (48, 16), init=rng.normal(size=(48, 16)).astype(np.float32))
    c = env.parameter("only_c", (32, 16))
    graph = env.build_graph(lambda s: s.write(c, s.read(a) @ s.read(b)))
    assert [name for _, name in graph.schedule.kernels[0].outputs] == ["param:only_c"]
    assert graph.memory_bytes == 0
    env.run(graph)
    np.testing.assert_allclose(env.read(c), env.read(a) @ env.read(b), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("later", ["matmul", "sum"])
def test_epilogue_merges_into_a_product_that_later_kernels_read(env: dc.Environment, later: str) -> None:
    """An MLP's hidden layer: relu(x @ w + b) is computed by the product's kernel, which also stores
    the product for the backward pass's mask, read two levels later. A reduction of the product
    at the epilogue's own level keeps the epilogue apart: it must load the product stored before.
    (On a CPU driver, where the second product's operand is realized.)"""
    x = env.parameter(f"merge_x{later}", (20, 36), init=rng.normal(size=(20, 36)).astype(np.float32))
    w = env.parameter(f"merge_w{later}", (36, 40), init=rng.normal(size=(36, 40)).astype(np.float32))
    b = env.parameter(f"merge_b{later}", (40,), init=rng.normal(size=40).astype(np.float32))
    w2 = env.parameter(f"merge_w2{later}", (40, 40), init=rng.normal(size=(40, 40)).astype(np.float32))
    hidden, out = env.parameter(f"merge_h{later}", (20, 40)), env.parameter(f"merge_o{later}", (20, 40))
    total = env.parameter(f"merge_t{later}", ())

    def build(s: dc.Scope) -> None:
        z = s.read(x) @ s.read(w)
        h = dc.relu(z + s.read(b))
        s.write(hidden, h)
        if later == "matmul":
            s.write(out, dc.where(z > 0.0, h @ s.read(w2), 0.0))
        else:
            s.write(total, z.sum())

    graph = env.build_graph(build)
    z = env.read(x) @ env.read(w)
    h = np.maximum(z + env.read(b), 0)
    # on a GPU the second product computes relu(z + b) in its own loads, reading z at the epilogue's level
    merged = later == "matmul" and env.device.kind == "cpu"
    assert ("relu" in graph.sources[0].ops) == merged
    assert graph.kernel_count == (2 if merged else 3)
    env.run(graph)
    np.testing.assert_allclose(env.read(hidden), h, rtol=1e-4, atol=1e-4)
    if later == "matmul":
        np.testing.assert_allclose(env.read(out), np.where(z > 0, h @ env.read(w2), 0), rtol=1e-4, atol=1e-3)
    else:
        np.testing.assert_allclose(env.read(total), z.sum(), rtol=1e-4, atol=1e-3)


def test_replay_uses_new_inputs(env: dc.Environment) -> None:
    x = env.parameter("replay_x", (1000,))
    y = env.parameter("replay_y", (1000,))
    graph = env.build_graph(lambda s: s.write(y, s.read(x) * 3.0))
    for _ in range(3):
        data = rng.normal(size=1000).astype(np.float32)
        env.write(x, data)
        env.run(graph)
        np.testing.assert_array_equal(env.read(y), data * 3)


def test_large_dispatch_uses_two_dimensional_grid() -> None:
    env = dc.Environment()
    limits = dataclasses.replace(env.device.limits, max_workgroup_count=(16, 65535, 65535))
    env.device = dataclasses.replace(env.device, limits=limits)
    size = 4 * (256 * 16 + 1000)  # more than 16 workgroups even at four elements a thread (a CPU driver)
    x = env.parameter("big_x", (size,))
    env.write(x, np.arange(size, dtype=np.float32))
    graph = env.build_graph(lambda s: s.write(x, s.read(x) + 1.0))
    columns, rows, _ = graph.sources[0].workgroups
    assert columns <= 16 and rows >= 2
    env.run(graph)
    np.testing.assert_array_equal(env.read(x), np.arange(size, dtype=np.float32) + 1)


def test_inputs_are_uploaded_inside_the_recorded_run(env: dc.Environment) -> None:
    x = env.parameter("inputs_x", (3, 4))
    other = env.parameter("inputs_other", (3, 4))
    y = env.parameter("inputs_y", (3, 4))
    graph = env.build_graph(lambda s: s.write(y, s.read(x) * 2.0 + s.read(other)), inputs=[x])
    env.write(other, np.ones((3, 4), np.float32))
    for k in range(3):
        data = np.full((3, 4), float(k), np.float32)
        env.run(graph, {x: data})
        np.testing.assert_array_equal(env.read(y), data * 2 + 1)
    with pytest.raises(dc.GraphError, match="'inputs_other' is not an input of this graph"):
        env.run(graph, {other: np.zeros((3, 4), np.float32)})
    with pytest.raises(dc.ShapeError, match=r"run: array of shape \(2, 2\) does not fit parameter 'inputs_x'"):
        env.run(graph, {x: np.zeros((2, 2), np.float32)})  # it said 'write:', though the user called run


def test_contiguous_computes_a_fused_expression_once(env: dc.Environment) -> None:
    x = env.parameter("contiguous_x", (64,), init=np.linspace(-1, 1, 64, dtype=np.float32))
    out = env.parameter("contiguous_out", (64,))
    fused = env.build_graph(lambda s: s.write(out, dc.sin(s.read(x)) * 2.0))
    once = env.build_graph(lambda s: s.write(out, dc.contiguous(dc.sin(s.read(x))) * 2.0))
    of_buffer = env.build_graph(lambda s: s.write(out, dc.contiguous(s.read(x)) * 2.0))
    assert (fused.kernel_count, once.kernel_count, of_buffer.kernel_count) == (1, 2, 1)
    env.run(once)
    expected = np.sin(np.linspace(-1, 1, 64, dtype=np.float32)) * 2
    np.testing.assert_allclose(env.read(out), expected, rtol=1e-4, atol=1e-5)  # the suite's tolerance for sin


def test_contiguous_and_stop_gradient_keep_a_bool_a_bool(env: dc.Environment) -> None:
    """As every other identity: they made bool arrays int32 (found by a differential fuzzer)."""
    x = np.array([True, False, True])
    for identity in (dc.contiguous, dc.stop_gradient):
        result = evaluate(env, lambda a, f=identity: f(a & a), x)  # a computed bool, stored by a kernel of its own
        assert result.dtype == np.bool_ and result.tolist() == [True, False, True]
        np.testing.assert_array_equal(evaluate(env, lambda a, f=identity: f(a) | ~a, x), [True, True, True])


def test_profile_times_each_kernel_and_runs_the_graph(env: dc.Environment) -> None:
    counter = env.parameter("profile_counter", (256,))
    total = env.parameter("profile_total", ())
    graph = env.build_graph(lambda s: (s.write(counter, s.read(counter) + 1.0),
                                       s.write(total, dc.sum(dc.exp(s.read(counter))))))
    held = env.device_bytes
    assert held >= counter.nbytes + total.nbytes + graph.memory_bytes
    kernels = graph.profile(repeats=3)
    assert [name for name, _, _ in kernels] == [source.name for source in graph.sources]
    assert all(micros >= 0 for _, _, micros in kernels)
    np.testing.assert_array_equal(env.read(counter), np.full(256, 3.0, np.float32))
    assert env.device_bytes == held


def test_profile_repeats_are_runs() -> None:
    """Each repeat uploaded the inputs' values from before profiling and the last seed again: a graph
    that doubles its own input gave 2x after 5 repeats where 5 runs give 32x, and every repeat drew
    the same random numbers."""
    env = dc.Environment(seed=0)
    x = env.parameter("x", (4,), init=np.ones(4, np.float32))
    noise = env.parameter("noise", (4,))
    graph = env.build_graph(lambda s: (s.write(x, s.read(x) * 2.0), s.write(noise, s.random_uniform((4,)))),
                            inputs=[x])
    graph.profile(repeats=5)
    np.testing.assert_array_equal(env.read(x), np.full(4, 32.0))
    drawn = env.read(noise)
    env.run(graph, seed=4)
    np.testing.assert_array_equal(env.read(noise), drawn)  # the repeats took seeds 0 to 4, as runs would
    env.run(graph)
    assert not np.array_equal(env.read(noise), drawn)  # and the counter went on from there


def test_a_dropped_graph_frees_the_temporaries_and_pipelines_no_other_holds(env: dc.Environment,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Temporary slots (shared only at one byte size) and pipelines were never freed: 40 graphs of
    other batch sizes, each dropped after its run, kept 80 buffers. A live graph keeps what it binds,
    and a graph built again while the first lives shares it; so does one built again after a first
    that never ran (lavapipe 22.3 would keep a destroyed pipeline's memory). A build that fails
    partway (out of memory, say) gives back what it took."""
    w = env.parameter("freed_w", (64, 64), init=np.full((64, 64), 0.01, np.float32))

    def square(s):
        s.write(w, dc.tanh(s.read(w) @ s.read(w)) * 0.5)

    kept = env.build_graph(square)
    gc.collect()
    held, pipelines = env.device_bytes, len(env._algorithms)
    made = 0
    for batch in range(1, 21):
        x = env.parameter(f"freed_x{batch}", (batch, 64), init=np.ones((batch, 64), np.float32))
        y = env.parameter(f"freed_y{batch}", (batch, 1))
        made += x.nbytes + y.nbytes
        graph = env.build_graph(lambda s, x=x, y=y: s.write(y, dc.sum(dc.relu(s.read(x) @ s.read(w)) * 2.0, axis=1,
                                                                           keepdims=True)))
        assert graph.memory_bytes > 0
        env.run(graph)
        np.testing.assert_allclose(env.read(y), np.full((batch, 1), 2 * 64 * 64 * 0.01), rtol=1e-5)
        del graph
    gc.collect()
    assert env.device_bytes == held + made and len(env._algorithms) == pipelines
    again = env.build_graph(square)
    assert env.device_bytes == held + made and again._algorithms == kept._algorithms
    env.run(kept)
    env.run(again)
    expected = np.full((64, 64), 0.01)
    for _ in range(2):
        expected = np.tanh(expected @ expected) * 0.5
    np.testing.assert_allclose(env.read(w), expected, rtol=1e-5)
    never_run = env.build_graph(lambda s: s.write(w, s.read(w).T @ s.read(w)))
    pipelines = list(never_run._algorithms)
    del never_run
    gc.collect()
    assert env.build_graph(lambda s: s.write(w, s.read(w).T @ s.read(w)))._algorithms == pipelines

    def out_of_memory(*args, **kwargs):
        raise dc.DeviceError("could not allocate")

    before = (env.device_bytes, len(env._algorithms), dict(env._users))
    monkeypatch.setattr(env, "algorithm", out_of_memory)  # the graph's temporaries are taken by then
    with pytest.raises(dc.DeviceError, match="could not allocate"):
        env.build_graph(lambda s: s.write(w, dc.exp(s.read(w) @ s.read(w)) @ s.read(w)))
    gc.collect()
    assert (env.device_bytes, len(env._algorithms), dict(env._users)) == before


def test_cpu_elementwise_four_elements_a_thread(env: dc.Environment) -> None:
    """On a CPU driver an elementwise kernel computes four adjacent elements a thread: the array
    read at the output's own index and a bias over rows of 12 come as one vec4 fetch for the four,
    a column broadcast as one fetch; a bias over rows of 6 (not whole vec4s) and a transposed read
    are fetched element by element, a padded view stays masked. Float outputs store vec4s, a bool
    and an int output element by element."""
    if env.device.kind != "cpu":
        pytest.skip("four elements a thread is generated for CPU drivers")
    x = rng.normal(size=(8, 12)).astype(np.float32)
    bias = rng.normal(size=12).astype(np.float32)
    column = rng.normal(size=(8, 1)).astype(np.float32)
    six = rng.normal(size=6).astype(np.float32)
    square = rng.normal(size=(12, 8)).astype(np.float32)
    names = ["x", "bias", "column", "six", "square"]
    params = {n: env.parameter(f"quads_{n}", v.shape, init=v)
              for n, v in zip(names, [x, bias, column, six, square])}
    total, positive, rounded = (env.parameter("quads_total", (8, 12)), env.parameter("quads_positive", (8, 12), "bool"),
                                env.parameter("quads_rounded", (8, 12), "int32"))

    def body(s: dc.Scope) -> None:
        r = {n: s.read(p) for n, p in params.items()}
        padded = dc.pad(r["x"][:, 1:], [(0, 0), (0, 1)])
        value = r["x"] + r["bias"] + r["column"] + r["six"].reshape(1, 6).broadcast_to((2, 6)).reshape(12) \
            + r["square"].T + padded
        s.write(total, value)
        s.write(positive, value > 0.0)
        s.write(rounded, dc.astype(value * 10.0, "int32"))

    graph = env.build_graph(body)
    env.run(graph)
    padded = np.pad(x[:, 1:], [(0, 0), (0, 1)])
    expected = x + bias + column + np.tile(six, 2) + square.T + padded
    np.testing.assert_allclose(env.read(total), expected, rtol=1e-5, atol=1e-5)
    clear = np.abs(expected) > 1e-4
    np.testing.assert_array_equal(env.read(positive)[clear], (expected > 0)[clear])
    np.testing.assert_array_equal(env.read(rounded)[clear], (expected * 10).astype(np.int32)[clear])
    (source,) = graph.sources
    assert "four adjacent ones a thread" in source.glsl
    assert "texelFetch(quads_x_vec4, q)" in source.glsl and "texelFetch(quads_bias_vec4, q % 3)" in source.glsl
    assert "quads_total_vec4_out[q] = vec4(" in source.glsl


def test_max_shares_the_kernel_of_an_argmax_of_the_same_elements(env: dc.Environment) -> None:
    """max pooling's value and the position its gradient goes to: one kernel reads the elements once
    and stores both, the max from the argmax's accumulator (NaN wins in both, as numpy)."""
    data = rng.integers(0, 4, (96, 8)).astype(np.float32)
    data[5, 3] = np.nan
    x = env.parameter("argmerge_x", (96, 8), init=data)
    top = env.parameter("argmerge_top", (96,))
    where = env.parameter("argmerge_where", (96,), dc.int32)
    low = env.parameter("argmerge_low", (96,))

    def build(s: dc.Scope) -> None:
        s.write(top, s.read(x).max(1) * 2.0)
        s.write(where, dc.argmax(s.read(x), 1))
        s.write(low, s.read(x).min(1))

    graph = env.build_graph(build)
    assert graph.kernel_count == 2  # min has no argmin beside it
    assert any("argmax-reduce" in source.ops and "max-reduce" in source.ops for source in graph.sources)
    env.run(graph)
    np.testing.assert_array_equal(env.read(top), data.max(1) * 2)
    np.testing.assert_array_equal(env.read(where), data.argmax(1))
    np.testing.assert_array_equal(env.read(low), data.min(1))


def test_argmax_read_at_the_level_of_the_max_epilogue_keeps_its_own_kernel(env: dc.Environment) -> None:
    """A merged kernel runs at the later level of the two: where a kernel at that level reads the
    argmax (here a gather of another size), the two reductions stay apart."""
    data = rng.normal(size=(96, 8)).astype(np.float32)
    table = rng.normal(size=(8, 3)).astype(np.float32)
    x = env.parameter("argapart_x", (96, 8), init=data)
    t = env.parameter("argapart_t", (8, 3), init=table)
    top = env.parameter("argapart_top", (96,))
    rows = env.parameter("argapart_rows", (96, 3))

    def build(s: dc.Scope) -> None:
        s.write(top, s.read(x).max(1) * 2.0)
        s.write(rows, dc.take(s.read(t), dc.argmax(s.read(x), 1), 0))

    graph = env.build_graph(build)
    assert graph.kernel_count == 3
    env.run(graph)
    np.testing.assert_array_equal(env.read(top), data.max(1) * 2)
    np.testing.assert_array_equal(env.read(rows), table[data.argmax(1)])


def test_outputs_sharing_a_kernel_are_split_to_fit_the_binding_limit() -> None:
    """Twenty parameters updated at one level would share one kernel of 40 bindings; on a device that
    allows 8 they are split into several kernels, and every update is still right."""
    env = dc.Environment()
    env.device = dataclasses.replace(env.device, limits=dataclasses.replace(env.device.limits, max_storage_buffers=8))
    values = [rng.normal(size=(5,)).astype(np.float32) for _ in range(20)]
    params = [env.parameter(f"split_{i}", (5,), init=value) for i, value in enumerate(values)]
    graph = env.build_graph(lambda s: [s.write(p, s.read(p) * 2.0 + float(i)) for i, p in enumerate(params)])
    assert graph.kernel_count > 1
    assert all(len(source.bindings) <= 8 for source in graph.sources)
    env.run(graph)
    for i, (p, value) in enumerate(zip(params, values)):
        np.testing.assert_allclose(env.read(p), value * 2.0 + i, rtol=1e-6)


def test_epilogues_folded_into_a_reduction_are_split_to_fit_the_binding_limit() -> None:
    """Twenty row sums, each scaled into its own parameter: the scalings share an elementwise kernel,
    folded into one of the sums' kernels as its epilogue, which bound 41 buffers of 16 and was refused."""
    env = dc.Environment()
    env.device = dataclasses.replace(env.device, limits=dataclasses.replace(env.device.limits, max_storage_buffers=16))
    values = [rng.normal(size=(4, 4)).astype(np.float32) for _ in range(20)]
    inputs = [env.parameter(f"folded_x{i}", (4, 4), init=value) for i, value in enumerate(values)]
    outputs = [env.parameter(f"folded_y{i}", (4,)) for i in range(20)]
    graph = env.build_graph(lambda s: [s.write(y, s.read(x).sum(axis=1) * 2.0) for x, y in zip(inputs, outputs)])
    assert all(len(source.bindings) <= 16 for source in graph.sources)
    env.run(graph)
    for value, y in zip(values, outputs):
        np.testing.assert_allclose(env.read(y), value.sum(1) * 2.0, rtol=1e-5, atol=1e-6)


def test_a_kernel_loading_too_many_buffers_is_split() -> None:
    """A sum, stack and concat of more arrays than a kernel may bind (kernel0 bound 41 of lavapipe's 32)
    compute part of the work into a buffer in a kernel of their own; a matmul that needs more than the
    device allows even so is refused by name."""
    env = dc.Environment()
    limit = 16  # lavapipe's is 32, a GPU's up to a million: the same on every device
    limits = dataclasses.replace(env.device.limits, max_storage_buffers=limit)
    env.device = dataclasses.replace(env.device, limits=limits)
    values = [rng.normal(size=(3, 5)).astype(np.float32) for _ in range(limit + 8)]
    params = [env.parameter(f"many_{i}", (3, 5), init=value) for i, value in enumerate(values)]
    total, stacked = env.parameter("many_total", (3, 5)), env.parameter("many_stacked", (len(values), 3, 5))
    joined = env.parameter("many_joined", (3, 5 * len(values)))

    def build(s: dc.Scope) -> None:
        arrays = [s.read(p) for p in params]
        s.write(total, sum(arrays[1:], arrays[0]))
        s.write(stacked, dc.stack(arrays))
        s.write(joined, dc.concat(arrays, axis=1))

    graph = env.build_graph(build)
    assert graph.kernel_count > 3
    assert all(len(source.bindings) <= limit for source in graph.sources)
    env.run(graph)
    np.testing.assert_allclose(env.read(total), np.sum(values, axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(env.read(stacked), np.stack(values))
    np.testing.assert_array_equal(env.read(joined), np.concatenate(values, axis=1))

    env.device = dataclasses.replace(env.device, limits=dataclasses.replace(env.device.limits, max_storage_buffers=2))
    with pytest.raises(dc.DeviceError, match=r"kernel0 binds 3 buffers; this device allows 2 \(ops from .*test_fusion"):
        env.build_graph(lambda s: s.write(total, s.read(params[0]) @ s.read(params[1]).T @ s.read(params[2])))


@pytest.mark.parametrize("name", ["q", "i", "lane", "value", "acc", "exp", "max", "texelFetch", "descent_pow", "K",
                                  "flat", "centroid", "class", "sampler2D", "dvec2", "mat4x3", "ü", "名前"])
def test_parameters_named_like_glsl_or_template_names(name: str) -> None:
    """A parameter's GLSL name must not hide a template's local (`q`, `lane`), a constant (`K`), a
    built-in (`exp`) or a helper: `q` used to compile to `texelFetch(q, ...)` on the int thread index. GLSL's
    qualifiers and reserved words (`flat`, `centroid` for k-means) and non-ASCII names failed to compile."""
    env = dc.Environment()
    data = rng.uniform(size=(8, 8)).astype(np.float32)
    x = env.parameter(name, (8, 8), init=data)
    out, row_max = env.parameter(f"{name}_out", (8, 8)), env.parameter(f"{name}_max", (8,))

    def build(s: dc.Scope) -> None:
        a = s.read(x)
        s.write(out, dc.exp(a) @ a + dc.pad(a[1:], ((0, 1), (0, 0))))
        s.write(row_max, dc.max(a, 1))

    env.run(env.build_graph(build))
    np.testing.assert_allclose(env.read(out), np.exp(data) @ data + np.pad(data[1:], ((0, 1), (0, 0))), rtol=1e-5)
    np.testing.assert_array_equal(env.read(row_max), data.max(1))


def test_parameter_names_that_clean_up_alike() -> None:
    """'a b' and 'a_b' both become a_b in GLSL; numbering the first two made 'a_b_1' twice."""
    env = dc.Environment()
    names = ("a b", "a_b", "a_b_1")
    params = [env.parameter(name, (4,), init=np.full(4, k, np.float32)) for k, name in enumerate(names)]
    env.run(env.build_graph(lambda s: [s.write(p, s.read(p) + 1.0) for p in params]))
    for k, p in enumerate(params):
        np.testing.assert_array_equal(env.read(p), np.full(4, k + 1.0))


def test_a_parameter_named_like_a_hidden_constant() -> None:
    """Graph constants live in hidden parameters; a user's parameter called constant1 must not make a
    later graph's constant clash with it (GraphError: parameter 'constant1' already exists)."""
    env = dc.Environment()
    mine = env.parameter("constant1", (3,), init=np.array([1.0, 2.0, 3.0], np.float32))
    out = env.parameter("constant_out", (3,))
    env.run(env.build_graph(lambda s: s.write(out, s.read(mine) * s.constant(np.array([2.0, 3.0, 4.0], np.float32)))))
    np.testing.assert_array_equal(env.read(out), [2.0, 6.0, 12.0])
    np.testing.assert_array_equal(env.read(mine), [1.0, 2.0, 3.0])


def test_a_long_fused_chain_builds(env: dc.Environment) -> None:
    """1000 elementwise ops fused into one kernel: codegen evaluates operands before their users
    rather than recursing through the chain (it passed Python's recursion limit near 340 ops)."""
    data = np.linspace(-1, 1, 6).astype(np.float32)
    x, out = env.parameter("long_chain_x", (6,), init=data), env.parameter("long_chain_out", (6,))

    def build(s: dc.Scope) -> None:
        a = s.read(x)
        y = a
        for _ in range(500):
            y = y * 0.5 + a
        s.write(out, y)

    graph = env.build_graph(build)
    assert graph.kernel_count == 1
    env.run(graph)
    np.testing.assert_allclose(env.read(out), 2 * data, rtol=1e-6, atol=1e-7)
