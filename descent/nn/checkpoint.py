"""Checkpoints: named parameters in a standard .npz file, written atomically, checked when loaded."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

import numpy as np

from descent.errors import DescentError, at_user_line
from descent.files import checked_path, write_atomically
from descent.graph.parameter import Parameter

if TYPE_CHECKING:
    from descent.runtime.environment import Environment


class CheckpointError(DescentError, ValueError):
    """A checkpoint that cannot be read, or does not fit the model it is loaded into."""


def is_metadata(name: str) -> bool:
    """Entries named __like_this__ hold counts about the run (a trainer's epochs), not parameters."""
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def save(env: Environment, parameters: dict[str, Parameter], path: str | os.PathLike,
         metadata: dict[str, np.ndarray] | None = None) -> None:
    """Write every parameter's value, and the `metadata` arrays, to `path` (.npz). A temporary file
    is renamed over the target only once complete, so a crash mid-save leaves the previous
    checkpoint intact."""
    path = checked_path(path, "save a checkpoint to", CheckpointError)
    if path.is_dir():
        raise CheckpointError(at_user_line(f"cannot save a checkpoint to {path}: it is a directory (left "
                                           f"untouched); give a file name such as {path / 'model.npz'}"))
    clashing = [name for name in parameters if is_metadata(name)]
    if clashing:
        raise CheckpointError(at_user_line(f"cannot save a checkpoint: parameter name(s) {clashing} have the "
                                           "form __name__ that checkpoints keep for metadata; rename them"))
    if not path.parent.is_dir():
        raise CheckpointError(at_user_line(f"cannot save a checkpoint to {path}: the folder {path.parent} "
                                           "does not exist (or is not a folder)"))
    arrays = {name: env.read(parameter) for name, parameter in parameters.items()}
    arrays.update(metadata or {})
    try:
        write_atomically(path, lambda handle: _write_npz(handle, arrays), tidy=True)
    except OSError as error:
        raise CheckpointError(at_user_line(f"cannot save a checkpoint to {path}: {error.strerror or error} "
                                           "(a file already there is left untouched)")) from error


def _write_npz(handle: Any, arrays: dict[str, np.ndarray]) -> None:
    """An uncompressed .npz, as np.savez writes, whatever the names (np.savez takes them as keyword
    arguments, so `file` and `allow_pickle` would clash with its own)."""
    with zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, value in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)


