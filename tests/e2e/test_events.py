"""Events through the real kubectl and the official Python clients: a VM's history, warnings,
field selectors, watching, posting, aggregation and expiry."""

from __future__ import annotations

import json
import selectors
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kubernetes import client

from tests.conftest import Kubectl, Server, make_kubectl, start_server
from tests.e2e.conftest import kubectl_in_new_namespace, start_cloud
from tests.e2e.test_lifecycle import apply, disk, vm, wait_status
from tests.e2e.test_python_support import make_clients

FLEET = {
    "timing": {"provision": 0.5, "pull": 0.3, "boot": 0.3, "stop": 0.3, "migrate": 0.5},
    "heartbeat": {"interval": 0.5, "timeout": 2},
    "backoff": {"base": 1, "max": 2},
    "hosts": [{"name": "a-general", "zone": "se-sto-a", "vcpu": 16, "memoryGB": 64, "count": 2},
              {"name": "b-general", "zone": "se-sto-b", "vcpu": 16, "memoryGB": 64}],
}


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_cloud(tmp_path_factory.mktemp("events"), FLEET)
    yield server
    server.stop()


@pytest.fixture
def kc(cloud: Server, tmp_path: Path) -> Kubectl:
    return kubectl_in_new_namespace(cloud, tmp_path)


def events_for(kc: Kubectl, what: str, *where: str) -> list[dict]:
    """`kubectl events --for KIND/NAME -o json`: the object's events, oldest first.

    kubectl sorts by lastTimestamp (whole seconds) with an unstable sort, so events of one
    second come in any order; the name (the recorder's creation time in nanoseconds) breaks
    the tie."""
    out = kc("events", "--for", what, "-o", "json", *where)
    events = list(json.loads(out)["items"]) if out.startswith("{") else []  # else "No events"
    return sorted(events, key=lambda e: (e.get("lastTimestamp") or "", e["metadata"]["name"]))


def wait_for_reasons(kc: Kubectl, what: str, wanted: list[str], *where: str,
                     timeout: float = 20) -> list[dict]:
    """Poll until the object's events include `wanted` in that order (events are written a
    moment after the status: the recorder never holds up a reconcile)."""
    deadline = time.monotonic() + timeout
    while True:
        events = events_for(kc, what, *where)
        reasons = [e["reason"] for e in events]
        found = iter(reasons)
        if all(reason in found for reason in wanted) or time.monotonic() > deadline:
            found = iter(reasons)
            assert all(r in found for r in wanted), f"{wanted} not in order in {reasons}"
            return events
        time.sleep(0.2)


def test_a_vms_events_are_its_transition_history(kc: Kubectl) -> None:
    apply(kc, disk("boot", zone="se-sto-a"), vm("web", "boot"))
    wait_status(kc, "web", "Running")
    kc("patch", "vm", "web", "--type", "merge", "-p", '{"spec":{"running":false}}')
    wait_status(kc, "web", "Stopped")
    events = wait_for_reasons(kc, "vm/web", ["Scheduled", "Pulling", "Pulled", "Started",
                                             "Stopping", "Stopped"])
    web = json.loads(kc("get", "vm", "web", "-o", "json"))
    started = next(e for e in events if e["reason"] == "Started")
    assert started["type"] == "Normal" and started["count"] == 1
    assert started["involvedObject"]["uid"] == web["metadata"]["uid"]
    assert started["involvedObject"]["kind"] == "VirtualMachine"
    assert started["source"]["component"] == "evroc-compute-controllers"
    assert started["message"].startswith("the VM is running on host")
    # The last event tells the status now, in the status's own words.
    ready = next(c for c in web["status"]["conditions"] if c["type"] == "Ready")
    assert events[-1]["reason"] == "Stopped" and events[-1]["message"] == ready["message"]
    described = kc("describe", "vm", "web")
    events_section = described.split("Events:")[1]
    for reason in ("Scheduled", "Pulled", "Started", "Stopped"):
        assert reason in events_section
    assert "evroc-compute-controllers" in events_section


def test_problems_are_warnings_and_repeats_are_counted(kc: Kubectl) -> None:
    apply(kc, disk("boot", zone="se-sto-a"),
          vm("crashy", "boot", annotations={"fault.evroc-compute.io/crash-on-boot": "2"}))
    wait_status(kc, "crashy", "Running", timeout=40)
    events = wait_for_reasons(kc, "vm/crashy", ["Crashed", "BackOff", "Started"])
    crashed = [e for e in events if e["reason"] == "Crashed"]
    assert all(e["type"] == "Warning" for e in crashed)
    assert any("failed 2 times" in e["message"] for e in crashed)
    # `Starting` after each back-off is the same event again: one event, counted.
    starting = [e for e in events if e["reason"] == "Starting"]
    assert sum(e["count"] for e in starting) >= 2
    warnings = json.loads(kc("get", "events", "--field-selector",
                             "type=Warning,involvedObject.name=crashy", "-o", "json"))["items"]
    assert warnings and {e["type"] for e in warnings} == {"Warning"}
    assert {e["reason"] for e in warnings} >= {"Crashed", "BackOff"}


