"""Modules against torch CPU with the same weights (forward and gradients), optimiser trajectories
against torch.optim, training on scikit-learn's digits, and checkpoints.

Tolerances: forward rtol 1e-5 / atol 1e-5; gradients rtol 1e-4 / atol 1e-5; optimiser trajectories
after 20 steps rtol 1e-4 / atol 2e-5 (float32 on both sides; Adam's normalised steps amplify the rounding
of tiny gradients)."""

from __future__ import annotations

import functools
import inspect
import itertools
import os
import stat
import zipfile

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

import descent as dc
from descent import nn, optim
from tests.conftest import evaluate

rng = np.random.default_rng(8)
F = torch.nn.functional
_uid = itertools.count()


def _run_module(env: dc.Environment, module: nn.Module, x: np.ndarray, training: bool = False,
                weights: np.ndarray | None = None):
    """Forward output and gradients (input and parameters) of sum(module(x) * weights)."""
    uid = next(_uid)
    module.build(env, seed=uid, name=f"m{uid}")
    params = module.parameters(trainable_only=True)
    xp = env.parameter(f"m{uid}.x", x.shape, init=x)
    holder = {}

    def build(s: dc.Scope) -> None:
        arrays = [s.read(p) for p in params]
        xa = s.read(xp)
        out = module(s, xa)
        holder["out"] = env.parameter(f"m{uid}.out", out.shape)
        s.write(holder["out"], out)
        w = weights if weights is not None else np.linspace(-1, 1, out.size, dtype=np.float32).reshape(out.shape)
        holder["w"] = w
        grads = s.grad(dc.sum(out * s.constant(w)), [xa] + arrays)
        holder["grads"] = [env.parameter(f"m{uid}.g{k}", g.shape) for k, g in enumerate(grads)]
        for p, g in zip(holder["grads"], grads):
            s.write(p, g)

    env.run(env.build_graph(build, training=training))
    values = {name.split(".", 1)[1]: env.read(p) for name, p in module.named_parameters()}
    return env.read(holder["out"]), [env.read(g) for g in holder["grads"]], values, holder["w"]


def _torch_check(ours, torch_module_fn, x: np.ndarray, rtol=1e-4, atol=1e-5):
    out, grads, values, w = ours
    tx = torch.tensor(x, requires_grad=True)
    tout, tparams = torch_module_fn(tx, values)
    (tout * torch.from_numpy(w)).sum().backward()
    np.testing.assert_allclose(out, tout.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grads[0], tx.grad.numpy(), rtol=rtol, atol=atol)
    for ours_g, theirs in zip(grads[1:], tparams):
        np.testing.assert_allclose(ours_g, theirs.grad.numpy(), rtol=rtol, atol=atol)


def _t(value: np.ndarray) -> torch.Tensor:
    return torch.tensor(value, requires_grad=True)


def test_dense(env: dc.Environment) -> None:
    x = rng.normal(size=(5, 7)).astype(np.float32)

    def reference(tx, v):
        w, b = _t(v["weight"]), _t(v["bias"])
        return tx @ w + b, [w, b]

    _torch_check(_run_module(env, nn.Dense(7, 3), x), reference, x)


@pytest.mark.parametrize("groups", [1, 2])
def test_conv2d_module(env: dc.Environment, groups: int) -> None:
    x = rng.normal(size=(2, 4, 8, 7)).astype(np.float32)

    def reference(tx, v):
        w, b = _t(v["weight"]), _t(v["bias"])
        return F.conv2d(tx, w, b, stride=1, padding=1, groups=groups), [w, b]

    _torch_check(_run_module(env, nn.Conv2D(4, 6, 3, padding=1, groups=groups), x), reference, x)


def test_conv1d_and_pooling_1d_modules(env: dc.Environment) -> None:
    x = rng.normal(size=(2, 4, 12)).astype(np.float32)

    def reference(tx, v):
        w, b = _t(v["weight"]), _t(v["bias"])
        return F.conv1d(tx, w, b, stride=2, padding=1, groups=2), [w, b]

    module = nn.Conv1D(4, 6, 3, stride=2, padding=1, groups=2)
    _torch_check(_run_module(env, module, x), reference, x)
    assert module.weight.shape == (6, 2, 3) and repr(module) == "Conv1D(4, 6, 3, stride=2, padding=1, groups=2)"
    _torch_check(_run_module(env, nn.MaxPool1D(3, 2), x), lambda tx, v: (F.max_pool1d(tx, 3, 2), []), x)
    _torch_check(_run_module(env, nn.AvgPool1D(2), x), lambda tx, v: (F.avg_pool1d(tx, 2), []), x)
    with pytest.raises(dc.ShapeError, match="Conv1D: 4 inputs and 6 outputs must both divide into 4 group"):
        nn.Conv1D(4, 6, 3, groups=4)
    assert nn.Conv1D(2, 4, (3,)).build(env).weight.shape == (4, 2, 3)
    with pytest.raises(dc.ShapeError, match=r"Conv2D: kernel must be an int or a pair of ints, got \(3,\)"):
        nn.Conv2D(2, 4, (3,))


