"""Kubernetes API semantics over HTTP: versions, lists, watches, status, finalizers, namespaces."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.api.client import GROUP, Http, vm, vm_path
from tests.conftest import Server, start_server

MERGE = "application/merge-patch+json"


@pytest.fixture(scope="module")
def http(shared_server: Server) -> Http:
    return Http(shared_server)


def namespace(http: Http, name: str) -> str:
    reply = http.request("POST", "/api/v1/namespaces",
                         {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    assert reply.status == 201, reply.raw
    return name


def read_events(response: Any, count: int) -> list[dict[str, Any]]:
    events = []
    while len(events) < count:
        line = response.readline()
        if not line:
            break
        events.append(json.loads(line))
    return events


def test_discovery_serves_aggregated_v2_with_the_exact_content_type(http: Http) -> None:
    accept = ("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
              "application/json")
    reply = http.request("GET", "/apis", accept=accept)
    assert reply.headers["content-type"] == \
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    groups = {g["metadata"]["name"]: g for g in reply.body["items"]}
    resources = {r["resource"]: r for r in
                 groups["compute.evroclabs.net"]["versions"][0]["resources"]}
    assert resources["virtualmachines"]["shortNames"] == ["vm", "vms"]
    assert resources["virtualmachines"]["subresources"][0]["subresource"] == "status"
    assert resources["diskimages"]["scope"] == "Cluster"
    legacy = http.request("GET", "/apis/compute.evroclabs.net/v1alpha1").body
    assert "virtualmachines/status" in [r["name"] for r in legacy["resources"]]


def test_openapi_v3_documents_kinds_for_explain(http: Http) -> None:
    index = http.request("GET", "/openapi/v3").body
    url = index["paths"]["apis/compute.evroclabs.net/v1alpha1"]["serverRelativeURL"]
    document = http.request("GET", url).body
    schema = document["components"]["schemas"]["net.evroclabs.compute.v1alpha1.VirtualMachine"]
    assert schema["x-kubernetes-group-version-kind"][0]["kind"] == "VirtualMachine"
    assert "cloudInitUserData" in schema["properties"]["spec"]["properties"]["osSettings"][
        "properties"]
    patch_op = document["paths"][
        "/apis/compute.evroclabs.net/v1alpha1/namespaces/{namespace}/virtualmachines/{name}"]["patch"]
    assert "fieldValidation" in [p["name"] for p in patch_op["parameters"]]


def test_create_sets_server_fields_and_defaults(http: Http) -> None:
    body = vm("fields")
    body["status"] = {"virtualMachineStatus": "Running"}
    body["metadata"]["uid"] = "client-chosen"
    created = http.request("POST", vm_path(), body).body
    meta = created["metadata"]
    assert meta["uid"] != "client-chosen" and meta["generation"] == 1
    assert meta["creationTimestamp"].endswith("Z") and meta["namespace"] == "default"
    assert created["spec"]["running"] is True
    assert "status" not in created
    assert meta["managedFields"][0]["operation"] == "Update"


def test_generate_name_makes_unique_names(http: Http) -> None:
    body = vm("x")
    del body["metadata"]["name"]
    body["metadata"]["generateName"] = "web-"
    names = {http.request("POST", vm_path(), body).body["metadata"]["name"] for _ in range(3)}
    assert len(names) == 3 and all(n.startswith("web-") and len(n) == 9 for n in names)


def test_spec_changes_bump_generation_status_writes_do_not(http: Http) -> None:
    http.request("POST", vm_path(), vm("gen"))
    patched = http.request("PATCH", vm_path(name="gen"), {"spec": {"running": False}},
                           content_type=MERGE).body
    assert patched["metadata"]["generation"] == 2
    labelled = http.request("PATCH", vm_path(name="gen"), {"metadata": {"labels": {"a": "b"}}},
                            content_type=MERGE).body
    assert labelled["metadata"]["generation"] == 2
    status = {"status": {"virtualMachineStatus": "Stopped", "conditions": [
        {"type": "Ready", "status": "False", "reason": "Stopped", "observedGeneration": 2}]}}
    written = http.request("PATCH", vm_path(name="gen") + "/status", status, content_type=MERGE)
    assert written.status == 200 and written.body["metadata"]["generation"] == 2
    assert written.body["status"]["virtualMachineStatus"] == "Stopped"


def test_status_and_spec_are_written_only_through_their_own_endpoint(http: Http) -> None:
    http.request("POST", vm_path(), vm("split"))
    http.request("PATCH", vm_path(name="split") + "/status",
                 {"status": {"virtualMachineStatus": "Running"}}, content_type=MERGE)
    main = http.request("PATCH", vm_path(name="split"), {
        "spec": {"running": False}, "status": {"virtualMachineStatus": "Stopped"}},
        content_type=MERGE).body
    assert main["spec"]["running"] is False
    assert main["status"]["virtualMachineStatus"] == "Running"
    status = http.request("PATCH", vm_path(name="split") + "/status", {
        "spec": {"running": True}, "status": {"virtualMachineStatus": "Stopped"}},
        content_type=MERGE).body
    assert status["spec"]["running"] is False
    assert status["status"]["virtualMachineStatus"] == "Stopped"


def test_a_no_op_write_keeps_the_resource_version(http: Http) -> None:
    created = http.request("POST", vm_path(), vm("noop")).body
    again = http.request("PATCH", vm_path(name="noop"), {"spec": {"running": True}},
                         content_type=MERGE).body
    assert again["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


def test_dry_run_persists_nothing(http: Http) -> None:
    before = http.request("GET", vm_path()).body["metadata"]["resourceVersion"]
    reply = http.request("POST", vm_path(), vm("dry"), dryRun="All")
    assert reply.status == 201 and reply.body["metadata"]["name"] == "dry"
    assert http.request("GET", vm_path(name="dry")).status == 404
    http.request("POST", vm_path(), vm("dry2"))
    http.request("DELETE", vm_path(name="dry2"), {"dryRun": ["All"]})
    assert http.request("GET", vm_path(name="dry2")).status == 200
    assert int(http.request("GET", vm_path()).body["metadata"]["resourceVersion"]) == \
        int(before) + 1


def test_finalizers_hold_deletion_until_removed(http: Http) -> None:
    body = vm("held")
    body["metadata"]["finalizers"] = ["example.com/hold"]
    http.request("POST", vm_path(), body)
    # As kube-apiserver: 200 with the object even though finalizers keep it (a propagation
    # policy changes nothing); 202 only for orphanDependents=false.
    deleting = http.request("DELETE", vm_path(name="held"), {"propagationPolicy": "Background"})
    assert deleting.status == 200 and deleting.body["metadata"]["deletionTimestamp"]
    assert deleting.body["metadata"]["finalizers"] == ["example.com/hold"]
    again = http.request("DELETE", vm_path(name="held"), {"orphanDependents": False})
    assert again.status == 202 and again.body["metadata"]["name"] == "held"
    refused = http.request("PATCH", vm_path(name="held"),
                           {"metadata": {"finalizers": ["example.com/hold", "example.com/more"]}},
                           content_type=MERGE)
    assert refused.status == 422 and "no new finalizers" in refused.body["message"]
    released = http.request("PATCH", vm_path(name="held"), {"metadata": {"finalizers": None}},
                            content_type=MERGE)
    assert released.status == 200
    assert http.request("GET", vm_path(name="held")).status == 404


def test_delete_preconditions(http: Http) -> None:
    created = http.request("POST", vm_path(), vm("pre")).body
    wrong = http.request("DELETE", vm_path(name="pre"), {"preconditions": {"uid": "nope"}})
    assert wrong.status == 409 and "Precondition failed: UID" in wrong.body["message"]
    right = http.request("DELETE", vm_path(name="pre"), {"preconditions": {
        "uid": created["metadata"]["uid"],
        "resourceVersion": created["metadata"]["resourceVersion"]}})
    assert right.status == 200


def test_list_pages_share_one_snapshot(http: Http) -> None:
    ns = namespace(http, "paging")
    for i in range(5):
        http.request("POST", vm_path(ns), vm(f"p{i}"))
    first = http.request("GET", vm_path(ns), limit="2").body
    http.request("POST", vm_path(ns), vm("p00-late"))
    names = [i["metadata"]["name"] for i in first["items"]]
    token = first["metadata"]["continue"]
    while token:
        page = http.request("GET", vm_path(ns), limit="2", **{"continue": token}).body
        assert page["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
        names += [i["metadata"]["name"] for i in page["items"]]
        token = page["metadata"].get("continue")
    assert names == ["p0", "p1", "p2", "p3", "p4"]


def test_label_and_field_selectors(http: Http) -> None:
    ns = namespace(http, "selectors")
    for name, labels in [("a", {"app": "web", "tier": "1"}), ("b", {"app": "db"}), ("c", {})]:
        http.request("POST", vm_path(ns), vm(name, labels=labels))

    def names(**query: str) -> list[str]:
        return [i["metadata"]["name"] for i in http.request("GET", vm_path(ns), **query)
                .body["items"]]
    assert names(labelSelector="app=web") == ["a"]
    assert names(labelSelector="app==web") == ["a"]
    assert names(labelSelector="app!=web") == ["b", "c"]
    assert names(labelSelector="app in (web,db)") == ["a", "b"]
    assert names(labelSelector="app notin (web)") == ["b", "c"]
    assert names(labelSelector="tier") == ["a"]
    assert names(labelSelector="!app") == ["c"]
    assert names(fieldSelector="metadata.name=b") == ["b"]
    assert names(fieldSelector="metadata.name!=b") == ["a", "c"]
    everywhere = http.request("GET", f"{GROUP}/virtualmachines",
                              fieldSelector=f"metadata.namespace={ns}").body["items"]
    assert len(everywhere) == 3


def test_tables_have_evroc_columns(http: Http) -> None:
    http.request("POST", vm_path(), vm("tabled"))
    table = http.request("GET", vm_path(), accept="application/json;as=Table;v=v1;g=meta.k8s.io",
                         fieldSelector="metadata.name=tabled").body
    assert [c["name"] for c in table["columnDefinitions"] if c["priority"] == 0] == \
        ["Name", "Ready", "Reason", "VirtualMachineStatus", "IP", "Public IP", "Age"]
    assert table["rows"][0]["cells"][0] == "tabled"
    assert table["rows"][0]["object"]["kind"] == "PartialObjectMetadata"


def test_watch_without_version_starts_with_synthetic_added_then_changes(http: Http) -> None:
    ns = namespace(http, "watch-synthetic")
    http.request("POST", vm_path(ns), vm("w1"))
    conn, response = http.stream(vm_path(ns), watch="true", timeoutSeconds="5")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in read_events(response, 1)] == \
        [("ADDED", "w1")]
    http.request("PATCH", vm_path(ns, "w1"), {"spec": {"running": False}}, content_type=MERGE)
    http.request("DELETE", vm_path(ns, "w1"))
    events = read_events(response, 2)
    assert [e["type"] for e in events] == ["MODIFIED", "DELETED"]
    assert events[1]["object"]["kind"] == "VirtualMachine"
    assert events[1]["object"]["apiVersion"] == "compute.evroclabs.net/v1alpha1"
    conn.close()


def test_watch_from_a_version_replays_only_later_changes(http: Http) -> None:
    ns = namespace(http, "watch-replay")
    http.request("POST", vm_path(ns), vm("r1"))
    version = http.request("GET", vm_path(ns)).body["metadata"]["resourceVersion"]
    http.request("POST", vm_path(ns), vm("r2"))
    conn, response = http.stream(vm_path(ns), watch="true", resourceVersion=version,
                                 timeoutSeconds="5")
    events = read_events(response, 1)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "r2")]
    conn.close()


def test_watch_turns_selector_transitions_into_added_and_deleted(http: Http) -> None:
    ns = namespace(http, "watch-selector")
    http.request("POST", vm_path(ns), vm("s1", labels={"app": "web"}))
    conn, response = http.stream(vm_path(ns), watch="true", labelSelector="app=web",
                                 timeoutSeconds="5")
    assert read_events(response, 1)[0]["type"] == "ADDED"
    http.request("PATCH", vm_path(ns, "s1"), {"metadata": {"labels": {"app": "db"}}},
                 content_type=MERGE)
    http.request("PATCH", vm_path(ns, "s1"), {"metadata": {"labels": {"app": "web"}}},
                 content_type=MERGE)
    assert [e["type"] for e in read_events(response, 2)] == ["DELETED", "ADDED"]
    conn.close()


def test_watch_ends_at_timeout_seconds(http: Http) -> None:
    started = time.monotonic()
    conn, response = http.stream(vm_path(), watch="true", timeoutSeconds="1",
                                 resourceVersion=http.request("GET", vm_path()).body["metadata"][
                                     "resourceVersion"])
    assert response.read() == b""
    assert 0.9 <= time.monotonic() - started < 5
    conn.close()


def test_send_initial_events_ends_with_an_annotated_bookmark(http: Http) -> None:
    ns = namespace(http, "watch-initial")
    http.request("POST", vm_path(ns), vm("i1"))
    conn, response = http.stream(vm_path(ns), watch="true", sendInitialEvents="true",
                                 allowWatchBookmarks="true", resourceVersionMatch="NotOlderThan",
                                 timeoutSeconds="5")
    events = read_events(response, 2)
    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK"]
    assert events[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    conn.close()


def test_compacted_history_gives_410(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data", "--compact-interval", "0.2", "--compact-keep", "2")
    try:
        http = Http(server)
        first = http.request("POST", vm_path(), vm("c0")).body["metadata"]["resourceVersion"]
        for i in range(1, 8):
            http.request("POST", vm_path(), vm(f"c{i}"))
        deadline = time.monotonic() + 30  # until a compaction has run past `first`
        while http.request("GET", vm_path(), limit="1", resourceVersion=first).status != 410:
            assert time.monotonic() < deadline, "history was never compacted"
            time.sleep(0.05)
        conn, response = http.stream(vm_path(), watch="true", resourceVersion=first)
        event = read_events(response, 1)[0]
        assert event["type"] == "ERROR" and event["object"]["code"] == 410
        conn.close()
        page = http.request("GET", vm_path(), limit="1", resourceVersion=first)
        assert page.status == 410 and page.body["reason"] == "Expired"
    finally:
        server.stop()


def test_deleting_a_namespace_deletes_its_objects(http: Http) -> None:
    ns = namespace(http, "doomed")
    body = vm("kept")
    body["metadata"]["finalizers"] = ["example.com/hold"]
    http.request("POST", vm_path(ns), body)
    http.request("POST", vm_path(ns), vm("free"))
    reply = http.request("DELETE", f"/api/v1/namespaces/{ns}")
    assert reply.body["status"]["phase"] == "Terminating"
    refused = http.request("POST", vm_path(ns), vm("late"))
    assert refused.status == 403 and "being terminated" in refused.body["message"]
    deadline = time.monotonic() + 5
    while http.request("GET", vm_path(ns, "free")).status != 404 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert http.request("GET", vm_path(ns, "free")).status == 404
    assert http.request("GET", f"/api/v1/namespaces/{ns}").status == 200
    http.request("PATCH", vm_path(ns, "kept"), {"metadata": {"finalizers": None}},
                 content_type=MERGE)
    while http.request("GET", f"/api/v1/namespaces/{ns}").status != 404 and \
            time.monotonic() < deadline:
        time.sleep(0.05)
    assert http.request("GET", f"/api/v1/namespaces/{ns}").status == 404


def test_kcp_cluster_prefix_serves_the_same_api(http: Http) -> None:
    http.request("POST", vm_path(), vm("kcp"))
    reply = http.request("GET", "/clusters/root:acme" + vm_path(name="kcp"))
    assert reply.status == 200 and reply.body["metadata"]["name"] == "kcp"
    assert http.request("GET", "/clusters/root:acme/version").body["major"] == "1"


def test_acknowledged_writes_survive_kill_9(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data")
    http = Http(server)
    for i in range(50):
        assert http.request("POST", vm_path(), vm(f"k{i}")).status == 201
    server.kill()
    server = start_server(tmp_path / "data")
    try:
        names = {i["metadata"]["name"] for i in Http(server).request("GET", vm_path())
                 .body["items"]}
        assert {f"k{i}" for i in range(50)} <= names
    finally:
        server.stop()
