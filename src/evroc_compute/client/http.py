"""The HTTP API client: the `Client` contract spoken over the wire to a server URL.

Controllers inside the server process use the in-process client; a host agent runs on the
hypervisor host it manages, on another machine than the API server, so it needs the same
contract over HTTP. This client makes exactly the requests kubectl would (same paths, query
parameters, patch content types and fieldManager), so the agent gets the same admission,
compare-and-swap and watch semantics as everything else, and can move between processes by
swapping one client for the other.

Every answer of 400 or more raises a ClientError carrying the server's Kubernetes Status.
Transport failures (connection refused, reset, timeouts) raise a ClientError with a synthetic
503 ServiceUnavailable Status, so retry loops (informers, the agent's reconcilers) treat an
unreachable server like a server that said it is unavailable.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

import httpx
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

# The Status reasons kube-apiserver uses per code, for error answers that carry no Status body
# (a proxy's 502, a plain-text 404 from something that is not this server).
_REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
            405: "MethodNotAllowed", 406: "NotAcceptable", 409: "Conflict", 410: "Expired",
            413: "RequestEntityTooLarge", 415: "UnsupportedMediaType", 422: "Invalid",
            429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable",
            504: "Timeout"}


def _failure(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


class HttpClient:
    """A `Client` for the server at `base_url` (e.g. "http://10.0.0.1:6443").

    One pooled httpx.AsyncClient serves every request and watch; close it with `aclose()` or
    use the client as `async with HttpClient(...) as client:`.
    """

    def __init__(self, base_url: str, field_manager: str, *, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.field_manager = field_manager
        self.timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=self.base_url, timeout=httpx.Timeout(timeout),
            headers={"accept": "application/json", "user-agent": f"{field_manager}/http"})

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self.aclose()

    def _unavailable(self, method: str, path: str, problem: httpx.TransportError) -> ClientError:
        detail = str(problem) or type(problem).__name__
        return ClientError(_failure(
            503, "ServiceUnavailable",
            f"{method} {self.base_url}{path}: {type(problem).__name__}: {detail}"))

    @staticmethod
    def _error(response: httpx.Response) -> ClientError:
        """The Status of an error answer, or one made up from its code if it has none."""
        try:
            status = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            status = None
        if not isinstance(status, dict) or ("code" not in status and "reason" not in status):
            text = response.text.strip()[:500] or response.reason_phrase
            status = _failure(response.status_code,
                              _REASONS.get(response.status_code, response.reason_phrase), text)
        status.setdefault("code", response.status_code)
        return ClientError(status)

    async def _object(self, method: str, path: str, body: Any = None, *,
                      content_type: str = "application/json",
                      query: dict[str, str] | None = None) -> dict[str, Any]:
        headers: dict[str, str] = {}
        content: bytes | None = None
        if body is not None:
            content = orjson.dumps(body)
            headers["content-type"] = content_type
        try:
            response = await self._http.request(method, path, params=query, content=content,
                                                headers=headers)
        except httpx.TransportError as problem:
            raise self._unavailable(method, path, problem) from None
        if response.status_code >= 400:
            raise self._error(response)
        result: dict[str, Any] = orjson.loads(response.content)
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
        path = resource_path(kind, namespace)
        # No read timeout: an idle watch is quiet between the server's bookmarks, and how long
        # it lasts is the server's business (timeoutSeconds), not the socket's.
        timeout = httpx.Timeout(self.timeout, read=None)
        try:
            async with self._http.stream("GET", path, params=query, timeout=timeout) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise self._error(response)
                async for line in response.aiter_lines():
                    if line.strip():
                        event = orjson.loads(line)
                        yield WatchEvent(event["type"], event["object"])
        except httpx.TransportError as problem:
            raise self._unavailable("GET", path, problem) from None

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
