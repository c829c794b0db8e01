"""How kernels read their inputs: storage buffers everywhere, and on a CPU driver read-only inputs up to
the device's texel-buffer size through uniform texel buffers (lavapipe emulates a storage-buffer load
lane by lane; a texel fetch is one vector gather, ~5x cheaper). Both paths, alone and mixed in one
kernel, are checked against numpy on every dtype. Tolerance: rtol 1e-5 (matmul and sums of <= 64 terms).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import descent as dc
from tests.conftest import evaluate

rng = np.random.default_rng(3)


def _with_texel_limit(elements: int) -> dc.Environment:
    """An Environment whose device reads read-only buffers of at most `elements` as texel buffers."""
    env = dc.Environment()
    limits = dataclasses.replace(env.device.limits, max_texel_buffer_elements=elements)
    env.device = dataclasses.replace(env.device, kind="cpu", limits=limits)
    return env


@pytest.fixture(scope="module", params=[0, 16, 1 << 27], ids=["storage", "mixed", "texel"])
def reads(request) -> dc.Environment:
    return _with_texel_limit(request.param)


CASES = {
    "float broadcast": (lambda x, y: x * y + 1.0, lambda x, y: x * y + 1.0,
                        [rng.normal(size=(6, 8)), rng.normal(size=(8,))]),
    "int": (lambda x, y: x * 3 - y, lambda x, y: x * 3 - y,
            [rng.integers(-50, 50, (5, 7)).astype(np.int32), rng.integers(-50, 50, (7,)).astype(np.int32)]),
    "uint": (lambda x, y: x + y, lambda x, y: x + y,
             [rng.integers(0, 100, (4, 9)).astype(np.uint32), rng.integers(0, 100, (1, 9)).astype(np.uint32)]),
    "bool": (lambda x, y: dc.where(x, y, -y), lambda x, y: np.where(x, y, -y),
             [rng.integers(0, 2, (20,)).astype(bool), rng.normal(size=(20,))]),
    "sum": (lambda x, y: (x * y).sum(axis=1), lambda x, y: (x * y).sum(axis=1),
            [rng.normal(size=(9, 64)), rng.normal(size=(64,))]),
    "matmul": (lambda x, y: dc.relu(x @ y), lambda x, y: np.maximum(x @ y, 0),
               [rng.normal(size=(33, 20)), rng.normal(size=(20, 3))]),
    "take": (lambda x, i: dc.take(x, i), lambda x, i: np.take(x, i, axis=0),
               [rng.normal(size=(30, 4)), rng.integers(-30, 30, (12,)).astype(np.int32)]),
}


@pytest.mark.parametrize("case", CASES)
def test_reads_match_numpy(reads: dc.Environment, case: str) -> None:
    fn, reference, inputs = CASES[case]
    inputs = [x.astype(np.float32) if x.dtype == np.float64 else x for x in inputs]
    np.testing.assert_allclose(evaluate(reads, fn, *inputs), reference(*inputs), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("limit, texels", [(8, ("param:texel_small",)), (0, ())])
def test_texel_reads_only_where_allowed(limit: int, texels: tuple[str, ...]) -> None:
    """With an 8-texel limit, only the small read-only input is a texel buffer (the 40-element one
    is too long even as 10 vec4 texels); outputs never are."""
    env = _with_texel_limit(limit)
    big = env.parameter("texel_big", (40,), init=np.ones(40, np.float32))
    small = env.parameter("texel_small", (8,), init=np.ones(8, np.float32))
    out = env.parameter("texel_out", (5, 8))
    (source,) = env.build_graph(lambda s: s.write(out, s.read(big).reshape(5, 8) + s.read(small))).sources
    assert {source.bindings[k] for k, _ in source.texel_bindings} == set(texels)  # as floats, and vec4s on a CPU
    assert ("texelFetch(" in source.glsl) == bool(texels)


@pytest.mark.parametrize("limit", [0, 1 << 27])
def test_in_place_update_reads_old_values(limit: int) -> None:
    """A buffer a kernel both reads and writes is read through a texel buffer and written through a
    write-only storage buffer bound to the same memory; every element still sees its old value."""
    env = _with_texel_limit(limit)
    start = rng.normal(size=(3, 70)).astype(np.float32)
    weights = env.parameter("in_place_w", start.shape, init=start)
    graph = env.build_graph(lambda s: s.write(weights, s.read(weights) * 0.5 + dc.exp(s.read(weights))))
    (source,) = graph.sources
    assert (source.bindings.count("param:in_place_w"), len(source.texel_bindings)) == ((2, 1) if limit else (1, 0))
    env.run(graph)
    env.run(graph)
    once = start * 0.5 + np.exp(start)
    np.testing.assert_allclose(env.read(weights), once * 0.5 + np.exp(once), rtol=1e-5, atol=1e-6)


def test_gpu_devices_keep_storage_buffers() -> None:
    env = dc.Environment()
    env.device = dataclasses.replace(env.device, kind="discrete")
    small = env.parameter("storage_small", (8,), init=np.ones(8, np.float32))
    out = env.parameter("storage_out", (8,))
    graph = env.build_graph(lambda s: s.write(out, s.read(small) * 2.0))
    assert graph.sources[0].texel_bindings == () and "texelFetch" not in graph.sources[0].glsl
    env.run(graph)
    np.testing.assert_array_equal(env.read(out), np.full(8, 2.0, np.float32))


@pytest.mark.parametrize("limit", [0, 1 << 27])
def test_padded_reads_stay_in_their_buffer(limit: int) -> None:
    """A padded position's read is discarded, but a GPU without robust buffer access may fault on it:
    a gather under a pad clamps its element into the source (it read at -6 / 9 * 15 + ...)."""
    env = _with_texel_limit(limit)
    x = env.parameter("padded_take_x", (5, 3), init=rng.normal(size=(5, 3)).astype(np.float32))
    i = env.parameter("padded_take_i", (3,), "int32", init=np.array([4, 0, 2], np.int32))
    out = env.parameter("padded_take_out", (7, 3))
    graph = env.build_graph(lambda s: s.write(out, dc.pad(dc.take(s.read(x), s.read(i), 0), ((2, 2), (0, 0)), 7.0)))
    (source,) = graph.sources
    reads = [line for line in source.glsl.splitlines() if "padded_take_x" in line and "gather" in line]
    assert reads and all("padded_take_x, clamp(" in line or "padded_take_x[clamp(" in line for line in reads)
    env.run(graph)
    np.testing.assert_array_equal(env.read(out), np.pad(env.read(x)[[4, 0, 2]], ((2, 2), (0, 0)), constant_values=7))
