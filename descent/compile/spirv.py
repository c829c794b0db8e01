"""GLSL to SPIR-V with glslangValidator, cached on disk by a hash of source and compiler version
(without the compiler on PATH, the version that last filled the cache).

A cache file holds the SPIR-V and then a SHA-256 of its key and SPIR-V, so that a truncated,
damaged or misplaced file is compiled again instead of reaching the driver."""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import signal
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
    """Where SPIR-V is kept: $DESCENT_CACHE/spirv (~ expanded), else ~/.cache/descent/spirv."""
    root = os.environ.get("DESCENT_CACHE") or os.path.join("~", ".cache", "descent")
    return Path(os.path.expanduser(root)) / "spirv"


@functools.cache
def _find_compiler() -> tuple[str | None, str | None, str]:
    """glslangValidator's path and --version output; the version is None, with the reason, where it is
    not on PATH or cannot be run (a cache filled earlier still serves then)."""
    path = shutil.which(COMPILER)
    if path is None:
        return None, None, f"{COMPILER} was not found on PATH"
    try:
        result = subprocess.run([path, "--version"], capture_output=True, text=True, errors="replace", check=False)
    except OSError as error:
        return path, None, f"{COMPILER} at {path} cannot be run ({error.strerror or error})"
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()
        return path, None, f"`{path} --version` {_exit_status(result.returncode)}" + (f": {output}" if output else "")
    return path, result.stdout.strip(), ""


def compiler_version() -> str | None:
    """glslangValidator's --version output, or None where it is not on PATH or cannot be run."""
    return _find_compiler()[1]


def _exit_status(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by signal {-code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"failed with exit status {code}"


def _missing_compiler() -> CompileError:
    path, _, reason = _find_compiler()
    remedy = "install it with: sudo apt-get install glslang-tools" if path is None else \
        "reinstall it with: sudo apt-get install --reinstall glslang-tools"
    return CompileError(at_user_line(
        f"{reason}; descent needs it to compile shaders that are not in its cache ({cache_dir()}).\n  {remedy}"))


def _version_record(folder: Path) -> Path:
    """The file recording the version of the compiler that last filled the cache in `folder`: with
    none on PATH, cached shaders are looked up under that version, so a warm cache runs without it."""
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
    except (OSError, ValueError):  # damaged: as if absent, and written again
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
        _warn_once(f"descent cannot cache SPIR-V at {error.filename or path} ({error.strerror}); shaders will be "
                   f"compiled again in every process. {_cache_advice(path, error)}")


def _cache_advice(path: Path, error: OSError) -> str:
    """What to do about a failed cache write: a folder where the entry goes, a file where a folder goes, or
    a folder that cannot be written."""
    if isinstance(error, IsADirectoryError):
        return f"A folder stands where the cache entry goes: remove {path}."
    blocker = next((folder for folder in reversed(path.parents) if folder.exists() and not folder.is_dir()), None)
    if blocker is not None:
        return f"{blocker} is a file where a cache folder goes: remove it, or set DESCENT_CACHE to another folder."
    return "Set DESCENT_CACHE to a writable folder."


def _write_bytes(path: Path, data: bytes) -> None:
    """Write a cache file atomically, making its folder first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda handle: handle.write(data))


def _compile(source: str, label: str, origin: str) -> bytes:
    """SPIR-V from glslangValidator; a shader it rejects is shown numbered with its errors, while a compiler
    that crashes, is killed or writes nothing is reported as such, at the user's line."""
    path = _find_compiler()[0]
    ops = f" (ops from {origin})" if origin else ""
    with tempfile.TemporaryDirectory(prefix="descent-") as work:
        shader = Path(work) / f"{label}.comp"
        shader.write_text(source, encoding="utf-8")
        output = Path(work) / f"{label}.spv"
        try:
            result = subprocess.run(
                [path, *FLAGS, "-o", str(output), str(shader)], capture_output=True, text=True, errors="replace",
                check=False,
            )
        except OSError as error:
            raise CompileError(at_user_line(f"{COMPILER} at {path} cannot be run ({error.strerror or error}) to "
                                            f"compile the shader for {label}{ops}")) from None
        message = (result.stdout + result.stderr).strip()
        if result.returncode > 0 and "ERROR:" in message:
            raise CompileError(f"{COMPILER} rejected the shader for {label}{ops}:\n{message}\n"
                               f"--- GLSL ---\n{_numbered(source)}")
        if result.returncode != 0 or not output.exists():
            status = _exit_status(result.returncode) if result.returncode else "exited without writing SPIR-V"
            raise CompileError(at_user_line(f"{COMPILER} at {path} {status} while compiling the shader for "
                                            f"{label}{ops}: {message or 'it printed nothing'}"))
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
    directory = os.path.expanduser(os.environ.get("DESCENT_DUMP_SHADERS", ""))
    if directory:
        digest = hashlib.sha256(source.encode()).hexdigest()[:10]
        ending = f"// ops from {origin}\n" if origin else ""
        try:
            os.makedirs(directory, exist_ok=True)
            Path(directory, f"{label}-{digest}.comp").write_text(source + ending, encoding="utf-8")
        except OSError as error:
            _warn_once(f"DESCENT_DUMP_SHADERS={directory}: cannot write shaders there ({error})")
