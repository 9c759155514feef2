"""A VirtualMachine's status is a pure function of facts: every seed value, every precedence."""

from __future__ import annotations

import dataclasses
import re
from typing import Any, get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evroc_compute.api.compute import STATUS_VALUES
from evroc_compute.controllers import vmstatus
from evroc_compute.controllers.vmstatus import (
    CREATING_WINDOW_SECONDS,
    RULES,
    Condition,
    DiskFacts,
    HostFacts,
    InstanceFacts,
    VMFacts,
    VMStatus,
    conditions_to_dicts,
    vm_status,
)

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z
OLD = 3600.0  # seconds since creation of a VM past its first moment


def disk(name: str = "boot", **kw: Any) -> DiskFacts:
    fields: dict[str, Any] = {"exists": True, "ready": True, "failed": False, "zone": "se-sto-a",
                              "bound": True}
    return DiskFacts(name=name, **{**fields, **kw})


def inst(phase: Any = "Running", host: str | None = "h1", **kw: Any) -> InstanceFacts:
    return InstanceFacts(phase=phase, host=host, **kw)


def host(name: str = "h1", alive: bool = True, draining: bool = False) -> HostFacts:
    return HostFacts(name=name, alive=alive, draining=draining)


def vm(**kw: Any) -> VMFacts:
    """A healthy running VM on host h1, changed by `kw`."""
    fields: dict[str, Any] = {
        "generation": 1, "running": True, "deleting": False, "has_finalizers_pending": False,
        "created_seconds_ago": OLD, "disks": (disk(),), "instance": inst(), "host": host(),
    }
    return VMFacts(**{**fields, **kw})


NO_INSTANCE: dict[str, Any] = {"instance": None, "host": None}
PENDING: dict[str, Any] = {"instance": inst("Pending", None), "host": None}
UNSCHEDULABLE: dict[str, Any] = {
    "instance": inst("Pending", None, unschedulable_message="0/3 hosts: 3 insufficient memory"),
    "host": None,
}
MISSING = disk("data-1", exists=False, ready=False, zone=None, bound=False)
FAILED = disk("data-2", ready=False, failed=True, failure_message="quota exceeded in se-sto-a")
UNBOUND = disk("data-3", ready=False, zone=None, bound=False)
PROVISIONING = disk("data-4", ready=False)
JUST_CREATED = disk("data-5", ready=False, reported=False)  # no Ready condition yet
PULL_ERROR = "manifest for ubuntu.24-04.1 not found"


def pull_failed(retry_at: float | None, phase: Any = "Pulling") -> InstanceFacts:
    return inst(phase, image_pull_error=PULL_ERROR, image_pull_failures=2, image_retry_at=retry_at)


def crashed(retry_at: float | None, phase: Any = "Failed") -> InstanceFacts:
    return inst(phase, crash_count=3, crash_retry_at=retry_at, message="kernel panic")


# One row per seed value, each reached for the reason the issue names.
EVERY_STATUS = [
    pytest.param(vm(created_seconds_ago=1.0, **NO_INSTANCE), "Creating",
                 id="a new VM with ready disks and no instance yet is Creating"),
    pytest.param(vm(disks=(disk(), PROVISIONING), **NO_INSTANCE), "Provisioning",
                 id="a VM whose bound disk is still being provisioned is Provisioning"),
    pytest.param(vm(disks=(disk(), UNBOUND), **NO_INSTANCE), "WaitingForVolumeBinding",
                 id="a VM whose disk has no zone yet is WaitingForVolumeBinding"),
    pytest.param(vm(instance=inst("Starting")), "Starting",
                 id="a VM whose guest is booting is Starting"),
    pytest.param(vm(), "Running", id="a VM whose guest is up is Running"),
    pytest.param(vm(running=False), "Stopping",
                 id="a VM with running false and a live guest is Stopping"),
    pytest.param(vm(running=False, **NO_INSTANCE), "Stopped",
                 id="a VM with running false and no instance is Stopped"),
    pytest.param(vm(instance=inst("Paused")), "Paused", id="a VM whose guest is paused is Paused"),
    pytest.param(vm(host=host(draining=True)), "Migrating",
                 id="a running VM on a drained host is Migrating"),
    pytest.param(vm(deleting=True), "Terminating",
                 id="a deleted VM whose instance is shutting down is Terminating"),
    pytest.param(vm(deleting=True, **NO_INSTANCE), "Deleting",
                 id="a deleted VM with nothing left to release is Deleting"),
    pytest.param(vm(**UNSCHEDULABLE), "ErrorUnschedulable",
                 id="a VM no host can fit is ErrorUnschedulable"),
    pytest.param(vm(disks=(disk(), MISSING)), "ErrorPvcNotFound",
                 id="a VM referencing a disk that does not exist is ErrorPvcNotFound"),
    pytest.param(vm(disks=(disk(), FAILED), **NO_INSTANCE), "DataVolumeError",
                 id="a VM referencing a failed disk is DataVolumeError"),
    pytest.param(vm(instance=pull_failed(None)), "ErrImagePull",
                 id="a VM whose boot image pull just failed is ErrImagePull"),
    pytest.param(vm(instance=pull_failed(NOW + 20)), "ImagePullBackOff",
                 id="a VM waiting to retry its boot image pull is ImagePullBackOff"),
    pytest.param(vm(instance=crashed(NOW + 40)), "CrashLoopBackOff",
                 id="a VM whose guest keeps failing, waiting to restart, is CrashLoopBackOff"),
    pytest.param(vm(host=host(alive=False)), "Unknown",
                 id="a VM whose host lost its heartbeat is Unknown"),
    pytest.param(vm(provisioning_failed_message='VMVirtualResources "a1a.huge" does not exist',
                    **NO_INSTANCE), "ProvisioningFailed",
                 id="a VM whose resources could not be prepared is ProvisioningFailed"),
]

