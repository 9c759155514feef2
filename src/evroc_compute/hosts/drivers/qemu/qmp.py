"""Short QMP sessions with one VM's QEMU, over its unix socket.

A session per operation (connect, negotiate, run, disconnect) rather than a long-lived
connection: nothing to re-establish after an agent restart or a QEMU restart, and a
wedged monitor only ever costs one operation its timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from qemu.qmp import EventListener, ExecuteError, QMPClient, QMPError

from .errors import QmpError

DEFAULT_TIMEOUT = 10.0
_CLIENT_NAME = "evroc"
# qemu.qmp logs every failed connection at ERROR; ours are expected (a VM starting or
# exiting) and reported as QmpError, so our clients' loggers stay quiet.
logging.getLogger(f"qemu.qmp.protocol.{_CLIENT_NAME}").setLevel(logging.CRITICAL)


class Session:
    """One connected client; `execute` raises QmpError with QEMU's own message."""

    def __init__(self, client: QMPClient, socket: Path, timeout: float) -> None:
        self._client = client
        self._socket = socket
        self._timeout = timeout

    async def execute(self, command: str, arguments: Mapping[str, object] | None = None) -> Any:
        try:
            return await asyncio.wait_for(self._client.execute(command, arguments), self._timeout)
        except ExecuteError as exc:
            raise QmpError(f"QEMU refused {command}: {exc}") from exc
        except (QMPError, OSError, TimeoutError) as exc:
            raise QmpError(f"QMP {command} on {self._socket} failed: {exc!r}") from exc

    async def wait_for_event(self, name: str, device: str, listener: EventListener,
                             timeout: float) -> None:
        """Wait for event `name` about `device` on an already registered listener."""
        async def matching() -> None:
            async for event in listener:
                data = event.get("data")
                if event["event"] == name and isinstance(data, Mapping) and data.get("device") == device:
                    return
        await asyncio.wait_for(matching(), timeout)

    def listener(self, name: str) -> contextlib.AbstractContextManager[EventListener]:
        """Register for event `name` before causing it, so it cannot be missed."""
        return self._client.listener(name)


@contextlib.asynccontextmanager
async def session(socket: Path, timeout: float = DEFAULT_TIMEOUT) -> AsyncIterator[Session]:
    """A negotiated QMP session; QmpError if QEMU's monitor cannot be reached."""
    client = QMPClient(f"{_CLIENT_NAME}.{socket.parent.name}")
    try:
        await asyncio.wait_for(client.connect(str(socket)), timeout)
    except (QMPError, OSError, TimeoutError) as exc:
        with contextlib.suppress(QMPError, OSError, EOFError):
            await client.disconnect()
        raise QmpError(f"cannot reach QEMU's monitor at {socket}: {exc!r}") from exc
    try:
        yield Session(client, socket, timeout)
    finally:
        # EOFError: QEMU closed the monitor first (it does after `quit`).
        with contextlib.suppress(QMPError, OSError, EOFError):
            await client.disconnect()
