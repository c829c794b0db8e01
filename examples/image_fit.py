"""Fit networks that map pixel coordinates (x, y) to colour on one RGB photograph, and compare them.

    .venv/bin/python examples/image_fit.py                       # small, quick on lavapipe
    .venv/bin/python examples/image_fit.py --size 256 --batch 16384 --epochs 200   # the full comparison

Networks: relu (a 256-128-64-32 ReLU MLP on raw coordinates), posenc (the same on an L=8 sin/cos
positional encoding), siren (sine activations with SIREN's initialisation), hash (a multi-level hash
encoding of learned features, gathered and bilinearly interpolated, then a 64-64 ReLU MLP). The image
is scikit-image's astronaut unless --image is given. Writes the reconstructions beside the original.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from arguments import open_environment, output_directory, positive_float, positive_int, refuse_unwritable

import descent as dc
from descent import nn, optim
from descent.files import write_atomically

HIDDEN = (256, 128, 64, 32)


def load_image(path: str | None, size: int) -> np.ndarray:
    """An RGB float image in [0, 1] of size x size."""
    from skimage import data, transform

    if path is None:
        image = data.astronaut()
    else:
        try:
            image = _read(path)
        except OSError as error:
            if error.filename is not None:  # the file system's own error names the file
                raise
            raise ValueError(f"cannot read {path} as an image ({error})") from error
        except Exception as error:  # a decoder's own errors on a damaged file (struct.error, SyntaxError, ...)
            raise ValueError(f"cannot read {path} as an image ({type(error).__name__}: {error})") from error
        if image.ndim == 4 and image.shape[0] == 1:  # a one-frame GIF comes as (frames, H, W, channels)
            image = image[0]
    return transform.resize(rgb_unit(image), (size, size), anti_aliasing=True).astype(np.float32)


def _read(path: str) -> np.ndarray:
    """The pixels of the image file at `path`. A CMYK image (a print JPEG) is converted to RGB by Pillow:
    its four channels would pass for RGBA. A file Pillow does not know goes to imageio's other readers;
    where none knows it either, the error says so instead of suggesting imageio plugins to install."""
    from PIL import Image, UnidentifiedImageError
    from skimage import io

    try:
        with Image.open(path) as opened:
            if opened.mode == "CMYK":
                return np.asarray(opened.convert("RGB"))
    except UnidentifiedImageError:
        try:
            return io.imread(path)
        except Exception as error:
            raise ValueError("neither Pillow nor imageio knows its format") from error
    return io.imread(path)


def rgb_unit(image: np.ndarray) -> np.ndarray:
    """Gray, gray+alpha, RGB or RGBA pixels as RGB floats in [0, 1]: integers scaled by their dtype's range
    (so 16-bit images are not read as 255 times too bright), floats clipped, alpha dropped, gray replicated."""
    from skimage import util

    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(f"expected a gray, gray+alpha, RGB or RGBA image, got an array of shape {image.shape}")
    colour = image[..., :3] if image.shape[-1] >= 3 else np.repeat(image[..., :1], 3, -1)
    return np.clip(util.img_as_float32(colour), 0.0, 1.0)


def coordinates(size: int) -> np.ndarray:
    axis = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    y, x = np.meshgrid(axis, axis, indexing="ij")
    return np.stack([x.ravel(), y.ravel()], -1)


def positional_encoding(points: np.ndarray, levels: int = 8) -> np.ndarray:
    """[p, sin(2^k pi p), cos(2^k pi p)] for k < levels: 2 + 4 * levels features."""
    features = [points]
    for k in range(levels):
        features += [np.sin(2.0**k * np.pi * points), np.cos(2.0**k * np.pi * points)]
    return np.concatenate(features, -1).astype(np.float32)


class HashGrid:
    """Instant-NGP's multi-resolution hash encoding of 2-D points. The host computes, per point and
    level, the table rows of the 4 surrounding grid corners and their bilinear weights; the network
    gathers the learned rows on the device (and scatter-adds their gradients)."""

    def __init__(self, levels: int = 8, table: int = 2**14, features: int = 2, coarsest: int = 16,
                 finest: int = 256) -> None:
        self.levels, self.table, self.features = levels, table, features
        growth = math.exp((math.log(finest) - math.log(coarsest)) / max(levels - 1, 1))
        self.resolutions = [int(coarsest * growth**level) for level in range(levels)]

    def encode(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) points in [-1, 1] -> (N, levels * 4 * 2): corner rows (as floats), then weights."""
        unit = (points + 1.0) * 0.5
        rows, weights = [], []
        for level, resolution in enumerate(self.resolutions):
            scaled = unit * resolution
            base = np.floor(scaled).astype(np.int64)
            fraction = scaled - base
            for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
                corner_x, corner_y = base[:, 0] + dx, base[:, 1] + dy
                if (resolution + 1) ** 2 <= self.table:
                    index = corner_x + corner_y * (resolution + 1)
                else:
                    index = (corner_x * 1) ^ (corner_y * 2654435761)
                rows.append(level * self.table + index % self.table)
                wx = fraction[:, 0] if dx else 1.0 - fraction[:, 0]
                wy = fraction[:, 1] if dy else 1.0 - fraction[:, 1]
                weights.append(wx * wy)
        return np.concatenate([np.stack(rows, -1), np.stack(weights, -1)], -1).astype(np.float32)


