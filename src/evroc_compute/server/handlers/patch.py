"""PATCH an object: JSON merge patch, JSON patch, server-side apply; strategic merge is 415.

Patches apply to the latest version; when another writer wins the race in between, the
patch is re-applied to the new latest (as kube-apiserver does), unless the patch itself
names a resourceVersion, which then acts as a precondition.
"""

from __future__ import annotations

from typing import Any

import jsonpatch
import jsonpointer
import orjson

from evroc_compute.api.meta import now_rfc3339
from evroc_compute.server import admission, errors, managedfields
from evroc_compute.server.handlers.common import (
    Context,
    Target,
    check_create_quota,
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
    if not all(isinstance(operation, dict) for operation in operations):
        # kube-apiserver fails to decode such a patch: 400, not a 422 from applying it.
        raise errors.bad_request("a JSON patch must be a list of operation objects, e.g. "
                                 '[{"op": "replace", "path": "/spec/running", "value": false}]')
    result: Any = obj
    for index, operation in enumerate(operations):  # one at a time: errors name the operation
        pointer = operation.get("path") if isinstance(operation, dict) else None
        try:
            result = jsonpatch.JsonPatch([operation]).apply(result)
            continue
        except jsonpatch.JsonPatchTestFailed:
            actual = jsonpointer.resolve_pointer(result, str(pointer), None)
            reason = (f"test failed: the value at {pointer} is {orjson.dumps(actual).decode()}, "
                      f"not {orjson.dumps(operation.get('value')).decode()}")
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException, TypeError,
                KeyError) as problem:
            # jsonpointer quotes the whole parent object ("member 'x' not found in {...}"):
            # keep the first clause, never echo the object back.
            reason = str(problem).split(" in {")[0].split(" in [")[0]
        op = operation.get("op") if isinstance(operation, dict) else None
        field = _field_path(pointer) if isinstance(pointer, str) else ""
        raise errors.ApiError(422, "Invalid", f"the JSON patch could not be applied: operation "
                              f"{index} ({op} {pointer}): {reason}",
                              causes=[{"type": "FieldValueInvalid", "message": reason,
                                       "field": field or f"patch[{index}]"}])
    return result


def _field_path(pointer: str) -> str:
    """/spec/diskRefs/0/name -> spec.diskRefs[0].name, the form Status causes use."""
    path = ""
    for part in pointer.split("/")[1:]:
        part = part.replace("~1", "/").replace("~0", "~")
        path += f"[{part}]" if part.isdigit() or part == "-" else (f".{part}" if path else part)
    return path


async def patch(ctx: Context, req: Request, target: Target) -> Response:
    kind_of_patch = req.content_type
    if kind_of_patch == STRATEGIC and target.kind.builtin:
        kind_of_patch = MERGE  # built-in kinds take strategic merge; for ours it is a merge
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
            try:
                return await _create_by_apply(ctx, req, target, new, mode)
            except errors.ApiError as problem:  # another apply created it first: merge into it
                if problem.reason != "AlreadyExists" or attempt == RETRIES - 1:
                    raise
                continue
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
    ctx.guard(req.user, target.kind, target.namespace or "", obj)
    if target.kind.managed_fields:
        obj["metadata"]["managedFields"] = managed
    if is_dry_run(req):
        await check_create_quota(ctx, target, obj)
        return object_response(orjson.dumps(obj), 201, warnings)
    entry = await store_create(ctx, target, obj)
    return object_response(entry.raw, 201, warnings)
