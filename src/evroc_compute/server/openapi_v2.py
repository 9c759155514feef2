"""OpenAPI v2 (Swagger 2.0) at /openapi/v2, from the same registry and operations as v3.

kubectl 1.27 and 1.28 need it: `apply` (client-side validation, and learning from the
PATCH operation's `fieldValidation` parameter that the server validates) and `explain`
fail without it. They ask for protobuf only; other clients ask for JSON. Both bodies, and
their gzip forms, are built once at start-up; a request picks one (`negotiate`) and an
`If-None-Match` with its ETag is answered 304 without a body.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from evroc_compute import __version__
from evroc_compute.api import metav1
from evroc_compute.api.kinds import Kind, Registry
from evroc_compute.api.schema import Schema, array, obj, string
from evroc_compute.server import errors, gnostic
from evroc_compute.server.http import Request, Response
from evroc_compute.server.openapi import (
    PATCH_TYPES,
    Operation,
    gvk,
    operations,
    param_type,
    schema_name,
)

JSON = "application/json"
# What kube-apiserver answers with. kubectl asks for the `@v1.0` spelling, but `@` is not
# allowed in a media type and Go's mime parser (in client-go) rejects a reply that uses it.
PROTOBUF = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
_PROTOBUF_ASKED = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
_OFFERS = ((JSON, JSON), (PROTOBUF, PROTOBUF), (_PROTOBUF_ASKED, PROTOBUF))


def ref(name: str) -> Schema:
    return {"$ref": f"#/definitions/{name}"}


# ---- the document ---------------------------------------------------------------------


def _kind_definition(kind: Kind) -> Schema:
    """The kind's schema with `metadata` a reference to ObjectMeta, as kube publishes it."""
    schema = kind.schema
    metadata = {**ref(metav1.OBJECT_META_NAME),
                "description": schema["properties"]["metadata"]["description"]}
    return {**schema, "properties": {**schema["properties"], "metadata": metadata}}


def _list_definition(kind: Kind) -> Schema:
    return {**obj(f"{kind.kind}List is a list of {kind.kind}.", required=("items",),
                  apiVersion=string("APIVersion defines the versioned schema of this "
                                    "representation of an object."),
                  items=array(ref(schema_name(kind)), f"List of {kind.plural}."),
                  kind=string("Kind is a string value representing the REST resource this "
                              "object represents."),
                  metadata={**ref(metav1.LIST_META_NAME),
                            "description": "Standard list metadata."}),
            "x-kubernetes-group-version-kind": [gvk(kind, "List")]}


def _param(name: str, where: str = "query") -> dict[str, Any]:
    param: dict[str, Any] = {"name": name, "in": where, "type": param_type(name),
                             "uniqueItems": True}
    if where == "path":
        param["required"] = True
    return param


def _operation(kind: Kind, op: Operation) -> dict[str, Any]:
    returns = {"object": ref(schema_name(kind)), "list": ref(schema_name(kind, "List")),
               "status": ref(metav1.STATUS_NAME)}[op.returns]
    params = [_param(p) for p in op.params]
    if op.body:
        params.insert(0, {"name": "body", "in": "body", "required": True,
                          "schema": ref(metav1.PATCH_NAME if op.body == "patch"
                                        else schema_name(kind))})
    responses: dict[str, Any] = {"200": {"description": "OK", "schema": returns}}
    if op.method == "post":
        responses["201"] = {"description": "Created", "schema": returns}
    responses["401"] = {"description": "Unauthorized"}
    return {
        "description": op.description,
        "consumes": list(PATCH_TYPES) if op.body == "patch" else ["*/*"],
        "produces": ["application/json", "application/yaml"],
        "schemes": ["https"],
        "tags": [f"{kind.group or 'core'}_{kind.version}"],
        "operationId": op.operation_id,
        "parameters": params,
        "responses": responses,
        "x-kubernetes-action": op.action,
        "x-kubernetes-group-version-kind": gvk(kind),
    }


def swagger(registry: Registry) -> dict[str, Any]:
    """The whole API as one Swagger 2.0 document."""
    paths: dict[str, Any] = {}
    definitions = metav1.definitions(ref)
    for kind in registry.kinds:
        definitions[schema_name(kind)] = _kind_definition(kind)
        definitions[schema_name(kind, "List")] = _list_definition(kind)
        for item in operations(kind):
            rendered: dict[str, Any] = {op.method: _operation(kind, op) for op in item.operations}
            rendered["parameters"] = [_param(p, "path") for p in item.path_params]
            paths[item.path] = rendered
    return {"swagger": "2.0", "info": {"title": "evroc-compute", "version": __version__},
            "paths": paths, "definitions": definitions}


# ---- serving --------------------------------------------------------------------------


def negotiate(accept: str) -> str | None:
    """The media type to answer an Accept header with, None if none is acceptable.

    As kube-openapi: clauses by descending q (stable), the first one JSON or protobuf
    matches wins; no Accept means any.
    """
    clauses: list[tuple[float, str]] = []
    for clause in (accept or "*/*").split(","):
        media, *params = [part.strip() for part in clause.split(";")]
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if media and q > 0:
            clauses.append((q, media.lower()))
    clauses.sort(key=lambda c: -c[0])
    for _, media in clauses:
        wanted_type, _, wanted_sub = media.partition("/")
        for offer, answer in _OFFERS:
            offer_type, _, offer_sub = offer.partition("/")
            if wanted_type in ("*", offer_type) and wanted_sub in ("*", offer_sub):
                return answer
    return None


@dataclass(frozen=True)
class Body:
    """One encoding of the document: its bytes, gzipped bytes and ETag."""

    raw: bytes
    gzipped: bytes
    etag: bytes

    @classmethod
    def of(cls, raw: bytes) -> Body:
        digest = hashlib.sha512(raw).hexdigest().upper()
        return cls(raw, gzip.compress(raw, mtime=0), f'"{digest}"'.encode())


class OpenAPIV2:
    """The document in JSON and protobuf, built once."""

    def __init__(self, registry: Registry) -> None:
        document = swagger(registry)
        self.bodies = {JSON: Body.of(orjson.dumps(document)),
                       PROTOBUF: Body.of(gnostic.document(document))}

    def respond(self, req: Request) -> Response:
        if req.method != "GET":
            raise errors.method_not_allowed(req.method, "/openapi/v2")
        media = negotiate(req.accept)
        if media is None:
            raise errors.ApiError(406, "NotAcceptable", f"/openapi/v2 is served as {JSON} or "
                                  f"{_PROTOBUF_ASKED}, not as {req.accept}")
        body = self.bodies[media]
        headers = [(b"etag", body.etag), (b"vary", b"Accept, Accept-Encoding"),
                   (b"cache-control", b"no-cache, private")]
        cached = req.headers.get("if-none-match", "")
        if cached.strip() == "*" or body.etag.decode() in cached:
            return Response(304, b"", media.encode(), headers)
        if "gzip" in req.headers.get("accept-encoding", ""):
            return Response(200, body.gzipped, media.encode(),
                            [*headers, (b"content-encoding", b"gzip")])
        return Response(200, body.raw, media.encode(), headers)
