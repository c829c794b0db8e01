"""The examples, run as a user runs them, in tiny configurations: they learn and write their outputs."""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from descent import nn
from descent.datasets import DatasetError, fashion_mnist, read_idx

ROOT = Path(__file__).resolve().parents[1]
PYTHONPATH = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])  # keeps kp where it was found


def _run(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=900,
                            env={**os.environ, "PYTHONPATH": PYTHONPATH}, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_fashion_mnist_example_learns_saves_and_resumes(tmp_path: Path) -> None:
    """Stopped after its first epoch and resumed, the run writes one history of both epochs."""
    out = tmp_path / "fm"
    common = ("examples/fashion_mnist.py", "--network", "mlp", "--limit", "3000", "--test-limit", "2000",
              "--out", str(out), "--no-progress")
    _run(*common, "--epochs", "1")
    resumed = _run(*common, "--epochs", "2", "--resume", "--lr", "0.002")
    assert f"resuming after epoch 1 of {out / 'mlp.npz'}" in resumed.stdout and "epoch 2: " in resumed.stdout
    assert "learning rate 0.002 as given (the checkpoint's was 0.001)" in resumed.stdout  # it was ignored
    assert "already" in _run(*common, "--epochs", "2", "--resume").stdout
    record = json.loads((out / "mlp.json").read_text())
    assert record["args"]["lr"] == pytest.approx(0.002)
    history = record["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    assert history[-1]["loss"] < history[0]["loss"]
    assert history[-1]["val_accuracy"] > 0.6
    assert (out / "mlp.png").stat().st_size > 10_000 and (out / "mlp.npz").exists()
    evaluated = _run("examples/fashion_mnist.py", "--eval", str(out / "mlp.npz"), "--test-limit", "2000")
    assert evaluated.stdout.startswith("mlp on ")  # the network its record names; it built the default convnet
    assert f"test accuracy {100 * history[-1]['val_accuracy']:.2f}%" in evaluated.stdout


def test_convnet_example_runs_one_step_shape(tmp_path: Path) -> None:
    _run("examples/fashion_mnist.py", "--network", "convnet-blur", "--epochs", "1", "--limit", "200",
         "--test-limit", "200", "--out", str(tmp_path), "--no-progress", "--seed", "-1")
    assert (tmp_path / "convnet-blur.npz").exists()


def test_image_fit_example_improves(tmp_path: Path) -> None:
    _run("examples/image_fit.py", "--size", "24", "--epochs", "4", "--batch", "144", "--out", str(tmp_path),
         "--no-progress")
    results = json.loads((tmp_path / "image_fit.json").read_text())["results"]
    assert set(results) == {"relu", "posenc", "siren", "hash"}
    for name, result in results.items():
        assert result["final_loss"] < result["first_loss"], name
    assert (tmp_path / "image_fit.png").stat().st_size > 10_000


def test_image_fit_keeps_its_earlier_figure_when_the_new_one_cannot_be_written(tmp_path: Path) -> None:
    """The figure was written in place: a disk that filled up while writing it truncated the earlier
    run's figure, after the new results had been lost with the traceback."""
    out, cache = tmp_path / "fit", str(tmp_path / "cache")
    command = [sys.executable, "examples/image_fit.py", *QUICK["image_fit"], "--out", str(out)]
    environment = {**os.environ, "PYTHONPATH": PYTHONPATH, "DESCENT_CACHE": cache}
    first = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=environment, check=False)
    assert first.returncode == 0, first.stderr
    figure = (out / "image_fit.png").read_bytes()
    limit = len(figure) // 2

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    second = subprocess.run([*command, "--seed", "1"], cwd=ROOT, capture_output=True, text=True, env=environment,
                            preexec_fn=small_files, check=False)
    assert second.returncode != 0 and "File too large" in second.stderr, second.stderr
    assert (out / "image_fit.png").read_bytes() == figure
    assert json.loads((out / "image_fit.json").read_text())["args"]["seed"] == 1  # the numbers went first
    assert sorted(path.name for path in out.iterdir()) == ["image_fit.json", "image_fit.png"]  # no temporary left


def test_examples_blame_device_only_where_it_was_given(tmp_path: Path) -> None:
    """With no Vulkan driver at all, fashion_mnist said 'argument --device: ...' though no --device was given."""
    missing = "/nonexistent/icd.json"
    result = subprocess.run([sys.executable, "examples/fashion_mnist.py", *QUICK["fashion_mnist"], "--out",
                             str(tmp_path)], cwd=ROOT, capture_output=True, text=True, check=False,
                            env={**os.environ, "PYTHONPATH": PYTHONPATH, "VK_DRIVER_FILES": missing,
                                 "VK_ICD_FILENAMES": missing})
    assert result.returncode == 2
    assert "fashion_mnist.py: error: no Vulkan driver could be loaded" in result.stderr, result.stderr
    assert "argument --device" not in result.stderr and "\n  at " not in result.stderr  # nor the example's line


def test_array_api_tour_runs() -> None:
    result = _run("examples/array_api.py")
    assert "kernels per run: 1" in result.stdout
    assert "usage: array_api.py" in _run("examples/array_api.py", "--help").stdout  # it ran the tour


def test_idx_loader_checks_files(tmp_path: Path) -> None:
    images, labels = fashion_mnist.load("test")
    assert images.shape == (10000, 1, 28, 28) and labels.shape == (10000,)
    assert 0.0 <= images.min() and images.max() <= 1.0 and set(np.unique(labels)) == set(range(10))
    with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist"):
        fashion_mnist.load("train", tmp_path)
    (tmp_path / "a_file").write_text("")  # was "train-images-idx3-ubyte(.gz) is not in .../a_file"
    with pytest.raises(DatasetError, match=r"a_file is a file, not the folder that holds the four Fashion-MNIST"):
        fashion_mnist.load("train", tmp_path / "a_file")
    with pytest.raises(DatasetError, match=r"a_file is not an IDX file \(it is empty\)"):  # "bad magic number "
        read_idx(tmp_path / "a_file")
    bad = tmp_path / "bad-idx1-ubyte"
    bad.write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02")
    with pytest.raises(DatasetError, match="holds 10 bytes but its header"):
        read_idx(bad)
    bad.write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(DatasetError, match="not an IDX file"):
        read_idx(bad)


def test_idx_errors_name_the_file_and_the_users_line(tmp_path: Path) -> None:
    """Damaged gzip data was a bare zlib.error; a header whose sizes overflow int64 passed the size
    check (numpy's product wrapped) and failed in a reshape; labels that are not bytes loaded (int8 -3);
    the errors did not name the user's line."""
    damaged = tmp_path / "t10k-labels-idx1-ubyte.gz"
    packed = bytearray(gzip.compress(b"\x00\x00\x08\x01" + (1000).to_bytes(4, "big") + bytes(range(250)) * 4))
    packed[20:30] = b"\xff" * 10
    damaged.write_bytes(bytes(packed))
    with pytest.raises(DatasetError, match=rf"cannot read {damaged}: (.|\n)*test_examples.py"):
        read_idx(damaged)
    huge = tmp_path / "huge-idx3-ubyte"
    huge.write_bytes(b"\x00\x00\x08\x03" + (2**31).to_bytes(4, "big") * 2 + (4).to_bytes(4, "big") + bytes(16))
    with pytest.raises(DatasetError, match=r"holds 32 bytes but its header \(2147483648, 2147483648, 4\) needs "
                                           r"18446744073709551632"):
        read_idx(huge)
    signed = tmp_path / "signed"
    signed.mkdir()
    images = b"\x00\x00\x08\x03" + b"".join(n.to_bytes(4, "big") for n in (10000, 28, 28)) + bytes(10000 * 784)
    (signed / "t10k-images-idx3-ubyte").write_bytes(images)
    (signed / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x09\x01" + (10000).to_bytes(4, "big") + b"\xfd" * 10000)
    with pytest.raises(DatasetError, match=r"hold uint8 images and int8 labels, expected unsigned bytes"):
        fashion_mnist.load("test", signed)
    with pytest.raises(ValueError, match=r"split must be 'train' or 'test', not 'validation'\n  at .*test_examples"):
        fashion_mnist.load("validation")


def test_data_paths_that_are_not_paths_are_named(tmp_path: Path) -> None:
    """None gave a bare TypeError, a NUL a bare ValueError and an over-long name an OSError, none at the
    user's line."""
    with pytest.raises(TypeError, match=r"cannot read Fashion-MNIST from None: give a file path .*\n  at .*test_ex"):
        fashion_mnist.load("train", None)
    with pytest.raises(TypeError, match=r"cannot read an IDX file from None: give a file path"):
        read_idx(None)
    with pytest.raises(DatasetError, match=r"a file name cannot hold a NUL character\n  at .*test_examples"):
        read_idx(tmp_path / "a\0b")
    with pytest.raises(DatasetError, match=r"x{300}': File name too long\n  at .*test_examples"):
        fashion_mnist.load("test", tmp_path / ("x" * 300))


def _rejected(*args: str) -> str:
    """Run an example that must stop at its arguments: exit status 2, quickly; its stderr."""
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": PYTHONPATH}, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    return result.stderr


def test_fashion_mnist_rejects_no_epochs(tmp_path: Path) -> None:
    for epochs in ("0", "-1"):
        error = _rejected("examples/fashion_mnist.py", "--epochs", epochs, "--out", str(tmp_path / "fm"))
        assert "--epochs: must be at least 1" in error
    assert not (tmp_path / "fm").exists()


def test_image_fit_checks_every_network_before_training(tmp_path: Path) -> None:
    error = _rejected("examples/image_fit.py", "--networks", "relu,foo", "--out", str(tmp_path / "fit"))
    assert "unknown network 'foo'; choose from relu,posenc,siren,hash" in error
    assert not (tmp_path / "fit").exists()


def _example(name: str) -> ModuleType:
    """An example script imported as a module, to call its functions without a subprocess."""
    if str(ROOT / "examples") not in sys.path:
        sys.path.insert(0, str(ROOT / "examples"))  # where the script finds its sibling modules when run
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _refused(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, name: str, *args: str) -> str:
    """Call an example's main with these arguments, which argparse must refuse (exit status 2); its stderr."""
    monkeypatch.setattr(sys, "argv", [f"{name}.py", *args])
    with pytest.raises(SystemExit) as stopped:
        _example(name).main()
    assert stopped.value.code == 2
    return capsys.readouterr().err


QUICK = {"fashion_mnist": ("--network", "linear", "--limit", "100", "--test-limit", "100", "--no-progress"),
         "image_fit": ("--networks", "relu", "--size", "8", "--epochs", "1", "--no-progress")}  # if let through


@pytest.mark.parametrize(("name", "option", "value", "message"), [
    ("fashion_mnist", "--limit", "-5", "must be at least 1"), ("fashion_mnist", "--limit", "0", "must be at least 1"),
    ("fashion_mnist", "--test-limit", "0", "must be at least 1"),
    ("fashion_mnist", "--lr", "nan", "must be a finite number above 0"),
    ("fashion_mnist", "--lr", "0", "must be a finite number above 0"),
    ("fashion_mnist", "--momentum", "1", "must be at least 0 and below 1"),
    ("fashion_mnist", "--seed", "1.5", "invalid int value: '1.5'"),
    ("image_fit", "--size", "0", "must be at least 1"), ("image_fit", "--size", "-3", "must be at least 1"),
    ("image_fit", "--batch", "0", "must be at least 1"), ("image_fit", "--epochs", "0", "must be at least 1"),
    ("image_fit", "--lr", "nan", "must be a finite number above 0"),
    ("image_fit", "--lr", "inf", "must be a finite number above 0"),
    ("image_fit", "--lr", "-0.001", "must be a finite number above 0"),
    ("image_fit", "--seed", "x", "invalid int value: 'x'"),
])
def test_examples_refuse_bad_numbers(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, tmp_path: Path,
                                     name: str, option: str, value: str, message: str) -> None:
    error = _refused(monkeypatch, capsys, name, *QUICK[name], option, value, "--out", str(tmp_path / "out"))
    assert f"argument {option}: {message}" in error
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["fashion_mnist", "image_fit"])
def test_examples_refuse_a_file_as_out(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
                                       tmp_path: Path, name: str) -> None:
    file = tmp_path / "results"
    file.write_text("not a directory")
    for out in (file, file / "inside"):
        error = _refused(monkeypatch, capsys, name, "--out", str(out))
        assert f"argument --out: {file} is a file, not a directory" in error


@pytest.mark.parametrize("name", ["fashion_mnist", "image_fit"])
def test_examples_refuse_an_out_they_cannot_write_in_before_training(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, name: str) -> None:
    """/proc/... stopped with a PermissionError traceback at mkdir, and an existing folder that cannot
    be written in (here /proc itself) only after training, when the checkpoint or figure was saved."""
    for out in ("/proc/descent_out", "/proc"):
        error = _refused(monkeypatch, capsys, name, *QUICK[name], "--out", out)
        assert "argument --out: cannot write in /proc: " in error


def test_image_fit_names_a_device_that_is_not_there(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
                                                    tmp_path: Path) -> None:
    error = _refused(monkeypatch, capsys, "image_fit", *QUICK["image_fit"], "--device", "bogus",
                     "--out", str(tmp_path / "fit"))
    assert "argument --device: device='bogus': no device name contains 'bogus'" in error  # it was a traceback
    assert " at " not in error.splitlines()[-1]


def test_a_resumed_cosine_run_follows_the_uninterrupted_one(monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    """Resumed, the cosine schedule started from the optimiser's default rate (1e-3), not the run's 0.01,
    and a resume with --cosine --lr changed the rate without saying so. A resume with another --epochs
    laid the schedule over that length, so that --epochs 2 then 3 trained epoch 2 at half the starting
    rate where the 3-epoch run it claimed to continue had three quarters: it is refused."""
    def history(out: Path, *args: str) -> list[dict]:
        monkeypatch.setattr(sys, "argv", ["fashion_mnist.py", *QUICK["fashion_mnist"], "--cosine", "--out", str(out),
                                          *args])
        _example("fashion_mnist").main()
        return json.loads((out / "linear.json").read_text())["history"]

    save = nn.Trainer.save

    def stopped_at_the_third_save(trainer: nn.Trainer, path) -> None:
        if trainer.epochs_trained == 3:
            raise KeyboardInterrupt
        save(trainer, path)

    def stopped_run(out: Path) -> None:
        with monkeypatch.context() as patch:
            patch.setattr(nn.Trainer, "save", stopped_at_the_third_save)
            with pytest.raises(SystemExit, match=r"stopped; .*--resume continues"):
                history(out, "--lr", "0.01", "--epochs", "3")

    straight = history(tmp_path / "straight", "--lr", "0.01", "--epochs", "3")
    stopped_run(tmp_path / "split")
    resumed = history(tmp_path / "split", "--epochs", "3", "--resume")
    assert [h["loss"] for h in resumed] == [h["loss"] for h in straight]
    assert json.loads((tmp_path / "split" / "linear.json").read_text())["args"]["lr"] == 0.01
    for epochs in ("2", "4"):
        error = _refused(monkeypatch, capsys, "fashion_mnist", *QUICK["fashion_mnist"], "--cosine", "--out",
                         str(tmp_path / "split"), "--epochs", epochs, "--resume")
        assert (f"argument --epochs: {tmp_path / 'split' / 'linear.npz'} was trained with --cosine over --epochs 3, "
                "and another length would change the rates") in error
    stopped_run(tmp_path / "rate")
    history(tmp_path / "rate", "--epochs", "3", "--resume", "--lr", "0.5")
    assert "the cosine schedule's starting rate 0.5 as given (the checkpoint's was 0.01)" in capsys.readouterr().out
    assert json.loads((tmp_path / "rate" / "linear.json").read_text())["args"]["lr"] == 0.5
    missing = tmp_path / "never_trained"
    error = _refused(monkeypatch, capsys, "fashion_mnist", *QUICK["fashion_mnist"], "--out", str(missing), "--resume")
    assert "does not exist" in error and not missing.exists()  # an empty folder was left behind


def test_image_fit_names_an_unreadable_image(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
                                             tmp_path: Path) -> None:
    missing = tmp_path / "missing.png"
    error = _refused(monkeypatch, capsys, "image_fit", "--image", str(missing), "--out", str(tmp_path / "fit"))
    assert "argument --image: " in error and str(missing) in error
    damaged = tmp_path / "damaged.png"
    damaged.write_text("hi\n")  # a decoder's struct.error came out as a traceback
    error = _refused(monkeypatch, capsys, "image_fit", "--image", str(damaged), "--out", str(tmp_path / "fit"))
    assert (f"argument --image: cannot read {damaged} as an image (ValueError: neither Pillow nor imageio knows "
            "its format)") in error
    from PIL import Image

    whole = tmp_path / "whole.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)).save(whole)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(whole.read_bytes()[:2000])  # Pillow's OSError did not name the file
    error = _refused(monkeypatch, capsys, "image_fit", "--image", str(truncated), "--out", str(tmp_path / "fit"))
    assert f"argument --image: cannot read {truncated} as an image (image file is truncated" in error
    assert "pip install" not in error  # imageio's advice to install plugins for a file that is no image


@pytest.mark.parametrize("stop", ["before", "after"])
def test_a_stop_while_saving_an_epoch_keeps_record_and_checkpoint_together(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, tmp_path: Path, stop: str) -> None:
    """The checkpoint was saved before the record: a Ctrl-C between the two left a checkpoint of two
    epochs with a record of one, and the resumed run's history had no epoch 2."""
    save = nn.Trainer.save

    def interrupted(trainer: nn.Trainer, path) -> None:
        if trainer.epochs_trained == 2 and stop == "before":
            raise KeyboardInterrupt
        save(trainer, path)
        if trainer.epochs_trained == 2 and stop == "after":
            raise KeyboardInterrupt

    def run(*args: str) -> list[int]:
        monkeypatch.setattr(sys, "argv", ["fashion_mnist.py", *QUICK["fashion_mnist"], "--out", str(tmp_path), *args])
        _example("fashion_mnist").main()
        return [h["epoch"] for h in json.loads((tmp_path / "linear.json").read_text())["history"]]

    with monkeypatch.context() as patch:
        patch.setattr(nn.Trainer, "save", interrupted)
        with pytest.raises(SystemExit, match=r"stopped; .*--resume continues"):
            run("--epochs", "3")
    record = json.loads((tmp_path / "linear.json").read_text())
    record["history"][-1]["time"] = record["seconds"] = 1000.0  # an epoch of 1000 s that the resume trains again
    (tmp_path / "linear.json").write_text(json.dumps(record))
    assert run("--epochs", "3", "--resume") == [1, 2, 3]
    assert f"resuming after epoch {1 if stop == 'before' else 2}" in capsys.readouterr().out
    seconds = json.loads((tmp_path / "linear.json").read_text())["seconds"]
    assert (seconds < 1000) == (stop == "before")  # a dropped epoch's time was counted as well as its retraining


def test_a_stop_before_the_first_save_says_there_is_nothing_to_resume(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The stop message said the checkpoint held the epochs saved and --resume continued, where no
    checkpoint had been written yet and --resume was refused."""
    def interrupted(trainer: nn.Trainer, path) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(nn.Trainer, "save", interrupted)
    monkeypatch.setattr(sys, "argv", ["fashion_mnist.py", *QUICK["fashion_mnist"], "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match=r"stopped before the first epoch was saved; nothing to resume"):
        _example("fashion_mnist").main()


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--device", "bogus", "argument --device: device='bogus': no device name contains 'bogus'"),
    ("--eval", "missing.npz", "argument --eval: checkpoint missing.npz does not exist"),
    ("--data-dir", "/nonexistent", "argument --data-dir: Fashion-MNIST file train-images-idx3-ubyte(.gz) is not in"),
    ("--resume", None, "argument --resume: checkpoint"),
])
def test_fashion_mnist_names_the_option_at_fault(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
                                                tmp_path: Path, option: str, value: str | None, message: str) -> None:
    """These stopped with a traceback."""
    arguments = [option] if value is None else [option, value]
    error = _refused(monkeypatch, capsys, "fashion_mnist", *QUICK["fashion_mnist"], "--out", str(tmp_path), *arguments)
    assert message in error


def test_fashion_mnist_eval_takes_the_network_its_checkpoint_was_trained_with(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    """--eval built the default convnet whatever the checkpoint held, so a convnet-blur checkpoint loaded into
    a convnet without a word; --eval with --resume ran the evaluation and ignored --resume."""
    monkeypatch.setattr(sys, "argv", ["fashion_mnist.py", *QUICK["fashion_mnist"], "--out", str(tmp_path)])
    _example("fashion_mnist").main()
    capsys.readouterr()
    checkpoint = tmp_path / "linear.npz"
    error = _refused(monkeypatch, capsys, "fashion_mnist", "--eval", str(checkpoint), "--network", "mlp")
    assert f"argument --network: {checkpoint} was trained with --network linear" in error
    error = _refused(monkeypatch, capsys, "fashion_mnist", "--eval", str(checkpoint), "--resume")
    assert "argument --resume: --eval tests a checkpoint and --resume trains on" in error
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(checkpoint, alone)  # without the record that names its network
    error = _refused(monkeypatch, capsys, "fashion_mnist", "--eval", str(alone / "linear.npz"), "--test-limit", "10")
    assert "argument --eval: built --network convnet, as none was given: checkpoint" in error


def test_fashion_mnist_resume_names_what_does_not_fit(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
                                                      tmp_path: Path) -> None:
    """A resume with another optimizer printed only 'checkpoint ... does not fit:', the problems cut off, and
    its hint named Trainer.load, which a command-line user cannot call; a damaged record was a traceback."""
    first = ("--epochs", "1", "--out", str(tmp_path))
    monkeypatch.setattr(sys, "argv", ["fashion_mnist.py", *QUICK["fashion_mnist"], *first])
    _example("fashion_mnist").main()
    capsys.readouterr()
    resume = (*QUICK["fashion_mnist"], "--epochs", "2", "--out", str(tmp_path), "--resume")
    error = _refused(monkeypatch, capsys, "fashion_mnist", *resume, "--optimizer", "sgd")
    assert f"argument --optimizer: {tmp_path / 'linear.npz'} was trained with --optimizer adam" in error
    record = tmp_path / "linear.json"
    kept = record.read_text()
    record.unlink()
    error = _refused(monkeypatch, capsys, "fashion_mnist", *resume, "--optimizer", "sgd")
    assert "does not fit:\n  missing from the checkpoint: 'sgd." in error and "not in the model: 'adam." in error
    record.write_text(kept[: len(kept) // 2])
    error = _refused(monkeypatch, capsys, "fashion_mnist", *resume)
    assert f"argument --resume: {record} is damaged (JSONDecodeError" in error
    assert record.read_text() == kept[: len(kept) // 2]
    edited = json.loads(kept)
    edited["history"][0]["val_accuracy"] = "x"  # trained, saved, then failed at the summary, every resume
    record.write_text(json.dumps(edited))
    error = _refused(monkeypatch, capsys, "fashion_mnist", *resume)
    assert f"{record} is damaged (TypeError: epoch 1 has val_accuracy 'x', not a number)" in error
    assert json.loads(record.read_text()) == edited


def test_image_fit_refuses_a_network_given_twice(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
                                                tmp_path: Path) -> None:
    """relu,relu trained the first and then failed: 'parameter relu.0.weight already exists'."""
    error = _refused(monkeypatch, capsys, "image_fit", "--networks", "relu,siren,relu", "--out", str(tmp_path / "f"))
    assert "argument --networks: network 'relu' given twice" in error


def test_image_fit_reads_gray_alpha_and_16_bit_images(tmp_path: Path) -> None:
    """Every image layout comes back as RGB in [0, 1]: 16-bit scaled by 65535, floats clipped, alpha dropped,
    gray replicated."""
    io = pytest.importorskip("skimage.io")
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    rgb = np.stack([gray, 255 - gray, gray // 2], -1)
    opaque = np.full_like(gray, 255)
    as_rgb = np.repeat(gray[..., None], 3, -1) / 255.0
    ramp = np.linspace(-0.5, 1.5, 64, dtype=np.float32).reshape(8, 8)
    images = {"gray.png": (gray, as_rgb), "gray16.png": (gray.astype(np.uint16) * 257, as_rgb),
              "gray_alpha.png": (np.stack([gray, opaque], -1), as_rgb),
              "rgba.png": (np.concatenate([rgb, opaque[..., None]], -1), rgb / 255.0),
              "rgb16.tif": (rgb.astype(np.uint16) * 257, rgb / 255.0),
              "float.tif": (ramp, np.repeat(np.clip(ramp, 0, 1)[..., None], 3, -1))}
    load_image = _example("image_fit").load_image
    for name, (pixels, expected) in images.items():
        io.imsave(tmp_path / name, pixels, check_contrast=False)
        image = load_image(str(tmp_path / name), 8)
        assert image.shape == (8, 8, 3) and image.dtype == np.float32, name
        np.testing.assert_allclose(image, expected, atol=1e-6, err_msg=name)


def test_wheel_ships_the_shaders(tmp_path: Path) -> None:
    """A non-editable install finds the GLSL templates: the wheel maps shaders/ to descent/shaders."""
    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip("building descent needs setuptools 77 or later (pyproject's build-system)")
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        (source / name).write_bytes((ROOT / name).read_bytes())
    for folder in ("descent", "shaders"):
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "wheel")], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "wheel").glob("descent-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = {name for name in archive.namelist() if not name.split("/")[0].endswith(".dist-info")}
        archive.extractall(tmp_path / "installed")
    expected = {f"descent/{path.relative_to(ROOT / 'descent').as_posix()}" for path in (ROOT / "descent").rglob("*")
                if path.suffix == ".py" or path.name == "py.typed"}
    expected |= {f"descent/shaders/{path.name}" for path in (ROOT / "shaders").glob("*.comp")}
    assert names == expected
    program = ("import numpy as np, descent as dc\n"
               "env = dc.Environment()\n"
               "x = env.parameter('x', (3,))\n"
               "env.write(x, np.arange(3, dtype=np.float32))\n"
               "env.run(env.build_graph(lambda s: s.write(x, s.read(x) * 2.0 + 1.0)))\n"
               "print(dc.__file__, env.read(x).tolist())\n")
    installed = str(tmp_path / "installed")
    path = os.pathsep.join([installed, os.environ.get("PYTHONPATH", "")])  # ahead of any descent found elsewhere
    result = subprocess.run([sys.executable, "-c", program], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": path}, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(installed) and "[1.0, 3.0, 5.0]" in result.stdout


def test_fashion_mnist_keeps_an_earlier_run_and_resumes_only_as_trained(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    """A fresh run into an --out holding a run replaced it after one epoch; a resume with another
    --batch-size, --seed, --limit or --cosine went on silently and rewrote the record's settings; an
    entry of --out that is a directory failed after training; an --eval of a missing file blamed the
    network guess; a record whose epochs are strings was a traceback."""
    def main(*args: str) -> None:
        monkeypatch.setattr(sys, "argv", ["fashion_mnist.py", *QUICK["fashion_mnist"], "--out", str(tmp_path), *args])
        _example("fashion_mnist").main()

    main("--epochs", "2")
    record = tmp_path / "linear.json"
    kept = record.read_text()
    error = _refused(monkeypatch, capsys, "fashion_mnist", *QUICK["fashion_mnist"], "--out", str(tmp_path))
    assert f"argument --out: {tmp_path / 'linear.npz'} holds an earlier run; continue it with --resume" in error
    assert record.read_text() == kept
    for flag, value, was in [("--batch-size", "7", "with --batch-size 100"), ("--seed", "9", "with --seed 0"),
                             ("--limit", "50", "with --limit 100"), ("--cosine", None, "without --cosine")]:
        given = [flag] if value is None else [flag, value]
        error = _refused(monkeypatch, capsys, "fashion_mnist", *QUICK["fashion_mnist"], "--out", str(tmp_path),
                         "--resume", "--epochs", "3", *given)
        assert f"argument {flag}: {tmp_path / 'linear.npz'} was trained {was}; resume with it" in error
    # a resume asking for fewer epochs than trained exited 0; --momentum with adam and --resume with
    # --overwrite were taken silently, the one ignored, the other overwriting
    for given, flag, message in [(("--resume", "--epochs", "1"), "--epochs", "has trained 2 epochs, more than 1"),
                                 (("--resume", "--overwrite"), "--overwrite", "give one of them"),
                                 (("--resume", "--momentum", "0.5"), "--momentum", "is for --optimizer sgd; adam")]:
        error = _refused(monkeypatch, capsys, "fashion_mnist", *QUICK["fashion_mnist"], "--out", str(tmp_path), *given)
        assert f"argument {flag}: " in error and message in error
    assert record.read_text() == kept
    damaged = json.loads(kept)
    damaged["history"][0]["epoch"] = "1"
    record.write_text(json.dumps(damaged))
    error = _refused(monkeypatch, capsys, "fashion_mnist", *QUICK["fashion_mnist"], "--out", str(tmp_path),
                     "--resume", "--epochs", "3")
    assert f"argument --resume: {record} is damaged (TypeError: epoch '1' is not a whole number)" in error
    record.write_text(kept)
    main("--epochs", "1", "--overwrite")
    assert [h["epoch"] for h in json.loads(record.read_text())["history"]] == [1]
    (tmp_path / "mlp.png").mkdir()
    error = _refused(monkeypatch, capsys, "fashion_mnist", *QUICK["fashion_mnist"], "--out", str(tmp_path),
                     "--network", "mlp")
    assert f"argument --out: {tmp_path / 'mlp.png'} is a directory, where this run writes a file" in error
    error = _refused(monkeypatch, capsys, "fashion_mnist", "--eval", str(tmp_path / "missing.npz"))
    assert "argument --eval: checkpoint" in error and "built --network" not in error


def test_fashion_mnist_interrupted_draws_its_plot(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
                                                  tmp_path: Path) -> None:
    """The plot was drawn after the last epoch only, so a run stopped with Ctrl-C left none, and a resume
    that had nothing left to train did not draw it either."""
    original = nn.Trainer.fit

    def interrupted(self, *args, **kwargs):
        original(self, *args, **{**kwargs, "epochs": 1})
        raise KeyboardInterrupt

    monkeypatch.setattr(nn.Trainer, "fit", interrupted)
    monkeypatch.setattr(sys, "argv", ["fashion_mnist.py", *QUICK["fashion_mnist"], "--out", str(tmp_path),
                                      "--epochs", "3"])
    with pytest.raises(SystemExit, match=r"stopped; .*linear.npz, .*linear.json and .*png hold the epochs saved"):
        try:
            _example("fashion_mnist").main()
        except KeyboardInterrupt:
            pytest.fail("Ctrl-C came out as a traceback, and no plot was drawn")
    assert (tmp_path / "linear.png").stat().st_size > 10_000
    (tmp_path / "linear.png").unlink()
    monkeypatch.setattr(sys, "argv", ["fashion_mnist.py", *QUICK["fashion_mnist"], "--out", str(tmp_path),
                                      "--epochs", "1", "--resume"])
    _example("fashion_mnist").main()
    assert "trained 1 epochs already" in capsys.readouterr().out and (tmp_path / "linear.png").exists()


def test_image_fit_reads_cmyk_and_one_frame_gifs(tmp_path: Path) -> None:
    """A CMYK JPEG's four channels were taken as RGBA (pure red came out cyan); a one-frame GIF, which
    scikit-image reads as (1, H, W, 3), was refused."""
    from PIL import Image

    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "red.jpg")
    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "red.gif")
    load = _example("image_fit").load_image
    for name in ("red.jpg", "red.gif"):
        np.testing.assert_allclose(load(str(tmp_path / name), 4)[0, 0], [1, 0, 0], atol=0.02, err_msg=name)


def test_outputs_that_cannot_be_written_are_refused_before_any_work(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    """image_fit failed on an image_fit.png folder after training every network; the benchmarks opened
    --json or --markdown only after running every case; array_api's --device was a traceback."""
    (tmp_path / "image_fit.png").mkdir()
    error = _refused(monkeypatch, capsys, "image_fit", *QUICK["image_fit"], "--out", str(tmp_path))
    assert f"argument --out: {tmp_path / 'image_fit.png'} is a directory, where this run writes a file" in error
    error = _refused(monkeypatch, capsys, "array_api", "--device", "bogus")
    assert "argument --device: device='bogus': no device name contains 'bogus'" in error
    for option in ("--json", "--markdown"):
        result = subprocess.run([sys.executable, "-m", "benchmarks", option, str(tmp_path)], cwd=ROOT,
                                capture_output=True, text=True, timeout=60, check=False,
                                env={**os.environ, "PYTHONPATH": PYTHONPATH})
        assert result.returncode == 2 and f"argument {option}: {tmp_path} is a directory" in result.stderr


def test_outputs_that_cannot_be_replaced_are_refused_before_training(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    """A read-only file (or a pipe) where a run writes was found only at its save: fashion_mnist had
    trained an epoch and written its record, image_fit had trained every network and lost them all."""
    pipe = tmp_path / "fit" / "image_fit.json"
    pipe.parent.mkdir()
    os.mkfifo(pipe)
    error = _refused(monkeypatch, capsys, "image_fit", *QUICK["image_fit"], "--out", str(pipe.parent))
    assert f"argument --out: {pipe} cannot be replaced: it is not a regular file" in error
    assert sorted(path.name for path in pipe.parent.iterdir()) == ["image_fit.json"]
    protected = tmp_path / "mnist" / "linear.png"
    protected.parent.mkdir()
    protected.write_bytes(b"an earlier plot")
    protected.chmod(0o444)
    command = [sys.executable, str(ROOT / "examples" / "fashion_mnist.py"), *QUICK["fashion_mnist"],
               "--out", str(protected.parent)]
    if os.geteuid() == 0:  # as an ordinary user: without root's bypass of file permissions
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", *command]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False,
                            env={**os.environ, "PYTHONPATH": PYTHONPATH})
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"argument --out: {protected} cannot be replaced: the file is read-only" in result.stderr
    assert sorted(path.name for path in protected.parent.iterdir()) == ["linear.png"]
    assert protected.read_bytes() == b"an earlier plot"


def test_fashion_mnist_resume_finds_its_network_and_checks_its_record(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    """--resume built the default convnet beside an mlp checkpoint and said convnet.npz did not exist; a
    record with NaN seconds, or one behind its checkpoint (of another run), was taken as it stood; an
    --overwrite stopped before its first save said the earlier run's files held its epochs."""
    quick = ("--limit", "100", "--test-limit", "100", "--no-progress", "--out", str(tmp_path))

    def main(*args: str) -> str:
        monkeypatch.setattr(sys, "argv", ["fashion_mnist.py", *quick, *args])
        _example("fashion_mnist").main()
        return capsys.readouterr().out

    main("--network", "linear", "--epochs", "1")
    assert f"resuming after epoch 1 of {tmp_path / 'linear.npz'}" in main("--epochs", "2", "--resume")
    record = tmp_path / "linear.json"
    kept = json.loads(record.read_text())
    for change, message in [({"seconds": float("nan")}, "is damaged (ValueError: its seconds are nan)"),
                            ({"history": kept["history"][:1]}, "ends at epoch 1 and")]:
        record.write_text(json.dumps({**kept, **change}))
        error = _refused(monkeypatch, capsys, "fashion_mnist", *quick, "--epochs", "3", "--resume")
        assert f"argument --resume: {record} {message}" in error
    record.write_text(json.dumps(kept))

    def stopped(*args, **kwargs) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(nn.Trainer, "fit", stopped)
        with pytest.raises(SystemExit, match=r"stopped before the first epoch was saved; .*linear\.npz still holds "
                                             r"the earlier run"):
            main("--network", "linear", "--overwrite")
    main("--network", "mlp", "--epochs", "1")
    error = _refused(monkeypatch, capsys, "fashion_mnist", *quick, "--epochs", "3", "--resume")
    assert f"argument --network: {tmp_path} holds checkpoints of linear, mlp; give --network" in error
    assert json.loads(record.read_text()) == kept


def test_run_sh_names_an_unknown_command_before_setting_up(tmp_path: Path) -> None:
    """./run.sh bogus ran the whole set-up (apt-get, a kp build) before its usage line."""
    copy = tmp_path / "repo"
    (copy / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "run.sh", copy / "run.sh")
    (copy / "scripts" / "setup.sh").write_text("echo setting up; exit 1\n")
    result = subprocess.run(["bash", str(copy / "run.sh"), "bogus"], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 2 and "usage: ./run.sh [demo|test|setup|bench]" in result.stderr
    assert "setting up" not in result.stdout


def test_the_readme_s_python_runs(tmp_path: Path) -> None:
    """Each Python block of the README runs as shown, and prints what its `# prints` comments say."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert len(blocks) >= 3
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])  # keeps kp where it was found
    for block in blocks:
        result = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True,
                                timeout=300, env={**os.environ, "PYTHONPATH": path}, check=False)
        assert result.returncode == 0, block + result.stderr
        for shown in re.findall(r"^print\(.*\)\s+# prints (.*)$", block, re.M):
            assert shown in result.stdout.splitlines(), (shown, result.stdout)
