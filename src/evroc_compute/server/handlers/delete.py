"""DELETE an object or a collection: preconditions, finalizers, dry run, namespaces."""

from __future__ import annotations

from typing import Any

import orjson

from evroc_compute.api.meta import now_rfc3339
from evroc_compute.server import errors, namespaces
from evroc_compute.server.handlers.common import (
    Context,
    Target,
    current,
    delete_entry,
    is_dry_run,
    load,
    object_response,
)
from evroc_compute.server.handlers.list import select
from evroc_compute.server.http import Request, Response
from evroc_compute.store.base import Entry, RevisionConflict

PROPAGATION = ("Orphan", "Background", "Foreground")


def delete_options(req: Request) -> dict[str, Any]:
    if not req.body.strip():
        options: dict[str, Any] = {}
    else:
        options = req.decode_body()
        if not isinstance(options, dict):
            raise errors.bad_request("DeleteOptions must be a JSON object")
    policy = options.get("propagationPolicy") or req.query.get("propagationPolicy")
    if policy and policy not in PROPAGATION:
        raise errors.bad_request(f'propagationPolicy must be one of Orphan, Background or '
                                 f'Foreground, not "{policy}"', field="propagationPolicy")
    dry = options.get("dryRun") or []
    if dry not in ([], ["All"]):
        raise errors.bad_request('dryRun must be ["All"]', field="dryRun")
    options["dryRun"] = bool(dry) or is_dry_run(req)
    return options


def check_preconditions(target: Target, entry: Entry, options: dict[str, Any]) -> None:
    pre = options.get("preconditions") or {}
    meta = entry.obj["metadata"]
    uid, version = pre.get("uid"), pre.get("resourceVersion")
    if uid and uid != meta.get("uid"):
        raise errors.conflict(target.kind, target.name, f"Precondition failed: UID in "
                              f"precondition: {uid}, UID in object meta: {meta.get('uid')}")
    if version and version != meta.get("resourceVersion"):
        raise errors.conflict(target.kind, target.name, f"Precondition failed: ResourceVersion in "
                              f"precondition: {version}, ResourceVersion in object meta: "
                              f"{meta.get('resourceVersion')}")


async def remove(ctx: Context, target: Target, entry: Entry, dry_run: bool) -> tuple[int, bytes]:
    """Delete now, or mark for deletion while finalizers remain: (status code, body)."""
    obj = load(entry)
    meta = obj["metadata"]
    if meta.get("finalizers"):
        if meta.get("deletionTimestamp"):
            return 202, entry.raw
        meta["deletionTimestamp"] = now_rfc3339()
        meta["deletionGracePeriodSeconds"] = 0
        if dry_run:
            return 202, orjson.dumps(obj)
        try:
            stored = await ctx.store.update(target.key, obj, entry.revision)
        except RevisionConflict:
            raise errors.conflict(target.kind, target.name) from None
        return 202, stored.raw
    if dry_run:
        return 200, entry.raw
    gone = await delete_entry(ctx, target, entry)
    return 200, gone.raw


async def delete(ctx: Context, req: Request, target: Target) -> Response:
    options = delete_options(req)
    entry = current(ctx, target)
    check_preconditions(target, entry, options)
    if target.kind.plural == "namespaces":
        return await namespaces.delete(ctx, target, entry, options["dryRun"])
    code, body = await remove(ctx, target, entry, options["dryRun"])
    return object_response(body, code)


async def delete_collection(ctx: Context, req: Request, target: Target) -> Response:
    options = delete_options(req)
    if target.kind.plural == "namespaces":
        raise errors.method_not_allowed("DELETE", "namespaces (delete them one by one)")
    entries, _, _ = await select(ctx, target, req)
    deleted = []
    for entry in entries:
        item = Target(target.kind, entry.obj["metadata"].get("namespace"),
                      entry.obj["metadata"]["name"])
        _, body = await remove(ctx, item, entry, options["dryRun"])
        deleted.append(body)
    head = orjson.dumps({"apiVersion": target.kind.api_version, "kind": f"{target.kind.kind}List",
                         "metadata": {"resourceVersion": str(ctx.store.revision)}})
    return Response(200, b"".join((head[:-1], b',"items":[', b",".join(deleted), b"]}")))