# Boundaries and second routes: how each time-driven or derived status is entered and left.
BOUNDARIES = [
    pytest.param(vm(instance=pull_failed(NOW - 1)), "ErrImagePull",
                 id="once the pull back-off has passed the VM is ErrImagePull again"),
    pytest.param(vm(instance=pull_failed(NOW)), "ErrImagePull",
                 id="at the exact pull retry time the VM is ErrImagePull (the retry is due)"),
    pytest.param(vm(instance=crashed(NOW)), "Starting",
                 id="at the exact crash retry time the VM is Starting again"),
    pytest.param(vm(instance=crashed(None)), "Starting",
                 id="a crashed guest without a back-off is Starting again"),
    pytest.param(vm(instance=inst("Stopped")), "Starting",
                 id="a VM that should run whose guest stopped is Starting again"),
    pytest.param(vm(instance=inst("Failed", message="qemu exited")), "Starting",
                 id="a VM that should run whose instance failed without a crash count is Starting"),
    pytest.param(vm(**NO_INSTANCE), "Starting",
                 id="past its first moment a VM without an instance is Starting (started after a stop)"),
    pytest.param(vm(created_seconds_ago=CREATING_WINDOW_SECONDS, **NO_INSTANCE), "Starting",
                 id="Creating ends exactly at the end of the creating window"),
    pytest.param(vm(created_seconds_ago=1.0, **PENDING), "Creating",
                 id="a new VM whose instance waits for the scheduler's first verdict is Creating"),
    pytest.param(vm(**PENDING), "Starting",
                 id="past its first moment a VM waiting for the scheduler is Starting"),
    pytest.param(vm(created_seconds_ago=1.0, instance=inst("Scheduled")), "Starting",
                 id="a new VM that has been scheduled is Starting, not Creating"),
    pytest.param(vm(created_seconds_ago=1.0, instance=inst("Pending")), "Creating",
                 id="a new VM bound to a host that has not reported on it yet is Creating"),
    pytest.param(vm(instance=inst("Pending")), "Starting",
                 id="past its first moment a VM whose host has not reported yet is Starting"),
    pytest.param(vm(created_seconds_ago=1.0, disks=(disk(), JUST_CREATED), **NO_INSTANCE),
                 "Creating", id="a new VM whose disk was not reported on yet is Creating"),
    pytest.param(vm(disks=(disk(), JUST_CREATED), **NO_INSTANCE), "Provisioning",
                 id="past its first moment a VM whose disk was not reported on is Provisioning"),
    pytest.param(vm(created_seconds_ago=1.0, disks=(disk(), PROVISIONING), **NO_INSTANCE),
                 "Provisioning",
                 id="a new VM whose disk reports it is being provisioned is Provisioning"),
    pytest.param(vm(instance=inst("Pulling")), "Starting",
                 id="a VM pulling its boot image is Starting"),
    pytest.param(vm(instance=inst("Stopping")), "Stopping",
                 id="a VM that should run whose guest is shutting down is Stopping"),
    pytest.param(vm(running=False, instance=inst("Stopped")), "Stopped",
                 id="a VM with running false whose guest stopped is Stopped"),
    pytest.param(vm(running=False, instance=inst("Failed")), "Stopped",
                 id="a VM with running false whose instance failed is Stopped"),
    pytest.param(vm(instance=inst("Migrating")), "Migrating",
                 id="a VM whose instance reports Migrating is Migrating"),
    pytest.param(vm(deleting=True, has_finalizers_pending=True, **NO_INSTANCE), "Terminating",
                 id="a deleted VM still releasing resources after its instance is gone is Terminating"),
    pytest.param(vm(host=None), "Unknown",
                 id="a VM bound to a host that no longer exists is Unknown"),
    pytest.param(vm(disks=(disk(ready=False, zone=None, bound=False),), **NO_INSTANCE),
                 "WaitingForVolumeBinding",
                 id="a disk merely waiting for binding is WaitingForVolumeBinding, not Provisioning"),
    pytest.param(vm(disks=(disk(zone=None, bound=False),), **NO_INSTANCE),
                 "WaitingForVolumeBinding",
                 id="a disk reporting ready but without a zone is WaitingForVolumeBinding"),
]