class HashEncoding(nn.Module):
    """Gathers the corner rows of the learned tables and interpolates them: (N, 8L) -> (N, L * F)."""

    def __init__(self, grid: HashGrid) -> None:
        super().__init__()
        self.grid = grid

    def create(self, env: Any, rng: np.random.Generator) -> None:
        shape = (self.grid.levels * self.grid.table, self.grid.features)
        self.parameter(env, "table", rng.uniform(-1e-4, 1e-4, shape).astype(np.float32))

    def forward(self, s: dc.Scope, x: dc.Array) -> dc.Array:
        corners = self.grid.levels * 4
        rows = x[:, :corners].astype(dc.int32)
        weights = x[:, corners:]
        features = dc.take(s.read(self.table), rows, 0) * dc.expand_dims(weights, -1)  # (N, 4L, F)
        features = features.reshape(x.shape[0], self.grid.levels, 4, self.grid.features)
        return dc.sum(features, axis=2).reshape(x.shape[0], self.grid.levels * self.grid.features)


class SirenLayer(nn.Dense):
    """sin(omega * (x @ W + b)) with SIREN's initialisation: U(-1/n, 1/n) for the first layer,
    U(-sqrt(6/n)/omega, sqrt(6/n)/omega) after it."""

    def __init__(self, inputs: int, outputs: int, first: bool, omega: float = 30.0, activate: bool = True) -> None:
        super().__init__(inputs, outputs)
        self.first, self.omega, self.activate = first, omega, activate

    def create(self, env: Any, rng: np.random.Generator) -> None:
        bound = 1.0 / self.inputs if self.first else math.sqrt(6.0 / self.inputs) / self.omega
        self.parameter(env, "weight", rng.uniform(-bound, bound, (self.inputs, self.outputs)).astype(np.float32))
        self.parameter(env, "bias", rng.uniform(-bound, bound, (self.outputs,)).astype(np.float32))

    def forward(self, s: dc.Scope, x: dc.Array) -> dc.Array:
        y = super().forward(s, x)
        return dc.sin(y * self.omega) if self.activate else y


def mlp(inputs: int, hidden: tuple[int, ...]) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Dense(inputs, width), nn.ReLU()]
        inputs = width
    return layers + [nn.Dense(inputs, 3)]


def siren() -> nn.Module:
    sizes = (2,) + HIDDEN
    layers = [SirenLayer(a, b, first=k == 0) for k, (a, b) in enumerate(zip(sizes, sizes[1:]))]
    return nn.Sequential(*layers, SirenLayer(HIDDEN[-1], 3, first=False, activate=False))


# name -> (model, input encoding, default learning rate) for a hash grid
NETWORKS: dict[str, Callable[[HashGrid], tuple[nn.Module, Callable, float]]] = {
    "relu": lambda grid: (nn.Sequential(*mlp(2, HIDDEN)), lambda p: p, 1e-3),
    "posenc": lambda grid: (nn.Sequential(*mlp(34, HIDDEN)), positional_encoding, 1e-3),
    "siren": lambda grid: (siren(), lambda p: p, 1e-4),
    "hash": lambda grid: (nn.Sequential(HashEncoding(grid), *mlp(grid.levels * grid.features, (64, 64))),
                          grid.encode, 1e-2),
}


