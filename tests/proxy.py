"""A TCP forwarder a test can cut and restore: a network failure between two real processes.

It runs on its own event loop in a thread, so sync and async tests use it alike."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import Iterator
from typing import Literal

from tests.conftest import free_port

Mode = Literal["forward", "cut", "drop-answers"]
APPLICATION_DATA = 23  # the TLS record type of what follows the handshake


def tls12(context: ssl.SSLContext) -> ssl.SSLContext:
    """`context`, held to TLS 1.2 (see Proxy)."""
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    return context


class Proxy:
    """127.0.0.1:`port` forwarded to `target_port`.

    `forward`: a plain forwarder. `cut`: open connections are closed and new ones are closed at
    once (the target is unreachable). `drop-answers`: requests reach the target, but each
    connection is closed as soon as the target starts to answer (the answer is lost in transit).

    With `tls`, the target speaks TLS, and "starts to answer" is its first application-data
    record: the handshake passes. That holds for TLS 1.2 only (1.3 wraps its handshake in
    application-data records too), so clients of a lossy TLS proxy use TLS 1.2 (`tls12`).
    """

    def __init__(self, target_port: int, tls: bool = False) -> None:
        self.target_port = target_port
        self.tls = tls
        self.port = free_port()
        self.mode: Mode = "forward"
        self._loop = asyncio.new_event_loop()
        self._writers: set[asyncio.StreamWriter] = set()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", self.port))
        self._ready.set()
        self._loop.run_forever()
        server.close()
        self._loop.run_until_complete(server.wait_closed())
        self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "cut":
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        try:
            await asyncio.gather(self._pipe(reader, up_writer, answers=False),
                                 self._pipe(up_reader, writer, answers=True))
        finally:
            for end in (writer, up_writer):
                self._writers.discard(end)
                end.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                    answers: bool) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while chunk := await self._next(reader):
                answering = answers and (not self.tls or chunk[0] == APPLICATION_DATA)
                if self.mode == "cut" or (answering and self.mode == "drop-answers"):
                    break
                writer.write(chunk)
                await writer.drain()
        writer.close()

    async def _next(self, reader: asyncio.StreamReader) -> bytes:
        """What arrived; with TLS, one whole record (type, version, length, payload)."""
        if not self.tls:
            return await reader.read(1 << 16)
        header = await reader.readexactly(5)
        return header + await reader.readexactly(int.from_bytes(header[3:5], "big"))

    def set(self, mode: Mode) -> None:
        """Switch mode; `cut` also closes every open connection."""
        async def apply() -> None:
            self.mode = mode
            if mode == "cut":
                for writer in list(self._writers):
                    writer.transport.abort()
        asyncio.run_coroutine_threadsafe(apply(), self._loop).result(10)

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@contextlib.contextmanager
def proxy(target_port: int, tls: bool = False) -> Iterator[Proxy]:
    forwarder = Proxy(target_port, tls)
    try:
        yield forwarder
    finally:
        forwarder.close()
