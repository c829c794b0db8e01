"""A short tour of descent's low-level graph API: parameters, lazy graphs, views, fusion, replay.

Run with `.venv/bin/python examples/array_api.py` from the repository root (`./run.sh setup` makes .venv).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from arguments import open_environment

import descent as dc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=None, help="device index or name (default: DESCENT_DEVICE, else the first)")
    args = parser.parse_args()
    env = open_environment(parser, args.device)
    print(f"device: {env.device.name} ({env.device.kind}), "
          f"storage-buffer range {env.device.limits.max_storage_buffer_range >> 20} MiB")

    # Parameters are persistent device arrays; write and read move numpy data.
    x = env.parameter("x", (4, 3))
    env.write(x, np.arange(12, dtype=np.float32).reshape(4, 3))

    # A graph is built by a function of a scope `s`; nothing runs while it is built.
    def step(s: dc.Scope) -> None:
        a = s.read(x)
        s.write(x, dc.sin(a * 2.0 + 1.0))

    graph = env.build_graph(step)
    env.run(graph)
    print("sin(2x + 1):\n", env.read(x), "\nkernels per run:", graph.kernel_count)

    # Views (transpose, slicing, reshape, broadcasting) only change indexing inside the fused shader.
    image = env.parameter("image", (64, 48))
    gain = env.parameter("gain", (48,))
    flipped = env.parameter("flipped", (24, 64))
    env.write(image, np.random.default_rng(0).uniform(size=(64, 48)).astype(np.float32))
    env.write(gain, np.linspace(0.5, 1.5, 48, dtype=np.float32))

    def process(s: dc.Scope) -> None:
        pixels = s.read(image) * s.read(gain)  # (64, 48) * (48,) broadcasts
        contrast = dc.clip((pixels - 0.5) * 1.5 + 0.5, 0.0, 1.0)
        s.write(flipped, dc.where(contrast > 0.5, contrast, contrast**2.0)[::-1, ::2].T)

    graph = env.build_graph(process)
    env.run(graph)
    print(f"\nimage pipeline: {graph.kernel_count} kernel, {graph.memory_bytes} bytes of temporaries")
    print("generated GLSL (DESCENT_DUMP_SHADERS=dir writes every shader):\n")
    print(graph.shaders[0])

    # Reductions and matmul are kernels of their own; elementwise work before and after them fuses in.
    a = env.parameter("a", (64, 32), init=np.random.default_rng(1).normal(size=(64, 32)).astype(np.float32))
    w = env.parameter("w", (32, 10), init=np.random.default_rng(2).normal(size=(32, 10)).astype(np.float32))
    probabilities = env.parameter("probabilities", (64, 10))
    graph = env.build_graph(lambda s: s.write(probabilities, dc.softmax(dc.relu(s.read(a) @ s.read(w)), axis=1)))
    env.run(graph)
    print(f"\nsoftmax(relu(a @ w)): rows sum to {env.read(probabilities).sum(1)[:3]}")
    print(graph.summary())

    # Gradients are ordinary graph nodes: s.grad differentiates, and an update can be written in-graph.
    loss_value = env.parameter("loss", ())

    def descend(s: dc.Scope) -> None:
        weights = s.read(w)
        loss = dc.mean((s.read(a) @ weights) ** 2.0)
        (gradient,) = s.grad(loss, [weights])
        s.write(loss_value, loss)
        s.write(w, weights - 0.1 * gradient)  # reads in this graph still see the old w

    step = env.build_graph(descend)
    for _ in range(5):
        env.run(step)
        print(f"loss {float(env.read(loss_value)):.4f}", end="  ")
    print(f"\none gradient-descent step: {step.kernel_count} kernels")

    # Replaying a built graph re-submits its recorded command buffer.
    counter = env.parameter("counter", (1,))
    increment = env.build_graph(lambda s: s.write(counter, s.read(counter) + 1.0))
    start = time.perf_counter()
    for _ in range(1000):
        env.run(increment)
    elapsed = time.perf_counter() - start
    print(f"1000 replays: counter = {env.read(counter)[0]:.0f}, {elapsed / 1000 * 1e6:.0f} µs per run")


if __name__ == "__main__":
    main()
