"""/metrics and the logs, after traffic from kubectl and the official Python client.

The server runs the controllers and a small immediate fleet, with `--log-format json
--log-level debug`; every assertion is on what a scrape or the log shows.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client.rest import ApiException
from prometheus_client.parser import text_string_to_metric_families

from tests.api.client import GROUP as GROUP_PATH
from tests.api.client import Http
from tests.conftest import Kubectl, Server, start_server
from tests.e2e.conftest import kubectl_in_new_namespace
from tests.e2e.test_python_support import Clients, make_clients

GROUP, VERSION = "compute.evroclabs.net", "v1alpha1"
FLEET = {
    "timing": "immediate",
    "heartbeat": {"interval": 0.5, "timeout": 3},
    "hosts": [{"name": "m", "zone": "se-sto-a", "vcpu": 16, "memoryGB": 64, "count": 2}],
}
Samples = list[tuple[str, dict[str, str], float]]


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("metrics")
    fleet = base / "fleet.yaml"
    fleet.write_text(yaml.safe_dump(FLEET))
    server = start_server(base / "data", "--fleet", str(fleet), "--log-format", "json",
                          "--log-level", "debug")
    yield server
    server.stop()


@pytest.fixture
def kc(cloud: Server, tmp_path: Path) -> Kubectl:
    return kubectl_in_new_namespace(cloud, tmp_path)


@pytest.fixture(scope="module")
def k8s(cloud: Server) -> Iterator[Clients]:
    clients = make_clients(cloud)
    yield clients
    clients.api_client.close()


def scrape(server: Server) -> Samples:
    reply = Http(server).request("GET", "/metrics", accept="text/plain")
    assert reply.status == 200 and reply.headers["content-type"].startswith("text/plain")
    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(
        reply.raw.decode()) for s in family.samples]


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    return sum(value for sample, found, value in samples
               if sample == name and labels.items() <= found.items())


def eventually(check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        time.sleep(0.2)


def create_vms(kc: Kubectl, names: list[str]) -> None:
    docs = []
    for name in names:
        docs.append({"apiVersion": f"{GROUP}/{VERSION}", "kind": "Disk",
                     "metadata": {"name": f"{name}-boot"},
                     "spec": {"diskImage": {"diskImageRef": {"name": "ubuntu.24-04.1"}}}})
        docs.append({"apiVersion": f"{GROUP}/{VERSION}", "kind": "VirtualMachine",
                     "metadata": {"name": name},
                     "spec": {"vmVirtualResourcesRef": {"vmVirtualResourcesRefName": "a1a.s"},
                              "diskRefs": [{"name": f"{name}-boot", "bootFrom": True}]}})
    kc("create", "-f", "-", input=yaml.safe_dump_all(docs))


def test_requests_are_counted_by_verb_resource_and_code(cloud: Server, kc: Kubectl,
                                                        k8s: Clients) -> None:
    namespace = kc("config", "view", "--minify", "-o", "jsonpath={..namespace}")
    before = scrape(cloud)
    create_vms(kc, ["web-1", "web-2", "web-3"])
    k8s.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "virtualmachines")
    k8s.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "virtualmachines", "web-1")
    with pytest.raises(ApiException):
        k8s.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "virtualmachines", "nope")
    after = scrape(cloud)

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    vms = {"group": GROUP, "version": VERSION, "resource": "virtualmachines",
           "component": "apiserver", "subresource": ""}
    assert delta("apiserver_request_total", verb="CREATE", code="201", scope="resource", **vms) == 3
    assert delta("apiserver_request_total", verb="CREATE", code="201", resource="disks") == 3
    assert delta("apiserver_request_total", verb="LIST", code="200", scope="namespace", **vms) == 1
    assert delta("apiserver_request_total", verb="GET", code="200", scope="resource", **vms) == 1
    assert delta("apiserver_request_total", verb="GET", code="404", **vms) == 1
    assert delta("apiserver_request_duration_seconds_count", verb="CREATE", **vms) == 3
    assert delta("apiserver_request_duration_seconds_bucket", verb="CREATE", le="+Inf", **vms) == 3
    assert total(after, "apiserver_request_total", verb="GET", subresource="/metrics") >= 1


def test_vms_by_status_match_kubectl_get_vm(cloud: Server, kc: Kubectl) -> None:
    create_vms(kc, ["db-1", "db-2"])
    kc("wait", "vm/db-1", "vm/db-2", "--for=jsonpath={.status.virtualMachineStatus}=Running",
       "--timeout=30s")

    def agree() -> bool:
        listed = json.loads(kc("get", "vm", "-A", "-o", "json"))["items"]
        by_kubectl = Counter((vm.get("status") or {}).get("virtualMachineStatus", "")
                             for vm in listed)
        samples = scrape(cloud)
        by_metric = {labels["status"]: value for name, labels, value in samples
                     if name == "evroc_virtualmachines" and value}
        return by_metric == dict(by_kubectl)

    eventually(agree)
    samples = scrape(cloud)
    assert total(samples, "evroc_virtualmachines", status="Running") >= 2
    assert ("evroc_virtualmachines", {"status": "Stopped"}) in [(n, s) for n, s, _ in samples], \
        "every status has a series, zero or not"


def test_host_allocation_and_capacity_match_the_hosts(cloud: Server, kc: Kubectl) -> None:
    create_vms(kc, ["app-1"])
    kc("wait", "vm/app-1", "--for=jsonpath={.status.virtualMachineStatus}=Running",
       "--timeout=30s")

    def agree() -> bool:
        """The metrics and the Hosts say the same (the scheduler reports a host's allocations
        up to a second after a placement: both are read again until they settle)."""
        hosts = json.loads(kc("get", "hosts", "-o", "json"))["items"]
        samples = scrape(cloud)
        for host in hosts:
            name = host["metadata"]["name"]
            assert total(samples, "evroc_host_capacity", host=name, resource="vcpu") == 16
            assert total(samples, "evroc_host_capacity", host=name,
                         resource="memory_bytes") == 64e9
            allocated = (host.get("status") or {}).get("allocated") or {}
            if total(samples, "evroc_host_allocated", host=name, resource="vcpu") != \
                    allocated.get("vcpu", 0):
                return False
        return total(samples, "evroc_host_allocated", resource="vcpu") >= 1

    eventually(agree)


def test_controller_store_and_storage_metrics(cloud: Server, kc: Kubectl) -> None:
    create_vms(kc, ["ctl-1"])
    kc("wait", "vm/ctl-1", "--for=jsonpath={.status.virtualMachineStatus}=Running",
       "--timeout=30s")
    samples = scrape(cloud)
    assert total(samples, "controller_runtime_reconcile_total", controller="vm",
                 result="success") > 0
    assert total(samples, "controller_runtime_reconcile_time_seconds_count", controller="vm") > 0
    assert total(samples, "controller_runtime_reconcile_errors_total", controller="vm") == 0
    assert {labels["name"] for name, labels, _ in samples if name == "workqueue_depth"} >= {
        "vm", "disk", "hotswap", "publicip", "placementgroup"}
    commits = total(samples, "evroc_store_commit_duration_seconds_count")
    assert commits > 0
    assert total(samples, "evroc_store_commit_batch_size_count") == commits
    assert total(samples, "evroc_store_commit_batch_size_sum") >= commits
    vms = len(json.loads(kc("get", "vm", "-A", "-o", "json"))["items"])
    assert total(samples, "apiserver_storage_objects",
                 resource="virtualmachines.compute.evroclabs.net") == vms


def test_open_watches_are_counted(cloud: Server) -> None:
    http = Http(cloud)
    watching = {"verb": "WATCH", "resource": "virtualmachines", "scope": "cluster"}
    before = total(scrape(cloud), "apiserver_longrunning_requests", **watching)
    conn, response = http.stream(f"{GROUP_PATH}/virtualmachines", watch="true")
    assert response.status == 200
    eventually(lambda: total(scrape(cloud), "apiserver_longrunning_requests",
                             **watching) == before + 1)
    conn.close()
    eventually(lambda: total(scrape(cloud), "apiserver_longrunning_requests",
                             **watching) == before)


def _log_lines(server: Server) -> list[dict[str, Any]]:
    return [json.loads(line) for line in server.log_path.read_text().splitlines() if line]


def test_logs_are_one_json_object_per_line_with_a_debug_line_per_request(cloud: Server) -> None:
    reply = Http(cloud).request("GET", "/version")
    assert reply.status == 200
    # The request's line is written once its answer is sent: wait for it, not a moment.
    deadline = time.monotonic() + 10
    while '"path":"/version"' not in cloud.log_path.read_text().replace(" ", "") and \
            time.monotonic() < deadline:
        time.sleep(0.05)
    lines = _log_lines(cloud)  # each line parses, or this fails
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    assert any(line["logger"] == "evroc_compute" and "serving on" in line["message"]
               for line in lines)
    requests = [line for line in lines if line["logger"] == "evroc_compute.requests"]
    version = next(line for line in requests if line["path"] == "/version")
    assert version["level"] == "debug" and version["method"] == "GET" and version["code"] == 200
    assert isinstance(version["duration"], float) and version["user_agent"] == ""
    kubectl_created = [line for line in requests
                       if line["method"] == "POST" and line["user_agent"].startswith("kubectl")]
    assert kubectl_created and all(line["code"] == 201 for line in kubectl_created)
