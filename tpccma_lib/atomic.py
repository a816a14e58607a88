"""One way to write a file so that readers see the old file or the new one, never half of one.

:func:`atomic_write` writes to ``.<name>.<pid>.<n>.tmp`` in the target's folder, flushes and
fsyncs it, then ``os.replace``-s it over the target. On any failure (an exception, a full
disk, Ctrl-C) the temporary file is removed, so a failed write leaves neither a partial target
nor a stray temporary file; a full disk is reported as :class:`DiskFullError` ("no space left
on device while writing <path>"). New files get the ordinary permissions (``0666`` less the
umask, e.g. ``0644``), not the ``0600`` of ``tempfile.mkstemp``.

A process killed outright (SIGKILL, power cut) cannot clean up; :func:`remove_stale_temp_files`
deletes such leftovers of dead processes when the next run starts in that folder.
"""

from __future__ import annotations

import errno
import itertools
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO

__all__ = [
    "DiskFullError",
    "NotWritableError",
    "check_writable",
    "atomic_write",
    "atomic_write_text",
    "is_disk_full",
    "pid_alive",
    "remove_stale_temp_files",
]

_DISK_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_counter = itertools.count()
#: ``.<name>.<pid>.tmp`` (older writers) or ``.<name>.<pid>.<n>.tmp`` (this module).
_TEMP_NAME = re.compile(r"^\.(?P<name>.+?)\.(?P<pid>\d+)(?:\.\d+)?\.tmp$")


class DiskFullError(OSError):
    """The device (or the user's quota) ran out of space during a write."""


class NotWritableError(PermissionError):
    """A folder or file the command must write to cannot be written."""


def check_writable(path: str | os.PathLike[str], what: str, folder: bool = True) -> Path:
    """Fail early, with a one-line message, when ``path`` cannot be written.

    Args:
        path: a folder (created if missing) or, with ``folder=False``, a file to be written
            (its folder is created if missing; the file itself is not touched).
        what: how the message names it, e.g. ``"--out"``.
    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    Raises:
        NotWritableError: the folder cannot be created or written, or the file is a folder
            or read-only.
    """
    path = Path(path)
    target = path if folder else path.parent
    try:
        if folder and path.exists() and not path.is_dir():
            raise NotWritableError(f"{what} {path} is a file, not a folder")
        if not folder and path.is_dir():
            raise NotWritableError(f"{what} {path} is a folder, not a file")
        if not folder and path.exists() and not os.access(path, os.W_OK):
            raise NotWritableError(f"{what} {path} is read-only")
        target.mkdir(parents=True, exist_ok=True)
        probe = target / f".write-probe.{os.getpid()}.{next(_counter)}.tmp"
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        probe.unlink()
    except NotWritableError as exc:
        raise NotWritableError(f"{exc}; choose another path.") from None
    except OSError as exc:
        raise NotWritableError(
            f"cannot write to {what} {path} ({exc.strerror or exc}); choose a folder you can "
            "write to."
        ) from None
    return path


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` or an exception it was raised from is ENOSPC / EDQUOT.

    ``torch.save`` turns the ``OSError`` of its file object into a ``RuntimeError``
    ("unexpected pos ..."); the original stays in ``__context__``.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _DISK_FULL_ERRNOS:
            return True
        current = current.__cause__ or current.__context__
    return False


def _temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{next(_counter)}.tmp")


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable (best effort: not every file system allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], object]) -> Path:
    """Call ``write(handle)`` on a temporary binary file, then move it over ``path``.

    Args:
        path: the target; its folder is created if missing.
        write: writes the content to the open binary file it is given.
    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    Raises:
        DiskFullError: the device is full (the temporary file is removed).
        Exception: whatever ``write`` raised (the temporary file is removed).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # umask applies
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, Exception) and is_disk_full(exc):
            raise DiskFullError(
                errno.ENOSPC,
                f"no space left on device while writing {path}; free some space (or write "
                "elsewhere) and run again",
            ) from exc
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """:func:`atomic_write` of ``text``."""
    data = text.encode(encoding)
    return atomic_write(path, lambda handle: handle.write(data))


def pid_alive(pid: int) -> bool:
    """Whether a process with id ``pid`` exists on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def remove_stale_temp_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete ``.<name>.<pid>[.<n>].tmp`` files and folders (an entry written as a folder, then
    renamed into place) in ``folder`` whose writer process is gone.

    Temporary files of live processes (this one included) are kept. Returns what was removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in folder.iterdir():
        match = _TEMP_NAME.match(entry.name)
        if match is None or pid_alive(int(match["pid"])):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except FileNotFoundError:
            continue
        removed.append(entry)
    return removed
