"""PATCH an object: JSON merge patch, JSON patch, server-side apply; strategic merge is 415.

Patches apply to the latest version; when another writer wins the race in between, the
patch is re-applied to the new latest (as kube-apiserver does), unless the patch itself
names a resourceVersion, which then acts as a precondition.
"""

from __future__ import annotations

from typing import Any

import jsonpatch
import orjson

from evroc_compute.api.meta import now_rfc3339
from evroc_compute.server import admission, errors, managedfields
from evroc_compute.server.handlers.common import (
    Context,
    Target,
    check_resource_version,
    current,
    ensure_namespace,
    field_manager,
    is_dry_run,
    load,
    new_object_metadata,
    object_response,
    store_create,
    write,
)
from evroc_compute.server.http import Request, Response

MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY = "application/apply-patch+yaml"
STRATEGIC = "application/strategic-merge-patch+json"
ACCEPTED = (JSON_PATCH, MERGE, APPLY)
RETRIES = 5


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _apply_json_patch(obj: dict[str, Any], operations: Any) -> Any:
    if not isinstance(operations, list):
        raise errors.bad_request("a JSON patch must be a list of operations, e.g. "
                                 '[{"op": "replace", "path": "/spec/running", "value": false}]')
    try:
        return jsonpatch.JsonPatch(operations).apply(obj)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError,
            KeyError) as problem:
        raise errors.ApiError(422, "Invalid", f"the JSON patch could not be applied: {problem}",
                              causes=[{"type": "FieldValueInvalid", "message": str(problem),
                                       "field": ""}]) from None


async def patch(ctx: Context, req: Request, target: Target) -> Response:
    kind_of_patch = req.content_type
    if kind_of_patch == STRATEGIC and target.kind.group == "":
        kind_of_patch = MERGE  # core kinds accept strategic merge; for Namespace it is a merge
    if kind_of_patch not in ACCEPTED:
        raise errors.unsupported_media_type(req.content_type, ACCEPTED)
    mode = admission.field_validation(req.query)
    if kind_of_patch == APPLY and target.subresource != "status":
        return await apply(ctx, req, target, mode)
    body = req.decode_body()
    if kind_of_patch == MERGE and not isinstance(body, dict):
        raise errors.bad_request("a merge patch must be a JSON object")
    manager = field_manager(req)
    for attempt in range(RETRIES):
        entry = current(ctx, target)
        old = load(entry)
        new = _apply_json_patch(old, body) if kind_of_patch == JSON_PATCH \
            else merge_patch(old, body)
        new = admission.check_identity(target.kind, new)
        check_resource_version(target, new, entry)
        try:
            return await write(ctx, req, target, entry, new, manager=manager, mode=mode)
        except errors.ApiError as problem:
            pinned = (new.get("metadata") or {}).get("resourceVersion") != str(entry.revision)
            if problem.reason != "Conflict" or pinned or attempt == RETRIES - 1:
                raise
    raise AssertionError("unreachable")


async def apply(ctx: Context, req: Request, target: Target, mode: str) -> Response:
    manager = req.query.get("fieldManager")
    if not manager:
        raise errors.invalid(target.kind, target.name, [admission.FieldError(
            "fieldManager", "FieldValueRequired",
            "Required value: is required for apply patch (kubectl sends --field-manager)")])
    force = req.flag("force")
    applied = admission.check_identity(target.kind, req.decode_body())
    name = applied["metadata"].get("name")
    if name and name != target.name:
        raise errors.bad_request(f"the name of the object ({name}) does not match the name on "
                                 f"the URL ({target.name})", field="metadata.name")
    applied["metadata"]["name"] = target.name
    for attempt in range(RETRIES):
        entry = ctx.store.get(target.key)
        try:
            new = managedfields.apply(load(entry) if entry else None, applied, manager=manager,
                                      force=force, api_version=target.kind.api_version,
                                      now=now_rfc3339())
        except managedfields.ApplyConflict as clash:
            raise errors.ApiError(409, "Conflict", clash.message, name=target.name,
                                  kind=target.kind, causes=[
                                      {"type": "FieldManagerConflict",
                                       "message": f'conflict with "{owner}"', "field": field}
                                      for owner, field in clash.conflicts]) from None
        if entry is None:
            return await _create_by_apply(ctx, req, target, new, mode)
        check_resource_version(target, applied, entry)
        try:
            return await write(ctx, req, target, entry, new, manager=manager, mode=mode,
                               applied=True)
        except errors.ApiError as problem:
            if problem.reason != "Conflict" or attempt == RETRIES - 1:
                raise
    raise AssertionError("unreachable")


async def _create_by_apply(ctx: Context, req: Request, target: Target, obj: dict[str, Any],
                           mode: str) -> Response:
    ensure_namespace(ctx, target, creating=True)
    managed = obj["metadata"].get("managedFields")
    new_object_metadata(obj, target)
    obj, warnings = admission.admit(target.kind, obj, None, mode=mode, name=target.name)
    obj["metadata"]["managedFields"] = managed
    if is_dry_run(req):
        return object_response(orjson.dumps(obj), 201, warnings)
    entry = await store_create(ctx, target, obj)
    return object_response(entry.raw, 201, warnings)
