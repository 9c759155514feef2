"""The API client of the server's own controllers process: requests over an inherited socket.

`serve --controllers process` gives its child one connected socket per identity
(server/channel.py); this client speaks the `Client` contract over one of them, many requests
in flight at once. The socket cannot be reopened: when the server closes it (the server is
going away), every request in flight fails as unavailable and `on_lost` is called, and the
child ends, to be started again with new sockets if the server lives on.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from evroc_compute.client.base import ClientError
from evroc_compute.client.inprocess import RoutedClient
from evroc_compute.server.channel import ChannelClosed, Writer, frame, frames

log = logging.getLogger(__name__)
# Chunks of one watch read and not yet consumed before it is stopped (as the server stops a
# watcher too far behind): the informer lists again instead of this process's memory growing.
MAX_BACKLOG = 10_000


def _unavailable(message: str) -> ClientError:
    return ClientError({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "message": message, "reason": "ServiceUnavailable", "code": 503})


def _expired(message: str) -> ClientError:
    return ClientError({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "message": message, "reason": "Expired", "code": 410})


class ChannelClient(RoutedClient):
    def __init__(self, sock: socket.socket, field_manager: str, *,
                 on_lost: Callable[[], None] = lambda: None) -> None:
        self.field_manager = field_manager
        self._sock, self._on_lost = sock, on_lost
        self._ids = itertools.count(1)
        self._answers: dict[int, asyncio.Future[tuple[int, bytes]]] = {}
        self._streams: dict[int, asyncio.Queue[tuple[dict[str, Any], bytes] | None]] = {}
        self._out: Writer | None = None
        self._opening: asyncio.Lock | None = None
        self._reading: asyncio.Task[None] | None = None
        self._lost = ""
        self._closing = False

    async def _writer(self) -> Writer:
        if self._lost:
            raise _unavailable(self._lost)
        if self._out is None:
            self._opening = self._opening or asyncio.Lock()
            async with self._opening:  # the first requests all wait for one connection
                if self._out is None:
                    reader, writer = await asyncio.open_unix_connection(sock=self._sock,
                                                                        limit=1 << 20)
                    self._reading = asyncio.create_task(self._read(reader), name="channel-reader")
                    self._out = Writer(writer)
        return self._out

    async def _read(self, reader: asyncio.StreamReader) -> None:
        buffer = bytearray()
        problem = "the server closed the channel"
        try:
            while chunk := await reader.read(1 << 18):
                buffer += chunk
                for header, body in frames(buffer):
                    ident = header["id"]
                    stream = self._streams.get(ident)
                    if stream is not None:
                        if stream.qsize() < MAX_BACKLOG:
                            stream.put_nowait((header, body))
                        elif stream.qsize() == MAX_BACKLOG:
                            stream.put_nowait(({"behind": 1}, b""))
                        continue
                    answer = self._answers.pop(ident, None)
                    if answer is not None and not answer.done():
                        answer.set_result((header["s"], body))
        except (ChannelClosed, ConnectionError, orjson.JSONDecodeError, KeyError) as error:
            problem = f"the channel to the server broke: {error}"
        closing = self._closing
        self._lost = "the channel is closed" if closing else problem
        for answer in self._answers.values():
            if not answer.done():
                answer.set_exception(_unavailable(self._lost))
        for stream in self._streams.values():
            stream.put_nowait(None)
        if not closing:
            log.warning("%s; stopping", problem)
            self._on_lost()

    async def _exchange(self, method: str, path: str, data: bytes, content_type: str,
                        query: dict[str, str]) -> tuple[int, bytes]:
        out = await self._writer()
        ident = next(self._ids)
        answer = self._answers[ident] = asyncio.get_running_loop().create_future()
        out.write(frame({"id": ident, "m": method, "p": path, "q": query, "ct": content_type},
                        data))
        try:
            status, body = await answer
        finally:
            self._answers.pop(ident, None)
        return int(status), body

    async def _chunks(self, path: str, query: dict[str, str]) -> AsyncIterator[bytes]:
        out = await self._writer()
        ident = next(self._ids)
        stream = self._streams[ident] = asyncio.Queue()
        out.write(frame({"id": ident, "m": "GET", "p": path, "q": query}))
        ended = False
        try:
            while (received := await stream.get()) is not None:
                header, body = received
                if header.get("end"):
                    ended = True
                    return
                if header.get("behind"):
                    raise _expired(f"this watch fell {MAX_BACKLOG} chunks behind; list again")
                if not header.get("more"):  # an answer instead of a stream: the watch refused
                    ended = True
                    raise ClientError(orjson.loads(body))
                yield body
            raise _unavailable(self._lost)
        finally:
            del self._streams[ident]
            if not ended and not self._lost:
                out.write(frame({"id": ident, "cancel": 1}))

    async def aclose(self) -> None:
        """Close the socket; whatever is still waiting on it fails as unavailable."""
        self._closing = True
        if self._out is None:
            self._sock.close()
            return
        self._out.writer.close()  # the reader then sees the end and fails what is pending
        if self._reading is not None:
            await asyncio.gather(self._reading, return_exceptions=True)

    async def __aenter__(self) -> ChannelClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()
