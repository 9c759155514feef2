"""Is a QEMU process still there? Answered from /proc, for children and adopted processes alike.

After an agent restart the QEMU processes it finds are not its children, so liveness
cannot come from wait(); it comes from /proc, with two traps handled: an exited child
is a zombie until reaped (PID 1 here does not reap orphans), and a recycled pid must not
be mistaken for our QEMU, so the command line must mention the VM's own pidfile.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path


def read_pid(pidfile: Path) -> int | None:
    """The pid QEMU wrote, or None if there is no (valid) pidfile."""
    try:
        return int(pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def is_alive(pid: int, marker: str) -> bool:
    """True if `pid` runs and its command line contains `marker`; reaps it if it is our child.

    An exiting child can look dead (empty command line, or a zombie that cannot be reaped
    until its last thread is gone) before it can be reaped; it counts as alive until it is,
    so that the next look collects it instead of leaving it behind.
    """
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False  # our child, exited and now reaped
        ours = True
    except ChildProcessError:
        ours = False
    proc = Path(f"/proc/{pid}")
    try:
        stat = (proc / "stat").read_text()
        cmdline = (proc / "cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return False
    if stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X") or not cmdline:
        return ours  # exiting (an exiting process's command line reads empty)
    return marker.encode() in cmdline


async def wait_gone(pid: int, marker: str, timeout: float, interval: float = 0.1) -> bool:
    """Wait up to `timeout` seconds for the process to end; True if it did."""
    deadline = time.monotonic() + timeout
    while is_alive(pid, marker):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(interval)
    return True


def kill(pid: int) -> None:
    """SIGKILL, tolerating a process that has just exited."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
