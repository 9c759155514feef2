"""PUT an object (or its status): a full replacement, guarded by resourceVersion."""

from __future__ import annotations

from evroc_compute.api.schema import FieldError
from evroc_compute.server import admission, errors
from evroc_compute.server.handlers.common import (
    Context,
    Target,
    check_namespace,
    check_resource_version,
    current,
    field_manager,
    write,
)
from evroc_compute.server.http import Request, Response


async def update(ctx: Context, req: Request, target: Target) -> Response:
    mode = admission.field_validation(req.query)
    obj = admission.check_identity(target.kind, req.decode_body())
    meta = obj["metadata"]
    if meta.get("name") and meta["name"] != target.name:
        raise errors.bad_request(f'the name of the object ({meta["name"]}) does not match the '
                                 f"name on the URL ({target.name})", field="metadata.name")
    check_namespace(target, meta)
    entry = current(ctx, target)
    if not meta.get("resourceVersion"):
        raise errors.invalid(target.kind, target.name, [FieldError(
            "metadata.resourceVersion", "FieldValueInvalid",
            "Invalid value: 0x0: must be specified for an update")])
    check_resource_version(target, obj, entry)
    return await write(ctx, req, target, entry, obj, manager=field_manager(req), mode=mode)