# One row per precedence decision: the left status outranks the right one.
PRECEDENCE = [
    # deletion
    pytest.param(vm(deleting=True, disks=(MISSING,)), "Terminating",
                 id="Terminating outranks ErrorPvcNotFound"),
    pytest.param(vm(deleting=True, disks=(MISSING,), **NO_INSTANCE), "Deleting",
                 id="Deleting outranks ErrorPvcNotFound"),
    pytest.param(vm(deleting=True, host=host(alive=False)), "Terminating",
                 id="Terminating outranks Unknown"),
    pytest.param(vm(deleting=True, running=False, **NO_INSTANCE), "Deleting",
                 id="Deleting outranks Stopped"),
    pytest.param(vm(deleting=True, provisioning_failed_message="bad profile", **UNSCHEDULABLE),
                 "Terminating", id="Terminating outranks ProvisioningFailed and ErrorUnschedulable"),
    # a missing disk
    pytest.param(vm(disks=(MISSING, FAILED)), "ErrorPvcNotFound",
                 id="ErrorPvcNotFound outranks DataVolumeError"),
    pytest.param(vm(disks=(MISSING,), provisioning_failed_message="bad profile", **NO_INSTANCE),
                 "ErrorPvcNotFound", id="ErrorPvcNotFound outranks ProvisioningFailed"),
    pytest.param(vm(running=False, disks=(MISSING,), **NO_INSTANCE), "ErrorPvcNotFound",
                 id="ErrorPvcNotFound outranks Stopped (a stopped VM still shows its missing disk)"),
    pytest.param(vm(disks=(MISSING,), host=host(alive=False)), "ErrorPvcNotFound",
                 id="ErrorPvcNotFound outranks Unknown"),
    pytest.param(vm(disks=(MISSING,), running=False), "ErrorPvcNotFound",
                 id="ErrorPvcNotFound outranks Stopping"),
    pytest.param(vm(disks=(MISSING,)), "ErrorPvcNotFound", id="ErrorPvcNotFound outranks Running"),
    pytest.param(vm(disks=(MISSING,), **UNSCHEDULABLE), "ErrorPvcNotFound",
                 id="ErrorPvcNotFound outranks ErrorUnschedulable"),
    pytest.param(vm(disks=(MISSING, UNBOUND, PROVISIONING), created_seconds_ago=1.0, **NO_INSTANCE),
                 "ErrorPvcNotFound",
                 id="ErrorPvcNotFound outranks WaitingForVolumeBinding, Provisioning and Creating"),
    # a failed disk, a failed provisioning
    pytest.param(vm(disks=(FAILED,), provisioning_failed_message="bad profile", **NO_INSTANCE),
                 "DataVolumeError", id="DataVolumeError outranks ProvisioningFailed"),
    pytest.param(vm(running=False, disks=(FAILED,), **NO_INSTANCE), "DataVolumeError",
                 id="DataVolumeError outranks Stopped"),
    pytest.param(vm(disks=(FAILED,), host=host(alive=False)), "DataVolumeError",
                 id="DataVolumeError outranks Unknown"),
    pytest.param(vm(disks=(FAILED, UNBOUND, PROVISIONING), **UNSCHEDULABLE), "DataVolumeError",
                 id="DataVolumeError outranks ErrorUnschedulable and the disk waits"),
    pytest.param(vm(running=False, provisioning_failed_message="bad profile", **NO_INSTANCE),
                 "ProvisioningFailed", id="ProvisioningFailed outranks Stopped"),
    pytest.param(vm(provisioning_failed_message="bad profile"), "ProvisioningFailed",
                 id="ProvisioningFailed outranks Running"),
    pytest.param(vm(provisioning_failed_message="bad profile", **UNSCHEDULABLE), "ProvisioningFailed",
                 id="ProvisioningFailed outranks ErrorUnschedulable"),
    pytest.param(vm(provisioning_failed_message="bad profile", host=host(alive=False)),
                 "ProvisioningFailed", id="ProvisioningFailed outranks Unknown"),
    # a stopped VM
    pytest.param(vm(running=False, disks=(PROVISIONING,), **NO_INSTANCE), "Stopped",
                 id="Stopped outranks Provisioning (a stopped VM never shows Provisioning)"),
    pytest.param(vm(running=False, disks=(UNBOUND,), **NO_INSTANCE), "Stopped",
                 id="Stopped outranks WaitingForVolumeBinding"),
    pytest.param(vm(running=False, created_seconds_ago=1.0, **NO_INSTANCE), "Stopped",
                 id="Stopped outranks Creating (a VM created stopped)"),
    pytest.param(vm(running=False, instance=crashed(NOW + 40)), "Stopped",
                 id="Stopped outranks CrashLoopBackOff"),
    pytest.param(vm(running=False, instance=pull_failed(NOW + 20, phase="Stopped")), "Stopped",
                 id="Stopped outranks ImagePullBackOff"),
    pytest.param(vm(running=False, instance=inst("Stopped"), host=host(alive=False)), "Stopped",
                 id="Stopped outranks Unknown when the guest was last reported stopped"),
    # a lost host
    pytest.param(vm(running=False, host=host(alive=False)), "Unknown",
                 id="Unknown outranks Stopping"),
    pytest.param(vm(host=host(alive=False, draining=True)), "Unknown",
                 id="Unknown outranks Migrating"),
    pytest.param(vm(instance=inst("Paused"), host=host(alive=False)), "Unknown",
                 id="Unknown outranks Paused"),
    pytest.param(vm(instance=crashed(NOW + 40), host=host(alive=False)), "Unknown",
                 id="Unknown outranks CrashLoopBackOff"),
    pytest.param(vm(instance=pull_failed(NOW + 20), host=host(alive=False)), "Unknown",
                 id="Unknown outranks ImagePullBackOff"),
    pytest.param(vm(instance=inst("Starting"), disks=(PROVISIONING,), host=host(alive=False)),
                 "Unknown", id="Unknown outranks Provisioning and Starting"),
    # stopping
    pytest.param(vm(running=False, host=host(draining=True)), "Stopping",
                 id="Stopping outranks Migrating (a stop on a drained host stops, not moves)"),
    pytest.param(vm(running=False, **UNSCHEDULABLE), "Stopping",
                 id="Stopping outranks ErrorUnschedulable (a stopped VM never shows it)"),
    pytest.param(vm(running=False, instance=pull_failed(None)), "Stopping",
                 id="Stopping outranks ErrImagePull"),
    pytest.param(vm(running=False, disks=(PROVISIONING,), instance=inst("Pending", "h1")), "Stopping",
                 id="Stopping outranks Provisioning"),
    # migrating, paused, running
    pytest.param(vm(instance=inst("Paused"), host=host(draining=True)), "Migrating",
                 id="Migrating outranks Paused"),
    pytest.param(vm(instance=inst("Migrating"), disks=(PROVISIONING,)), "Migrating",
                 id="Migrating outranks Provisioning"),
    pytest.param(vm(instance=inst("Paused"), disks=(PROVISIONING,)), "Paused",
                 id="Paused outranks Provisioning"),
    pytest.param(vm(disks=(PROVISIONING,)), "Running",
                 id="Running outranks Provisioning (a disk settling under a running guest)"),
    pytest.param(vm(disks=(UNBOUND,)), "Running", id="Running outranks WaitingForVolumeBinding"),
    pytest.param(vm(instance=crashed(NOW + 40, phase="Running")), "Running",
                 id="Running outranks CrashLoopBackOff (the guest is up again)"),
    pytest.param(vm(instance=pull_failed(NOW + 20, phase="Running")), "Running",
                 id="Running outranks ImagePullBackOff"),
    # start problems outrank start progress
    pytest.param(vm(disks=(UNBOUND,), **UNSCHEDULABLE), "ErrorUnschedulable",
                 id="ErrorUnschedulable outranks WaitingForVolumeBinding (binding follows scheduling)"),
    pytest.param(vm(disks=(PROVISIONING,), **UNSCHEDULABLE), "ErrorUnschedulable",
                 id="ErrorUnschedulable outranks Provisioning"),
    pytest.param(vm(created_seconds_ago=1.0, **UNSCHEDULABLE), "ErrorUnschedulable",
                 id="ErrorUnschedulable outranks Creating"),
    pytest.param(vm(instance=dataclasses.replace(pull_failed(None, phase="Pending"), host=None,
                                                 unschedulable_message="0/3 hosts: 3 draining"),
                    host=None),
                 "ErrorUnschedulable",
                 id="ErrorUnschedulable outranks ErrImagePull (a stale pull error awaiting a new host)"),
    pytest.param(vm(disks=(PROVISIONING,), instance=pull_failed(None)), "ErrImagePull",
                 id="ErrImagePull outranks Provisioning"),
    pytest.param(vm(disks=(UNBOUND,), instance=pull_failed(NOW + 20)), "ImagePullBackOff",
                 id="ImagePullBackOff outranks WaitingForVolumeBinding"),
    pytest.param(vm(instance=dataclasses.replace(pull_failed(None), crash_count=2,
                                                 crash_retry_at=NOW + 40)),
                 "ErrImagePull", id="ErrImagePull outranks CrashLoopBackOff"),
    pytest.param(vm(instance=dataclasses.replace(pull_failed(NOW + 20), crash_count=2,
                                                 crash_retry_at=NOW + 40)),
                 "ImagePullBackOff", id="ImagePullBackOff outranks CrashLoopBackOff"),
    pytest.param(vm(disks=(UNBOUND, PROVISIONING), instance=crashed(NOW + 40)), "CrashLoopBackOff",
                 id="CrashLoopBackOff outranks WaitingForVolumeBinding and Provisioning"),
    # start progress
    pytest.param(vm(disks=(PROVISIONING, UNBOUND), **NO_INSTANCE), "WaitingForVolumeBinding",
                 id="WaitingForVolumeBinding outranks Provisioning (kubevirt#15883)"),
    pytest.param(vm(created_seconds_ago=1.0, disks=(UNBOUND,), **PENDING), "WaitingForVolumeBinding",
                 id="WaitingForVolumeBinding outranks Creating"),
    pytest.param(vm(instance=inst("Scheduled"), disks=(UNBOUND,)), "WaitingForVolumeBinding",
                 id="WaitingForVolumeBinding outranks Starting"),
    pytest.param(vm(created_seconds_ago=1.0, disks=(PROVISIONING,), **NO_INSTANCE), "Provisioning",
                 id="Provisioning outranks Creating"),
    pytest.param(vm(instance=inst("Scheduled"), disks=(PROVISIONING,)), "Provisioning",
                 id="Provisioning outranks Starting"),
]

