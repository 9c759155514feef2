"""OpenAPI v3, per group-version, generated from the registry's schemas and cached.

kubectl reads it for `explain`, for client-side apply, and to learn that the server does
field validation (the `fieldValidation` parameter on PATCH), after which it sends Strict.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from evroc_compute.api.kinds import Kind, Registry

_WRITE_PARAMS = ("dryRun", "fieldManager", "fieldValidation")


def schema_name(kind: Kind) -> str:
    if not kind.group:
        return f"io.k8s.api.core.{kind.version}.{kind.kind}"
    reversed_group = ".".join(reversed(kind.group.split(".")))
    return f"{reversed_group}.{kind.version}.{kind.kind}"


def _param(name: str, where: str = "query", required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required, "schema": {"type": "string"},
            "uniqueItems": True}


def _operation(kind: Kind, action: str, verb: str, *, params: tuple[str, ...] = (),
               body: bool = False, patch: bool = False, list_op: bool = False) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{schema_name(kind)}"}
    response = {"type": "object"} if list_op else ref
    operation: dict[str, Any] = {
        "operationId": f"{verb}{kind.kind}",
        "parameters": [_param(p) for p in params],
        "responses": {"200": {"description": "OK",
                              "content": {"application/json": {"schema": response}}}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": kind.group, "version": kind.version,
                                            "kind": kind.kind},
    }
    if body:
        types = ("application/apply-patch+yaml", "application/json-patch+json",
                 "application/merge-patch+json") if patch else ("application/json",)
        operation["requestBody"] = {"required": True, "content": {
            t: {"schema": {"type": "object"} if patch else ref} for t in types}}
    return operation


def _paths(kind: Kind) -> dict[str, Any]:
    base = f"/apis/{kind.group}/{kind.version}" if kind.group else f"/api/{kind.version}"
    collection = f"{base}/namespaces/{{namespace}}/{kind.plural}" if kind.namespaced \
        else f"{base}/{kind.plural}"
    scope_params = [_param("namespace", "path", True)] if kind.namespaced else []
    item_params = [*scope_params, _param("name", "path", True)]
    list_params = ("labelSelector", "fieldSelector", "limit", "continue", "resourceVersion",
                   "resourceVersionMatch", "timeoutSeconds", "watch", "allowWatchBookmarks",
                   "sendInitialEvents")
    item_ops = {
        "parameters": item_params,
        "get": _operation(kind, "get", "read"),
        "put": _operation(kind, "put", "replace", params=_WRITE_PARAMS, body=True),
        "patch": _operation(kind, "patch", "patch", params=(*_WRITE_PARAMS, "force"), body=True,
                            patch=True),
        "delete": _operation(kind, "delete", "delete", params=("dryRun",)),
    }
    paths: dict[str, Any] = {
        collection: {
            "parameters": scope_params,
            "get": _operation(kind, "list", "list", params=list_params, list_op=True),
            "post": _operation(kind, "post", "create", params=_WRITE_PARAMS, body=True),
        },
        f"{collection}/{{name}}": item_ops,
    }
    if kind.plural != "namespaces":
        paths[collection]["delete"] = _operation(kind, "deletecollection", "deleteCollection",
                                                 params=("dryRun", "labelSelector",
                                                         "fieldSelector"), list_op=True)
    if kind.status is not None:
        paths[f"{collection}/{{name}}/status"] = {
            "parameters": item_params,
            "get": _operation(kind, "get", "readStatus"),
            "put": _operation(kind, "put", "replaceStatus", params=_WRITE_PARAMS, body=True),
            "patch": _operation(kind, "patch", "patchStatus", params=(*_WRITE_PARAMS, "force"),
                                body=True, patch=True),
        }
    if kind.namespaced:
        paths[f"{base}/{kind.plural}"] = {
            "get": _operation(kind, "list", "listAllNamespaces", params=list_params,
                              list_op=True)}
    return paths


def group_version_document(registry: Registry, group: str, version: str) -> dict[str, Any]:
    kinds = [k for k in registry.kinds if k.group == group and k.version == version]
    paths: dict[str, Any] = {}
    for kind in kinds:
        paths.update(_paths(kind))
    title = f"{group or 'core'}/{version}"
    return {"openapi": "3.0.0", "info": {"title": f"evroc-compute {title}", "version": version},
            "paths": paths,
            "components": {"schemas": {schema_name(k): k.schema for k in kinds}}}


class OpenAPI:
    """Documents are built once; their hash goes in the index so kubectl can cache them."""

    def __init__(self, registry: Registry) -> None:
        self.documents: dict[str, bytes] = {}
        gvs = [("", "v1")] + [(g, v) for g, vs in registry.group_versions().items() for v in vs]
        for group, version in gvs:
            path = f"apis/{group}/{version}" if group else f"api/{version}"
            self.documents[path] = orjson.dumps(group_version_document(registry, group, version))
        self.hashes = {p: hashlib.sha512(d).hexdigest()[:64].upper()
                       for p, d in self.documents.items()}
        self.index = orjson.dumps({"paths": {
            p: {"serverRelativeURL": f"/openapi/v3/{p}?hash={h}"} for p, h in self.hashes.items()}})
