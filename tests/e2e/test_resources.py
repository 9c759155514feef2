"""Hot-swap disks, placement groups, public IPs, scarce capacity and namespace deletion, via kubectl."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Kubectl, Server, make_kubectl
from tests.e2e.conftest import kubectl_in_new_namespace, start_cloud
from tests.e2e.test_lifecycle import apply, disk, get, ready, vm, wait_status

NET = "networking.evroclabs.net/v1alpha1"
GROUP = "compute.evroclabs.net/v1alpha1"
FLEET = {
    "timing": "immediate",
    "heartbeat": {"interval": 0.5, "timeout": 3},
    "publicIPPool": "203.0.113.0/29",
    "hosts": [
        {"name": "a", "zone": "se-sto-a", "vcpu": 16, "memoryGB": 64, "count": 3},
        {"name": "scarce", "zone": "se-sto-b", "vcpu": 4, "memoryGB": 16, "count": 2},
    ],
}


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_cloud(tmp_path_factory.mktemp("resources"), FLEET)
    yield server
    server.stop()


@pytest.fixture
def kc(cloud: Server, tmp_path: Path) -> Kubectl:
    """kubectl on the module's cloud, in a namespace of this test's own (its kubeconfig default)."""
    return kubectl_in_new_namespace(cloud, tmp_path)


def attachment(name: str, vm_name: str, disk_name: str) -> dict:
    return {"apiVersion": GROUP, "kind": "HotswapDiskAttachment", "metadata": {"name": name},
            "spec": {"vmRef": vm_name, "diskRef": disk_name}}


def eventually(check: Callable[[], bool], timeout: float = 20) -> None:
    """Poll `check` until it holds (for what kubectl wait cannot express: a field gone)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        time.sleep(0.2)


def hotswap_of(kc: Kubectl, vm_name: str) -> list[dict]:
    result: list[dict] = get(kc, f"vm/{vm_name}")["status"].get("hotswapDiskAttachments", [])
    return result


# ---- hot-swap -----------------------------------------------------------------------------

def test_a_hotswap_disk_attaches_with_serial_and_device_survives_restart_and_detaches(
        kc: Kubectl) -> None:
    apply(kc, disk("boot", zone="se-sto-a"), disk("data", zone="se-sto-a"), vm("host", "boot"))
    wait_status(kc, "host", "Running")
    kc("wait", "disk/data", "--for=condition=Ready", "--timeout=20s")
    apply(kc, attachment("plug", "host", "data"))
    kc("wait", "hda/plug", "--for=condition=Ready", "--timeout=20s")
    plug = get(kc, "hda/plug")
    serial = plug["status"]["serial"]
    assert serial.startswith("evroc-") and ready(plug)["reason"] == "Attached"
    kc("wait", "vm/host", "--for=jsonpath={.status.hotswapDiskAttachments[0].attached}=true",
       "--timeout=20s")
    assert hotswap_of(kc, "host") == [{"attachment": "plug", "disk": "data", "attached": True,
                                       "serial": serial, "device": "/dev/sda"}]
    assert {"useKind": "hotswap", "vm": "host", "attachment": "plug"} in \
        get(kc, "disk/data")["status"]["diskUsage"]
    # Stop: detached but kept; start: plugged in again with the same serial.
    kc("patch", "vm/host", "--type=merge", "-p", '{"spec":{"running":false}}')
    wait_status(kc, "host", "Stopped")
    kc("wait", "hda/plug", "--for=jsonpath={.status.conditions[0].reason}=VMNotRunning",
       "--timeout=20s")
    kc("patch", "vm/host", "--type=merge", "-p", '{"spec":{"running":true}}')
    wait_status(kc, "host", "Running")
    kc("wait", "hda/plug", "--for=condition=Ready", "--timeout=20s")
    assert get(kc, "hda/plug")["status"]["serial"] == serial
    # Deleting the attachment unplugs the disk and frees it.
    kc("delete", "hda/plug", "--wait=true", "--timeout=20s")
    eventually(lambda: not hotswap_of(kc, "host"))
    eventually(lambda: "diskUsage" not in get(kc, "disk/data")["status"])