def test_transposed_convolution_modules(env: dc.Environment) -> None:
    images = rng.normal(size=(2, 4, 5, 6)).astype(np.float32)

    def reference_2d(tx, v):
        w, b = _t(v["weight"]), _t(v["bias"])
        return F.conv_transpose2d(tx, w, b, stride=2, padding=1, output_padding=1, groups=2), [w, b]

    module = nn.ConvTranspose2D(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2)
    _torch_check(_run_module(env, module, images), reference_2d, images)
    assert module.weight.shape == (4, 3, 3, 3)
    signal = rng.normal(size=(2, 3, 7)).astype(np.float32)

    def reference_1d(tx, v):
        w, b = _t(v["weight"]), _t(v["bias"])
        return F.conv_transpose1d(tx, w, b, stride=3), [w, b]

    _torch_check(_run_module(env, nn.ConvTranspose1D(3, 5, 4, stride=3), signal), reference_1d, signal)


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm(env: dc.Environment, training: bool) -> None:
    x = rng.normal(size=(6, 3, 4, 5)).astype(np.float32) * 2 + 1
    module = nn.BatchNorm(3)

    def reference(tx, v):
        w, b = _t(v["weight"]), _t(v["bias"])
        mean, var = torch.zeros(3), torch.ones(3)
        return F.batch_norm(tx, mean, var, w, b, training=training, momentum=0.1, eps=1e-5), [w, b]

    ours = _run_module(env, module, x, training=training)
    _torch_check(ours, reference, x, rtol=1e-3, atol=1e-4)
    if training:
        running_mean = 0.9 * 0 + 0.1 * x.mean(axis=(0, 2, 3))
        running_var = 0.9 * 1 + 0.1 * x.var(axis=(0, 2, 3), ddof=1)
        np.testing.assert_allclose(env.read(module.running_mean), running_mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(env.read(module.running_var), running_var, rtol=1e-5)


def test_batchnorm_applied_twice_moves_its_running_statistics_twice_as_pytorch(env: dc.Environment) -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = self.add("norm", nn.BatchNorm(3))

        def forward(self, s: dc.Scope, x: dc.Array) -> dc.Array:
            return self.norm(s, self.norm(s, x) * 2.0 + 1.0)

    x = rng.normal(size=(6, 3, 4, 5)).astype(np.float32) * 2 + 1
    module = Twice()

    def reference(tx, v):
        w, b = _t(v["norm.weight"]), _t(v["norm.bias"])
        torch_norm = torch.nn.BatchNorm2d(3)
        with torch.no_grad():
            torch_norm.weight.copy_(w)
            torch_norm.bias.copy_(b)
        out = torch_norm(torch_norm(tx) * 2.0 + 1.0)
        reference.running = torch_norm.running_mean.numpy(), torch_norm.running_var.numpy()
        return out, [torch_norm.weight, torch_norm.bias]

    ours = _run_module(env, module, x, training=True)
    _torch_check(ours, reference, x, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(env.read(module.norm.running_mean), reference.running[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(env.read(module.norm.running_var), reference.running[1], rtol=1e-5)


def test_layernorm_embedding_activations_pooling(env: dc.Environment) -> None:
    x = rng.normal(size=(4, 6)).astype(np.float32)

    def layernorm(tx, v):
        w, b = _t(v["weight"]), _t(v["bias"])
        return F.layer_norm(tx, (6,), w, b), [w, b]

    _torch_check(_run_module(env, nn.LayerNorm(6), x), layernorm, x, rtol=1e-3, atol=1e-4)
    planes = rng.normal(size=(3, 4, 6)).astype(np.float32)

    def layernorm_2d(tx, v):
        w, b = _t(v["weight"]), _t(v["bias"])
        return F.layer_norm(tx, (4, 6), w, b), [w, b]

    _torch_check(_run_module(env, nn.LayerNorm((4, 6)), planes), layernorm_2d, planes, rtol=1e-3, atol=1e-4)
    for module, function in [(nn.ReLU(), F.relu), (nn.LeakyReLU(0.1), lambda t: F.leaky_relu(t, 0.1)),
                             (nn.Sigmoid(), torch.sigmoid), (nn.Tanh(), torch.tanh),
                             (nn.GELU(), F.gelu), (nn.GELU("tanh"), lambda t: F.gelu(t, approximate="tanh")),
                             (nn.Softplus(), F.softplus), (nn.SiLU(), F.silu), (nn.Identity(), lambda t: t),
                             (nn.Softmax(0), lambda t: torch.softmax(t, 0)),
                             (nn.LogSoftmax(), lambda t: F.log_softmax(t, -1)),
                             (nn.Sin(30.0), lambda t: torch.sin(30 * t))]:
        _torch_check(_run_module(env, module, x), lambda tx, v, f=function: (f(tx), []), x, rtol=1e-4, atol=1e-4)
    images = rng.normal(size=(2, 3, 8, 8)).astype(np.float32)
    _torch_check(_run_module(env, nn.MaxPool2D(2), images), lambda tx, v: (F.max_pool2d(tx, 2), []), images)
    _torch_check(_run_module(env, nn.AvgPool2D(2), images), lambda tx, v: (F.avg_pool2d(tx, 2), []), images)
    _torch_check(_run_module(env, nn.Flatten(), images), lambda tx, v: (tx.flatten(1), []), images)

    def blur(tx, v):
        taps = torch.tensor([1.0, 2.0, 1.0])
        kernel = (taps[:, None] * taps[None, :] / 16).expand(3, 1, 3, 3)
        return F.conv2d(F.max_pool2d(tx, 2, 1), kernel, stride=2, padding=1, groups=3), []

    _torch_check(_run_module(env, nn.BlurMaxPool2D(), images), blur, images)
    table = nn.Embedding(10, 4).build(env, seed=3, name="embedding")
    indices = np.array([[1, 9], [1, 0]], np.int32)
    ip = env.parameter("embedding.indices", indices.shape, dc.int32, init=indices)
    out = env.parameter("embedding.out", (2, 2, 4))
    env.run(env.build_graph(lambda s: s.write(out, table(s, s.read(ip)))))
    np.testing.assert_array_equal(env.read(out), env.read(table.weight)[indices])


def test_gelu_tanh_keeps_its_tail(env: dc.Environment) -> None:
    """Values and gradients of the tanh form against float64 to 1e-5 relative, out to x = -9: its
    gradient at -5 was 0 (tanh rounded to -1 in float32), where float64 gives -1.55e-6."""
    x = np.float32([-9, -7, -5, -4.5, -3, -1, -0.25, 0, 0.25, 1, 3, 5])
    out, (grad,), _, _ = _run_module(env, nn.GELU("tanh"), x, weights=np.ones_like(x))
    wide = x.astype(np.float64)
    half = 1 / (1 + np.exp(-2 * np.sqrt(2 / np.pi) * (wide + 0.044715 * wide**3)))  # (1 + tanh z) / 2, exactly
    np.testing.assert_allclose(out, wide * half, rtol=1e-5, atol=1e-30)
    slope = half + wide * 2 * half * (1 - half) * np.sqrt(2 / np.pi) * (1 + 3 * 0.044715 * wide**2)
    np.testing.assert_allclose(grad, slope, rtol=1e-5, atol=1e-30)


def test_dropout_only_in_training(env: dc.Environment) -> None:
    x = np.ones((200, 100), np.float32)
    module = nn.Dropout(0.3)
    out, grads, _, _ = _run_module(env, module, x, training=True, weights=np.ones_like(x))
    kept = out != 0
    assert abs(kept.mean() - 0.7) < 0.01
    np.testing.assert_allclose(out[kept], 1 / 0.7, rtol=1e-6)
    np.testing.assert_array_equal(grads[0], out)
    out, _, _, _ = _run_module(env, nn.Dropout(0.3), x, training=False)
    np.testing.assert_array_equal(out, x)


def test_dropout_of_inf_and_nan_is_nan_as_pytorch(env: dc.Environment) -> None:
    """Dropout selected 0 for a dropped element, so a NaN or inf vanished (a diverging network looked
    healthy one layer later); PyTorch multiplies by the mask, giving NaN. p = 1 too."""
    x = np.tile(np.array([np.nan, np.inf, 1.0], np.float32), 400)
    out, _, _, _ = _run_module(env, nn.Dropout(0.5), x, training=True)
    nans, infs, ones = out[0::3], out[1::3], out[2::3]
    assert np.isnan(nans).all() and set(np.unique(ones)) == {0.0, 2.0}
    assert set(infs[~np.isnan(infs)]) == {np.inf} and 0.4 < np.isnan(infs).mean() < 0.6
    out, _, _, _ = _run_module(env, nn.Dropout(1.0), x, training=True)
    assert np.isnan(out[0::3]).all() and np.isnan(out[1::3]).all() and (out[2::3] == 0).all()


def test_batchnorm_on_an_empty_batch_keeps_its_running_statistics(env: dc.Environment) -> None:
    """The mean of no examples is NaN: one training step on a (0, 3) batch made running_mean NaN and
    every later output NaN. PyTorch leaves the statistics alone."""
    norm = nn.BatchNorm(3)
    out, _, _, _ = _run_module(env, norm, np.zeros((0, 3, 4), np.float32), training=True)
    assert out.shape == (0, 3, 4)
    np.testing.assert_array_equal(env.read(norm.running_mean), [0, 0, 0])
    np.testing.assert_array_equal(env.read(norm.running_var), [1, 1, 1])


def test_module_part_names_and_reprs(env: dc.Environment) -> None:
    """add('') made the part's parameters share the parent's paths (state_parameters lost one, and a
    checkpoint with it); add('a.b') failed later, blaming the Environment; LayerNorm(()) was taken;
    reprs left out LayerNorm's shape and Dense's bias=False, and did not indent a nested Sequential."""
    for name in ("", "a.b", 3):
        with pytest.raises(dc.GraphError, match=rf"Sequential: a part's name must be a non-empty string without "
                                                rf"'\.'.*got {name!r}\n  at .*test_nn.py"):
            nn.Sequential().add(name, nn.ReLU())
    with pytest.raises(dc.ShapeError, match=r"LayerNorm: shape must name at least one axis, got \(\)"):
        nn.LayerNorm(())
    model = nn.Sequential(nn.Dense(3, 4, bias=False), nn.Sequential(nn.ReLU(), nn.LayerNorm((3, 4), eps=1e-3)))
    assert repr(model) == ("Sequential(\n  Dense(3, 4, bias=False),\n  Sequential(\n    ReLU(),\n"
                           "    LayerNorm((3, 4), eps=0.001),\n  ),\n)")


def test_module_initialisation_follows_pytorch(env: dc.Environment) -> None:
    dense = nn.Dense(300, 200).build(env, seed=0, name="init_dense")
    weight = env.read(dense.weight)
    bound = 1 / np.sqrt(300)
    assert weight.shape == (300, 200) and np.abs(weight).max() <= bound
    assert abs(weight.std() - bound / np.sqrt(3)) < 0.01 * bound
    names = [name for name, _ in nn.Sequential(nn.Dense(2, 3), nn.ReLU(), nn.Dense(3, 1)).build(
        env, name="seq").named_parameters()]
    assert names == ["seq.0.weight", "seq.0.bias", "seq.2.weight", "seq.2.bias"]


OPTIMISERS = [
    (lambda: optim.SGD(0.1), lambda p: torch.optim.SGD(p, 0.1)),
    (lambda: optim.SGD(0.05, momentum=0.9, weight_decay=0.01),
     lambda p: torch.optim.SGD(p, 0.05, momentum=0.9, weight_decay=0.01)),
    (lambda: optim.SGD(0.05, momentum=0.9, nesterov=True), lambda p: torch.optim.SGD(p, 0.05, momentum=0.9,
                                                                                      nesterov=True)),
    (lambda: optim.Adam(0.01), lambda p: torch.optim.Adam(p, 0.01)),
    (lambda: optim.Adam(0.01, weight_decay=0.1), lambda p: torch.optim.Adam(p, 0.01, weight_decay=0.1)),
    (lambda: optim.AdamW(0.01), lambda p: torch.optim.AdamW(p, 0.01)),
    (lambda: optim.Adam(0.05, amsgrad=True), lambda p: torch.optim.Adam(p, 0.05, amsgrad=True)),
    (lambda: optim.SGD(0.05, momentum=0.9, dampening=0.5), lambda p: torch.optim.SGD(p, 0.05, momentum=0.9,
                                                                                      dampening=0.5)),
    (lambda: optim.RMSprop(0.01), lambda p: torch.optim.RMSprop(p, 0.01)),
    (lambda: optim.RMSprop(0.01, momentum=0.9, centered=True, weight_decay=0.01),
     lambda p: torch.optim.RMSprop(p, 0.01, momentum=0.9, centered=True, weight_decay=0.01)),
    (lambda: optim.Adagrad(0.1), lambda p: torch.optim.Adagrad(p, 0.1)),
    (lambda: optim.Adagrad(0.1, lr_decay=0.05, weight_decay=0.01, initial_accumulator_value=0.1),
     lambda p: torch.optim.Adagrad(p, 0.1, lr_decay=0.05, weight_decay=0.01, initial_accumulator_value=0.1)),
]


@pytest.mark.parametrize("case", range(len(OPTIMISERS)))
def test_optimiser_trajectory_matches_torch(case: int) -> None:
    env = dc.Environment()
    ours_factory, torch_factory = OPTIMISERS[case]
    x = rng.normal(size=(16, 5)).astype(np.float32)
    y = rng.integers(0, 3, 16).astype(np.int32)
    model = nn.Sequential(nn.Dense(5, 8), nn.Tanh(), nn.Dense(8, 3)).build(env, seed=4)
    tparams = [torch.tensor(env.read(p), requires_grad=True) for p in model.parameters()]
    trainer = nn.Trainer(env, model, optimizer=ours_factory())
    optimiser = torch_factory(tparams)
    for _ in range(20):
        trainer.fit(x, y, epochs=1, batch_size=16, shuffle=False, progress=False)
        optimiser.zero_grad()
        w1, b1, w2, b2 = tparams
        F.cross_entropy(torch.tanh(torch.from_numpy(x) @ w1 + b1) @ w2 + b2, torch.from_numpy(y).long()).backward()
        optimiser.step()
    for ours, theirs in zip(model.parameters(), tparams):
        np.testing.assert_allclose(env.read(ours), theirs.detach().numpy(), rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("factories", [
    (lambda: optim.SGD(0.05, momentum=0.9, max_grad_norm=0.2), lambda p: torch.optim.SGD(p, 0.05, momentum=0.9)),
    (lambda: optim.Adam(0.01, max_grad_norm=0.2), lambda p: torch.optim.Adam(p, 0.01)),
], ids=["SGD", "Adam"])
def test_max_grad_norm_matches_torch_clip_grad_norm(factories) -> None:
    """Trajectories over 20 steps with torch.nn.utils.clip_grad_norm_ before each step; the labels are
    scaled up so the norm is clipped at every step (checked on torch's side)."""
    env = dc.Environment()
    x = rng.normal(size=(16, 5)).astype(np.float32) * 4
    y = rng.integers(0, 3, 16).astype(np.int32)
    model = nn.Sequential(nn.Dense(5, 8), nn.Tanh(), nn.Dense(8, 3)).build(env, seed=4)
    tparams = [torch.tensor(env.read(p), requires_grad=True) for p in model.parameters()]
    trainer = nn.Trainer(env, model, optimizer=factories[0]())
    optimiser = factories[1](tparams)
    for _ in range(20):
        trainer.fit(x, y, epochs=1, batch_size=16, shuffle=False, progress=False)
        optimiser.zero_grad()
        w1, b1, w2, b2 = tparams
        F.cross_entropy(torch.tanh(torch.from_numpy(x) @ w1 + b1) @ w2 + b2, torch.from_numpy(y).long()).backward()
        assert torch.nn.utils.clip_grad_norm_(tparams, 0.2) > 0.2
        optimiser.step()
    for ours, theirs in zip(model.parameters(), tparams):
        np.testing.assert_allclose(env.read(ours), theirs.detach().numpy(), rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("betas", [(0.9, 0.99999), (0.0, 0.9999), (0.99999, 0.999)])
def test_adam_bias_correction_is_exact_for_betas_near_one(env: dc.Environment, betas: tuple[float, float]) -> None:
    """With gradient 1 and eps 0 each Adam step moves a weight by exactly lr. The corrections were
    1 - pow(beta, step) in float32: 7e-4 off at beta2 = 0.99999 (descent moved 1.0006785)."""
    weight = env.parameter(f"adam_exact_{betas}", (1,))
    adam = optim.Adam(1.0, betas=betas, eps=0.0)
    adam.build(env, [weight])
    graph = env.build_graph(lambda s: adam.update(s, [weight], [s.read(weight)], [s.constant(1.0, dc.float32)
                                                                                 + s.read(weight) * 0.0]))
    tracked = torch.zeros(1, requires_grad=True)
    reference = torch.optim.Adam([tracked], lr=1.0, betas=betas, eps=0.0)
    for _ in range(3):
        env.run(graph)
        tracked.grad = torch.ones(1)
        reference.step()
        np.testing.assert_allclose(env.read(weight), tracked.detach().numpy(), rtol=3e-7)


def test_clipped_amsgrad_adamw_of_a_deep_model_matches_torch() -> None:
    """Clipping makes every update wait for the global norm, so all of a deep model's updates fall
    on one level: they must still fit the device's bindings (lavapipe allows 32) and match torch."""
    env = dc.Environment()
    local = np.random.default_rng(11)
    x = local.normal(size=(8, 16)).astype(np.float32) * 4
    y = local.integers(0, 4, 8).astype(np.int32)
    model = nn.Sequential(nn.Dense(16, 16), nn.ReLU(), nn.Dense(16, 16), nn.ReLU(), nn.Dense(16, 16), nn.ReLU(),
                          nn.Dense(16, 16), nn.ReLU(), nn.Dense(16, 4)).build(env, seed=1)
    tparams = [torch.tensor(env.read(p), requires_grad=True) for p in model.parameters()]
    trainer = nn.Trainer(env, model, optimizer=optim.AdamW(0.01, amsgrad=True, max_grad_norm=0.1))
    optimiser = torch.optim.AdamW(tparams, 0.01, amsgrad=True)
    for _ in range(5):
        trainer.fit(x, y, epochs=1, batch_size=8, shuffle=False, progress=False)
        optimiser.zero_grad()
        h = torch.from_numpy(x)
        for k in range(0, 8, 2):
            h = torch.relu(h @ tparams[k] + tparams[k + 1])
        F.cross_entropy(h @ tparams[8] + tparams[9], torch.from_numpy(y).long()).backward()
        assert torch.nn.utils.clip_grad_norm_(tparams, 0.1) > 0.1
        optimiser.step()
    for ours, theirs in zip(model.parameters(), tparams):
        np.testing.assert_allclose(env.read(ours), theirs.detach().numpy(), rtol=1e-4, atol=2e-5)


class _WithSpare(nn.Module):
    """A Dense and a parameter the forward pass never uses."""

    def __init__(self) -> None:
        super().__init__()
        self.add("dense", nn.Dense(4, 3))

    def create(self, env, rng) -> None:
        self.parameter(env, "spare", np.ones((2,), np.float32))

    def forward(self, s: dc.Scope, x: dc.Array) -> dc.Array:
        return self._children["dense"](s, x)


@pytest.mark.parametrize("factory", [lambda: optim.AdamW(0.1, weight_decay=0.1),
                                     lambda: optim.SGD(0.1, momentum=0.9, weight_decay=0.1)], ids=["AdamW", "SGD"])
def test_a_parameter_without_gradient_is_not_updated(factory) -> None:
    """As torch skips a parameter whose grad is None: weight decay used to shrink an unused one."""
    env = dc.Environment()
    model = _WithSpare().build(env)
    x = rng.normal(size=(8, 4)).astype(np.float32)
    y = np.arange(8, dtype=np.int32) % 3
    before = env.read(model._children["dense"].weight).copy()
    nn.Trainer(env, model, optimizer=factory()).fit(x, y, epochs=3, progress=False)
    np.testing.assert_array_equal(env.read(model.spare), [1.0, 1.0])
    assert not np.array_equal(env.read(model._children["dense"].weight), before)


def test_tied_weights_train_as_in_torch() -> None:
    """One Dense used twice: its parameters are listed once, their gradient sums both uses, and Adam
    updates them once a step, as torch does for a module applied twice."""
    env = dc.Environment()
    x = rng.normal(size=(8, 6)).astype(np.float32)
    y = rng.integers(0, 6, 8).astype(np.int32)
    shared = nn.Dense(6, 6)
    model = nn.Sequential(shared, nn.Tanh(), shared).build(env, seed=2)
    assert [name for name, _ in model.named_parameters()] == ["0.weight", "0.bias"]
    w, b = (torch.tensor(env.read(p), requires_grad=True) for p in model.parameters())
    trainer = nn.Trainer(env, model, optimizer=optim.Adam(0.01))
    optimiser = torch.optim.Adam([w, b], 0.01)
    for _ in range(5):
        trainer.fit(x, y, epochs=1, batch_size=8, shuffle=False, progress=False)
        optimiser.zero_grad()
        F.cross_entropy(torch.tanh(torch.from_numpy(x) @ w + b) @ w + b, torch.from_numpy(y).long()).backward()
        optimiser.step()
    for ours, theirs in zip(model.parameters(), (w, b)):
        np.testing.assert_allclose(env.read(ours), theirs.detach().numpy(), rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("ours, theirs", [
    (optim.StepLR(3, 0.5), lambda o: torch.optim.lr_scheduler.StepLR(o, 3, 0.5)),
    (optim.CosineLR(1e-3), lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 10, 1e-3)),
    (optim.CosineLR(1e-3, period=6), lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 6, 1e-3)),
    (optim.ExponentialLR(0.8), lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 0.8)),
    (optim.MultiStepLR((2, 5, 6), 0.3), lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [2, 5, 6], 0.3)),
    (optim.LinearLR(), lambda o: torch.optim.lr_scheduler.LinearLR(o)),
    (optim.LinearLR(1.0, 0.1, 4), lambda o: torch.optim.lr_scheduler.LinearLR(o, 1.0, 0.1, 4)),
], ids=["StepLR", "CosineLR", "CosineLR period", "ExponentialLR", "MultiStepLR", "LinearLR warm-up", "LinearLR decay"])
def test_schedules_match_torch_lr_schedulers(ours, theirs) -> None:
    """The rate of each of 10 epochs, as the schedule gives it to fit, against torch's scheduler
    stepped once an epoch."""
    optimiser = torch.optim.SGD([torch.zeros(1, requires_grad=True)], 0.05)
    scheduler = theirs(optimiser)
    for epoch in range(10):
        assert np.isclose(ours(0.05, epoch, 10), optimiser.param_groups[0]["lr"], rtol=1e-6), epoch
        optimiser.step()
        scheduler.step()


@pytest.mark.parametrize("make, error, message", [
    (lambda: optim.LinearLR(0.0), ValueError,
     r"LinearLR: start_factor must be in \(0, 1\] and end_factor in \[0, 1\], got 0.0"),
    (lambda: optim.LinearLR(1.0, 2.0, 3), ValueError, "LinearLR: start_factor must be in"),
    (lambda: optim.LinearLR(total_iters=2.5), TypeError, r"LinearLR: total_iters must be an int, got 2\.5"),
    (lambda: optim.StepLR(0), ValueError, "StepLR: step_size must be at least 1, got 0"),
    (lambda: optim.StepLR("2"), TypeError, "StepLR: step_size must be an int, got '2'"),
    (lambda: optim.StepLR(2, gamma=-0.5), ValueError, "StepLR: gamma must be a finite number of at least 0, got -0.5"),
    (lambda: optim.ExponentialLR(-0.5), ValueError,
     "ExponentialLR: gamma must be a finite number of at least 0, got -0.5"),
    (lambda: optim.CosineLR(minimum=-1), ValueError, "CosineLR: minimum must be a finite number of at least 0, got -1"),
    (lambda: optim.MultiStepLR((2, 4.5)), TypeError, r"MultiStepLR: each milestone must be an int, got 4\.5"),
    (lambda: optim.MultiStepLR((2, -1)), ValueError, "MultiStepLR: each milestone must be at least 0, got -1"),
])
def test_schedules_refuse_bad_settings_where_they_are_made(make, error: type, message: str) -> None:
    """A bad setting failed an epoch into training, under the optimiser's name ('Adam: lr must be ...'),
    or with a bare TypeError; the line named was dataclasses' generated '<string>'."""
    with pytest.raises(error, match=message + r".*\n  at .*test_nn\.py:\d+"):
        make()


def test_global_norm_and_clipping_functions(env: dc.Environment) -> None:
    a, b = rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=5).astype(np.float32)
    norm = np.sqrt((a**2).sum() + (b**2).sum())
    result = evaluate(env, lambda p, q: optim.global_norm([p, q]), a, b)
    np.testing.assert_allclose(result, norm, rtol=1e-6)
    clipped = evaluate(env, lambda p, q: dc.concat([g.reshape(-1) for g in optim.clip_by_global_norm([p, q], 1.0)]),
                       a, b)
    np.testing.assert_allclose(clipped, np.concatenate([a.ravel(), b]) / (norm + 1e-6), rtol=1e-6)
    unclipped = evaluate(env, lambda p: optim.clip_by_global_norm([p], 100.0)[0], a)
    np.testing.assert_array_equal(unclipped, a)
    integers = evaluate(env, lambda p: optim.global_norm([p]), np.array([50000, 0], np.int32))
    np.testing.assert_allclose(integers, 50000.0, rtol=1e-6)
    many = [np.full((5, 3), float(k), np.float32) for k in range(40)]  # 40 sums in one kernel bound 41 buffers
    np.testing.assert_allclose(evaluate(env, lambda *gs: optim.global_norm(list(gs)), *many),
                               np.sqrt(sum((g.astype(np.float64) ** 2).sum() for g in many)), rtol=1e-6)
    assert optim.clip_by_global_norm([], 1.0) == []
    with pytest.raises(ValueError, match="global_norm: needs at least one gradient"):
        optim.global_norm([])
    with pytest.raises(ValueError, match=r"clip_by_global_norm: max_norm must be a positive number, got -1.0\n  at"):
        optim.clip_by_global_norm([], -1.0)  # it flipped every gradient's sign
    with pytest.raises(dc.DTypeError, match=r"global_norm: gradients must be Arrays of the graph .*, got ndarray"):
        optim.clip_by_global_norm([a], 1.0)
    assert optim.Adam(max_grad_norm=np.float32(0.5)).max_grad_norm == 0.5
    for bad, error in ((0, ValueError), (-1.0, ValueError), ("1", TypeError), (float("nan"), ValueError),
                       (True, TypeError)):
        message = r"Adam: max_grad_norm must be a (positive )?number, got .*\n  at .*test_nn"
        with pytest.raises(error, match=message):
            optim.Adam(max_grad_norm=bad)


def test_nesterov_without_momentum_or_with_dampening_is_refused() -> None:
    for options in (dict(momentum=0.0), dict(momentum=0.9, dampening=0.1)):
        with pytest.raises(ValueError, match=r"Nesterov momentum needs momentum > 0 and no dampening\n  at .*test_nn"):
            optim.SGD(0.1, nesterov=True, **options)


def _digits():
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int32)
    order = np.random.default_rng(0).permutation(len(x))
    return x[order[:1500]], y[order[:1500]], x[order[1500:]], y[order[1500:]]


def test_mlp_learns_digits(env: dc.Environment) -> None:
    x_train, y_train, x_test, y_test = _digits()
    model = nn.Sequential(nn.Dense(64, 64), nn.ReLU(), nn.Dense(64, 10)).build(env, seed=0, name="digits")
    trainer = nn.Trainer(env, model, optimizer=optim.Adam(1e-2))
    history = trainer.fit(x_train, y_train, epochs=10, batch_size=64, progress=False,
                          validation_data=(x_test, y_test), schedule=optim.CosineLR())
    assert history[-1]["val_accuracy"] > 0.95, history[-1]
    assert history[-1]["loss"] < history[0]["loss"]
    assert np.isclose(trainer.optimizer.lr, optim.CosineLR()(1e-2, 9, 10))
    predictions = trainer.predict(x_test).argmax(1)
    assert np.isclose((predictions == y_test).mean(), history[-1]["val_accuracy"])


def test_checkpoint_round_trip_and_errors(tmp_path) -> None:
    x_train, y_train, x_test, y_test = _digits()
    env = dc.Environment()
    model = nn.Sequential(nn.Dense(64, 32), nn.ReLU(), nn.Dense(32, 10)).build(env, seed=0)
    trainer = nn.Trainer(env, model, optimizer=optim.Adam(1e-2))
    trainer.fit(x_train, y_train, epochs=1, batch_size=100, progress=False)
    path = tmp_path / "model.npz"
    trainer.save(path)
    fresh_env = dc.Environment()
    fresh = nn.Trainer(fresh_env, nn.Sequential(nn.Dense(64, 32), nn.ReLU(), nn.Dense(32, 10)).build(fresh_env, seed=9),
                       optimizer=optim.Adam(1e-2))
    fresh.load(path)
    np.testing.assert_array_equal(fresh.predict(x_test), trainer.predict(x_test))
    assert [float(fresh_env.read(counter)) for counter in fresh.optimizer.counts()[1:]] == [15.0] * 4

    original = path.read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(original[: len(original) // 2])
    before = fresh.predict(x_test)
    with pytest.raises(nn.CheckpointError, match="corrupt or truncated"):
        fresh.load(truncated)
    np.testing.assert_array_equal(fresh.predict(x_test), before)

    wrong_env = dc.Environment()
    wrong = nn.Trainer(wrong_env, nn.Sequential(nn.Dense(64, 16), nn.ReLU(), nn.Dense(16, 10)).build(wrong_env),
                       optimizer=optim.Adam(1e-2))
    with pytest.raises(nn.CheckpointError, match=r"'0.weight': checkpoint has shape \(64, 32\), the model \(64, 16\)"):
        wrong.load(path)
    with pytest.raises(nn.CheckpointError, match="does not exist"):
        wrong.load(tmp_path / "missing.npz")
    assert path.read_bytes() == original


def test_partial_last_batch_and_iterables(env: dc.Environment) -> None:
    x_train, y_train, _, _ = _digits()
    model = nn.Sequential(nn.Dense(64, 10)).build(env, name="partial")
    trainer = nn.Trainer(env, model, optimizer=optim.SGD(0.1))
    history = trainer.fit(x_train[:250], y_train[:250], batch_size=100, progress=False)
    assert len({key for key in trainer._graphs if key[0] == "train"}) == 2
    dropped = trainer.fit(x_train[:250], y_train[:250], batch_size=100, drop_last=True, progress=False)
    assert history[0]["loss"] > 0 and dropped[0]["loss"] > 0
    batches = [(x_train[k : k + 50], y_train[k : k + 50]) for k in range(0, 200, 50)]
    assert trainer.fit(batches, epochs=2, progress=False)[1]["loss"] > 0


def _small_trainer(env: dc.Environment, optimizer: optim.Optimizer | None = None):
    """A 4-feature, 3-class linear classifier with 50 examples (x, integer labels y)."""
    data = np.random.default_rng(5)
    x = data.normal(size=(50, 4)).astype(np.float32)
    y = data.integers(0, 3, 50).astype(np.int32)
    model = nn.Sequential(nn.Dense(4, 3)).build(env, seed=1, name=f"small{next(_uid)}")
    return nn.Trainer(env, model, optimizer=optimizer), x, y


def test_a_module_called_as_pytorch_s_is_told_how_to_apply_it(env: dc.Environment) -> None:
    """model(x) on numpy data said 'Module.__call__() missing 1 required positional argument: x'."""
    model = nn.Sequential(nn.Dense(4, 3)).build(env, name=f"called{next(_uid)}")
    message = r"Sequential is applied inside a graph as module\(s, x\), .*\(got ndarray\); on numpy data, "
    with pytest.raises(TypeError, match=message + r"nn.Trainer\(env, model\).predict\(x\) runs it\n  at .*test_nn"):
        model(np.zeros((2, 4), np.float32))
    with pytest.raises(TypeError, match=r"\(got Scope, ndarray, int\)"):
        env.build_graph(lambda s: model(s, np.zeros((2, 4), np.float32), 3))


def test_the_progress_bar_ends_each_epoch_with_its_metrics(env: dc.Environment, capsys) -> None:
    """The epoch's loss, accuracy and validation metrics were set on a bar tqdm had closed when the
    batches ended, so none was shown (the returned history had them)."""
    trainer, x, y = _small_trainer(env, optim.SGD(0.1))
    history = trainer.fit(x, y, batch_size=10, epochs=2, validation_data=(x, y), progress=True)
    shown = capsys.readouterr().err
    for epoch, logs in enumerate(history, 1):
        last = [line for line in shown.replace("\r", "\n").splitlines() if line.startswith(f"epoch {epoch}/2")][-1]
        assert "5/5" in last
        for name in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert f"{name}={logs[name]:.4f}" in last, (name, last)


def test_a_generator_used_up_by_the_first_epoch_is_named(env: dc.Environment) -> None:
    trainer, x, y = _small_trainer(env, optim.SGD(0.1))
    batches = ((x[k:k + 10], y[k:k + 10]) for k in range(0, 50, 10))
    with pytest.raises(ValueError, match=r"gave no batches in this epoch \(a generator is used up by the first"):
        trainer.fit(batches, epochs=2, progress=False)
    assert trainer.epochs_trained == 1


def test_modules_show_their_settings() -> None:
    shown = repr(nn.Sequential(nn.Dropout(0.3), nn.BatchNorm(2), nn.MaxPool2D(2), nn.AvgPool1D(3, 1, 1)))
    for part in ("Dropout(p=0.3)", "BatchNorm(2, eps=1e-05, momentum=0.1)", "MaxPool2D(2, stride=None, padding=0)",
                 "AvgPool1D(3, stride=1, padding=1)"):
        assert part in shown


def _weights(env: dc.Environment, trainer: nn.Trainer) -> list[np.ndarray]:
    return [env.read(p) for p in trainer.model.parameters()]


def _assert_unchanged(before: list[np.ndarray], after: list[np.ndarray]) -> None:
    for old, new in zip(before, after):
        np.testing.assert_array_equal(old, new)


def test_trainer_refuses_out_of_range_labels(env: dc.Environment) -> None:
    trainer, x, y = _small_trainer(env, optim.SGD(0.1))
    before = _weights(env, trainer)
    with pytest.raises(ValueError, match=r"fit: label y\[\d+\] = 3 is outside \[0, 3\)") as info:
        trainer.fit(x, y + 1, progress=False)
    assert "test_nn.py:" in str(info.value)
    with pytest.raises(ValueError, match=r"evaluate: label y\[\d+\] = -1 is outside \[0, 3\)"):
        trainer.evaluate(x, y - 1)
    with pytest.raises(ValueError, match=r"validation_data: label y\[\d+\] = 3 is outside \[0, 3\)"):
        trainer.fit(x, y, validation_data=(x, y + 1), progress=False)
    _assert_unchanged(before, _weights(env, trainer))
    assert trainer.evaluate(x, y)["loss"] > 0


def test_labels_are_checked_for_a_partial_cross_entropy_and_may_be_unsigned(env: dc.Environment) -> None:
    """softmax_cross_entropy wrapped in functools.partial still gets its labels checked, and uint8
    labels (as IDX files, torchvision and Keras give them) score as int32 ones do."""
    trainer, x, y = _small_trainer(env, optim.SGD(0.1))
    smoothed = nn.Trainer(env, trainer.model, loss=functools.partial(dc.softmax_cross_entropy, label_smoothing=0.1))
    with pytest.raises(ValueError, match=r"evaluate: label y\[\d+\] = 3 is outside \[0, 3\)"):
        smoothed.evaluate(x, y + 1)
    by_int32, by_uint8 = trainer.evaluate(x, y), trainer.evaluate(x, y.astype(np.uint8))
    assert by_uint8 == pytest.approx(by_int32, rel=1e-6)
    assert np.isclose(by_uint8["accuracy"], (trainer.predict(x).argmax(1) == y).mean())


def test_fit_checks_validation_data_before_training(env: dc.Environment) -> None:
    trainer, x, y = _small_trainer(env, optim.SGD(0.1))
    before = _weights(env, trainer)
    with pytest.raises(ValueError, match="validation_data: x has 50 examples but y has 49") as info:
        trainer.fit(x, y, validation_data=(x, y[:-1]), progress=False)
    assert "test_nn.py:" in str(info.value)
    _assert_unchanged(before, _weights(env, trainer))


def test_trainer_takes_one_hot_labels(env: dc.Environment) -> None:
    trainer, x, y = _small_trainer(env, optim.SGD(0.1))
    one_hot = np.eye(3, dtype=np.float32)[y]
    history = trainer.fit(x, one_hot, batch_size=25, progress=False)
    assert history[0]["loss"] > 0
    by_index, by_one_hot = trainer.evaluate(x, y), trainer.evaluate(x, one_hot)
    assert by_one_hot["accuracy"] == by_index["accuracy"]
    assert np.isclose(by_one_hot["accuracy"], (trainer.predict(x).argmax(1) == y).mean())
    assert np.isclose(by_one_hot["loss"], by_index["loss"], rtol=1e-5)


def test_trainer_input_validation(env: dc.Environment) -> None:
    trainer, x, y = _small_trainer(env, optim.SGD(0.1))
    before = _weights(env, trainer)
    for batch_size in (0, -1):
        with pytest.raises(ValueError, match=f"fit: batch_size must be at least 1, got {batch_size}"):
            trainer.fit(x, y, batch_size=batch_size, progress=False)
        with pytest.raises(ValueError, match="evaluate: batch_size must be at least 1"):
            trainer.evaluate(x, y, batch_size=batch_size)
        with pytest.raises(ValueError, match="predict: batch_size must be at least 1"):
            trainer.predict(x, batch_size=batch_size)
    with pytest.raises(TypeError, match=r"fit: batch_size must be an int, got 32\.0"):
        trainer.fit(x, y, batch_size=32.0, progress=False)
    with pytest.raises(TypeError, match=r"fit: initial_epoch must be an int, got 1\.0"):
        trainer.fit(x, y, epochs=3, initial_epoch=1.0, progress=False)
    with pytest.raises(TypeError, match=r"fit: schedule must be .*; got StepLR\(...\), not the class\n  at"):
        trainer.fit(x, y, schedule=optim.StepLR, progress=False)  # "takes from 2 to 3 positional arguments"
    with pytest.raises(TypeError, match=r"fit: schedule must be .*; got 0\.1"):
        trainer.fit(x, y, schedule=0.1, progress=False)

    def diverging(initial: float, epoch: int, epochs: int) -> float:
        return float("nan")

    with pytest.raises(ValueError, match=r"fit: schedule diverging's rate for epoch 0 must be a finite number "
                                         r"of at least 0, got nan\n  at .*test_nn"):  # was named as Adam's lr
        trainer.fit(x, y, schedule=diverging, progress=False)
    with pytest.raises(TypeError, match=r"fit: schedule <lambda>'s rate for epoch 0 must be a number, got '0\.1'"):
        trainer.fit(x, y, schedule=lambda initial, epoch, epochs: "0.1", progress=False)
    with pytest.raises(ValueError, match="fit: x and y hold no examples"):
        trainer.fit(x[:0], y[:0], progress=False)
    with pytest.raises(ValueError, match="evaluate: x and y hold no examples"):
        trainer.evaluate(x[:0], y[:0])
    with pytest.raises(ValueError, match="fit: y is needed when x is an array") as info:
        trainer.fit(x, progress=False)
    assert "test_nn.py:" in str(info.value)
    with pytest.raises(ValueError, match="fit: epochs .* must be an integer of at least 1, got 1.5"):
        trainer.fit(x, y, epochs=1.5, progress=False)
    with pytest.raises(ValueError, match=r"fit: y must hold numbers, not <U\d+"):
        trainer.fit(x, y.astype(str), progress=False)
    with pytest.raises(dc.GraphError, match=r"Sequential: part 1 is <function .*, not a Module .*\n  at .*test_nn"):
        nn.Sequential(nn.ReLU(), lambda s, a: a)
    _assert_unchanged(before, _weights(env, trainer))
    normed = nn.Sequential(nn.Dense(4, 8), nn.BatchNorm(8), nn.Dense(8, 3)).build(env, name=f"normed{next(_uid)}")
    normed_trainer = nn.Trainer(env, normed, optimizer=optim.SGD(0.1))
    normed_before = _weights(env, normed_trainer)
    with pytest.raises(dc.ShapeError, match="BatchNorm: training needs more than one value per channel"):
        normed_trainer.fit(np.concatenate([x, x[:1]]), np.concatenate([y, y[:1]]), batch_size=25, progress=False)
    _assert_unchanged(normed_before, _weights(env, normed_trainer))  # refused before the first step, not after two
    assert normed_trainer.evaluate(x, y)["loss"] > 0
    empty = trainer.predict(x[:0])
    assert empty.shape == (0, 3) and empty.dtype == np.float32
    assert trainer.evaluate(x.tolist(), y.tolist()) == trainer.evaluate(x, y)
    assert trainer.fit(x.tolist(), y.tolist(), progress=False)[0]["loss"] > 0
    np.testing.assert_array_equal(trainer.predict(x.tolist()), trainer.predict(x))


class _ArgMax(nn.Module):
    def forward(self, s: dc.Scope, x: dc.Array) -> dc.Array:
        return dc.argmax(x, 1)


def test_predict_keeps_an_integer_output_type(env: dc.Environment) -> None:
    """A model ending in argmax predicts int32 classes, as its graph computes them (it gave float32)."""
    model = nn.Sequential(nn.Dense(4, 3), _ArgMax()).build(env, name=f"classes{next(_uid)}")
    trainer = nn.Trainer(env, model)
    x = rng.normal(size=(5, 4)).astype(np.float32)
    classes = trainer.predict(x)
    assert classes.dtype == np.int32 and trainer.predict(x[:0]).dtype == np.int32
    weight, bias = (env.read(p) for p in model.parameters())
    np.testing.assert_array_equal(classes, (x @ weight + bias).argmax(1))


def test_trainer_and_checkpoint_errors_name_the_user_line(env: dc.Environment, tmp_path) -> None:
    trainer, x, y = _small_trainer(env)
    with pytest.raises(ValueError, match=r"Trainer.fit needs an optimizer(.|\n)*test_nn\.py:\d+"):
        trainer.fit(x, y, progress=False)
    with pytest.raises(ValueError, match=r"evaluate: x has 50 examples but y has 49\n  at .*test_nn\.py:\d+"):
        trainer.evaluate(x, y[:-1])
    with pytest.raises(nn.CheckpointError, match=r"does not exist\n  at .*test_nn\.py:\d+"):
        trainer.load(tmp_path / "missing.npz")
    (tmp_path / "notes.npz").write_text("a text file")  # numpy's message offered allow_pickle, which descent has not
    with pytest.raises(nn.CheckpointError, match=r"notes.npz is not an .npz archive \(it starts with b'a text'\); "
                                                 r"it was not loaded(.|\n)*test_nn\.py:\d+"):
        trainer.load(tmp_path / "notes.npz")
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(nn.CheckpointError, match=r"corrupt or truncated(.|\n)*test_nn\.py:\d+"):
        trainer.load(tmp_path / "broken.npz")
    np.savez(tmp_path / "other.npz", unrelated=np.zeros(2, np.float32))
    with pytest.raises(nn.CheckpointError, match=r"does not fit(.|\n)*\n  at .*test_nn\.py:\d+"):
        trainer.load(tmp_path / "other.npz")


def test_trainer_refuses_a_model_it_cannot_train(env: dc.Environment) -> None:
    unbuilt = nn.Sequential(nn.Dense(2, 2))
    adam = optim.Adam(0.1)
    with pytest.raises(dc.GraphError, match=r"the model is not built \(its Dense has no parameters yet\): call "
                                            r"model.build\(env\) before making its Trainer\n  at .*test_nn"):
        nn.Trainer(env, unbuilt, loss=dc.mse, optimizer=adam)  # it died in fit with KeyError: 'adam.m.0.weight'
    nn.Trainer(env, unbuilt.build(env, name=f"late{next(_uid)}"), loss=dc.mse, optimizer=adam)  # adam is unused
    other = nn.Sequential(nn.Dense(2, 2)).build(dc.Environment())
    with pytest.raises(dc.GraphError, match="the model was built in another Environment than the Trainer's env"):
        nn.Trainer(env, other, loss=dc.mse)


def test_a_checkpoint_with_damaged_zip_fields_or_a_bad_path_is_a_checkpoint_error(env: dc.Environment,
                                                                                    tmp_path) -> None:
    """zipfile's NotImplementedError (an unknown compression method) came through load unwrapped, past a
    user's `except CheckpointError`; so did TypeError for None and OSError for an over-long name."""
    trainer, x, y = _small_trainer(env, optim.Adam(0.01))
    trainer.save(tmp_path / "run.npz")
    data = bytearray((tmp_path / "run.npz").read_bytes())
    central = data.rfind(b"PK\x01\x02")
    data[central + 10] ^= 0x55  # the compression method of the last member
    (tmp_path / "damaged.npz").write_bytes(bytes(data))
    before = _weights(env, trainer)
    with pytest.raises(nn.CheckpointError, match=r"damaged.npz is corrupt or truncated \(NotImplementedError: "
                                                 r".*\); it was not loaded and the parameters are unchanged\n  at "):
        trainer.load(tmp_path / "damaged.npz")
    _assert_unchanged(before, _weights(env, trainer))
    with pytest.raises(TypeError, match=r"cannot load a checkpoint from None: give a file path \(str or os.PathLike\)"
                                        r"\n  at .*test_nn.py"):
        trainer.load(None)
    with pytest.raises(nn.CheckpointError, match=r"cannot save a checkpoint to '.*x{300}.npz': File name too long"):
        trainer.save(tmp_path / ("x" * 300 + ".npz"))
    with pytest.raises(nn.CheckpointError, match=r"cannot load a checkpoint from '.*a\\x00b.npz': a file name cannot "
                                                 r"hold a NUL character"):  # was "does not exist"
        trainer.load(tmp_path / "a\0b.npz")


def test_model_only_is_suggested_only_where_it_would_load(env: dc.Environment, tmp_path) -> None:
    """The hint to load with model_only showed where a model parameter itself did not fit, which
    model_only cannot help."""
    trainer, x, y = _small_trainer(env, optim.Adam(0.01))
    wider = nn.Trainer(env, nn.Sequential(nn.Dense(5, 3)).build(env, name=f"wider{next(_uid)}"), optimizer=optim.SGD())
    wider.save(tmp_path / "wider.npz")
    with pytest.raises(nn.CheckpointError) as info:
        trainer.load(tmp_path / "wider.npz")
    assert "checkpoint has shape (5, 3), the model (4, 3)" in str(info.value) and "model_only=" not in str(info.value)


def test_checkpoint_errors_say_each_thing_once_and_point_to_model_only(env: dc.Environment, tmp_path) -> None:
    trainer, x, y = _small_trainer(env, optim.Adam(0.01))
    (tmp_path / "notes.npz").write_text("a text file")
    with pytest.raises(nn.CheckpointError) as info:
        trainer.load(tmp_path / "notes.npz")
    assert str(info.value).count("not loaded") == 1 and "corrupt" not in str(info.value)  # it was wrapped twice
    np.savez(tmp_path / "empty.npz")  # a valid archive of nothing: its entries are missing, it is not "not an .npz"
    with pytest.raises(nn.CheckpointError, match=r"does not fit:\n  missing from the checkpoint: '0.bias'"):
        trainer.load(tmp_path / "empty.npz")
    weights_only, _, _ = _small_trainer(env)
    weights_only.save(tmp_path / "weights.npz")
    with pytest.raises(nn.CheckpointError, match=r"missing from the checkpoint: 'adam.lr'(.|\n)*"
                                                 r"\(Trainer.load\(path, model_only=True\) restores only"):
        trainer.load(tmp_path / "weights.npz")
    trainer.load(tmp_path / "weights.npz", model_only=True)


def test_a_model_part_named_as_the_optimiser_state_is_refused_not_dropped(env: dc.Environment, tmp_path) -> None:
    class Scaled(nn.Module):
        def create(self, env: dc.Environment, rng: np.random.Generator) -> None:
            self.parameter(env, "lr", np.full((2,), 5.0, np.float32))

        def forward(self, s: dc.Scope, x: dc.Array) -> dc.Array:
            return x * s.read(self.lr)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.add("adam", Scaled())

        def forward(self, s: dc.Scope, x: dc.Array) -> dc.Array:
            return self._children["adam"](s, x)

    model = Net().build(env, name=f"clash{next(_uid)}")
    trainer = nn.Trainer(env, model, loss=dc.mse, optimizer=optim.Adam(0.01))
    with pytest.raises(dc.GraphError, match=r"the model's \['adam.lr'\] would be saved under the same name\(s\) as "
                                            r"the optimiser's state; rename the part of the model called 'adam'"):
        trainer.save(tmp_path / "clash.npz")  # adam.lr, a (2,) parameter, was overwritten by the learning rate
    assert not (tmp_path / "clash.npz").exists()


def test_checkpoint_mode_npy_and_directory(env: dc.Environment, tmp_path) -> None:
    trainer, x, _ = _small_trainer(env)
    old_umask = os.umask(0o027)
    try:
        trainer.save(tmp_path / "model.npz")
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE((tmp_path / "model.npz").stat().st_mode) == 0o640
    np.save(tmp_path / "array.npy", x)
    with pytest.raises(nn.CheckpointError, match=r"array\.npy is not a checkpoint \(\.npz archive\)") as info:
        trainer.load(tmp_path / "array.npy")
    assert "test_nn.py:" in str(info.value)
    directory = tmp_path / "runs"
    directory.mkdir()
    (directory / "notes.txt").write_text("keep")
    listing = sorted(os.listdir(tmp_path))
    with pytest.raises(nn.CheckpointError, match="runs: it is a directory") as info:
        trainer.save(directory)
    assert "test_nn.py:" in str(info.value)
    assert sorted(os.listdir(tmp_path)) == listing and os.listdir(directory) == ["notes.txt"]
    assert (directory / "notes.txt").read_text() == "keep"


def test_checkpoints_with_foreign_members_or_bad_counts_load_nothing(env: dc.Environment, tmp_path) -> None:
    """A text member added to the archive, a plain zip, trainer counts that are not two integers of at
    least 0, or a learning rate (the optimiser's or the one a schedule starts from) that is NaN or
    negative: a CheckpointError, and nothing written (the counts were
    unpacked after the parameters were; the rate was loaded and trained to NaN)."""
    trainer, x, y = _small_trainer(env, optim.SGD(0.1))
    trainer.fit(x, y, progress=False)
    good = tmp_path / "good.npz"
    trainer.save(good)
    with zipfile.ZipFile(tmp_path / "notes.npz", "w") as archive:
        for member in zipfile.ZipFile(good).namelist():
            archive.writestr(member, zipfile.ZipFile(good).read(member))
        archive.writestr("notes.txt", "trained on Tuesday")
    with zipfile.ZipFile(tmp_path / "plain.zip", "w") as archive:
        archive.writestr("readme.txt", "not a model")
    stored = dict(np.load(good))
    np.savez(tmp_path / "counts.npz", **{**stored, "__trainer_epochs_and_steps__": np.array([5])})
    np.savez(tmp_path / "rate.npz", **{**stored, "__trainer_initial_lr__": np.array(np.nan)})
    np.savez(tmp_path / "lr.npz", **{**stored, "sgd.lr": np.array(np.nan, np.float32)})
    np.savez(tmp_path / "negative.npz", **{**stored, "sgd.lr": np.array(-0.1, np.float32)})
    np.savez(tmp_path / "back.npz", **{**stored, "__trainer_epochs_and_steps__": np.array([-3, 5])})
    np.savez(tmp_path / "below.npz", **{**stored, "__trainer_initial_lr__": np.array(-0.01)})
    saved = _weights(env, trainer)
    trainer.fit(x, y, progress=False)
    before = _weights(env, trainer)
    for name, message in (("notes.npz", r"member\(s\) \['notes.txt'\] are not arrays"),
                          ("plain.zip", r"member\(s\) \['readme.txt'\] are not arrays"),
                          ("counts.npz", r"'__trainer_epochs_and_steps__': checkpoint has int64 of shape \(1,\)"),
                          ("rate.npz", r"'__trainer_initial_lr__': checkpoint has float64 of shape \(\) \(nan\), "
                                       r"not finite numbers of at least 0 of shape \(\)"),
                          ("back.npz", r"'__trainer_epochs_and_steps__': checkpoint has int64 of shape \(2,\) "
                                       r"\(\[-3  5\]\), not integers of at least 0"),  # fit then failed inside numpy
                          ("below.npz", r"'__trainer_initial_lr__': checkpoint has float64 of shape \(\) "
                                        r"\(-0.01\), not finite numbers of at least 0"),
                          ("lr.npz", r"'sgd.lr': checkpoint has nan, not a finite number of at least 0"),
                          ("negative.npz", r"'sgd.lr': checkpoint has -0.1, not a finite number of at least 0")):
        with pytest.raises(nn.CheckpointError, match=message):
            trainer.load(tmp_path / name, model_only=name == "plain.zip")
        _assert_unchanged(before, _weights(env, trainer))
    trainer.load(tmp_path / "counts.npz", model_only=True)
    _assert_unchanged(saved, _weights(env, trainer))
    inference = nn.Trainer(env, trainer.model)
    with pytest.raises(nn.CheckpointError, match=r"not in the model: 'sgd.*\n.*model_only=True"):
        inference.load(good)


def test_optimiser_rate_before_a_trainer_and_one_optimiser_per_trainer(env: dc.Environment) -> None:
    """set_lr before a Trainer builds the optimiser sets the rate it starts with (it raised
    AttributeError); a second Trainer may not take over an optimiser the first one keeps using."""
    sgd = optim.SGD(0.1)
    sgd.set_lr(0.02)
    assert sgd.lr == pytest.approx(0.02)
    trainer, x, y = _small_trainer(env, sgd)
    assert sgd.lr == pytest.approx(0.02)
    with pytest.raises(dc.GraphError, match=r"SGD: this optimiser already holds the state.*\n  at .*test_nn"):
        _small_trainer(env, sgd)
    assert trainer.fit(x, y, progress=False)[0]["loss"] > 0


def test_checkpoint_of_a_second_trainer_loads_into_a_fresh_script(tmp_path) -> None:
    """Optimiser state is saved by names that do not count the optimisers built before it."""
    x_train, y_train, x_test, _ = _digits()
    env = dc.Environment()
    for name in ("small", "big"):
        model = nn.Sequential(nn.Dense(64, 10)).build(env, name=name, seed=0)
        trainer = nn.Trainer(env, model, optimizer=optim.Adam(1e-2))
        trainer.fit(x_train[:200], y_train[:200], batch_size=100, progress=False)
    assert trainer.optimizer.lr_parameter.name == "adam2.lr"
    trainer.save(tmp_path / "big.npz")
    fresh_env = dc.Environment()
    fresh = nn.Trainer(fresh_env, nn.Sequential(nn.Dense(64, 10)).build(fresh_env, name="big", seed=5),
                       optimizer=optim.Adam(1e-2))
    fresh.load(tmp_path / "big.npz")
    np.testing.assert_array_equal(fresh.predict(x_test), trainer.predict(x_test))
    assert [float(fresh_env.read(counter)) for counter in fresh.optimizer.counts()[1:]] == [2.0] * 2


def test_a_checkpoint_loads_into_the_model_built_under_another_name(tmp_path) -> None:
    """Checkpoint keys are relative to the model (`0.weight`, `adam.m.0.weight`), as a state_dict's:
    a model saved unnamed loads, optimiser state included, into one built as `b` (missing 'b.0.weight')."""
    x_train, y_train, x_test, _ = _digits()
    env = dc.Environment()
    trainer = nn.Trainer(env, nn.Sequential(nn.Dense(64, 10)).build(env, seed=0), optimizer=optim.Adam(1e-2))
    trainer.fit(x_train[:200], y_train[:200], batch_size=100, progress=False)
    trainer.save(tmp_path / "plain.npz")
    with np.load(tmp_path / "plain.npz") as archive:
        assert {"0.weight", "0.bias", "adam.m.0.weight", "adam.v.0.bias", "adam.lr"} <= set(archive.files)
    named = nn.Trainer(env, nn.Sequential(nn.Dense(64, 10)).build(env, seed=1, name="b"), optimizer=optim.Adam(1e-2))
    named.load(tmp_path / "plain.npz")
    np.testing.assert_array_equal(named.predict(x_test), trainer.predict(x_test))
    np.testing.assert_array_equal(env.read(named.optimizer.state_of("m", named.model.parameters()[0])),
                                  env.read(trainer.optimizer.state_of("m", trainer.model.parameters()[0])))


def test_a_checkpoint_of_a_model_with_a_reused_part_holds_every_parameter(tmp_path) -> None:
    """A built encoder placed in a new model keeps its Environment names (`0.weight`), which clashed with
    the outer model's own `sequential.0.weight` made relative: the checkpoint held 4 of 6 parameters.
    Keys are the paths in the model, so it also loads into the architecture built from scratch."""
    x_train, y_train, x_test, _ = _digits()
    env = dc.Environment()
    encoder = nn.Sequential(nn.Dense(64, 16), nn.ReLU()).build(env, seed=0)
    model = nn.Sequential(nn.Dense(64, 64), encoder, nn.Dense(16, 10)).build(env, seed=0)
    trainer = nn.Trainer(env, model, optimizer=optim.Adam(1e-2))
    trainer.fit(x_train[:200], y_train[:200], batch_size=100, progress=False)
    trainer.save(tmp_path / "reused.npz")
    with np.load(tmp_path / "reused.npz") as archive:
        assert {"0.weight", "0.bias", "1.0.weight", "1.0.bias", "2.weight", "2.bias", "adam.m.1.0.weight"} <= set(
            archive.files)
    fresh_env = dc.Environment()
    fresh = nn.Sequential(nn.Dense(64, 64), nn.Sequential(nn.Dense(64, 16), nn.ReLU()), nn.Dense(16, 10))
    loaded = nn.Trainer(fresh_env, fresh.build(fresh_env, seed=3), optimizer=optim.Adam(1e-2))
    loaded.load(tmp_path / "reused.npz")
    np.testing.assert_array_equal(loaded.predict(x_test), trainer.predict(x_test))


def test_a_second_unnamed_model_gets_a_name_and_a_failed_build_leaves_nothing(env: dc.Environment) -> None:
    """Two unnamed models in one Environment clashed ('0.weight' already exists) and left the second
    half-built, so that even build(name=...) was refused as 'already built'."""
    first = nn.Sequential(nn.Dense(4, 3)).build(env)
    second = nn.Sequential(nn.Dense(3, 4)).build(env)
    assert [name for name, _ in first.named_parameters()] == ["0.weight", "0.bias"]
    assert [name for name, _ in second.named_parameters()] == ["sequential.0.weight", "sequential.0.bias"]
    lone = [nn.Dense(2, 2).build(env), nn.Dense(2, 2).build(env)]
    assert [p.name for p in lone[1].parameters()] == [f"{lone[1].name}.weight", f"{lone[1].name}.bias"]
    assert lone[1].name.startswith("dense") and lone[0].parameters() != lone[1].parameters()
    third = nn.Sequential(nn.Dense(2, 2), nn.Dense(2, 5))
    before = set(env.parameters)
    with pytest.raises(dc.GraphError, match=r"parameter 'sequential.0.weight' already exists.*\n  at .*test_nn"):
        third.build(env, name="sequential")
    assert set(env.parameters) == before and not third.parameters()
    assert [p.shape for p in third.build(env, name="third").parameters()] == [(2, 2), (2,), (2, 5), (5,)]


@pytest.mark.parametrize("make, message", [
    (lambda: optim.Adam(lr=float("nan")), r"Adam: lr must be a finite number of at least 0, got nan"),
    (lambda: optim.AdamW(lr=-0.01), r"AdamW: lr must be a finite number of at least 0, got -0.01"),
    (lambda: optim.Adam(eps=-1), r"Adam: eps must be"),
    (lambda: optim.Adam(betas=(1.0, 0.999)), r"Adam: betas\[0\] must be a number in \[0, 1\), got 1.0"),
    (lambda: optim.Adam(betas=(0.9,)), r"Adam: betas must be a pair, got \(0.9,\)"),
    (lambda: optim.SGD(momentum=-0.5), r"SGD: momentum must be"),
    (lambda: optim.SGD(0.1, momentum=0.9, dampening=2.0), r"SGD: dampening must be a number in \[0, 1\], got 2.0"),
    (lambda: optim.Adam(iter([])),  # PyTorch's Adam(model.parameters())
     r"Adam: the first argument is the learning rate; a Trainer hands the optimiser the model's parameters"),
    (lambda: optim.SGD([], lr=0.1),  # it was Python's "got multiple values for argument 'lr'"
     r"SGD: the first argument is the learning rate; a Trainer hands the optimiser the model's parameters"),
    (lambda: optim.SGD(weight_decay=float("inf")), r"SGD: weight_decay must be"),
    (lambda: optim.Adagrad(lr_decay=-1), r"Adagrad: lr_decay must be"),
    (lambda: optim.SGD().set_lr(float("nan")), r"SGD: lr must be"),
], ids=["nan lr", "negative lr", "eps", "beta 1", "one beta", "momentum", "dampening above 1",
        "parameters as lr", "parameters and lr", "decay", "lr_decay", "set_lr"])
def test_optimiser_hyperparameters_are_checked(make, message: str) -> None:
    """As torch.optim's: Adam(lr=nan) trained to NaN and SGD(momentum=-0.5) uphill, silently."""
    with pytest.raises(ValueError, match=message + r".*\n  at .*test_nn"):
        make()


@pytest.mark.parametrize("make, message", [
    (lambda: optim.SGD(0.1, momentum="x", nesterov=True), r"SGD: momentum must be a number, got 'x'"),
    (lambda: optim.SGD(0.1, momentum=0.9, dampening="x"), r"SGD: dampening must be a number, got 'x'"),
    (lambda: optim.RMSprop(alpha="0.9"), r"RMSprop: alpha must be a number, got '0.9'"),
    (lambda: optim.Adam(betas=(0.9, None)), r"Adam: betas\[1\] must be a number, got None"),
], ids=["momentum before nesterov", "dampening text", "alpha", "beta None"])
def test_optimiser_hyperparameters_that_are_not_numbers_are_type_errors(make, message: str) -> None:
    """As torch.optim's (a TypeError from its comparison); they were ValueErrors."""
    with pytest.raises(TypeError, match=message + r"\n  at .*test_nn"):
        make()


def test_optimisers_take_betas_as_numpy_and_train_float_parameters_only(env: dc.Environment) -> None:
    """Adam took betas as a tuple or list only, and an int32 parameter given to build was updated
    with truncation (Adam(1.0) turned [5, 5, 5] into [3, 5, 4]); torch never steps an int tensor."""
    assert optim.Adam(betas=np.array([0.8, 0.99])).betas == (0.8, 0.99)
    with pytest.raises(ValueError, match=r"Adam: betas must be a pair"):
        optim.Adam(betas=np.array([[0.8, 0.99]]))
    counts = env.parameter("opt_counts", (3,), "int32", init=np.array([5, 5, 5], np.int32))
    weight = env.parameter("opt_weight", (3,))
    adam = optim.Adam(1.0)
    with pytest.raises(TypeError, match=r"Adam.build: parameter\(s\) \['opt_counts'\] are not float32; an "
                                        r"optimiser trains float parameters only\n  at .*test_nn"):
        adam.build(env, [weight, counts])
    adam.build(env, [weight])  # the refused build left it unbuilt
    assert adam.built_for == [weight]


@pytest.mark.parametrize("make, make_torch", [
    (lambda: optim.Adam(0.1), lambda p: torch.optim.Adam(p, 0.1)),
    (lambda: optim.AdamW(0.1), lambda p: torch.optim.AdamW(p, 0.1)),
    (lambda: optim.SGD(0.1, momentum=0.9, dampening=0.5),
     lambda p: torch.optim.SGD(p, 0.1, momentum=0.9, dampening=0.5)),
    (lambda: optim.Adagrad(0.1, lr_decay=0.5), lambda p: torch.optim.Adagrad(p, 0.1, lr_decay=0.5)),
], ids=["adam", "adamw", "sgd dampening", "adagrad lr_decay"])
def test_each_parameter_counts_its_own_steps_as_pytorch(env: dc.Environment, make, make_torch) -> None:
    """One optimiser, two graphs: one updates w1 and w2, the other w1 alone (w2's .grad is None in
    torch). Run three of the second, then the first: w2's first update is its step 1, as torch's. With
    one counter for the optimiser, Adam moved w2 by 0.058 where torch moves it by lr, 0.1."""
    start1, start2 = np.float32([1.0, -2.0]), np.float32([0.5, 3.0])
    gradient1, gradient2 = np.float32([0.3, -0.1]), np.float32([0.2, 0.4])
    uid = next(_uid)
    w1 = env.parameter(f"steps{uid}.w1", (2,), init=start1)
    w2 = env.parameter(f"steps{uid}.w2", (2,), init=start2)
    optimiser = make()
    optimiser.build(env, [w1, w2])
    both = env.build_graph(lambda s: optimiser.update(s, [w1, w2], [s.read(w1), s.read(w2)],
                                                      [s.constant(gradient1), s.constant(gradient2)]))
    first_only = env.build_graph(lambda s: optimiser.update(s, [w1], [s.read(w1)], [s.constant(gradient1)]))
    t1, t2 = torch.tensor(start1, requires_grad=True), torch.tensor(start2, requires_grad=True)
    reference = make_torch([t1, t2])
    for graph in (first_only, first_only, first_only, both, both):
        env.run(graph)
        t1.grad, t2.grad = torch.tensor(gradient1), torch.tensor(gradient2) if graph is both else None
        reference.step()
    np.testing.assert_allclose(env.read(w1), t1.detach().numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(env.read(w2), t2.detach().numpy(), rtol=1e-6, atol=1e-7)


def test_step_counters_are_written_in_place_by_one_kernel(env: dc.Environment) -> None:
    """The updates read each counter's new value from the kernel that writes it: recomputed in each
    update from the old value, every counter was staged and copied after the run (4 copies a step)."""
    model = nn.Sequential(nn.Dense(6, 5), nn.ReLU(), nn.Dense(5, 3)).build(env, name=f"counted{next(_uid)}", seed=0)
    for optimiser in (optim.Adam(1e-2), optim.SGD(0.1, momentum=0.9, dampening=0.5), optim.Adagrad(lr_decay=0.1)):
        trainer = nn.Trainer(env, model, optimizer=optimiser)
        graph, *_ = trainer._graph("train", np.ones((4, 6), np.float32), np.zeros(4, np.int32))
        assert not [copy.target for copy in graph.schedule.copies if ".step." in copy.target]
        assert sum(any(".step." in name for name in source.writes) for source in graph.sources) == 1


def test_a_checkpoint_with_one_step_counter_for_all_parameters_still_loads(env: dc.Environment, tmp_path) -> None:
    """Checkpoints written while an optimiser kept one step counter (`adam.step`) load into each
    parameter's counter."""
    model = nn.Sequential(nn.Dense(3, 2)).build(env, name=f"old{next(_uid)}", seed=0)
    trainer = nn.Trainer(env, model, optimizer=optim.Adam(1e-2))
    x, y = np.ones((4, 3), np.float32), np.zeros(4, np.int32)
    trainer.fit(x, y, batch_size=4, progress=False)
    trainer.save(tmp_path / "new.npz")
    with np.load(tmp_path / "new.npz") as stored:
        arrays = {name: stored[name] for name in stored.files}
    assert sorted(name for name in arrays if ".step" in name) == ["adam.step.0.bias", "adam.step.0.weight"]
    old = {name: value for name, value in arrays.items() if ".step" not in name} | {"adam.step": np.float32(7)}
    np.savez(tmp_path / "old.npz", **old)
    trainer.load(tmp_path / "old.npz")
    assert [float(env.read(counter)) for counter in trainer.optimizer.counts()[1:]] == [7.0, 7.0]
    np.savez(tmp_path / "mixed.npz", **old, **{"adam.step.0.weight": np.float32(3)})
    trainer.load(tmp_path / "mixed.npz")  # an entry of its own is kept
    assert [float(env.read(counter)) for counter in trainer.optimizer.counts()[1:]] == [3.0, 7.0]
    np.savez(tmp_path / "negative.npz", **(old | {"adam.step": np.float32(-1)}))
    with pytest.raises(nn.CheckpointError, match=r"fit:\n  'adam.step': checkpoint has -1, not a finite number "
                                                 r"of at least 0\n  \(Trainer.load\(path, model_only=True\)"):
        trainer.load(tmp_path / "negative.npz")
    trainer.load(tmp_path / "negative.npz", model_only=True)  # optimiser state is what model_only leaves out


def test_optimiser_defaults_are_pytorch_s() -> None:
    for ours, theirs in ((optim.SGD, torch.optim.SGD), (optim.Adam, torch.optim.Adam), (optim.AdamW, torch.optim.AdamW),
                         (optim.RMSprop, torch.optim.RMSprop), (optim.Adagrad, torch.optim.Adagrad)):
        defaults = {name: p.default for name, p in inspect.signature(theirs).parameters.items()}
        for name, parameter in inspect.signature(ours).parameters.items():
            if name in defaults and name != "max_grad_norm":
                assert parameter.default == defaults[name], (ours.__name__, name)  # SGD's lr was 0.01, not 1e-3
        order = [name for name in inspect.signature(ours).parameters if name != "max_grad_norm"]
        assert order == list(defaults)[1:len(order) + 1], ours.__name__  # SGD(0.1, 0.9, 0.5) took 0.5 as nesterov


def test_batch_norm_takes_pytorch_s_argument_order(env: dc.Environment) -> None:
    """BatchNorm took momentum before eps, so BatchNorm(3, 1e-3) ported from PyTorch set the momentum to
    1e-3 without an error, and its running statistics barely moved."""
    ours, theirs = nn.BatchNorm(3, 1e-3, 0.2), torch.nn.BatchNorm1d(3, 1e-3, 0.2)
    assert (ours.eps, ours.momentum) == (theirs.eps, theirs.momentum) == (1e-3, 0.2)
    assert repr(nn.BatchNorm(3)) == "BatchNorm(3, eps=1e-05, momentum=0.1)"


def test_optimiser_switches_take_only_bools() -> None:
    for make, name in ((lambda v: optim.Adam(amsgrad=v), "Adam: amsgrad"),
                       (lambda v: optim.RMSprop(centered=v), "RMSprop: centered"),
                       (lambda v: optim.SGD(0.1, momentum=0.9, nesterov=v), "SGD: nesterov")):
        with pytest.raises(TypeError, match=f"{name} must be True or False, got 'no'" + r"\n  at .*test_nn"):
            make("no")  # it switched AMSGrad and centring on
        assert make(np.True_) is not None and make(False) is not None
    assert optim.Adam(amsgrad=np.True_).amsgrad is True


def test_trainer_arguments_and_seeds(env: dc.Environment, tmp_path) -> None:
    """Misused Trainer arguments are named (they were an AttributeError on None, 'str' object is not
    callable, Adam.build() missing an argument); negative seeds work as torch.manual_seed(-1) does;
    a checkpoint's folder must exist (it was made silently) and OS errors name the target."""
    model = nn.Sequential(nn.Dense(4, 2)).build(env, seed=-1, name="argued")
    for bad, message in [(dict(env=None), "env must be a descent Environment, got None"),
                         (dict(model=lambda s, x: x), "model must be a descent.nn Module"),
                         (dict(loss="mse"), "loss must be a function such as dc.mse, got 'mse'"),
                         (dict(optimizer=optim.Adam), r"optimizer must be an instance, such as Adam\(\)"),
                         (dict(optimizer="adam"), "optimizer must be a descent.optim optimiser")]:
        arguments = dict(env=env, model=model, loss=dc.mse, optimizer=None) | bad
        with pytest.raises(TypeError, match=f"Trainer: {message}.*\n  at .*test_nn"):
            nn.Trainer(**arguments)
    trainer = nn.Trainer(env, model, loss=dc.mse, optimizer=optim.SGD(0.1))
    x, y = rng.normal(size=(6, 4)).astype(np.float32), rng.normal(size=(6, 2)).astype(np.float32)
    trainer.fit(x, y, batch_size=3, seed=-1, progress=False)
    with pytest.raises(TypeError, match=r"fit: seed must be an int, got 1.5\n  at .*test_nn"):  # it trained with 1
        trainer.fit(x, y, batch_size=3, seed=1.5, progress=False)
    with pytest.raises(TypeError, match=r"Dense.build: seed must be an int, got '1'\n  at .*test_nn"):  # int('1')
        nn.Dense(4, 2).build(env, seed="1")
    minus_one, wrapped = (nn.Dense(4, 2).build(env, seed=seed, name=f"seeded{seed}") for seed in (-1, 2**64 - 1))
    assert all(np.array_equal(env.read(p), env.read(q)) for p, q in zip(minus_one.parameters(), wrapped.parameters()))
    with pytest.raises(nn.CheckpointError, match=r"the folder .*typo does not exist.*\n  at .*test_nn"):
        trainer.save(tmp_path / "typo" / "model.npz")
    assert not (tmp_path / "typo").exists()


def test_cross_entropy_with_options_still_reports_accuracy(env: dc.Environment) -> None:
    x_train, y_train, _, _ = _digits()
    model = nn.Sequential(nn.Dense(64, 10)).build(env, name="smoothed", seed=0)
    loss = functools.partial(dc.softmax_cross_entropy, label_smoothing=0.1)
    logs = nn.Trainer(env, model, loss=loss, optimizer=optim.Adam(1e-2)).fit(
        x_train[:500], y_train[:500], epochs=2, batch_size=100, progress=False)
    assert logs[-1]["accuracy"] > 0.5


def _resumable(env: dc.Environment, lr: float = 1e-2) -> nn.Trainer:
    model = nn.Sequential(nn.Dense(64, 32), nn.ReLU(), nn.Dropout(0.3), nn.Dense(32, 10)).build(env, seed=1)
    return nn.Trainer(env, model, optimizer=optim.Adam(lr))


def test_a_resumed_run_continues_the_uninterrupted_one(tmp_path) -> None:
    """A checkpoint holds the epochs and steps trained: a fresh process that loads it and fits with
    initial_epoch continues the shuffles, dropout masks and schedule, so it ends where the run that
    was never stopped ends (bit for bit: same kernels, same order)."""
    x_train, y_train, x_test, _ = _digits()
    fit = dict(epochs=3, batch_size=100, seed=4, schedule=optim.CosineLR(), progress=False)
    env = dc.Environment()
    straight = _resumable(env)
    history = straight.fit(x_train, y_train, **fit)
    assert straight.epochs_trained == 3 and [h["epoch"] for h in history] == [1, 2, 3]

    class Stop(Exception):
        pass

    def save_then_stop(epoch: int, logs: dict) -> None:
        stopped.save(tmp_path / "run.npz")
        raise Stop  # the process is killed after its first epoch's checkpoint

    stopped_env = dc.Environment()
    stopped = _resumable(stopped_env)
    with pytest.raises(Stop):
        stopped.fit(x_train, y_train, on_epoch=save_then_stop, **fit)
    resumed_env = dc.Environment(seed=7)
    resumed = _resumable(resumed_env, lr=1e-3)  # the schedule starts from the checkpoint's rate, 1e-2, not this
    resumed.load(tmp_path / "run.npz")
    assert resumed.epochs_trained == 1
    history = resumed.fit(x_train, y_train, initial_epoch=resumed.epochs_trained, **fit)
    assert [h["epoch"] for h in history] == [2, 3] and resumed.epochs_trained == 3
    np.testing.assert_array_equal(resumed.predict(x_test), straight.predict(x_test))
    restarted = _resumable(dc.Environment())
    restarted.load(tmp_path / "run.npz", model_only=True)
    assert restarted.epochs_trained == 0
    clashing = nn.Sequential(nn.Dense(64, 10)).build(env, name="__mine__")
    with pytest.raises(nn.CheckpointError, match=r"parameter name\(s\) \['__mine__.0.weight__'\]"):
        nn.checkpoint.save(env, {"__mine__.0.weight__": clashing.parameters()[0]}, tmp_path / "clash.npz")
    with pytest.raises(ValueError, match=r"initial_epoch 3 must be at least 0 and below epochs 3.*\n  at .*test_nn"):
        resumed.fit(x_train, y_train, initial_epoch=3, **fit)
    with pytest.raises(ValueError,
                       match=r"epochs is the epoch to stop after and must be an integer of at least 1, got 0\n  at "):
        resumed.fit(x_train, y_train, **{**fit, "epochs": 0})


def test_module_build_once_and_use_after_build(env: dc.Environment) -> None:
    last = nn.Dense(3, 2)
    model = nn.Sequential(nn.Dense(4, 3), nn.ReLU(), last)
    x = env.parameter("unbuilt_x", (5, 4))
    with pytest.raises(dc.GraphError, match=r"Dense is not built: call \.build\(env\).*\n  at .*test_nn\.py:\d+"):
        env.build_graph(lambda s: model(s, s.read(x)))
    model.build(env, name="once")
    with pytest.raises(dc.GraphError, match=r"Sequential.build: it is already built.*\n  at .*test_nn\.py:\d+"):
        model.build(env, name="twice")
    assert model.parameters()[0].name == "once.0.weight" and "once.0.weight" in env.parameters
    reused = nn.Sequential(last, nn.ReLU()).build(env, name="reused")
    assert reused.parameters() == [last.weight, last.bias] and last.weight.name == "once.2.weight"
    with pytest.raises(dc.GraphError, match="Sequential.build: its part once.2 was built in another Environment"):
        nn.Sequential(last).build(dc.Environment())
    out = env.parameter("unbuilt_out", (5, 2))
    env.build_graph(lambda s: s.write(out, model(s, s.read(x))))
    with pytest.raises(ValueError, match=r"Dropout: p must be a number in \[0, 1\], got 1.5\n  at .*test_nn\.py:\d+"):
        nn.Dropout(1.5)


def test_normalisation_and_embedding_refuse_what_pytorch_refuses(env: dc.Environment) -> None:
    images = env.parameter("refuse_images", (2, 4, 3, 3))
    one = env.parameter("refuse_one", (1, 4))
    tokens = env.parameter("refuse_tokens", (2, 3))
    norm = nn.BatchNorm(3).build(env, name="refuse_bn")
    for training in (True, False):
        with pytest.raises(dc.ShapeError, match=r"BatchNorm\(3\): input \(2, 4, 3, 3\) needs 3 channels on axis 1"):
            env.build_graph(lambda s: norm(s, s.read(images)), training=training)
    wide = nn.BatchNorm(4).build(env, name="refuse_bn4")
    with pytest.raises(dc.ShapeError, match=r"more than one value per channel, got input \(1, 4\).*drop_last"):
        env.build_graph(lambda s: wide(s, s.read(one)), training=True)
    env.build_graph(lambda s: s.write(one, wide(s, s.read(one))))
    with pytest.raises(TypeError, match="BatchNorm: momentum must be a number, got None"):
        nn.BatchNorm(4, momentum=None)
    layer = nn.LayerNorm(5).build(env, name="refuse_ln")
    with pytest.raises(dc.ShapeError, match=r"LayerNorm\(5,\): input \(2, 4, 3, 3\) does not end in \(5,\)"):
        env.build_graph(lambda s: layer(s, s.read(images)))
    table = nn.Embedding(4, 2).build(env, name="refuse_embedding")
    with pytest.raises(dc.DTypeError, match=r"Embedding: indices must be integers, got float32.*\n  at .*test_nn"):
        env.build_graph(lambda s: table(s, s.read(tokens)))


def test_trainer_metrics_for_tokens_binary_outputs_and_evaluate_inside_fit(env: dc.Environment) -> None:
    tokens = rng.integers(0, 6, (12, 5)).astype(np.int32)
    labels = rng.integers(0, 3, (12, 5)).astype(np.int32)
    model = nn.Sequential(nn.Embedding(6, 4), nn.Dense(4, 3)).build(env, name="tokens")
    trainer = nn.Trainer(env, model)
    expected = float(np.mean(trainer.predict(tokens).argmax(-1) == labels))
    assert trainer.evaluate(tokens, labels)["accuracy"] == pytest.approx(expected, abs=1e-6)

    x = rng.normal(size=(40, 3)).astype(np.float32)
    y = (rng.uniform(size=(40, 1)) < 0.5).astype(np.float32)
    binary = nn.Trainer(env, nn.Dense(3, 1).build(env, name="binary"), loss=dc.binary_cross_entropy_with_logits,
                        optimizer=optim.SGD(0.0), accuracy=True)
    logits = binary.predict(x)
    assert binary.evaluate(x, y, batch_size=16)["accuracy"] == pytest.approx(np.mean((logits > 0) == (y > 0.5)))

    alone = binary.fit(x, y, batch_size=8, progress=False, shuffle=False)[0]
    inside = binary.fit(x, y, batch_size=8, progress=False, shuffle=False,
                        on_step=lambda step, t: t.evaluate(x[:8], y[:8]))[0]
    assert inside["loss"] == pytest.approx(alone["loss"]) and inside["accuracy"] == pytest.approx(alone["accuracy"])


def test_each_epoch_a_trainer_trains_gets_its_own_order(env: dc.Environment) -> None:
    x = np.arange(6, dtype=np.float32).reshape(6, 1)
    y = np.zeros((6, 1), np.float32)
    orders = []
    trainer = nn.Trainer(env, nn.Dense(1, 1).build(env, name="orders"), loss=dc.mse, optimizer=optim.SGD(0.0))
    for _ in range(2):
        trainer.fit(x, y, batch_size=1, progress=False, on_step=lambda step, t: orders.append(
            float(env.read(t._inputs[next(iter(t._inputs))][0])[0, 0])))
    assert sorted(orders[:6]) == sorted(orders[6:]) == list(range(6)) and orders[:6] != orders[6:]


class _FrozenEncoder(nn.Module):
    """A Dense encoder whose features pass through stop_gradient (torch's .detach()), then a head."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.add("encoder", encoder)
        self.add("head", nn.Dense(8, 3))

    def forward(self, s: dc.Scope, x: dc.Array) -> dc.Array:
        return self._children["head"](s, dc.stop_gradient(self._children["encoder"](s, x)))


@pytest.mark.parametrize("make", [lambda: optim.AdamW(0.01), lambda: optim.SGD(0.1, weight_decay=1e-2)],
                         ids=["AdamW", "SGD"])
def test_parameters_behind_stop_gradient_are_left_alone(env: dc.Environment, make) -> None:
    """Weight decay moved an encoder frozen by stop_gradient (AdamW's default decay by 9.6e-4 in 5
    epochs): the Trainer updated every parameter the loss was computed from. torch leaves a parameter
    reached only through .detach() without a gradient, and its optimisers skip it. The head trains."""
    data = np.random.default_rng(0)
    x, y = data.normal(size=(20, 4)).astype(np.float32), data.integers(0, 3, 20)
    encoder = nn.Dense(4, 8).build(env, seed=1, name=f"frozen{next(_uid)}")
    model = _FrozenEncoder(encoder).build(env, seed=2, name=f"frozen{next(_uid)}")
    before = [env.read(p).copy() for p in model.parameters()]
    nn.Trainer(env, model, optimizer=make()).fit(x, y, epochs=2, batch_size=5, progress=False)
    after = [env.read(p) for p in model.parameters()]
    _assert_unchanged(before[:2], after[:2])
    assert all(np.abs(old - new).max() > 1e-4 for old, new in zip(before[2:], after[2:]))


def test_a_loss_or_model_output_of_the_wrong_shape_is_named(env: dc.Environment) -> None:
    """A per-example loss (reduction='none') was refused as not fitting the internal parameter
    'trainer.train_loss_sum'; one example given as a vector (x[0]) was predicted as an unbatched input
    with the default batch size, giving (4,), and refused inside Dense with a smaller one."""
    trainer, x, y = _small_trainer(env, optim.SGD(0.1))
    unreduced = nn.Trainer(env, trainer.model, loss=functools.partial(dc.softmax_cross_entropy, reduction="none"),
                           optimizer=optim.SGD(0.1))
    with pytest.raises(dc.ShapeError, match=r"fit: the loss must give one number for a batch .*got shape \(10,\)"
                                            r".*\n  at .*test_nn.py"):
        unreduced.fit(x, y, batch_size=10, progress=False)
    with pytest.raises(dc.ShapeError, match=r"predict: the model's output has shape \(3,\) for a batch of 4 "
                                            r"examples of x \(shape \(4,\)\).*x\[None\]"):
        trainer.predict(x[0])
    assert trainer.predict(x[:1]).shape == (1, 3)
    # 1-D x was blamed on Dense alone, with the batch size given as the features
    with pytest.raises(dc.ShapeError, match=r"Dense\(4, 3\): input \(10,\) has 10 features on its last axis, where "
                                            r"it takes 4\n  at .*test_nn.py.*\nfit: x is 1-D, a single number per "
                                            r"example .*pass x\[:, None\]"):
        trainer.fit(x[:, 0], y, batch_size=10, progress=False)


def test_integer_parameters_are_not_trainable(env: dc.Environment) -> None:
    """A module's int32 parameter was trainable by default: the optimiser made float state for it
    and every fit failed in grad, naming neither the parameter nor trainable=False."""

    class Permuted(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.add("dense", nn.Dense(4, 3))

        def create(self, env: dc.Environment, rng: np.random.Generator) -> None:
            self.parameter(env, "order", np.array([2, 0, 1, 3], np.int32), dc.int32)

        def forward(self, s: dc.Scope, x: dc.Array) -> dc.Array:
            return self._children["dense"](s, dc.take(x, s.read(self.order), axis=1))

    model = Permuted().build(env, name=f"permuted{next(_uid)}")
    assert [p.name.split(".", 1)[1] for p in model.parameters()] == ["dense.weight", "dense.bias"]
    trainer = nn.Trainer(env, model, optimizer=optim.Adam(0.1))
    data = np.random.default_rng(1)
    trainer.fit(data.normal(size=(10, 4)).astype(np.float32), data.integers(0, 3, 10), progress=False)
    assert not any("order" in name for name in trainer.checkpoint_parameters() if name.startswith("adam"))
    np.testing.assert_array_equal(env.read(model.order), [2, 0, 1, 3])

    class Trainable(nn.Module):
        def create(self, env: dc.Environment, rng: np.random.Generator) -> None:
            self.parameter(env, "table", np.zeros(3, np.int32), dc.int32, trainable=True)

    with pytest.raises(dc.DTypeError, match=r"Trainable: parameter 'table' is int32, which has no gradient.*"
                                            r"trainable=False\n  at .*test_nn.py"):
        Trainable().build(env, name=f"trainable{next(_uid)}")


def test_optimiser_update_in_a_graph_of_ones_own_names_what_is_missing(env: dc.Environment) -> None:
    """update before build said 'parameter None belongs to another Environment'; a parameter not given
    to build was a bare KeyError('adam.m.b')."""
    a = env.parameter(f"own_a{next(_uid)}", (3,), init=np.ones(3, np.float32))
    b = env.parameter(f"own_b{next(_uid)}", (2,), init=np.ones(2, np.float32))

    def step(adam: optim.Adam, parameters: list) -> None:
        def build(s: dc.Scope) -> None:
            values = [s.read(p) for p in parameters]
            adam.update(s, parameters, values, s.grad(sum(dc.sum(v * v) for v in values), values))
        env.build_graph(build)

    with pytest.raises(dc.GraphError, match=r"Adam.update: call build\(env, parameters\) first.*\n  at .*test_nn"):
        step(optim.Adam(0.1), [a])
    adam = optim.Adam(0.1)
    adam.build(env, [a])
    with pytest.raises(dc.GraphError, match=rf"Adam.update: parameter\(s\) \['{b.name}'\] were not given to build"):
        step(adam, [a, b])
    step(adam, [a])


@pytest.mark.parametrize("key", ["file", "allow_pickle"])
def test_checkpoint_keys_that_are_savez_arguments(env: dc.Environment, tmp_path, key: str) -> None:
    """np.savez(handle, **arrays) took a parameter named `file` as its own argument (a TypeError) and
    one named `allow_pickle` as its flag, leaving it out of the file."""

    class Named(nn.Module):
        def create(self, env: dc.Environment, rng: np.random.Generator) -> None:
            self.parameter(env, key, np.arange(3, dtype=np.float32))

    model = Named().build(env, name=f"named{next(_uid)}")
    trainer = nn.Trainer(env, model, optimizer=optim.SGD(0.1))
    trainer.save(tmp_path / "named.npz")
    assert key in np.load(tmp_path / "named.npz").files
    env.write(getattr(model, key), np.zeros(3, np.float32))
    trainer.load(tmp_path / "named.npz")
    np.testing.assert_array_equal(env.read(getattr(model, key)), [0, 1, 2])


def test_saving_through_a_link_or_over_a_private_file(env: dc.Environment, tmp_path) -> None:
    """Saving over a symbolic link replaced the link with a file, and over a file of mode 0600 left it
    0644 (the rename put a new file in its place); torch.save writes through the link into the file."""
    trainer, _, _ = _small_trainer(env, optim.SGD(0.1))
    target = tmp_path / "run1.npz"
    trainer.save(target)
    os.chmod(target, 0o600)
    (tmp_path / "latest.npz").symlink_to(target.name)
    trainer.save(tmp_path / "latest.npz")
    assert (tmp_path / "latest.npz").is_symlink() and stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert sorted(os.listdir(tmp_path)) == ["latest.npz", "run1.npz"]
    trainer.load(tmp_path / "latest.npz")


def test_silu_gradient_at_the_ends_of_float32(env: dc.Environment) -> None:
    """Through the product rule g * x overflowed to inf before meeting sigmoid's zero slope, so the
    gradient at +-3e38 was NaN; PyTorch's rule s (1 + x (1 - s)) gives g and -0. Its second derivative
    still matches torch's."""
    x = np.array([3e38, -3e38, 1e30, -50.0, -1.5, 0.0, 0.7, 20.0], np.float32)
    out, grads, _, _ = _run_module(env, nn.SiLU(), x, weights=np.full(x.shape, 1.5, np.float32))
    tx = torch.from_numpy(x).requires_grad_()
    (F.silu(tx) * 1.5).sum().backward()
    np.testing.assert_allclose(grads[0], tx.grad.numpy(), rtol=1e-5, atol=1e-30)  # exp is a few ulp off at -50
    assert np.signbit(grads[0][1])
    smooth = x[3:]
    second = evaluate(env, lambda a: a.scope.grad(dc.sum(a.scope.grad(dc.sum(nn.silu(a)), [a])[0]), [a])[0], smooth)
    t64 = torch.from_numpy(smooth.astype(np.float64)).requires_grad_()
    (first,) = torch.autograd.grad(F.silu(t64).sum(), t64, create_graph=True)
    (expected,) = torch.autograd.grad(first.sum(), t64)
    np.testing.assert_allclose(second, expected.numpy(), rtol=1e-5, atol=1e-6)
