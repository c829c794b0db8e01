"""GLSL to SPIR-V with glslangValidator, cached on disk by a hash of source and compiler version
(without the compiler on PATH, the version that last filled the cache).

A cache file holds the SPIR-V and then a SHA-256 of its key and SPIR-V, so that a truncated,
damaged or misplaced file is compiled again instead of reaching the driver."""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

from descent.errors import CompileError, at_user_line
from descent.files import write_atomically

COMPILER = "glslangValidator"
FLAGS = ("-V", "--target-env", "vulkan1.1", "-S", "comp")

stats = {"compiled": 0, "cached": 0}


def cache_dir() -> Path:
    """Where SPIR-V is kept: $DESCENT_CACHE/spirv, else ~/.cache/descent/spirv."""
    root = os.environ.get("DESCENT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "descent")
    return Path(root) / "spirv"


@functools.cache
def compiler_version() -> str | None:
    """glslangValidator's --version output, or None where it is not on PATH."""
    path = shutil.which(COMPILER)
    if path is None:
        return None
    result = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    return result.stdout.strip()


def _missing_compiler() -> CompileError:
    return CompileError(at_user_line(
        f"{COMPILER} was not found on PATH; descent needs it to compile shaders that are not in its cache "
        f"({cache_dir()}).\n  install it with: sudo apt-get install glslang-tools"))


def _version_record(folder: Path) -> Path:
    """The version of the compiler that last filled the cache in `folder`: with none on PATH, cached
    shaders are looked up under it, so that a warm cache runs without the compiler."""
    return folder / "compiler-version"


@functools.cache
def _record_version(folder: Path, version: str) -> None:
    try:
        if _recorded_version(folder) != version:
            _write_bytes(_version_record(folder), version.encode())
    except OSError:
        pass  # the SPIR-V write beside it has warned


def _recorded_version(folder: Path) -> str | None:
    try:
        return _version_record(folder).read_text(encoding="utf-8")
    except OSError:
        return None


def _numbered(source: str) -> str:
    return "\n".join(f"{n:4d}  {line}" for n, line in enumerate(source.splitlines(), start=1))


def compile_glsl(source: str, label: str = "kernel", origin: str = "", probe: bool = False) -> bytes:
    """SPIR-V for a compute shader; compiles only on a cache miss. `origin` names the ops for errors.
    A `probe` (descent measuring the driver, not a user's kernel) is neither dumped nor counted."""
    if not probe:
        _dump(source, label, origin)
    version = compiler_version()
    key_version = version if version is not None else _recorded_version(cache_dir())
    key = hashlib.sha256("\0".join((source, key_version or "", *FLAGS)).encode()).hexdigest()
    cached = cache_dir() / f"{key}.spirv"
    spirv = _read_cached(cached, key) if key_version is not None else None
    if spirv is not None:
        stats["cached"] += not probe
        return spirv
    if version is None:
        raise _missing_compiler()
    spirv = _compile(source, label, origin)
    stats["compiled"] += not probe
    _write_cached(cached, key, spirv)
    _record_version(cache_dir(), version)
    return spirv


def _digest(key: str, spirv: bytes) -> bytes:
    return hashlib.sha256(key.encode() + spirv).digest()


def _read_cached(path: Path, key: str) -> bytes | None:
    """The SPIR-V cached for `key`, or None where there is none or the file does not check out."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    spirv, digest = data[:-32], data[-32:]
    return spirv if len(data) > 32 and digest == _digest(key, spirv) else None


def _write_cached(path: Path, key: str, spirv: bytes) -> None:
    """Write the SPIR-V and its digest; failure only warns."""
    try:
        _write_bytes(path, spirv + _digest(key, spirv))
    except OSError as error:
        _warn_once(f"descent cannot cache SPIR-V in {path.parent} ({error.strerror}); shaders will be compiled "
                   "again in every process. Set DESCENT_CACHE to a writable folder.")


def _write_bytes(path: Path, data: bytes) -> None:
    """Write a cache file atomically, making its folder first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda handle: handle.write(data))


def _compile(source: str, label: str, origin: str) -> bytes:
    with tempfile.TemporaryDirectory(prefix="descent-") as work:
        shader = Path(work) / f"{label}.comp"
        shader.write_text(source, encoding="utf-8")
        output = Path(work) / f"{label}.spv"
        result = subprocess.run(
            [COMPILER, *FLAGS, "-o", str(output), str(shader)], capture_output=True, text=True, errors="replace",
            check=False,
        )
        if result.returncode != 0 or not output.exists():
            message = (result.stdout + result.stderr).strip()
            raise CompileError(
                f"{COMPILER} rejected the shader for {label}{' (ops from ' + origin + ')' if origin else ''}:\n"
                f"{message}\n--- GLSL ---\n{_numbered(source)}"
            )
        return output.read_bytes()


@functools.cache
def _warn_once(message: str) -> None:
    """A RuntimeWarning naming the user's line, once per message: a cache or dump folder that cannot
    be written costs time or output, not results, and warning at every shader would bury the rest."""
    warnings.warn(at_user_line(message), RuntimeWarning, stacklevel=2)


def _dump(source: str, label: str, origin: str) -> None:
    """With DESCENT_DUMP_SHADERS=dir, write every shader there for reading and debugging, ending in a
    comment that names the user's lines its ops come from (kept out of the compiled source, so that
    the SPIR-V cache does not depend on where a program's lines are)."""
    directory = os.environ.get("DESCENT_DUMP_SHADERS")
    if directory:
        digest = hashlib.sha256(source.encode()).hexdigest()[:10]
        ending = f"// ops from {origin}\n" if origin else ""
        try:
            os.makedirs(directory, exist_ok=True)
            Path(directory, f"{label}-{digest}.comp").write_text(source + ending, encoding="utf-8")
        except OSError as error:
            _warn_once(f"DESCENT_DUMP_SHADERS={directory}: cannot write shaders there ({error})")
