"""take/scatter_add/one_hot against numpy, random numbers (determinism and distribution), and the
losses against torch CPU. Gathers and deterministic scatters are exact; atomic scatters and losses
use rtol 1e-5."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

import descent as dc
from tests.conftest import evaluate

rng = np.random.default_rng(6)
F = torch.nn.functional


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_take_matches_numpy(env: dc.Environment, axis: int) -> None:
    x = rng.normal(size=(6, 6, 6)).astype(np.float32)
    indices = rng.integers(-6, 6, (3, 4)).astype(np.int32)
    expected = np.take(x, indices, axis)
    np.testing.assert_array_equal(evaluate(env, lambda a, i: dc.take(a, i, axis), x, indices), expected)
    fused = evaluate(env, lambda a, i: dc.take(a.T * 2.0, i, axis) + 1.0, x, indices)
    np.testing.assert_allclose(fused, np.take(x.T * 2, indices, axis) + 1, rtol=1e-6)


@pytest.mark.parametrize("deterministic", [False, True])
@pytest.mark.parametrize("axis", [0, 1])
def test_scatter_add_with_duplicates(deterministic: bool, axis: int) -> None:
    env = dc.Environment(deterministic=deterministic)
    values = rng.normal(size=(4, 9, 3)).astype(np.float32)
    count = values.shape[axis]
    indices = rng.integers(0, 3, (count,)).astype(np.int32)
    size = 5
    shape = list(values.shape)
    shape[axis] = size
    expected = np.zeros(shape, np.float32)
    for j, k in enumerate(indices):
        target = [slice(None)] * 3
        source = [slice(None)] * 3
        target[axis], source[axis] = k, j
        expected[tuple(target)] += values[tuple(source)]
    result = evaluate(env, lambda v, i: dc.scatter_add(v * 1.0, i, size, axis), values, indices)
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-6)
    kernels = env.build_graph(lambda s: s.write(env.parameter(f"scatter_out{axis}", tuple(shape)),
                                                dc.scatter_add(s.constant(values), s.constant(indices), size, axis)))
    assert kernels.kernel_count == (1 if deterministic else 2)


def test_one_hot(env: dc.Environment) -> None:
    labels = np.array([[0, 3], [2, 1]], np.int32)
    expected = np.eye(4, dtype=np.float32)[labels]
    np.testing.assert_array_equal(evaluate(env, lambda i: dc.one_hot(i, 4), labels), expected)


def test_indices_must_be_integers(env: dc.Environment) -> None:
    x = env.parameter("take_err_x", (4, 3))
    with pytest.raises(dc.DTypeError, match="indices must be int32"):
        env.build_graph(lambda s: dc.take(s.read(x), s.read(x), 0))


def test_random_numbers_are_seeded_and_distributed(env: dc.Environment) -> None:
    out = env.parameter("random_out", (2, 50_000))

    def build(s: dc.Scope) -> None:
        s.write(out, dc.stack([s.random_uniform((50_000,), -1.0, 3.0), s.random_normal((50_000,), 2.0, 0.5)]))

    graph = env.build_graph(build)
    env.run(graph, seed=7)
    first = env.read(out)
    env.run(graph, seed=7)
    np.testing.assert_array_equal(env.read(out), first)
    env.run(graph, seed=8)
    assert not np.array_equal(env.read(out), first)
    uniform, normal = first
    assert uniform.min() >= -1.0 and uniform.max() < 3.0
    assert abs(uniform.mean() - 1.0) < 0.03 and abs(uniform.std() - 4 / np.sqrt(12)) < 0.03
    assert abs(normal.mean() - 2.0) < 0.01 and abs(normal.std() - 0.5) < 0.01
    assert abs(np.corrcoef(uniform[:-1], uniform[1:])[0, 1]) < 0.02
    expected_bits = _uniform_reference(7, np.arange(50_000), stream=1)
    np.testing.assert_array_equal(uniform, (expected_bits * np.float32(4.0) + np.float32(-1.0)).astype(np.float32))


def _hash(value: np.ndarray) -> np.ndarray:
    value = value.astype(np.uint64)
    state = (value * 747796405 + 2891336453) % 2**32
    word = (((state >> ((state >> 28) + 4)) ^ state) * 277803737) % 2**32
    return ((word >> 22) ^ word) % 2**32


def _uniform_reference(seed: int, index: np.ndarray, stream: int) -> np.ndarray:
    """The device's uniform generator, reimplemented in numpy: same seed, same numbers, any device."""
    stream_seed = (seed + stream * 0x9E3779B9) % 2**32
    bits = _hash(np.uint64(stream_seed) ^ _hash(index.astype(np.uint64)))
    return ((bits >> 8).astype(np.float32) * np.float32(1.0 / 16777216.0)).astype(np.float32)


