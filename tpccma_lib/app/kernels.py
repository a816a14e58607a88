"""Stop the notebook kernels this process started (what Ctrl-C during a sweep needs).

jupyter_client starts every kernel in a new session, so a Ctrl-C in the terminal reaches the
sweep but not its kernels, and papermill keeps waiting for them. :func:`stop_kernels` finds the
direct child processes of this process that run ``ipykernel`` (through ``/proc``, Linux) and
interrupts them (SIGINT: the running cell raises ``KeyboardInterrupt``, so training code can
clean up), then kills the ones still running after a grace period (SIGKILL to the kernel's
process group, which it leads).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

__all__ = ["child_kernels", "stop_kernels"]

_PROC = Path("/proc")


def _parent_and_cmdline(pid: int) -> tuple[int, str]:
    stat = (_PROC / str(pid) / "stat").read_text()
    ppid = int(stat[stat.rindex(")") + 2 :].split()[1])  # fields after "(comm) state"
    cmdline = (
        (_PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    )
    return ppid, cmdline


def child_kernels(parent: int | None = None) -> list[int]:
    """Pids of the direct children of ``parent`` (default: this process) running ipykernel."""
    parent = os.getpid() if parent is None else parent
    if not _PROC.is_dir():
        return []
    out = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid, cmdline = _parent_and_cmdline(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue  # the process ended meanwhile, or is not readable
        if ppid == parent and "ipykernel" in cmdline:
            out.append(int(entry.name))
    return sorted(out)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie has ended: it only waits for its parent to read its status
        return (_PROC / str(pid) / "stat").read_text().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return False


def stop_kernels(grace_s: float = 2.0) -> list[int]:
    """SIGINT every kernel this process started; SIGKILL those still alive after ``grace_s``.

    Returns:
        the pids that were signalled.
    """
    pids = child_kernels()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.05)
    for pid in pids:
        if not _alive(pid):
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
    return pids
