"""Namespace (project) lifecycle: deleting one deletes everything in it, then itself.

DELETE marks the namespace Terminating (no new content is admitted), deletes each object in
it (objects with finalizers are marked and waited for), and removes the namespace once it
is empty. The work restarts from the stored state if the server restarts midway.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson

from evroc_compute.api.meta import now_rfc3339
from evroc_compute.server import errors
from evroc_compute.server.handlers.common import (
    NAMESPACE_KEY_PREFIX,
    Context,
    Target,
    load,
    object_response,
    remove,
    store_errors,
)
from evroc_compute.server.http import Response
from evroc_compute.store.base import Entry, StoreError

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
        if not dry_run:
            start_termination(ctx, target.name)  # no-op while it runs; revives a failed one
        return object_response(entry.raw)
    _terminating(obj, "deleting the objects in this namespace")
    if dry_run:
        return object_response(orjson.dumps(obj))
    with store_errors(target):
        stored = await ctx.store.update(target.key, obj, entry.revision)
    start_termination(ctx, target.name)
    return object_response(stored.raw)


def start_termination(ctx: Context, name: str) -> None:
    tasks = ctx.namespace_tasks
    running = tasks.get(name)
    if running is not None and not running.done():
        return
    task = asyncio.create_task(_terminate(ctx, name), name=f"terminate-namespace-{name}")
    tasks[name] = task
    task.add_done_callback(lambda done: tasks.pop(name, None) if tasks.get(name) is done
                           else None)


async def resume_terminations(ctx: Context) -> None:
    """Namespaces a previous run was deleting: carry on."""
    entries, _ = await ctx.store.list(NAMESPACE_KEY_PREFIX)
    for entry in entries:
        if entry.obj["metadata"].get("deletionTimestamp"):
            start_termination(ctx, entry.obj["metadata"]["name"])


async def _delete_contents(ctx: Context, name: str) -> list[str]:
    """Delete what can go now; return the objects still held by finalizers."""
    remaining: list[str] = []
    for kind in ctx.registry.kinds:
        if not kind.namespaced or kind.stored_as:  # a view's objects are its stored kind's
            continue
        entries, _ = await ctx.store.list(kind.key_prefix(name))
        for entry in entries:
            meta = entry.obj["metadata"]
            held = bool(meta.get("deletionTimestamp"))
            if not held:
                try:
                    held = (await remove(ctx, Target(kind, name, meta["name"]), entry,
                                         False))[0] == 202
                except errors.ApiError:
                    held = True  # changed meanwhile: the next pass sees it again
            if held:
                remaining.append(f"{kind.plural}/{meta['name']}")
    return remaining


async def _terminate(ctx: Context, name: str) -> None:
    key = NAMESPACE_KEY_PREFIX + name
    while True:
        try:
            # Creates admitted before the namespace turned Terminating may still be
            # committing: one in flight when this pass began may have landed after the
            # pass listed its kind, so only a pass that began and ended with none counts.
            busy = ctx.creating.get(name)
            remaining = await _delete_contents(ctx, name)
            ns = ctx.store.get(key)
            if ns is None:
                return
            if not remaining and not busy and not ctx.creating.get(name):
                await ctx.store.delete(key, ns.revision)
                return
            message = (f"waiting for {len(remaining)} object(s) with finalizers to be deleted: "
                       f"{', '.join(remaining[:5])}") if remaining else \
                "waiting for objects being created to be deleted"
            if ns.obj.get("status", {}).get("conditions", [{}])[0].get("message") != message:
                obj = load(ns)
                _terminating(obj, message)
                await ctx.store.update(key, obj, ns.revision)
        except asyncio.CancelledError:
            raise
        except (StoreError, errors.ApiError) as problem:  # transient: try again next pass
            log.warning("terminating namespace %s: %s; retrying", name, problem)
        except Exception:
            log.exception("terminating namespace %s failed; it resumes at the next start", name)
            return
        await asyncio.sleep(POLL_SECONDS)
