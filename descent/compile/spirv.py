"""GLSL to SPIR-V with glslangValidator, cached on disk by a hash of source and compiler version."""

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

COMPILER = "glslangValidator"
FLAGS = ("-V", "--target-env", "vulkan1.1", "-S", "comp")

stats = {"compiled": 0, "cached": 0}


def cache_dir() -> Path:
    """Where SPIR-V is kept: $DESCENT_CACHE/spirv, else ~/.cache/descent/spirv."""
    root = os.environ.get("DESCENT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "descent")
    return Path(root) / "spirv"


@functools.cache
def compiler_version() -> str:
    path = shutil.which(COMPILER)
    if path is None:
        raise CompileError(
            f"{COMPILER} was not found on PATH; descent needs it to compile shaders.\n"
            "  install it with: sudo apt-get install glslang-tools"
        )
    result = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    return result.stdout.strip()


def _numbered(source: str) -> str:
    return "\n".join(f"{n:4d}  {line}" for n, line in enumerate(source.splitlines(), start=1))


def compile_glsl(source: str, label: str = "kernel", origin: str = "", probe: bool = False) -> bytes:
    """SPIR-V for a compute shader; compiles only on a cache miss. `origin` names the ops for errors.
    A `probe` (descent measuring the driver, not a user's kernel) is neither dumped nor counted."""
    if not probe:
        _dump(source, label)
    key = hashlib.sha256("\0".join((source, compiler_version(), *FLAGS)).encode()).hexdigest()
    cached = cache_dir() / f"{key}.spv"
    if cached.exists():
        stats["cached"] += not probe
        return cached.read_bytes()
    with tempfile.TemporaryDirectory(prefix="descent-") as work:
        shader = Path(work) / f"{label}.comp"
        shader.write_text(source)
        output = Path(work) / f"{label}.spv"
        result = subprocess.run(
            [COMPILER, *FLAGS, "-o", str(output), str(shader)], capture_output=True, text=True, check=False
        )
        stats["compiled"] += not probe
        if result.returncode != 0 or not output.exists():
            message = (result.stdout + result.stderr).strip()
            raise CompileError(
                f"{COMPILER} rejected the shader for {label}{' (ops from ' + origin + ')' if origin else ''}:\n"
                f"{message}\n--- GLSL ---\n{_numbered(source)}"
            )
        spirv = output.read_bytes()
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(dir=cached.parent, suffix=".part")
        with os.fdopen(fd, "wb") as handle:
            handle.write(spirv)
        os.replace(partial, cached)
    except OSError as error:
        _warn_uncached(str(cached.parent), str(error))
    return spirv


@functools.cache
def _warn_uncached(directory: str, reason: str) -> None:
    """Once per folder: a cache that cannot be written only costs compile time on the next run."""
    warnings.warn(at_user_line(f"descent cannot cache SPIR-V in {directory} ({reason}); shaders will be "
                               "compiled again in every process. Set DESCENT_CACHE to a writable folder."),
                  RuntimeWarning, stacklevel=2)


def _dump(source: str, label: str) -> None:
    """With DESCENT_DUMP_SHADERS=dir, write every shader there for reading and debugging."""
    directory = os.environ.get("DESCENT_DUMP_SHADERS")
    if directory:
        os.makedirs(directory, exist_ok=True)
        digest = hashlib.sha256(source.encode()).hexdigest()[:10]
        Path(directory, f"{label}-{digest}.comp").write_text(source)
