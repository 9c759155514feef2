"""ResourceQuota per project, through kubectl and the Python client: every limited resource
refused in kube's words, usage given back by stop and delete, status.used current,
`kubectl describe quota`, and 50 concurrent creates that never exceed the quota."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.conftest import Kubectl, Server
from tests.e2e.conftest import kubectl_in_new_namespace, start_cloud
from tests.e2e.test_lifecycle import apply, disk, vm
from tests.e2e.test_python_support import Clients, make_clients, new_namespace

GROUP, VERSION = "compute.evroclabs.net", "v1alpha1"
NET = "networking.evroclabs.net/v1alpha1"
VMS = "count/virtualmachines.compute.evroclabs.net"
VCPU = "compute.evroclabs.net/vcpu"
MEMORY = "compute.evroclabs.net/memory"
L40S = "compute.evroclabs.net/gpu.AD102GL_L40S"
DISKS = "count/disks.compute.evroclabs.net"
STORAGE = "compute.evroclabs.net/disk-storage"
PUBLIC_IPS = "count/publicips.networking.evroclabs.net"
FLEET = {"timing": "immediate", "heartbeat": {"interval": 0.5, "timeout": 3},
         "hosts": [{"name": "a", "zone": "se-sto-a", "vcpu": 64, "memoryGB": 256, "count": 2}]}


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_cloud(tmp_path_factory.mktemp("quota"), FLEET)
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


def create_quota(kc: Kubectl, hard: dict[str, str], name: str = "q") -> None:
    kc("create", "quota", name, "--hard=" + ",".join(f"{r}={v}" for r, v in hard.items()))


def used(kc: Kubectl, name: str = "q") -> dict[str, str]:
    result: dict[str, str] = json.loads(kc("get", "quota", name, "-o", "json")).get(
        "status", {}).get("used", {})
    return result


def eventually(check: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        time.sleep(0.1)


def refused(kc: Kubectl, *objects: dict[str, Any]) -> str:
    result = kc.run("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                          "items": list(objects)}), check=False)
    assert result.returncode != 0, result.stdout
    return result.stderr.strip()


def public_ip(name: str) -> dict[str, Any]:
    return {"apiVersion": NET, "kind": "PublicIP", "metadata": {"name": name}, "spec": {}}


def sized_disk(name: str, gb: int) -> dict[str, Any]:
    return {**disk(name), "spec": {"diskSize": {"amount": gb, "unit": "GB"}}}


def message(resource: str, requested: str, in_use: str, limited: str) -> str:
    return (f"exceeded quota: q, requested: {resource}={requested}, used: {resource}={in_use}, "
            f"limited: {resource}={limited}")


CASES = [
    ({VMS: "1"}, [vm("a", "a-boot")], vm("b", "b-boot"), message(VMS, "1", "1", "1")),
    ({VCPU: "4"}, [vm("a", "a-boot", profile="a1a.m")], vm("b", "b-boot", profile="a1a.xs"),
     message(VCPU, "1", "4", "4")),
    ({MEMORY: "20G"}, [vm("a", "a-boot", profile="a1a.m"), vm("b", "b-boot", profile="a1a.xs")],
     vm("c", "c-boot", profile="test.xs"), message(MEMORY, "2G", "20G", "20G")),
    ({L40S: "1"}, [vm("a", "a-boot", profile="gn-l40s.s"), vm("b", "b-boot", profile="gn-b200.s")],
     vm("c", "c-boot", profile="gn-l40s.s"), message(L40S, "1", "1", "1")),
    ({DISKS: "1"}, [disk("a")], disk("b"), message(DISKS, "1", "1", "1")),
    ({STORAGE: "30G"}, [disk("a")], sized_disk("b", 25), message(STORAGE, "25G", "10G", "30G")),
    ({PUBLIC_IPS: "1"}, [public_ip("a")], public_ip("b"), message(PUBLIC_IPS, "1", "1", "1")),
]


@pytest.mark.parametrize(("hard", "allowed", "excess", "expected"), CASES,
                         ids=["VM count", "vCPUs", "memory", "GPUs of one model", "disk count",
                              "disk storage (an image's default size counts)", "public IPs"])
def test_each_limited_resource_is_refused_past_its_limit_in_kubes_words(
        kc: Kubectl, hard: dict[str, str], allowed: list[dict[str, Any]], excess: dict[str, Any],
        expected: str) -> None:
    create_quota(kc, hard)
    apply(kc, *allowed)
    plural = {"VirtualMachine": "virtualmachines.compute.evroclabs.net",
              "Disk": "disks.compute.evroclabs.net",
              "PublicIP": "publicips.networking.evroclabs.net"}[excess["kind"]]
    error = refused(kc, excess)
    assert f'{plural} "{excess["metadata"]["name"]}" is forbidden: {expected}' in error
    assert "Error from server (Forbidden)" in error
    assert kc.run("get", plural, excess["metadata"]["name"], check=False).returncode != 0
    in_use = expected.split("used: ")[1].split(",")[0].split("=")[1]  # what the refusal says
    eventually(lambda: used(kc) == {r: in_use for r in hard})


def test_a_dry_run_is_refused_too_and_charges_nothing(kc: Kubectl) -> None:
    create_quota(kc, {VMS: "1"})
    apply(kc, vm("a", "a-boot"))
    result = kc.run("apply", "--dry-run=server", "-f", "-", input=json.dumps(vm("b", "b-boot")),
                    check=False)
    assert message(VMS, "1", "1", "1") in result.stderr
    kc("delete", "vm", "a", "--wait=true")
    eventually(lambda: used(kc) == {VMS: "0"})
    kc("apply", "--dry-run=server", "-f", "-", input=json.dumps(vm("b", "b-boot")))
    assert used(kc) == {VMS: "0"}


def test_stop_and_delete_free_what_a_vm_held_and_status_used_follows(kc: Kubectl) -> None:
    create_quota(kc, {VCPU: "4", MEMORY: "16G", VMS: "2"})
    apply(kc, disk("a-boot"), disk("b-boot"), vm("a", "a-boot", profile="a1a.m"),
          vm("b", "b-boot", profile="a1a.s", running=False))
    eventually(lambda: used(kc) == {VCPU: "4", MEMORY: "16G", VMS: "2"})
    start = kc.run("patch", "vm", "b", "--type", "merge", "-p", '{"spec":{"running":true}}',
                   check=False)
    assert start.returncode != 0
    assert ('virtualmachines.compute.evroclabs.net "b" is forbidden: exceeded quota: q, '
            f"requested: {MEMORY}=8G,{VCPU}=2, used: {MEMORY}=16G,{VCPU}=4, "
            f"limited: {MEMORY}=16G,{VCPU}=4") in start.stderr
    kc("patch", "vm", "a", "--type", "merge", "-p", '{"spec":{"running":false}}')
    eventually(lambda: used(kc) == {VCPU: "0", MEMORY: "0", VMS: "2"})
    kc("patch", "vm", "b", "--type", "merge", "-p", '{"spec":{"running":true}}')
    resize = kc.run("patch", "vm", "b", "--type", "merge", "-p",
                    '{"spec":{"vmVirtualResourcesRef":{"vmVirtualResourcesRefName":"a1a.l"}}}',
                    check=False)
    assert f"requested: {MEMORY}=24G,{VCPU}=6, used: {MEMORY}=8G,{VCPU}=2" in resize.stderr
    assert refused(kc, vm("c", "c-boot", running=False)).endswith(message(VMS, "1", "2", "2"))
    kc("delete", "vm", "a", "--wait=true")
    eventually(lambda: used(kc) == {VCPU: "2", MEMORY: "8G", VMS: "1"})
    apply(kc, vm("c", "c-boot", running=False))
    eventually(lambda: used(kc) == {VCPU: "2", MEMORY: "8G", VMS: "2"})


def test_a_disk_cannot_grow_past_the_storage_quota(kc: Kubectl) -> None:
    create_quota(kc, {STORAGE: "100G"})
    apply(kc, sized_disk("data", 50))
    kc("patch", "disk", "data", "--type", "merge", "-p", '{"spec":{"diskSize":{"amount":100}}}')
    grow = kc.run("patch", "disk", "data", "--type", "merge", "-p",
                  '{"spec":{"diskSize":{"amount":101}}}', check=False)
    assert message(STORAGE, "1G", "100G", "100G") in grow.stderr
    eventually(lambda: used(kc) == {STORAGE: "100G"})


def test_kubectl_get_and_describe_quota_read_well(kc: Kubectl) -> None:
    create_quota(kc, {VMS: "5", VCPU: "16", MEMORY: "64G", L40S: "2"}, name="project")
    apply(kc, vm("a", "a-boot", profile="a1a.m"), vm("b", "b-boot", profile="a1a.s",
                                                      running=False))
    eventually(lambda: used(kc, "project").get(VMS) == "2")
    table = kc("get", "quota")
    assert table.splitlines()[0].split() == ["NAME", "AGE", "REQUEST"]
    assert f"{L40S}: 0/2, {MEMORY}: 16G/64G, {VCPU}: 4/16, {VMS}: 2/5" in table
    described = kc("describe", "quota", "project")
    lines = [line.split() for line in described.splitlines()]
    assert ["Name:", "project"] in lines
    assert ["Resource", "Used", "Hard"] in lines
    for row in ([MEMORY, "16G", "64G"], [VCPU, "4", "16"], [L40S, "0", "2"], [VMS, "2", "5"]):
        assert row in lines, described


def test_unknown_resources_and_scopes_are_refused_with_the_field(kc: Kubectl) -> None:
    wrong = kc.run("create", "quota", "q", "--hard=compute.evroclabs.net/vcpus=4", check=False)
    assert "spec.hard[compute.evroclabs.net/vcpus]" in wrong.stderr
    assert "unsupported resource" in wrong.stderr
    scoped = kc.run("create", "quota", "q", f"--hard={VMS}=4", "--scopes=BestEffort", check=False)
    assert "spec.scopes" in scoped.stderr and "not supported" in scoped.stderr


def test_python_client_reads_quotas_and_gets_the_refusal_as_a_403(k8s: Clients) -> None:
    ns = new_namespace(k8s, "quota")
    k8s.core.create_namespaced_resource_quota(ns, client.V1ResourceQuota(
        metadata=client.V1ObjectMeta(name="q"), spec=client.V1ResourceQuotaSpec(hard={VCPU: "2"})))
    body = vm("a", "a-boot", profile="a1a.s")
    k8s.custom.create_namespaced_custom_object(GROUP, VERSION, ns, "virtualmachines", body)
    with pytest.raises(ApiException) as refusal:
        k8s.custom.create_namespaced_custom_object(GROUP, VERSION, ns, "virtualmachines",
                                                   vm("b", "b-boot", profile="a1a.xs"))
    status = json.loads(refusal.value.body)
    assert (refusal.value.status, status["reason"]) == (403, "Forbidden")
    assert status["message"].endswith(message(VCPU, "1", "2", "2"))
    assert status["details"]["causes"][0]["field"] == \
        "spec.vmVirtualResourcesRef.vmVirtualResourcesRefName"
    eventually(lambda: k8s.core.read_namespaced_resource_quota("q", ns).status.used == {VCPU: "2"})
    listed = k8s.core.list_namespaced_resource_quota(ns)
    assert [q.status.hard for q in listed.items] == [{VCPU: "2"}]


def test_fifty_concurrent_creates_never_exceed_the_quota(cloud: Server, k8s: Clients) -> None:
    ns = new_namespace(k8s, "quota")
    k8s.core.create_namespaced_resource_quota(ns, client.V1ResourceQuota(
        metadata=client.V1ObjectMeta(name="q"),
        spec=client.V1ResourceQuotaSpec(hard={VCPU: "25", VMS: "40"})))
    config = client.Configuration()
    config.host, config.ssl_ca_cert = cloud.url, str(cloud.ca)
    config.cert_file, config.key_file = (str(path) for path in cloud.admin_cert)
    config.connection_pool_maxsize = 50
    api = client.CustomObjectsApi(client.ApiClient(config))

    def create(index: int) -> int:
        try:
            api.create_namespaced_custom_object(GROUP, VERSION, ns, "virtualmachines", vm(
                f"vm-{index}", f"vm-{index}-boot", profile="a1a.s"))
            return 201
        except ApiException as problem:
            assert "exceeded quota: q" in json.loads(problem.body)["message"]
            return int(problem.status)

    with ThreadPoolExecutor(50) as pool:
        codes = list(pool.map(create, range(50)))
    assert sorted(codes) == [201] * 12 + [403] * 38  # 12 x 2 vCPUs fit in 25
    listed = api.list_namespaced_custom_object(GROUP, VERSION, ns, "virtualmachines")
    assert len(listed["items"]) == 12
    eventually(lambda: k8s.core.read_namespaced_resource_quota("q", ns).status.used ==
               {VCPU: "24", VMS: "12"})
