"""A tiny HTTP/1.1 keep-alive client on asyncio protocols, cheap enough to share 2 cores.

One request in flight per connection (no pipelining). Responses may carry Content-Length or
be chunked. `WatchConnection` reads a chunked, newline-delimited JSON stream (a watch) and
hands each line to a callback together with the wall-clock time its bytes arrived.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit


class ConnectionClosed(Exception):
    pass


def request_bytes(method: str, path: str, host: str, body: bytes = b"",
                  headers: Iterable[tuple[str, str]] = ()) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in headers]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _parse_head(buf: bytearray, end: int) -> tuple[int, int, bool]:
    """(status, content-length or -1, chunked) from the bytes before the blank line."""
    lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length, chunked = -1, False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    return status, length, chunked


def _dechunk(buf: bytearray, pos: int) -> tuple[bytes, int] | None:
    """A whole chunked body starting at `pos` and where it ends, or None if incomplete."""
    parts: list[bytes] = []
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
        start = eol + 2
        if size == 0:
            trailer_end = buf.find(b"\r\n\r\n", eol)  # no trailers: the CRLF right after
            if buf[start:start + 2] == b"\r\n":
                return b"".join(parts), start + 2
            if trailer_end < 0:
                return None
            return b"".join(parts), trailer_end + 4
        if len(buf) < start + size + 2:
            return None
        parts.append(bytes(buf[start:start + size]))
        pos = start + size + 2


class Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._head_end = -1
        self._status = 0
        self._length = -1
        self._chunked = False
        self._lost: BaseException | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if self._waiter is not None:
            self._parse()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = exc or ConnectionClosed("connection closed by server")
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(self._lost)
        self._waiter = None

    # API
    def request(self, data: bytes) -> asyncio.Future[tuple[int, bytes]]:
        """Send a prebuilt request; the future resolves to (status, body)."""
        assert self.transport is not None and self._waiter is None
        fut: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        if self._lost is not None:
            fut.set_exception(self._lost)
            return fut
        self._waiter = fut
        self.transport.write(data)
        if self._buf:
            self._parse()
        return fut

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _parse(self) -> None:
        buf = self._buf
        if self._head_end < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            self._status, self._length, self._chunked = _parse_head(buf, end)
            self._head_end = end + 4
        start = self._head_end
        if self._chunked:
            found = _dechunk(buf, start)
            if found is None:
                return
            body, end = found
        elif self._length >= 0:
            end = start + self._length
            if len(buf) < end:
                return
            body = bytes(buf[start:end])
        else:
            return  # body delimited by close: not used by this server
        del buf[:end]
        fut, self._waiter, self._head_end = self._waiter, None, -1
        assert fut is not None
        if not fut.done():
            fut.set_result((self._status, body))


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or (443 if parts.scheme == "https" else 80)


async def connect(url: str, tls: ssl.SSLContext | None = None) -> Connection:
    """A connection to `url`; an https URL needs `tls` (which CA to trust, which client
    certificate to present)."""
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(Connection, *_address(url), ssl=tls)
    return protocol


class WatchConnection(asyncio.Protocol):
    """A watch stream: `on_line(line, arrived_ns)` for each newline-terminated JSON line."""

    def __init__(self, on_line: Callable[[bytes, int], None]) -> None:
        self.on_line = on_line
        self.transport: asyncio.Transport | None = None
        self.status: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._buf = bytearray()
        self._pending = bytearray()  # chunk payload not yet ending in a newline
        self._pos = -1  # where chunk framing starts; -1 until the head is parsed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        now = time.time_ns()
        buf = self._buf
        buf += data
        if self._pos < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status, _, _ = _parse_head(buf, end)
            self._pos = end + 4
            if not self.status.done():
                self.status.set_result(status)
        pos = self._pos
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                break
            size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
            start = eol + 2
            if len(buf) < start + size + 2:
                break
            if size == 0:
                if not self.ended.done():
                    self.ended.set_result(None)
                pos = start + 2
                break
            self._pending += buf[start:start + size]
            pos = start + size + 2
        del buf[:pos]
        self._pos = 0
        if b"\n" in self._pending:
            *lines, rest = bytes(self._pending).split(b"\n")
            self._pending = bytearray(rest)
            for line in lines:
                if line:
                    self.on_line(line, now)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.status.done():
            self.status.set_exception(exc or ConnectionClosed("closed before the response"))
        if not self.ended.done():
            self.ended.set_result(None)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_watch(url: str, path: str, on_line: Callable[[bytes, int], None],
                     headers: Iterable[tuple[str, str]] = (),
                     tls: ssl.SSLContext | None = None) -> WatchConnection:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(lambda: WatchConnection(on_line), *_address(url),
                                               ssl=tls)
    assert protocol.transport is not None
    protocol.transport.write(request_bytes("GET", path, urlsplit(url).netloc, headers=headers))
    return protocol
