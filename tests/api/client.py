"""A bare HTTP client for API-level tests: exact bytes in, status + decoded body out."""

from __future__ import annotations

import http.client
import json
import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlparse

from tests.conftest import Server

GROUP = "/apis/compute.evroclabs.net/v1alpha1"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    raw: bytes
    set_cookies: list[str] = field(default_factory=list)  # every Set-Cookie header

    @property
    def body(self) -> Any:
        return json.loads(self.raw)


class Http:
    """Requests to `server` as its admin, or with `tls` (another client certificate) or
    `token` (a bearer token) instead."""

    def __init__(self, server: Server, *, tls: ssl.SSLContext | None = None,
                 token: str = "") -> None:
        parsed = urlparse(server.url)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self.https = parsed.scheme == "https"
        self.context = tls or (server.tls() if self.https and not token else None)
        if self.https and self.context is None:
            self.context = ssl.create_default_context(cafile=str(server.ca))
        self.token = token

    def _connection(self) -> http.client.HTTPConnection:
        if self.https:
            return http.client.HTTPSConnection(self.host, self.port, timeout=30,
                                               context=self.context)
        return http.client.HTTPConnection(self.host, self.port, timeout=30)

    def request(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
                content_type: str = "application/json", accept: str = "application/json",
                headers: dict[str, str] | None = None, **query: Any) -> Reply:
        if query:
            path += "?" + urlencode({k: v for k, v in query.items() if v is not None})
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        conn = self._connection()
        sent = {"Accept": accept, **(headers or {})}
        if self.token:
            sent.setdefault("Authorization", f"Bearer {self.token}")
        if data is not None:
            sent["Content-Type"] = content_type
        conn.request(method, path, body=data, headers=sent)
        response = conn.getresponse()
        reply = Reply(response.status, {k.lower(): v for k, v in response.getheaders()},
                      response.read(), response.headers.get_all("set-cookie") or [])
        conn.close()
        return reply

    def stream(self, path: str, **query: Any) -> tuple[http.client.HTTPConnection, Any]:
        conn = self._connection()
        conn.request("GET", path + "?" + urlencode(query),
                     headers={"Authorization": f"Bearer {self.token}"} if self.token else {})
        return conn, conn.getresponse()


def vm_path(namespace: str = "default", name: str = "") -> str:
    base = f"{GROUP}/namespaces/{namespace}/virtualmachines"
    return f"{base}/{name}" if name else base


def disk_path(namespace: str = "default", name: str = "") -> str:
    base = f"{GROUP}/namespaces/{namespace}/disks"
    return f"{base}/{name}" if name else base


def vm(name: str, *, labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "compute.evroclabs.net/v1alpha1", "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": {"vmVirtualResourcesRef": {"vmVirtualResourcesRefName": "a1a.s"},
                 "diskRefs": [{"name": f"{name}-boot", "bootFrom": True}], **spec}}
    if labels:
        body["metadata"]["labels"] = labels
    return body


def disk(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "compute.evroclabs.net/v1alpha1", "kind": "Disk",
            "metadata": {"name": name},
            "spec": spec or {"diskImage": {"diskImageRef": {"name": "ubuntu.24-04.1"}}}}
