"""/openapi/v2 over HTTP: every kind and path described, references resolve, protobuf for
kubectl 1.27/1.28, content negotiation and caching as kube-apiserver does them."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from typing import Any

import pytest

from evroc_compute.api.registry import default_registry
from evroc_compute.server.openapi import schema_name
from evroc_compute.server.protobuf import fields
from tests.api.client import Http
from tests.conftest import Server

KUBECTL_ACCEPT = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
PROTOBUF = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
META = "io.k8s.apimachinery.pkg.apis.meta.v1."
VM = "net.evroclabs.compute.v1alpha1.VirtualMachine"
VMS = "/apis/compute.evroclabs.net/v1alpha1/namespaces/{namespace}/virtualmachines"


@pytest.fixture(scope="module")
def http(shared_server: Server) -> Http:
    return Http(shared_server)


@pytest.fixture(scope="module")
def swagger(http: Http) -> dict[str, Any]:
    reply = http.request("GET", "/openapi/v2")
    assert reply.status == 200 and reply.headers["content-type"] == "application/json"
    document: dict[str, Any] = reply.body
    return document


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if "$ref" in node:
            yield node["$ref"]
        for value in node.values():
            yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def test_every_kind_has_a_definition_with_its_group_version_kind(swagger: dict[str, Any]) -> None:
    assert swagger["swagger"] == "2.0"
    definitions = swagger["definitions"]
    for kind in default_registry().kinds:
        gvk = {"group": kind.group, "version": kind.version, "kind": kind.kind}
        assert definitions[schema_name(kind)]["x-kubernetes-group-version-kind"] == [gvk]
        listed = definitions[schema_name(kind, "List")]
        assert listed["x-kubernetes-group-version-kind"] == [{**gvk, "kind": kind.kind + "List"}]
        assert listed["properties"]["items"]["items"] == {"$ref": f"#/definitions/{schema_name(kind)}"}
    vm = definitions[VM]
    assert vm["properties"]["metadata"]["$ref"] == f"#/definitions/{META}ObjectMeta"
    assert "cloudInitUserData" in vm["properties"]["spec"]["properties"]["osSettings"]["properties"]
    assert definitions["io.k8s.api.core.v1.Namespace"]["x-kubernetes-group-version-kind"] == [
        {"group": "", "version": "v1", "kind": "Namespace"}]
    for name in ("ObjectMeta", "ListMeta", "Status", "StatusDetails", "StatusCause",
                 "DeleteOptions", "WatchEvent", "Patch", "OwnerReference", "ManagedFieldsEntry",
                 "Time", "MicroTime"):
        assert META + name in definitions


def test_every_reference_resolves(swagger: dict[str, Any]) -> None:
    found = set(refs(swagger))
    assert f"#/definitions/{VM}" in found and f"#/definitions/{META}Status" in found
    unresolved = {r for r in found
                  if not r.startswith("#/definitions/")
                  or r.removeprefix("#/definitions/") not in swagger["definitions"]}
    assert unresolved == set()


def test_paths_for_every_resource_and_verb(swagger: dict[str, Any]) -> None:
    paths = swagger["paths"]
    actions = {path: {m: op["x-kubernetes-action"] for m, op in item.items() if m != "parameters"}
               for path, item in paths.items()}
    assert actions[VMS] == {"get": "list", "post": "post", "delete": "deletecollection"}
    assert actions[VMS + "/{name}"] == {"get": "get", "put": "put", "patch": "patch",
                                       "delete": "delete"}
    assert actions[VMS + "/{name}/status"] == {"get": "get", "put": "put", "patch": "patch"}
    assert actions["/apis/compute.evroclabs.net/v1alpha1/virtualmachines"] == {"get": "list"}
    # cluster-scoped: no namespace in the path
    assert actions["/apis/compute.evroclabs.net/v1alpha1/diskimages/{name}"]["get"] == "get"
    assert actions["/api/v1/namespaces"] == {"get": "list", "post": "post"}
    for kind in default_registry().kinds:
        described = [op["x-kubernetes-group-version-kind"] for item in paths.values()
                     for m, op in item.items()
                     if m != "parameters" and op["x-kubernetes-group-version-kind"]["kind"] == kind.kind]
        assert len(described) >= (7 if kind.stored else 1), kind.kind  # reviews: create only

    patch = paths[VMS + "/{name}"]["patch"]
    assert patch["x-kubernetes-group-version-kind"] == {
        "group": "compute.evroclabs.net", "version": "v1alpha1", "kind": "VirtualMachine"}
    # kubectl learns from this that the server validates fields, and sends Strict
    assert "fieldValidation" in [p["name"] for p in patch["parameters"]]
    # no strategic merge patch: kubectl's client-side apply then sends a JSON merge patch
    assert "application/strategic-merge-patch+json" not in patch["consumes"]
    assert "application/merge-patch+json" in patch["consumes"]
    body = patch["parameters"][0]
    assert body["in"] == "body" and body["schema"] == {"$ref": f"#/definitions/{META}Patch"}
    assert [p["name"] for p in paths[VMS + "/{name}"]["parameters"]] == ["namespace", "name"]
    listing = paths[VMS]["get"]
    assert listing["responses"]["200"]["schema"] == {"$ref": f"#/definitions/{VM}List"}
    limit = next(p for p in listing["parameters"] if p["name"] == "limit")
    assert limit == {"name": "limit", "in": "query", "type": "integer", "uniqueItems": True}


def message(data: bytes) -> dict[int, list[Any]]:
    found: dict[int, list[Any]] = {}
    for number, value in fields(data):
        found.setdefault(number, []).append(value)
    return found


def named(data: bytes) -> dict[str, bytes]:
    """gnostic's repeated Named<T> {name = 1; value = 2} as a dict."""
    entries = {}
    for entry in message(data).get(1, []) + message(data).get(2, []):
        parts = message(entry)
        if 1 in parts and 2 in parts and isinstance(parts[1][0], bytes):
            entries[parts[1][0].decode()] = parts[2][0]
    return entries


