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

Given several server URLs (servers of one HA control plane, one database), the client talks to
one and fails over to the next when it cannot be reached; a request that may already have been
applied is sent again only if that is safe (`may_resend`), and a watch resumes on the next
server from the last resourceVersion it delivered (docs/api-decisions.md).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Any
from urllib.parse import urlencode

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
from evroc_compute.client.kubeconfig import Connection
from evroc_compute.client.transport import Pool, Response, TransportError

# The Status reasons kube-apiserver uses per code, for error answers that carry no Status body
# (a proxy's 502, a plain-text 404 from something that is not this server).
_REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
            405: "MethodNotAllowed", 406: "NotAcceptable", 409: "Conflict", 410: "Expired",
            413: "RequestEntityTooLarge", 415: "UnsupportedMediaType", 422: "Invalid",
            429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable",
            504: "Timeout"}


log = logging.getLogger(__name__)


def may_resend(sent: bool, idempotent: bool, recheck: bool) -> bool:
    """Whether a request that failed in transit may be sent to the next server.

    `sent`: it may have reached the server (the connection broke after it was written).
    `idempotent`: applying it twice is applying it once (GET, PUT, DELETE, merge and apply
    patches). `recheck`: a named create, whose AlreadyExists on the retry is checked to be
    our own earlier attempt.
    """
    return not sent or idempotent or recheck


def parse_servers(servers: str | Sequence[str]) -> tuple[str, ...]:
    """The server URLs of `URL1,URL2` (or a list), without trailing slashes."""
    urls = servers.split(",") if isinstance(servers, str) else servers
    parsed = tuple(url.strip().rstrip("/") for url in urls if url.strip())
    if not parsed:
        raise ValueError("no server URL given")
    return parsed


