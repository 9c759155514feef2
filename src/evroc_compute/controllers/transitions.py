"""Which Events a status change is: a pure function from the old and new status of an object.

The events of an object are its transition history, told with the reasons and messages of
its status, so `kubectl describe` and `kubectl events` can never disagree with `kubectl get`:

- A VirtualMachine: every change of `virtualMachineStatus` is one event (reason from
  `VM_STATUS_EVENTS`, message = the Ready condition's message), plus the milestones its
  conditions record on the way (Scheduled, Pulling, Pulled, Crashed) and each hot-swap disk
  plugged in or out.
- Every other kind: a change of its Ready condition's reason is one event (reason from the
  kind's table, message = the condition's message), and a Disk's DeletionBlocked condition.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

EventKind = Literal["Normal", "Warning"]


@dataclass(frozen=True, slots=True)
class Occurrence:
    type: EventKind
    reason: str
    message: str


N: Final = "Normal"
W: Final = "Warning"

VM_STATUS_EVENTS: Final[Mapping[str, tuple[EventKind, str]]] = {
    "Creating": (N, "Creating"),
    "Provisioning": (N, "Provisioning"),
    "WaitingForVolumeBinding": (N, "WaitingForVolumeBinding"),
    "Starting": (N, "Starting"),
    "Running": (N, "Started"),
    "Stopping": (N, "Stopping"),
    "Stopped": (N, "Stopped"),
    "Migrating": (N, "Migrating"),
    "Terminating": (N, "Terminating"),
    "Deleting": (N, "Deleting"),
    "Paused": (W, "Paused"),
    "Unknown": (W, "HostUnreachable"),
    "CrashLoopBackOff": (W, "BackOff"),
    "ErrImagePull": (W, "ErrImagePull"),
    "ImagePullBackOff": (W, "BackOff"),
    "ErrorUnschedulable": (W, "FailedScheduling"),
    "ErrorPvcNotFound": (W, "ErrorPvcNotFound"),
    "DataVolumeError": (W, "DataVolumeError"),
    "ProvisioningFailed": (W, "ProvisioningFailed"),
}
"""VM status -> (event type, event reason); every status value of the seed has one."""

# (condition type, condition reason) -> the milestone event it is, when the condition changes
# to it. The status changes already tell every problem; these tell the steps in between.
VM_MILESTONES: Final[Mapping[tuple[str, str], tuple[EventKind, str]]] = {
    ("Scheduled", "Scheduled"): (N, "Scheduled"),
    ("ImagePulled", "Pulling"): (N, "Pulling"),
    ("ImagePulled", "ImagePulled"): (N, "Pulled"),
    ("GuestHealthy", "Crashed"): (W, "Crashed"),
}

# Ready condition reason -> event, per kind (reasons not listed are not events).
READY_EVENTS: Final[Mapping[str, Mapping[str, tuple[EventKind, str]]]] = {
    "Disk": {"Provisioning": (N, "Provisioning"), "Ready": (N, "Provisioned"),
             "ProvisioningFailed": (W, "ProvisioningFailed"),
             "WaitingForFirstConsumer": (N, "WaitingForFirstConsumer")},
    "HotswapDiskAttachment": {"Attached": (N, "HotswapAttached"),
                              "VMNotFound": (W, "FailedAttach"),
                              "DiskNotFound": (W, "FailedAttach"),
                              "DiskNotReady": (W, "FailedAttach"),
                              "DiskInUse": (W, "FailedAttach"),
                              "ZoneMismatch": (W, "FailedAttach")},
    "Host": {"HeartbeatReceived": (N, "HostReady"), "HeartbeatLost": (W, "HostUnreachable")},
    "PublicIP": {"Allocated": (N, "Allocated"), "PoolExhausted": (W, "PoolExhausted")},
    "PlacementGroup": {"Ready": (N, "Ready"), "TooManyMembers": (W, "TooManyMembers")},
}


def _conditions(status: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    return {c["type"]: c for c in (status or {}).get("conditions") or []
            if isinstance(c, Mapping) and "type" in c}


def _changed(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    return old is None or (old.get("reason"), old.get("message")) != \
        (new.get("reason"), new.get("message"))


def vm_events(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> list[Occurrence]:
    out: list[Occurrence] = []
    before, after = _conditions(old), _conditions(new)
    for (type_, reason), (event_type, event_reason) in VM_MILESTONES.items():
        condition = after.get(type_)
        if condition is not None and condition.get("reason") == reason and \
                _changed(before.get(type_), condition):
            out.append(Occurrence(event_type, event_reason, str(condition.get("message", ""))))
    was, now = (old or {}).get("virtualMachineStatus"), (new or {}).get("virtualMachineStatus")
    if now and now != was and now in VM_STATUS_EVENTS:
        event_type, reason = VM_STATUS_EVENTS[now]
        if now == "Running" and was == "Migrating":
            reason = "Migrated"
        out.append(Occurrence(event_type, reason, str(after.get("Ready", {}).get("message", ""))))
    out += _hotswap_events(old, new)
    return out


def _hotswap_events(old: Mapping[str, Any] | None,
                    new: Mapping[str, Any] | None) -> list[Occurrence]:
    def attached(status: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
        return {e["attachment"]: e for e in (status or {}).get("hotswapDiskAttachments") or []
                if isinstance(e, Mapping) and e.get("attached") and "attachment" in e}

    before, after = attached(old), attached(new)
    out = [Occurrence(N, "HotswapAttached",
                      f'disk "{e.get("disk")}" attached by {name} as {e.get("device")} '
                      f'(serial {e.get("serial")})')
           for name, e in after.items() if name not in before]
    out += [Occurrence(N, "HotswapDetached", f'disk "{e.get("disk")}" detached ({name})')
            for name, e in before.items() if name not in after]
    return out


def ready_events(kind: str, old: Mapping[str, Any] | None,
                 new: Mapping[str, Any] | None) -> list[Occurrence]:
    table = READY_EVENTS.get(kind, {})
    before, after = _conditions(old), _conditions(new)
    out: list[Occurrence] = []
    ready, was = after.get("Ready"), before.get("Ready")
    if ready is not None and ready.get("reason") in table and \
            (was is None or was.get("reason") != ready.get("reason")):
        event_type, reason = table[str(ready["reason"])]
        out.append(Occurrence(event_type, reason, str(ready.get("message", ""))))
    if kind == "HotswapDiskAttachment" and was is not None and was.get("reason") == "Attached" \
            and (ready is None or ready.get("reason") != "Attached"):
        out.append(Occurrence(N, "HotswapDetached", str((ready or {}).get("message", ""))))
    blocked = after.get("DeletionBlocked")
    if blocked is not None and blocked.get("status") == "True" and \
            _changed(before.get("DeletionBlocked"), blocked):
        out.append(Occurrence(W, "DeletionBlocked", str(blocked.get("message", ""))))
    return out


def status_events(kind: str, old: Mapping[str, Any] | None,
                  new: Mapping[str, Any] | None) -> list[Occurrence]:
    """The events that the change of an object's status from `old` to `new` is."""
    if old == new:
        return []
    return vm_events(old, new) if kind == "VirtualMachine" else ready_events(kind, old, new)
