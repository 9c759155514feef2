"""Server-side printing: meta.k8s.io Tables and PartialObjectMetadata, as kubectl asks for.

Columns come from the kind's registry entry; kubectl prints cells verbatim, so dates are
humanised here. Which representation the client wants is read from its Accept header.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson

from evroc_compute.api.kinds import Kind
from evroc_compute.server.http import Request, Response
from evroc_compute.store.base import Entry

Wanted = Literal["Table", "PartialObjectMetadata", "PartialObjectMetadataList"]
META_V1 = "meta.k8s.io/v1"


def negotiate(req: Request) -> Wanted | None:
    """The first representation in Accept that we serve; None means the plain object."""
    for option in req.accept.split(","):
        params = dict(p.strip().split("=", 1) for p in option.split(";")[1:] if "=" in p)
        wanted = params.get("as")
        if wanted in ("Table", "PartialObjectMetadata", "PartialObjectMetadataList") and \
                params.get("g") == "meta.k8s.io" and params.get("v") in ("v1", "v1beta1"):
            return wanted  # type: ignore[return-value]
        if option.split(";")[0].strip() in ("application/json", "*/*", "application/*"):
            return None
    return None


def column_definitions(kind: Kind) -> list[dict[str, Any]]:
    name = [{"name": "Name", "type": "string", "format": "name",
             "description": f"Name of the {kind.kind}.", "priority": 0}] if kind.name_column else []
    return name + [{"name": c.name, "type": c.type, "format": c.format,
                    "description": c.description, "priority": c.priority} for c in kind.columns]


def _partial(entry: Entry) -> dict[str, Any]:
    meta = {k: v for k, v in entry.obj["metadata"].items() if k != "managedFields"}
    return {"kind": "PartialObjectMetadata", "apiVersion": META_V1, "metadata": meta}


def row(kind: Kind, entry: Entry, include: str) -> dict[str, Any]:
    obj = entry.obj
    cells: list[Any] = [obj["metadata"].get("name")] if kind.name_column else []
    for column in kind.columns:
        try:
            value = column.value(obj)
        except (KeyError, TypeError, ValueError):
            value = None
        cells.append("<none>" if value is None or value == "" else value)
    result: dict[str, Any] = {"cells": cells}
    if include == "Object":
        result["object"] = obj
    elif include != "None":
        result["object"] = _partial(entry)
    return result


def table(kind: Kind, entries: list[Entry], resource_version: str, continue_token: str,
          include: str = "Metadata", with_columns: bool = True) -> dict[str, Any]:
    meta: dict[str, Any] = {"resourceVersion": resource_version}
    if continue_token:
        meta["continue"] = continue_token
    result: dict[str, Any] = {"kind": "Table", "apiVersion": META_V1, "metadata": meta}
    if with_columns:
        result["columnDefinitions"] = column_definitions(kind)
    result["rows"] = [row(kind, e, include) for e in entries]
    return result


def response(kind: Kind, entries: list[Entry], wanted: Wanted, resource_version: str,
             continue_token: str, *, single: bool = True, include: str = "Metadata") -> Response:
    if wanted == "Table":
        body = table(kind, entries, resource_version, continue_token, include)
        return Response(200, orjson.dumps(body),
                        b"application/json;as=Table;v=v1;g=meta.k8s.io")
    if wanted == "PartialObjectMetadata" and single and len(entries) == 1:
        return Response(200, orjson.dumps(_partial(entries[0])),
                        b"application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io")
    meta: dict[str, Any] = {"resourceVersion": resource_version}
    if continue_token:
        meta["continue"] = continue_token
    body = {"kind": "PartialObjectMetadataList", "apiVersion": META_V1, "metadata": meta,
            "items": [_partial(e) for e in entries]}
    return Response(200, orjson.dumps(body),
                    b"application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io")