def _failure(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


class HttpClient:
    """A `Client` for the server at `servers` (e.g. "http://10.0.0.1:6443"), or for the first
    reachable one of several ("http://10.0.0.1:6443,http://10.0.0.2:6443").

    One pool of keep-alive connections (client/transport.py) serves every request, and each
    watch has a connection of its own; close them with `aclose()` or use the client as
    `async with HttpClient(...) as client:`.
    """

    def __init__(self, servers: str | Sequence[str], field_manager: str, *,
                 timeout: float = 30.0, connection: Connection | None = None,
                 max_connections: int = 64) -> None:
        """`connection` (from a kubeconfig) gives the CA to trust and the credential; its
        server is used when `servers` is empty. `max_connections` per server bound the
        requests in flight (the default stays below the server's --max-requests-per-user)."""
        self.servers = parse_servers(servers or (connection.server if connection else ""))
        self._current = 0
        self.field_manager = field_manager
        self.timeout = timeout
        self._pool = Pool(connection.tls if connection else None, timeout=timeout,
                          max_connections=max_connections)
        self._headers = (("accept", "application/json"),
                         ("user-agent", f"{field_manager}/http"),
                         *(connection.headers.items() if connection else ()))

    @property
    def base_url(self) -> str:
        """The server requests go to now."""
        return self.servers[self._current]

    def _fail_over(self, failed: int, problem: TransportError) -> None:
        """Move on from server `failed`, unless a concurrent request already did."""
        if len(self.servers) > 1 and self._current == failed:
            self._current = (failed + 1) % len(self.servers)
            log.warning("%s unreachable (%s); failing over to %s", self.servers[failed],
                        type(problem).__name__, self.base_url)

    async def aclose(self) -> None:
        await self._pool.aclose()

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self.aclose()

    @staticmethod
    def _unavailable(method: str, url: str, problem: TransportError,
                     note: str = "") -> ClientError:
        detail = str(problem) or type(problem).__name__
        return ClientError(_failure(
            503, "ServiceUnavailable", f"{method} {url}: {type(problem).__name__}: {detail}{note}"))

    @staticmethod
    def _error(response: Response) -> ClientError:
        """The Status of an error answer, or one made up from its code if it has none."""
        try:
            status = orjson.loads(response.body)
        except orjson.JSONDecodeError:
            status = None
        if not isinstance(status, dict) or ("code" not in status and "reason" not in status):
            text = response.body.decode(errors="replace").strip()[:500] or response.reason
            status = _failure(response.status,
                              _REASONS.get(response.status, response.reason), text)
        status.setdefault("code", response.status)
        return ClientError(status)

    async def _object(self, method: str, path: str, body: Any = None, *,
                      content_type: str = "application/json",
                      query: dict[str, str] | None = None, idempotent: bool = True,
                      recheck: str = "") -> dict[str, Any]:
        """One request, on each server in turn until one answers (see `may_resend`); `recheck`
        is the path of the object a POST creates."""
        headers = self._headers
        content: bytes | None = None
        if body is not None:
            content = orjson.dumps(body)
            headers = (*headers, ("content-type", content_type))
        target = f"{path}?{urlencode(query)}" if query else path
        maybe_applied = False
        failure: tuple[str, TransportError] | None = None
        for _ in self.servers:
            server = self._current
            try:
                response = await self._pool.request(self.servers[server], method, target,
                                                    headers, content)
            except TransportError as problem:
                url = self.servers[server] + path
                if not may_resend(problem.sent, idempotent, bool(recheck)):
                    self._fail_over(server, problem)
                    raise self._unavailable(
                        method, url, problem,
                        "; it may have been applied: read it back before sending it again",
                    ) from None
                maybe_applied = maybe_applied or problem.sent
                failure = (url, problem)
                self._fail_over(server, problem)
                continue
            if response.status >= 400:
                error = self._error(response)
                if maybe_applied and recheck and error.reason == "AlreadyExists":
                    return await self._our_create(recheck, error)
                raise error
            result: dict[str, Any] = orjson.loads(response.body)
            return result
        assert failure is not None  # every server was tried: each failed
        raise self._unavailable(method, *failure) from None

    async def _our_create(self, path: str, exists: ClientError) -> dict[str, Any]:
        """The object a create that may have landed before a failover found in its way: ours if
        this client's field manager created it, else the AlreadyExists stands."""
        found = await self._object("GET", path)
        managers = {entry.get("manager") for entry in
                    (found.get("metadata") or {}).get("managedFields") or []}
        if self.field_manager in managers:
            return found
        raise exists

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
        """The events after `resource_version`; when the server goes away the watch goes on,
        on the next server, from the last resourceVersion it delivered (a watch from "now",
        with nothing delivered yet, cannot: it ends with 503)."""
        path = resource_path(kind, namespace)
        # No read timeout: an idle watch is quiet between the server's bookmarks, and how long
        # it lasts is the server's business (timeoutSeconds), not the socket's.
        version = resource_version
        failures = 0  # in a row, without an event in between
        while True:
            server = self._current
            query = watch_query(version, label_selector, timeout_seconds)
            try:
                async with self._pool.stream(self.servers[server], "GET",
                                             f"{path}?{urlencode(query)}",
                                             self._headers) as stream:
                    if stream.status >= 400:
                        head = stream.response_head
                        raise self._error(Response(*head, await stream.read_rest()))
                    pending = b""
                    while (chunk := await stream.next_chunk()) is not None:
                        *lines, pending = (pending + chunk).split(b"\n")
                        for line in lines:
                            if not line.strip():
                                continue
                            event = orjson.loads(line)
                            delivered = WatchEvent(event["type"], event["object"])
                            if delivered.type != "ERROR" and delivered.resource_version:
                                version = delivered.resource_version
                                failures = 0
                            yield delivered
                return
            except TransportError as problem:
                failures += 1
                self._fail_over(server, problem)
                if not version or failures >= len(self.servers):
                    raise self._unavailable("GET", self.servers[server] + path,
                                            problem) from None

    async def create(self, kind: Kind, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj.get("metadata") or {}
        namespace, name = meta.get("namespace"), meta.get("name")
        # A generateName create sent twice makes two objects: it is never resent.
        recheck = resource_path(kind, namespace, name) if name else ""
        return await self._object("POST", resource_path(kind, namespace), obj,
                                  query=self._writes(), idempotent=False, recheck=recheck)

    async def update(self, kind: Kind, obj: dict[str, Any],
                     subresource: str = "") -> dict[str, Any]:
        meta = obj.get("metadata") or {}
        path = resource_path(kind, meta.get("namespace"), meta.get("name", ""), subresource)
        return await self._object("PUT", path, obj, query=self._writes())

    async def patch(self, kind: Kind, namespace: str | None, name: str, body: Any, *,
                    patch_type: PatchType = "merge", subresource: str = "",
                    force: bool = False) -> dict[str, Any]:
        query = self._writes(**({"force": "true"} if force else {}))
        # A JSON patch may append or move: applied twice it is not applied once.
        return await self._object("PATCH", resource_path(kind, namespace, name, subresource),
                                  body, content_type=PATCH_CONTENT_TYPES[patch_type], query=query,
                                  idempotent=patch_type != "json")

    async def delete(self, kind: Kind, namespace: str | None, name: str) -> dict[str, Any]:
        return await self._object("DELETE", resource_path(kind, namespace, name))