ALL_ROWS = EVERY_STATUS + BOUNDARIES + PRECEDENCE


@pytest.mark.parametrize(("facts", "expected"), ALL_ROWS)
def test_status(facts: VMFacts, expected: str) -> None:
    assert vm_status(facts, NOW).status == expected


def test_every_seed_value_has_a_row_and_a_rule() -> None:
    seed = set(STATUS_VALUES)
    assert len(seed) == 19
    assert {row.values[1] for row in EVERY_STATUS} == seed
    assert len(EVERY_STATUS) == 19
    assert set(get_args(VMStatus)) == seed
    assert [r.status for r in RULES] == list(dict.fromkeys(r.status for r in RULES))
    assert {r.status for r in RULES} == seed


def test_every_precedence_id_names_statuses_in_rule_order() -> None:
    """Each 'A outranks B' row names real statuses, and A comes before B in RULES."""
    order = [r.status for r in RULES]
    for row in PRECEDENCE:
        assert row.id is not None
        winner, _, losers = row.id.partition(" outranks ")
        losers = re.sub(r"\(.*\)", "", losers)
        assert row.values[1] == winner, row.id
        for loser in re.findall(r"[A-Z][A-Za-z]+", losers):
            assert loser in order, (row.id, loser)
            assert order.index(winner) < order.index(loser), row.id


