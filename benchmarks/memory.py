"""Memory of a training step: descent's device memory against what any framework must hold: parameters,
optimiser state, the batch, and the activations the backward pass keeps (counted with PyTorch's
saved-tensor hooks on the same network)."""

from __future__ import annotations

import numpy as np

import descent as dc
from benchmarks.training import _torch_network, network
from descent import nn, optim


def saved_activation_bytes(torch, name: str, batch: int) -> tuple[int, int]:
    """(bytes of tensors autograd saves for backward that are neither parameters nor the batch,
    bytes of the parameters) for one forward pass of the PyTorch twin of the network."""
    module = _torch_network(torch, name).train()
    x = torch.zeros(batch, 1, 28, 28)
    excluded = {p.untyped_storage().data_ptr() for p in module.parameters()} | {x.untyped_storage().data_ptr()}
    storages: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in excluded:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        module(x).sum()
    return sum(storages.values()), sum(p.numel() * 4 for p in module.parameters())


def training_step(name: str, batch: int) -> dict[str, float]:
    """Device bytes descent holds to train `name` at `batch` (a fresh Environment: parameters, Adam
    state, inputs, metrics, temporaries) and the lower bound they are compared with."""
    import torch

    env = dc.Environment()
    model = network(name).build(env, name=name)
    trainer = nn.Trainer(env, model, optimizer=optim.Adam(1e-3))
    x = np.zeros((batch, 1, 28, 28), np.float32)
    y = np.zeros(batch, np.int32)
    graph = trainer._graph("train", x, y)[0]
    activations, parameters = saved_activation_bytes(torch, name, batch)
    bound = 3 * parameters + x.nbytes + y.nbytes + activations  # weights, Adam's two moments, batch, activations
    return {"case": f"{name} batch {batch}", "descent_bytes": env.device_bytes, "temporaries": graph.memory_bytes,
            "bound_bytes": bound, "activations": activations, "ratio": env.device_bytes / bound}
