"""A random-graph generator: programs of elementwise ops, views, reductions, matmul, gathers,
scatters and convolutions, built at once as a descent graph and as a float64 numpy reference
interpreter. The last step joins every value no other step reads, so that each step's result is
checked, not only those the last op depends on."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

import descent as dc

Step = tuple[str, Callable, Callable]  # name, descent fn, numpy fn


@dataclass
class Program:
    """Values are numbered: the inputs first, then one per step; a step reads earlier values."""

    input_shapes: list[tuple[int, ...]]
    steps: list[tuple[str, tuple[int, ...], Callable, Callable]] = field(default_factory=list)

    def run_numpy(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        values = [x.astype(np.float64) for x in inputs]
        for _, args, _, np_fn in self.steps:
            values.append(np_fn(*[values[a] for a in args]))
        return values

    def run_descent(self, inputs: list[dc.Array]) -> list[dc.Array]:
        values = list(inputs)
        for _, args, fn, _ in self.steps:
            values.append(fn(*[values[a] for a in args]))
        return values

    def describe(self) -> str:
        return "; ".join(f"v{len(self.input_shapes) + k} = {name}({', '.join(f'v{a}' for a in args)})"
                         for k, (name, args, _, _) in enumerate(self.steps))


UNARY = [
    ("tanh", dc.tanh, np.tanh), ("sin", dc.sin, np.sin), ("sigmoid", dc.sigmoid, lambda x: 1 / (1 + np.exp(-x))),
    ("softsqrt", lambda x: dc.sqrt(x * x + 1.0), lambda x: np.sqrt(x * x + 1)), ("neg", lambda x: -x, np.negative),
    ("scale", lambda x: x * 0.5 + 0.25, lambda x: x * 0.5 + 0.25),
    ("expclip", lambda x: dc.exp(dc.clip(x, -3.0, 3.0)), lambda x: np.exp(np.clip(x, -3, 3))),
]
BINARY = [
    ("add", lambda a, b: a + b, np.add), ("sub", lambda a, b: a - b, np.subtract),
    ("mul", lambda a, b: a * b, np.multiply), ("div", lambda a, b: a / (b * b + 1.0), lambda a, b: a / (b * b + 1)),
]


def _np_scatter(x: np.ndarray, indices: np.ndarray, size: int) -> np.ndarray:
    out = np.zeros((size,) + x.shape[1:])
    np.add.at(out, indices, x)
    return out


def _conv(x: dc.Array, kernel: np.ndarray) -> dc.Array:
    """A 2x2 convolution with padding 1 of a matrix seen as a one-channel image."""
    image = x.reshape(1, 1, *x.shape)
    return dc.conv2d(image, x.scope.constant(kernel), padding=1).reshape(x.shape[0] + 1, x.shape[1] + 1)


def _np_conv(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    padded = np.pad(x, 1)
    rows, cols = x.shape[0] + 1, x.shape[1] + 1
    return sum(kernel[0, 0, a, b] * padded[a : a + rows, b : b + cols] for a in range(2) for b in range(2))


def generate(rng: np.random.Generator, ops: int) -> Program:
    shapes = [tuple(int(s) for s in rng.integers(1, 6, 2)) for _ in range(int(rng.integers(1, 3)))]
    program = Program(list(shapes))
    for _ in range(ops):
        k = int(rng.integers(len(shapes)))
        shape = shapes[k]
        kind = rng.choice(["unary", "binary", "view", "reduce", "matmul", "gather", "scatter", "conv"],
                          p=[.22, .22, .18, .1, .08, .07, .06, .07])
        if kind == "unary":
            name, fn, np_fn = UNARY[int(rng.integers(len(UNARY)))]
            step, new = (name, (k,), fn, np_fn), shape
        elif kind == "binary":
            partners = [j for j, s in enumerate(shapes) if s == shape or s == shape[-1:] or s == (1,) + shape[1:]]
            j = partners[int(rng.integers(len(partners)))]
            name, fn, np_fn = BINARY[int(rng.integers(len(BINARY)))]
            step, new = (name, (k, j) if rng.random() < 0.5 else (j, k), fn, np_fn), shape  # either side broadcast
        elif kind == "view":
            choice = int(rng.integers(4))
            if choice == 0:
                step, new = ("T", (k,), lambda x: x.T, lambda x: x.T), shape[::-1]
            elif choice == 1:
                step, new = ("flip", (k,), lambda x: x[::-1], lambda x: x[::-1]), shape
            elif choice == 2 and shape[0] > 1:
                step, new = ("drop_first", (k,), lambda x: x[1:], lambda x: x[1:]), (shape[0] - 1,) + shape[1:]
            else:
                flat = (shape[0] * shape[1],)
                step, new = ("flatten_1", (k,), lambda x: x.reshape(-1, 1), lambda x: x.reshape(-1, 1)), flat + (1,)
        elif kind == "reduce":
            axis = int(rng.integers(2))
            name, fn, np_fn = [("sum", dc.sum, np.sum), ("max", dc.max, np.max), ("mean", dc.mean, np.mean)][
                int(rng.integers(3))]
            step = (f"{name}{axis}", (k,), lambda x, f=fn, a=axis: f(x, a, keepdims=True),
                    lambda x, f=np_fn, a=axis: f(x, axis=a, keepdims=True))
            new = tuple(1 if d == axis else s for d, s in enumerate(shape))
        elif kind == "matmul":
            step, new = ("gram", (k,), lambda x: x @ x.T * 0.5, lambda x: x @ x.T * 0.5), (shape[0], shape[0])
        elif kind == "scatter":
            size = int(rng.integers(1, 6))
            indices = rng.integers(0, size, shape[0]).astype(np.int32)
            step = ("scatter_add", (k,), lambda x, i=indices, n=size: dc.scatter_add(x, x.scope.constant(i), n),
                    lambda x, i=indices, n=size: _np_scatter(x, i, n))
            new = (size, shape[1])
        elif kind == "conv" and min(shape) >= 2:
            kernel = rng.normal(size=(1, 1, 2, 2)).astype(np.float32)
            step = ("conv2x2", (k,), lambda x, w=kernel: _conv(x, w), lambda x, w=kernel: _np_conv(x, w))
            new = (shape[0] + 1, shape[1] + 1)
        else:
            indices = rng.integers(0, shape[0], int(rng.integers(1, 5))).astype(np.int32)
            step = ("take", (k,), lambda x, i=indices: dc.take(x, x.scope.constant(i), 0),
                    lambda x, i=indices: np.take(x, i, 0))
            new = (len(indices), shape[1])
        program.steps.append(step)
        shapes.append(new)
    used = {a for _, args, _, _ in program.steps for a in args}
    sinks = tuple(v for v in range(len(program.input_shapes), len(shapes)) if v not in used)
    program.steps.append(("collect", sinks, lambda *xs: dc.concat([x.reshape(-1) for x in xs]),
                          lambda *xs: np.concatenate([x.reshape(-1) for x in xs])))
    return program
