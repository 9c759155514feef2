"""GET a collection: selectors, pagination, the resourceVersion rules, Tables.

Items are spliced into the response as the stored JSON bytes: a list never re-serialises
an object. Continue tokens carry the snapshot revision and the last key, so every page of
one list reads the same revision (410 once that revision is compacted).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from typing import Any

import orjson

from evroc_compute.api.kinds import Kind
from evroc_compute.server import errors, tables
from evroc_compute.server.handlers.common import Context, Target, ensure_namespace, list_body
from evroc_compute.server.http import Request, Response
from evroc_compute.server.selectors import SelectorError, parse_field_selector, parse_label_selector
from evroc_compute.store.base import Compacted, Entry, FutureRevision

_INTEGER = re.compile(r"[+-]?[0-9]+")
FIELDS = frozenset({"metadata.name", "metadata.namespace"})
Filter = Callable[[Entry], bool]


def parse_filter(req: Request, kind: Kind) -> tuple[Filter | None, str | None]:
    """A predicate for the request's selectors (None: everything) and an exact name, if any."""
    try:
        labels = parse_label_selector(req.query.get("labelSelector", ""))
        fields = parse_field_selector(req.query.get("fieldSelector", ""),
                                      FIELDS | kind.field_labels)
    except SelectorError as problem:
        raise errors.bad_request(str(problem)) from None
    if labels.empty and fields.empty:
        return None, None

    def keep(entry: Entry) -> bool:
        obj = entry.obj
        return labels.matches(obj["metadata"].get("labels") or {}) and fields.matches(obj)
    return keep, fields.exact("metadata.name")


_INT64_MAX = 2**63 - 1


def int_param(req: Request, name: str) -> int:
    """A non-negative int64 query parameter (0 when absent), or a 400 naming it.

    Only an optional sign and ASCII digits, as Go's strconv.ParseInt reads them (Python's
    int() would also take "1_000" or " 5 ").
    """
    raw = req.query.get(name, "")
    if not raw:
        return 0
    if not _INTEGER.fullmatch(raw):
        raise errors.bad_request(f'{name} must be an integer, not "{raw}"', field=name)
    value = int(raw)
    if value < 0:
        raise errors.bad_request(f"{name} must not be negative", field=name)
    if value > _INT64_MAX:
        raise errors.bad_request(f"{name} must be at most {_INT64_MAX}", field=name)
    return value


def encode_continue(revision: int, last_key: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"rv": revision, "start": last_key})).decode()


def decode_continue(token: str) -> tuple[int, str]:
    try:
        data = orjson.loads(base64.urlsafe_b64decode(token.encode()))
        return int(data["rv"]), str(data["start"])
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
        raise errors.bad_request("continue key is not valid: it must be a value returned by a "
                                 "previous list call", field="continue") from None


def parse_resource_version(req: Request) -> int | None:
    raw = req.query.get("resourceVersion")
    if raw is None or raw == "":
        return None
    if not _INTEGER.fullmatch(raw):
        raise errors.bad_request(f'resourceVersion must be an integer string, not "{raw}"',
                                 field="resourceVersion")
    value = int(raw)
    if value < 0:
        raise errors.bad_request("resourceVersion must not be negative", field="resourceVersion")
    return value


async def select(ctx: Context, target: Target, req: Request) -> tuple[list[Entry], int, str]:
    """The entries a list request asks for, the revision read at, and the continue token."""
    keep, exact_name = parse_filter(req, target.kind)
    limit = int_param(req, "limit")
    token = req.query.get("continue", "")
    requested = parse_resource_version(req)
    start_after, revision = "", 0
    if token:
        if requested:
            raise errors.bad_request("specifying resource version is not allowed when using "
                                     "continue", field="resourceVersion")
        revision, start_after = decode_continue(token)
    elif requested:
        match = req.query.get("resourceVersionMatch", "")
        if match == "Exact" or (limit and match != "NotOlderThan"):
            revision = requested
        elif requested > ctx.store.revision:
            raise errors.too_large_resource_version(requested, ctx.store.revision)
    prefix = target.kind.key_prefix(target.namespace)
    if exact_name and target.namespace is not None and not token and not revision:
        entry = ctx.store.get(target.kind.key(target.namespace, exact_name))
        found = [entry] if entry is not None and (keep is None or keep(entry)) else []
        return found, ctx.store.revision, ""
    try:
        return await _page(ctx, prefix, revision, start_after, limit, keep)
    except Compacted:
        if token:
            raise errors.expired("The provided continue parameter is too old to display a "
                                 "consistent list result. You can start a new list without the "
                                 "continue parameter.") from None
        raise errors.gone_too_old(revision) from None
    except FutureRevision as problem:
        raise errors.too_large_resource_version(problem.requested, problem.current) from None


async def _page(ctx: Context, prefix: str, revision: int, start_after: str, limit: int,
                keep: Filter | None) -> tuple[list[Entry], int, str]:
    chunk = 0 if not limit else max(limit * 2, 500) if keep else limit + 1
    found: list[Entry] = []
    read_at = revision
    while True:
        entries, read_at = await ctx.store.list(prefix, revision=read_at, start_after=start_after,
                                                limit=chunk)
        for entry in entries:
            if keep is None or keep(entry):
                found.append(entry)
        if not chunk or len(entries) < chunk or (limit and len(found) > limit):
            break
        start_after = entries[-1].key
    if limit and len(found) > limit:
        found = found[:limit]
        return found, read_at, encode_continue(read_at, found[-1].key)
    return found, read_at, ""


async def list_objects(ctx: Context, req: Request, target: Target) -> Response:
    ensure_namespace(ctx, target, creating=False)
    entries, revision, token = await select(ctx, target, req)
    wanted = tables.negotiate(req)
    if wanted is not None:
        include = req.query.get("includeObject", "Metadata")
        return tables.response(target.kind, entries, wanted, str(revision), token, single=False,
                               include=include)
    meta: dict[str, Any] = {"resourceVersion": str(revision)}
    if token:
        meta["continue"] = token
    return Response(200, list_body(target.kind, meta, [e.raw for e in entries]))
