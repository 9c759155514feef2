"""The side effects: `ip`, `nft` and `conntrack` commands, namespaces entered with setns, taps.

Everything here needs root (CAP_NET_ADMIN) and runs in the agent's process.  setns(2) moves
only the calling thread, and every function that enters a namespace leaves it again before it
returns, without awaiting in between, so the event loop's thread is never elsewhere when
another task runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import ipaddress
import json
import os
import shutil
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from evroc_compute.hosts.network.rules import Flow

CLONE_NEWNET = 0x40000000
TUNSETIFF = 0x400454CA
IFF_TAP, IFF_NO_PI, IFF_VNET_HDR = 0x0002, 0x1000, 0x4000
NETNS_DIR = Path("/run/netns")
LOCK_FILE = Path("/run/evroc-compute-network.lock")
TOOLS = {"ip": "iproute2", "nft": "nftables", "conntrack": "conntrack"}
_TIMEOUT = 30.0


class NetworkError(Exception):
    """A network command failed; the message has the command and what it printed."""


def missing() -> str | None:
    """Why bridged networking cannot run here, or None if it can."""
    if os.geteuid() != 0:
        return "it needs root (network namespaces, taps, nftables)"
    for tool, package in TOOLS.items():
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install -y {package})"
    try:
        os.close(os.open("/dev/net/tun", os.O_RDWR))
    except OSError as problem:
        return f"/dev/net/tun cannot be opened: {problem.strerror}"
    return None


async def run(*argv: str, netns: str | None = None, stdin: str | None = None,
              check: bool = True) -> str:
    """Run a command (in `netns` if given) and return its output; NetworkError if it fails."""
    full = ("ip", "netns", "exec", netns, *argv) if netns else argv
    process = await asyncio.create_subprocess_exec(
        *full, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(
            process.communicate(stdin.encode() if stdin is not None else None), _TIMEOUT)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise
    if check and process.returncode != 0:
        raise NetworkError(f"`{' '.join(full)}` failed ({process.returncode}): "
                           f"{err.decode(errors='replace').strip()}")
    return out.decode(errors="replace")


async def links(netns: str | None = None) -> list[dict[str, Any]]:
    """`ip -j link` of the root namespace or `netns`."""
    output = await run("ip", "-j", "-d", *(("-n", netns) if netns else ()), "link", "show")
    result: list[dict[str, Any]] = json.loads(output or "[]")
    return result


async def addresses(netns: str | None = None) -> list[dict[str, Any]]:
    output = await run("ip", "-j", *(("-n", netns) if netns else ()), "addr", "show")
    result: list[dict[str, Any]] = json.loads(output or "[]")
    return result


def flows(conntrack_list: str) -> list[Flow]:
    """The connections in `conntrack -L` output: first tuple's source and port, the reply
    tuple's source as the destination (the real one, after DNAT)."""
    found = []
    for line in conntrack_list.splitlines():
        words = line.split()
        fields: dict[str, list[str]] = {}
        for word in words:
            key, _, value = word.partition("=")
            if value:
                fields.setdefault(key, []).append(value)
        if not words or len(fields.get("src", ())) < 2:
            continue
        port = fields.get("dport", [None])[0]
        found.append(Flow(ipaddress.IPv4Address(fields["src"][0]),
                          ipaddress.IPv4Address(fields["src"][1]), words[0],
                          int(port) if port else None))
    return found


def namespaces(prefix: str) -> list[str]:
    """The named network namespaces whose names start with `prefix`."""
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix))


_libc = ctypes.CDLL(None, use_errno=True)


@contextlib.contextmanager
def inside(netns: str) -> Iterator[None]:
    """This thread in `netns` for the duration (no awaits inside: see the module docstring)."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(NETNS_DIR / netns, os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            raise NetworkError(f"cannot enter network namespace {netns}: "
                               f"{os.strerror(ctypes.get_errno())}")
        try:
            yield
        finally:
            if _libc.setns(home, CLONE_NEWNET) != 0:  # pragma: no cover - the kernel refused
                raise SystemExit("cannot return to the agent's network namespace")
    finally:
        os.close(target)
        os.close(home)


def open_tap(netns: str, name: str) -> int:
    """Create tap `name` in `netns` and return its fd; the tap lives while an fd holds it."""
    with inside(netns):
        fd = os.open("/dev/net/tun", os.O_RDWR)
        try:
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(),
                                                   IFF_TAP | IFF_NO_PI | IFF_VNET_HDR))
        except OSError as problem:
            os.close(fd)
            raise NetworkError(f"cannot create tap {name} in {netns}: {problem.strerror}") from None
    return fd


def socket_in(netns: str, family: int = socket.AF_INET,
              kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A socket made in `netns` (it stays there: connect or bind it from anywhere)."""
    with inside(netns):
        return socket.socket(family, kind)


class MachineLock:
    """Serializes network changes among the agents of one machine (and tasks of one agent)."""

    def __init__(self, path: Path = LOCK_FILE) -> None:
        self.path = path
        self._local = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def held(self) -> Any:
        async with self._local:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # releases the flock