def test_the_docstring_lists_the_rules_in_order() -> None:
    doc = vmstatus.__doc__ or ""
    listed = re.findall(r"^(\d+)\. (\w+):", doc, flags=re.MULTILINE)
    assert [int(n) for n, _ in listed] == list(range(1, len(RULES) + 1))
    assert [name for _, name in listed] == [r.status for r in RULES]


# ---- Ready ------------------------------------------------------------------------------

@pytest.mark.parametrize(("facts", "expected"), ALL_ROWS)
def test_ready_follows_the_status(facts: VMFacts, expected: str) -> None:
    facts = dataclasses.replace(facts, generation=7)
    decision = vm_status(facts, NOW)
    ready = decision.ready
    assert ready.type == "Ready"
    assert ready.observed_generation == 7
    assert ready.message and ready.message[0].islower()
    if expected == "Running":
        assert (ready.status, ready.reason) == ("True", "Ready")
    elif expected == "Unknown":
        assert (ready.status, ready.reason) == ("Unknown", "Unknown")
    else:
        assert (ready.status, ready.reason) == ("False", expected)
    assert all(c.observed_generation == 7 for c in decision.conditions)
    assert decision.all_conditions[0] is ready


def test_stopped_ready_tells_how_to_start() -> None:
    ready = vm_status(vm(running=False, **NO_INSTANCE), NOW).ready
    assert (ready.status, ready.reason) == ("False", "Stopped")
    assert ready.message == "spec.running is false; set it to true to start the VM"