def test_a_hotswap_disk_used_elsewhere_or_in_another_zone_is_refused_with_a_reason(
        kc: Kubectl) -> None:
    apply(kc, disk("boot", zone="se-sto-a"), disk("other-boot", zone="se-sto-a"),
          disk("far", zone="se-sto-b"), vm("one", "boot"), vm("two", "other-boot"))
    wait_status(kc, "one", "Running")
    kc("wait", "disk/far", "--for=condition=Ready", "--timeout=20s")
    apply(kc, attachment("steal", "one", "other-boot"), attachment("distant", "one", "far"))
    kc("wait", "hda/steal", "--for=jsonpath={.status.conditions[0].reason}=DiskInUse",
       "--timeout=20s")
    assert 'permanent disk of VirtualMachine "two"' in ready(get(kc, "hda/steal"))["message"]
    kc("wait", "hda/distant", "--for=jsonpath={.status.conditions[0].reason}=ZoneMismatch",
       "--timeout=20s")
    messages = {e["attachment"]: e.get("message", "") for e in hotswap_of(kc, "one")}
    assert "zone se-sto-b" in messages["distant"] and not any(
        e["attached"] for e in hotswap_of(kc, "one"))


def test_a_disk_without_a_zone_is_bound_by_the_vm_that_hot_swaps_it(kc: Kubectl) -> None:
    apply(kc, disk("boot", zone="se-sto-a"), disk("loose"), vm("taker", "boot"))
    wait_status(kc, "taker", "Running")
    assert ready(get(kc, "disk/loose"))["reason"] == "WaitingForFirstConsumer"
    apply(kc, attachment("take", "taker", "loose"))
    kc("wait", "hda/take", "--for=condition=Ready", "--timeout=20s")
    assert get(kc, "disk/loose")["status"]["placement"] == {"zone": "se-sto-a"}
    assert [e["attached"] for e in hotswap_of(kc, "taker")] == [True]


# ---- placement groups -----------------------------------------------------------------------

def test_a_spread_group_puts_members_on_different_hosts_and_refuses_a_sixth(kc: Kubectl) -> None:
    group = {"apiVersion": GROUP, "kind": "PlacementGroup", "metadata": {"name": "spread"},
             "spec": {"strategy": {"type": "spread"}, "placement": {"zone": "se-sto-a"}}}
    apply(kc, group, *(disk(f"d{i}") for i in range(4)),
          *(vm(f"m{i}", f"d{i}", placementGroup="spread") for i in range(3)))
    for i in range(3):
        wait_status(kc, f"m{i}", "Running")
    hosts = {get(kc, f"vmi/m{i}")["spec"]["host"] for i in range(3)}
    assert len(hosts) == 3  # three hosts in se-sto-a, one member each
    kc("wait", "pg/spread", "--for=jsonpath={.status.virtualMachines[2].name}=m2",
       "--timeout=20s")
    # A fourth member: every host of the zone already runs one.
    apply(kc, vm("m3", "d3", placementGroup="spread"))
    wait_status(kc, "m3", "ErrorUnschedulable")
    message = ready(get(kc, "vm/m3"))["message"]
    assert "3 already hosting a member of placement group" in message
    assert "runs each member on a different host" in message


