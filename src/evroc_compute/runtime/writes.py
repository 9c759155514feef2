"""The few writes every controller makes, each a no-op when nothing would change.

Every write carries the resourceVersion it was computed from, so a controller acting on a stale
cache gets a 409 and reconciles again from fresher facts instead of overwriting a newer state.
"""

from __future__ import annotations

from typing import Any

from evroc_compute.api.kinds import Kind
from evroc_compute.client.base import Client, ClientError


async def write_status(client: Client, kind: Kind, obj: dict[str, Any],
                       status: dict[str, Any]) -> dict[str, Any]:
    """Replace obj's status with `status` (through /status) unless it already is that."""
    if obj.get("status") == status:
        return obj
    return await client.update(kind, {**obj, "status": status}, "status")


async def set_finalizer(client: Client, kind: Kind, obj: dict[str, Any], finalizer: str,
                        present: bool) -> dict[str, Any]:
    """Add or remove one finalizer, keeping the others; removing it from an object already
    gone (someone else removed the last finalizer) is done, not an error."""
    meta = obj["metadata"]
    finalizers = list(meta.get("finalizers") or [])
    if (finalizer in finalizers) == present:
        return obj
    if present:
        finalizers.append(finalizer)
    else:
        finalizers.remove(finalizer)
    body = {"metadata": {"finalizers": finalizers or None,
                         "resourceVersion": meta["resourceVersion"]}}
    try:
        return await client.patch(kind, meta.get("namespace"), meta["name"], body)
    except ClientError as problem:
        if present or not problem.not_found:
            raise
        return obj


async def delete_quietly(client: Client, kind: Kind, obj: dict[str, Any]) -> None:
    """Delete unless already being deleted; a 404 means someone else did."""
    meta = obj["metadata"]
    if meta.get("deletionTimestamp"):
        return
    try:
        await client.delete(kind, meta.get("namespace"), meta["name"])
    except ClientError as problem:
        if not problem.not_found:
            raise
