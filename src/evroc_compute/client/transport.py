"""HTTP/1.1 on asyncio's protocols: the transport under `HttpClient`.

httpx cost ~750 us of client CPU per GET over HTTPS on the 2-core machine the benchmarks run
on; the controllers process (`evroc-compute controllers`) makes about a dozen requests per VM,
so on httpx it would need more CPU than the server it relieves (docs/benchmarks.md, "Two
processes"). This transport does what the client needs and no more, for ~10x less: one request
at a time per connection (no pipelining), keep-alive connections pooled per server (at most
`max_connections` each, so the client stays under the server's per-user limit on requests in
flight), TLS with the caller's context, bodies framed by Content-Length, chunks or the end of
the connection, a body read whole or streamed as it arrives (watches), and deadlines.

Failures are `TransportError`s that say whether the request may have reached the server
(`sent`): a connection that could not be opened never carried it, one that broke after the
request was written may have.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple
from urllib.parse import urlsplit

# Stream bytes buffered before the socket stops being read (a slow watch consumer).
_HIGH_WATER = 1 << 20


class TransportError(Exception):
    """The exchange failed in transit; `sent`: the request may have reached the server."""

    sent = True


class ConnectError(TransportError):
    sent = False


class ConnectTimeout(TransportError):
    sent = False


class PoolTimeout(TransportError):
    sent = False


class ReadTimeout(TransportError):
    pass


class RemoteProtocolError(TransportError):
    """The connection closed, or the server's answer could not be read as HTTP/1.1."""


class Response(NamedTuple):  # a tuple: the cheapest record to make once per request
    status: int
    reason: str
    headers: dict[str, str]  # names in lower case
    body: bytes = b""


@dataclass
class _Origin:
    """One server: where to connect, what to put before every path, its idle connections."""

    host: str
    port: int
    tls: ssl.SSLContext | None
    authority: str  # the Host header
    prefix: str  # a path the server URL carries (e.g. /clusters/NAME)
    slots: asyncio.Semaphore
    idle: list[_Connection] = field(default_factory=list)


def _origin(url: str, tls: ssl.SSLContext | None, max_connections: int) -> _Origin:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    secure = parts.scheme == "https"
    return _Origin(parts.hostname, parts.port or (443 if secure else 80),
                   (tls or ssl.create_default_context()) if secure else None, parts.netloc,
                   parts.path.rstrip("/"), asyncio.Semaphore(max_connections))


def request_bytes(method: str, target: str, authority: str, headers: Sequence[tuple[str, str]],
                  body: bytes | None) -> bytes:
    """A request's head and body as they go on the wire."""
    head = f"{method} {target} HTTP/1.1\r\nhost: {authority}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers)
    if body is not None:
        head += f"content-length: {len(body)}\r\n"
    return (head + "\r\n").encode("latin-1") + (body or b"")