def test_softmax_cross_entropy_matches_torch(env: dc.Environment) -> None:
    logits = (rng.normal(size=(32, 10)) * 4).astype(np.float32)
    labels = rng.integers(0, 10, 32).astype(np.int32)
    expected = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels).long()).item()
    result = evaluate(env, lambda x, y: dc.softmax_cross_entropy(x, y), logits, labels)
    np.testing.assert_allclose(result, expected, rtol=1e-5)
    onehot = np.eye(10, dtype=np.float32)[labels]
    np.testing.assert_allclose(evaluate(env, lambda x, y: dc.softmax_cross_entropy(x, y), logits, onehot), expected,
                               rtol=1e-5)
    per_example = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels).long(), reduction="none")
    np.testing.assert_allclose(evaluate(env, lambda x, y: dc.softmax_cross_entropy(x, y, "none"), logits, labels),
                               per_example.numpy(), rtol=1e-5, atol=1e-6)


def test_regression_losses_match_torch(env: dc.Environment) -> None:
    x = (rng.normal(size=(8, 5)) * 10).astype(np.float32)
    t = rng.uniform(size=(8, 5)).astype(np.float32)
    expected = F.mse_loss(torch.from_numpy(x), torch.from_numpy(t)).item()
    np.testing.assert_allclose(evaluate(env, dc.mse, x, t), expected, rtol=1e-5)
    expected = F.binary_cross_entropy_with_logits(torch.from_numpy(x), torch.from_numpy(t)).item()
    np.testing.assert_allclose(evaluate(env, dc.binary_cross_entropy_with_logits, x, t), expected, rtol=1e-5)


def test_label_smoothing_and_pos_weight_match_torch(env: dc.Environment) -> None:
    """PyTorch's cross_entropy(label_smoothing=) and binary_cross_entropy_with_logits(pos_weight=),
    values and input gradients, rtol 1e-5."""
    logits = (rng.normal(size=(16, 5)) * 4).astype(np.float32)
    labels = rng.integers(0, 5, 16).astype(np.int32)
    probabilities = rng.dirichlet(np.ones(5), 16).astype(np.float32)
    targets = rng.uniform(size=(16, 5)).astype(np.float32)
    weights = rng.uniform(0.5, 4.0, 5).astype(np.float32)
    cases = [
        (lambda x, y: dc.softmax_cross_entropy(x, y, label_smoothing=0.1),
         lambda x, y: F.cross_entropy(x, y.long(), label_smoothing=0.1), labels),
        (lambda x, y: dc.softmax_cross_entropy(x, y, "sum", label_smoothing=0.3),
         lambda x, y: F.cross_entropy(x, y, reduction="sum", label_smoothing=0.3), probabilities),
        (lambda x, y: dc.binary_cross_entropy_with_logits(x, y, pos_weight=y.scope.constant(weights)),
         lambda x, y: F.binary_cross_entropy_with_logits(x, y, pos_weight=torch.from_numpy(weights)), targets),
        (functools.partial(dc.binary_cross_entropy_with_logits, pos_weight=weights),  # numpy, as a Trainer's loss
         lambda x, y: F.binary_cross_entropy_with_logits(x, y, pos_weight=torch.from_numpy(weights)), targets),
        (lambda x, y: dc.binary_cross_entropy_with_logits(x, y, "none", pos_weight=3.0),
         lambda x, y: F.binary_cross_entropy_with_logits(x, y, reduction="none", pos_weight=torch.tensor(3.0)),
         targets),
        (functools.partial(dc.binary_cross_entropy_with_logits, pos_weight=weights[:1]),  # (1,): it was refused
         lambda x, y: F.binary_cross_entropy_with_logits(x, y, pos_weight=torch.from_numpy(weights[:1])), targets),
        (functools.partial(dc.binary_cross_entropy_with_logits, reduction="none", pos_weight=targets[:, :1] + 1),
         lambda x, y: F.binary_cross_entropy_with_logits(x, y, reduction="none",
                                                        pos_weight=torch.from_numpy(targets[:, :1] + 1)), targets),
    ]
    for ours, theirs, y in cases:
        tx = torch.tensor(logits, requires_grad=True)
        expected = theirs(tx, torch.from_numpy(y))
        expected.sum().backward()
        value = evaluate(env, ours, logits, y)
        np.testing.assert_allclose(value, expected.detach().numpy(), rtol=1e-5, atol=1e-6)
        gradient = evaluate(env, lambda x, t, f=ours: x.scope.grad(f(x, t).sum(), [x])[0], logits, y)
        np.testing.assert_allclose(gradient, tx.grad.numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\], got 1.5"):
        evaluate(env, lambda x, y: dc.softmax_cross_entropy(x, y, label_smoothing=1.5), logits, labels)
    with pytest.raises(dc.ShapeError, match=r"pos_weight \(4,\) must be a number, hold one weight per class, .*"
                                            r"or broadcast to the logits' shape \(16, 5\) as PyTorch's"):
        evaluate(env, lambda x, y: dc.binary_cross_entropy_with_logits(x, y, pos_weight=y.scope.constant(weights[:4])),
                 logits, targets)


