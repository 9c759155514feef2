"""DELETE an object or a collection: preconditions, finalizers, dry run, namespaces."""

from __future__ import annotations

from typing import Any

import orjson

from evroc_compute.server import errors, namespaces
from evroc_compute.server.handlers.common import (
    Context,
    Target,
    current,
    is_dry_run,
    list_body,
    object_response,
    remove,
)
from evroc_compute.server.handlers.list import select
from evroc_compute.server.http import Request, Response
from evroc_compute.store.base import Entry, RevisionConflict

PROPAGATION = ("Orphan", "Background", "Foreground")
RETRIES = 5


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
    pre = options.get("preconditions")
    if pre is not None and not (isinstance(pre, dict) and all(
            isinstance(pre.get(k), (str, type(None))) for k in ("uid", "resourceVersion"))):
        raise errors.bad_request('preconditions must be an object like {"uid": "...", '
                                 '"resourceVersion": "..."}', field="preconditions")
    orphan = options.get("orphanDependents", req.query.get("orphanDependents"))
    if isinstance(orphan, str) and orphan in ("true", "false"):
        orphan = orphan == "true"
    if orphan is not None and not isinstance(orphan, bool):
        raise errors.bad_request("orphanDependents must be true or false",
                                 field="orphanDependents")
    options["orphanDependents"] = orphan
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


async def delete_latest(ctx: Context, target: Target, options: dict[str, Any]) -> tuple[int, bytes]:
    """Delete what is stored now: re-read and retry when a write lands in between, unless
    the client's preconditions pinned a version. Returns (status code, body)."""
    for attempt in range(RETRIES):
        entry = current(ctx, target)
        check_preconditions(target, entry, options)
        try:
            if target.kind.plural == "namespaces":
                response = await namespaces.delete(ctx, target, entry, options["dryRun"])
                return response.status, response.body
            return await remove(ctx, target, entry, options["dryRun"])
        except errors.ApiError as problem:
            # Only a write that lost a race is worth another try; a refusal stays a refusal.
            if not isinstance(problem.__cause__, RevisionConflict) or \
                    options.get("preconditions") or attempt == RETRIES - 1:
                raise
    raise AssertionError("unreachable")


async def delete(ctx: Context, req: Request, target: Target) -> Response:
    options = delete_options(req)
    code, body = await delete_latest(ctx, target, options)
    if code == 200 and target.kind.builtin and target.kind.plural != "namespaces":
        # Built-in kinds deleted at once answer a Success Status naming what went, as
        # kube-apiserver's registry does (custom resources answer with the object).
        return Response(200, orjson.dumps(deleted_status(target, orjson.loads(body))))
    return object_response(body, response_code(code == 202, options))


def deleted_status(target: Target, obj: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": {"name": target.name, "kind": target.kind.plural,
                        "uid": obj["metadata"].get("uid", "")}}


def response_code(held: bool, options: dict[str, Any]) -> int:
    """kube-apiserver's rule: 200 with the object, also when finalizers hold it back; 202 only
    for an object left in place when the client asked to cascade with orphanDependents=false
    (kube keeps it that narrow so as not to break clients; propagationPolicy never does)."""
    return 202 if held and options.get("orphanDependents") is False else 200


async def delete_collection(ctx: Context, req: Request, target: Target) -> Response:
    options = delete_options(req)
    if target.kind.plural == "namespaces":
        raise errors.method_not_allowed("DELETE", "namespaces (delete them one by one)")
    entries, _, _ = await select(ctx, target, req)
    deleted = []
    for entry in entries:
        item = Target(target.kind, entry.obj["metadata"].get("namespace"),
                      entry.obj["metadata"]["name"])
        try:
            deleted.append((await delete_latest(ctx, item, options))[1])
        except errors.ApiError as problem:
            if problem.code != 404:  # already gone: nothing to report
                raise
    return Response(200, list_body(target.kind, {"resourceVersion": str(ctx.store.revision)},
                                   deleted))
