"""GET one object (or its status), as JSON or as a one-row Table."""

from __future__ import annotations

from evroc_compute.server import tables
from evroc_compute.server.handlers.common import Context, Target, current, object_response
from evroc_compute.server.http import Request, Response


async def get(ctx: Context, req: Request, target: Target) -> Response:
    entry = current(ctx, target)
    wanted = tables.negotiate(req)
    if wanted is not None:
        return tables.response(target.kind, [entry], wanted, str(entry.revision), "")
    return object_response(entry.raw)