def network_list(text: str) -> list[str]:
    """--networks as a list, every name checked before any network trains."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in NETWORKS]
    if unknown or not names:
        problem = f"unknown network {', '.join(map(repr, unknown))}" if unknown else "no network given"
        raise argparse.ArgumentTypeError(f"{problem}; choose from {','.join(NETWORKS)}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise argparse.ArgumentTypeError(f"network {', '.join(map(repr, repeated))} given twice")
    return names


def psnr(image: np.ndarray, reference: np.ndarray) -> float:
    error = float(np.mean((np.clip(image, 0, 1) - reference) ** 2))
    return 10 * math.log10(1.0 / max(error, 1e-12))


def save_figure(reference: np.ndarray, results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(results) + 1, figsize=(3 * (len(results) + 1), 3.3))
    axes[0].imshow(reference)
    axes[0].set_title("original")
    for axis, (name, result) in zip(axes[1:], results.items()):
        axis.imshow(np.clip(result["image"], 0, 1))
        axis.set_title(f"{name}: {result['psnr']:.1f} dB")
    for axis in axes:
        axis.axis("off")
    figure.tight_layout()
    write_atomically(path, lambda handle: figure.savefig(handle, format="png", dpi=100))
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--networks", type=network_list, default=",".join(NETWORKS))
    parser.add_argument("--image", default=None, help="an image file (default: scikit-image's astronaut)")
    parser.add_argument("--size", type=positive_int, default=96, help="the image is resized to size x size")
    parser.add_argument("--batch", type=positive_int, default=4096, help="random pixels per step")
    parser.add_argument("--epochs", type=positive_int, default=20, help="passes over every pixel")
    parser.add_argument("--lr", type=positive_float, default=None,
                        help="default: per network (1e-3, 1e-4 SIREN, 1e-2 hash)")
    parser.add_argument("--seed", type=int, default=0, help="any integer, as torch.manual_seed")
    parser.add_argument("--device", default=None, help="device index or name substring (default DESCENT_DEVICE)")
    parser.add_argument("--out", type=output_directory, default="examples/out/image_fit",
                        help="folder for image_fit.png and image_fit.json (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args()

    try:
        reference = load_image(args.image, args.size)
        points = coordinates(args.size)
    except (OSError, ValueError) as error:
        parser.error(f"argument --image: {error}")
    except MemoryError as error:
        parser.error(f"argument --size: {args.size} x {args.size} pixels do not fit in memory ({error})")
    colours = reference.reshape(-1, 3)
    grid = HashGrid()
    env = open_environment(parser, args.device)
    out = Path(args.out)
    refuse_unwritable(parser, (out / "image_fit.png", out / "image_fit.json"))
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    for name in args.networks:
        model, encode, lr = NETWORKS[name](grid)
        model.build(env, seed=args.seed, name=name)
        trainer = nn.Trainer(env, model, loss=dc.mse, optimizer=optim.Adam(lr if args.lr is None else args.lr))
        inputs = encode(points)
        start = time.perf_counter()
        history = trainer.fit(inputs, colours, epochs=args.epochs, batch_size=args.batch, seed=args.seed,
                              progress=not args.no_progress)
        seconds = time.perf_counter() - start
        image = trainer.predict(inputs, batch_size=args.batch).reshape(reference.shape)
        results[name] = {"image": image, "psnr": psnr(image, reference), "seconds": seconds,
                         "first_loss": history[0]["loss"], "final_loss": history[-1]["loss"]}
        print(f"{name:7s} PSNR {results[name]['psnr']:5.2f} dB, loss {history[0]['loss']:.4f} -> "
              f"{history[-1]['loss']:.4f}, {seconds:.1f} s ({env.device.name})", flush=True)
    summary = {name: {k: v for k, v in r.items() if k != "image"} for name, r in results.items()}
    record = json.dumps({"args": vars(args), "device": env.device.name, "results": summary}, indent=2)
    write_atomically(out / "image_fit.json", lambda handle: handle.write(record.encode()))
    save_figure(reference, results, out / "image_fit.png")
    print(f"wrote {out / 'image_fit.png'}, {out / 'image_fit.json'}")


if __name__ == "__main__":
    main()
