"""A run-folder lock: one process at a time trains (or sweeps) into a folder.

:func:`run_lock` holds ``<folder>/.tpccma.lock`` for the duration of a ``with`` block. The lock
is an ``fcntl.flock`` on that file, so the operating system releases it when the holder exits,
however it exits; the file records the holder's pid for messages. A second process (or thread)
asking for a held lock does **not wait**: it gets a :class:`RunLockedError` naming the folder
and the holder's pid, because two writers into one run folder would train the same run twice
and interleave its log. A lock file left by a process that died without removing it is
detected (its pid is gone and nobody holds the lock), reported with a warning and taken over.

POSIX only (``fcntl``), like the rest of the command line tooling.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import warnings
from collections.abc import Iterator
from pathlib import Path

from tpccma_lib.atomic import pid_alive

__all__ = ["LOCK_NAME", "RunLockedError", "run_lock"]

#: Name of the lock file inside a locked folder.
LOCK_NAME = ".tpccma.lock"


class RunLockedError(RuntimeError):
    """Another process is writing into this run folder; the message says which."""


def _holder(path: Path) -> tuple[int, str]:
    """(pid, host) recorded in a lock file; (0, "") when unreadable."""
    try:
        pid_text, _, host = path.read_text(encoding="utf-8").partition(" ")
        return int(pid_text), host.strip()
    except (OSError, ValueError):
        return 0, ""


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike[str], what: str = "run") -> Iterator[Path]:
    """Hold the lock of ``folder`` (created if missing) inside the ``with`` block.

    Args:
        folder: the run folder.
        what: what the folder holds, for the error message ("run", "sweep run", ...).
    Yields:
        the lock file's path.
    Raises:
        RunLockedError: another process (or another thread of this one) holds the lock.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid, host = _holder(path)
            holder = f"process {pid}" + (f" on {host}" if host else "") if pid else "a process"
            raise RunLockedError(
                f"the {what} folder {folder} is in use by {holder} (lock file {path}); wait "
                "for it to finish, or write into another folder."
            ) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            st_path = os.stat(path)
        except FileNotFoundError:
            st_path = None
        if st_path is None or st_path.st_ino != os.fstat(fd).st_ino:
            os.close(fd)  # the previous holder removed the file meanwhile: lock the new one
            continue
        break
    try:
        pid, host = _holder(path)
        if pid and pid != os.getpid() and host == socket.gethostname() and not pid_alive(pid):
            warnings.warn(
                f"breaking the stale lock {path} left by process {pid}, which is no longer "
                "running.",
                stacklevel=3,
            )
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        os.close(fd)