def test_missing_disk_message_says_what_to_do() -> None:
    ready = vm_status(vm(disks=(disk(), MISSING)), NOW).ready
    assert ready.message == 'disk "data-1" does not exist; create it or remove it from spec.diskRefs'


def test_failed_disk_message_carries_the_disk_error() -> None:
    assert "quota exceeded in se-sto-a" in vm_status(vm(disks=(FAILED,)), NOW).ready.message


def test_unschedulable_message_carries_the_scheduler_verdict() -> None:
    message = vm_status(vm(**UNSCHEDULABLE), NOW).ready.message
    assert message == "no host can run the VM: 0/3 hosts: 3 insufficient memory"


def test_crash_loop_message_shows_when_the_guest_is_retried() -> None:
    message = vm_status(vm(instance=crashed(NOW + 40)), NOW).ready.message
    assert message == ("the guest failed 3 times in a row (last: kernel panic); next start at "
                       "2023-11-14T22:14:00Z (in 40s)")


def test_image_pull_back_off_message_shows_the_error_and_the_retry_time() -> None:
    message = vm_status(vm(instance=pull_failed(NOW + 20)), NOW).ready.message
    assert PULL_ERROR in message and "failed 2 times" in message
    assert "2023-11-14T22:13:40Z (in 20s)" in message


def test_unknown_message_names_the_host_and_the_last_report() -> None:
    message = vm_status(vm(instance=inst("Paused"), host=host(alive=False)), NOW).ready.message
    assert message.startswith('host "h1" has stopped sending heartbeats')
    assert "last reported Paused" in message


# ---- every true fact is a condition ------------------------------------------------------

def by_type(conditions: tuple[Condition, ...]) -> dict[str, Condition]:
    types = [c.type for c in conditions]
    assert len(types) == len(set(types)), types
    return {c.type: c for c in conditions}


def test_a_healthy_running_vm_reports_every_fact_true() -> None:
    facts = by_type(vm_status(vm(), NOW).conditions)
    assert {t: (c.status, c.reason) for t, c in facts.items()} == {
        "DisksFound": ("True", "DisksFound"),
        "DisksHealthy": ("True", "DisksHealthy"),
        "DisksBound": ("True", "DisksBound"),
        "DisksReady": ("True", "DisksReady"),
        "ResourcesProvisioned": ("True", "Provisioned"),
        "Scheduled": ("True", "Scheduled"),
        "ImagePulled": ("True", "ImagePulled"),
        "GuestHealthy": ("True", "GuestHealthy"),
        "HostReachable": ("True", "HeartbeatReceived"),
        "HostDraining": ("False", "NotDraining"),
    }


def test_disk_and_scheduling_problems_behind_a_missing_disk_stay_visible() -> None:
    facts = vm(disks=(disk(), MISSING, FAILED, UNBOUND, PROVISIONING),
               provisioning_failed_message="bad profile", **UNSCHEDULABLE)
    decision = vm_status(facts, NOW)
    assert decision.status == "ErrorPvcNotFound"
    c = by_type(decision.conditions)
    assert (c["DisksFound"].status, c["DisksFound"].reason) == ("False", "DiskNotFound")
    assert '"data-1"' in c["DisksFound"].message
    assert (c["DisksHealthy"].status, c["DisksHealthy"].reason) == ("False", "DiskFailed")
    assert "quota exceeded" in c["DisksHealthy"].message
    assert (c["DisksBound"].status, c["DisksBound"].reason) == ("False", "WaitingForVolumeBinding")
    assert '"data-3"' in c["DisksBound"].message and '"data-2"' not in c["DisksBound"].message
    assert (c["DisksReady"].status, c["DisksReady"].reason) == ("False", "DiskNotFound")
    for name in ("data-1", "data-2", "data-3", "data-4"):
        assert f'"{name}"' in c["DisksReady"].message
    assert '"boot"' not in c["DisksReady"].message
    assert (c["ResourcesProvisioned"].status, c["ResourcesProvisioned"].reason) == \
        ("False", "ProvisioningFailed")
    assert (c["Scheduled"].status, c["Scheduled"].reason) == ("False", "Unschedulable")
    assert "insufficient memory" in c["Scheduled"].message


