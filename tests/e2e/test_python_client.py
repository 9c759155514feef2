"""End to end with the official Python `kubernetes` client (v37): CRUD, status, errors,
namespaces, catalog, dry run, DynamicClient discovery and server-side apply.

Watches are in test_python_watch.py; shared helpers in test_python_support.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.e2e.test_python_support import (
    API_VERSION,
    DISKS,
    GROUP,
    VERSION,
    VMS,
    Clients,
    EventReader,
    api_error,
    create_vm,
    disk_body,
    get_vm,
    new_ssh_public_key,
    raw_request,
    stream,
    summary,
    vm_body,
    vms_path,
)


@pytest.fixture(scope="module")
def ssh_public_key(tmp_path_factory: pytest.TempPathFactory) -> str:
    return new_ssh_public_key(tmp_path_factory.mktemp("ssh"))


# ---- CRUD ----------------------------------------------------------------------------

def test_create_applies_defaults_and_answers_201(k8s: Clients, ns: str) -> None:
    _, status, _ = k8s.custom.create_namespaced_custom_object_with_http_info(
        GROUP, VERSION, ns, VMS, vm_body("web"))
    assert status == 201
    vm = get_vm(k8s, ns, "web")
    assert vm["apiVersion"] == API_VERSION and vm["kind"] == "VirtualMachine"
    assert vm["spec"]["running"] is True
    meta = vm["metadata"]
    assert meta["namespace"] == ns and meta["generation"] == 1
    assert meta["uid"] and meta["creationTimestamp"] and meta["resourceVersion"]
    assert "status" not in vm

    _, status, _ = k8s.custom.create_namespaced_custom_object_with_http_info(
        GROUP, VERSION, ns, DISKS, disk_body("data"))
    assert status == 201
    disk = k8s.custom.get_namespaced_custom_object(GROUP, VERSION, ns, DISKS, "data")
    assert disk["spec"]["diskStorageClass"] == {"name": "persistent"}
    assert disk["spec"]["diskImage"]["diskImageRef"]["name"] == "ubuntu.24-04.1"


def test_running_false_is_kept(k8s: Clients, ns: str) -> None:
    created = create_vm(k8s, ns, "stopped", running=False)
    assert created["spec"]["running"] is False
    assert get_vm(k8s, ns, "stopped")["spec"]["running"] is False


def test_delete_then_get_is_404(k8s: Clients, ns: str) -> None:
    create_vm(k8s, ns, "gone")
    k8s.custom.delete_namespaced_custom_object(GROUP, VERSION, ns, VMS, "gone")
    problem, body = api_error(lambda: get_vm(k8s, ns, "gone"))
    assert problem.status == 404 and body["reason"] == "NotFound"
    assert body["message"] == 'virtualmachines.compute.evroclabs.net "gone" not found'
    assert body["details"]["name"] == "gone" and body["details"]["kind"] == VMS
    assert body["details"]["group"] == GROUP
    problem, body = api_error(lambda: k8s.custom.delete_namespaced_custom_object(
        GROUP, VERSION, ns, VMS, "gone"))
    assert problem.status == 404 and body["reason"] == "NotFound"


def test_delete_preconditions_finalizers_and_collections(k8s: Clients, ns: str) -> None:
    created = k8s.custom.create_namespaced_custom_object(GROUP, VERSION, ns, VMS, {
        **vm_body("held"), "metadata": {"name": "held", "finalizers": ["example.com/hold"]}})
    stale = client.V1DeleteOptions(preconditions=client.V1Preconditions(resource_version="1"))
    problem, body = api_error(lambda: k8s.custom.delete_namespaced_custom_object(
        GROUP, VERSION, ns, VMS, "held", body=stale))
    assert problem.status == 409 and body["reason"] == "Conflict"
    wrong_uid = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid="not-the-uid"))
    problem, body = api_error(lambda: k8s.custom.delete_namespaced_custom_object(
        GROUP, VERSION, ns, VMS, "held", body=wrong_uid))
    assert problem.status == 409

    w, events = stream(k8s, ns, resource_version=created["metadata"]["resourceVersion"])
    reader = EventReader(events)
    _, status, _ = k8s.custom.delete_namespaced_custom_object_with_http_info(
        GROUP, VERSION, ns, VMS, "held", body=client.V1DeleteOptions(
            preconditions=client.V1Preconditions(uid=created["metadata"]["uid"])))
    assert status == 200
    held = get_vm(k8s, ns, "held")
    assert held["metadata"]["deletionTimestamp"]
    assert held["metadata"]["finalizers"] == ["example.com/hold"]
    k8s.custom.patch_namespaced_custom_object(GROUP, VERSION, ns, VMS, "held",
                                              {"metadata": {"finalizers": None}})
    seen = reader.wait_for(2)
    w.stop()
    # Removing the last finalizer deletes in the same commit: no state in between.
    assert summary(seen) == [("MODIFIED", "held"), ("DELETED", "held")]
    assert seen[-1]["raw_object"]["metadata"].get("finalizers") is None
    problem, _ = api_error(lambda: get_vm(k8s, ns, "held"))
    assert problem.status == 404

    for name, tier in (("c1", "x"), ("c2", "x"), ("c3", "y")):
        create_vm(k8s, ns, name, labels={"tier": tier})
    k8s.custom.delete_collection_namespaced_custom_object(GROUP, VERSION, ns, VMS,
                                                          label_selector="tier=x")
    left = k8s.custom.list_namespaced_custom_object(GROUP, VERSION, ns, VMS)
    assert [item["metadata"]["name"] for item in left["items"]] == ["c3"]


def test_list_with_label_and_field_selectors(k8s: Clients, ns: str) -> None:
    create_vm(k8s, ns, "a", labels={"tier": "web", "env": "prod"})
    create_vm(k8s, ns, "b", labels={"tier": "web", "env": "dev"})
    create_vm(k8s, ns, "c", labels={"tier": "db"})

    def names(**kwargs: Any) -> list[str]:
        listed = k8s.custom.list_namespaced_custom_object(GROUP, VERSION, ns, VMS, **kwargs)
        assert listed["kind"] == "VirtualMachineList" and listed["apiVersion"] == API_VERSION
        assert listed["metadata"]["resourceVersion"]
        return sorted(item["metadata"]["name"] for item in listed["items"])

    assert names() == ["a", "b", "c"]
    assert names(label_selector="tier=web") == ["a", "b"]
    assert names(label_selector="tier=web,env!=prod") == ["b"]
    assert names(label_selector="env") == ["a", "b"]
    assert names(label_selector="!env") == ["c"]
    assert names(label_selector="tier in (db, cache)") == ["c"]
    assert names(field_selector="metadata.name=b") == ["b"]
    assert names(field_selector="metadata.name!=b") == ["a", "c"]
    assert names(field_selector="metadata.name=a", label_selector="tier=db") == []
    problem, body = api_error(lambda: names(field_selector="spec.running=true"))
    assert problem.status == 400 and body["reason"] == "BadRequest"


def test_list_pages_with_limit_and_continue(k8s: Clients, ns: str) -> None:
    for index in range(5):
        create_vm(k8s, ns, f"page-{index}")
    seen: list[str] = []
    token: str | None = None
    pages = 0
    first_rv = None
    while True:
        kwargs: dict[str, Any] = {"limit": 2}
        if token:
            kwargs["_continue"] = token
        page = k8s.custom.list_namespaced_custom_object(GROUP, VERSION, ns, VMS, **kwargs)
        pages += 1
        assert len(page["items"]) <= 2
        seen += [item["metadata"]["name"] for item in page["items"]]
        first_rv = first_rv or page["metadata"]["resourceVersion"]
        token = page["metadata"].get("continue")
        if pages == 1:
            # A write between pages must not show up in later pages (one snapshot).
            create_vm(k8s, ns, "page-9")
        if not token:
            break
        assert page["metadata"].get("remainingItemCount", 1) >= 1
        assert pages < 5, "paging did not end"
    assert pages == 3
    assert seen == [f"page-{i}" for i in range(5)]
    everything = k8s.custom.list_namespaced_custom_object(GROUP, VERSION, ns, VMS)
    assert len(everything["items"]) == 6
    problem, body = api_error(lambda: k8s.custom.list_namespaced_custom_object(
        GROUP, VERSION, ns, VMS, limit=2, _continue="not-a-token"))
    assert problem.status == 400 and body["reason"] == "BadRequest"


def test_replace_with_resource_version_and_stale_conflict(k8s: Clients, ns: str) -> None:
    created = create_vm(k8s, ns, "rep")
    stale_rv = created["metadata"]["resourceVersion"]
    body = json.loads(json.dumps(created))
    body["spec"]["running"] = False
    body["metadata"]["labels"] = {"replaced": "yes"}
    replaced = k8s.custom.replace_namespaced_custom_object(GROUP, VERSION, ns, VMS, "rep", body)
    assert replaced["spec"]["running"] is False
    assert replaced["metadata"]["labels"] == {"replaced": "yes"}
    assert replaced["metadata"]["resourceVersion"] != stale_rv
    assert replaced["metadata"]["generation"] == 2
    assert replaced["metadata"]["uid"] == created["metadata"]["uid"]

    stale = json.loads(json.dumps(created))
    stale["spec"]["running"] = True
    assert stale["metadata"]["resourceVersion"] == stale_rv
    problem, status = api_error(lambda: k8s.custom.replace_namespaced_custom_object(
        GROUP, VERSION, ns, VMS, "rep", stale))
    assert problem.status == 409 and status["reason"] == "Conflict"
    assert "the object has been modified" in status["message"]
    assert get_vm(k8s, ns, "rep")["spec"]["running"] is False

    problem, status = api_error(lambda: k8s.custom.replace_namespaced_custom_object(
        GROUP, VERSION, ns, VMS, "missing", vm_body("missing")))
    assert problem.status == 404


def test_merge_patch_and_json_patch(k8s: Clients, ns: str) -> None:
    create_vm(k8s, ns, "pat", labels={"keep": "1", "drop": "1"})
    merged = k8s.custom.patch_namespaced_custom_object(
        GROUP, VERSION, ns, VMS, "pat",
        {"metadata": {"labels": {"drop": None, "new": "2"}}, "spec": {"running": False}})
    assert merged["metadata"]["labels"] == {"keep": "1", "new": "2"}
    assert merged["spec"]["running"] is False
    assert merged["spec"]["diskRefs"] == [{"name": "pat-boot", "bootFrom": True}]
    assert merged["metadata"]["generation"] == 2

    patched = k8s.custom.patch_namespaced_custom_object(
        GROUP, VERSION, ns, VMS, "pat",
        [{"op": "test", "path": "/spec/running", "value": False},
         {"op": "replace", "path": "/spec/running", "value": True},
         {"op": "add", "path": "/spec/diskRefs/-", "value": {"name": "extra"}},
         {"op": "remove", "path": "/metadata/labels/keep"}],
        _content_type="application/json-patch+json")
    assert patched["spec"]["running"] is True
    assert patched["spec"]["diskRefs"][-1] == {"name": "extra"}
    assert patched["metadata"]["labels"] == {"new": "2"}
    assert get_vm(k8s, ns, "pat")["metadata"]["resourceVersion"] == \
        patched["metadata"]["resourceVersion"]

    problem, body = api_error(lambda: k8s.custom.patch_namespaced_custom_object(
        GROUP, VERSION, ns, VMS, "pat",
        [{"op": "test", "path": "/spec/running", "value": False}],
        _content_type="application/json-patch+json"))
    assert problem.status == 422 and body["reason"] == "Invalid"
    assert get_vm(k8s, ns, "pat")["spec"]["running"] is True

    # A merge patch that makes the object invalid is rejected with the field.
    problem, body = api_error(lambda: k8s.custom.patch_namespaced_custom_object(
        GROUP, VERSION, ns, VMS, "pat", {"spec": {"diskRefs": [
            {"name": "x", "bootFrom": True}, {"name": "y", "bootFrom": True}]}}))
    assert problem.status == 422
    assert "spec.diskRefs[1].bootFrom" in [c["field"] for c in body["details"]["causes"]]


def test_status_subresource(k8s: Clients, ns: str) -> None:
    created = create_vm(k8s, ns, "st")
    assert created["metadata"]["generation"] == 1
    status = {"virtualMachineStatus": "Running",
              "conditions": [{"type": "Ready", "status": "True", "reason": "Running",
                              "observedGeneration": 1}],
              "networking": {"privateIPv4Address": "10.0.0.5"}}
    written = k8s.custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, ns, VMS, "st",
        {"status": status, "spec": {"running": False}, "metadata": {"labels": {"x": "y"}}})
    assert written["status"]["virtualMachineStatus"] == "Running"
    assert written["status"]["networking"]["privateIPv4Address"] == "10.0.0.5"
    # /status writes ignore spec and metadata changes, and leave generation alone.
    assert written["spec"]["running"] is True
    assert not (written["metadata"].get("labels") or {})
    assert written["metadata"]["generation"] == 1
    assert written["metadata"]["resourceVersion"] != created["metadata"]["resourceVersion"]

    got = k8s.custom.get_namespaced_custom_object_status(GROUP, VERSION, ns, VMS, "st")
    assert got["status"]["virtualMachineStatus"] == "Running"

    # The main resource cannot change status, but its spec change bumps generation.
    main = k8s.custom.patch_namespaced_custom_object(
        GROUP, VERSION, ns, VMS, "st",
        {"status": {"virtualMachineStatus": "Stopped"}, "spec": {"running": False}})
    assert main["status"]["virtualMachineStatus"] == "Running"
    assert main["spec"]["running"] is False
    assert main["metadata"]["generation"] == 2

    # A main-resource write of only status changes nothing at all.
    again = k8s.custom.patch_namespaced_custom_object(
        GROUP, VERSION, ns, VMS, "st", {"status": {"virtualMachineStatus": "Paused"}})
    assert again["status"]["virtualMachineStatus"] == "Running"
    assert again["metadata"]["generation"] == 2

    # Replace of the whole object through PUT also keeps the stored status.
    body = json.loads(json.dumps(again))
    body.pop("status")
    replaced = k8s.custom.replace_namespaced_custom_object(GROUP, VERSION, ns, VMS, "st", body)
    assert replaced["status"]["virtualMachineStatus"] == "Running"

    # Status is validated too.
    problem, body = api_error(lambda: k8s.custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, ns, VMS, "st", {"status": {"virtualMachineStatus": "Exploded"}}))
    assert problem.status == 422
    assert [c["field"] for c in body["details"]["causes"]] == ["status.virtualMachineStatus"]

    # A status write on a VM the user never created is 404, not an upsert.
    problem, _ = api_error(lambda: k8s.custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, ns, VMS, "nobody", {"status": status}))
    assert problem.status == 404

    # Disk status works the same way.
    k8s.custom.create_namespaced_custom_object(GROUP, VERSION, ns, DISKS, disk_body("st-disk"))
    disk = k8s.custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, ns, DISKS, "st-disk",
        {"status": {"diskSize": {"amount": 20, "unit": "GB"}}})
    assert disk["status"]["diskSize"] == {"amount": 20, "unit": "GB"}
    assert disk["metadata"]["generation"] == 1


# ---- errors --------------------------------------------------------------------------

def _too_many_disks(name: str) -> dict[str, Any]:
    body = vm_body(name)
    body["spec"]["diskRefs"] = [{"name": f"d{i}", "bootFrom": i == 0} for i in range(11)]
    return body


def _two_boot_disks(name: str) -> dict[str, Any]:
    body = vm_body(name)
    body["spec"]["diskRefs"] = [{"name": "a", "bootFrom": True}, {"name": "b", "bootFrom": True}]
    return body


def _bad_ssh_key(name: str) -> dict[str, Any]:
    return vm_body(name, osSettings={"ssh": {"authorizedKeys": [
        {"value": "ssh-ed25519 not-base64!!! user@host"}]}})


def _no_boot_disk(name: str) -> dict[str, Any]:
    body = vm_body(name)
    body["spec"]["diskRefs"] = [{"name": "a"}]
    return body


def _missing_resources(name: str) -> dict[str, Any]:
    body = vm_body(name)
    del body["spec"]["vmVirtualResourcesRef"]
    return body


def _bad_name(name: str) -> dict[str, Any]:
    body = vm_body(name)
    body["metadata"]["name"] = "Not_A_Name"
    return body


@pytest.mark.parametrize(("plural", "make", "field"), [
    (VMS, _two_boot_disks, "spec.diskRefs[1].bootFrom"),
    (VMS, _bad_ssh_key, "spec.osSettings.ssh.authorizedKeys[0].value"),
    (VMS, _too_many_disks, "spec.diskRefs"),
    (VMS, _no_boot_disk, "spec.diskRefs"),
    (VMS, _missing_resources, "spec.vmVirtualResourcesRef"),
    (VMS, _bad_name, "metadata.name"),
    (DISKS, lambda n: disk_body(n, diskSize={"amount": 10, "unit": "GiB"}), "spec.diskSize.unit"),
    (DISKS, lambda n: disk_body(n, diskSize={"amount": -1, "unit": "GB"}),
     "spec.diskSize.amount"),
    (DISKS, lambda n: disk_body(n, diskSize={"amount": 10, "unit": "GB"},
                                diskStorageClass={"name": "scratch"}),
     "spec.diskStorageClass.name"),
    (DISKS, lambda n: disk_body(n, placement={"zone": "Not A Zone"}), "spec.placement.zone"),
], ids=["two-boot", "bad-ssh-key", "too-many-disks", "no-boot", "missing-resources", "bad-name",
        "bad-unit", "negative-size", "bad-storage-class", "bad-zone"])
def test_invalid_objects_are_422_with_the_field(k8s: Clients, ns: str, plural: str,
                                                make: Callable[[str], dict[str, Any]],
                                                field: str) -> None:
    problem, body = api_error(lambda: k8s.custom.create_namespaced_custom_object(
        GROUP, VERSION, ns, plural, make("bad")))
    assert problem.status == 422 and body["reason"] == "Invalid", body
    fields = [cause["field"] for cause in body["details"]["causes"]]
    assert field in fields, body
    assert all(cause.get("type") and cause.get("message") for cause in body["details"]["causes"])
    assert " is invalid: " in body["message"]
    listed = k8s.custom.list_namespaced_custom_object(GROUP, VERSION, ns, plural)
    assert listed["items"] == []


def test_valid_ssh_key_is_accepted_and_every_error_reported(k8s: Clients, ns: str,
                                                            ssh_public_key: str) -> None:
    vm = create_vm(k8s, ns, "sshok", osSettings={"ssh": {"authorizedKeys": [
        {"value": ssh_public_key}]}})
    assert vm["spec"]["osSettings"]["ssh"]["authorizedKeys"][0]["value"] == ssh_public_key
    body = _two_boot_disks("multi")
    body["spec"]["osSettings"] = {"ssh": {"authorizedKeys": [
        {"value": ssh_public_key}, {"value": "ssh-rsa AAAA"}]}}
    problem, status = api_error(lambda: k8s.custom.create_namespaced_custom_object(
        GROUP, VERSION, ns, VMS, body))
    assert problem.status == 422
    fields = {cause["field"] for cause in status["details"]["causes"]}
    assert {"spec.diskRefs[1].bootFrom", "spec.osSettings.ssh.authorizedKeys[1].value"} <= fields


def test_immutable_fields_on_update(k8s: Clients, ns: str) -> None:
    k8s.custom.create_namespaced_custom_object(GROUP, VERSION, ns, DISKS, disk_body(
        "grow", diskSize={"amount": 10, "unit": "GB"}))
    grown = k8s.custom.patch_namespaced_custom_object(
        GROUP, VERSION, ns, DISKS, "grow", {"spec": {"diskSize": {"amount": 20}}})
    assert grown["spec"]["diskSize"] == {"amount": 20, "unit": "GB"}
    problem, body = api_error(lambda: k8s.custom.patch_namespaced_custom_object(
        GROUP, VERSION, ns, DISKS, "grow", {"spec": {"diskSize": {"amount": 5}}}))
    assert problem.status == 422
    assert [c["field"] for c in body["details"]["causes"]] == ["spec.diskSize"]
    create_vm(k8s, ns, "ci", osSettings={"cloudInitUserData": "#cloud-config\n"})
    problem, body = api_error(lambda: k8s.custom.patch_namespaced_custom_object(
        GROUP, VERSION, ns, VMS, "ci", {"spec": {"osSettings": {"cloudInitUserData": "x"}}}))
    assert problem.status == 422
    assert [c["field"] for c in body["details"]["causes"]] == \
        ["spec.osSettings.cloudInitUserData"]


def test_already_exists_is_409(k8s: Clients, ns: str) -> None:
    create_vm(k8s, ns, "dup")
    problem, body = api_error(lambda: create_vm(k8s, ns, "dup"))
    assert problem.status == 409 and body["reason"] == "AlreadyExists"
    assert body["details"]["name"] == "dup" and body["details"]["kind"] == VMS
    assert 'already exists' in body["message"]


@pytest.mark.parametrize(("api_version", "kind"), [
    ("compute.evroclabs.net/v1", "VirtualMachine"),
    ("networking.evroclabs.net/v1alpha1", "VirtualMachine"),
    (API_VERSION, "Disk"),
    (API_VERSION, None),
])
def test_wrong_identity_in_body_is_400(k8s: Clients, ns: str, api_version: str,
                                       kind: str | None) -> None:
    body = vm_body("who")
    body["apiVersion"] = api_version
    if kind is None:
        del body["kind"]
    else:
        body["kind"] = kind
    problem, status = api_error(lambda: k8s.custom.create_namespaced_custom_object(
        GROUP, VERSION, ns, VMS, body))
    assert problem.status == 400 and status["reason"] == "BadRequest", status
    problem, _ = api_error(lambda: get_vm(k8s, ns, "who"))
    assert problem.status == 404


@pytest.mark.parametrize("payload", [
    b"{", b'{"apiVersion": "compute.evroclabs.net/v1alpha1", "kind": ', b"\xff\xfe\x00",
    b"[1, 2]", b'"just a string"', b"null", b"   ",
], ids=["brace", "truncated", "binary", "array", "string", "null", "blank"])
def test_malformed_bodies_are_400_never_500(k8s: Clients, ns: str, payload: bytes) -> None:
    create_vm(k8s, ns, "target")
    url = vms_path(k8s.url, ns)
    for method, where, content_type in [
        ("POST", url, "application/json"),
        ("PUT", f"{url}/target", "application/json"),
        ("PATCH", f"{url}/target", "application/merge-patch+json"),
        ("PATCH", f"{url}/target", "application/json-patch+json"),
        ("PATCH", f"{url}/target", "application/apply-patch+yaml"),
        ("PUT", f"{url}/target/status", "application/json"),
    ]:
        code, body = raw_request(k8s, where + ("?fieldManager=m" if "apply" in content_type else ""),
                                 method, payload, content_type)
        assert code == 400, (method, content_type, payload, body)
        assert body["kind"] == "Status" and body["reason"] == "BadRequest", body
        assert body["code"] == 400 and body["message"]


def test_malformed_body_through_api_client_call_api(k8s: Clients, ns: str) -> None:
    url = vms_path(k8s.url, ns)
    # A str body with a YAML content type is sent verbatim by the client.
    response = k8s.api_client.call_api("POST", url, header_params={
        "Content-Type": "application/yaml", "Accept": "application/json"},
        body="apiVersion: [unclosed\nkind: {")
    assert response.status == 400
    data = json.loads(response.read())
    assert data["kind"] == "Status" and data["reason"] == "BadRequest"
    # With a JSON content type a str is JSON-encoded: a JSON string, not an object.
    response = k8s.api_client.call_api("POST", url, header_params={
        "Content-Type": "application/json", "Accept": "application/json"}, body="{not json")
    assert response.status == 400
    assert json.loads(response.read())["reason"] == "BadRequest"
    # A valid YAML object is accepted.
    yaml_vm = (f"apiVersion: {API_VERSION}\nkind: VirtualMachine\nmetadata:\n  name: from-yaml\n"
               "spec:\n  vmVirtualResourcesRef:\n    vmVirtualResourcesRefName: a1a.s\n"
               "  diskRefs:\n  - name: boot\n    bootFrom: true\n")
    response = k8s.api_client.call_api("POST", url, header_params={
        "Content-Type": "application/yaml", "Accept": "application/json"}, body=yaml_vm)
    assert response.status == 201
    assert get_vm(k8s, ns, "from-yaml")["spec"]["running"] is True


def test_body_over_3_mib_is_413(k8s: Clients, ns: str) -> None:
    body = vm_body("huge")
    body["metadata"]["annotations"] = {"blob": "x" * (3 * 1024 * 1024 + 10)}
    try:
        problem, status = api_error(lambda: k8s.custom.create_namespaced_custom_object(
            GROUP, VERSION, ns, VMS, body))
    except Exception as broken:  # pragma: no cover - reported clearly if the socket breaks
        raise AssertionError(f"expected a 413 Status, the client failed with {broken!r}") \
            from broken
    assert problem.status == 413 and status["reason"] == "RequestEntityTooLarge"
    problem, _ = api_error(lambda: get_vm(k8s, ns, "huge"))
    assert problem.status == 404
    # Just under the limit is fine in transport terms (the object itself is then judged).
    body["metadata"]["annotations"] = {"blob": "x" * 1000}
    assert create_vm(k8s, ns, "huge")["metadata"]["name"] == "huge"


def test_strategic_merge_patch_is_415(k8s: Clients, ns: str) -> None:
    create_vm(k8s, ns, "smp")
    problem, body = api_error(lambda: k8s.custom.patch_namespaced_custom_object(
        GROUP, VERSION, ns, VMS, "smp", {"spec": {"running": False}},
        _content_type="application/strategic-merge-patch+json"))
    assert problem.status == 415 and body["reason"] == "UnsupportedMediaType"
    assert "application/merge-patch+json" in body["message"]
    assert get_vm(k8s, ns, "smp")["spec"]["running"] is True


def test_strict_field_validation_names_unknown_fields(k8s: Clients, ns: str) -> None:
    body = vm_body("strict")
    body["spec"]["turbo"] = True
    problem, status = api_error(lambda: k8s.custom.create_namespaced_custom_object(
        GROUP, VERSION, ns, VMS, body, field_validation="Strict"))
    assert problem.status == 400
    assert 'unknown field "spec.turbo"' in status["message"]
    created = k8s.custom.create_namespaced_custom_object(GROUP, VERSION, ns, VMS, body,
                                                         field_validation="Ignore")
    assert "turbo" not in created["spec"]


# ---- namespaces, catalog, dry run ----------------------------------------------------

def test_namespace_deletion_removes_its_objects(k8s: Clients) -> None:
    name = f"py-doomed-{int(time.time() * 1000) % 100000}"
    k8s.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    assert k8s.core.read_namespace(name).status.phase == "Active"
    create_vm(k8s, name, "vm1")
    k8s.custom.create_namespaced_custom_object(GROUP, VERSION, name, DISKS, disk_body("d1"))
    names = [n.metadata.name for n in k8s.core.list_namespace().items]
    assert name in names and "default" in names

    k8s.core.delete_namespace(name)
    deadline = time.monotonic() + 15
    gone = False
    while time.monotonic() < deadline:
        try:
            k8s.core.read_namespace(name)
        except ApiException as missing:
            assert missing.status == 404
            gone = True
            break
        time.sleep(0.1)
    assert gone, "namespace still exists 15 s after delete"
    for plural, obj in ((VMS, "vm1"), (DISKS, "d1")):
        with pytest.raises(ApiException) as caught:
            k8s.custom.get_namespaced_custom_object(GROUP, VERSION, name, plural, obj)
        assert caught.value.status == 404
    everywhere = k8s.custom.list_cluster_custom_object(GROUP, VERSION, VMS)
    assert all(item["metadata"]["namespace"] != name for item in everywhere["items"])


def test_create_in_missing_namespace_is_404(k8s: Clients) -> None:
    problem, body = api_error(lambda: create_vm(k8s, "no-such-namespace", "orphan"))
    assert problem.status == 404 and body["reason"] == "NotFound"
    assert "no-such-namespace" in body["message"]
    problem, _ = api_error(lambda: k8s.custom.list_namespaced_custom_object(
        GROUP, VERSION, "no-such-namespace", VMS))
    assert problem.status == 404


def test_default_namespace_cannot_be_deleted(k8s: Clients) -> None:
    with pytest.raises(ApiException) as caught:
        k8s.core.delete_namespace("default")
    assert caught.value.status == 403
    assert k8s.core.read_namespace("default").metadata.name == "default"


def test_catalog_is_cluster_scoped_custom_objects(k8s: Clients) -> None:
    images = k8s.custom.list_cluster_custom_object(GROUP, VERSION, "diskimages")
    names = {item["metadata"]["name"] for item in images["items"]}
    assert len(images["items"]) == 12
    assert "ubuntu.24-04.1" in names
    assert all("namespace" not in item["metadata"] for item in images["items"])
    ubuntu = k8s.custom.get_cluster_custom_object(GROUP, VERSION, "diskimages", "ubuntu.24-04.1")
    assert ubuntu["kind"] == "DiskImage"
    assert ubuntu["spec"]["defaultDiskSize"] == {"amount": 20, "unit": "GB"}

    profiles = k8s.custom.list_cluster_custom_object(GROUP, VERSION, "vmvirtualresources")
    by_name = {item["metadata"]["name"]: item for item in profiles["items"]}
    assert {"a1a.s", "c1a.m", "m1a.l", "test.xs"} <= set(by_name)
    assert by_name["a1a.s"]["kind"] == "VMVirtualResources"
    assert by_name["a1a.s"]["spec"]["vcpu"] == 2
    classes = k8s.custom.list_cluster_custom_object(GROUP, VERSION, "diskstorageclasses")
    assert [c["metadata"]["name"] for c in classes["items"]] == ["persistent"]
    selected = k8s.custom.list_cluster_custom_object(
        GROUP, VERSION, "diskimages", field_selector="metadata.name=rocky.9-6.1")
    assert [i["metadata"]["name"] for i in selected["items"]] == ["rocky.9-6.1"]
    # A cluster-scoped kind is not served under a namespace.
    problem, _ = api_error(lambda: k8s.custom.list_namespaced_custom_object(
        GROUP, VERSION, "default", "diskimages"))
    assert problem.status == 404


def test_dry_run_persists_nothing(k8s: Clients, ns: str) -> None:
    before = k8s.custom.list_namespaced_custom_object(GROUP, VERSION, ns, VMS)
    created = k8s.custom.create_namespaced_custom_object(GROUP, VERSION, ns, VMS,
                                                         vm_body("dry"), dry_run="All")
    assert created["metadata"]["name"] == "dry" and created["spec"]["running"] is True
    problem, _ = api_error(lambda: get_vm(k8s, ns, "dry"))
    assert problem.status == 404
    after = k8s.custom.list_namespaced_custom_object(GROUP, VERSION, ns, VMS)
    assert after["items"] == []
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]

    # Invalid objects are still rejected in a dry run.
    problem, _ = api_error(lambda: k8s.custom.create_namespaced_custom_object(
        GROUP, VERSION, ns, VMS, _two_boot_disks("dry"), dry_run="All"))
    assert problem.status == 422

    real = create_vm(k8s, ns, "wet")
    patched = k8s.custom.patch_namespaced_custom_object(
        GROUP, VERSION, ns, VMS, "wet", {"spec": {"running": False}}, dry_run="All")
    assert patched["spec"]["running"] is False
    stored = get_vm(k8s, ns, "wet")
    assert stored["spec"]["running"] is True
    assert stored["metadata"]["resourceVersion"] == real["metadata"]["resourceVersion"]
    k8s.custom.delete_namespaced_custom_object(GROUP, VERSION, ns, VMS, "wet", dry_run="All")
    assert get_vm(k8s, ns, "wet")["metadata"]["resourceVersion"] == \
        real["metadata"]["resourceVersion"]


# ---- discovery through the DynamicClient ---------------------------------------------

def test_dynamic_client_discovers_and_crud(k8s: Clients, ns: str) -> None:
    dyn = k8s.dynamic()
    vms = dyn.resources.get(api_version=API_VERSION, kind="VirtualMachine")
    assert vms.name == VMS and vms.namespaced is True
    assert "vm" in (vms.short_names or [])
    created = vms.create(body=vm_body("dyn", labels={"via": "dynamic"}), namespace=ns)
    assert created.metadata.name == "dyn" and created.spec.running is True
    got = vms.get(name="dyn", namespace=ns)
    assert got.metadata.uid == created.metadata.uid
    listed = vms.get(namespace=ns, label_selector="via=dynamic")
    assert [item.metadata.name for item in listed.items] == ["dyn"]
    patched = vms.patch(name="dyn", namespace=ns, body={"spec": {"running": False}},
                        content_type="application/merge-patch+json")
    assert patched.spec.running is False
    status = vms.status.patch(name="dyn", namespace=ns,
                              body={"status": {"virtualMachineStatus": "Stopped"}},
                              content_type="application/merge-patch+json")
    assert status.status.virtualMachineStatus == "Stopped"
    vms.delete(name="dyn", namespace=ns)
    with pytest.raises(ApiException) as caught:
        vms.get(name="dyn", namespace=ns)
    assert caught.value.status == 404

    namespaces = dyn.resources.get(api_version="v1", kind="Namespace")
    assert namespaces.namespaced is False
    assert ns in [item.metadata.name for item in namespaces.get().items]
    images = dyn.resources.get(api_version=API_VERSION, kind="DiskImage")
    assert images.namespaced is False
    assert len(images.get().items) == 12
    for kind in ("Disk", "HotswapDiskAttachment", "PlacementGroup", "VMVirtualResources",
                 "DiskStorageClass"):
        assert dyn.resources.get(api_version=API_VERSION, kind=kind).kind == kind
    for kind in ("PublicIP", "SecurityGroup"):
        assert dyn.resources.get(api_version="networking.evroclabs.net/v1alpha1",
                                 kind=kind).kind == kind


# ---- server-side apply ---------------------------------------------------------------

def apply(k8s: Clients, ns: str, name: str, body: dict[str, Any], manager: str,
          force: bool | None = None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"field_manager": manager,
                              "_content_type": "application/apply-patch+yaml"}
    if force is not None:
        kwargs["force"] = force
    result: dict[str, Any] = k8s.custom.patch_namespaced_custom_object(
        GROUP, VERSION, ns, VMS, name, body, **kwargs)
    return result


def test_server_side_apply(k8s: Clients, ns: str) -> None:
    body = vm_body("ssa", labels={"owner": "a"}, placementGroup="pg-1", running=True)
    _, status, _ = k8s.custom.patch_namespaced_custom_object_with_http_info(
        GROUP, VERSION, ns, VMS, "ssa", body, field_manager="mgr-a",
        _content_type="application/apply-patch+yaml")
    assert status == 201
    vm = get_vm(k8s, ns, "ssa")
    assert vm["spec"]["placementGroup"] == "pg-1"
    entries = vm["metadata"]["managedFields"]
    mine = [e for e in entries if e["manager"] == "mgr-a"]
    assert len(mine) == 1 and mine[0]["operation"] == "Apply"
    assert mine[0]["fieldsType"] == "FieldsV1" and mine[0]["apiVersion"] == API_VERSION
    assert "f:running" in json.dumps(mine[0]["fieldsV1"])

    # Re-applying the same configuration is a no-op.
    same = apply(k8s, ns, "ssa", body, "mgr-a")
    assert same["metadata"]["resourceVersion"] == vm["metadata"]["resourceVersion"]

    # Another manager's conflicting value is refused with the field and the owner.
    rival = {"apiVersion": API_VERSION, "kind": "VirtualMachine", "metadata": {"name": "ssa"},
             "spec": {"running": False}}
    problem, status_body = api_error(lambda: apply(k8s, ns, "ssa", rival, "mgr-b"))
    assert problem.status == 409 and status_body["reason"] == "Conflict"
    causes = status_body["details"]["causes"]
    assert [c["type"] for c in causes] == ["FieldManagerConflict"]
    assert causes[0]["field"] == ".spec.running"
    assert "mgr-a" in causes[0]["message"]
    assert get_vm(k8s, ns, "ssa")["spec"]["running"] is True

    # Agreeing on a value is not a conflict: both then share the field.
    shared = apply(k8s, ns, "ssa", {**rival, "metadata": {"name": "ssa", "labels": {
        "owner": "a"}}, "spec": {}}, "mgr-c")
    assert shared["metadata"]["labels"] == {"owner": "a"}

    forced = apply(k8s, ns, "ssa", rival, "mgr-b", force=True)
    assert forced["spec"]["running"] is False
    owners = {e["manager"]: json.dumps(e.get("fieldsV1", {}))
              for e in forced["metadata"]["managedFields"]}
    assert "f:running" in owners["mgr-b"]
    assert "f:running" not in owners["mgr-a"]

    # mgr-a stops applying placementGroup, which it alone owns: the field goes away;
    # running now belongs to mgr-b and stays.
    smaller = vm_body("ssa", labels={"owner": "a"})
    smaller["spec"].pop("running", None)
    result = apply(k8s, ns, "ssa", smaller, "mgr-a")
    assert "placementGroup" not in result["spec"]
    assert result["spec"]["running"] is False
    assert result["metadata"]["labels"] == {"owner": "a"}
    # mgr-a dropping a label it shares with mgr-c keeps it.
    no_label = vm_body("ssa")
    no_label["spec"].pop("running", None)
    result = apply(k8s, ns, "ssa", no_label, "mgr-a")
    assert result["metadata"]["labels"] == {"owner": "a"}

    # An update by another client is recorded as an Update entry.
    updated = k8s.custom.patch_namespaced_custom_object(
        GROUP, VERSION, ns, VMS, "ssa", {"metadata": {"labels": {"edited": "yes"}}},
        field_manager="editor")
    editor = [e for e in updated["metadata"]["managedFields"] if e["manager"] == "editor"]
    assert len(editor) == 1 and editor[0]["operation"] == "Update"


def test_apply_requires_field_manager_and_validates(k8s: Clients, ns: str) -> None:
    problem, _ = api_error(lambda: k8s.custom.patch_namespaced_custom_object(
        GROUP, VERSION, ns, VMS, "ssa2", vm_body("ssa2"),
        _content_type="application/apply-patch+yaml"))
    assert problem.status in (400, 422)
    problem, body = api_error(lambda: apply(k8s, ns, "ssa2", _two_boot_disks("ssa2"), "mgr"))
    assert problem.status == 422
    assert "spec.diskRefs[1].bootFrom" in [c["field"] for c in body["details"]["causes"]]
    problem, _ = api_error(lambda: apply(k8s, ns, "ssa2", vm_body("other-name"), "mgr"))
    assert problem.status == 400
    problem, _ = api_error(lambda: get_vm(k8s, ns, "ssa2"))
    assert problem.status == 404
