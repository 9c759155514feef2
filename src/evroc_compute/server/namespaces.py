"""Namespace (project) deletion, the server's part: what is special about the Namespace kind.

As in Kubernetes, DELETE only marks the namespace Terminating (`deletionTimestamp`, the
`kubernetes` finalizer in spec.finalizers): nothing new may be created in it. The namespace
controller (controllers/namespace.py, leader-elected like the others) deletes what is in it
through the API and reports progress in its status, then asks to remove the finalizer with
`PUT .../namespaces/NAME/finalize`. That request is where the server keeps the guarantee: it
is refused (409) while anything is left in the namespace or a create admitted before the
namespace turned Terminating is still being committed, and otherwise deletes the namespace
in the same step, so nothing can be left behind in a namespace that no longer exists.
"""

from __future__ import annotations

from typing import Any

import orjson

from evroc_compute.api.core import NAMESPACE_FINALIZER, listed, terminating_status
from evroc_compute.api.meta import now_rfc3339
from evroc_compute.server import errors
from evroc_compute.server.handlers.common import (
    Context,
    Target,
    current,
    load,
    object_response,
    store_errors,
)
from evroc_compute.server.http import Request, Response
from evroc_compute.store.base import Entry, lean

PROTECTED = frozenset({"default"})


def terminating(obj: dict[str, Any], remaining: str) -> None:
    """Mark `obj` Terminating, with what is left (empty when nothing is)."""
    obj["metadata"].setdefault("deletionTimestamp", now_rfc3339())
    obj.setdefault("spec", {})["finalizers"] = [NAMESPACE_FINALIZER]
    obj["status"] = terminating_status(remaining, now_rfc3339())


async def delete(ctx: Context, target: Target, entry: Entry, dry_run: bool) -> Response:
    if target.name in PROTECTED:
        raise errors.forbidden(f'namespaces "{target.name}" is forbidden: this namespace may not '
                               "be deleted", kind=target.kind, name=target.name)
    obj = load(entry)
    if obj["metadata"].get("deletionTimestamp"):
        return object_response(entry.raw)
    terminating(obj, "deleting the objects in this namespace")
    if dry_run:
        return object_response(orjson.dumps(obj))
    with store_errors(target):
        stored = await ctx.store.update(target.key, obj, entry.revision)
    return object_response(stored.raw)


def remaining(ctx: Context, name: str) -> list[str]:
    """What is still in namespace `name` (`plural/name`), in-flight creates included."""
    left = [f"{kind.plural}/{entry.obj['metadata']['name']}"
            for kind in ctx.registry.kinds if kind.namespaced and kind.stored_as is None
            for entry in ctx.store.current(kind.key_prefix(name))]
    in_flight = ctx.creating.get(name, 0)
    return left + [f"{in_flight} object(s) being created"] * bool(in_flight)


async def finalize(ctx: Context, req: Request, target: Target) -> Response:
    """PUT .../namespaces/NAME/finalize: set spec.finalizers; with none left, delete it."""
    if req.method != "PUT":
        raise errors.method_not_allowed(req.method, f"namespaces/{target.name}/finalize")
    body = req.decode_body()
    spec = body.get("spec") if isinstance(body, dict) else None
    finalizers = spec.get("finalizers") if isinstance(spec, dict) else None
    if finalizers is None:
        finalizers = []
    if not (isinstance(finalizers, list) and all(isinstance(f, str) for f in finalizers)):
        raise errors.bad_request("spec.finalizers must be a list of strings",
                                 field="spec.finalizers")
    entry = current(ctx, target)
    obj = load(entry)
    deleting = bool(obj["metadata"].get("deletionTimestamp"))
    # Gone once both kinds of finalizer are: a user's metadata.finalizers still hold it.
    if deleting and not finalizers and not obj["metadata"].get("finalizers"):
        left = remaining(ctx, target.name)
        if left:
            raise errors.conflict(target.kind, target.name,
                                  f"the namespace still has content: {listed(left)}")
        with store_errors(target):
            gone = await ctx.store.delete(target.key, entry.revision)
        return object_response(gone.raw)
    obj.setdefault("spec", {})["finalizers"] = finalizers
    if lean(obj) == entry.obj:
        return object_response(entry.raw)
    with store_errors(target):
        stored = await ctx.store.update(target.key, obj, entry.revision)
    return object_response(stored.raw)
