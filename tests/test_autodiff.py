"""Gradients: a float64 finite-difference check of every differentiable op, composites against torch,
accumulation, stop_gradient, in-graph updates, second order, and determinism.

Finite differences: loss = sum(f(x) * r) for random r, central differences in float64 on the host
(eps 1e-6) against descent's float32 gradient, rtol 2e-3 and atol 2e-3 * max|grad|."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

import descent as dc
from descent.autodiff import vjp
from descent.graph.optable import ELEMENTWISE

rng = np.random.default_rng(7)
F = torch.nn.functional
_uid = itertools.count()


def _np_pool(x, k, s, p, fill, fn):
    x = np.pad(x, [(0, 0), (0, 0), (p, p), (p, p)], constant_values=fill)
    n, c, h, w = x.shape
    oh, ow = (h - k) // s + 1, (w - k) // s + 1
    out = np.empty((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            out[:, :, i, j] = fn(x[:, :, i * s : i * s + k, j * s : j * s + k], axis=(2, 3))
    return out


def _np_conv(x, w, stride=1, padding=0, groups=1):
    return torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), stride=stride, padding=padding,
                                      groups=groups).numpy()


def _np_take(x, i, axis):
    return np.take(x, i, axis)


def _np_scatter(v, i, size):
    out = np.zeros((size,) + v.shape[1:])
    np.add.at(out, i, v)
    return out


INDICES = np.array([2, 0, 2, 4, 1], np.int32)
RAMP = np.arange(24, dtype=np.float32).reshape(3, 2, 4)

# name -> (descent fn, numpy float64 fn, input specs (shape, low, high))
CASES = {
    "add": (lambda a, b: a + b, lambda a, b: a + b, [((3, 4), -2, 2), ((4,), -2, 2)]),
    "sub": (lambda a, b: a - b, lambda a, b: a - b, [((3, 4), -2, 2), ((3, 1), -2, 2)]),
    "mul": (lambda a, b: a * b, lambda a, b: a * b, [((3, 4), -2, 2), ((3, 4), -2, 2)]),
    "div": (lambda a, b: a / b, lambda a, b: a / b, [((3, 4), -2, 2), ((3, 4), 0.5, 2)]),
    "remainder": (lambda a, b: a % b, lambda a, b: np.mod(a, b), [((3, 4), -3, 3), ((4,), 0.7, 1.9)]),
    "pow": (lambda a, b: a**b, lambda a, b: a**b, [((3, 4), 0.5, 2), ((3, 4), -1.5, 1.5)]),
    "maximum": (dc.maximum, np.maximum, [((12,), -2, 2), ((12,), -2, 2)]),
    "minimum": (dc.minimum, np.minimum, [((12,), -2, 2), ((12,), -2, 2)]),
    "where": (lambda a, b: dc.where(a > 0, a * 2.0, b), lambda a, b: np.where(a > 0, a * 2, b),
              [((12,), -2, 2), ((12,), -2, 2)]),
    "neg": (lambda a: -a, np.negative, [((5,), -2, 2)]),
    "relu": (dc.relu, lambda a: np.maximum(a, 0), [((8,), -2, 2)]),
    "contiguous": (lambda a: dc.contiguous(dc.sin(a)) * a, lambda a: np.sin(a) * a, [((5,), -2, 2)]),
    "abs": (dc.abs, np.abs, [((8,), -2, 2)]),
    "exp": (dc.exp, np.exp, [((5,), -2, 2)]),
    "log": (dc.log, np.log, [((5,), 0.5, 3)]),
    "log1p": (dc.log1p, np.log1p, [((5,), -0.5, 3)]),
    "sqrt": (dc.sqrt, np.sqrt, [((5,), 0.5, 3)]),
    "rsqrt": (dc.rsqrt, lambda a: 1 / np.sqrt(a), [((5,), 0.5, 3)]),
    "sin": (dc.sin, np.sin, [((5,), -3, 3)]),
    "cos": (dc.cos, np.cos, [((5,), -3, 3)]),
    "tan": (dc.tan, np.tan, [((5,), -1, 1)]),
    "tanh": (dc.tanh, np.tanh, [((5,), -2, 2)]),
    "sigmoid": (dc.sigmoid, lambda a: 1 / (1 + np.exp(-a)), [((5,), -3, 3)]),
    "erf": (dc.erf, np.vectorize(math.erf), [((6,), -2, 2)]),
    "exp2": (dc.exp2, np.exp2, [((5,), -2, 2)]),
    "expm1": (dc.expm1, np.expm1, [((5,), -2, 2)]),
    "log2": (dc.log2, np.log2, [((5,), 0.5, 3)]),
    "log10": (dc.log10, np.log10, [((5,), 0.5, 3)]),
    "sinh": (dc.sinh, np.sinh, [((5,), -2, 2)]),
    "cosh": (dc.cosh, np.cosh, [((5,), -2, 2)]),
    "asin": (dc.asin, np.arcsin, [((5,), -0.9, 0.9)]),
    "acos": (dc.acos, np.arccos, [((5,), -0.9, 0.9)]),
    "atan": (dc.atan, np.arctan, [((5,), -3, 3)]),
    "atan2": (dc.atan2, np.arctan2, [((3, 4), -2, 2), ((4,), 0.5, 2)]),
    "view:reshape": (lambda a: a.reshape(4, 3) * dc.exp(a.reshape(4, 3)),
                     lambda a: a.reshape(4, 3) * np.exp(a.reshape(4, 3)), [((3, 4), -1, 1)]),
    "view:permute": (lambda a: a.transpose(2, 0, 1) * 2.0, lambda a: a.transpose(2, 0, 1) * 2, [((2, 3, 4), -1, 1)]),
    "view:expand": (lambda a: a.broadcast_to((3, 2, 4)) * a.scope.constant(RAMP),
                    lambda a: np.broadcast_to(a, (3, 2, 4)) * RAMP, [((2, 1), -1, 1)]),
    "view:window": (lambda a: a[1:, ::-2, 1::2] * 3.0, lambda a: a[1:, ::-2, 1::2] * 3, [((3, 5, 6), -1, 1)]),
    "view:pad": (lambda a: dc.pad(a, [(1, 2), (0, 1)], 5.0) ** 2.0,
                 lambda a: np.pad(a, [(1, 2), (0, 1)], constant_values=5) ** 2, [((3, 4), -1, 1)]),
    "view:windows": (lambda a: dc.max_pool2d(a, 3, 2, 1), lambda a: _np_pool(a, 3, 2, 1, -np.inf, np.max),
                     [((1, 2, 7, 6), -1, 1)]),
    "view:windows_tiled": (lambda a: dc.max_pool2d(a, 2), lambda a: _np_pool(a, 2, 2, 0, -np.inf, np.max),
                           [((1, 2, 7, 5), -1, 1)]),
    "reduce:sum": (lambda a: a.sum(axis=1), lambda a: a.sum(axis=1), [((3, 4, 2), -1, 1)]),
    "reduce:prod": (lambda a: a.prod(axis=0), lambda a: a.prod(axis=0), [((3, 4), 0.5, 1.5)]),
    "reduce:max": (lambda a: a.max(axis=(0, 2)), lambda a: a.max(axis=(0, 2)), [((3, 4, 2), -1, 1)]),
    "reduce:min": (lambda a: a.min(axis=1), lambda a: a.min(axis=1), [((3, 4), -1, 1)]),
    "reduce:logsumexp": (lambda a: dc.logsumexp(a, 1), lambda a: np.log(np.exp(a).sum(1)), [((3, 4), -2, 2)]),
    "matmul": (lambda a, b: a @ b, lambda a, b: a @ b, [((2, 3, 4), -1, 1), ((4, 5), -1, 1)]),
    "gather": (lambda a: dc.take(a, a.scope.constant(INDICES), 0), lambda a: _np_take(a, INDICES, 0),
               [((6, 3), -1, 1)]),
    "scatter_add": (lambda v: dc.scatter_add(v, v.scope.constant(INDICES), 6), lambda v: _np_scatter(v, INDICES, 6),
                    [((5, 3), -1, 1)]),
    "conv2d": (lambda a, w: dc.conv2d(a, w, stride=2, padding=1, groups=2),
               lambda a, w: _np_conv(a, w, 2, 1, 2), [((1, 4, 5, 5), -1, 1), ((4, 2, 3, 3), -1, 1)]),
    "avg_pool2d": (lambda a: dc.avg_pool2d(a, 2), lambda a: _np_pool(a, 2, 2, 0, 0, np.mean), [((1, 2, 4, 6), -1, 1)]),
}



def _inputs(specs):
    return [rng.uniform(lo, hi, shape).astype(np.float32) for shape, lo, hi in specs]


def _descent_gradients(env: dc.Environment, fn, inputs: list[np.ndarray], weights: np.ndarray):
    uid = next(_uid)
    params = [env.parameter(f"fd{uid}_{k}", x.shape, init=x) for k, x in enumerate(inputs)]
    outs = [env.parameter(f"fd{uid}_g{k}", x.shape) for k, x in enumerate(inputs)]

    def build(s: dc.Scope) -> None:
        arrays = [s.read(p) for p in params]
        loss = dc.sum(fn(*arrays) * s.constant(weights))
        for out, gradient in zip(outs, s.grad(loss, arrays)):
            s.write(out, gradient)

    env.run(env.build_graph(build))
    return [env.read(o) for o in outs]


def _finite_differences(np_fn, inputs: list[np.ndarray], weights: np.ndarray, eps: float = 1e-6):
    values = [x.astype(np.float64) for x in inputs]
    gradients = []
    for k, x in enumerate(values):
        gradient = np.zeros_like(x)
        for index in np.ndindex(x.shape):
            shifted = [v.copy() for v in values]
            shifted[k][index] += eps
            up = (np_fn(*shifted) * weights).sum()
            shifted[k][index] -= 2 * eps
            down = (np_fn(*shifted) * weights).sum()
            gradient[index] = (up - down) / (2 * eps)
        gradients.append(gradient)
    return gradients


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradient_matches_finite_differences(env: dc.Environment, name: str) -> None:
    fn, np_fn, specs = CASES[name]
    inputs = _inputs(specs)
    weights = rng.normal(size=np.shape(np_fn(*[x.astype(np.float64) for x in inputs]))).astype(np.float32)
    ours = _descent_gradients(env, fn, inputs, weights)
    theirs = _finite_differences(np_fn, inputs, weights.astype(np.float64))
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-3 * max(np.abs(b).max(), 1.0))


def test_every_op_has_a_rule_and_a_gradient_test() -> None:
    covered_by_cases = {name.split(":")[0] for name in CASES} | {"reduce", "view"}
    no_gradient = set(vjp.NO_GRADIENT)
    ops = set(ELEMENTWISE) | {"cast", "view", "reduce", "matmul", "gather", "scatter_add", "const", "read", "arange"}
    assert ops <= vjp.ops_with_rules(), ops - vjp.ops_with_rules()
    untested = ops - covered_by_cases - no_gradient
    assert not untested, f"ops with a gradient rule but no gradient test: {untested}"
    view_kinds = {"reshape", "permute", "expand", "window", "pad", "windows"}
    assert view_kinds <= {name.split(":")[1] for name in CASES if name.startswith("view:")}
    reduce_kinds = {"sum", "prod", "max", "min", "logsumexp"}
    assert reduce_kinds <= {name.split(":")[1] for name in CASES if name.startswith("reduce:")}


def _torch_convnet(x, params, labels):
    w1, b1, w2, b2, w3, b3, w4, b4 = params
    h = F.leaky_relu(F.conv2d(x, w1, b1, padding=1), 0.01)
    h = F.max_pool2d(h, 2)
    h = F.leaky_relu(F.conv2d(h, w2, b2, padding=1, groups=2), 0.01)
    h = F.max_pool2d(h, 2).flatten(1)
    h = F.leaky_relu(h @ w3 + b3, 0.01)
    return F.cross_entropy(h @ w4 + b4, labels)


def _descent_convnet(x, params, labels):
    w1, b1, w2, b2, w3, b3, w4, b4 = params
    h = dc.leaky_relu(dc.conv2d(x, w1, b1, padding=1), 0.01)
    h = dc.max_pool2d(h, 2)
    h = dc.leaky_relu(dc.conv2d(h, w2, b2, padding=1, groups=2), 0.01)
    h = dc.max_pool2d(h, 2)
    h = h.reshape(h.shape[0], -1)
    h = dc.leaky_relu(h @ w3 + b3, 0.01)
    return dc.softmax_cross_entropy(h @ w4 + b4, labels)


def test_convnet_loss_and_gradients_match_torch(env: dc.Environment) -> None:
    shapes = [(4, 1, 3, 3), (4,), (8, 2, 3, 3), (8,), (8 * 4 * 4, 16), (16,), (16, 10), (10,)]
    values = [rng.normal(size=s).astype(np.float32) * 0.3 for s in shapes]
    x = rng.normal(size=(3, 1, 16, 16)).astype(np.float32)
    labels = rng.integers(0, 10, 3).astype(np.int32)
    tparams = [torch.tensor(v, requires_grad=True) for v in values]
    tloss = _torch_convnet(torch.from_numpy(x), tparams, torch.from_numpy(labels).long())
    tloss.backward()

    params = [env.parameter(f"convnet_p{k}", v.shape, init=v) for k, v in enumerate(values)]
    grads = [env.parameter(f"convnet_g{k}", v.shape) for k, v in enumerate(values)]
    xp = env.parameter("convnet_x", x.shape, init=x)
    yp = env.parameter("convnet_y", labels.shape, dc.int32, init=labels)
    loss = env.parameter("convnet_loss", ())

    def build(s: dc.Scope) -> None:
        arrays = [s.read(p) for p in params]
        value = _descent_convnet(s.read(xp), arrays, s.read(yp))
        s.write(loss, value)
        for g, gradient in zip(grads, s.grad(value, arrays)):
            s.write(g, gradient)

    env.run(env.build_graph(build))
    np.testing.assert_allclose(env.read(loss), tloss.item(), rtol=1e-5)
    for g, t in zip(grads, tparams):
        np.testing.assert_allclose(env.read(g), t.grad.numpy(), rtol=1e-3, atol=1e-5)


def _mlp_step(env: dc.Environment, name: str, lr: float = 0.1):
    w1 = env.parameter(f"{name}_w1", (20, 32), init=rng.normal(size=(20, 32)).astype(np.float32) * 0.2)
    b1 = env.parameter(f"{name}_b1", (32,))
    w2 = env.parameter(f"{name}_w2", (32, 5), init=rng.normal(size=(32, 5)).astype(np.float32) * 0.2)
    b2 = env.parameter(f"{name}_b2", (5,))
    x = env.parameter(f"{name}_x", (16, 20), init=rng.normal(size=(16, 20)).astype(np.float32))
    y = env.parameter(f"{name}_y", (16,), dc.int32, init=rng.integers(0, 5, 16).astype(np.int32))
    loss = env.parameter(f"{name}_loss", ())
    weights = [w1, b1, w2, b2]

    def step(s: dc.Scope) -> None:
        arrays = [s.read(p) for p in weights]
        h = dc.relu(s.read(x) @ arrays[0] + arrays[1])
        value = dc.softmax_cross_entropy(h @ arrays[2] + arrays[3], s.read(y))
        s.write(loss, value)
        for p, a, g in zip(weights, arrays, s.grad(value, arrays)):
            s.write(p, a - lr * g)

    return env.build_graph(step), weights, loss


def test_training_step_is_one_replayed_graph_with_fused_backward(env: dc.Environment) -> None:
    graph, weights, loss = _mlp_step(env, "train")
    losses = []
    for _ in range(30):
        env.run(graph)
        losses.append(float(env.read(loss)))
    assert losses[-1] < 0.5 * losses[0]
    # forward: 2 matmuls + logsumexp + loss sum; backward: 4 matmuls + 2 bias sums; the updates fuse
    # into the kernels that produce the gradients. Measured 10 on lavapipe.
    assert graph.kernel_count <= 12, graph.summary()


def test_gradients_are_bit_identical_across_runs(env: dc.Environment) -> None:
    """Two runs of one training step from the same weights update them to the same bits (no atomics
    or order-dependent sums on the way), and the update is a real one."""
    graph, weights, _ = _mlp_step(env, "determinism")
    start = [np.linspace(-1, 1, p.size, dtype=np.float32).reshape(p.shape) for p in weights]
    updated = []
    for _ in range(2):
        for p, v in zip(weights, start):
            env.write(p, v)
        env.run(graph)
        updated.append([env.read(p) for p in weights])
    for a, b, v in zip(*updated, start):
        assert np.isfinite(a).all() and not np.array_equal(a, v)
        np.testing.assert_array_equal(a, b)


def test_accumulation_unused_branches_and_stop_gradient(env: dc.Environment) -> None:
    x = env.parameter("acc_x", (4,), init=np.array([0.5, -1.0, 2.0, 1.5], np.float32))
    gx = env.parameter("acc_gx", (4,))
    gy = env.parameter("acc_gy", (4,))

    def build(s: dc.Scope) -> None:
        a = s.read(x)
        unused = dc.exp(a) * 3.0
        loss = dc.sum(a * a + dc.sin(a) + dc.stop_gradient(a) * a)
        gradient, nothing = s.grad(loss, [a, unused])
        s.write(gx, gradient)
        s.write(gy, nothing)

    graph = env.build_graph(build)
    env.run(graph)
    value = np.array([0.5, -1.0, 2.0, 1.5], np.float32)
    np.testing.assert_allclose(env.read(gx), 2 * value + np.cos(value) + value, rtol=1e-6)
    np.testing.assert_array_equal(env.read(gy), np.zeros(4, np.float32))


def test_gradient_of_a_slice_of_a_plain_sum_is_zero_outside_it(env: dc.Environment) -> None:
    """sum's cotangent is a broadcast constant; the slice's gradient pads it. A padded view of a
    constant used to fold into the constant, so every element got 1."""
    x = env.parameter("slice_x", (4,), init=np.arange(4, dtype=np.float32))
    g = env.parameter("slice_g", (4,))
    env.run(env.build_graph(lambda s: s.write(g, s.grad(s.read(x)[1:3].sum(), [s.read(x)])[0])))
    np.testing.assert_array_equal(env.read(g), [0.0, 1.0, 1.0, 0.0])


def test_gradient_through_a_concat_or_pad_of_an_empty_part(env: dc.Environment) -> None:
    """An empty part's gradient is empty (its pad's rule sliced out nothing, which getitem refuses)."""
    z = env.parameter("empty_part", (0, 3))
    w = env.parameter("full_part", (2, 3), init=np.ones((2, 3), np.float32))
    gz, gw, gp = env.parameter("empty_g", (0, 3)), env.parameter("full_g", (2, 3)), env.parameter("pad_g", (0, 3))

    def build(s: dc.Scope) -> None:
        grads = s.grad(dc.sum(dc.concat([s.read(z), s.read(w)]) * 3.0), [s.read(z), s.read(w)])
        s.write(gz, grads[0])
        s.write(gw, grads[1])
        s.write(gp, s.grad(dc.sum(dc.pad(s.read(z), ((1, 1), (0, 0)), 5.0)), [s.read(z)])[0])

    env.run(env.build_graph(build))
    assert env.read(gz).shape == env.read(gp).shape == (0, 3)
    np.testing.assert_array_equal(env.read(gw), np.full((2, 3), 3.0))


def test_custom_gradient_replaces_the_rule_of_its_output(env: dc.Environment) -> None:
    x = env.parameter("custom_x", (4,), init=np.array([0.4, -1.6, 2.5, 0.2], np.float32))
    out = env.parameter("custom_out", (4,))

    def build(s: dc.Scope) -> None:
        a = s.read(x)
        rounded = s.custom_gradient(dc.round(a), [a], lambda g: [g * 3.0])
        (gradient,) = s.grad(dc.sum(rounded * rounded), [a])
        s.write(out, gradient)

    env.run(env.build_graph(build))
    np.testing.assert_allclose(env.read(out), 3.0 * 2 * np.round([0.4, -1.6, 2.5, 0.2]), rtol=1e-6)


def test_custom_gradient_changes_only_the_use_it_returns(env: dc.Environment) -> None:
    """The rule was attached to the output's node: on an input itself (JAX's gradient clipping idiom) it
    was added to the ordinary gradient, 11 for 1, and it changed the output's other uses; with an input
    made after the output, the gradient was 0."""
    x = env.parameter("custom_use_x", (3,), init=np.array([0.4, -1.6, 2.5], np.float32))
    outs = [env.parameter(f"custom_use_{k}", (3,)) for k in range(3)]

    def build(s: dc.Scope) -> None:
        a = s.read(x)
        clipped = s.custom_gradient(a, [a], lambda g: [dc.clip(g, -1.0, 1.0)])
        s.write(outs[0], s.grad(dc.sum(10.0 * clipped), [a])[0])
        doubled = a * 2.0
        ruled = s.custom_gradient(doubled, [a], lambda g: [g * 5.0])
        s.write(outs[1], s.grad(dc.sum(ruled + doubled), [a])[0])
        rounded, scaled = dc.round(a), a * 2.0
        s.write(outs[2], s.grad(dc.sum(3.0 * s.custom_gradient(rounded, [scaled], lambda g: [g])), [a])[0])

    env.run(env.build_graph(build))
    for out, expected in zip(outs, (1.0, 5.0 + 2.0, 6.0)):
        np.testing.assert_array_equal(env.read(out), np.full(3, expected, np.float32))


def test_grad_takes_one_array_or_a_list_and_constants(env: dc.Environment) -> None:
    """grad(loss, a) went through a's elements, each a new view the loss does not use: zeros. The
    gradient of a constant the op broadcast failed: 'broadcast_to: cannot broadcast (3,) to ()'."""
    x = env.parameter("grad_forms_x", (3,), init=np.array([1.0, 2.0, 3.0], np.float32))
    alone, constant = env.parameter("grad_forms_alone", (3,)), env.parameter("grad_forms_constant", ())

    def build(s: dc.Scope) -> None:
        a, c = s.read(x), s.constant(0.5)
        gradients = s.grad(dc.sum(a * a), a)
        assert isinstance(gradients, list) and len(gradients) == 1
        s.write(alone, gradients[0])
        s.write(constant, s.grad(dc.sum(a * c), [c])[0])

    env.run(env.build_graph(build))
    np.testing.assert_array_equal(env.read(alone), [2.0, 4.0, 6.0])
    assert env.read(constant) == 6.0
    other = {}
    env.build_graph(lambda s: other.update(loss=dc.sum(s.read(x))))
    for wrong, error, message in [
        (lambda s: s.grad(3.0, [s.read(x)]), TypeError, "grad: loss must be an Array, got float"),
        (lambda s: s.grad(dc.sum(s.read(x)), [np.ones(3)]), TypeError, "grad: wrt\\[0\\] is a ndarray, not an Array"),
        (lambda s: s.grad(dc.sum(s.read(x)), np.ones(3)), TypeError, "wrt must be an Array or a list of Arrays"),
        (lambda s: s.grad(other["loss"], [s.read(x)]), dc.GraphError, "the loss comes from another graph"),
    ]:
        with pytest.raises(error, match=message + r".*\n  at .*test_autodiff"):
            env.build_graph(wrong)


@pytest.mark.parametrize("case, rule, error, message", [
    (0, lambda g: g, dc.GraphError, r"returned Array instead of a list of 2 gradient\(s\)"),
    (1, lambda g: [g], dc.GraphError, r"returned 1 instead of a list of 2"),
    (2, lambda g: [None, dc.sum(g, axis=0)], dc.ShapeError,
     r"gradient of shape \(4,\) for input 1, which has shape \(3, 1\)"),
])
def test_custom_gradient_rule_that_does_not_fit_is_named(env: dc.Environment, case, rule, error, message) -> None:
    x = env.parameter(f"custom_bad_x{case}", (3, 4))
    y = env.parameter(f"custom_bad_y{case}", (3, 1))

    def build(s: dc.Scope) -> None:
        a, b = s.read(x), s.read(y)
        out = s.custom_gradient(a * b, [a, b], rule)
        s.grad(dc.sum(out), [a, b])

    with pytest.raises(error, match=message) as caught:
        env.build_graph(build)
    assert "custom_gradient rule set at " + __file__ in str(caught.value)


def test_second_order_gradient(env: dc.Environment) -> None:
    x = env.parameter("second_x", (3,), init=np.array([0.3, -0.7, 1.1], np.float32))
    out = env.parameter("second_out", (3,))

    def build(s: dc.Scope) -> None:
        a = s.read(x)
        (first,) = s.grad(dc.sum(dc.sin(a) * a), [a])
        (second,) = s.grad(dc.sum(first), [a])
        s.write(out, second)

    env.run(env.build_graph(build))
    value = np.array([0.3, -0.7, 1.1])
    np.testing.assert_allclose(env.read(out), 2 * np.cos(value) - value * np.sin(value), rtol=1e-5)


def _torch_gradients(fn, inputs: list[np.ndarray], weights: np.ndarray) -> list[np.ndarray]:
    tensors = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in inputs]
    (fn(*tensors) * torch.from_numpy(weights.astype(np.float64))).sum().backward()
    return [t.grad.numpy() for t in tensors]


TIES = np.array([-1.0, 0.0, 0.0, 0.5, 1.0, 1.0, 2.0, 3.0], np.float32)
WITH_NAN = np.array([np.nan, -1.0, 0.0, 0.5, 2.0], np.float32)
TORCH_CASES = {  # name -> (descent fn, torch fn, inputs): ties, zeros and composites, against torch's autograd
    "relu at 0": (dc.relu, torch.relu, [TIES]),
    "clip on its bounds": (lambda a: dc.clip(a, 0.0, 1.0), lambda a: torch.clamp(a, 0.0, 1.0), [TIES]),
    "clip by arrays": (dc.clip, torch.clamp, [TIES, np.full(8, 0.5, np.float32), np.full(8, 1.0, np.float32)]),
    "clip by equal and crossed bounds": (dc.clip, torch.clamp, [TIES, np.float32([1, 1, 2, 0, 1, 3, 1, 1]),
                                                               np.float32([1, 1, 1, 0, 1, 1, 1, 0])]),  # lo took it
    "clip at NaN: no gradient there": (dc.clip, torch.clamp, [np.array([np.nan, -2, 0, 0.5, 1, 3], np.float32),
                                                             np.array([0, np.nan, 0, 0, 0, 0], np.float32),
                                                             np.array([1, 1, np.nan, 1, 1, 1], np.float32)]),
    "relu and abs at NaN": (lambda a: dc.relu(a) + dc.abs(a), lambda a: torch.relu(a) + torch.abs(a), [WITH_NAN]),
    "softplus at NaN keeps it": (dc.nn.activations.softplus, F.softplus, [WITH_NAN]),
    "maximum with NaN: both take it": (dc.maximum, torch.maximum, [WITH_NAN, WITH_NAN[::-1].copy()]),
    "minimum with NaN: both take it": (dc.minimum, torch.minimum, [WITH_NAN, np.zeros(5, np.float32)]),
    "maximum ties": (dc.maximum, torch.maximum, [TIES, TIES[::-1].copy()]),
    "minimum ties": (dc.minimum, torch.minimum, [TIES, np.ones(8, np.float32)]),
    "max ties": (lambda a: a.max(axis=1), lambda a: a.amax(dim=1), [np.array([[1, 3, 3], [2, 2, 2]], np.float32)]),
    "min ties": (lambda a: a.min(axis=0), lambda a: a.amin(dim=0), [np.array([[1, 3, 3], [1, 2, 3]], np.float32)]),
    "max_pool2d ties go to the first": (lambda a: dc.max_pool2d(a, 2), lambda a: F.max_pool2d(a, 2),
                                        [rng.integers(0, 3, (2, 3, 6, 5))]),
    "max_pool2d overlapping ties": (lambda a: dc.max_pool2d(a, 3, 2, 1), lambda a: F.max_pool2d(a, 3, 2, 1),
                                    [rng.integers(0, 3, (1, 2, 7, 6))]),
    "max_pool2d stride 1 ties": (lambda a: dc.max_pool2d(a, 2, 1), lambda a: F.max_pool2d(a, 2, 1),
                                 [rng.integers(0, 2, (1, 2, 5, 5))]),
    "prod with zeros": (lambda a: a.prod(axis=1), lambda a: a.prod(dim=1),
                        [np.array([[0, 2, 3], [0, 0, 5], [1.5, 2, -3], [4, 0, 0.5]], np.float32)]),
    "abs at 0": (dc.abs, torch.abs, [TIES]),
    "atan2 at the origin": (dc.atan2, torch.atan2, [np.array([0.0, 0.0, 1.0], np.float32),
                                                    np.array([0.0, 2.0, 0.0], np.float32)]),
    "softmax": (lambda a: dc.softmax(a, 0), lambda a: torch.softmax(a, 0), [rng.normal(size=(4, 3))]),
    "log_softmax": (dc.log_softmax, lambda a: torch.log_softmax(a, -1), [rng.normal(size=(4, 3))]),
    "var": (lambda a: dc.var(a, 1), lambda a: a.var(1, unbiased=False), [rng.normal(size=(3, 5))]),
    "std": (lambda a: dc.std(a, (0, 2)), lambda a: a.std((0, 2), unbiased=False), [rng.normal(size=(2, 3, 4))]),
    "std of a constant row": (lambda a: dc.std(a, 1), lambda a: a.std(1, unbiased=False),
                              [np.array([[2, 2, 2], [1, 2, 4]], np.float32)]),
    "pow at 0 ** 0": (lambda a, b: a**b, torch.pow, [np.array([0, 0, 2, 0.5], np.float32),
                                                   np.array([0, 2, 0, 1.5], np.float32)]),
    "mse": (dc.mse, F.mse_loss, [rng.normal(size=(4, 3)), rng.normal(size=(4, 3))]),
    "mse sum": (lambda a, b: dc.mse(a, b, "sum"), lambda a, b: F.mse_loss(a, b, reduction="sum"),
                [rng.normal(size=(4, 3)), rng.normal(size=(4, 3))]),
    "l1": (dc.l1, F.l1_loss, [rng.normal(size=(4, 3)), rng.normal(size=(4, 3))]),
    "huber, both sides of delta": (lambda a, b: dc.huber(a, b, "sum", 0.5),
                                   lambda a, b: F.huber_loss(a, b, reduction="sum", delta=0.5),
                                   [rng.normal(size=(4, 3)), rng.normal(size=(4, 3))]),
    "bce with logits": (dc.binary_cross_entropy_with_logits, F.binary_cross_entropy_with_logits,
                        [rng.normal(size=(6,)) * 3, rng.uniform(size=(6,))]),
    "cross-entropy, probability labels": (dc.softmax_cross_entropy, F.cross_entropy,
                                          [rng.normal(size=(4, 5)), rng.dirichlet(np.ones(5), 4)]),
    "cross-entropy sum": (lambda a: dc.softmax_cross_entropy(a, a.scope.constant(INDICES[:4]), "sum"),
                          lambda a: F.cross_entropy(a, torch.from_numpy(INDICES[:4]).long(), reduction="sum"),
                          [rng.normal(size=(4, 5))]),
    "concat": (lambda a, b: dc.concat([a, b * 2.0, a], 1), lambda a, b: torch.cat([a, b * 2, a], 1),
               [rng.normal(size=(2, 3)), rng.normal(size=(2, 1))]),
    "stack": (lambda a, b: dc.stack([a, b], -1), lambda a, b: torch.stack([a, b], -1),
              [rng.normal(size=(2, 3)), rng.normal(size=(2, 3))]),
    "pad reflect": (lambda a: dc.pad(a, [(2, 1), (1, 2)], mode="reflect"),
                    lambda a: F.pad(a[None], (1, 2, 2, 1), mode="reflect")[0], [rng.normal(size=(4, 5))]),
    "take, axis 1, negative indices": (lambda a: dc.take(a, a.scope.constant(np.array([-1, 0, -1, 2], np.int32)), 1),
                                       lambda a: a[:, [-1, 0, -1, 2]], [rng.normal(size=(2, 4, 3))]),
    "scatter_add, axis 1": (lambda v: dc.scatter_add(v, v.scope.constant(np.array([3, 0, 3], np.int32)), 5, 1),
                            lambda v: torch.zeros(2, 5, 2, dtype=v.dtype).index_add(1, torch.tensor([3, 0, 3]), v),
                            [rng.normal(size=(2, 3, 2))]),
    "conv_transpose2d": (lambda a, w: dc.conv_transpose2d(a, w, stride=2, padding=1, output_padding=1, groups=2),
                         lambda a, w: F.conv_transpose2d(a, w, stride=2, padding=1, output_padding=1, groups=2),
                         [rng.normal(size=(2, 4, 3, 3)), rng.normal(size=(4, 3, 3, 3))]),
    "conv_transpose1d": (lambda a, w: dc.conv_transpose1d(a, w, stride=2, padding=1, output_padding=1),
                         lambda a, w: F.conv_transpose1d(a, w, stride=2, padding=1, output_padding=1),
                         [rng.normal(size=(2, 3, 5)), rng.normal(size=(3, 2, 3))]),
    "max_pool1d, overlapping": (lambda a: dc.max_pool1d(a, 3, 1, 1), lambda a: F.max_pool1d(a, 3, 1, 1),
                                [rng.integers(0, 3, (2, 2, 7))]),
    "conv2d, dilation 2": (lambda a, w: dc.conv2d(a, w, padding=2, dilation=2),
                           lambda a, w: F.conv2d(a, w, padding=2, dilation=2),
                           [rng.normal(size=(1, 2, 7, 6)), rng.normal(size=(3, 2, 3, 3))]),
    "conv2d, stride 2, a row left over": (lambda a, w: dc.conv2d(a, w, stride=2, padding=1),
                                          lambda a, w: F.conv2d(a, w, stride=2, padding=1),
                                          [rng.normal(size=(2, 2, 6, 6)), rng.normal(size=(2, 2, 3, 3))]),
    "cumsum, longer than a block": (lambda a: dc.cumsum(a, 1), lambda a: torch.cumsum(a, 1),
                                    [rng.normal(size=(3, 70))]),
    "cumprod with zeros": (lambda a: dc.cumprod(a, 1), lambda a: torch.cumprod(a, 1),
                           [np.array([[1, 0, 2, 3, 0, 4], [2, 3, 0, 1, 1, 1]], np.float32)]),
    "cumprod, longer than a block": (lambda a: a.cumprod(0), lambda a: torch.cumprod(a, 0),
                                     [rng.uniform(0.8, 1.2, (40, 2))]),
    "einsum, batched product and a diagonal": (
        lambda a, b: dc.einsum("bij,bjk->bik", a, b) + dc.einsum("bii->bi", a)[..., None],
        lambda a, b: torch.einsum("bij,bjk->bik", a, b) + torch.einsum("bii->bi", a)[..., None],
        [rng.normal(size=(2, 3, 3)), rng.normal(size=(2, 3, 4))]),
    "einsum, three operands": (lambda a, b, c: dc.einsum("ij,jk,k->i", a, b, c),
                               lambda a, b, c: torch.einsum("ij,jk,k->i", a, b, c),
                               [rng.normal(size=(2, 3)), rng.normal(size=(3, 4)), rng.normal(size=(4,))]),
    "conv2d, stride 3, dilation 2, groups 2": (
        lambda a, w: dc.conv2d(a, w, stride=3, padding=1, dilation=2, groups=2),
        lambda a, w: F.conv2d(a, w, stride=3, padding=1, dilation=2, groups=2),
        [rng.normal(size=(1, 4, 9, 8)), rng.normal(size=(2, 2, 3, 3))]),
}


@pytest.mark.parametrize("name", sorted(TORCH_CASES))
def test_gradient_matches_torch(env: dc.Environment, name: str) -> None:
    """Ties (the winner takes the gradient; maximum and amax split an exact tie evenly, max pooling
    gives it to the window's first maximum, relu's is 0 at 0 and clamp passes it on its bounds), NaN
    inputs (relu and maximum pass the gradient to a NaN, abs's is 0 there), prod
    over zeros, and composites: float32 against torch's float64 autograd, rtol 1e-4, atol
    1e-4 * max|grad|."""
    fn, torch_fn, inputs = TORCH_CASES[name]
    inputs = [np.asarray(x, np.float32) for x in inputs]
    with torch.no_grad():
        shape = torch_fn(*[torch.tensor(x, dtype=torch.float64) for x in inputs]).shape
    weights = rng.normal(size=tuple(shape)).astype(np.float32)
    ours = _descent_gradients(env, fn, inputs, weights)
    theirs = _torch_gradients(torch_fn, inputs, weights)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * max(np.nanmax(np.abs(b)), 1.0))


def test_training_flag_and_grad_errors(env: dc.Environment) -> None:
    x = env.parameter("flag_x", (3,))
    seen = []
    env.build_graph(lambda s: seen.append(s.training), training=True)
    env.build_graph(lambda s: seen.append(s.training))
    assert seen == [True, False]
    with pytest.raises(dc.ShapeError, match="loss must hold one element"):
        env.build_graph(lambda s: s.grad(s.read(x) * 2.0, [s.read(x)]))
    counts = env.parameter("flag_counts", (3,), "int32")
    message = r"grad: array 1 of wrt is int32, which has no gradient .*\n  at .*test_auto"
    with pytest.raises(dc.DTypeError, match=message):  # it was zeros
        env.build_graph(lambda s: s.grad(dc.sum(s.read(x) * s.read(counts)), [s.read(x), s.read(counts)]))
    env.build_graph(lambda s: s.grad(dc.sum(s.read(x) * s.read(counts)), [dc.astype(s.read(counts), "float32")]))


@pytest.mark.parametrize("undo", ["T.T", "[::-1][::-1]", "reshape back"])
def test_gradient_with_respect_to_a_view_that_a_later_view_undoes(env: dc.Environment, undo: str) -> None:
    """x.T.T composed back to x itself, so the loss no longer depended on x.T and its gradient was 0."""
    first, second, expected = {"T.T": (lambda a: a.T, lambda b: b.T, lambda w: w.T),
                               "[::-1][::-1]": (lambda a: a[::-1], lambda b: b[::-1], lambda w: w[::-1]),
                               "reshape back": (lambda a: a.reshape(6), lambda b: b.reshape(2, 3),
                                                lambda w: w.reshape(6))}[undo]
    value, weights = rng.normal(size=(2, 3)).astype(np.float32), rng.normal(size=(2, 3)).astype(np.float32)
    x = env.parameter(f"undone_{undo}", (2, 3), init=value)
    holder = {}

    def build(s: dc.Scope) -> None:
        middle = first(s.read(x))
        (gradient,) = s.grad(dc.sum(second(middle) * s.constant(weights)), middle)
        holder["out"] = env.parameter(f"undone_out_{undo}", gradient.shape)
        s.write(holder["out"], gradient)

    env.run(env.build_graph(build))
    np.testing.assert_array_equal(env.read(holder["out"]), expected(weights))


@pytest.mark.parametrize("identity", ["reshape", "broadcast_to", "transpose", "[:]", "[...]", "sum over ()"])
def test_gradient_with_respect_to_a_view_that_changes_nothing(env: dc.Environment, identity: str) -> None:
    """y = x.reshape(x.shape) was x itself, so d sum(y * x) / dy counted x's other use: 2x, where torch gives x."""
    view = {"reshape": lambda a: a.reshape(2, 3), "broadcast_to": lambda a: dc.broadcast_to(a, (2, 3)),
            "transpose": lambda a: dc.transpose(a, (0, 1)), "[:]": lambda a: a[:], "[...]": lambda a: a[...],
            "sum over ()": lambda a: dc.sum(a, ())}[identity]
    value = rng.normal(size=(2, 3)).astype(np.float32)
    x = env.parameter(f"unchanged_{identity}", (2, 3), init=value)
    out = env.parameter(f"unchanged_out_{identity}", (2, 3))

    def build(s: dc.Scope) -> None:
        y = view(s.read(x))
        s.write(out, s.grad(dc.sum(y * s.read(x)), y)[0])

    env.run(env.build_graph(build))
    np.testing.assert_array_equal(env.read(out), value)


def test_gradient_with_respect_to_a_constant_is_its_own(env: dc.Environment) -> None:
    """Equal constants were one node (scalars) or one read (numpy arrays): d(sum(x * 2) + c * c)/dc for
    c = constant(2.0) counted x's factor 2 too, 10 where torch gives 4; equal arrays likewise."""
    x = env.parameter("own_constant_x", (3,), init=np.array([1.0, 2.0, 3.0], np.float32))
    scalar, array = env.parameter("own_constant_scalar", ()), env.parameter("own_constant_array", (3,))

    def build(s: dc.Scope) -> None:
        c = s.constant(2.0)
        s.write(scalar, s.grad(dc.sum(s.read(x) * 2.0) + c * c, [c])[0])
        a, b = s.constant(np.ones(3, np.float32)), s.constant(np.ones(3, np.float32))
        s.write(array, s.grad(dc.sum(s.read(x) * b) + dc.sum(a * a), [a])[0])

    env.run(env.build_graph(build))
    assert env.read(scalar) == 4.0
    np.testing.assert_array_equal(env.read(array), [2.0, 2.0, 2.0])


@pytest.mark.parametrize("view", ["[()]", "[None]", "reshape(1, 1)", "broadcast_to(3)", "[...]"])
def test_gradient_through_a_view_of_a_scalar_constant(env: dc.Environment, view: str) -> None:
    """A view of a constant was folded into a new constant, which cut the gradient: 0 where torch gives
    d sum(sigmoid(view(c)))/dc = n * sigmoid'(c), n the view's size (torch.sigmoid's float64 value, 1e-6)."""
    make = {"[()]": lambda c: c[()], "[None]": lambda c: c[None], "reshape(1, 1)": lambda c: c.reshape(1, 1),
            "broadcast_to(3)": lambda c: dc.broadcast_to(c, (3,)), "[...]": lambda c: c[...]}[view]
    out = env.parameter(f"constant_view_{view}", ())

    def build(s: dc.Scope) -> None:
        c = s.constant(0.5)
        s.write(out, s.grad(dc.sum(dc.sigmoid(make(c))), [c])[0])

    env.run(env.build_graph(build))
    c = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    size = 3 if view == "broadcast_to(3)" else 1
    (size * torch.sigmoid(c)).backward()
    np.testing.assert_allclose(env.read(out), c.grad.item(), rtol=1e-6)


def _hessian_vector_products(env: dc.Environment, name: str, fn, torch_fn, inputs: list[np.ndarray],
                             v: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """d/dx_k of sum(v * d fn / dx_0) for each input x_k, by descent (fn) and by torch in float64 (torch_fn)."""
    parameters = [env.parameter(f"{name}_in{k}", x.shape, init=x) for k, x in enumerate(inputs)]
    outputs = [env.parameter(f"{name}_out{k}", x.shape) for k, x in enumerate(inputs)]

    def build(s: dc.Scope) -> None:
        arrays = [s.read(p) for p in parameters]
        (first,) = s.grad(fn(*arrays), [arrays[0]])
        for out, second in zip(outputs, s.grad(dc.sum(first * s.constant(v)), arrays)):
            s.write(out, second)

    env.run(env.build_graph(build))
    tensors = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in inputs]
    (first,) = torch.autograd.grad(torch_fn(*tensors), [tensors[0]], create_graph=True)
    theirs = torch.autograd.grad((first * torch.from_numpy(v.astype(np.float64))).sum(), tensors, allow_unused=True)
    return ([env.read(out) for out in outputs],
            [np.zeros(x.shape) if t is None else t.numpy() for x, t in zip(inputs, theirs)])


_AT_ZERO = np.array([0.0, 2.0, -3.0, 0.5], np.float32)
_KINKS = {  # descent's function, torch's, and the inputs: each has an exact zero where a rule had a kink
    "prod": (dc.prod, torch.prod, [_AT_ZERO]),
    "cumprod": (lambda x: dc.sum(dc.cumprod(x, 0)), lambda x: torch.cumprod(x, 0).sum(), [_AT_ZERO]),
    "softplus": (lambda x: dc.sum(dc.nn.softplus(x)), lambda x: torch.nn.functional.softplus(x).sum(), [_AT_ZERO]),
    "softplus beta 2": (lambda x: dc.sum(dc.nn.softplus(x, 2.0)),
                        lambda x: torch.nn.functional.softplus(x, 2.0).sum(), [_AT_ZERO]),
    "bce with logits": (lambda x, t: dc.binary_cross_entropy_with_logits(x, t, "sum"),
                        lambda x, t: torch.nn.functional.binary_cross_entropy_with_logits(x, t, reduction="sum"),
                        [_AT_ZERO, np.array([1.0, 0.0, 0.3, 1.0], np.float32)]),
    "huber": (lambda x, t: dc.huber(x, t, "sum", 1.0),
              lambda x, t: torch.nn.functional.huber_loss(x, t, reduction="sum", delta=1.0),
              [_AT_ZERO, np.array([0.0, 1.7, 0.0, 0.5], np.float32)]),
}


@pytest.mark.parametrize("name", list(_KINKS))
def test_second_order_at_an_exact_zero_matches_torch(env: dc.Environment, name: str) -> None:
    """Hessian-vector products where an input is exactly 0 (float64 torch, 1e-5): prod's rule gave the
    nonzero elements a constant 0 (their derivative by the zero was lost: [0, 15, 10, 6] for prod of
    [0, 2, 3, 5], torch [31, 15, 10, 6]); softplus, BCE and huber were built on |x|, whose gradient at 0
    is 0, so their second derivative there was 0 (torch 0.25, 0.25 and 1)."""
    ours, theirs_fn, inputs = _KINKS[name]
    v = np.array([1.0, -0.5, 2.0, 0.25], np.float32)
    mine, theirs = _hessian_vector_products(env, "kink_" + name.replace(" ", "_"), ours, theirs_fn, inputs, v)
    for a, b in zip(mine, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_softmax_cross_entropy_gradient_with_respect_to_probability_labels(env: dc.Environment) -> None:
    """d loss / d labels is -log_softmax(logits), as torch's; it was 0 wherever a label was 0 (the
    guard that keeps 0 * -inf from making NaN cut it). A logit of -inf with a 0 label still adds 0."""
    logits = np.array([[2.0, -1.0, 0.5], [0.3, 0.1, -0.2]], np.float32)
    labels = np.array([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]], np.float32)
    weights = np.ones(1, np.float32)
    ours = _descent_gradients(env, lambda z, t: dc.reshape(dc.softmax_cross_entropy(z, t, "sum"), (1,)),
                              [logits, labels], weights)
    theirs = _torch_gradients(lambda z, t: torch.nn.functional.cross_entropy(z, t, reduction="sum").reshape(1),
                              [logits, labels], weights)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    masked = np.array([[0.0, -np.inf, 1.0]], np.float32)
    loss = env.parameter("ce_masked_loss", ())
    env.run(env.build_graph(lambda s: s.write(loss, dc.softmax_cross_entropy(
        s.constant(masked), s.constant(np.array([[0.5, 0.0, 0.5]], np.float32)), "sum"))))
    expected = -0.5 * (np.log(1 / (1 + np.e)) + np.log(np.e / (1 + np.e)))
    np.testing.assert_allclose(env.read(loss), expected, rtol=1e-6)