def parse_head(head: bytes) -> tuple[int, str, dict[str, str]]:
    """The status, reason phrase and headers of a response head (without its blank line)."""
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise RemoteProtocolError(f"not an HTTP/1.1 status line: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if version == "HTTP/1.0" and headers.get("connection", "").lower() != "keep-alive":
        headers["connection"] = "close"
    return int(code), reason, headers


# What delimits a body: its length, chunks, or the end of the connection.
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK, _TRAILER, _UNTIL_CLOSE, _DONE = range(7)


class _Connection(asyncio.Protocol):
    """One connection; one exchange at a time. The answer is parsed as it arrives: its head
    resolves `head`, its body either collects into `done` or, streamed, queues in `chunks`."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.lost: BaseException | None = None
        self._buf = bytearray()
        self._state = _DONE
        self._remaining = 0
        self._parts: list[bytes] = []
        self._streaming = False
        self._head: tuple[int, str, dict[str, str]] = (0, "", {})
        self.reusable = True
        self.head: asyncio.Future[None] | None = None
        self.done: asyncio.Future[Response] | None = None
        self.chunks: collections.deque[bytes] = collections.deque()
        self._queued = 0
        self._wake: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        if self._state == _DONE:  # nothing asked for: a server speaking out of turn
            self.reusable = False
            return
        self._buf += data
        try:
            self._feed()
        except (ValueError, RemoteProtocolError) as problem:
            self._fail(problem if isinstance(problem, RemoteProtocolError)
                       else RemoteProtocolError(f"unreadable answer: {problem}"))
            self.close()

    def eof_received(self) -> bool | None:
        self.reusable = False
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        if self._state == _UNTIL_CLOSE:
            self._body_part(bytes(self._buf))
            self._buf.clear()
            self._finish()
        self.lost = exc or RemoteProtocolError("the server closed the connection")
        if self._state != _DONE:
            self._fail(RemoteProtocolError(f"the connection closed mid-answer: {self.lost}")
                       if exc is None or not isinstance(exc, TransportError) else exc)
        self._notify()

    # one exchange
    def send(self, data: bytes, *, streaming: bool, timeout: float | None) -> None:
        assert self.transport is not None and self._state == _DONE
        loop = asyncio.get_running_loop()
        self._state, self._streaming, self._parts = _HEAD, streaming, []
        self.head = loop.create_future() if streaming else None
        self.done = loop.create_future()
        if timeout is not None:
            self._timer = loop.call_later(timeout, self._expire, timeout)
        self.transport.write(data)

    def _expire(self, timeout: float) -> None:
        self._timer = None
        self._fail(ReadTimeout(f"no answer within {timeout:g} s"))
        self.close()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fail(self, problem: BaseException) -> None:
        self._state = _DONE
        self.reusable = False
        self._stop_timer()
        for future in (self.head, self.done):
            if future is not None and not future.done():
                future.set_exception(problem)
                future.exception()  # retrieved: an unawaited `done` of a stream stays quiet
        self.lost = self.lost or problem
        self._notify()

    def _feed(self) -> None:
        buf = self._buf
        while True:
            state = self._state
            if state == _HEAD:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                status, reason, headers = parse_head(bytes(buf[:end]))
                del buf[:end + 4]
                if 100 <= status < 200:
                    continue  # an interim answer (100 Continue): the real one follows
                self._head = (status, reason, headers)
                if headers.get("connection", "").lower() == "close":
                    self.reusable = False
                if "chunked" in headers.get("transfer-encoding", "").lower():
                    self._state = _CHUNK_SIZE
                elif "content-length" in headers:
                    self._remaining = int(headers["content-length"])
                    self._state = _LENGTH
                elif status in (204, 304):
                    self._remaining, self._state = 0, _LENGTH
                else:
                    self._state, self.reusable = _UNTIL_CLOSE, False
                if self._streaming:
                    self._stop_timer()  # a stream has no deadline once it answered
                    assert self.head is not None
                    if not self.head.done():
                        self.head.set_result(None)
            elif state == _LENGTH:
                if len(buf) < self._remaining:
                    if self._streaming and buf:
                        self._remaining -= len(buf)
                        self._body_part(bytes(buf))
                        buf.clear()
                    return
                self._body_part(bytes(buf[:self._remaining]))
                del buf[:self._remaining]
                self._finish()
                return
            elif state == _CHUNK_SIZE:
                eol = buf.find(b"\r\n")
                if eol < 0:
                    return
                size = int(bytes(buf[:eol]).split(b";", 1)[0], 16)
                del buf[:eol + 2]
                self._remaining, self._state = size, _CHUNK if size else _TRAILER
            elif state == _CHUNK:
                if len(buf) < self._remaining + 2:
                    return
                self._body_part(bytes(buf[:self._remaining]))
                del buf[:self._remaining + 2]
                self._state = _CHUNK_SIZE
            elif state == _TRAILER:
                if buf[:2] == b"\r\n":
                    del buf[:2]
                else:
                    end = buf.find(b"\r\n\r\n")
                    if end < 0:
                        return
                    del buf[:end + 4]
                self._finish()
                return
            else:  # _UNTIL_CLOSE: connection_lost ends it
                return

    def _body_part(self, data: bytes) -> None:
        if not data:
            return
        if not self._streaming:
            self._parts.append(data)
            return
        self.chunks.append(data)
        self._queued += len(data)
        if self._queued > _HIGH_WATER and self.transport is not None:
            self.transport.pause_reading()
        self._notify()

    def _finish(self) -> None:
        self._state = _DONE
        self._stop_timer()
        if self._buf:  # bytes past the answer: the connection is out of step
            self.reusable = False
        status, reason, headers = self._head
        assert self.done is not None
        if self.head is not None and not self.head.done():
            self.head.set_result(None)
        if not self.done.done():
            self.done.set_result(Response(status, reason, headers, b"".join(self._parts)))
        self._notify()

    def _notify(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    # streaming
    @property
    def status(self) -> int:
        return self._head[0]

    @property
    def response_head(self) -> tuple[int, str, dict[str, str]]:
        """The status, reason phrase and headers."""
        return self._head

    async def next_chunk(self) -> bytes | None:
        """The next piece of a streamed body; None at its end; raises if the connection broke."""
        while not self.chunks:
            if self.done is not None and self.done.done():
                self.done.result()  # raises the failure, if it failed
                return None
            self._wake = asyncio.get_running_loop().create_future()
            await self._wake
        data = self.chunks.popleft()
        self._queued -= len(data)
        if self._queued <= _HIGH_WATER // 2 and self.transport is not None \
                and not self.transport.is_closing():
            self.transport.resume_reading()
        return data

    async def read_rest(self) -> bytes:
        parts = []
        while (data := await self.next_chunk()) is not None:
            parts.append(data)
        return b"".join(parts)

    def close(self) -> None:
        self.reusable = False
        self._stop_timer()
        if self.transport is not None:
            self.transport.close()


class Pool:
    """Keep-alive connections to any number of servers (`request`), and streams on connections
    of their own (`stream`). `timeout` bounds connecting, waiting for a pooled connection and
    waiting for a whole answer (a stream's: for its head)."""

    def __init__(self, tls: ssl.SSLContext | None = None, *, timeout: float = 30.0,
                 max_connections: int = 64) -> None:
        self.tls = tls
        self.timeout = timeout
        self.max_connections = max_connections
        self._origins: dict[str, _Origin] = {}
        self._streams: set[_Connection] = set()

    def _origin(self, server: str) -> _Origin:
        origin = self._origins.get(server)
        if origin is None:
            origin = self._origins[server] = _origin(server, self.tls, self.max_connections)
        return origin

    async def _connect(self, origin: _Origin) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout):
                _, connection = await loop.create_connection(
                    _Connection, origin.host, origin.port, ssl=origin.tls,
                    server_hostname=origin.host if origin.tls else None)
        except TimeoutError:
            raise ConnectTimeout(f"cannot connect to {origin.authority} within "
                                 f"{self.timeout:g} s") from None
        except (OSError, ssl.SSLError) as problem:
            raise ConnectError(f"cannot connect to {origin.authority}: {problem}") from None
        return connection

    async def request(self, server: str, method: str, target: str,
                      headers: Sequence[tuple[str, str]], body: bytes | None = None) -> Response:
        """One exchange with `server` (a URL; `target` is the path and query after it)."""
        origin = self._origin(server)
        slots = origin.slots
        if slots.locked():
            try:
                async with asyncio.timeout(self.timeout):
                    await slots.acquire()
            except TimeoutError:
                raise PoolTimeout(f"no connection to {origin.authority} free within "
                                  f"{self.timeout:g} s") from None
        else:
            await slots.acquire()  # free: returns without suspending
        try:
            connection = None
            while origin.idle:
                candidate = origin.idle.pop()
                if candidate.reusable and candidate.lost is None:
                    connection = candidate
                    break
                candidate.close()
            if connection is None:
                connection = await self._connect(origin)
            connection.send(request_bytes(method, origin.prefix + target, origin.authority,
                                          headers, body), streaming=False, timeout=self.timeout)
            assert connection.done is not None
            try:
                response = await connection.done
            except asyncio.CancelledError:
                connection.close()  # the answer would arrive into the next exchange
                raise
            if connection.reusable:
                origin.idle.append(connection)
            else:
                connection.close()
            return response
        finally:
            slots.release()

    @contextlib.asynccontextmanager
    async def stream(self, server: str, method: str, target: str,
                     headers: Sequence[tuple[str, str]]) -> AsyncIterator[_Connection]:
        """A connection of its own whose answer's head has arrived: read its `status`, then
        its body with `next_chunk()` or `read_rest()`. Closed on leaving."""
        origin = self._origin(server)
        connection = await self._connect(origin)
        self._streams.add(connection)
        try:
            connection.send(request_bytes(method, origin.prefix + target, origin.authority,
                                          headers, None), streaming=True, timeout=self.timeout)
            assert connection.head is not None
            await connection.head
            yield connection
        finally:
            self._streams.discard(connection)
            connection.close()

    async def aclose(self) -> None:
        for origin in self._origins.values():
            for connection in origin.idle:
                connection.close()
            origin.idle.clear()
        for connection in list(self._streams):
            connection.close()
        await asyncio.sleep(0)  # let the transports close
