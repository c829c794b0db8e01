"""Files: paths checked before use, and writes that a reader, or a crash, sees whole or not at all."""

from __future__ import annotations

import errno
import glob
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from descent.errors import at_user_line


def checked_path(path: object, action: str, error: type[Exception]) -> Path:
    """`path` as a Path whose state the file system can tell, else `error` (or TypeError for a non-path)
    naming `action` and the user's line: a NUL or an over-long name cannot be told."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(at_user_line(f"cannot {action} {path!r}: give a file path (str or os.PathLike)"))
    path = Path(path)
    if "\0" in str(path):
        raise error(at_user_line(f"cannot {action} {str(path)!r}: a file name cannot hold a NUL character"))
    try:
        path.exists()
    except (OSError, ValueError) as problem:
        reason = getattr(problem, "strerror", None) or problem
        raise error(at_user_line(f"cannot {action} {str(path)!r}: {reason}")) from None
    return path


def write_atomically(path: str | os.PathLike, write: Callable[[BinaryIO], object], tidy: bool = False) -> None:
    """Call `write` on a temporary file beside the file a link at `path` leads to, then rename it over
    that file, keeping its permissions (a new file gets open()'s); on any failure the temporary goes.
    A file open() could not write (read-only, or a device or pipe) is refused, not replaced. With `tidy`,
    temporaries that killed writes to `path` left are removed after (it lists the folder: for a checkpoint's,
    not for a cache of many small files)."""
    path = Path(os.path.realpath(path))
    status = check_replaceable(path)
    mode = stat.S_IMODE(status.st_mode) if status is not None else _new_file_mode()
    fd, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(partial, mode)
        os.replace(partial, path)
    except BaseException:
        if os.path.exists(partial):
            os.unlink(partial)
        raise
    if tidy:
        _remove_stale_partials(path)


def check_replaceable(path: str | os.PathLike) -> os.stat_result | None:
    """Raise the OSError `write_atomically(path, ...)` would, so a program can refuse an output before
    any work rather than after it: a file its mode protects (as open() would for this user), a folder,
    or a device, pipe or socket, which is not the user's data to replace with a regular file. Returns
    the status of the file there (a link's target's), None where there is none yet."""
    path = Path(path)
    if not path.exists():
        return None
    status = path.stat()
    if stat.S_ISDIR(status.st_mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    if not stat.S_ISREG(status.st_mode):
        raise OSError(errno.EINVAL, "it is not a regular file (a device, pipe or socket), which a save would replace",
                      str(path))
    if not os.access(path, os.W_OK):
        raise PermissionError(errno.EACCES, "the file is read-only", str(path))
    return status


def _remove_stale_partials(path: Path) -> None:
    """Remove the temporaries that writes to `path` killed mid-way left behind (named with their process,
    so that one still running is left alone)."""
    for partial in path.parent.glob(f".{glob.escape(path.name)}.*.partial"):
        pid = partial.name[len(path.name) + 2:].split(".")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _running(int(pid)):
            try:
                partial.unlink()
            except OSError:
                pass


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's: alive
        pass
    return True


def _new_file_mode() -> int:
    """The mode open() gives a new file (0o666 less the umask); mkstemp's 0o600 would hide the file
    from the user's group and from other tools. Linux reports the umask in /proc/self/status;
    elsewhere it is read by setting it, which races with other threads."""
    try:
        with open("/proc/self/status") as status:
            umask = next(int(line.split()[1], 8) for line in status if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask
