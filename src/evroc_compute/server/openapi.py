"""OpenAPI v3, per group-version, generated from the registry's schemas and cached.

kubectl reads it for `explain`, for client-side apply, and to learn that the server does
field validation (the `fieldValidation` parameter on PATCH), after which it sends Strict.
The operations each kind serves are listed once (`operations`); this module renders them
as OpenAPI v3 and `openapi_v2` as Swagger 2.0 for kubectl 1.27 and 1.28.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from evroc_compute.api.kinds import Kind, Registry

_WRITE_PARAMS = ("dryRun", "fieldManager", "fieldValidation")
_LIST_PARAMS = ("labelSelector", "fieldSelector", "limit", "continue", "resourceVersion",
                "resourceVersionMatch", "timeoutSeconds", "watch", "allowWatchBookmarks",
                "sendInitialEvents")
_PARAM_TYPES = {"limit": "integer", "timeoutSeconds": "integer", "watch": "boolean",
                "allowWatchBookmarks": "boolean", "sendInitialEvents": "boolean",
                "force": "boolean"}
# What the server decodes on PATCH; no strategic merge patch, as for custom resources, so
# kubectl's client-side apply computes a JSON merge patch.
PATCH_TYPES = ("application/apply-patch+yaml", "application/json-patch+json",
               "application/merge-patch+json")


@dataclass(frozen=True)
class Operation:
    """One verb on one path, in the terms both OpenAPI versions need."""

    method: Literal["get", "put", "post", "patch", "delete"]
    action: str  # x-kubernetes-action, as kube-apiserver names it
    operation_id: str
    description: str
    params: tuple[str, ...] = ()  # query parameters
    body: Literal["", "object", "patch"] = ""
    returns: Literal["object", "list", "status"] = "object"


@dataclass(frozen=True)
class PathItem:
    path: str
    path_params: tuple[str, ...]  # namespace and/or name, in path order
    operations: tuple[Operation, ...]


def schema_name(kind: Kind, suffix: str = "") -> str:
    """The definition name kube-apiserver uses, e.g. `net.evroclabs.compute.v1alpha1.Disk`."""
    if not kind.group:
        return f"io.k8s.api.core.{kind.version}.{kind.kind}{suffix}"
    reversed_group = ".".join(reversed(kind.group.split(".")))
    return f"{reversed_group}.{kind.version}.{kind.kind}{suffix}"


def param_type(name: str) -> str:
    return _PARAM_TYPES.get(name, "string")


def operations(kind: Kind) -> list[PathItem]:
    """Every path this server serves for `kind`, with its verbs (described as kube does)."""
    k = kind.kind
    base = f"/apis/{kind.group}/{kind.version}" if kind.group else f"/api/{kind.version}"
    collection = f"{base}/namespaces/{{namespace}}/{kind.plural}" if kind.namespaced \
        else f"{base}/{kind.plural}"
    scope = ("namespace",) if kind.namespaced else ()
    patch_params = (*_WRITE_PARAMS, "force")
    if not kind.stored:
        return [PathItem(collection, scope, (Operation("post", "post", f"create{k}",
                                                        f"create a {k}", _WRITE_PARAMS,
                                                        body="object"),))]
    on_collection = [
        Operation("get", "list", f"list{k}", f"list or watch objects of kind {k}",
                  _LIST_PARAMS, returns="list"),
        Operation("post", "post", f"create{k}", f"create a {k}", _WRITE_PARAMS, body="object"),
    ]
    if kind.plural != "namespaces":
        on_collection.append(Operation("delete", "deletecollection", f"deleteCollection{k}",
                                       f"delete collection of {k}",
                                       ("dryRun", "labelSelector", "fieldSelector"),
                                       returns="status"))
    items = [
        PathItem(collection, scope, tuple(on_collection)),
        PathItem(f"{collection}/{{name}}", (*scope, "name"), (
            Operation("get", "get", f"read{k}", f"read the specified {k}"),
            Operation("put", "put", f"replace{k}", f"replace the specified {k}", _WRITE_PARAMS,
                      body="object"),
            Operation("patch", "patch", f"patch{k}", f"partially update the specified {k}",
                      patch_params, body="patch"),
            Operation("delete", "delete", f"delete{k}", f"delete a {k}", ("dryRun",),
                      returns="status"))),
    ]
    if kind.status is not None:
        items.append(PathItem(f"{collection}/{{name}}/status", (*scope, "name"), (
            Operation("get", "get", f"read{k}Status", f"read status of the specified {k}"),
            Operation("put", "put", f"replace{k}Status", f"replace status of the specified {k}",
                      _WRITE_PARAMS, body="object"),
            Operation("patch", "patch", f"patch{k}Status",
                      f"partially update status of the specified {k}", patch_params,
                      body="patch"))))
    if kind.namespaced:
        items.append(PathItem(f"{base}/{kind.plural}", (), (
            Operation("get", "list", f"list{k}ForAllNamespaces",
                      f"list or watch objects of kind {k}", _LIST_PARAMS, returns="list"),)))
    return items


def gvk(kind: Kind, suffix: str = "") -> dict[str, str]:
    return {"group": kind.group, "version": kind.version, "kind": kind.kind + suffix}


# ---- OpenAPI v3 -----------------------------------------------------------------------


def _param(name: str, where: str = "query", required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required,
            "schema": {"type": param_type(name)}, "uniqueItems": True}


def _operation_v3(kind: Kind, op: Operation) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{schema_name(kind)}"}
    response = ref if op.returns == "object" else {"type": "object"}
    operation: dict[str, Any] = {
        "description": op.description,
        "operationId": op.operation_id,
        "parameters": [_param(p) for p in op.params],
        "responses": {"200": {"description": "OK",
                              "content": {"application/json": {"schema": response}}}},
        "x-kubernetes-action": op.action,
        "x-kubernetes-group-version-kind": gvk(kind),
    }
    if op.body == "patch":
        operation["requestBody"] = {"required": True, "content": {
            t: {"schema": {"type": "object"}} for t in PATCH_TYPES}}
    elif op.body == "object":
        operation["requestBody"] = {"required": True,
                                    "content": {"application/json": {"schema": ref}}}
    return operation


def group_version_document(registry: Registry, group: str, version: str) -> dict[str, Any]:
    kinds = registry.in_group_version(group, version)
    paths: dict[str, Any] = {}
    for kind in kinds:
        for item in operations(kind):
            rendered: dict[str, Any] = {
                "parameters": [_param(p, "path", True) for p in item.path_params]}
            for op in item.operations:
                rendered[op.method] = _operation_v3(kind, op)
            paths[item.path] = rendered
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
