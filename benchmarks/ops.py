"""Op benchmarks: fused elementwise bandwidth, matmul, and the ConvNet's convolution layers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

import descent as dc
from benchmarks.timing import best_of


@dataclass
class Result:
    case: str
    descent_s: float
    peer_s: float
    work: float  # bytes or flops per call
    unit: str  # "GB/s" or "GFLOP/s"

    @property
    def ratio(self) -> float:
        """Peer time over descent time: above 1 means descent is faster."""
        return self.peer_s / self.descent_s

    def rate(self, seconds: float) -> float:
        return self.work / seconds / 1e9


class Peer:
    """PyTorch on the matching device: CUDA when descent runs on an NVIDIA GPU and torch sees one."""

    def __init__(self, cuda: bool) -> None:
        import torch

        self.torch = torch
        self.device = "cuda" if cuda and torch.cuda.is_available() else "cpu"
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        self.name = f"torch {torch.__version__} {self.device}"

    def tensor(self, array: np.ndarray):
        return self.torch.from_numpy(array).to(self.device)

    def synchronize(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def time(self, fn: Callable[[], object], **options) -> float:
        return best_of(fn, self.synchronize, **options)


def _descent_case(env: dc.Environment, name: str, inputs: dict[str, np.ndarray], fn) -> float:
    parameters = {}
    for key, value in inputs.items():
        parameters[key] = env.parameter(f"{name}_{key}", value.shape)
        env.write(parameters[key], value)
    holder = {}

    def build(s: dc.Scope) -> None:
        result = fn(**{k: s.read(p) for k, p in parameters.items()})
        holder["out"] = env.parameter(f"{name}_out", result.shape)
        s.write(holder["out"], result)

    graph = env.build_graph(build)
    return best_of(lambda: env.run(graph), env.synchronize)


def elementwise(env: dc.Environment, peer: Peer, size: int) -> Result:
    x = np.random.default_rng(0).normal(size=size).astype(np.float32)
    y = np.random.default_rng(1).normal(size=size).astype(np.float32)
    ours = _descent_case(env, f"ew{size}", {"x": x, "y": y}, lambda x, y: x * 2.0 + y)
    tx, ty = peer.tensor(x), peer.tensor(y)
    out = peer.torch.empty_like(tx)
    theirs = peer.time(lambda: peer.torch.add(tx * 2.0, ty, out=out))
    return Result(f"elementwise x*2+y, {size:,} floats", ours, theirs, 3 * 4 * size, "GB/s")


def matmul(env: dc.Environment, peer: Peer, n: int) -> Result:
    a = np.random.default_rng(0).normal(size=(n, n)).astype(np.float32)
    b = np.random.default_rng(1).normal(size=(n, n)).astype(np.float32)
    ours = _descent_case(env, f"mm{n}", {"a": a, "b": b}, lambda a, b: a @ b)
    ta, tb = peer.tensor(a), peer.tensor(b)
    theirs = peer.time(lambda: ta @ tb)
    return Result(f"matmul {n}x{n}x{n} fp32", ours, theirs, 2 * n**3, "GFLOP/s")


def conv(env: dc.Environment, peer: Peer, name: str, batch: int, channels: int, size: int, out: int,
         groups: int) -> Result:
    x = np.random.default_rng(0).normal(size=(batch, channels, size, size)).astype(np.float32)
    w = np.random.default_rng(1).normal(size=(out, channels // groups, 3, 3)).astype(np.float32)
    ours = _descent_case(env, f"conv{name}{batch}", {"x": x, "w": w},
                         lambda x, w: dc.conv2d(x, w, padding=1, groups=groups))
    tx, tw = peer.tensor(x), peer.tensor(w)
    theirs = peer.time(lambda: peer.torch.nn.functional.conv2d(tx, tw, padding=1, groups=groups))
    flops = 2 * batch * out * size * size * (channels // groups) * 9
    return Result(f"conv2d {name} batch {batch}", ours, theirs, flops, "GFLOP/s")
