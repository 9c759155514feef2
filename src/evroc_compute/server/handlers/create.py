"""POST a collection: admit a new object and store it (201), or answer a dry run."""

from __future__ import annotations

import copy
from typing import Any

import orjson

from evroc_compute.api.meta import now_rfc3339
from evroc_compute.server import admission, errors, managedfields
from evroc_compute.server.handlers.common import (
    Context,
    Target,
    check_create_quota,
    check_namespace,
    ensure_namespace,
    field_manager,
    generated_name,
    is_dry_run,
    new_object_metadata,
    object_response,
    store_create,
)
from evroc_compute.server.http import Request, Response

# As kube-apiserver (1.30+): a generated name that is taken is drawn again, up to this often.
GENERATE_NAME_ATTEMPTS = 8


async def create(ctx: Context, req: Request, target: Target) -> Response:
    obj = admission.check_identity(target.kind, req.decode_body())
    meta = obj["metadata"]
    if meta.get("name") or not isinstance(meta.get("generateName"), str):
        return await _create(ctx, req, target, obj)
    for attempt in range(GENERATE_NAME_ATTEMPTS):
        attempt_obj = copy.deepcopy(obj)
        name = generated_name(meta["generateName"])
        attempt_obj["metadata"]["name"] = name
        if ctx.store.get(Target(target.kind, target.namespace, name).key) is not None:
            continue
        try:
            return await _create(ctx, req, target, attempt_obj)
        except errors.ApiError as problem:  # created meanwhile under the same name
            if problem.reason != "AlreadyExists" or attempt == GENERATE_NAME_ATTEMPTS - 1:
                raise
    raise errors.ApiError(409, "AlreadyExists", f"{target.kind.qualified_resource} with "
                          f'generateName "{meta["generateName"]}": every generated name tried '
                          "was taken; use a longer or more distinct prefix",
                          kind=target.kind, name=meta["generateName"])


async def _create(ctx: Context, req: Request, target: Target, obj: dict[str, Any]) -> Response:
    mode = admission.field_validation(req.query)
    dry_run = is_dry_run(req)
    manager = field_manager(req)
    meta = obj["metadata"]
    check_namespace(target, meta)
    name = meta.get("name") if isinstance(meta.get("name"), str) else ""
    target = Target(target.kind, target.namespace, name)
    ensure_namespace(ctx, target, creating=True)
    new_object_metadata(obj, target)
    obj, warnings = admission.admit(target.kind, obj, None, mode=mode, name=name)
    ctx.guard(req.user, target.kind, target.namespace or "", obj)
    meta = obj["metadata"]
    if target.kind.managed_fields:
        meta["managedFields"] = managedfields.record_update(
            None, obj, manager=manager, api_version=target.kind.api_version, now=now_rfc3339())
    if not meta.get("managedFields"):
        meta.pop("managedFields", None)
    if dry_run:
        if ctx.store.get(target.key) is not None:
            raise errors.already_exists(target.kind, name)
        await check_create_quota(ctx, target, obj)
        return object_response(orjson.dumps(obj), 201, warnings)
    entry = await store_create(ctx, target, obj)
    return object_response(entry.raw, 201, warnings)