def test_disks_hotswaps_and_scheduling_failures_have_events(kc: Kubectl) -> None:
    apply(kc, disk("boot", zone="se-sto-b"), disk("extra", zone="se-sto-b"),
          vm("big", "boot", profile="a1a.2xl", zone="se-sto-b"))
    wait_status(kc, "big", "ErrorUnschedulable")
    failed = wait_for_reasons(kc, "vm/big", ["FailedScheduling"])
    message = next(e for e in failed if e["reason"] == "FailedScheduling")["message"]
    assert "0/" in message and "hosts" in message  # the scheduler's per-rule counts
    wait_for_reasons(kc, "disk/extra", ["Provisioning", "Provisioned"])
    apply(kc, disk("boot2", zone="se-sto-b"), vm("small", "boot2", zone="se-sto-b"))
    wait_status(kc, "small", "Running")
    kc("apply", "-f", "-", input=json.dumps({
        "apiVersion": "compute.evroclabs.net/v1alpha1", "kind": "HotswapDiskAttachment",
        "metadata": {"name": "plug"}, "spec": {"vmRef": "small", "diskRef": "extra"}}))
    attached = wait_for_reasons(kc, "vm/small", ["HotswapAttached"])
    assert 'disk "extra"' in next(e for e in attached if e["reason"] == "HotswapAttached")["message"]
    kc("delete", "hotswapdiskattachment", "plug")
    wait_for_reasons(kc, "vm/small", ["HotswapAttached", "HotswapDetached"])
    kc("delete", "disk", "boot2", "--wait=false")  # its VM still runs: held, and said why
    blocked = wait_for_reasons(kc, "disk/boot2", ["DeletionBlocked"])
    assert 'VirtualMachine "small"' in next(
        e for e in blocked if e["reason"] == "DeletionBlocked")["message"]


def test_kubectl_get_events_watch_sees_a_posted_event(kc: Kubectl, cloud: Server) -> None:
    namespace = json.loads(kc("config", "view", "--minify", "-o", "json"))[
        "contexts"][0]["context"]["namespace"]
    watcher = subprocess.Popen(
        [kc.binary, "--kubeconfig", str(kc.kubeconfig), "--cache-dir", str(kc.cache_dir),
         "get", "events", "--watch-only", "-o", "jsonpath={.reason}{\"\\n\"}",
         "--request-timeout", "20s"], stdout=subprocess.PIPE, text=True)
    core = make_clients(cloud).core
    try:
        # Posting until the watch shows one: no guess about when kubectl's watch is open.
        deadline = time.monotonic() + 15
        assert watcher.stdout is not None
        picker = selectors.DefaultSelector()
        picker.register(watcher.stdout, selectors.EVENT_READ)
        line = ""
        while not line and time.monotonic() < deadline:
            core.create_namespaced_event(namespace, client.CoreV1Event(
                metadata=client.V1ObjectMeta(generate_name="posted."),
                involved_object=client.V1ObjectReference(kind="VirtualMachine", name="x",
                                                         namespace=namespace),
                reason="PostedByTest", message="hello", type="Normal"))
            if picker.select(timeout=0.5):
                line = watcher.stdout.readline().strip()
        assert line == "PostedByTest"
    finally:
        watcher.kill()
        watcher.wait()


def test_any_client_may_post_events_and_field_selectors_pick_them(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data")
    try:
        core = make_clients(server).core
        for name, kind, type_ in (("a", "VirtualMachine", "Normal"), ("b", "Disk", "Warning"),
                                  ("c", "VirtualMachine", "Warning")):
            core.create_namespaced_event("default", client.CoreV1Event(
                metadata=client.V1ObjectMeta(name=f"{name}.1"),
                involved_object=client.V1ObjectReference(kind=kind, name=name, namespace="default",
                                                         uid=f"uid-{name}"),
                reason="Tested", message=f"about {name}", type=type_, count=1,
                source=client.V1EventSource(component="pytest")))

        def names(selector: str) -> list[str]:
            listed = core.list_namespaced_event("default", field_selector=selector)
            return sorted(e.involved_object.name for e in listed.items)

        assert names("involvedObject.kind=VirtualMachine") == ["a", "c"]
        assert names("involvedObject.kind=VirtualMachine,type=Warning") == ["c"]
        assert names("involvedObject.uid=uid-b") == ["b"]
        assert names("reason=Tested,involvedObject.name!=a") == ["b", "c"]
        assert [e.reason for e in core.list_event_for_all_namespaces().items].count("Tested") == 3
        # An event must name its object, in its own namespace: a 422 naming the field.
        with pytest.raises(client.ApiException) as refused:
            core.create_namespaced_event("default", client.CoreV1Event(
                metadata=client.V1ObjectMeta(name="bad.1"),
                involved_object=client.V1ObjectReference(kind="Disk", name="d", namespace="other"),
                reason="Tested", message="m", type="Normal"))
        body = json.loads(refused.value.body)
        assert refused.value.status == 422
        assert body["details"]["causes"][0]["field"] == "involvedObject.namespace"
        with pytest.raises(client.ApiException) as unknown_field:
            core.list_namespaced_event("default", field_selector="source.host=x")
        assert unknown_field.value.status == 400
        assert "field label not supported: source.host" in unknown_field.value.body
    finally:
        server.stop()


def test_events_expire_after_the_ttl(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data", "--event-ttl", "2s")
    try:
        kubectl = make_kubectl(server, tmp_path)
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        kubectl("create", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "Event", "metadata": {"name": "short.1"},
            "involvedObject": {"kind": "Disk", "name": "d"}, "reason": "Brief", "message": "m",
            "type": "Normal", "lastTimestamp": now}))
        assert "Brief" in kubectl("get", "events")
        deadline = time.monotonic() + 20
        while "Brief" in kubectl("get", "events") and time.monotonic() < deadline:
            time.sleep(0.3)
        assert "Brief" not in kubectl("get", "events")
    finally:
        server.stop()


