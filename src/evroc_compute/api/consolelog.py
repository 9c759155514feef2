"""A QEMU VM's serial console as the `virtualmachines/console` subresource serves it.

Two processes serve it: the API server for the VMs of its own host (`serve --driver qemu`),
and a host agent for its host's VMs (the API server proxies to it). Both read the file QEMU
writes, `<vms>/NAMESPACE/NAME/console.log`, with the same meaning: `tailLines=N` starts N
lines from the end (the last MAX_READ bytes at most), `follow=true` goes on with what is
appended while `alive()` says the guest may still print (read every FILE_POLL seconds).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from pathlib import Path

API_SERVER_USER = "system:apiserver"
"""The CN of the client certificate the API server presents to agents (as kube-apiserver's
apiserver-kubelet-client); an agent's console endpoint serves nobody else."""

FILE_POLL = 0.2  # seconds between reads of a followed console file
MAX_READ = 4 * 2**20  # a console's last bytes read for an answer; older output is skipped


def console_path(vm_dir: Path, namespace: str, name: str) -> Path:
    """The console of VM `namespace/name` under a QEMU host's VM directory."""
    return vm_dir / namespace / name / "console.log"


def parse_tail_lines(value: str | None) -> int | None:
    """The `tailLines` parameter: None for the whole console; ValueError saying what is wrong."""
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()):
        raise ValueError(f'tailLines must be a number of lines (0 or more), not "{value}"')
    return int(value)


def tail(data: bytes, lines: int | None) -> bytes:
    if lines is None:
        return data
    return b"".join(data.splitlines(keepends=True)[-lines:]) if lines else b""


def read_end(path: Path, lines: int | None) -> tuple[bytes, int]:
    """The console's last `lines` lines (all of it without) and where the file ends."""
    with path.open("rb") as file:
        size = file.seek(0, 2)
        file.seek(max(0, size - MAX_READ))
        data = file.read(size)
    return tail(data, lines), size


def read_from(path: Path, offset: int) -> bytes | None:
    """What follows `offset` (64 KiB at most); None once the file is gone."""
    try:
        with path.open("rb") as file:
            file.seek(offset)
            return file.read(1 << 16)
    except FileNotFoundError:
        return None


async def follow(path: Path, first: bytes, offset: int,
                 alive: Callable[[], bool]) -> AsyncGenerator[bytes]:
    """`first`, then what is written to the file after `offset`, until the file is removed or
    `alive()` is false and everything written before is sent."""
    if first:
        yield first
    while True:
        chunk = await asyncio.to_thread(read_from, path, offset)
        if chunk is None:
            return  # the VM's files are gone
        if chunk:
            offset += len(chunk)
            yield chunk
        elif not alive():
            return
        else:
            await asyncio.sleep(FILE_POLL)
