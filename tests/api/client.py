"""A bare HTTP client for API-level tests: exact bytes in, status + decoded body out."""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlparse

GROUP = "/apis/compute.evroclabs.net/v1alpha1"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    raw: bytes

    @property
    def body(self) -> Any:
        return json.loads(self.raw)


class Http:
    def __init__(self, url: str) -> None:
        parsed = urlparse(url)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 80

    def request(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
                content_type: str = "application/json", accept: str = "application/json",
                headers: dict[str, str] | None = None, **query: Any) -> Reply:
        if query:
            path += "?" + urlencode({k: v for k, v in query.items() if v is not None})
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        sent = {"Accept": accept, **(headers or {})}
        if data is not None:
            sent["Content-Type"] = content_type
        conn.request(method, path, body=data, headers=sent)
        response = conn.getresponse()
        reply = Reply(response.status, {k.lower(): v for k, v in response.getheaders()},
                      response.read())
        conn.close()
        return reply

    def stream(self, path: str, **query: Any) -> tuple[http.client.HTTPConnection, Any]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        conn.request("GET", path + "?" + urlencode(query))
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
