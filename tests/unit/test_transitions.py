"""Which events a status change is: table-driven, over the pure `status_events`."""

from __future__ import annotations

from typing import Any

import pytest

from evroc_compute.controllers.transitions import VM_STATUS_EVENTS, Occurrence, status_events
from evroc_compute.controllers.vmstatus import VMStatus


def vm(status: str | None, ready_message: str = "", **conditions: tuple[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {"conditions": [
        {"type": t, "status": "False", "reason": r, "message": m} for t, (r, m) in conditions.items()]}
    if status:
        out["virtualMachineStatus"] = status
        out["conditions"].append({"type": "Ready", "status": "False", "reason": status,
                                  "message": ready_message or f"{status} because"})
    return out


def ready(reason: str, message: str = "m", status: str = "False", **extra: Any) -> dict[str, Any]:
    return {"conditions": [{"type": "Ready", "status": status, "reason": reason,
                            "message": message}], **extra}


def test_every_vm_status_of_the_seed_is_an_event() -> None:
    assert set(VM_STATUS_EVENTS) == set(VMStatus.__args__)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("old", "new", "expected"), [
    # A status change is one event, with the Ready condition's message.
    (None, vm("Creating"), [Occurrence("Normal", "Creating", "Creating because")]),
    (vm("Starting"), vm("Running", "up on h1"), [Occurrence("Normal", "Started", "up on h1")]),
    (vm("Migrating"), vm("Running", "up on h2"), [Occurrence("Normal", "Migrated", "up on h2")]),
    (vm("Running"), vm("Unknown", "h1 is silent"),
     [Occurrence("Warning", "HostUnreachable", "h1 is silent")]),
    (vm("Starting"), vm("ErrorUnschedulable", "0/3 hosts"),
     [Occurrence("Warning", "FailedScheduling", "0/3 hosts")]),
    (vm("Starting"), vm("ImagePullBackOff", "retry at"),
     [Occurrence("Warning", "BackOff", "retry at")]),
    # The same status with another message is no new event: only changes of status are.
    (vm("Starting", "waiting"), vm("Starting", "booting"), []),
    (vm("Running"), vm("Running"), []),
    # Milestones on the way, in the conditions' words.
    (vm("Starting", "s", Scheduled=("WaitingForScheduler", "w")),
     vm("Starting", "s", Scheduled=("Scheduled", 'bound to host "h1"')),
     [Occurrence("Normal", "Scheduled", 'bound to host "h1"')]),
    (vm("Starting", "s"), vm("Starting", "s", ImagePulled=("Pulling", "pulling")),
     [Occurrence("Normal", "Pulling", "pulling")]),
    (vm("Starting", "s", ImagePulled=("Pulling", "pulling")),
     vm("Running", "up", ImagePulled=("ImagePulled", "in place")),
     [Occurrence("Normal", "Pulled", "in place"), Occurrence("Normal", "Started", "up")]),
    # Each crash is one Crashed event (its message counts the crashes).
    (vm("Starting", "s", GuestHealthy=("Crashed", "failed 1 time")),
     vm("Starting", "s", GuestHealthy=("Crashed", "failed 2 times")),
     [Occurrence("Warning", "Crashed", "failed 2 times")]),
    (vm("Starting", "s", GuestHealthy=("Crashed", "failed 1 time")),
     vm("Starting", "s", GuestHealthy=("Crashed", "failed 1 time")), []),
])
def test_vm_transitions(old: dict[str, Any] | None, new: dict[str, Any],
                        expected: list[Occurrence]) -> None:
    assert status_events("VirtualMachine", old, new) == expected


def test_hotswap_disks_plugged_in_and_out_of_a_vm() -> None:
    plugged = {"attachment": "plug", "disk": "data", "attached": True, "serial": "s1",
               "device": "/dev/sdb"}
    waiting = {"attachment": "plug", "disk": "data", "attached": False, "message": "m"}
    before, after = vm("Running", "up"), vm("Running", "up")
    before["hotswapDiskAttachments"] = [waiting]
    after["hotswapDiskAttachments"] = [plugged]
    assert status_events("VirtualMachine", before, after) == [Occurrence(
        "Normal", "HotswapAttached", 'disk "data" attached by plug as /dev/sdb (serial s1)')]
    assert status_events("VirtualMachine", after, vm("Running", "up")) == [
        Occurrence("Normal", "HotswapDetached", 'disk "data" detached (plug)')]


@pytest.mark.parametrize(("kind", "old", "new", "expected"), [
    ("Disk", None, ready("Provisioning", "in a"), [Occurrence("Normal", "Provisioning", "in a")]),
    ("Disk", ready("Provisioning"), ready("Ready", "done", "True"),
     [Occurrence("Normal", "Provisioned", "done")]),
    ("Disk", ready("Provisioning"), ready("ProvisioningFailed", "no image"),
     [Occurrence("Warning", "ProvisioningFailed", "no image")]),
    # Only a change of reason is an event; a new message under the same reason is not.
    ("Disk", ready("Provisioning", "a"), ready("Provisioning", "b"), []),
    ("Disk", ready("Ready", status="True"),
     {"conditions": [*ready("Ready", status="True")["conditions"],
                     {"type": "DeletionBlocked", "status": "True", "reason": "InUse",
                      "message": 'in use by VirtualMachine "web"'}]},
     [Occurrence("Warning", "DeletionBlocked", 'in use by VirtualMachine "web"')]),
    ("HotswapDiskAttachment", ready("Attaching"), ready("Attached", "as sdb", "True"),
     [Occurrence("Normal", "HotswapAttached", "as sdb")]),
    ("HotswapDiskAttachment", ready("Attached", status="True"), ready("VMNotRunning", "stopped"),
     [Occurrence("Normal", "HotswapDetached", "stopped")]),
    ("HotswapDiskAttachment", None, ready("ZoneMismatch", "other zone"),
     [Occurrence("Warning", "FailedAttach", "other zone")]),
    ("Host", ready("HeartbeatReceived", status="True"), ready("HeartbeatLost", "silent", "Unknown"),
     [Occurrence("Warning", "HostUnreachable", "silent")]),
    ("PublicIP", None, ready("PoolExhausted", "none left"),
     [Occurrence("Warning", "PoolExhausted", "none left")]),
    ("VMVirtualResources", None, ready("Whatever"), []),
])
def test_ready_transitions(kind: str, old: dict[str, Any] | None, new: dict[str, Any],
                           expected: list[Occurrence]) -> None:
    assert status_events(kind, old, new) == expected
