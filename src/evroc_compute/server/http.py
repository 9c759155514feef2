"""The few HTTP primitives the server needs, on raw ASGI (no framework on the hot path)."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import orjson
import yaml

from evroc_compute.server import errors

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

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    @property
    def accept(self) -> str:
        return self.headers.get("accept", "")

    def flag(self, name: str) -> bool:
        return self.query.get(name, "").lower() in ("true", "1")

    def decode_body(self) -> Any:
        """JSON or YAML into Python values; malformed input is a 400 with the parser's words.

        The result is always representable as JSON (it is stored and served as JSON): YAML
        that is not (non-string mapping keys, !!binary, .nan, integers beyond 64 bits,
        expanding aliases) and bodies nested deeper than MAX_DEPTH are 400s here rather
        than failures later. YAML timestamps stay the strings they were written as, as in
        Kubernetes (sigs.k8s.io/yaml).
        """
        if not self.body.strip():
            raise errors.bad_request("the request body is empty; send a JSON or YAML object")
        if self.content_type in ("application/yaml", "application/apply-patch+yaml",
                                 "text/yaml", "application/x-yaml"):
            try:
                return _shallow_enough(orjson.loads(self.body), self.body, "JSON")
            except orjson.JSONDecodeError:
                pass  # apply bodies from kubectl are JSON; anything else is YAML
            try:
                value = yaml.load(self.body, Loader=_YamlLoader)  # a SafeLoader
            except (yaml.YAMLError, ValueError) as problem:  # ValueError: e.g. !!float abc
                raise errors.bad_request(f"error decoding YAML: {problem}") from None
            except RecursionError:
                raise errors.bad_request(f"error decoding YAML: nested deeper than {MAX_DEPTH} "
                                         "levels") from None
            _check_json_values(value, len(self.body))
            return value
        if self.content_type == "application/vnd.kubernetes.protobuf":
            # `kubectl create namespace` (a typed client) sends protobuf and never retries as JSON.
            from evroc_compute.server import protobuf

            try:
                return protobuf.decode(self.body)
            except protobuf.UnsupportedKind as problem:
                raise errors.unsupported_media_type(
                    f"{self.content_type} for {problem}",
                    ("application/json", "application/yaml")) from None
            except protobuf.ProtobufError as problem:
                raise errors.bad_request(f"error decoding protobuf body: {problem}") from None
        try:
            value = orjson.loads(self.body)
        except orjson.JSONDecodeError as problem:
            raise errors.bad_request(f"error decoding JSON body: {problem}") from None
        return _shallow_enough(value, self.body, "JSON")


# Deeper bodies are refused: orjson cannot encode more than 254 levels, and stored objects
# gain a few (managedFields, Table rows, watch events). Kubernetes objects nest a dozen.
MAX_DEPTH = 100
_INT_RANGE = (-(2**63), 2**64 - 1)  # what orjson (and so the store) can encode


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that keeps timestamps as the text written (JSON has no timestamps)."""


def _timestamp_as_text(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> str:
    return str(loader.construct_scalar(node))


_YamlLoader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_as_text)


def _shallow_enough(value: Any, body: bytes, what: str) -> Any:
    """`value`, decoded from `body`, unless it nests deeper than MAX_DEPTH (a 400)."""
    # Nesting needs a bracket per level: most bodies are cleared without a walk.
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH:
        _check_json_values(value, len(body), what)
    return value


# Where a value sits, built only for an error: (parent's location, key or index), or None.
_Location = tuple[Any, str | int] | None


def _path(location: _Location) -> str:
    parts: list[str] = []
    while location is not None:
        location, step = location
        parts.append(f"[{step}]" if isinstance(step, int) else f".{step}")
    return "".join(reversed(parts)).lstrip(".")


def _short(value: Any) -> str:
    """A YAML scalar for a message: huge integers do not even convert to str."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 64 else text[:61] + "..."


def _check_json_values(value: Any, size: int, what: str = "YAML") -> None:
    """Raise a 400 naming the first value JSON (orjson) cannot carry.

    Also bounds the work: without aliases a document of `size` bytes holds at most about
    one value per byte, so more than that means aliases expanding (a "billion laughs").
    """
    def fail(location: _Location, problem: str) -> errors.ApiError:
        path = _path(location)
        return errors.bad_request(f"error decoding {what}: {path or 'the body'}: {problem}",
                                  field=path)

    budget = 2 * size + 10_000
    stack: list[tuple[Any, _Location, int]] = [(value, None, 0)]
    while stack:
        item, location, depth = stack.pop()
        budget -= 1
        if budget < 0:
            raise errors.bad_request(f"error decoding {what}: the document expands to too many "
                                     "values (aliases?)")
        if isinstance(item, dict | list) and depth >= MAX_DEPTH:
            raise fail(location, f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    raise fail(location, f"mapping key {_short(key)} is not a string; quote "
                                         "it to use it as one")
                stack.append((child, (location, key), depth + 1))
        elif isinstance(item, list):
            stack.extend((child, (location, index), depth + 1)
                         for index, child in enumerate(item))
        elif isinstance(item, bool) or item is None or isinstance(item, str):
            continue
        elif isinstance(item, int):
            if not _INT_RANGE[0] <= item <= _INT_RANGE[1]:
                raise fail(location, f"the integer {_short(item)} does not fit in 64 bits")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise fail(location, f"{item} is not a number JSON can represent")
        else:
            shown = "binary data (!!binary)" if isinstance(item, bytes) else \
                f"a {type(item).__name__} value"
            raise fail(location, f"{shown} cannot be represented in JSON")


async def read_request(scope: Scope, receive: Receive) -> Request:
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    length = headers.get("content-length")
    if length and length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise errors.too_large(MAX_BODY_BYTES)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise errors.too_large(MAX_BODY_BYTES)
            chunks.append(chunk)
        if not message.get("more_body"):
            break
    query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"),
                           keep_blank_values=True))
    return Request(scope["method"], scope["path"], query, headers, b"".join(chunks))


@dataclass
class Response:
    status: int
    body: bytes
    content_type: bytes = JSON
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    async def send(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status,
                    "headers": [(b"content-type", self.content_type),
                                (b"content-length", str(len(self.body)).encode()),
                                *self.headers]})
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
            await send({"type": "http.response.body", "body": b""})


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def json_response(value: Any, status: int = 200, content_type: bytes = JSON) -> Response:
    return Response(status, orjson.dumps(value), content_type)


def error_response(error: errors.ApiError) -> Response:
    headers = [(b"retry-after", str(error.retry_after).encode())] if error.retry_after else []
    return Response(error.code, error.body(), headers=headers)