def test_placement_group_membership_changes_only_while_stopped(kc: Kubectl) -> None:
    group = {"apiVersion": GROUP, "kind": "PlacementGroup", "metadata": {"name": "g"},
             "spec": {"strategy": {"type": "spread"}}}
    apply(kc, group, disk("d"), vm("joiner", "d"))
    wait_status(kc, "joiner", "Running")
    refused = kc.run("patch", "vm/joiner", "--type=merge", "-p",
                     '{"spec":{"placementGroup":"g"}}', check=False)
    assert refused.returncode != 0
    assert "spec.placementGroup" in refused.stderr and "only while the VM is stopped" in refused.stderr
    kc("patch", "vm/joiner", "--type=merge", "-p", '{"spec":{"running":false}}')
    wait_status(kc, "joiner", "Stopped")
    kc("patch", "vm/joiner", "--type=merge", "-p", '{"spec":{"placementGroup":"g"}}')
    kc("wait", "pg/g", "--for=jsonpath={.status.virtualMachines[0].name}=joiner", "--timeout=20s")


# ---- public IPs ----------------------------------------------------------------------------------

def test_a_public_ip_is_allocated_used_by_one_vm_kept_while_stopped_and_cannot_be_deleted_in_use(
        kc: Kubectl) -> None:
    pip = {"apiVersion": NET, "kind": "PublicIP", "metadata": {"name": "front"}, "spec": {}}
    networking = {"publicIPv4Address": {"static": {"publicIPRef": "front"}}}
    apply(kc, pip, disk("d"), vm("edge", "d", networking=networking))
    wait_status(kc, "edge", "Running")
    address = get(kc, "publicip/front")["status"]["publicIPv4Address"]
    assert address.startswith("203.0.113.")
    assert get(kc, "publicip/front")["status"]["usedBy"] == "edge"
    assert get(kc, "vm/edge")["status"]["networking"]["publicIPv4Address"] == address
    refused = kc.run("delete", "publicip/front", check=False)
    assert refused.returncode != 0 and 'in use by VirtualMachine "edge"' in refused.stderr
    kc("patch", "vm/edge", "--type=merge", "-p", '{"spec":{"running":false}}')
    wait_status(kc, "edge", "Stopped")
    assert get(kc, "vm/edge")["status"]["networking"]["publicIPv4Address"] == address
    # A second VM naming the same address cannot start, and says why.
    apply(kc, disk("d2"), vm("rival", "d2", networking=networking))
    wait_status(kc, "rival", "ProvisioningFailed")
    assert 'used by VirtualMachine "edge"' in ready(get(kc, "vm/rival"))["message"]
    kc("delete", "vm/edge", "vm/rival", "--wait=true", "--timeout=30s")
    eventually(lambda: "usedBy" not in get(kc, "publicip/front")["status"])
    kc("delete", "publicip/front", "--timeout=20s")


# ---- scarce capacity ------------------------------------------------------------------------

def test_many_vms_into_scarce_capacity_never_over_commit_and_the_rest_wait_then_run(
        kc: Kubectl) -> None:
    # se-sto-b has 2 hosts x 4 vCPU; a1a.s needs 2 vCPU: exactly 4 fit.
    apply(kc, *(disk(f"d{i}", zone="se-sto-b") for i in range(7)),
          *(vm(f"v{i}", f"d{i}", profile="a1a.s") for i in range(7)))
    kc("wait", "vm", "--all", "--for=jsonpath={.status.virtualMachineStatus}", "--timeout=30s")

    def statuses() -> dict[str, str]:
        items = json.loads(kc("get", "vm", "-o", "json"))["items"]
        return {i["metadata"]["name"]: i.get("status", {}).get("virtualMachineStatus", "")
                for i in items}

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        seen = statuses()
        if sorted(seen.values()).count("Running") == 4 and \
                sorted(seen.values()).count("ErrorUnschedulable") == 3:
            break
        time.sleep(0.3)
    assert sorted(statuses().values()) == ["ErrorUnschedulable"] * 3 + ["Running"] * 4
    instances = json.loads(kc("get", "vmi", "-o", "json"))["items"]
    used = {h: 2 * sum(1 for i in instances if i["spec"].get("host") == h)
            for h in ("scarce-1", "scarce-2")}
    assert all(vcpu <= 4 for vcpu in used.values()), used
    eventually(lambda: all(  # the hosts report it within a second
        (get(kc, f"host/{h}").get("status", {}).get("allocated") or {}).get("vcpu") == vcpu
        for h, vcpu in used.items()), timeout=10)
    waiting = next(n for n, s in statuses().items() if s == "ErrorUnschedulable")
    assert "0/5 hosts are available: 3 in another zone, 2 insufficient vCPU." in \
        ready(get(kc, f"vm/{waiting}"))["message"]
    # Capacity frees: a stopped VM gives its place to a waiting one.
    running = next(n for n, s in statuses().items() if s == "Running")
    kc("patch", f"vm/{running}", "--type=merge", "-p", '{"spec":{"running":false}}')
    wait_status(kc, running, "Stopped")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and list(statuses().values()).count("Running") < 4:
        time.sleep(0.3)
    assert list(statuses().values()).count("Running") == 4


