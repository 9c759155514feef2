"""The few HTTP primitives the server needs, on raw ASGI (no framework on the hot path)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import orjson

from evroc_compute.server import bodies, errors
from evroc_compute.server.auth.authz import Attributes
from evroc_compute.server.auth.users import ANONYMOUS_USER, UserInfo

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_BODY_BYTES = 3 * 1024 * 1024  # kube-apiserver's limit for a request body
JSON = b"application/json"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes = b""
    # What the request is, for metrics (verb, group, resource...): set by the router.
    labels: tuple[str, ...] = ()
    user: UserInfo = ANONYMOUS_USER  # set by authentication
    # What it asks, as authorized, and the API version it names (set by the router; audited).
    attributes: Attributes | None = None
    api_version: str = ""

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    @property
    def accept(self) -> str:
        return self.headers.get("accept", "")

    def flag(self, name: str) -> bool:
        return self.query.get(name, "").lower() in ("true", "1")

    def decode_body(self) -> Any:
        return bodies.decode(self.body, self.content_type)


class ClientGone(Exception):
    """The client went away before its request body was complete: nobody to answer."""


async def read_request(scope: Scope, receive: Receive, body_timeout: float) -> Request:
    """The request with its whole body, which must arrive within `body_timeout` seconds."""
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    length = headers.get("content-length")
    if length and length.isascii() and length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise errors.too_large(MAX_BODY_BYTES)
    if length in (None, "0") and "transfer-encoding" not in headers:
        body = await _read_body(receive)  # nothing to wait for: no timer (2 us a request)
    else:
        try:
            async with asyncio.timeout(body_timeout):
                body = await _read_body(receive)
        except TimeoutError:
            raise errors.ApiError(408, "Timeout", f"the request body did not arrive within "
                                  f"{body_timeout:g} s") from None
    query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"),
                           keep_blank_values=True))
    return Request(scope["method"], scope["path"], query, headers, body)


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()  # a truncated body must never be decoded and acted on
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise errors.too_large(MAX_BODY_BYTES)
            chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


@dataclass
class Response:
    status: int
    body: bytes
    content_type: bytes = JSON
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    async def send(self, send: Send) -> None:
        # A 304 has no body; a Content-Length on it would describe the cached one (RFC 9110).
        length = [] if self.status == 304 else [(b"content-length", str(len(self.body)).encode())]
        await send({"type": "http.response.start", "status": self.status,
                    "headers": [(b"content-type", self.content_type), *length, *self.headers]})
        await send({"type": "http.response.body", "body": self.body})


@dataclass
class StreamingResponse:
    """A chunked response (watch): one JSON document per line, flushed as produced."""

    lines: AsyncIterator[bytes]
    content_type: bytes = JSON
    status: int = 200

    async def send(self, send: Send, receive: Receive | None = None) -> None:
        """Stream until the lines end or, given `receive`, until the client disconnects.

        ASGI servers drop writes to a closed connection silently, so without watching
        `receive` a watch whose client went away would hold its subscription (and block a
        graceful shutdown) until its timeout.
        """
        await send({"type": "http.response.start", "status": self.status,
                    "headers": [(b"content-type", self.content_type),
                                (b"cache-control", b"no-cache, private")]})
        pump = asyncio.ensure_future(self._pump(send))
        tasks: list[asyncio.Future[None]] = [pump]
        if receive is not None:
            tasks.append(asyncio.ensure_future(_until_disconnect(receive)))
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # Graceful shutdown ran out of time: end the stream properly (below) so the
            # client sees a clean end and re-watches, and log no traceback.
            return
        finally:
            for task in tasks:
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        if not pump.cancelled():
            pump.result()  # re-raise what went wrong while streaming

    async def _pump(self, send: Send) -> None:
        try:
            async for line in self.lines:
                await send({"type": "http.response.body", "body": line, "more_body": True})
        finally:
            aclose = getattr(self.lines, "aclose", None)
            if aclose is not None:  # release the watch now, not when the GC finds it
                await aclose()
            await send({"type": "http.response.body", "body": b""})


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


# Characters a header value cannot carry (uvicorn refuses them after the handler has
# committed its write) and lone surrogates (not encodable as UTF-8).
_UNSAFE_IN_HEADER = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")


def warning_header(text: str) -> tuple[bytes, bytes]:
    """A `Warning: 299 - "text"` header, whatever `text` holds (it often quotes user input).

    As kube-apiserver: the warn-text is a quoted-string (client-go drops a warning whose
    inner quotes are not escaped) in UTF-8. Control characters and lone surrogates, which
    no header may carry, are shown as `\\uXXXX`.
    """
    safe = _UNSAFE_IN_HEADER.sub(lambda found: f"\\u{ord(found[0]):04x}", text)
    quoted = safe.replace("\\", "\\\\").replace('"', '\\"')
    return b"warning", f'299 - "{quoted}"'.encode()


async def refuse_websocket(scope: Scope, receive: Receive, send: Send) -> None:
    """Answer a websocket upgrade with a 400 Status: no path here streams over websockets
    (watches are chunked HTTP). Without uvicorn's denial-response extension, a close (403)."""
    await receive()  # websocket.connect
    if "websocket.http.response" not in (scope.get("extensions") or {}):
        await send({"type": "websocket.close", "code": 1008})
        return
    body = errors.bad_request(f"{scope.get('path', '/')} does not serve websocket upgrades; "
                              "watch collections with ?watch=true over HTTP").body()
    await send({"type": "websocket.http.response.start", "status": 400,
                "headers": [(b"content-type", JSON), (b"content-length", str(len(body)).encode())]})
    await send({"type": "websocket.http.response.body", "body": body})


def json_response(value: Any, status: int = 200, content_type: bytes = JSON) -> Response:
    return Response(status, orjson.dumps(value), content_type)


def error_response(error: errors.ApiError) -> Response:
    headers = [(b"retry-after", str(error.retry_after).encode())] if error.retry_after else []
    return Response(error.code, error.body(), headers=headers)


async def lifespan(receive: Receive, send: Send, start: Callable[[], Awaitable[None]],
                   stop: Callable[[], Awaitable[None]]) -> None:
    """The ASGI lifespan protocol: `start` on startup (a failure is reported), `stop` on shutdown."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                await start()
            except Exception as problem:
                log.exception("start-up failed")
                await send({"type": "lifespan.startup.failed", "message": str(problem)})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await stop()
            await send({"type": "lifespan.shutdown.complete"})
            return
