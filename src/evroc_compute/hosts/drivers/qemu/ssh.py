"""Reaching a guest over SSH through its forwarded loopback port.

The host's OpenSSH client is used as is: the guest's host keys are new on every VM, so
they are neither checked nor remembered (the port is on loopback, owned by this host).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from . import commands
from .errors import MachineError
from .seed import GUEST_USER

_OPTIONS = ("-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            "-o", "ConnectTimeout=5", "-o", "IdentitiesOnly=yes")


@dataclass(frozen=True)
class SshResult:
    returncode: int  # 255: ssh itself failed (no connection, authentication refused)
    stdout: str
    stderr: str


async def run(command: str, *, port: int, key: Path, user: str = GUEST_USER,
              host: str = "127.0.0.1", timeout: float = 30.0) -> SshResult:
    """Run `command` in the guest; a timeout is reported as returncode 255."""
    process = await asyncio.create_subprocess_exec(
        commands.require_tool("ssh", "openssh-client"), *_OPTIONS, "-i", str(key), "-p", str(port),
        f"{user}@{host}", command,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        return SshResult(255, "", f"ssh did not finish within {timeout:g} s")
    return SshResult(process.returncode if process.returncode is not None else 255,
                     stdout.decode(errors="replace"), stderr.decode(errors="replace"))


async def wait_for_ssh(*, port: int, key: Path, user: str = GUEST_USER, timeout: float = 120.0,
                       interval: float = 0.5) -> float:
    """Wait until `ssh ... true` succeeds; the seconds it took, or MachineError after `timeout`."""
    started = time.monotonic()
    last = SshResult(255, "", "not tried")
    while time.monotonic() - started < timeout:
        last = await run("true", port=port, key=key, user=user, timeout=10.0)
        if last.returncode == 0:
            return time.monotonic() - started
        await asyncio.sleep(interval)
    raise MachineError(f"no SSH to {user}@127.0.0.1:{port} within {timeout:g} s: "
                       f"{last.stderr.strip() or f'exit {last.returncode}'}")
