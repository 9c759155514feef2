"""A channel: the API over one inherited socket, for the server's own controllers process.

`serve --controllers process` hands its child one connected Unix socket per control-plane
identity (socketpair, passed as a file descriptor; nothing in the file system, so no other
process can connect). The identity belongs to the socket: whoever holds it is the controller
manager (or the fleet simulator), as whoever holds the PKI's certificate would be. Each request
then goes through `App.route`, as the in-process client's do: the same routing, authorization,
admission, managedFields and compare-and-swap as a request from kubectl.

What it saves over HTTPS is the transport: no TLS, no HTTP parsing, no ASGI cycle, and many
requests and watch events per system call. Frames, both ways:

    >II (header length, body length) | header (JSON) | body

Requests `{"id", "m": method, "p": path, "q": query, "ct": content type}` + body, or
`{"id", "cancel": 1}` (stop a watch); answers `{"id", "s": status}` + body, a watch's chunks
`{"id", "s": 200, "more": 1}` + chunk, then `{"id", "end": 1}`. Many requests are in flight on
one socket at once, each answered when it is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import struct
from collections.abc import Iterator
from typing import Any

import orjson

from evroc_compute.server.app import App, as_api_error
from evroc_compute.server.auth.users import UserInfo
from evroc_compute.server.http import Request, Response, StreamingResponse

log = logging.getLogger(__name__)

PREFIX = struct.Struct(">II")
# A bound on garbage, not on answers: the peer is serve's own child, and an unpaginated list of
# 20,000 VMs is tens of MiB.
MAX_FRAME = 1 << 30
_HIGH_WATER = 4 << 20  # buffered output before a watch waits for the peer to read


class ChannelClosed(Exception):
    """The other end closed the socket, or sent something that is not a frame."""


def frame(header: dict[str, Any], body: bytes = b"") -> bytes:
    encoded = orjson.dumps(header)
    return PREFIX.pack(len(encoded), len(body)) + encoded + body


def frames(buffer: bytearray) -> Iterator[tuple[dict[str, Any], bytes]]:
    """The complete frames at the start of `buffer`, removed from it as they are read."""
    start = 0
    while len(buffer) - start >= PREFIX.size:
        header_length, body_length = PREFIX.unpack_from(buffer, start)
        if header_length + body_length > MAX_FRAME:
            raise ChannelClosed(f"a frame of {header_length + body_length} bytes")
        end = start + PREFIX.size + header_length + body_length
        if len(buffer) < end:
            break
        body_start = start + PREFIX.size + header_length
        header = orjson.loads(buffer[start + PREFIX.size:body_start])
        body = bytes(buffer[body_start:end])
        start = end
        yield header, body
    del buffer[:start]


class Writer:
    """Frames out, gathered: everything written in one turn of the loop goes in one send."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append(data)

    def _flush(self) -> None:
        data, self._pending = b"".join(self._pending), []
        if not self.writer.is_closing():
            self.writer.write(data)

    async def drain(self) -> None:
        """Wait while the peer is behind (a watch must not buffer without bound)."""
        transport = self.writer.transport
        if transport.get_write_buffer_size() > _HIGH_WATER:
            await self.writer.drain()


async def serve(app: App, sock: socket.socket, user: UserInfo) -> None:
    """Answer the requests arriving on `sock` as `user`, until the other end closes it."""
    try:
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=1 << 20)
    except BaseException:
        sock.close()
        raise
    out = Writer(writer)
    running: dict[int, asyncio.Task[None]] = {}
    buffer = bytearray()
    try:
        while chunk := await reader.read(1 << 18):
            buffer += chunk
            for header, body in frames(buffer):
                ident = header["id"]
                if header.get("cancel"):
                    task = running.get(ident)
                    if task is not None:
                        task.cancel()
                    continue
                request = Request(header["m"], header["p"], header.get("q") or {},
                                  {"content-type": header.get("ct", "application/json"),
                                   "accept": "application/json"}, body, user=user)
                task = asyncio.create_task(_answer(app, request, ident, out))
                running[ident] = task
                task.add_done_callback(functools.partial(_forget, running, ident))
    except (ChannelClosed, ConnectionError, orjson.JSONDecodeError, KeyError) as problem:
        log.warning("controllers channel of %s closed: %s", user.name, problem)
    finally:
        writer.close()
        for task in list(running.values()):
            task.cancel()
        await asyncio.gather(*running.values(), return_exceptions=True)
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def _forget(running: dict[int, asyncio.Task[None]], ident: int, _: object) -> None:
    running.pop(ident, None)  # `_answer` raises nothing but cancellation


async def _answer(app: App, request: Request, ident: int, out: Writer) -> None:
    try:
        response = await app.route(request)
    except Exception as problem:  # answered as over HTTP: its Status, a 503 or a 500
        failure = as_api_error(problem, request.method, request.path)
        out.write(frame({"id": ident, "s": failure.code}, orjson.dumps(failure.status())))
        return
    if isinstance(response, Response):
        out.write(frame({"id": ident, "s": response.status}, response.body))
        return
    assert isinstance(response, StreamingResponse)
    lines = response.lines
    try:
        async for chunk in lines:
            out.write(frame({"id": ident, "s": response.status, "more": 1}, chunk))
            await out.drain()
    except ConnectionError:  # the other end went away: nobody left to watch for
        return
    except Exception:  # the watch broke: it ends, and the client watches again, as over HTTP
        log.exception("watch %s %s failed", request.method, request.path)
    finally:
        aclose = getattr(lines, "aclose", None)
        if aclose is not None:
            await aclose()
    out.write(frame({"id": ident, "end": 1}))
