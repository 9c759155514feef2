"""Namespace (project) lifecycle: deleting one deletes everything in it, then itself.

DELETE marks the namespace Terminating (no new content is admitted), deletes each object in
it (objects with finalizers are marked and waited for), and removes the namespace once it
is empty. The work restarts from the stored state if the server restarts midway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson

from evroc_compute.api.meta import now_rfc3339
from evroc_compute.server import errors
from evroc_compute.server.handlers.common import NAMESPACE_KEY_PREFIX, Context, Target, load, object_response
from evroc_compute.server.http import Response
from evroc_compute.store.base import Entry, KeyNotFound, RevisionConflict, StoreError

log = logging.getLogger(__name__)
PROTECTED = frozenset({"default"})
POLL_SECONDS = 0.2


def _terminating(obj: dict[str, Any], remaining: str) -> None:
    obj["metadata"].setdefault("deletionTimestamp", now_rfc3339())
    obj.setdefault("spec", {})["finalizers"] = ["kubernetes"]
    obj["status"] = {"phase": "Terminating", "conditions": [{
        "type": "NamespaceContentRemaining", "status": "True" if remaining else "False",
        "lastTransitionTime": now_rfc3339(),
        "reason": "SomeResourcesRemain" if remaining else "ContentDeleted",
        "message": remaining or "All content successfully deleted"}]}


async def delete(ctx: Context, target: Target, entry: Entry, dry_run: bool) -> Response:
    if target.name in PROTECTED:
        raise errors.forbidden(f'namespaces "{target.name}" is forbidden: this namespace may not '
                               "be deleted", kind=target.kind, name=target.name)
    obj = load(entry)
    if obj["metadata"].get("deletionTimestamp"):
        return object_response(entry.raw)
    _terminating(obj, "deleting the objects in this namespace")
    if dry_run:
        return object_response(orjson.dumps(obj))
    stored = await ctx.store.update(target.key, obj, entry.revision)
    start_termination(ctx, target.name)
    return object_response(stored.raw)


def start_termination(ctx: Context, name: str) -> None:
    tasks: set[asyncio.Task[None]] = ctx.caches.setdefault("namespace-tasks", set())
    task = asyncio.create_task(_terminate(ctx, name), name=f"terminate-namespace-{name}")
    tasks.add(task)
    task.add_done_callback(tasks.discard)


async def resume_terminations(ctx: Context) -> None:
    """Namespaces a previous run was deleting: carry on."""
    entries, _ = await ctx.store.list(NAMESPACE_KEY_PREFIX)
    for entry in entries:
        if entry.obj["metadata"].get("deletionTimestamp"):
            start_termination(ctx, entry.obj["metadata"]["name"])


async def _terminate(ctx: Context, name: str) -> None:
    from evroc_compute.server.handlers.delete import remove

    namespaced = [k for k in ctx.registry.kinds if k.namespaced]
    empty_passes = 0
    try:
        while True:
            remaining: list[str] = []
            for kind in namespaced:
                entries, _ = await ctx.store.list(kind.key_prefix(name))
                for entry in entries:
                    meta = entry.obj["metadata"]
                    held = bool(meta.get("deletionTimestamp"))
                    if not held:
                        try:
                            code, _ = await remove(ctx, Target(kind, name, meta["name"]), entry,
                                                   False)
                            held = code == 202
                        except (errors.ApiError, StoreError):
                            held = True  # changed meanwhile: the next pass sees it again
                    if held:
                        remaining.append(f"{kind.plural}/{meta['name']}")
            key = NAMESPACE_KEY_PREFIX + name
            ns = ctx.store.get(key)
            if ns is None:
                return
            # A create admitted just before the namespace turned Terminating may still be
            # committing: only a namespace seen empty twice, a poll apart, is really empty.
            empty_passes = empty_passes + 1 if not remaining else 0
            if empty_passes >= 2:
                await ctx.store.delete(key, ns.revision)
                return
            waiting = remaining[:5]
            message = f"waiting for {len(remaining)} object(s) with finalizers to be deleted: " \
                      f"{', '.join(waiting)}"
            current = ns.obj.get("status", {}).get("conditions", [{}])[0].get("message")
            if remaining and current != message:
                obj = load(ns)
                _terminating(obj, message)
                with contextlib.suppress(RevisionConflict, KeyNotFound):
                    await ctx.store.update(key, obj, ns.revision)
            await asyncio.sleep(POLL_SECONDS)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("terminating namespace %s failed; it resumes at the next start", name)
