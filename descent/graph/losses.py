"""Losses in their fused, numerically stable forms. Each returns the mean over examples by default."""

from __future__ import annotations

import numpy as np

from descent.arguments import positive
from descent.errors import DTypeError, ShapeError, at_user_line
from descent.graph import ops, reductions
from descent.graph.array import Array, array_argument, takes_array
from descent.graph.dtype import float32
from descent.graph.indexing import one_hot
from descent.graph.view import broadcast_shapes


def _reduction(reduction: object) -> str:
    """The reduction, refused by name unless 'mean', 'sum' or 'none' (an array there is PyTorch's class
    weights, its cross_entropy's third argument)."""
    if not isinstance(reduction, str) or reduction not in ("none", "sum", "mean"):
        shown = repr(reduction) if isinstance(reduction, str) else f"a value of type {type(reduction).__name__}"
        raise ValueError(at_user_line(f"reduction must be 'mean', 'sum' or 'none', not {shown}"))
    return reduction


def _reduce(loss: Array, reduction: str, examples: int) -> Array:
    if _reduction(reduction) == "none":
        return loss
    total = reductions.sum(loss)
    if reduction == "sum":
        return total
    # the mean is NaN over no examples, as PyTorch's and dc.mean
    return total * (1.0 / examples) if examples else loss.scope.constant(float("nan"))


def _difference(prediction: Array, target: Array | float) -> Array:
    """prediction - target in float32: integer inputs would wrap when squared or summed."""
    return ops.astype(prediction, float32) - (ops.astype(target, float32) if isinstance(target, Array) else target)


def _same_shape(loss: str, prediction: Array, target: Array | float) -> None:
    """Refuse a target that would broadcast against the prediction: (N,) against (N, 1) would
    silently compare every prediction with every target (PyTorch warns; this is an error)."""
    shape = getattr(target, "shape", ())
    if shape not in ((), prediction.shape):
        raise ShapeError(at_user_line(
            f"{loss}: target {shape} must have the prediction's shape {prediction.shape} (broadcasting them "
            f"would compare every prediction with every target); reshape one of them"))


@takes_array
def softmax_cross_entropy(logits: Array, labels: Array, reduction: str = "mean", label_smoothing: float = 0.0) -> Array:
    """Cross-entropy of softmax(logits) over the last axis against integer class labels (shape
    logits.shape[:-1]) or per-class target probabilities such as one-hot rows (shape logits.shape).
    `label_smoothing` e mixes the targets with the uniform distribution: (1 - e) t + e / classes (as
    PyTorch's cross_entropy)."""
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(at_user_line(
            f"softmax_cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}"))
    labels = array_argument("softmax_cross_entropy", labels)
    if logits.ndim == 0 or logits.shape[-1] == 0:
        raise ShapeError(at_user_line(f"softmax_cross_entropy: logits {logits.shape} need a last axis of classes, "
                                      "one at least"))
    logits = ops.astype(logits, float32)
    if labels.dtype.is_float:
        if labels.shape != logits.shape:
            raise ShapeError(at_user_line(
                f"softmax_cross_entropy: probability labels {labels.shape} must match logits {logits.shape}"))
        targets = labels
    else:
        if labels.dtype.name == "bool":
            raise DTypeError(at_user_line("softmax_cross_entropy: class labels must be int32 or uint32, not bool"))
        if labels.shape != logits.shape[:-1]:
            raise ShapeError(at_user_line(
                f"softmax_cross_entropy: integer labels {labels.shape} must have shape {logits.shape[:-1]}"))
        classes = logits.shape[-1]
        labels.scope.require_range(labels, 0, classes,
                                   f"softmax_cross_entropy's {classes} classes (0 to {classes - 1})")
        # clamped into range on the device, as other indices held in parameters (run inputs are checked)
        targets = one_hot(ops.clip(labels, 0, classes - 1), classes)
    if label_smoothing:
        targets = targets * (1.0 - label_smoothing) + label_smoothing / logits.shape[-1]
    log_probabilities = logits - reductions.logsumexp(logits, -1, keepdims=True)
    # a class with no target weight adds nothing, also where its logit is -inf (0 * -inf would be NaN);
    # elsewhere a target's gradient is -log_probability, also where the target is 0
    unused = ops.logical_and(ops.eq(targets, 0.0), ops.isinf(log_probabilities))
    per_class = -targets * ops.where(unused, 0.0, log_probabilities)
    examples = logits.size // logits.shape[-1]
    if _reduction(reduction) == "none":
        return reductions.sum(per_class, -1)
    return _reduce(per_class, reduction, examples)


@takes_array
def mse(prediction: Array, target: Array, reduction: str = "mean") -> Array:
    """Mean squared error (every element counts as an example); target has the prediction's shape."""
    _same_shape("mse", prediction, target)
    difference = _difference(prediction, target)
    return _reduce(difference * difference, reduction, difference.size)


@takes_array
def l1(prediction: Array, target: Array, reduction: str = "mean") -> Array:
    """Mean absolute error (as PyTorch's l1_loss); target has the prediction's shape."""
    _same_shape("l1", prediction, target)
    difference = ops.abs(_difference(prediction, target))
    return _reduce(difference, reduction, difference.size)


@takes_array
def huber(prediction: Array, target: Array, reduction: str = "mean", delta: float = 1.0) -> Array:
    """Squared error below `delta`, linear above it (as PyTorch's huber_loss, in its argument order; its
    smooth_l1_loss with beta b is this with delta b, divided by b)."""
    delta = positive("huber", "delta", delta)
    _same_shape("huber", prediction, target)
    signed = _difference(prediction, target)
    difference = ops.abs(signed)
    small = ops.lt(difference, delta)
    # the square's branch sees no inf (its 0 * inf gradient would be NaN), and squares the signed
    # difference: |d|'s gradient at 0 is 0, which made the second derivative there 0, not 1
    inside = ops.where(small, signed, 0.0)
    loss = ops.where(small, 0.5 * inside * inside, delta * (difference - 0.5 * delta))
    return _reduce(loss, reduction, loss.size)


@takes_array
def binary_cross_entropy_with_logits(logits: Array, targets: Array, reduction: str = "mean",
                                     pos_weight: Array | float | np.ndarray | None = None) -> Array:
    """-(w t log sigmoid(x) + (1 - t) log(1 - sigmoid(x))) = w t softplus(-x) + (1 - t) softplus(x), each
    softplus as `ops.log1p_exp` so that neither cancels. `pos_weight` w weighs the positive
    targets, as PyTorch's: 1 by default, a number, one per class of the last axis, or any shape that
    broadcasts to the logits'; a numpy array becomes a graph constant, so that `functools.partial` can
    hand it to a Trainer."""
    _same_shape("binary_cross_entropy_with_logits", logits, targets)
    logits = ops.astype(logits, float32)
    positive = targets
    if pos_weight is not None:
        if isinstance(pos_weight, np.ndarray | list | tuple):
            pos_weight = logits.scope.constant(np.asarray(pos_weight, np.float32))
        shape = getattr(pos_weight, "shape", ())
        if broadcast_shapes(shape, logits.shape) != logits.shape:
            raise ShapeError(at_user_line(f"binary_cross_entropy_with_logits: pos_weight {shape} must be a number, "
                                          f"hold one weight per class, shape {logits.shape[-1:]}, or broadcast "
                                          f"to the logits' shape {logits.shape} as PyTorch's"))
        positive = pos_weight * targets
    loss = (1.0 - targets) * ops.log1p_exp(logits) + positive * ops.log1p_exp(-logits)
    return _reduce(loss, reduction, loss.size)