def test_host_and_guest_problems_behind_unknown_stay_visible() -> None:
    instance = dataclasses.replace(crashed(NOW + 40, phase="Running"), image_pull_error=PULL_ERROR,
                                   image_retry_at=NOW + 20)
    decision = vm_status(vm(instance=instance, host=host(alive=False, draining=True)), NOW)
    assert decision.status == "Unknown"
    c = by_type(decision.conditions)
    assert (c["HostReachable"].status, c["HostReachable"].reason) == ("False", "HeartbeatLost")
    assert (c["HostDraining"].status, c["HostDraining"].reason) == ("True", "Draining")
    assert (c["GuestHealthy"].status, c["GuestHealthy"].reason) == ("False", "CrashLoopBackOff")
    assert "2023-11-14T22:14:00Z" in c["GuestHealthy"].message
    assert (c["ImagePulled"].status, c["ImagePulled"].reason) == ("False", "ImagePullBackOff")
    assert (c["Scheduled"].status, c["Scheduled"].message) == ("True", 'bound to host "h1"')


def test_a_host_that_no_longer_exists_is_reported() -> None:
    c = by_type(vm_status(vm(host=None), NOW).conditions)
    assert (c["HostReachable"].status, c["HostReachable"].reason) == ("False", "HostNotFound")
    assert "HostDraining" not in c


@pytest.mark.parametrize(("instance", "expected"), [
    pytest.param(pull_failed(None), ("False", "ErrImagePull"), id="a failed pull due for retry"),
    pytest.param(inst("Pulling"), ("False", "Pulling"), id="a pull in progress"),
    pytest.param(inst("Starting"), ("True", "ImagePulled"), id="a guest booting after its pull"),
])
def test_image_pulled_condition(instance: InstanceFacts, expected: tuple[str, str]) -> None:
    c = by_type(vm_status(vm(instance=instance), NOW).conditions)
    assert (c["ImagePulled"].status, c["ImagePulled"].reason) == expected


def test_a_crash_count_without_back_off_is_still_visible() -> None:
    c = by_type(vm_status(vm(instance=crashed(NOW - 1)), NOW).conditions)
    assert (c["GuestHealthy"].status, c["GuestHealthy"].reason) == ("False", "Crashed")


def test_facts_not_yet_known_are_not_invented() -> None:
    c = by_type(vm_status(vm(**NO_INSTANCE), NOW).conditions)
    assert set(c) == {"DisksFound", "DisksHealthy", "DisksBound", "DisksReady"}
    c = by_type(vm_status(vm(disks=(MISSING,), **NO_INSTANCE), NOW).conditions)
    assert set(c) == {"DisksFound", "DisksReady"}
    c = by_type(vm_status(vm(**PENDING), NOW).conditions)
    assert (c["Scheduled"].status, c["Scheduled"].reason) == ("False", "WaitingForScheduler")
    assert not {"ImagePulled", "GuestHealthy", "HostReachable", "HostDraining"} & set(c)


# ---- the decision over time, serialisation, purity -------------------------------------

@pytest.mark.parametrize(("facts", "expected"), [
    pytest.param(vm(instance=pull_failed(NOW + 20)), NOW + 20, id="ImagePullBackOff until its retry"),
    pytest.param(vm(instance=crashed(NOW + 40)), NOW + 40, id="CrashLoopBackOff until its retry"),
    pytest.param(vm(created_seconds_ago=4.0, **NO_INSTANCE), NOW + CREATING_WINDOW_SECONDS - 4.0,
                 id="Creating until the window ends"),
    pytest.param(vm(created_seconds_ago=4.0, disks=(PROVISIONING,), **NO_INSTANCE), None,
                 id="Provisioning does not change when the creating window ends"),
    pytest.param(vm(instance=crashed(NOW + 40, phase="Running")), None,
                 id="Running does not change when an old crash back-off ends"),
    pytest.param(vm(), None, id="Running does not change by itself"),
])
def test_recheck_at(facts: VMFacts, expected: float | None) -> None:
    assert vm_status(facts, NOW).recheck_at == expected


def test_recheck_at_is_when_the_status_changes() -> None:
    facts = vm(instance=pull_failed(NOW + 20))
    at = vm_status(facts, NOW).recheck_at
    assert at is not None
    assert vm_status(facts, at - 0.001).status == "ImagePullBackOff"
    assert vm_status(facts, at).status == "ErrImagePull"


