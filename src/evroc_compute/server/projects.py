"""Creating a project (namespace): its creator becomes its admin.

Who may create namespaces (cluster admins, users bound to `project-creator`) gets a RoleBinding
`admin` in the new namespace granting the `admin` ClusterRole. The store commits one key at a
time, so this is three idempotent steps, any of which a crash may interrupt: the namespace is
stored carrying the creator in its `evroc-compute.io/bind-admin` annotation; the binding is
created; the annotation is replaced by `evroc-compute.io/requester`. The request does all three
before it answers (the creator can use the project at once); after a crash the namespace
controller finds the pending annotation and finishes (controllers/namespace.py). Members of
system:masters and the controllers are not bound: they may do everything anyway.
"""

from __future__ import annotations

import contextlib
import dataclasses

import orjson

from evroc_compute.api import rbac
from evroc_compute.server.auth.users import CONTROLLER_MANAGER, MASTERS, UserInfo
from evroc_compute.server.handlers.common import Context, Target, is_dry_run, new_object_metadata
from evroc_compute.server.handlers.create import create
from evroc_compute.server.http import Request, Response
from evroc_compute.store.base import KeyExists, KeyNotFound, RevisionConflict

RETRIES = 5


def bound(user: UserInfo) -> bool:
    """Whether creating a project makes `user` its admin."""
    return MASTERS not in user.groups and user.name != CONTROLLER_MANAGER


async def create_project(ctx: Context, req: Request, target: Target) -> Response:
    response = await create(ctx, _naming_creator(req), target)
    if response.status != 201 or is_dry_run(req) or not bound(req.user):
        return response
    name = orjson.loads(response.body)["metadata"]["name"]
    return Response(201, await bind_creator(ctx, Target(target.kind, None, name)))


def _naming_creator(req: Request) -> Request:
    """The request with the creator to bind in its body; only the server names it (what a
    client sends there is replaced). A body create() would refuse is left for it to refuse."""
    body = req.decode_body()
    meta = body.get("metadata") or {} if isinstance(body, dict) else None
    annotations = meta.get("annotations") or {} if isinstance(meta, dict) else None
    if not isinstance(body, dict) or not isinstance(meta, dict) or \
            not isinstance(annotations, dict):
        return req
    annotations = {k: v for k, v in annotations.items() if k != rbac.PENDING_ADMIN}
    if bound(req.user):
        annotations[rbac.PENDING_ADMIN] = req.user.name
    if annotations or "annotations" in meta:
        body["metadata"] = {**meta, "annotations": annotations}
    return dataclasses.replace(req, body=orjson.dumps(body),
                               headers={**req.headers, "content-type": "application/json"})


async def bind_creator(ctx: Context, namespace: Target) -> bytes:
    """Bind the creator a pending namespace names as its admin; returns the namespace as
    stored after (or as it was, if nothing is pending)."""
    for attempt in range(RETRIES):
        entry = ctx.store.get(namespace.key)
        if entry is None:
            return b"{}"
        meta = entry.obj["metadata"]
        user = (meta.get("annotations") or {}).get(rbac.PENDING_ADMIN)
        if not user:
            return entry.raw
        binding = rbac.admin_binding(namespace.name, user)
        where = Target(rbac.ROLE_BINDING, namespace.name, binding["metadata"]["name"])
        new_object_metadata(binding, where)
        with contextlib.suppress(KeyExists):  # bound before a crash, or by the controller
            await ctx.store.create(where.key, binding)
        settled = orjson.loads(entry.raw)
        settled["metadata"]["annotations"] = rbac.settled_annotations(meta["annotations"])
        try:
            return (await ctx.store.update(namespace.key, settled, entry.revision)).raw
        except (RevisionConflict, KeyNotFound):
            if attempt == RETRIES - 1:
                raise
    raise AssertionError("unreachable")

