"""Running the external tools the driver relies on (qemu-img, apt-get, debootstrap, ssh...).

One place turns "not installed", "timed out" and "exited non-zero" into errors that name
the command and quote its output, so callers never parse return codes themselves.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from .errors import QemuDriverError, ToolError

# How much of a failed command's output an error message quotes.
_OUTPUT_TAIL = 2000


def require_tool(name: str, package: str) -> str:
    """The full path of `name`, or a ToolError saying which Debian package provides it."""
    found = shutil.which(name)
    if found is None:
        raise ToolError(f"{name} is not installed (apt-get install -y {package})")
    return found


async def run(
    argv: Sequence[str | Path],
    *,
    timeout: float,
    error: type[QemuDriverError] = ToolError,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """Run a command to completion and return its stdout; raise `error` if it fails.

    stderr is captured separately so a failure can quote it; a command that outlives
    `timeout` seconds is killed (and reaped) rather than left behind.
    """
    args = [str(a) for a in argv]
    try:
        process = await asyncio.create_subprocess_exec(
            *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, cwd=cwd, env=None if env is None else dict(env))
    except FileNotFoundError as exc:
        raise error(f"{args[0]} is not installed: {exc}") from exc
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise error(f"{' '.join(args)} did not finish within {timeout:g} s") from None
    if process.returncode != 0:
        output = (stderr or stdout).decode(errors="replace").strip()[-_OUTPUT_TAIL:]
        raise error(f"{' '.join(args)} exited with {process.returncode}: {output}")
    return stdout.decode(errors="replace")
