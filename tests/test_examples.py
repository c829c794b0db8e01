"""The examples, run as a user runs them, in tiny configurations: they learn and write their outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from descent.datasets import DatasetError, fashion_mnist, read_idx

ROOT = Path(__file__).resolve().parents[1]
PYTHONPATH = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])  # keeps kp where it was found


def _run(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=900,
                            env={**os.environ, "PYTHONPATH": PYTHONPATH}, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_fashion_mnist_example_learns_and_saves(tmp_path: Path) -> None:
    out = tmp_path / "fm"
    _run("examples/fashion_mnist.py", "--network", "mlp", "--epochs", "2", "--limit", "3000", "--test-limit", "2000",
         "--out", str(out), "--no-progress")
    record = json.loads((out / "mlp.json").read_text())
    history = record["history"]
    assert history[-1]["loss"] < history[0]["loss"]
    assert history[-1]["val_accuracy"] > 0.6
    assert (out / "mlp.png").stat().st_size > 10_000 and (out / "mlp.npz").exists()
    evaluated = _run("examples/fashion_mnist.py", "--network", "mlp", "--eval", str(out / "mlp.npz"),
                     "--test-limit", "2000")
    assert f"test accuracy {100 * history[-1]['val_accuracy']:.2f}%" in evaluated.stdout


def test_convnet_example_runs_one_step_shape(tmp_path: Path) -> None:
    _run("examples/fashion_mnist.py", "--network", "convnet-blur", "--epochs", "1", "--limit", "200",
         "--test-limit", "200", "--out", str(tmp_path), "--no-progress")
    assert (tmp_path / "convnet-blur.npz").exists()


def test_image_fit_example_improves(tmp_path: Path) -> None:
    _run("examples/image_fit.py", "--size", "24", "--epochs", "4", "--batch", "144", "--out", str(tmp_path),
         "--no-progress")
    results = json.loads((tmp_path / "image_fit.json").read_text())["results"]
    assert set(results) == {"relu", "posenc", "siren", "hash"}
    for name, result in results.items():
        assert result["final_loss"] < result["first_loss"], name
    assert (tmp_path / "image_fit.png").stat().st_size > 10_000


def test_array_api_tour_runs() -> None:
    result = _run("examples/array_api.py")
    assert "kernels per run: 1" in result.stdout


def test_idx_loader_checks_files(tmp_path: Path) -> None:
    images, labels = fashion_mnist.load("test")
    assert images.shape == (10000, 1, 28, 28) and labels.shape == (10000,)
    assert 0.0 <= images.min() and images.max() <= 1.0 and set(np.unique(labels)) == set(range(10))
    with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist"):
        fashion_mnist.load("train", tmp_path)
    bad = tmp_path / "bad-idx1-ubyte"
    bad.write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02")
    with pytest.raises(DatasetError, match="holds 10 bytes but its header"):
        read_idx(bad)
    bad.write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(DatasetError, match="not an IDX file"):
        read_idx(bad)