def test_protobuf_when_kubectl_asks_for_it(http: Http, swagger: dict[str, Any]) -> None:
    reply = http.request("GET", "/openapi/v2", accept=KUBECTL_ACCEPT)
    assert reply.status == 200
    # kube-apiserver's spelling: Go's mime parser (in client-go) rejects the `@` one
    assert reply.headers["content-type"] == PROTOBUF
    document = message(reply.raw)
    assert document[1] == [b"2.0"]
    definitions = named(document[9][0])
    assert set(definitions) == set(swagger["definitions"])
    paths = {name for name in named(document[8][0])}
    assert paths == set(swagger["paths"])
    # vendor extensions travel as Any.yaml (field 2), which JSON text is valid YAML for
    extensions = {}
    for entry in message(definitions[VM])[31]:
        parts = message(entry)
        extensions[parts[1][0].decode()] = json.loads(message(parts[2][0])[2][0])
    assert extensions["x-kubernetes-group-version-kind"] == [
        {"group": "compute.evroclabs.net", "version": "v1alpha1", "kind": "VirtualMachine"}]


@pytest.mark.parametrize(("accept", "served"), [
    ("*/*", "application/json"),
    (f"application/json;q=0.5, {KUBECTL_ACCEPT}", PROTOBUF),
], ids=["any", "by-quality"])
def test_accept_chooses_the_encoding(http: Http, accept: str, served: str) -> None:
    reply = http.request("GET", "/openapi/v2", accept=accept)
    assert reply.status == 200 and reply.headers["content-type"] == served


def test_an_encoding_it_cannot_serve_is_406_with_a_status(http: Http) -> None:
    reply = http.request("GET", "/openapi/v2", accept="application/yaml")
    assert reply.status == 406
    assert reply.body["reason"] == "NotAcceptable"
    assert "application/json" in reply.body["message"]


def test_only_get_is_served(http: Http) -> None:
    reply = http.request("POST", "/openapi/v2", {})
    assert reply.status == 405 and reply.body["reason"] == "MethodNotAllowed"


@pytest.mark.parametrize("accept", ["application/json", KUBECTL_ACCEPT], ids=["json", "protobuf"])
def test_etag_revalidation_and_gzip(http: Http, accept: str) -> None:
    first = http.request("GET", "/openapi/v2", accept=accept)
    etag = first.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')
    assert "Accept" in first.headers["vary"]
    assert http.request("GET", "/openapi/v2", accept=accept).headers["etag"] == etag

    cached = http.request("GET", "/openapi/v2", accept=accept, headers={"If-None-Match": etag})
    assert cached.status == 304 and cached.raw == b"" and cached.headers["etag"] == etag
    assert "content-length" not in cached.headers
    assert http.request("GET", "/openapi/v2", accept=accept,
                        headers={"If-None-Match": "*"}).status == 304
    stale = http.request("GET", "/openapi/v2", accept=accept,
                         headers={"If-None-Match": '"an-older-document"'})
    assert stale.status == 200 and stale.raw == first.raw

    zipped = http.request("GET", "/openapi/v2", accept=accept,
                          headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert gzip.decompress(zipped.raw) == first.raw


def test_json_and_protobuf_have_their_own_etags(http: Http) -> None:
    as_json = http.request("GET", "/openapi/v2").headers["etag"]
    as_protobuf = http.request("GET", "/openapi/v2", accept=KUBECTL_ACCEPT).headers["etag"]
    assert as_json != as_protobuf


def test_the_root_lists_it(http: Http) -> None:
    assert "/openapi/v2" in http.request("GET", "/").body["paths"]


def test_served_under_a_cluster_prefix_too(http: Http) -> None:
    plain = http.request("GET", "/openapi/v2")
    prefixed = http.request("GET", "/clusters/my-org/openapi/v2")
    assert prefixed.status == 200 and prefixed.raw == plain.raw