def test_events_k8s_io_v1_is_the_same_events_in_their_newer_shape(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data")
    try:
        clients = make_clients(server)
        events_v1 = client.EventsV1Api(clients.api_client)
        events_v1.create_namespaced_event("default", client.EventsV1Event(
            metadata=client.V1ObjectMeta(name="new.1"),
            event_time=datetime.now(UTC), reporting_controller="example.com/ctl",
            reporting_instance="ctl-1", action="Reconcile", reason="Synced", type="Normal",
            note="posted as events.k8s.io/v1",
            regarding=client.V1ObjectReference(kind="Disk", name="d", namespace="default")))
        clients.core.create_namespaced_event("default", client.CoreV1Event(
            metadata=client.V1ObjectMeta(name="old.1"), reason="Legacy", message="posted as v1",
            type="Warning", count=3,
            involved_object=client.V1ObjectReference(kind="Disk", name="d", namespace="default")))
        as_core = {e.metadata.name: e for e in clients.core.list_namespaced_event("default").items}
        assert as_core["new.1"].message == "posted as events.k8s.io/v1"
        assert as_core["new.1"].involved_object.name == "d"
        assert as_core["new.1"].reporting_component == "example.com/ctl"
        # Read raw: a legacy event has no eventTime (null, as kube-apiserver answers), which
        # this client's EventsV1Event model refuses to deserialize.
        def v1_items(**query: str) -> dict[str, dict]:
            reply = events_v1.list_namespaced_event("default", _preload_content=False, **query)
            return {e["metadata"]["name"]: e for e in json.loads(reply.data)["items"]}

        old = v1_items()["old.1"]
        assert old["apiVersion"] == "events.k8s.io/v1"
        assert old["note"] == "posted as v1" and old["deprecatedCount"] == 3
        assert old["regarding"]["kind"] == "Disk" and "involvedObject" not in old
        assert list(v1_items(field_selector="type=Warning")) == ["old.1"]
        assert list(v1_items(field_selector="regarding.name=d,reason=Synced")) == ["new.1"]
        # The newer shape asks more of a new event: each missing field is named.
        with pytest.raises(client.ApiException) as refused:
            events_v1.create_namespaced_event("default", client.EventsV1Event(
                metadata=client.V1ObjectMeta(name="bad.1"), event_time=datetime.now(UTC),
                reason="R", type="Normal"))
        assert refused.value.status == 422
        fields = {c["field"] for c in json.loads(refused.value.body)["details"]["causes"]}
        assert fields == {"reportingController", "reportingInstance", "action"}
        events_v1.delete_namespaced_event("new.1", "default")
        names = [e.metadata.name for e in clients.core.list_namespaced_event("default").items]
        assert names == ["old.1"]
    finally:
        server.stop()


def test_a_host_is_lost_only_after_it_had_the_time_to_send_a_heartbeat(kc: Kubectl) -> None:
    # The module's fleet started with every host Ready and no host ever reported lost.
    warnings = json.loads(kc("get", "events", "-n", "default", "--field-selector",
                             "reason=HostUnreachable", "-o", "json"))["items"]
    assert warnings == []
    # A host nobody runs: no verdict during its first heartbeat timeout (2 s), then Unknown.
    kc("create", "-f", "-", input=json.dumps({
        "apiVersion": "infra.evroc-compute.io/v1alpha1", "kind": "Host",
        "metadata": {"name": "orphan"},
        "spec": {"zone": "se-sto-c", "driver": "qemu", "capacity": {"vcpu": 4, "memory": {
            "amount": 8, "unit": "GB"}}}}))
    assert "conditions" not in (json.loads(kc("get", "host", "orphan", "-o", "json"))
                                .get("status") or {})
    kc("wait", "host/orphan", "--for=condition=Ready=Unknown", "--timeout=20s")
    wait_for_reasons(kc, "host/orphan", ["HostUnreachable"], "-n", "default")
    kc("delete", "host", "orphan")
