"""Bad input gets a Kubernetes Status with the right code, reason and field, and changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.api.client import GROUP, Http, disk, disk_path, vm, vm_path
from tests.conftest import Server


@pytest.fixture(scope="module")
def http(shared_server: Server) -> Http:
    return Http(shared_server.url)


def _two_boot_disks(body: dict[str, Any]) -> None:
    body["spec"]["diskRefs"] = [{"name": "a", "bootFrom": True}, {"name": "b", "bootFrom": True}]


def _eleven_disks(body: dict[str, Any]) -> None:
    body["spec"]["diskRefs"] = [{"name": f"d{i}", "bootFrom": i == 0} for i in range(11)]


def _bad_key(body: dict[str, Any]) -> None:
    body["spec"]["osSettings"] = {"ssh": {"authorizedKeys": [{"value": "ssh-ed25519 not-base64!"}]}}


def _eleven_keys(body: dict[str, Any]) -> None:
    body["spec"]["osSettings"] = {"ssh": {"authorizedKeys": [{"value": "x"}] * 11}}


def _no_boot_disk(body: dict[str, Any]) -> None:
    body["spec"]["diskRefs"] = [{"name": "a"}]


def _upper_name(body: dict[str, Any]) -> None:
    body["metadata"]["name"] = "MyVM"


def _bad_label(body: dict[str, Any]) -> None:
    body["metadata"]["labels"] = {"app": "-web-"}


def _running_string(body: dict[str, Any]) -> None:
    body["spec"]["running"] = "yes"


def _no_resources(body: dict[str, Any]) -> None:
    del body["spec"]["vmVirtualResourcesRef"]


INVALID_VMS: list[tuple[str, Callable[[dict[str, Any]], None], str, str]] = [
    ("only one disk may boot", _two_boot_disks, "spec.diskRefs[1].bootFrom", "only one Disk"),
    ("at most 10 disks", _eleven_disks, "spec.diskRefs", "must have at most 10 items"),
    ("ssh keys must parse", _bad_key, "spec.osSettings.ssh.authorizedKeys[0].value",
     "not a valid SSH public key"),
    ("at most 10 ssh keys", _eleven_keys, "spec.osSettings.ssh.authorizedKeys",
     "must have at most 10 items"),
    ("a boot disk is required", _no_boot_disk, "spec.diskRefs", "bootFrom"),
    ("names are DNS-1123 subdomains", _upper_name, "metadata.name", "RFC 1123"),
    ("label values are validated", _bad_label, "metadata.labels", "valid label"),
    ("types are checked", _running_string, "spec.running", "must be of type boolean"),
    ("a size profile is required", _no_resources, "spec.vmVirtualResourcesRef", "Required value"),
]


@pytest.mark.parametrize(("mutate", "field", "words"), [c[1:] for c in INVALID_VMS],
                         ids=[c[0] for c in INVALID_VMS])
def test_invalid_vm_is_422_naming_the_field(http: Http, mutate: Callable[[dict[str, Any]], None],
                                            field: str, words: str) -> None:
    body = vm("bad-vm")
    mutate(body)
    reply = http.request("POST", vm_path(), body)
    assert reply.status == 422, reply.raw
    status = reply.body
    assert (status["kind"], status["reason"], status["code"]) == ("Status", "Invalid", 422)
    assert field in [c["field"] for c in status["details"]["causes"]]
    assert words in status["message"]
    assert http.request("GET", vm_path(name=body["metadata"]["name"])).status == 404


INVALID_DISKS = [
    ("units are KB MB GB TB", {"diskSize": {"amount": 10, "unit": "XB"}}, "spec.diskSize.unit",
     'supported values: "KB", "MB", "GB", "TB"'),
    ("storage class is persistent", {"diskSize": {"amount": 1, "unit": "GB"},
                                     "diskStorageClass": {"name": "fast"}},
     "spec.diskStorageClass.name", "Unsupported value"),
    ("a blank disk needs a size", {"placement": {"zone": "se-sto-a"}}, "spec.diskSize",
     "needs a diskSize"),
    ("sizes are not negative", {"diskSize": {"amount": -1, "unit": "GB"}}, "spec.diskSize.amount",
     "greater than or equal to 0"),
]


@pytest.mark.parametrize(("spec", "field", "words"), [c[1:] for c in INVALID_DISKS],
                         ids=[c[0] for c in INVALID_DISKS])
def test_invalid_disk_is_422_naming_the_field(http: Http, spec: dict[str, Any], field: str,
                                              words: str) -> None:
    reply = http.request("POST", disk_path(), disk("bad-disk", **spec))
    assert reply.status == 422, reply.raw
    assert field in [c["field"] for c in reply.body["details"]["causes"]]
    assert words in reply.body["message"]


@pytest.mark.parametrize(("raw", "content_type", "code", "words"), [
    (b'{"apiVersion": ', "application/json", 400, "error decoding JSON"),
    (b"a: [unclosed", "application/yaml", 400, "error decoding YAML"),
    (b"[1, 2]", "application/json", 400, "must be a JSON or YAML object"),
    (b"", "application/json", 400, "body is empty"),
], ids=["malformed JSON", "malformed YAML", "not an object", "empty body"])
def test_undecodable_bodies_are_400(http: Http, raw: bytes, content_type: str, code: int,
                                    words: str) -> None:
    reply = http.request("POST", vm_path(), raw=raw, content_type=content_type)
    assert reply.status == code and reply.body["reason"] == "BadRequest"
    assert words in reply.body["message"]


def test_yaml_bodies_are_accepted(http: Http) -> None:
    yaml_body = (b"apiVersion: compute.evroclabs.net/v1alpha1\nkind: Disk\nmetadata:\n"
                 b"  name: yaml-disk\nspec:\n  diskSize: {amount: 5, unit: GB}\n")
    reply = http.request("POST", disk_path(), raw=yaml_body, content_type="application/yaml")
    assert reply.status == 201, reply.raw
    assert reply.body["spec"]["diskStorageClass"] == {"name": "persistent"}


@pytest.mark.parametrize(("field", "value", "words"), [
    ("apiVersion", "compute.evroclabs.net/v1", "does not match the expected API version"),
    ("kind", "Disk", "does not match the expected kind"),
], ids=["wrong apiVersion", "wrong kind"])
def test_wrong_type_is_400(http: Http, field: str, value: str, words: str) -> None:
    body = vm("wrong-type")
    body[field] = value
    reply = http.request("POST", vm_path(), body)
    assert reply.status == 400 and words in reply.body["message"]
    assert reply.body["details"]["causes"][0]["field"] == field


def test_unknown_fields_strict_is_400_warn_prunes_with_a_warning(http: Http) -> None:
    body = vm("unknown-fields")
    body["spec"]["foo"] = 1
    strict = http.request("POST", vm_path(), body, fieldValidation="Strict")
    assert strict.status == 400
    assert 'unknown field "spec.foo"' in strict.body["message"]
    assert strict.body["details"]["causes"][0]["field"] == "spec.foo"
    warned = http.request("POST", vm_path(), body, fieldValidation="Warn")
    assert warned.status == 201
    assert 'unknown field \\"spec.foo\\"' in warned.headers["warning"] or \
        "spec.foo" in warned.headers["warning"]
    assert "foo" not in warned.body["spec"]
    bogus = http.request("POST", vm_path(), vm("x"), fieldValidation="Loud")
    assert bogus.status == 400 and bogus.body["details"]["causes"][0]["field"] == "fieldValidation"


def test_oversized_body_is_413(http: Http) -> None:
    body = vm("huge")
    body["metadata"]["annotations"] = {"blob": "x" * (3 * 1024 * 1024 + 10)}
    reply = http.request("POST", vm_path(), body)
    assert reply.status == 413 and reply.body["reason"] == "RequestEntityTooLarge"


def test_strategic_merge_patch_is_415(http: Http) -> None:
    assert http.request("POST", disk_path(), disk("smp")).status == 201
    reply = http.request("PATCH", disk_path(name="smp"), {"metadata": {"labels": {"a": "b"}}},
                         content_type="application/strategic-merge-patch+json")
    assert reply.status == 415 and reply.body["reason"] == "UnsupportedMediaType"
    assert "application/merge-patch+json" in reply.body["message"]


@pytest.mark.parametrize("selector", ["app in (a", "-x=y", "a=b=c", "app notin"],
                         ids=["unclosed set", "bad key", "double equals", "missing set"])
def test_bad_label_selectors_are_400(http: Http, selector: str) -> None:
    reply = http.request("GET", vm_path(), labelSelector=selector)
    assert reply.status == 400 and reply.body["reason"] == "BadRequest"


def test_unsupported_field_selector_is_400(http: Http) -> None:
    reply = http.request("GET", vm_path(), fieldSelector="spec.running=true")
    assert reply.status == 400 and "field label not supported: spec.running" in \
        reply.body["message"]


def test_stale_resource_version_is_409_and_changes_nothing(http: Http) -> None:
    created = http.request("POST", vm_path(), vm("stale")).body
    first = dict(created, spec={**created["spec"], "running": False})
    assert http.request("PUT", vm_path(name="stale"), first).status == 200
    second = dict(created, spec={**created["spec"], "placementGroup": "pg"})
    reply = http.request("PUT", vm_path(name="stale"), second)
    assert reply.status == 409 and reply.body["reason"] == "Conflict"
    assert "the object has been modified" in reply.body["message"]
    assert "placementGroup" not in http.request("GET", vm_path(name="stale")).body["spec"]


def test_put_without_resource_version_is_422(http: Http) -> None:
    http.request("POST", vm_path(), vm("no-rv"))
    reply = http.request("PUT", vm_path(name="no-rv"), vm("no-rv"))
    assert reply.status == 422
    assert reply.body["details"]["causes"][0]["field"] == "metadata.resourceVersion"


def test_missing_namespace_is_404(http: Http) -> None:
    reply = http.request("POST", vm_path("nowhere"), vm("x"))
    assert reply.status == 404 and reply.body["message"] == 'namespaces "nowhere" not found'


def test_namespace_mismatch_is_400(http: Http) -> None:
    body = vm("mismatch")
    body["metadata"]["namespace"] = "other"
    reply = http.request("POST", vm_path(), body)
    assert reply.status == 400 and "does not match the namespace" in reply.body["message"]


def test_bad_json_patch_is_422_and_changes_nothing(http: Http) -> None:
    http.request("POST", vm_path(), vm("jp"))
    before = http.request("GET", vm_path(name="jp")).body
    reply = http.request("PATCH", vm_path(name="jp"),
                         [{"op": "replace", "path": "/spec/nope/deeper", "value": 1}],
                         content_type="application/json-patch+json")
    assert reply.status == 422
    assert http.request("GET", vm_path(name="jp")).body == before


def test_patch_that_breaks_validation_is_422(http: Http) -> None:
    http.request("POST", vm_path(), vm("mp"))
    reply = http.request("PATCH", vm_path(name="mp"), {"spec": {"diskRefs": []}},
                         content_type="application/merge-patch+json")
    assert reply.status == 422 and reply.body["details"]["causes"][0]["field"] == "spec.diskRefs"


def test_cloud_init_user_data_is_immutable(http: Http) -> None:
    body = vm("ci")
    body["spec"]["osSettings"] = {"cloudInitUserData": "#cloud-config\n"}
    http.request("POST", vm_path(), body)
    reply = http.request("PATCH", vm_path(name="ci"),
                         {"spec": {"osSettings": {"cloudInitUserData": "#cloud-config\nx: 1\n"}}},
                         content_type="application/merge-patch+json")
    assert reply.status == 422
    assert reply.body["details"]["causes"][0]["field"] == "spec.osSettings.cloudInitUserData"
    assert "immutable" in reply.body["message"]


def test_unknown_paths_and_methods(http: Http) -> None:
    assert http.request("GET", f"{GROUP}/namespaces/default/widgets").status == 404
    assert http.request("GET", "/apis/nothing.example.com/v1").status == 404
    reply = http.request("POST", f"{GROUP}/virtualmachines", vm("x"))
    assert reply.status == 405 and reply.body["reason"] == "MethodNotAllowed"


def test_bad_continue_token_and_limit_are_400(http: Http) -> None:
    assert http.request("GET", vm_path(), limit="ten").status == 400
    reply = http.request("GET", vm_path(), limit="1", **{"continue": "garbage"})
    assert reply.status == 400 and reply.body["details"]["causes"][0]["field"] == "continue"


def test_default_namespace_cannot_be_deleted(http: Http) -> None:
    reply = http.request("DELETE", "/api/v1/namespaces/default")
    assert reply.status == 403 and "may not be deleted" in reply.body["message"]
