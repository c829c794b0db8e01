"""Training-step benchmarks: descent's fused, replayed step against a PyTorch eager step of the same
network (Adam, batch uploaded every step on both sides), plus host overhead and build time."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

import descent as dc
from benchmarks.ops import Peer, Result
from benchmarks.timing import best_of
from descent import nn, optim

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from fashion_mnist import network  # noqa: E402


def _torch_network(torch, name: str):
    tnn = torch.nn
    if name == "mlp":
        return tnn.Sequential(tnn.Flatten(), tnn.Linear(784, 300), tnn.ReLU(), tnn.Linear(300, 10))
    return tnn.Sequential(
        tnn.Conv2d(1, 16, 3, padding=1), tnn.LeakyReLU(0.01), tnn.MaxPool2d(2),
        tnn.Conv2d(16, 32, 3, padding=1, groups=2), tnn.LeakyReLU(0.01), tnn.MaxPool2d(2),
        tnn.Flatten(), tnn.Dropout(0.5), tnn.Linear(1568, 128), tnn.LeakyReLU(0.01), tnn.Linear(128, 10))


def step(env: dc.Environment, peer: Peer, name: str, batch: int, profile: bool = False) -> Result:
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(batch, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, batch).astype(np.int32)
    model = network(name).build(env, name=f"{name}{batch}")
    trainer = nn.Trainer(env, model, optimizer=optim.Adam(1e-3))
    graph, x_parameter, y_parameter, _ = trainer._graph("train", x, y)

    def ours() -> None:
        env.run(graph, {x_parameter: x, y_parameter: y})

    torch = peer.torch
    module = _torch_network(torch, name).to(peer.device)
    adam = torch.optim.Adam(module.parameters(), 1e-3)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y).long()

    def theirs() -> None:
        adam.zero_grad()
        loss = torch.nn.functional.cross_entropy(module(tx.to(peer.device)), ty.to(peer.device))
        loss.backward()
        adam.step()

    descent_s = best_of(ours, env.synchronize, repeats=3, min_time=0.5)
    peer_s = peer.time(theirs, repeats=3, min_time=0.5)
    if profile:
        kernels = graph.profile()
        print(f"{name} batch {batch}: {len(kernels)} kernels, {sum(t for *_, t in kernels):.0f} us of device time")
        for kernel, ops, micros in sorted(kernels, key=lambda k: -k[2]):
            print(f"  {micros:9.1f} us  {kernel:12s} {ops[:90]}")
    flops = 6 * batch * sum(p.size for p in model.parameters())  # a rough count, for scale only
    return Result(f"train step {name} batch {batch}", descent_s, peer_s, flops, "GFLOP/s")


def epoch(env: dc.Environment, peer: Peer, name: str, batch: int, samples: int = 60_000, rounds: int = 2) -> Result:
    """One shuffled pass over a Fashion-MNIST-sized set (`samples` images): descent's Trainer.fit
    against a PyTorch loop that gathers each batch, moves it to the device and steps Adam. The
    best of `rounds` epochs each, interleaved."""
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(samples, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, samples).astype(np.int32)
    trainer = nn.Trainer(env, network(name).build(env, name=f"{name}{batch}epoch"), optimizer=optim.Adam(1e-3))
    trainer.fit(x[:batch], y[:batch], batch_size=batch, progress=False)  # builds and compiles the graph

    def ours() -> None:
        trainer.fit(x, y, batch_size=batch, progress=False)

    torch = peer.torch
    module = _torch_network(torch, name).to(peer.device)
    adam = torch.optim.Adam(module.parameters(), 1e-3)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y).long()

    def theirs(count: int = samples) -> None:
        order = torch.randperm(samples)
        for start in range(0, count, batch):
            chosen = order[start : start + batch]
            adam.zero_grad()
            loss = torch.nn.functional.cross_entropy(module(tx[chosen].to(peer.device)), ty[chosen].to(peer.device))
            loss.backward()
            adam.step()

    theirs(3 * batch)  # warms up the peer's allocator and kernels as fit() above warmed ours
    descent_s = peer_s = float("inf")
    for _ in range(rounds):
        descent_s = min(descent_s, _seconds(ours, env.synchronize))
        peer_s = min(peer_s, _seconds(theirs, peer.synchronize))
    flops = 6 * samples * sum(p.size for p in trainer.model.parameters())
    return Result(f"epoch {name} batch {batch} ({samples} images)", descent_s, peer_s, flops, "GFLOP/s")


def _seconds(fn, sync) -> float:
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def host_overhead(env: dc.Environment) -> tuple[float, float]:
    """Seconds per replay of a one-element graph: in a loop (runs overlap as in training) and
    waiting for each run to finish (the latency of one run)."""
    counter = env.parameter("overhead_counter", (1,))
    graph = env.build_graph(lambda s: s.write(counter, s.read(counter) + 1.0))

    def run_and_wait() -> None:
        env.run(graph)
        env.synchronize()

    return (best_of(lambda: env.run(graph), env.synchronize, repeats=3, min_time=0.3),
            best_of(run_and_wait, repeats=3, min_time=0.3))


def warm_build_seconds(name: str) -> float:
    """Building and compiling a training graph again in a fresh Environment (SPIR-V cache warm)."""
    x = np.zeros((100, 1, 28, 28), np.float32)
    y = np.zeros(100, np.int32)
    for _ in range(2):
        env = dc.Environment()
        trainer = nn.Trainer(env, network(name).build(env), optimizer=optim.Adam(1e-3))
        start = time.perf_counter()
        trainer._graph("train", x, y)
        elapsed = time.perf_counter() - start
    return elapsed
