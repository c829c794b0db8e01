"""Train a classifier on Fashion-MNIST with descent.

    .venv/bin/python examples/fashion_mnist.py --network convnet --epochs 2
    .venv/bin/python examples/fashion_mnist.py --network convnet --epochs 4 --resume
    .venv/bin/python examples/fashion_mnist.py --eval examples/out/fashion_mnist/convnet.npz

Networks: linear, mlp (784-300-10), convnet (descent's README ConvNet), convnet-blur (the same with
anti-aliased max pooling). Writes a checkpoint and a record after every epoch, and a loss/accuracy plot
at the end (or when stopped), to --out; --resume continues from that checkpoint up to --epochs, as the
uninterrupted run would have.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
from arguments import (
    momentum_float,
    open_environment,
    output_directory,
    positive_float,
    positive_int,
    refuse,
    refuse_unwritable,
)

from descent import nn, optim
from descent.datasets import DatasetError, fashion_mnist
from descent.files import write_atomically

NETWORKS = ["linear", "mlp", "convnet", "convnet-blur"]
RESUMED_AS_TRAINED = ("optimizer", "batch_size", "seed", "cosine", "limit", "test_limit", "momentum")  # not --lr


def network(name: str) -> nn.Module:
    if name == "linear":
        return nn.Sequential(nn.Flatten(), nn.Dense(784, 10))
    if name == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Dense(784, 300), nn.ReLU(), nn.Dense(300, 10))
    if name in ("convnet", "convnet-blur"):
        pool = nn.BlurMaxPool2D if name == "convnet-blur" else (lambda: nn.MaxPool2D(2))
        return nn.Sequential(
            nn.Conv2D(1, 16, 3, padding=1), nn.LeakyReLU(0.01), pool(),
            nn.Conv2D(16, 32, 3, padding=1, groups=2), nn.LeakyReLU(0.01), pool(),
            nn.Flatten(), nn.Dropout(0.5), nn.Dense(1568, 128), nn.LeakyReLU(0.01), nn.Dense(128, 10),
        )
    raise ValueError(f"unknown network {name!r}")


def _checked_history(entries: object) -> list[dict]:
    """A record's history of epochs, each with a whole epoch number and a number for every figure the
    summary and plot read; epochs before the first dropped."""
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise TypeError("its history is not a list of epochs")
    for entry in entries:
        if type(entry.get("epoch")) is not int:
            raise TypeError(f"epoch {entry.get('epoch')!r} is not a whole number")
        for name in ("loss", "accuracy", "val_loss", "val_accuracy", "time"):
            if name not in entry or type(entry[name]) not in (int, float):
                raise TypeError(f"epoch {entry['epoch']} has {name} {entry.get(name, 'missing')!r}, not a number")
    return [entry for entry in entries if entry["epoch"] >= 1]


def plot(history: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [h["epoch"] for h in history]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for axes in (left, right):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.plot(epochs, [h["loss"] for h in history], "o-", label="train")
    left.plot(epochs, [h["val_loss"] for h in history], "o-", label="test")
    left.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    left.legend()
    right.plot(epochs, [100 * h["accuracy"] for h in history], "o-", label="train")
    right.plot(epochs, [100 * h["val_accuracy"] for h in history], "o-", label="test")
    right.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    right.legend()
    figure.suptitle(title)
    figure.tight_layout()
    write_atomically(path, lambda handle: figure.savefig(handle, format="png", dpi=100))
    plt.close(figure)


def trained_network(checkpoint: Path) -> str | None:
    """The --network a checkpoint was trained with, from the record its run wrote beside it (None without
    one), so that --eval builds that network."""
    try:
        name = json.loads(checkpoint.with_suffix(".json").read_text())["args"]["network"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return name if name in NETWORKS else None


def resumed_network(out: Path) -> str | None:
    """The --network of the one run whose checkpoint is in `out` (None where there is none), so that
    --resume, like --eval, needs no --network; a choice between several is the user's."""
    found = [name for name in NETWORKS if (out / f"{name}.npz").is_file()]
    if len(found) > 1:
        raise ValueError(f"{out} holds checkpoints of {', '.join(found)}; give --network to say which to resume")
    return found[0] if found else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--network", choices=NETWORKS,
                        help="default convnet; with --eval or --resume, the network the checkpoint was trained with")
    parser.add_argument("--epochs", type=positive_int, default=1)
    parser.add_argument("--batch-size", type=positive_int, default=100)
    parser.add_argument("--optimizer", default="adam", choices=["adam", "adamw", "sgd"])
    parser.add_argument("--lr", type=positive_float, default=None,
                        help="default 1e-3; with --resume, the checkpoint's rate unless given")
    parser.add_argument("--momentum", type=momentum_float, default=None, help="for sgd (default 0.9)")
    parser.add_argument("--cosine", action="store_true", help="cosine learning-rate decay over the epochs")
    parser.add_argument("--seed", type=int, default=0, help="any integer, as torch.manual_seed")
    parser.add_argument("--device", default=None, help="device index or name substring (default DESCENT_DEVICE)")
    parser.add_argument("--data-dir", default=str(fashion_mnist.DEFAULT_DIR))
    parser.add_argument("--limit", type=positive_int, default=None, help="train on the first N examples only")
    parser.add_argument("--test-limit", type=positive_int, default=None,
                        help="evaluate on the first N test examples only")
    parser.add_argument("--out", type=output_directory, default="examples/out/fashion_mnist")
    parser.add_argument("--eval", metavar="CHECKPOINT", help="evaluate a saved model on the test set and exit")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out up to --epochs")
    parser.add_argument("--overwrite", action="store_true", help="train afresh over a run already in --out")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    if args.eval and args.resume:
        refuse(parser, "--resume", ValueError("--eval tests a checkpoint and --resume trains on from the one in "
                                              "--out; give one of them"))
    if args.resume and args.overwrite:
        refuse(parser, "--overwrite", ValueError("--resume continues the run in --out and --overwrite replaces it; "
                                                 "give one of them"))
    if args.momentum is not None and args.optimizer != "sgd":
        refuse(parser, "--momentum", ValueError(f"--momentum is for --optimizer sgd; {args.optimizer} keeps moving "
                                                "averages of its own (its betas)"))
    if args.optimizer == "sgd" and args.momentum is None:
        args.momentum = 0.9
    try:
        trained = trained_network(Path(args.eval)) if args.eval else None
        if args.resume and args.network is None:
            trained = resumed_network(Path(args.out))
    except ValueError as error:
        refuse(parser, "--network", error)
    if args.network is not None and trained not in (None, args.network):
        refuse(parser, "--network", ValueError(f"{args.eval} was trained with --network {trained}"))
    guessed = args.network is None and trained is None
    args.network = args.network or trained or "convnet"

    try:
        x_train, y_train = fashion_mnist.load("train", args.data_dir)
        x_test, y_test = fashion_mnist.load("test", args.data_dir)
    except DatasetError as error:
        refuse(parser, "--data-dir", error)
    if args.limit is not None:
        x_train, y_train = x_train[: args.limit], y_train[: args.limit]
    if args.test_limit is not None:
        x_test, y_test = x_test[: args.test_limit], y_test[: args.test_limit]
    env = open_environment(parser, args.device)
    model = network(args.network).build(env, seed=args.seed)
    lr = 1e-3 if args.lr is None else args.lr
    optimizer = {"adam": lambda: optim.Adam(lr), "adamw": lambda: optim.AdamW(lr),
                 "sgd": lambda: optim.SGD(lr, momentum=args.momentum)}[args.optimizer]()
    trainer = nn.Trainer(env, model, optimizer=optimizer)
    print(f"{args.network} on {env.device.name}: {sum(p.size for p in model.parameters())} parameters")

    if args.eval:
        try:
            trainer.load(args.eval, model_only=True)
        except nn.CheckpointError as error:
            if guessed and Path(args.eval).is_file():  # no record beside the checkpoint named its network
                error = ValueError(f"built --network {args.network}, as none was given: {error}")
            refuse(parser, "--eval", error)
        metrics = trainer.evaluate(x_test, y_test)
        print(f"test loss {metrics['loss']:.4f}, test accuracy {100 * metrics['accuracy']:.2f}%")
        return

    out = Path(args.out)
    checkpoint, record = out / f"{args.network}.npz", out / f"{args.network}.json"
    figure = out / f"{args.network}.png"
    refuse_unwritable(parser, (checkpoint, record, figure))
    title = f"{args.network} on Fashion-MNIST ({env.device.name})"
    if checkpoint.exists() and not (args.resume or args.overwrite):
        refuse(parser, "--out", ValueError(f"{checkpoint} holds an earlier run; continue it with --resume, replace it "
                                           "with --overwrite, or give another --out"))
    history, seconds = [], 0.0
    if args.resume:
        if record.exists():
            try:
                saved = json.loads(record.read_text())
                settings, seconds = dict(saved["args"]), float(saved["seconds"])
                if not 0 <= seconds < math.inf:
                    raise ValueError(f"its seconds are {saved['seconds']!r}")
                history = _checked_history(saved["history"])
            except (ValueError, KeyError, TypeError) as error:
                refuse(parser, "--resume", ValueError(f"{record} is damaged ({type(error).__name__}: {error}); "
                                                      "move it away to resume without the history of earlier epochs"))
            for name in RESUMED_AS_TRAINED:
                if name in settings and settings[name] != getattr(args, name) and (
                        name != "momentum" or args.optimizer == "sgd"):
                    flag = "--" + name.replace("_", "-")
                    was = (f"{'with' if settings[name] else 'without'} {flag}" if isinstance(settings[name], bool)
                           else f"with {flag} {settings[name]}")
                    refuse(parser, flag, ValueError(f"{checkpoint} was trained {was}; resume with it, or train "
                                                    "afresh into another --out"))
            if args.cosine and settings.get("epochs", args.epochs) != args.epochs:
                refuse(parser, "--epochs", ValueError(
                    f"{checkpoint} was trained with --cosine over --epochs {settings['epochs']}, and another length "
                    "would change the rates of the epochs it has trained; resume with that --epochs, or train "
                    "afresh into another --out"))
        try:
            trainer.load(checkpoint)
        except nn.CheckpointError as error:
            refuse(parser, "--resume", error)
        last = max((h["epoch"] for h in history), default=trainer.epochs_trained)
        if last < trainer.epochs_trained:  # saved before the checkpoint, a run's record is never behind it
            refuse(parser, "--resume", ValueError(
                f"{record} ends at epoch {last} and {checkpoint} has trained {trainer.epochs_trained}: "
                "they are of different runs; move the record away to resume without the history of earlier epochs"))
        if args.lr is not None:
            given = "the cosine schedule's starting rate" if args.cosine else "learning rate"
            was = trainer.optimizer.initial_lr if args.cosine else trainer.optimizer.lr
            print(f"{given} {args.lr:g} as given (the checkpoint's was {was:.7g})")
            trainer.optimizer.set_lr(args.lr)
            trainer.optimizer.initial_lr = args.lr
        if trainer.epochs_trained > args.epochs:
            refuse(parser, "--epochs", ValueError(f"{checkpoint} has trained {trainer.epochs_trained} epochs, more "
                                                  f"than {args.epochs}; --resume trains on up to --epochs"))
        if trainer.epochs_trained == args.epochs:
            if history and not figure.exists():
                plot(history, figure, title)
            print(f"{checkpoint} has trained {trainer.epochs_trained} epochs already; ask for more with --epochs")
            return
        seconds -= sum(h["time"] for h in history if h["epoch"] > trainer.epochs_trained)  # trained again
        history = [h for h in history if h["epoch"] <= trainer.epochs_trained]
        print(f"resuming after epoch {trainer.epochs_trained} of {checkpoint}")
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter() - seconds
    args.lr = trainer.optimizer.initial_lr  # the rate the run starts from (a schedule's first), for the record
    saved: list[int] = []  # epochs this run has saved

    def report(epoch: int, logs: dict) -> None:
        """Print the epoch, and save what a resumed run needs: the history so far, then the checkpoint. In
        that order a stop between the two leaves the record an epoch ahead, which a resume drops and
        trains again; the other way round it would lose the epoch from the history."""
        history.append(logs)
        text = json.dumps({"args": vars(args), "device": env.device.name, "history": history,
                           "seconds": time.perf_counter() - start}, indent=2)
        write_atomically(record, lambda handle: handle.write(text.encode()))
        trainer.save(checkpoint)
        saved.append(epoch)
        print(f"epoch {epoch}: train loss {logs['loss']:.4f}, train accuracy {100 * logs['accuracy']:.2f}%, "
              f"test accuracy {100 * logs['val_accuracy']:.2f}%, {logs['time']:.1f} s", flush=True)

    try:
        trainer.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                    validation_data=(x_test, y_test), on_epoch=report, progress=not args.no_progress,
                    schedule=optim.CosineLR() if args.cosine else None, initial_epoch=trainer.epochs_trained)
    except KeyboardInterrupt:
        if history:
            plot(history, figure, title)
        if not checkpoint.exists():
            raise SystemExit("stopped before the first epoch was saved; nothing to resume") from None
        if args.overwrite and not saved:
            raise SystemExit(f"stopped before the first epoch was saved; {checkpoint} still holds the earlier "
                             "run") from None
        raise SystemExit(f"stopped; {checkpoint}, {record} and {figure} hold the epochs saved, and --resume "
                         "continues") from None
    total = time.perf_counter() - start
    plot(history, figure, title)
    print(f"best test accuracy {100 * max(h['val_accuracy'] for h in history):.2f}%, "
          f"final {100 * history[-1]['val_accuracy']:.2f}%; {total:.0f} s in all")
    print(f"wrote {checkpoint}, {record}, {figure}")


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
