"""Training, evaluation and prediction loops around one replayed training graph per batch size."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from descent import arguments
from descent.arguments import is_integer, natural
from descent.autodiff.grad import flows
from descent.errors import GraphError, ShapeError, at_user_line, user_location
from descent.graph import losses, ops, reductions
from descent.graph.array import Array
from descent.graph.dtype import data_dtype
from descent.graph.parameter import Parameter
from descent.nn import checkpoint
from descent.nn.module import Module
from descent.optim.optimizer import Optimizer

if TYPE_CHECKING:
    from descent.runtime.environment import Environment

Loss = Callable[[Array, Array], Array]


class Trainer:
    """Fits a built module with a loss and an optimiser. Each step uploads one batch and replays
    the training graph (forward, backward and update in one recorded command buffer); the running
    loss and accuracy sums stay on the device, read back at each epoch's end (and every 20 steps for
    the progress bar)."""

    def __init__(self, env: Environment, model: Module, loss: Loss = losses.softmax_cross_entropy,
                 optimizer: Optimizer | None = None, accuracy: bool | None = None) -> None:
        _check_arguments(env, model, loss, optimizer)
        self.env, self.model, self.loss, self.optimizer = env, model, loss, optimizer
        self._classifies = getattr(loss, "func", loss) is losses.softmax_cross_entropy  # also through partial
        self.accuracy = self._classifies if accuracy is None else accuracy
        if optimizer is not None:
            optimizer.build(env, model.parameters(trainable_only=True))
        self.name = env.unique_name("trainer")
        # (loss sum, correct count) per loop, so an evaluate inside fit (from on_step) leaves fit's alone
        self._sums = {kind: (env.parameter(f"{self.name}.{kind}_loss_sum", ()),
                             env.parameter(f"{self.name}.{kind}_correct", ()))
                      for kind in ("train", "evaluate")}
        self._epochs_trained = 0
        self._steps_trained = 0
        self._graphs: dict[tuple, tuple] = {}
        self._output_shapes: dict[tuple, tuple[int, ...]] = {}
        self._inputs: dict[tuple, tuple[Parameter, Parameter]] = {}

    # ---- graphs -------------------------------------------------------------------------

    def _input_parameters(self, x_shape: tuple, x_dtype: str, y_shape: tuple, y_dtype: str):
        key = (x_shape, x_dtype, y_shape, y_dtype)
        if key not in self._inputs:
            index = len(self._inputs)
            self._inputs[key] = (self.env.parameter(f"{self.name}.x{index}", x_shape, x_dtype),
                                 self.env.parameter(f"{self.name}.y{index}", y_shape, y_dtype))
        return self._inputs[key]

    def _metrics(self, s, kind: str, output: Array, labels: Array, loss: Array) -> None:
        """Add the batch's loss times its examples, and its correct predictions per example (the
        mean over an example's tokens for (N, T, C) outputs), to the loop's sums."""
        loss_sum, correct = self._sums[kind]
        s.write(loss_sum, s.read(loss_sum) + ops.stop_gradient(loss) * float(output.shape[0]))
        if self.accuracy:
            if output.shape[-1] == 1:  # one logit: positive means class 1
                hits = ops.eq(output > 0.0, ops.reshape(labels, output.shape) > 0.5)
            else:
                if labels.dtype.is_float and labels.shape == output.shape:
                    labels = reductions.argmax(labels, -1)
                hits = ops.eq(reductions.argmax(output, -1), ops.astype(labels, "int32"))  # uint8 labels too
            per_example = float(hits.size // output.shape[0])
            s.write(correct, s.read(correct) + reductions.sum(ops.astype(hits, "float32")) / per_example)

    @staticmethod
    def _key(kind: str, x: np.ndarray, y: np.ndarray | None) -> tuple:
        y_shape, y_dtype = ((x.shape[0],), "int32") if y is None else (y.shape, _dtype_name(y))
        return (kind, x.shape, _dtype_name(x), y_shape, y_dtype)

    def _graph(self, kind: str, x: np.ndarray, y: np.ndarray | None):
        key = self._key(kind, x, y)
        if key in self._graphs:
            return self._graphs[key]
        _, x_shape, x_dtype, y_shape, y_dtype = key
        x_parameter, y_parameter = self._input_parameters(x_shape, x_dtype, y_shape, y_dtype)
        output_parameter = None

        def build(s) -> None:
            nonlocal output_parameter
            try:
                output = self.model(s, s.read(x_parameter))
            except ShapeError as error:
                if len(x_shape) != 1:
                    raise
                raise ShapeError(f"{error}\n{_CALLS[kind]}: x is 1-D, a single number per example (a batch of "
                                 f"{x_shape[0]} has shape {x_shape}); for one feature each, pass x[:, None]") from error
            if output.ndim == 0 or output.shape[0] != x_shape[0]:
                raise ShapeError(at_user_line(
                    f"{_CALLS[kind]}: the model's output has shape {output.shape} for a batch of {x_shape[0]} examples "
                    f"of x (shape {x_shape}): x's first axis must count the examples (for one example, pass x[None])"))
            self._output_shapes[key] = output.shape
            if kind == "predict":
                output_parameter = self.env.parameter(f"{self.name}.prediction{len(self._graphs)}", output.shape,
                                                      output.dtype)
                s.write(output_parameter, output)
                return
            labels = s.read(y_parameter)
            loss = self.loss(output, labels)
            if not isinstance(loss, Array) or loss.size != 1:
                got = f"shape {loss.shape}" if isinstance(loss, Array) else type(loss).__name__
                raise ShapeError(at_user_line(
                    f"{_CALLS[kind]}: the loss must give one number for a batch (a mean over its examples), got {got}; "
                    "a loss with reduction='none' needs reducing"))
            self._metrics(s, kind, output, labels, loss)
            if kind == "train":
                # as in torch, a parameter no gradient reaches (unused, or used through stop_gradient) is left
                # alone: no weight decay
                trainable = self.model.parameters(trainable_only=True)
                reached = flows(loss, [s.read(p) for p in trainable])
                parameters = [p for p, flowing in zip(trainable, reached) if flowing]
                values = [s.read(p) for p in parameters]
                self.optimizer.update(s, parameters, values, s.grad(loss, values))

        inputs = [x_parameter] if kind == "predict" else [x_parameter, y_parameter]
        graph = self.env.build_graph(build, training=kind == "train", inputs=inputs)
        self._graphs[key] = (graph, x_parameter, y_parameter, output_parameter)
        return self._graphs[key]

    def _check_examples(self, where: str, kind: str, x: np.ndarray, y: np.ndarray | None, batch_size: int) -> None:
        """Refuse, before any step, integer class labels outside [0, classes) for softmax cross-entropy
        (the device would clamp such a label to a class it does not name) and integer inputs outside
        the range an op takes them in (an Embedding's tokens), naming the element of x or y; a run's
        own check could name only the element of a batch. The class count and the ranges come from
        the graph the first batch uses."""
        checks_labels = y is not None and self._classifies and y.dtype.kind in "iu" and y.size > 0
        if not checks_labels and x.size == 0:
            return
        first = x[: min(len(x), batch_size)], None if y is None else y[: min(len(y), batch_size)]
        graph, x_parameter, _, _ = self._graph(kind, *first)
        if checks_labels:
            classes = self._output_shapes[self._key(kind, *first)][-1]
            _refuse_outside(where, "label y", y, y, 0, classes, ValueError,
                            f"is outside [0, {classes}) for the model's {classes} output classes", "labels")
        for source in graph.index_parameters if x.size else ():  # a float x may be cast to indices
            if source.parameter is x_parameter and not source.viewed:  # read through views: the run checks them
                required = source.required
                used = "" if required.location == user_location() else f"; used at {required.location}"
                _refuse_outside(where, "x", x, source.indices(x), required.low, required.high, IndexError,
                                f"is out of range for {required.what}{used}", "elements")

    # ---- loops --------------------------------------------------------------------------

    def _reset_metrics(self, kind: str) -> None:
        for parameter in self._sums[kind]:
            self.env.write(parameter, np.float32(0))

    def _read_metrics(self, kind: str, examples: int) -> dict[str, float]:
        loss_sum, correct = self._sums[kind]
        result = {"loss": float(self.env.read(loss_sum)) / max(examples, 1)}
        if self.accuracy:
            result["accuracy"] = float(self.env.read(correct)) / max(examples, 1)
        return result

    def fit(self, x: np.ndarray | Iterable, y: np.ndarray | None = None, epochs: int = 1, batch_size: int = 100,
            shuffle: bool = True, seed: int = 0, drop_last: bool = False,
            validation_data: tuple[np.ndarray, np.ndarray] | None = None, schedule: Callable | None = None,
            on_step: Callable[[int, Trainer], Any] | None = None,
            on_epoch: Callable[[int, dict], Any] | None = None, progress: bool = True,
            initial_epoch: int = 0) -> list[dict]:
        """Train epochs initial_epoch + 1 .. `epochs` (as Keras) over numpy arrays (x, y) in batches, or
        over `x` = an iterable of (x, y) batches (a list, or a function returning a fresh iterator per
        epoch). A last partial batch is trained on unless `drop_last`. y holds integer class labels
        or, for classification, float targets of the output's shape (one-hot rows). Arrays, labels and
        validation_data are checked before the first step, so a mistake costs no training.

        Each epoch gets its shuffle from (seed, epochs this Trainer has trained) and each step its
        dropout masks from (seed, steps trained), so fit called once per epoch does not repeat an
        order, and a run resumed from a checkpoint (which holds both counts) with
        `initial_epoch=trainer.epochs_trained` continues the shuffles, masks and `schedule` of the run
        that wrote it. Returns one dict of metrics per epoch; its loss, as evaluate's, averages the
        batches' losses weighted by their examples (as Keras), which is the mean over examples for a
        loss that takes a batch's mean (a reduction="sum" loss reports a batch size times larger)."""
        if self.optimizer is None:
            raise ValueError(at_user_line("Trainer.fit needs an optimizer: pass optimizer=... to Trainer(...)"))
        if not is_integer(epochs) or epochs < 1:
            raise ValueError(at_user_line(
                f"fit: epochs is the epoch to stop after and must be an integer of at least 1, got {epochs!r}"))
        if not natural("fit", "initial_epoch", initial_epoch) < epochs:
            raise ValueError(at_user_line(
                f"fit: initial_epoch {initial_epoch} must be at least 0 and below epochs {epochs}, the epoch "
                "to stop after (as Keras: fit(epochs=10, initial_epoch=4) trains epochs 5 to 10)"))
        batch_size = natural("fit", "batch_size", batch_size, least=1)
        seed = arguments.seed("fit", seed)
        if isinstance(schedule, type) or not (schedule is None or callable(schedule)):
            shown = f"{schedule.__name__}(...), not the class" if isinstance(schedule, type) else repr(schedule)
            raise TypeError(at_user_line(f"fit: schedule must be a schedule such as optim.CosineLR(), "
                                         f"a function (initial_lr, epoch, epochs) -> lr; got {shown}"))
        if y is None and isinstance(x, np.ndarray):
            raise ValueError(at_user_line(
                "fit: y is needed when x is an array; call fit(x, y), or pass x as an iterable of (x, y) batches"))
        if y is not None:
            x, y = _examples("fit", x, y)
            if drop_last and len(x) < batch_size:
                raise ValueError(at_user_line(
                    f"fit: drop_last with batch_size {batch_size} leaves no batch of the {len(x)} examples"))
            self._check_examples("fit", "train", x, y, batch_size)
            if len(x) % batch_size and not drop_last:  # the last, smaller batch's graph (BatchNorm refuses one example)
                self._graph("train", x[: len(x) % batch_size], y[: len(x) % batch_size])
        if validation_data is not None:
            validation_data = self._validation_data(validation_data, batch_size)
        history, step = [], 0
        for epoch in range(initial_epoch, epochs):
            if schedule is not None:
                rate = schedule(self.optimizer.initial_lr, epoch, epochs)
                named = getattr(schedule, "__name__", None) or repr(schedule)
                self.optimizer.set_lr(arguments.real("fit", f"schedule {named}'s rate for epoch {epoch}", rate, 0.0))
            rng = np.random.default_rng((seed, self._epochs_trained)) if shuffle else None
            batches = _batches(x, y, batch_size, rng, drop_last)
            self._reset_metrics("train")
            start, examples = time.perf_counter(), 0
            # advanced by hand: a tqdm iterated over closes when the batches end, before the epoch's metrics
            bar = tqdm(desc=f"epoch {epoch + 1}/{epochs}", disable=not progress, leave=True,
                       total=_count(x, y, batch_size, drop_last), unit="batch")
            for batch in batches:
                xb, yb = batch if y is not None else self._iterated_batch(batch)
                graph, x_parameter, y_parameter, _ = self._graph("train", xb, yb)
                self.env.run(graph, {x_parameter: xb, y_parameter: yb}, seed=_step_seed(seed, self._steps_trained))
                self._steps_trained += 1
                examples += len(xb)
                step += 1
                bar.update()
                if on_step is not None:
                    on_step(step, self)
                if progress and step % 20 == 0:
                    elapsed = time.perf_counter() - start
                    bar.set_postfix(loss=f"{self._read_metrics('train', examples)['loss']:.4f}",
                                    samples_per_s=f"{examples / elapsed:.0f}")
            if examples == 0:
                bar.close()
                raise ValueError(at_user_line(
                    "fit: the iterable x gave no batches" + (" in this epoch (a generator is used up by the first: "
                    "pass a list, or a function returning a fresh iterator)" if epoch > initial_epoch else "")))
            logs = {"epoch": epoch + 1, **self._read_metrics("train", examples), "time": time.perf_counter() - start}
            if validation_data is not None:
                logs.update({f"val_{k}": v for k, v in self.evaluate(*validation_data, batch_size).items()})
            bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items() if k != "epoch"})
            bar.close()
            history.append(logs)
            self._epochs_trained += 1
            if on_epoch is not None:
                on_epoch(epoch + 1, logs)
        return history

    def _validation_data(self, validation_data: Any, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Check fit's validation_data up front, so a mistake in it does not surface after an epoch."""
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError(at_user_line("fit: validation_data must be a pair (x, y) of arrays"))
        x, y = _examples("fit: validation_data", *validation_data)
        self._check_examples("fit: validation_data", "evaluate", x, y, batch_size)
        return x, y

    def _iterated_batch(self, batch: Any) -> tuple[np.ndarray, np.ndarray]:
        """One (x, y) batch from fit's iterable x, checked before it is trained on."""
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise ValueError(at_user_line(
                f"fit: each item of the iterable x must be an (x, y) batch, not {type(batch).__name__}"))
        xb, yb = _examples("fit", *batch)
        self._check_examples("fit", "train", xb, yb, len(xb))
        return xb, yb

    def evaluate(self, x: np.ndarray, y: np.ndarray, batch_size: int = 1000) -> dict[str, float]:
        """Mean loss (and accuracy for classification) over (x, y) with the test graph (no dropout); the
        loss is averaged as fit's."""
        batch_size = natural("evaluate", "batch_size", batch_size, least=1)
        x, y = _examples("evaluate", x, y)
        self._check_examples("evaluate", "evaluate", x, y, batch_size)
        self._reset_metrics("evaluate")
        for xb, yb in _batches(x, y, batch_size, None, False):
            graph, x_parameter, y_parameter, _ = self._graph("evaluate", xb, yb)
            self.env.run(graph, {x_parameter: xb, y_parameter: yb})
        return self._read_metrics("evaluate", len(x))

    def predict(self, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """The model's outputs for x, with the test graph; an empty x gives an empty result of the
        output's trailing shape."""
        batch_size = natural("predict", "batch_size", batch_size, least=1)
        x = np.asarray(x)
        if x.ndim == 0:
            raise ValueError(at_user_line(f"predict: x must be an array of examples, not a scalar {x!r}"))
        if len(x) == 0:
            _, _, _, output_parameter = self._graph("predict", np.zeros((1, *x.shape[1:]), x.dtype), None)
            return np.zeros((0, *output_parameter.shape[1:]), output_parameter.dtype.numpy)
        self._check_examples("predict", "predict", x, None, batch_size)
        outputs = []
        for index in _slices(len(x), batch_size, None, False):
            xb = x[index]
            graph, x_parameter, _, output_parameter = self._graph("predict", xb, None)
            self.env.run(graph, {x_parameter: xb})
            outputs.append(self.env.read(output_parameter))
        return np.concatenate(outputs)

    # ---- checkpoints --------------------------------------------------------------------

    def checkpoint_parameters(self, model_only: bool = False) -> dict[str, Parameter]:
        """Everything a checkpoint holds: model parameters (trainable or not) and optimiser state, named
        by their paths in the model as a PyTorch state_dict is (`0.weight`, `adam.m.0.weight`), so that it
        loads into the same architecture built under another name or from other parts."""
        named = self.model.state_parameters()
        return named if model_only else named | self._optimizer_state(named)

    def _optimizer_state(self, model: dict[str, Parameter]) -> dict[str, Parameter]:
        """The optimiser's state named after the `model` parameters' paths (`adam.m.0.weight`); none
        without an optimiser."""
        if self.optimizer is None:
            return {}
        state = self.optimizer.named_state({p.name: path for path, p in model.items()})
        clashes = sorted(set(model) & set(state))
        if clashes:
            raise GraphError(at_user_line(
                f"checkpoint: the model's {clashes} would be saved under the same name(s) as the optimiser's "
                f"state; rename the part of the model called '{clashes[0].split('.')[0]}'"))
        return state

    @property
    def epochs_trained(self) -> int:
        """Epochs this Trainer has trained, counting those of a checkpoint it loaded."""
        return self._epochs_trained

    def save(self, path: str | os.PathLike) -> None:
        """Write the model, the optimiser state and the epochs and steps trained to `path` (.npz),
        atomically."""
        metadata = {_COUNTS: np.array([self._epochs_trained, self._steps_trained], np.int64)}
        if self.optimizer is not None:
            metadata[_INITIAL_LR] = np.array(self.optimizer.initial_lr, np.float64)
        checkpoint.save(self.env, self.checkpoint_parameters(), path, metadata)

    def load(self, path: str | os.PathLike, model_only: bool = False) -> None:
        """Restore a checkpoint: parameters, optimiser state, counts and the rate a schedule starts
        from; `model_only` restores just the model (optimiser state and counts are ignored)."""
        model = self.model.state_parameters()
        state = {} if model_only else self._optimizer_state(model)
        kinds = {} if model_only else {_COUNTS: ((2,), "iu"), _INITIAL_LR: ((), "f")}
        counts = {id(p) for p in self.optimizer.counts()} if state else set()  # no state: no optimiser, or model_only
        counters = {id(p) for p in self.optimizer.step_counters()} if state else set()
        # checkpoints from before each parameter had a step counter of its own hold one for all
        fallbacks = {name: f"{self.optimizer.prefix}.step" for name, p in state.items() if id(p) in counters}
        metadata = checkpoint.load(self.env, model | state, path, ignore_extra=model_only, metadata_kinds=kinds,
                                   optimizer_state=set(state), fallbacks=fallbacks,
                                   nonnegative={_COUNTS, _INITIAL_LR} | {name for name, p in state.items()
                                                                        if id(p) in counts})
        if not model_only and _COUNTS in metadata:
            self._epochs_trained, self._steps_trained = (int(count) for count in metadata[_COUNTS])
        if not model_only and _INITIAL_LR in metadata and self.optimizer is not None:
            self.optimizer.initial_lr = float(metadata[_INITIAL_LR])


_CALLS = {"train": "fit", "evaluate": "evaluate", "predict": "predict"}  # the method a graph's kind serves
_COUNTS = "__trainer_epochs_and_steps__"
_INITIAL_LR = "__trainer_initial_lr__"  # the rate a schedule starts from, so a resumed run follows the same one


def _check_arguments(env: Any, model: Any, loss: Any, optimizer: Any) -> None:
    """Refuse by name what a Trainer cannot use, before any of it is touched."""
    if not callable(getattr(env, "build_graph", None)):
        raise TypeError(at_user_line(f"Trainer: env must be a descent Environment, got {env!r}"))
    if not isinstance(model, Module):
        raise TypeError(at_user_line(f"Trainer: model must be a descent.nn Module, got {model!r}"))
    unbuilt = [m for m in model._modules() if not m._built and type(m).create is not Module.create]
    if unbuilt:
        raise GraphError(at_user_line(f"Trainer: the model is not built (its {type(unbuilt[0]).__name__} has no "
                                      "parameters yet): call model.build(env) before making its Trainer"))
    if any(p.environment is not env for p in model.parameters()):
        raise GraphError(at_user_line("Trainer: the model was built in another Environment than the Trainer's env"))
    if not callable(loss) or isinstance(loss, type):
        raise TypeError(at_user_line(f"Trainer: loss must be a function such as dc.mse, got {loss!r}"))
    if isinstance(optimizer, type):
        raise TypeError(at_user_line(f"Trainer: optimizer must be an instance, such as {optimizer.__name__}(), "
                                     f"not the class {optimizer.__name__}"))
    if optimizer is not None and not isinstance(optimizer, Optimizer):
        raise TypeError(at_user_line(f"Trainer: optimizer must be a descent.optim optimiser, got {optimizer!r}"))


def _refuse_outside(where: str, name: str, values: np.ndarray, taken: np.ndarray, low: int, high: int,
                    error: type, what: str, elements: str) -> None:
    """Raise `error` naming the first element of `values` whose value as `taken` (cast) lies outside
    [low, high), why, and how many do."""
    if taken.min() >= low and taken.max() < high:
        return
    outside = (taken < low) | (taken >= high)
    position = tuple(int(k) for k in np.argwhere(outside)[0])
    raise error(at_user_line(
        f"{where}: {name}[{', '.join(map(str, position))}] = {values[position]} {what} "
        f"({int(outside.sum())} of {values.size} {elements} are)"))


def _step_seed(seed: int, step: int) -> int:
    """The random-number seed of a training step: its own for each (seed, step)."""
    return (seed * 0x9E3779B1 + step) % 2**32


def _dtype_name(array: np.ndarray) -> str:
    return data_dtype(array.dtype).name


def _examples(where: str, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """x and y as numpy arrays (lists are converted) holding the same, non-zero number of examples."""
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 0 or y.ndim == 0:
        raise ValueError(at_user_line(f"{where}: x and y must be arrays with one example per row, "
                                      f"not shapes {x.shape} and {y.shape}"))
    if len(x) != len(y):
        raise ValueError(at_user_line(f"{where}: x has {len(x)} examples but y has {len(y)}"))
    if len(x) == 0:
        raise ValueError(at_user_line(f"{where}: x and y hold no examples"))
    for name, array in (("x", x), ("y", y)):
        if array.dtype.kind not in "biuf":
            raise ValueError(at_user_line(f"{where}: {name} must hold numbers, not {array.dtype} "
                                          "(class labels as integers 0 .. classes - 1)"))
    return x, y


def _count(x, y, batch_size: int, drop_last: bool) -> int | None:
    if y is None:
        return len(x) if hasattr(x, "__len__") else None
    full, rest = divmod(len(x), batch_size)
    return full + (1 if rest and not drop_last else 0)


def _batches(x, y, batch_size: int, rng: np.random.Generator | None, drop_last: bool):
    if y is None:
        yield from (x() if callable(x) else x)
        return
    for index in _slices(len(x), batch_size, rng, drop_last):
        yield x[index], y[index]


def _slices(count: int, batch_size: int, rng: np.random.Generator | None, drop_last: bool):
    order = rng.permutation(count) if rng is not None else np.arange(count)
    for start in range(0, count, batch_size):
        index = order[start : start + batch_size]
        if len(index) < batch_size and drop_last:
            return
        yield index
