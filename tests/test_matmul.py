"""Matmul against numpy: 1-D, 2-D and batched broadcasting, transposed views, sizes that are not
multiples of the tiles, and fused prologue/epilogue work; the GPU kernel (shared-memory tiles, vector
loads) also runs on a CPU driver here. Tolerance rtol 1e-4, atol 1e-4 * sqrt(K) (float32 accumulation
in a different order)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import descent as dc
from descent.codegen import matmul
from tests.conftest import evaluate

rng = np.random.default_rng(4)
SHAPES = [
    ((3, 4), (4, 5)), ((1, 1), (1, 1)), ((70, 33), (33, 45)), ((128, 64), (64, 128)), ((17, 100), (100, 3)),
    ((5,), (5, 6)), ((4, 5), (5,)), ((7,), (7,)), ((2, 3, 4), (4, 5)), ((2, 1, 3, 4), (5, 4, 6)),
    ((3, 65, 17), (3, 17, 31)), ((3, 10, 8), (3, 8, 20)), ((33, 12), (12, 36)),  # vec4 rows, edges inside a block
]


@pytest.mark.parametrize("a_shape, b_shape", SHAPES, ids=str)
def test_matmul(env: dc.Environment, a_shape, b_shape) -> None:
    a = rng.normal(size=a_shape).astype(np.float32)
    b = rng.normal(size=b_shape).astype(np.float32)
    expected = a @ b
    result = evaluate(env, lambda x, y: x @ y, a, b)
    assert result.shape == expected.shape
    np.testing.assert_allclose(result, expected, rtol=1e-4, atol=1e-4 * np.sqrt(a_shape[-1]))


def test_a_long_shared_axis_is_split(env: dc.Environment) -> None:
    """A product over K = 140,000 is partial products over chunks of K and their sum; as one kernel its
    loop ran past lavapipe's 65535 iterations (refused), as did conv2d's weight gradient for a 1x1
    conv with 12 weights over 128 images of 32x32."""
    a = rng.normal(size=(4, 140_000)).astype(np.float32)
    b = rng.normal(size=(140_000, 3)).astype(np.float32)
    expected = a.astype(np.float64) @ b
    np.testing.assert_allclose(evaluate(env, lambda x, y: x @ y, a, b), expected, rtol=1e-4, atol=2e-3)
    x = rng.normal(size=(128, 3, 32, 32)).astype(np.float32)
    g = rng.normal(size=(128, 4, 32, 32)).astype(np.float32)
    weight = env.parameter("long_w", (4, 3, 1, 1))
    expected = np.einsum("nohw,nchw->oc", g.astype(np.float64), x)[..., None, None]

    def weight_gradient(x: dc.Array, g: dc.Array) -> dc.Array:
        w = x.scope.read(weight)
        return x.scope.grad((dc.conv2d(x, w) * g).sum(), [w])[0]

    result = evaluate(env, weight_gradient, x, g)
    np.testing.assert_allclose(result, expected, rtol=1e-4, atol=2e-3)


def test_a_long_shared_axis_of_prime_length_is_split(env: dc.Environment) -> None:
    """K = 131,071 (a prime) had no divisor to split at, so the product was one kernel, refused on
    lavapipe; zeros added to its operands make it split. Values and both gradients against torch."""
    k = 131_071
    a = rng.normal(size=(2, k)).astype(np.float32)
    b = rng.normal(size=(k, 3)).astype(np.float32)
    weights = rng.normal(size=(2, 3)).astype(np.float32)
    ta, tb = torch.from_numpy(a).double().requires_grad_(), torch.from_numpy(b).double().requires_grad_()
    product = ta @ tb
    (product * torch.from_numpy(weights).double()).sum().backward()
    np.testing.assert_allclose(evaluate(env, lambda x, y: x @ y, a, b), product.detach().numpy(), rtol=1e-4,
                               atol=2e-3)

    def gradients(x: dc.Array, y: dc.Array, w: dc.Array) -> dc.Array:
        gx, gy = x.scope.grad(dc.sum((x @ y) * w), [x, y])
        return dc.concat([dc.reshape(gx, (-1,)), dc.reshape(gy, (-1,))], 0)

    expected = np.concatenate([ta.grad.numpy().ravel(), tb.grad.numpy().ravel()])
    np.testing.assert_allclose(evaluate(env, gradients, a, b, weights), expected, rtol=1e-5, atol=1e-5)


def test_transposed_operands_are_views(env: dc.Environment) -> None:
    a = rng.normal(size=(40, 30)).astype(np.float32)
    b = rng.normal(size=(50, 40)).astype(np.float32)
    result = evaluate(env, lambda x, y: dc.matmul(x.T, y.T), a, b)
    np.testing.assert_allclose(result, a.T @ b.T, rtol=1e-4, atol=1e-3)


def test_dense_layer_is_one_kernel(env: dc.Environment) -> None:
    x = env.parameter("dense_x", (100, 784))
    w = env.parameter("dense_w", (784, 300))
    b = env.parameter("dense_b", (300,))
    out = env.parameter("dense_out", (100, 300))
    graph = env.build_graph(lambda s: s.write(out, dc.relu(s.read(x) @ s.read(w) + s.read(b))))
    assert graph.kernel_count == 1
    xs, ws, bs = (rng.normal(size=p.shape).astype(np.float32) for p in (x, w, b))
    for p, v in ((x, xs), (w, ws), (b, bs)):
        env.write(p, v)
    env.run(graph)
    np.testing.assert_allclose(env.read(out), np.maximum(xs @ ws + bs, 0), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("kind, kernels", [("discrete", 1), ("cpu", 3)])
def test_prologue_work_fuses_into_operand_loads(kind: str, kernels: int) -> None:
    """On a GPU computed operands fuse into the tiled matmul's loads; a CPU driver's matmul would
    recompute them for every block of rows or columns, so each gets a buffer (one kernel each)."""
    env = dc.Environment()
    env.device = dataclasses.replace(env.device, kind=kind)
    a = rng.normal(size=(20, 30)).astype(np.float32)
    b = rng.normal(size=(30, 10)).astype(np.float32)
    x = env.parameter("prologue_a", a.shape, init=a)
    y = env.parameter("prologue_b", b.shape, init=b)
    out = env.parameter("prologue_out", (20, 10))
    graph = env.build_graph(lambda s: s.write(out, dc.tanh(s.read(x)) @ (s.read(y).T * 2.0).T - 1.0))
    assert graph.kernel_count == kernels
    env.run(graph)
    np.testing.assert_allclose(env.read(out), np.tanh(a) @ (b * 2) - 1, rtol=1e-4, atol=1e-4)


def test_chained_matmuls(env: dc.Environment) -> None:
    a, b, c = (rng.normal(size=s).astype(np.float32) for s in ((9, 20), (20, 30), (30, 4)))
    result = evaluate(env, lambda x, y, z: dc.relu(x @ y) @ z, a, b, c)
    np.testing.assert_allclose(result, np.maximum(a @ b, 0) @ c, rtol=1e-4, atol=1e-3)


def test_matmul_shape_errors(env: dc.Environment) -> None:
    x = env.parameter("mm_err_x", (3, 4))
    with pytest.raises(dc.ShapeError, match=r"matmul: shapes \(3, 4\) and \(3, 4\) do not fit"):
        env.build_graph(lambda s: s.read(x) @ s.read(x))


EINSUM_CASES = [  # subscripts, operand shapes: products, implicit outputs, '...', broadcasting, diagonals
    ("ij,jk->ik", [(3, 4), (4, 5)]), ("ij,jk", [(2, 1), (3, 4)]), ("ii", [(3, 3)]), ("ii->i", [(4, 4)]),
    ("i...,i...->...", [(2, 3), (2, 1)]), ("ba,ab", [(2, 3), (3, 2)]), ("Ab,a", [(2, 3), (2,)]), ("ij->", [(2, 3)]),
    ("i,i", [(3,), (1,)]), ("...ij,...jk", [(2, 1, 2, 3), (5, 3, 4)]), ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
    ("i,j->ij", [(3,), (4,)]), ("ij,ij->ij", [(3, 4), (3, 4)]), ("ij->ji", [(3, 4)]), ("iij->j", [(3, 3, 2)]),
    ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 5)]), ("abc,cd,bd->a", [(2, 3, 4), (4, 5), (3, 5)]),
    ("i,i,i->i", [(3,), (3,), (3,)]), ("...", [(2, 3)]), ("", [()]), (",->", [(), ()]),
    ("ij,kl->ijkl", [(2, 3), (4, 5)]), ("iji->j", [(2, 3, 2)]),
    ("b h i d, b h j d -> b h i j", [(2, 3, 5, 4), (2, 3, 6, 4)]),
    ("nchw,oc->nohw", [(2, 3, 4, 5), (6, 3)]), ("bii->bi", [(0, 3, 3)]), ("ij,jk", [(0, 3), (3, 4)]),
]


@pytest.mark.parametrize("subscripts, shapes", EINSUM_CASES, ids=str)
def test_einsum_as_numpy(env: dc.Environment, subscripts: str, shapes) -> None:
    """Against numpy's einsum in float64, tolerance as matmul's."""
    arrays = [rng.normal(size=shape).astype(np.float32) for shape in shapes]
    expected = np.einsum(subscripts, *[a.astype(np.float64) for a in arrays])
    result = evaluate(env, lambda *xs: dc.einsum(subscripts, *xs), *arrays)
    assert result.shape == expected.shape
    np.testing.assert_allclose(result, expected, rtol=1e-4, atol=1e-4 * np.sqrt(max(np.prod(shapes[0]), 1)))


def test_einsum_takes_numpy_scalars_and_ints_as_float32(env: dc.Environment) -> None:
    ints = np.arange(6, dtype=np.int32).reshape(2, 3)
    result = evaluate(env, lambda a: dc.einsum(",ij->ji", np.float32(0.5), a), ints)
    assert result.dtype == np.float32
    np.testing.assert_array_equal(result, 0.5 * ints.T)


def test_einsum_contraction_is_one_matmul(env: dc.Environment) -> None:
    x = env.parameter("einsum_x", (8, 16, 32))
    w = env.parameter("einsum_w", (32, 24))
    out = env.parameter("einsum_out", (8, 16, 24))
    graph = env.build_graph(lambda s: s.write(out, dc.einsum("bik,kj->bij", s.read(x), s.read(w))))
    assert graph.kernel_count == 1


@pytest.mark.parametrize("subscripts, shapes, message", [
    ("ij,jk", [(2, 3), (4, 5)], r"'j' has sizes 3 and 4 in subscripts 'ij,jk' \(operand shapes \(2, 3\), \(4, 5\)\)"),
    ("ij", [(2, 3), (3,)], r"1 operand terms for 2 operands"),
    ("ij->k", [(2, 3)], r"output letter 'k' is in no operand"),
    ("ij->ii", [(2, 2)], r"output letter 'i' repeats"),
    ("i1", [(2, 3)], r"term 'i1' has a character that is not a letter"),
    ("ijk", [(2, 3)], r"term 'ijk' does not fit an operand of 2 axes"),
    ("...i->i", [(2, 3)], r"the output needs '...'"),
    ("...i,...i", [(2, 3), (4, 3)], r"'...' has sizes 2 and 4"),
    ("ii", [(2, 3)], r"'i' has sizes 2 and 3"),
    ("ii", [(1, 3)], r"repeated 'i' has sizes 1 and 3 in one operand in subscripts 'ii'"),
    ("i->i->i", [(2,)], r"more than one '->'"),
])
def test_einsum_errors(env: dc.Environment, subscripts: str, shapes, message: str) -> None:
    parameters = [env.parameter(f"einsum_err{k}_{len(env.parameters)}", shape) for k, shape in enumerate(shapes)]
    with pytest.raises(dc.ShapeError, match="einsum: " + message):
        env.build_graph(lambda s: dc.einsum(subscripts, *[s.read(p) for p in parameters]))


@pytest.fixture(scope="module")
def gpu_kernels() -> dc.Environment:
    """An Environment that generates the GPU kernels (shared-memory tiles) even on a CPU driver."""
    env = dc.Environment()
    env.device = dataclasses.replace(env.device, kind="discrete")
    return env


GPU_SHAPES = [((3, 4), (4, 5)), ((70, 33), (33, 45)), ((300, 200), (200, 260)), ((2, 130, 70), (70, 90)),
              ((1000, 40), (40, 1000)), ((64, 1100), (1100, 64)), ((256, 130, 24), (256, 24, 129)),
              ((300, 30, 50), (300, 50, 30)), ((256, 130, 20), (20, 30))]  # 128, 32 and 128 x 32 tiles


@pytest.mark.parametrize("a_shape, b_shape", GPU_SHAPES, ids=str)
def test_gpu_tiled_matmul(gpu_kernels: dc.Environment, a_shape, b_shape) -> None:
    a = rng.normal(size=a_shape).astype(np.float32)
    b = rng.normal(size=b_shape).astype(np.float32)
    result = evaluate(gpu_kernels, lambda x, y: dc.relu(x @ y + 1.0), a, b)
    np.testing.assert_allclose(result, np.maximum(a @ b + 1, 0), rtol=1e-4, atol=1e-4 * np.sqrt(a_shape[-1]))


SUBGROUP_CASES = [  # (A's shape, how A is read, B's shape): M, K and N off the tile edges, batches
    ((100, 784), "rows", (784, 300)), ((20, 36), "rows", (36, 40)), ((3, 13, 20), "rows", (3, 20, 36)),
    ((9, 12), "rows", (3, 12, 16)),  # A broadcast over the batch
    ((36, 20), "transposed", (36, 52)), ((3, 20, 12), "transposed", (3, 20, 44)),
    ((21, 13), "strided", (21, 36)), ((2, 5, 17), "strided", (2, 5, 64)),
    ((2, 19, 1100), "rows", (2, 1100, 44)), ((1100, 20), "transposed", (1100, 40)),  # tiles along the columns
]


@pytest.mark.parametrize("a_shape, read, b_shape", SUBGROUP_CASES, ids=str)
def test_cpu_subgroup_matmul(env: dc.Environment, a_shape, read: str, b_shape) -> None:
    """A CPU driver's matmul with B a plain buffer shares each slice of A across the subgroup by
    shuffles; A is fetched as vec4s along K, as vec4s along its rows (a transposed view), or element
    by element (a transposed view whose rows are not whole vec4s). An inf just past the end of a row
    of A and of the first matrix of B shows that steps past K read zeros (0 * inf would be NaN)."""
    limits = env.device.limits
    if env.device.kind != "cpu" or not limits.subgroup_shuffle or limits.subgroup_size % 4:
        pytest.skip("the subgroup matmul is generated for CPU drivers with subgroup shuffles")
    a = rng.normal(size=a_shape).astype(np.float32)
    b = rng.normal(size=b_shape).astype(np.float32)
    a.flat[a.shape[-1]] = np.inf  # what a read past K would find
    if b.ndim == 3:
        b[1, 0, 0] = np.inf
    x, y = env.parameter(f"sub_a{a_shape}{read}", a.shape), env.parameter(f"sub_b{b_shape}{read}", b.shape)
    env.write(x, a)
    env.write(y, b)

    def product(s: dc.Scope) -> dc.Array:
        left = s.read(x)
        if read != "rows":
            left = left.transpose(*range(left.ndim - 2), left.ndim - 1, left.ndim - 2)
        return left @ s.read(y)

    left = a if read == "rows" else np.swapaxes(a, -1, -2)
    expected = left @ b
    out = env.parameter(f"sub_out{a_shape}{read}", expected.shape)
    graph = env.build_graph(lambda s: s.write(out, product(s)))
    env.run(graph)
    (source,) = [source for source in graph.sources if "matmul" in source.ops]
    assert "subgroupShuffle" in source.glsl
    fetch_part = source.glsl.split("vec4 fetch_part")[1].split("\n}\n")[0]
    assert ("texelFetch(sub_a" in fetch_part) == (read != "strided")
    rows_first = left.shape[-1] * 16 * limits.subgroup_size <= matmul.SUBGROUP_ROWS_FIRST_STRIP
    assert f"#define ROWS_FIRST {int(rows_first)}" in source.glsl
    np.testing.assert_allclose(env.read(out), expected, rtol=1e-4, atol=1e-4 * np.sqrt(left.shape[-1]))


@pytest.mark.parametrize("a_shape, stored_b", [((20, 36), (40, 36)), ((3, 13, 20), (3, 44, 20)),
                                               ((100, 128), (196, 128)), ((9, 12), (3, 16, 12))], ids=str)
def test_cpu_subgroup_matmul_transposed_b(env: dc.Environment, a_shape, stored_b) -> None:
    """A transposed B (a dense layer's input gradient, g @ W^T) is fetched as vec4s along K, one
    column at a time. K = 20 and 36 end half way through a slice: an inf just past the end of K in
    A's first row and in B's first column (the next column's first element) shows that the steps
    past K read zeros."""
    limits = env.device.limits
    if env.device.kind != "cpu" or not limits.subgroup_shuffle or limits.subgroup_size % 4:
        pytest.skip("the subgroup matmul is generated for CPU drivers with subgroup shuffles")
    a = rng.normal(size=a_shape).astype(np.float32)
    b = rng.normal(size=stored_b).astype(np.float32)
    a.flat[a.shape[-1]] = np.inf
    b.reshape(-1, b.shape[-1])[1, 0] = np.inf
    x, y = env.parameter(f"tb_a{a_shape}", a.shape, init=a), env.parameter(f"tb_b{stored_b}", b.shape, init=b)
    expected = a @ np.swapaxes(b, -1, -2)
    out = env.parameter(f"tb_out{a_shape}", expected.shape)
    graph = env.build_graph(lambda s: s.write(out, s.read(x) @ s.read(y).transpose(*range(b.ndim - 2), -1, -2)))
    env.run(graph)
    (source,) = [source for source in graph.sources if "matmul" in source.ops]
    assert "vec4 steps = fetch_b(batch, k0 + 4 * h, col + c, tail);" in source.glsl
    np.testing.assert_allclose(env.read(out), expected, rtol=1e-4, atol=1e-4 * np.sqrt(a_shape[-1]))


@pytest.mark.parametrize("a_shape, b_shape", [((20, 36), (36, 40)), ((2, 9, 12), (2, 12, 68)), ((5, 7), (7, 12)),
                                              ((6, 7), (7, 10))], ids=str)
@pytest.mark.parametrize("epilogue", ["adam", "mask"])
@pytest.mark.parametrize("kind", ["device", "gpu"])
def test_matmul_epilogue(request, kind: str, a_shape, b_shape, epilogue: str) -> None:
    """A fused update's values that are the same at every element (bias corrections) are computed
    once per thread in prologue(). On a CPU driver, where N is a multiple of 4, the matmul (the
    subgroup kernel, or on lavapipe for N = 12, under twice its 8 lanes, the register-block one)
    stores a lane's four columns together: the update reads its state at those four elements as one
    vec4 and stores each float output as one vec4, a bool output element by element. A bias
    broadcast along rows reads each element's own column."""
    env = request.getfixturevalue("env" if kind == "device" else "gpu_kernels")
    quads = env.device.kind == "cpu" and b_shape[-1] % 4 == 0
    a = rng.normal(size=a_shape).astype(np.float32)
    b = rng.normal(size=b_shape).astype(np.float32)
    out_shape = (*a_shape[:-1], b_shape[-1])
    m, v = rng.normal(size=out_shape).astype(np.float32), rng.uniform(1, 2, size=out_shape).astype(np.float32)
    bias = rng.normal(size=b_shape[-1]).astype(np.float32)
    tag = f"{epilogue}{kind}{a_shape}"
    x, y = env.parameter(f"epi_a{tag}", a_shape, init=a), env.parameter(f"epi_b{tag}", b_shape, init=b)
    pm, pv = env.parameter(f"epi_m{tag}", out_shape, init=m), env.parameter(f"epi_v{tag}", out_shape, init=v)
    pbias, step = env.parameter(f"epi_bias{tag}", bias.shape, init=bias), env.parameter(f"epi_t{tag}", (), init=3.0)
    mask = env.parameter(f"epi_mask{tag}", out_shape, "bool")
    product = a @ b
    if epilogue == "adam":
        def update(s: dc.Scope) -> None:
            grad = s.read(x) @ s.read(y)
            correction = 1.0 - 0.9 ** s.read(step)
            s.write(pm, s.read(pm) * 0.9 + grad / correction)
            s.write(pv, s.read(pv) * 0.5 + grad * grad + s.read(pbias))
        expected = {pm: m * 0.9 + product / (1 - 0.9**3), pv: v * 0.5 + product * product + bias}
    else:
        def update(s: dc.Scope) -> None:
            biased = s.read(x) @ s.read(y) + s.read(pbias) + s.read(pbias)[0]  # the bias at a constant
            s.write(pm, dc.relu(biased))  # index too: hoisted, while each element reads its own
            s.write(mask, biased > 0.0)
        expected = {pm: np.maximum(product + bias + bias[0], 0), mask: product + bias + bias[0] > 0}
    graph = env.build_graph(update)
    env.run(graph)
    (source,) = [source for source in graph.sources if "matmul" in source.ops]
    assert ("void store_quad(" in source.glsl) == quads
    assert ("_vec4_out[q] = vec4(" in source.glsl) == quads
    assert "prologue();" in source.glsl
    for parameter, value in expected.items():
        if parameter is mask:
            clear = np.abs(product + bias + bias[0]) > 1e-3
            np.testing.assert_array_equal(env.read(mask)[clear], value[clear])
        else:
            np.testing.assert_allclose(env.read(parameter), value, rtol=1e-4, atol=1e-4 * a_shape[-1])


def test_matmul_of_four_outputs_through_a_view(env: dc.Environment) -> None:
    """A product of four floats, reshaped and scaled in its epilogue: on a CPU driver one thread
    stores all four as one vec4, its first lane the product's own index (no view to follow)."""
    a, b = rng.normal(size=(1, 3)).astype(np.float32), rng.normal(size=(3, 4)).astype(np.float32)
    result = evaluate(env, lambda x, y: (x @ y).reshape(4) * 2.0, a, b)
    np.testing.assert_allclose(result, (a @ b).reshape(4) * 2.0, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("a_shape, b_shape", [((21, 7), (7, 13)), ((3, 17, 5), (5, 9)), ((2, 33), (33, 18)),
                                              ((21, 7), (7, 12))], ids=str)
def test_cpu_direct_matmul_edges(env: dc.Environment, a_shape, b_shape) -> None:
    """A CPU driver's register-block matmul (operands not read as vec4s) reads rows and columns past
    the edges clamped and steps of K past its end as zeros: an inf in A's last column must give
    inf in that row, and one in B's last row inf in that column, not the NaN of 0 * inf. With N a
    multiple of 4 (12) B comes as vec4s (matmul_direct_vec4) and a lane stores its outputs in fours."""
    if env.device.kind != "cpu":
        pytest.skip("the register-block matmul is generated for CPU drivers")
    limits = env.device.limits
    if b_shape[-1] % 4 == 0 and limits.subgroup_shuffle and b_shape[-1] >= 2 * limits.subgroup_size:
        pytest.skip("with this driver's subgroup size the subgroup matmul takes this product")
    a = rng.normal(size=a_shape).astype(np.float32)
    b = rng.uniform(0.5, 1.5, size=b_shape).astype(np.float32)
    a[..., 1, -1] = np.inf
    b[..., -1, 2] = np.inf
    tag = f"{a_shape}{b_shape}"
    x, y = env.parameter(f"direct_a{tag}", a_shape, init=a), env.parameter(f"direct_b{tag}", b_shape, init=b)
    out = env.parameter(f"direct_out{tag}", (*a_shape[:-1], b_shape[-1]))
    graph = env.build_graph(lambda s: s.write(out, s.read(x) @ s.read(y)))
    env.run(graph)
    (source,) = [source for source in graph.sources if "matmul" in source.ops]
    fours = b_shape[-1] % 4 == 0
    assert ("const int DEPTH" in source.glsl) != fours and "subgroupShuffle" not in source.glsl
    assert ("void store_quad(" in source.glsl) == fours
    expected = a.astype(np.float64) @ b
    assert np.isinf(expected[..., 1, :]).all() and np.isinf(expected[..., 2]).all()
    np.testing.assert_allclose(env.read(out), expected, rtol=1e-4, atol=1e-4 * np.sqrt(a_shape[-1]))


def test_products_over_an_empty_shared_axis_are_zeros_as_numpy(env: dc.Environment) -> None:
    """x.T @ x with x (0, 3) failed in codegen (ZeroDivisionError in the transposed view's index)."""
    x = np.zeros((0, 3), np.float32)
    y = np.zeros((0, 2), np.float32)
    np.testing.assert_array_equal(evaluate(env, lambda a: a.T @ a + 1.0, x), x.T @ x + 1.0)
    np.testing.assert_array_equal(evaluate(env, lambda a, b: a.T @ b, x, y), np.zeros((3, 2)))
    z = np.zeros((2, 0, 3), np.float32)
    np.testing.assert_array_equal(evaluate(env, lambda a: dc.einsum("ijk,ijl->kl", a, a), z), np.zeros((3, 3)))
    gradient = evaluate(env, lambda a, b: a.scope.grad(dc.sum((a @ b + 1.0) ** 2), [b])[0],
                        np.ones((4, 0), np.float32), np.ones((0, 3), np.float32))
    assert gradient.shape == (0, 3)