def test_a_host_reports_the_instances_bound_to_it_and_an_edit_by_hand_is_undone(
        kc: Kubectl) -> None:
    namespace = json.loads(kc("config", "view", "--minify", "-o", "json"))[
        "contexts"][0]["context"]["namespace"]
    apply(kc, disk("boot", zone="se-sto-a"), vm("app", "boot"))
    wait_status(kc, "app", "Running")
    host = get(kc, "vmi/app")["spec"]["host"]

    def reported() -> list[dict]:
        allocations = get(kc, f"host/{host}").get("status", {}).get("allocations", [])
        return [e for e in allocations if e["instance"] == f"{namespace}/app"]

    eventually(lambda: len(reported()) == 1, timeout=10)
    assert reported()[0]["vcpu"] == 1  # a1a.xs
    # The report is the scheduler's: an operator's edit of it is written back within a second.
    edited = json.loads(kc("patch", f"host/{host}", "--subresource=status", "--type=merge",
                           "-p", '{"status":{"allocations":[]}}', "-o", "json"))
    assert edited["status"]["allocations"] == []
    eventually(lambda: len(reported()) == 1, timeout=10)
    kc("delete", "vm/app", "--wait=true", "--timeout=30s")
    eventually(lambda: not reported(), timeout=10)


# ---- namespaces -----------------------------------------------------------------------------------

def test_deleting_a_namespace_deletes_everything_in_it_in_order(kc: Kubectl, cloud: Server,
                                                                tmp_path: Path) -> None:
    namespace = json.loads(kc("config", "view", "--minify", "-o", "json"))[
        "contexts"][0]["context"]["namespace"]
    pip = {"apiVersion": NET, "kind": "PublicIP", "metadata": {"name": "ip"}, "spec": {}}
    networking = {"publicIPv4Address": {"static": {"publicIPRef": "ip"}}}
    apply(kc, pip, disk("boot", zone="se-sto-a"), disk("extra", zone="se-sto-a"),
          vm("app", "boot", networking=networking))
    wait_status(kc, "app", "Running")
    kc("wait", "disk/extra", "--for=condition=Ready", "--timeout=20s")
    apply(kc, attachment("plug", "app", "extra"))
    kc("wait", "hda/plug", "--for=condition=Ready", "--timeout=20s")
    kc("delete", "namespace", namespace, "--wait=true", "--timeout=60s", timeout=90)
    (tmp_path / "other").mkdir()
    other = make_kubectl(cloud, tmp_path / "other")
    assert "NotFound" in other.run("get", "namespace", namespace, check=False).stderr

    def allocated_to_namespace() -> list[str]:
        hosts = json.loads(other("get", "hosts", "-o", "json"))["items"]
        return [e["instance"] for h in hosts for e in h.get("status", {}).get("allocations", [])
                if e["instance"].startswith(f"{namespace}/")]

    eventually(lambda: not allocated_to_namespace(), timeout=10)  # reported within a second
