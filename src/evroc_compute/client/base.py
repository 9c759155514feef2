"""The API client contract controllers, the scheduler and host agents are written against.

They read and write only through this (DESIGN.md: "one door to the data"), so every writer
gets the same admission and concurrency control as kubectl, and a piece can move to its own
process by swapping the in-process client for an HTTP one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from evroc_compute.api.kinds import Kind

PatchType = Literal["merge", "json", "apply"]
EventType = Literal["ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"]


class ClientError(Exception):
    """A Kubernetes Status the server answered with (the `status` dict is kept whole)."""

    def __init__(self, status: dict[str, Any]) -> None:
        self.status = status
        self.code: int = int(status.get("code", 500))
        self.reason: str = str(status.get("reason", ""))
        super().__init__(f"{self.code} {self.reason}: {status.get('message', '')}")

    @property
    def not_found(self) -> bool:
        return self.code == 404

    @property
    def conflict(self) -> bool:
        return self.code == 409

    @property
    def expired(self) -> bool:
        return self.code == 410


@dataclass(frozen=True)
class WatchEvent:
    type: EventType
    object: dict[str, Any] = field(default_factory=dict)

    @property
    def resource_version(self) -> str:
        return str((self.object.get("metadata") or {}).get("resourceVersion", ""))


class Client(Protocol):
    async def get(self, kind: Kind, namespace: str | None, name: str,
                  subresource: str = "") -> dict[str, Any]: ...

    async def list(self, kind: Kind, namespace: str | None = None, *, label_selector: str = "",
                   field_selector: str = "") -> tuple[list[dict[str, Any]], str]:
        """Items and the list's resourceVersion (to watch from)."""
        ...

    def watch(self, kind: Kind, namespace: str | None = None, *, resource_version: str = "",
              label_selector: str = "", timeout_seconds: int = 0) -> AsyncIterator[WatchEvent]: ...

    async def create(self, kind: Kind, obj: dict[str, Any]) -> dict[str, Any]: ...

    async def update(self, kind: Kind, obj: dict[str, Any],
                     subresource: str = "") -> dict[str, Any]: ...

    async def patch(self, kind: Kind, namespace: str | None, name: str, body: Any, *,
                    patch_type: PatchType = "merge", subresource: str = "",
                    force: bool = False) -> dict[str, Any]: ...

    async def delete(self, kind: Kind, namespace: str | None, name: str) -> dict[str, Any]: ...


def resource_path(kind: Kind, namespace: str | None, name: str = "",
                  subresource: str = "") -> str:
    base = f"/apis/{kind.group}/{kind.version}" if kind.group else f"/api/{kind.version}"
    if kind.namespaced and namespace is not None:
        base += f"/namespaces/{namespace}"
    path = f"{base}/{kind.plural}"
    if name:
        path += f"/{name}"
    if subresource:
        path += f"/{subresource}"
    return path


PATCH_CONTENT_TYPES: dict[str, str] = {
    "merge": "application/merge-patch+json", "json": "application/json-patch+json",
    "apply": "application/apply-patch+yaml"}


def list_query(label_selector: str, field_selector: str) -> dict[str, str]:
    """The query string of a list, with only the selectors that are set."""
    return {k: v for k, v in (("labelSelector", label_selector),
                              ("fieldSelector", field_selector)) if v}


def watch_query(resource_version: str, label_selector: str, timeout_seconds: int) -> dict[str, str]:
    """The query string of a watch (with bookmarks), with only the options that are set."""
    query = {"watch": "true", "allowWatchBookmarks": "true"}
    for name, value in (("resourceVersion", resource_version),
                        ("labelSelector", label_selector),
                        ("timeoutSeconds", str(timeout_seconds) if timeout_seconds else "")):
        if value:
            query[name] = value
    return query
