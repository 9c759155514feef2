"""What every verb shares: the request's target, namespace rules and the one write path.

`write` is where an accepted change becomes a stored version: server-owned metadata is
carried over, status and spec are kept apart by subresource, generation counts spec
changes, managedFields record who changed what, finalizers gate deletion, and dryRun stops
short of the store.
"""

from __future__ import annotations

import copy
import secrets
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import orjson

from evroc_compute.api.kinds import Kind, Registry
from evroc_compute.api.meta import now_rfc3339
from evroc_compute.server import admission, errors, managedfields
from evroc_compute.server.auth.users import UserInfo
from evroc_compute.server.http import Request, Response, warning_header
from evroc_compute.server.quota import QuotaAdmission
from evroc_compute.store.base import (
    Entry,
    KeyExists,
    KeyNotFound,
    RevisionConflict,
    Store,
    StoreUnavailable,
)

NAMESPACE_KEY_PREFIX = "/core/namespaces/"
SERVER_OWNED_METADATA = ("uid", "creationTimestamp", "generation", "deletionTimestamp",
                         "deletionGracePeriodSeconds", "name", "namespace")


@dataclass
class Context:
    registry: Registry
    store: Store
    bookmark_interval: float = 5.0
    creating: dict[str, int] = field(default_factory=dict)  # namespace -> creates in flight
    # Asked with each admitted object before it is stored (raises a Status to refuse it):
    # who writes may matter beyond the authorizer's yes (RBAC escalation).
    guard: Callable[[UserInfo, Kind, str, dict[str, Any]], None] = lambda *_: None
    quota: QuotaAdmission = field(default_factory=QuotaAdmission)
    # Whether a control plane runs (the server's controllers): new objects then get their
    # kind's controlled finalizers and status.
    control_plane: bool = False


@dataclass(frozen=True)
class Target:
    kind: Kind
    namespace: str | None  # None: all namespaces (lists) or a cluster-scoped kind
    name: str = ""
    subresource: str = ""

    @property
    def key(self) -> str:
        return self.kind.key(self.namespace or "", self.name)


def load(entry: Entry) -> dict[str, Any]:
    """A private, mutable copy of a stored object."""
    result: dict[str, Any] = orjson.loads(entry.raw)
    return result


def object_response(raw: bytes, status: int = 200, warnings: Sequence[str] = ()) -> Response:
    return Response(status, raw, headers=[warning_header(w) for w in warnings])


def is_dry_run(req: Request) -> bool:
    value = req.query.get("dryRun", "")
    if value and value != "All":
        raise errors.bad_request(f'dryRun must be "All", not "{value}"', field="dryRun",
                                 cause_type="FieldValueNotSupported")
    return value == "All"


def field_manager(req: Request, default: str = "") -> str:
    manager = req.query.get("fieldManager")
    if manager is not None:
        if not manager or len(manager) > 128:
            raise errors.bad_request("fieldManager must be 1 to 128 characters",
                                     field="fieldManager")
        return manager
    if default:
        return default
    agent = req.headers.get("user-agent", "unknown")
    return agent.split("/")[0][:128] or "unknown"


def ensure_namespace(ctx: Context, target: Target, *, creating: bool) -> None:
    if not target.kind.namespaced or target.namespace is None:
        return
    entry = ctx.store.get(NAMESPACE_KEY_PREFIX + target.namespace)
    if entry is None:
        raise errors.namespace_not_found(target.namespace)
    if creating and entry.obj["metadata"].get("deletionTimestamp"):
        raise errors.forbidden(
            f'{target.kind.qualified_resource} "{target.name}" is forbidden: unable to create new '
            f"content in namespace {target.namespace} because it is being terminated",
            kind=target.kind, name=target.name)


def current(ctx: Context, target: Target) -> Entry:
    entry = ctx.store.get(target.key)
    if entry is None:
        raise errors.not_found(target.kind, target.name)
    return entry


# apimachinery's utilrand alphabet: no vowels (no words) and no look-alikes (0/o, 1/l, 3/e).
GENERATE_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def generated_name(prefix: str) -> str:
    """`prefix` and five random characters, as kube's names.SimpleNameGenerator makes them
    (the prefix is cut to leave room in a 63-character name)."""
    prefix = prefix[:58]
    return prefix + "".join(secrets.choice(GENERATE_NAME_ALPHABET) for _ in range(5))


def new_object_metadata(obj: dict[str, Any], target: Target, control_plane: bool = False) -> None:
    meta = obj["metadata"]
    for owned in (*SERVER_OWNED_METADATA, "resourceVersion", "managedFields"):
        if owned not in ("name", "namespace"):
            meta.pop(owned, None)
    meta["uid"] = str(uuid.uuid4())
    meta["creationTimestamp"] = now_rfc3339()
    if target.kind.spec is not None:
        meta["generation"] = 1
    if target.kind.namespaced:
        meta["namespace"] = target.namespace
    kind = target.kind
    finalizers = meta.get("finalizers")
    if control_plane and kind.controlled_finalizers and isinstance(finalizers, list | None):
        finalizers = list(finalizers or [])  # (not a list: validation says so)
        meta["finalizers"] = finalizers + [f for f in kind.controlled_finalizers
                                           if f not in finalizers]
    initial = (kind.controlled_status(obj) if control_plane else None) or kind.initial_status
    if initial is not None:
        obj["status"] = copy.deepcopy(initial)
    elif kind.status is not None:
        obj.pop("status", None)  # status is written only through /status