def test_l1_and_huber_match_torch(env: dc.Environment) -> None:
    x, t = rng.normal(size=(2, 8, 5)).astype(np.float32) * 2
    tx, tt = torch.from_numpy(x), torch.from_numpy(t)
    np.testing.assert_allclose(evaluate(env, dc.l1, x, t), F.l1_loss(tx, tt).item(), rtol=1e-5)
    for delta in (0.3, 1.0, 4.0):
        np.testing.assert_allclose(evaluate(env, lambda a, b, d=delta: dc.huber(a, b, delta=d), x, t),
                                   F.huber_loss(tx, tt, delta=delta).item(), rtol=1e-5)
    np.testing.assert_allclose(evaluate(env, lambda a, b: dc.huber(a, b, "none", 2.0) / 2.0, x, t),
                               F.smooth_l1_loss(tx, tt, beta=2.0, reduction="none").numpy(), rtol=1e-5)
    with pytest.raises(ValueError, match="huber: delta must be a positive number, got 0"):
        evaluate(env, lambda a, b: dc.huber(a, b, delta=0), x, t)
    np.testing.assert_allclose(evaluate(env, lambda a, b: dc.huber(a, b, "sum", 0.5), x, t),
                               F.huber_loss(tx, tt, "sum", 0.5).item(), rtol=1e-5)  # PyTorch's argument order


def test_loss_arguments_in_pytorch_s_places_are_named(env: dc.Environment) -> None:
    """dc.huber(x, t, 'sum') said "'>' not supported between 'str' and 'int'", and class weights in
    cross_entropy's third place numpy's 'truth value of an array is ambiguous'; neither named the
    argument or the user's line."""
    x, t = rng.normal(size=(4, 3)).astype(np.float32), np.array([0, 2, 1, 0], np.int32)
    with pytest.raises(TypeError, match=r"huber: delta must be a number, got 'sum'\n  at .*test_indexing"):
        evaluate(env, lambda a: dc.huber(a, a, delta="sum"), x)
    with pytest.raises(ValueError, match=r"reduction must be 'mean', 'sum' or 'none', not a value of type "
                                         r"ndarray\n  at "):
        evaluate(env, lambda a, b: dc.softmax_cross_entropy(a, b, np.ones(3, np.float32)), x, t)


@pytest.mark.parametrize("loss", [dc.mse, dc.l1, dc.huber, dc.binary_cross_entropy_with_logits],
                         ids=lambda f: f.__name__)
def test_regression_target_of_another_shape_is_refused(env: dc.Environment, loss) -> None:
    """A (N, 1) output against (N,) targets would broadcast to N x N comparisons."""
    prediction, target = np.zeros((6, 1), np.float32), np.zeros(6, np.float32)
    message = r"(?s)target \(6,\) must have the prediction's shape \(6, 1\).*conftest.py:"
    with pytest.raises(dc.ShapeError, match=message):
        evaluate(env, loss, prediction, target)
    assert evaluate(env, lambda p: loss(p, 0.5), prediction).shape == ()