def load(env: Environment, parameters: dict[str, Parameter], path: str | os.PathLike,
         ignore_extra: bool = False, metadata_kinds: dict[str, tuple[tuple[int, ...], str]] | None = None,
         optimizer_state: Collection[str] = (), nonnegative: Collection[str] = (),
         fallbacks: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    """Read `path` into the parameters, after checking that names, shapes and dtypes all match
    (entries the model lacks are allowed with `ignore_extra`; metadata named in `metadata_kinds`, where
    present, must have that shape and a numpy dtype kind among those given, finite where floats); on
    any mismatch nothing is written and the error lists every difference, pointing to model_only where
    no model parameter differs, only optimiser state (`optimizer_state` names it), metadata or entries
    the model lacks; entries named in `nonnegative` (a learning rate, a step count, metadata too) must be finite and
    at least 0; `fallbacks` maps a name the checkpoint may lack to an older entry that stands in for it
    (the one step counter an optimiser kept for all its parameters).
    Returns the checkpoint's metadata entries."""
    path = checked_path(path, "load a checkpoint from", CheckpointError)
    if not path.exists():
        raise CheckpointError(at_user_line(f"checkpoint {path} does not exist"))
    if path.is_dir():
        raise CheckpointError(at_user_line(f"checkpoint {path} is a directory, not a checkpoint file"))
    arrays = None
    try:
        with open(path, "rb") as file:
            start = file.read(6)
        if not start.startswith((b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY")):  # numpy reads others as pickles
            raise CheckpointError(at_user_line(
                f"checkpoint {path} is not an .npz archive (it starts with {start!r}); it was not loaded and the "
                "parameters are unchanged"))
        stored = np.load(path, allow_pickle=False)
        if isinstance(stored, np.lib.npyio.NpzFile):
            with stored:
                arrays = {name: stored[name] for name in stored.files}
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, NotImplementedError,
            RuntimeError) as error:  # zipfile's for damaged method, version or encryption fields
        raise CheckpointError(at_user_line(
            f"checkpoint {path} is corrupt or truncated ({type(error).__name__}: {error}); "
            "it was not loaded and the parameters are unchanged")) from None
    if arrays is None:
        raise CheckpointError(at_user_line(
            f"{path} is not a checkpoint (.npz archive) but a single array, as np.save writes; "
            "it was not loaded and the parameters are unchanged"))
    not_arrays = sorted(name for name, value in arrays.items() if not isinstance(value, np.ndarray))
    if not_arrays:
        raise CheckpointError(at_user_line(
            f"{path} is not a checkpoint: its member(s) {not_arrays} are not arrays (.npy); "
            "it was not loaded and the parameters are unchanged"))
    metadata = {name: arrays.pop(name) for name in list(arrays) if is_metadata(name)}
    stand_ins = {name: old for name, old in (fallbacks or {}).items() if name not in arrays and old in arrays}
    arrays |= {name: arrays[old] for name, old in stand_ins.items()}
    for old in set(stand_ins.values()) - set(parameters):
        del arrays[old]
    problems = []
    for name, (shape, kinds) in (metadata_kinds or {}).items():
        value = metadata.get(name)
        if value is not None and (value.shape != shape or value.dtype.kind not in kinds
                                  or (value.dtype.kind == "f" and not np.all(np.isfinite(value)))
                                  or (name in nonnegative and value.dtype.kind in "iuf" and np.any(value < 0))):
            wanted = "integers" if kinds == "iu" else "finite numbers"
            wanted += " of at least 0" if name in nonnegative else ""
            problems.append(f"'{name}': checkpoint has {value.dtype} of shape {value.shape} ({value}), "
                            f"not {wanted} of shape {shape}")
    missing = sorted(set(parameters) - set(arrays))
    for name in missing:
        problems.append(f"missing from the checkpoint: '{name}' {parameters[name].shape}")
    for name in sorted(set(arrays) - set(parameters)) if not ignore_extra else ():
        problems.append(f"not in the model: '{name}' {arrays[name].shape}")
    troubled = set(missing)
    for name in sorted(set(arrays) & set(parameters)):
        if (problem := _mismatch(arrays[name], parameters[name], name in nonnegative)) is not None:
            problems.append(f"'{stand_ins.get(name, name)}': {problem}")  # an entry standing in is named once
            troubled.add(name)
    problems = list(dict.fromkeys(problems))
    if problems:
        helps = troubled <= set(optimizer_state)  # model_only drops the state, metadata and extras, not the model
        hint = "\n  (Trainer.load(path, model_only=True) restores only the model's parameters)" if helps else ""
        raise CheckpointError(at_user_line(f"checkpoint {path} does not fit:\n  " + "\n  ".join(problems) + hint))
    for name, parameter in parameters.items():
        env.write(parameter, arrays[name])
    return metadata


def _mismatch(array: np.ndarray, expected: Parameter, nonnegative: bool) -> str | None:
    """Why a checkpoint array cannot be loaded into `expected` (its shape, its dtype, or a count that
    must be a finite number of at least 0), or None where it fits."""
    if array.shape != expected.shape:
        return f"checkpoint has shape {array.shape}, the model {expected.shape}"
    if np.dtype(array.dtype) != np.dtype(expected.dtype.numpy) and expected.dtype.name != "bool":
        return f"checkpoint has dtype {array.dtype}, the model {expected.dtype.name}"
    if nonnegative and not np.all(np.isfinite(array) & (array >= 0)):
        return f"checkpoint has {array[()]:g}, not a finite number of at least 0"
    return None