def list_body(kind: Kind, meta: dict[str, Any], raws: list[bytes]) -> bytes:
    """A `<Kind>List` with the stored JSON of each item spliced in, never re-serialised."""
    head = orjson.dumps({"apiVersion": kind.api_version, "kind": f"{kind.kind}List",
                         "metadata": meta})
    return b"".join((head[:-1], b',"items":[', b",".join(raws), b"]}"))


@contextmanager
def store_errors(target: Target) -> Iterator[None]:
    """Store outcomes as the Statuses a client expects."""
    try:
        yield
    except KeyExists:
        raise errors.already_exists(target.kind, target.name) from None
    except KeyNotFound:
        raise errors.not_found(target.kind, target.name) from None
    except RevisionConflict as problem:  # the cause tells a lost race from a refusal
        raise errors.conflict(target.kind, target.name) from problem
    except StoreUnavailable as problem:
        raise errors.unavailable(f"the write was not acknowledged: storage is unavailable "
                                 f"({problem}); retry it (the server resumes by itself once its "
                                 "disk has space or its database is back)") from None


async def store_create(ctx: Context, target: Target, obj: dict[str, Any]) -> Entry:
    # Counted while in flight, so a namespace being deleted waits for creates it admitted.
    creating = ctx.creating
    namespace = target.namespace or ""
    creating[namespace] = creating.get(namespace, 0) + 1
    try:
        with store_errors(target):
            if ctx.store.get(target.key) is not None:
                raise KeyExists(target.key)  # before charging any quota for it
            async with ctx.quota.admitted(ctx.store, target.kind, target.namespace, target.name,
                                          None, obj):
                return await ctx.store.create(target.key, obj)
    finally:
        creating[namespace] -= 1
        if not creating[namespace]:
            del creating[namespace]


async def check_create_quota(ctx: Context, target: Target, obj: dict[str, Any]) -> None:
    """A dry-run create is refused by a quota as the real one would be (nothing charged)."""
    async with ctx.quota.admitted(ctx.store, target.kind, target.namespace, target.name, None,
                                  obj, dry_run=True):
        pass


def check_namespace(target: Target, meta: dict[str, Any]) -> None:
    """A namespace in the body must be the one on the URL (unset means the URL's)."""
    sent = meta.get("namespace")
    if target.kind.namespaced and sent and sent != target.namespace:
        raise errors.bad_request(
            f"the namespace of the provided object ({sent}) does not match the namespace "
            f"sent on the request ({target.namespace})", field="metadata.namespace")


def check_resource_version(target: Target, obj: dict[str, Any], entry: Entry) -> None:
    wanted = (obj.get("metadata") or {}).get("resourceVersion")
    if wanted and wanted != str(entry.revision):
        raise errors.conflict(target.kind, target.name)


def merge_server_fields(target: Target, new: dict[str, Any], old: dict[str, Any]) -> None:
    """Carry over what clients cannot change; keep spec and status apart per subresource."""
    meta, old_meta = new.setdefault("metadata", {}), old["metadata"]
    if not isinstance(meta, dict):
        raise errors.bad_request("metadata must be an object", field="metadata")
    for owned in SERVER_OWNED_METADATA:
        if owned in old_meta:
            meta[owned] = old_meta[owned]
        else:
            meta.pop(owned, None)
    meta["managedFields"] = old_meta.get("managedFields", [])
    if target.subresource == "status":
        for key in list(new):
            if key not in ("apiVersion", "kind", "metadata", "status"):
                del new[key]
        for key, value in old.items():
            if key not in ("apiVersion", "kind", "metadata", "status"):
                new[key] = value
        for key in ("labels", "annotations", "finalizers", "ownerReferences"):
            if key in old_meta:
                meta[key] = old_meta[key]
            else:
                meta.pop(key, None)
    elif target.kind.status is not None:
        if "status" in old:
            new["status"] = old["status"]
        else:
            new.pop("status", None)


def _comparable(obj: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in obj.get("metadata", {}).items()
            if k not in ("resourceVersion", "managedFields")}
    # A change of ownership alone (a second applier of the same values) is a real write;
    # a re-stamped time alone is not (as kube-apiserver ignores timestamp-only changes).
    meta["managedFields"] = [{k: v for k, v in e.items() if k != "time"}
                             for e in obj.get("metadata", {}).get("managedFields") or []
                             if isinstance(e, dict)]
    return {**obj, "metadata": meta}


