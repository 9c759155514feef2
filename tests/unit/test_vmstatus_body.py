"""The whole status object of a VirtualMachine, from the same facts as its status value."""

from __future__ import annotations

from typing import Any

import pytest

from evroc_compute.controllers.vmstatus import (
    AttachedDisk,
    HotswapFacts,
    NetworkFacts,
    VirtualMachineStatusBody,
    vm_status,
)
from tests.unit.test_vmstatus import NOW, inst, vm

ON_H1 = NetworkFacts(zone="se-sto-a", private_address="10.0.1.2", public_address="198.51.100.7")
DISKS = (AttachedDisk(name="boot", device="/dev/vda"), AttachedDisk(name="data", device="/dev/vdb"))


def body(**kw: Any) -> VirtualMachineStatusBody:
    return vm_status(vm(**kw), NOW).body


def test_a_running_vm_shows_its_addresses_endpoint_zone_and_disks() -> None:
    shown = body(network=ON_H1, instance=inst("Running", ssh_endpoint="127.0.0.1:2222", disks=DISKS))
    assert shown["virtualMachineStatus"] == "Running"
    assert shown["networking"] == {"privateIPv4Address": "10.0.1.2",
                                   "publicIPv4Address": "198.51.100.7",
                                   "sshEndpoint": "127.0.0.1:2222"}
    assert shown["placement"] == {"zone": "se-sto-a"}
    assert shown["attachedDisks"] == [{"name": "boot", "device": "/dev/vda"},
                                      {"name": "data", "device": "/dev/vdb"}]


def test_security_group_memberships_are_active_or_pending_until_the_group_exists() -> None:
    net = NetworkFacts(zone="se-sto-a", private_address="10.0.1.2",
                       security_groups=(("web", True), ("later", False)))
    shown = body(network=net, instance=inst("Running"))
    assert shown["networking"]["securityGroups"] == {"securityGroupMemberships": [
        {"name": "web", "state": "Active"}, {"name": "later", "state": "Pending"}]}


@pytest.mark.parametrize("phase", ["Stopped", "Starting", "Failed", "Pulling"])
def test_a_guest_that_is_not_up_has_no_endpoint_and_no_attached_disks(phase: str) -> None:
    shown = body(network=ON_H1, instance=inst(phase, ssh_endpoint="127.0.0.1:2222", disks=DISKS))
    assert "sshEndpoint" not in shown["networking"] and "attachedDisks" not in shown
    assert shown["networking"]["privateIPv4Address"] == "10.0.1.2"  # kept while stopped


def test_an_exhausted_subnet_is_a_condition_that_names_the_zone_and_the_way_out() -> None:
    shown = body(network=NetworkFacts(zone="se-sto-a", address_problem="every address of "
                                      "10.0.1.0/30 is in use"))
    assert "networking" not in shown
    [assigned] = [c for c in shown["conditions"] if c["type"] == "AddressAssigned"]
    assert (assigned["status"], assigned["reason"]) == ("False", "SubnetExhausted")
    assert "zone se-sto-a" in assigned["message"] and "10.0.1.0/30" in assigned["message"]
    assert "when a VM in the zone is deleted" in assigned["message"]


def test_a_vm_being_deleted_gives_its_addresses_back() -> None:
    shown = body(network=ON_H1, deleting=True)
    assert "networking" not in shown and shown["placement"] == {"zone": "se-sto-a"}


def test_a_condition_keeps_its_transition_time_while_its_status_stays() -> None:
    first = body()
    earlier = [{**c, "lastTransitionTime": "2020-01-01T00:00:00Z"} for c in first["conditions"]]
    again = body(previous_conditions=tuple(earlier))
    assert {c["lastTransitionTime"] for c in again["conditions"]} == {"2020-01-01T00:00:00Z"}
    stopped = body(running=False, instance=None, host=None, previous_conditions=tuple(earlier))
    ready = next(c for c in stopped["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["lastTransitionTime"] != "2020-01-01T00:00:00Z"


@pytest.mark.parametrize(("facts", "reported", "entry"), [
    (HotswapFacts(attachment="a", disk="d", serial="evroc-1"),
     {"attachment": "a", "attached": True, "serial": "evroc-1", "device": "/dev/sda"},
     {"attachment": "a", "disk": "d", "attached": True, "serial": "evroc-1", "device": "/dev/sda"}),
    (HotswapFacts(attachment="a", disk="d", serial="evroc-1", problem='Disk "d" is in zone b'),
     None, {"attachment": "a", "disk": "d", "attached": False, "message": 'Disk "d" is in zone b'}),
    (HotswapFacts(attachment="a", disk="d", serial="evroc-1"),
     {"attachment": "a", "attached": False, "message": "the VM is not running"},
     {"attachment": "a", "disk": "d", "attached": False, "message": "the VM is not running"}),
    (HotswapFacts(attachment="a", disk="d", serial="evroc-1"), None,
     {"attachment": "a", "disk": "d", "attached": False,
      "message": "the host is hot-plugging the disk"}),
], ids=["plugged", "refused", "host-says-why", "being-plugged"])
def test_each_hotswap_attachment_says_where_it_is_plugged_or_why_not(
        facts: HotswapFacts, reported: dict[str, Any] | None, entry: dict[str, Any]) -> None:
    shown = body(hotswaps=(facts,), instance=inst("Running", hotswap=(reported,) if reported else ()))
    assert shown["hotswapDiskAttachments"] == [entry]