def test_cross_entropy_of_a_matmul_is_three_kernels(env: dc.Environment) -> None:
    x = env.parameter("ce_x", (100, 784))
    w = env.parameter("ce_w", (784, 10))
    y = env.parameter("ce_y", (100,), dc.int32)
    loss = env.parameter("ce_loss", ())
    graph = env.build_graph(lambda s: s.write(loss, dc.softmax_cross_entropy(s.read(x) @ s.read(w), s.read(y))))
    assert graph.kernel_count <= 3


def test_cross_entropy_with_an_impossible_class_and_integer_regression_losses(env: dc.Environment) -> None:
    """A logit of -inf for a class the label does not name adds nothing (0 * -inf made the loss NaN);
    mse, l1 and huber of int32 inputs are taken in float32 (they wrapped: 100000 ** 2 > 2 ** 31)."""
    logits = np.array([[0.0, -np.inf, 1.0], [2.0, 0.5, -np.inf]], np.float32)
    labels = np.array([2, 0], np.int32)
    expected = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels).long()).item()
    np.testing.assert_allclose(evaluate(env, dc.softmax_cross_entropy, logits, labels), expected, rtol=1e-6)
    big, zero = np.array([100000, 3], np.int32), np.zeros(2, np.int32)
    np.testing.assert_allclose(evaluate(env, dc.mse, big, zero), (big.astype(np.float64) ** 2).mean(), rtol=1e-6)
    np.testing.assert_allclose(evaluate(env, lambda a, b: dc.l1(a, b, "sum"), big, zero), 100003.0, rtol=1e-6)
    np.testing.assert_allclose(evaluate(env, dc.huber, big, zero), (100000 - 0.5 + 2.5) / 2, rtol=1e-6)


def test_uniform_numbers_stay_below_high(env: dc.Environment) -> None:
    """u * (high - low) + low rounds up to high for u near 1 in float32 (14 of 4M did for [100, 101))."""
    out = env.parameter("uniform_high", (4_000_000,))
    env.run(env.build_graph(lambda s: s.write(out, s.random_uniform((4_000_000,), 100.0, 101.0))), seed=0)
    values = env.read(out)
    assert values.min() >= 100.0 and values.max() < 101.0


def test_losses_at_their_edges(env: dc.Environment) -> None:
    """huber's gradient where |prediction - target| is inf was NaN (its square's branch sent back
    0 * inf); a mean over no examples was 0 where PyTorch's and dc.mean are NaN; an integer label
    beyond the classes in a parameter that is not a run input made a row of zeros, dropping its
    example from a mean that still counted it, where such indices are promised clamped."""
    prediction = np.array([np.inf, -np.inf, 3.0, 0.5], np.float32)
    target = np.array([0.0, 0.0, np.inf, 0.0], np.float32)
    reference = torch.from_numpy(prediction).requires_grad_()
    F.huber_loss(reference, torch.from_numpy(target), delta=2.0, reduction="sum").backward()
    gradient = evaluate(env, lambda p, t: p.scope.grad(dc.huber(p, t, "sum", 2.0), [p])[0], prediction, target)
    np.testing.assert_array_equal(gradient, reference.grad.numpy())
    empty, labels = np.zeros((0, 3), np.float32), np.zeros(0, np.int32)
    assert np.isnan(evaluate(env, dc.softmax_cross_entropy, empty, labels))
    for loss in (dc.mse, dc.l1, dc.huber, dc.binary_cross_entropy_with_logits):
        assert np.isnan(evaluate(env, loss, empty, empty)), loss.__name__
    logits = rng.normal(size=(5, 4)).astype(np.float32)
    for beyond, clamped in [(np.array([0, 3, 4, 1, -2], np.int32), [0, 3, 3, 1, 0]),
                            (np.array([0, 3, 2**32 - 1, 1, 2**31], np.uint32), [0, 3, 3, 1, 3])]:
        reference = F.cross_entropy(torch.from_numpy(logits), torch.tensor(clamped)).item()
        np.testing.assert_allclose(evaluate(env, dc.softmax_cross_entropy, logits, beyond), reference, rtol=1e-6)
    with pytest.raises(dc.DTypeError, match=r"softmax_cross_entropy: class labels must be int32 or uint32, not bool"):
        evaluate(env, dc.softmax_cross_entropy, logits, np.array([True, False, True, True, False]))


