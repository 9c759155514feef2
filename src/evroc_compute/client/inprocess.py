"""The in-process API client: requests go through the server's own handler layer.

No HTTP and no sockets, but the same routing, admission, managedFields and compare-and-swap
as a request from kubectl: controllers running inside the server process get exactly the
behaviour an out-of-process client would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from evroc_compute.api.kinds import Kind
from evroc_compute.client.base import (
    PATCH_CONTENT_TYPES,
    ClientError,
    PatchType,
    WatchEvent,
    list_query,
    resource_path,
    watch_query,
)
from evroc_compute.server import errors
from evroc_compute.server.app import App
from evroc_compute.server.auth.users import CONTROLLERS, UserInfo
from evroc_compute.server.http import Request, Response, StreamingResponse


class RoutedClient:
    """The `Client` contract as the requests kubectl would make (same paths, query parameters,
    patch content types and fieldManager), over whatever carries them to `App.route`."""

    field_manager: str

    async def _exchange(self, method: str, path: str, data: bytes, content_type: str,
                        query: dict[str, str]) -> tuple[int, bytes]:
        """One request's (status, body); a Status the server raised is a ClientError."""
        raise NotImplementedError

    def _chunks(self, path: str, query: dict[str, str]) -> AsyncIterator[bytes]:
        """A watch's chunks of JSON lines, as the server streams them."""
        raise NotImplementedError

    async def _object(self, method: str, path: str, body: Any = None, *,
                      content_type: str = "application/json",
                      query: dict[str, str] | None = None) -> dict[str, Any]:
        data = b"" if body is None else orjson.dumps(body)
        status, answer = await self._exchange(method, path, data, content_type, query or {})
        if status >= 400:  # an error answered without raising (e.g. 503 from store)
            raise ClientError(orjson.loads(answer))
        result: dict[str, Any] = orjson.loads(answer)
        return result

    def _writes(self, **extra: str) -> dict[str, str]:
        return {"fieldManager": self.field_manager, **extra}

    async def get(self, kind: Kind, namespace: str | None, name: str,
                  subresource: str = "") -> dict[str, Any]:
        return await self._object("GET", resource_path(kind, namespace, name, subresource))

    async def list(self, kind: Kind, namespace: str | None = None, *, label_selector: str = "",
                   field_selector: str = "") -> tuple[list[dict[str, Any]], str]:
        query = list_query(label_selector, field_selector)
        listed = await self._object("GET", resource_path(kind, namespace), query=query)
        return listed["items"], str(listed["metadata"]["resourceVersion"])

    async def watch(self, kind: Kind, namespace: str | None = None, *, resource_version: str = "",
                    label_selector: str = "", timeout_seconds: int = 0,
                    ) -> AsyncIterator[WatchEvent]:
        query = watch_query(resource_version, label_selector, timeout_seconds)
        chunks = self._chunks(resource_path(kind, namespace), query)
        try:
            async for chunk in chunks:
                for line in chunk.splitlines():
                    if line:
                        event = orjson.loads(line)
                        yield WatchEvent(event["type"], event["object"])
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()

    async def create(self, kind: Kind, obj: dict[str, Any]) -> dict[str, Any]:
        namespace = (obj.get("metadata") or {}).get("namespace")
        return await self._object("POST", resource_path(kind, namespace), obj,
                                  query=self._writes())

    async def update(self, kind: Kind, obj: dict[str, Any],
                     subresource: str = "") -> dict[str, Any]:
        meta = obj.get("metadata") or {}
        path = resource_path(kind, meta.get("namespace"), meta.get("name", ""), subresource)
        return await self._object("PUT", path, obj, query=self._writes())

    async def patch(self, kind: Kind, namespace: str | None, name: str, body: Any, *,
                    patch_type: PatchType = "merge", subresource: str = "",
                    force: bool = False) -> dict[str, Any]:
        query = self._writes(**({"force": "true"} if force else {}))
        return await self._object("PATCH", resource_path(kind, namespace, name, subresource),
                                  body, content_type=PATCH_CONTENT_TYPES[patch_type], query=query)

    async def delete(self, kind: Kind, namespace: str | None, name: str) -> dict[str, Any]:
        return await self._object("DELETE", resource_path(kind, namespace, name))


class InProcessClient(RoutedClient):
    def __init__(self, app: App, field_manager: str, user: UserInfo = CONTROLLERS) -> None:
        self.app = app
        self.field_manager = field_manager
        self.user = user  # authorized as any request is

    async def _call(self, method: str, path: str, data: bytes, content_type: str,
                    query: dict[str, str]) -> Response | StreamingResponse:
        headers = {"accept": "application/json", "user-agent": f"{self.field_manager}/in-process"}
        if data:
            headers["content-type"] = content_type
        request = Request(method, path, dict(query), headers, data, user=self.user)
        try:
            return await self.app.route(request)
        except errors.ApiError as problem:
            raise ClientError(problem.status()) from None

    async def _exchange(self, method: str, path: str, data: bytes, content_type: str,
                        query: dict[str, str]) -> tuple[int, bytes]:
        response = await self._call(method, path, data, content_type, query)
        assert isinstance(response, Response)
        return response.status, response.body

    async def _chunks(self, path: str, query: dict[str, str]) -> AsyncIterator[bytes]:
        response = await self._call("GET", path, b"", "", query)
        assert isinstance(response, StreamingResponse)
        lines = response.lines
        try:
            async for chunk in lines:
                yield chunk
        finally:
            aclose = getattr(lines, "aclose", None)
            if aclose is not None:
                await aclose()