def test_condition_to_dict() -> None:
    ready = vm_status(dataclasses.replace(vm(), generation=3), NOW).ready
    assert ready.to_dict("2024-01-01T00:00:00Z") == {
        "type": "Ready", "status": "True", "observedGeneration": 3,
        "lastTransitionTime": "2024-01-01T00:00:00Z", "reason": "Ready",
        "message": 'the VM is running on host "h1"',
    }


def test_conditions_to_dicts_keeps_the_transition_time_while_the_status_holds() -> None:
    before = conditions_to_dicts(vm_status(vm(), NOW).all_conditions, "T0")
    after = conditions_to_dicts(vm_status(vm(host=host(draining=True)), NOW).all_conditions, "T1",
                                previous=before)
    times = {c["type"]: c["lastTransitionTime"] for c in after}
    assert times["Ready"] == "T1"  # True -> False
    assert times["HostDraining"] == "T1"  # False -> True
    assert times["Scheduled"] == "T0"
    assert times["DisksReady"] == "T0"


def test_facts_are_frozen_and_the_function_is_pure() -> None:
    facts = vm(instance=crashed(NOW + 40))
    with pytest.raises(dataclasses.FrozenInstanceError):
        facts.running = False  # type: ignore[misc]
    assert vm_status(facts, NOW) == vm_status(facts, NOW)


# ---- properties over arbitrary facts ----------------------------------------------------

TIMES = st.one_of(st.none(), st.sampled_from([NOW - 5, NOW, NOW + 5]))
DISKS = st.builds(
    DiskFacts, name=st.sampled_from(["boot", "data-1", "data-2"]), exists=st.booleans(),
    ready=st.booleans(), failed=st.booleans(), failure_message=st.sampled_from(["", "broken"]),
    zone=st.sampled_from([None, "se-sto-a"]), bound=st.booleans(),
)
INSTANCES = st.builds(
    InstanceFacts, phase=st.sampled_from(list(get_args(vmstatus.Phase))),
    host=st.sampled_from([None, "h1"]), unschedulable_message=st.sampled_from(["", "0/1 hosts"]),
    image_pull_error=st.sampled_from(["", "not found"]), image_pull_failures=st.integers(0, 3),
    image_retry_at=TIMES, crash_count=st.integers(0, 3), crash_retry_at=TIMES,
    message=st.sampled_from(["", "oops"]),
)
FACTS = st.builds(
    VMFacts, generation=st.integers(1, 5), running=st.booleans(), deleting=st.booleans(),
    has_finalizers_pending=st.booleans(), created_seconds_ago=st.sampled_from([0.0, 5.0, OLD]),
    provisioning_failed_message=st.sampled_from(["", "bad profile"]),
    disks=st.lists(DISKS, min_size=1, max_size=3).map(tuple),
    instance=st.one_of(st.none(), INSTANCES),
    host=st.one_of(st.none(), st.builds(HostFacts, name=st.just("h1"), alive=st.booleans(),
                                        draining=st.booleans())),
)
SPEC_ERRORS = {"ErrorPvcNotFound", "DataVolumeError", "ProvisioningFailed"}
WHILE_STOPPED = {"Stopped", "Stopping", "Unknown", "Terminating", "Deleting"} | SPEC_ERRORS


@settings(max_examples=500, deadline=None)
@given(FACTS)
def test_properties_hold_for_arbitrary_facts(facts: VMFacts) -> None:
    decision = vm_status(facts, NOW)
    assert decision.status in STATUS_VALUES
    assert (decision.ready.status == "True") == (decision.status == "Running")
    if facts.deleting:
        assert decision.status in {"Terminating", "Deleting"}
    elif not all(d.exists for d in facts.disks):
        assert decision.status == "ErrorPvcNotFound"
    if not facts.running:
        assert decision.status in WHILE_STOPPED
    if decision.status == "Creating":
        assert facts.created_seconds_ago < CREATING_WINDOW_SECONDS
    assert all(c.observed_generation == facts.generation for c in decision.all_conditions)
    assert decision.recheck_at is None or decision.recheck_at > NOW


EXCLUSIVE = [("Paused", "Running"), ("ErrImagePull", "ImagePullBackOff")]


@settings(max_examples=300, deadline=None)
@given(FACTS)
def test_rules_without_a_precedence_row_never_both_apply(facts: VMFacts) -> None:
    """The adjacent rules whose order no row decides are exclusive, so their order cannot matter."""
    rules = {r.status: r for r in RULES}
    for a, b in EXCLUSIVE:
        assert not (rules[a].applies(facts, NOW) and rules[b].applies(facts, NOW)), (a, b)