async def write(ctx: Context, req: Request, target: Target, entry: Entry, new: dict[str, Any],
                *, manager: str, mode: str, applied: bool = False) -> Response:
    """Admit `new` as the next version of `entry` and store it (or answer dry-run)."""
    old = before = load(entry)
    # An apply computed the new managedFields itself; any other write may replace them by
    # sending a list (kubectl does, to hand client-side-apply ownership to server-side
    # apply). merge_server_fields restores the stored ones, so keep the request's first.
    sent_fields = (new.get("metadata") or {}).get("managedFields")
    merge_server_fields(target, new, old)
    if applied:
        new["metadata"]["managedFields"] = sent_fields or []
    elif isinstance(sent_fields, list) and sent_fields != old["metadata"].get("managedFields", []):
        _check_managed_fields(target, sent_fields)
        old = {**old, "metadata": {**old["metadata"], "managedFields": sent_fields}}
    new, warnings = admission.admit(target.kind, new, old, mode=mode, name=target.name)
    ctx.guard(req.user, target.kind, target.namespace or "", new)
    meta, old_meta = new["metadata"], old["metadata"]
    if old_meta.get("deletionTimestamp"):
        added = set(meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
        if added:
            raise errors.invalid(target.kind, target.name, [admission.FieldError(
                "metadata.finalizers", "FieldValueForbidden",
                f"Forbidden: no new finalizers can be added if the object is being deleted, "
                f"found new finalizers {sorted(added)}")])
    if target.kind.spec is not None and new.get("spec") != old.get("spec"):
        meta["generation"] = old_meta.get("generation", 1) + 1
    if not applied and target.kind.managed_fields:
        meta["managedFields"] = managedfields.record_update(
            old, new, manager=manager, api_version=target.kind.api_version, now=now_rfc3339(),
            subresource=target.subresource)
    if not meta["managedFields"] or not target.kind.managed_fields:
        del meta["managedFields"]
    if _comparable(new) == _comparable(before):
        return object_response(entry.raw, warnings=warnings)  # a no-op writes nothing
    if old_meta.get("deletionTimestamp") and not meta.get("finalizers") and not (
            "finalize" in target.kind.subresources and (new.get("spec") or {}).get("finalizers")):
        # (A Namespace also waits for its spec.finalizers, which only /finalize empties.)
        if is_dry_run(req):
            return object_response(orjson.dumps(new), warnings=warnings)
        return await finalize(ctx, target, entry, new, warnings)
    dry_run = is_dry_run(req)
    # A subresource write (status) leaves the spec, and so the use, as it is.
    admitted: AbstractAsyncContextManager[None] = nullcontext() if target.subresource else ctx.quota.admitted(
        ctx.store, target.kind, target.namespace, target.name, old, new, dry_run=dry_run)
    with store_errors(target):
        async with admitted:
            if dry_run:
                meta["resourceVersion"] = old_meta.get("resourceVersion")
                return object_response(orjson.dumps(new), warnings=warnings)
            stored = await ctx.store.update(target.key, new, entry.revision)
    return object_response(stored.raw, warnings=warnings)


def _check_managed_fields(target: Target, entries: list[Any]) -> None:
    for index, entry in enumerate(entries):
        if not (isinstance(entry, dict) and isinstance(entry.get("manager"), str)
                and entry.get("operation") in ("Apply", "Update")
                and entry.get("fieldsType", "FieldsV1") == "FieldsV1"
                and isinstance(entry.get("fieldsV1", {}), dict)):
            raise errors.invalid(target.kind, target.name, [admission.FieldError(
                f"metadata.managedFields[{index}]", "FieldValueInvalid",
                "Invalid value: each entry needs a manager, an operation (Apply or Update) "
                "and fieldsV1 ownership")])


async def finalize(ctx: Context, target: Target, entry: Entry, last: dict[str, Any],
                   warnings: Sequence[str] = ()) -> Response:
    """The last finalizer is gone: remove the object in the same commit, its final state the
    tombstone, so no crash can leave it deleting with no finalizer left to finish."""
    with store_errors(target):
        gone = await ctx.store.delete(target.key, entry.revision, last)
    return object_response(gone.raw, warnings=warnings)


async def remove(ctx: Context, target: Target, entry: Entry, dry_run: bool) -> tuple[int, bytes]:
    """Delete now (200), or mark for deletion while finalizers remain (202), with the object."""
    obj = load(entry)
    meta = obj["metadata"]
    refusal = target.kind.delete_check(obj)
    if refusal is not None and not meta.get("deletionTimestamp"):
        why = refusal.detail.removeprefix("Forbidden: ")
        raise errors.ApiError(409, "Conflict", f'{target.kind.qualified_resource} '
                              f'"{target.name}" cannot be deleted: {why}',
                              name=target.name, kind=target.kind, causes=[{
                                  "type": refusal.type, "message": refusal.detail,
                                  "field": refusal.field}])
    if meta.get("finalizers"):
        if meta.get("deletionTimestamp"):
            return 202, entry.raw
        meta["deletionTimestamp"] = now_rfc3339()
        meta["deletionGracePeriodSeconds"] = 0
        if dry_run:
            return 202, orjson.dumps(obj)
        with store_errors(target):
            stored = await ctx.store.update(target.key, obj, entry.revision)
        return 202, stored.raw
    if dry_run:
        return 200, entry.raw
    with store_errors(target):
        gone = await ctx.store.delete(target.key, entry.revision)
    return 200, gone.raw