def test_softmax_of_integers_and_cross_entropy_errors(env: dc.Environment) -> None:
    """softmax and log_softmax of integer Arrays subtracted the max in the integer type, which wraps:
    uint32 [0, 1, 2] gave [nan, nan, 0]. Cross-entropy's numpy labels, 0-d logits and logits of no
    classes failed inside (AttributeError, IndexError, ZeroDivisionError) without the user's line."""
    for values in (np.array([0, 1, 2], np.uint32), np.array([-2**31, 0, 2**31 - 1], np.int32),
                   np.array([-5, 2**31 - 1], np.int32)):
        reference = torch.from_numpy(values.astype(np.float64))
        np.testing.assert_allclose(evaluate(env, dc.softmax, values), torch.softmax(reference, 0).numpy(),
                                   rtol=1e-6, atol=1e-30)
        np.testing.assert_allclose(evaluate(env, dc.log_softmax, values), torch.log_softmax(reference, 0).numpy(),
                                   rtol=1e-6)

    def refused(error: type, message: str, logits: np.ndarray, labels=None) -> None:
        with pytest.raises(error, match=rf"softmax_cross_entropy: {message}(.|\n)*test_indexing_random_losses.py"):
            evaluate(env, lambda x: dc.softmax_cross_entropy(x, dc.astype(x, "int32") if labels is None else labels),
                     logits)

    refused(dc.DTypeError, "cannot use ndarray as an Array operand", np.zeros((3, 4), np.float32),
            np.zeros(3, np.int32))
    refused(dc.ShapeError, r"logits \(\) need a last axis of classes", np.float32(1.0))
    refused(dc.ShapeError, r"logits \(3, 0\) need a last axis of classes", np.zeros((3, 0), np.float32))


def test_index_arguments_known_when_the_graph_is_built(env: dc.Environment) -> None:
    """take(x, 5) on an axis of 3 returned x[2] (a number known at build time, checked nowhere);
    one_hot registered no range, so out-of-range run inputs gave rows of zeros unchecked, and took
    classes=3.5 as 4 columns; scatter_add took size=3.7 as 3; a numpy operand of @ was not named."""
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    for index in (5, -4):
        with pytest.raises(IndexError, match=rf"take: index {index} is out of range for an axis of size 3"):
            evaluate(env, lambda a, i=index: dc.take(a, i, 0), x)
    np.testing.assert_array_equal(evaluate(env, lambda a: dc.take(a, -3, 0), x), x[0])
    np.testing.assert_array_equal(evaluate(env, lambda a: dc.take(a, a.scope.constant(-3.5, "int32"), 0), x), x[0])
    labels = env.parameter("one_hot_labels", (3,), "int32")
    out = env.parameter("one_hot_out", (3, 3))
    graph = env.build_graph(lambda s: s.write(out, dc.one_hot(s.read(labels), 3)), inputs=[labels])
    with pytest.raises(IndexError, match=r"index 5 in 'one_hot_labels' \(element 1\) is out of range for one_hot's 3"):
        env.run(graph, {labels: np.array([0, 5, 1], np.int32)})
    env.run(graph, {labels: np.array([0, 2, 1], np.int32)})
    np.testing.assert_array_equal(env.read(out), np.eye(3)[[0, 2, 1]])
    none = evaluate(env, lambda a: dc.one_hot(dc.astype(a[0], "int32"), 0) + 1.0, x)  # no classes, no check
    assert none.shape == (4, 0)
    with pytest.raises(TypeError, match=r"one_hot: classes must be an int, got 3.5"):
        evaluate(env, lambda a: dc.one_hot(dc.astype(a, "int32"), 3.5), x)
    with pytest.raises(TypeError, match=r"scatter_add: size must be an int, got 3.7"):
        evaluate(env, lambda a: dc.scatter_add(a, a.scope.constant(np.array([0, 1, 2], np.int32)), 3.7), x)
    with pytest.raises(dc.DTypeError, match=r"matmul: cannot use ndarray as an Array operand(.|\n)*test_indexing_rand"):
        evaluate(env, lambda a: a @ np.ones((4, 2), np.float32), x)
