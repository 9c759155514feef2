"""A VirtualMachine's status, computed as a pure function of facts.

Why this module exists: KubeVirt computes its printable status with an ordered first-match
list spread over one long function, and the order has caused real bugs (Provisioning shown
for a volume that was only waiting for binding, kubevirt#15883; transient ErrorUnschedulable
while a claim was unbound, #7697; Provisioning on stopped VMs, PR #6605 and #6713).  Here the
facts are plain frozen dataclasses, the order is one explicit table (`RULES`), every place in
it carries a reason below, and the table is tested pair by pair.  Nothing here reads a clock
or does I/O: the caller passes `now` (seconds since the epoch), so the same facts always give
the same decision.

The precedence hides nothing: besides the one status shown, `VMStatusDecision.conditions`
lists every fact that was evaluated (disks found / healthy / bound / ready, provisioned,
scheduled, image pulled, guest healthy, host reachable, host draining) as its own condition,
so a missing disk does not hide that the instance is also unschedulable.

Meanings chosen where the seed is terse:

- Terminating: deletion has begun and the VM still has something to give back: an instance
  that is being shut down, or cleanup finalizers for its associated resources (addresses,
  disk-usage records, hot-swap attachments).  Deleting: nothing is left but the removal of the
  object itself (its instance is gone and its resources are released).
- Creating: a new VM (created less than `CREATING_WINDOW_SECONDS` ago) that wants to run and
  has not reached its first milestone: no instance yet, or an instance nobody has reported on
  (the scheduler has given no verdict, or its host has not reported yet), and no disk that
  reports it is being provisioned.  After the window the same facts read as Starting (e.g. a
  VM started again after a stop, or a scheduler that is slow) or Provisioning.  It is the
  status a new VM is created with, so its first moments cost no write.
- ErrImagePull: the boot image pull failed and the next attempt is due (no retry time, or it
  has passed); ImagePullBackOff: it failed and the host waits until `image_retry_at > now`.
- CrashLoopBackOff: the guest failed `crash_count` times in a row and the host waits until
  `crash_retry_at > now` before starting it again (the time is in the message); once the time
  has passed the VM is Starting again.
- Unknown: the instance is bound to a host that stopped sending heartbeats or no longer exists.
- Migrating: the instance reports Migrating, or its host is being drained while the guest is up.
- ProvisioningFailed: the controller could not prepare the VM's cluster resources and said why
  (e.g. the VMVirtualResources profile does not exist).

Precedence, first match wins (the test checks that this list and `RULES` agree):

1. Terminating: deletion is the user's last word and outranks every problem; while an instance
   or a resource is still being given back, "being torn down" is the truth.
2. Deleting: deletion with nothing left to tear down; it still outranks every problem (a missing
   disk no longer matters to a VM that is going away).
3. ErrorPvcNotFound: a referenced disk that does not exist is a spec error only the user can fix,
   in any power state, so it outranks everything but deletion.
4. DataVolumeError: a failed disk also needs the user, in any power state; below a missing disk,
   which must exist before its health means anything.
5. ProvisioningFailed: a VM-level failure to prepare resources; below the disk errors, which name
   the object to fix and can be its cause.
6. Stopped: a VM that should be stopped and has no live instance is Stopped, never Provisioning,
   WaitingForVolumeBinding or ErrorUnschedulable (KubeVirt PR #6605, #6713); above Unknown, since
   a silent host cannot have started a guest that was last reported stopped.
7. Unknown: a lost host makes every last report stale, so it outranks Stopping, Migrating, Paused,
   Running and every start problem.
8. Stopping: the user asked for a stop (or the guest is shutting down): it outranks a migration
   (the guest is stopped, not moved) and every start problem (the pending, unschedulable instance
   of a VM being stopped is Stopping, not ErrorUnschedulable).
9. Migrating: a move in progress, or one forced by a drained host, is what happens to the VM now,
   even if it is paused.
10. Paused: the guest is up but frozen (a reported phase, exclusive with Running).
11. Running: the guest is up; a disk still settling (e.g. being resized) or an old crash count no
    longer describes the VM and stays visible in the conditions.
12. ErrorUnschedulable: no host fits; above the disk waits because a problem outranks progress and
    an unbound disk is bound only after scheduling (the scheduler never rejects a VM for an unbound
    disk, so this is never the transient of kubevirt#7697).
13. ErrImagePull: the boot image pull failed and is retried now; a start problem outranks
    progress, and pulling happens only after scheduling.
14. ImagePullBackOff: the same failure while the host waits for the retry time; exclusive with
    ErrImagePull by `image_retry_at > now`.
15. CrashLoopBackOff: the guest keeps failing and the host waits; below the image problems since
    the earliest failing step of the start sequence is the current blocker.
16. WaitingForVolumeBinding: a disk without a zone waits for the VM's placement; above
    Provisioning because such a disk is not being provisioned (kubevirt#15883) and cannot be
    until it is bound.
17. Provisioning: a bound disk is still being prepared; above Creating and Starting because it is
    the specific thing the start waits for.  A disk the Disk controller has not reported on yet
    (just created) is news only once the VM is no longer new: until then the VM is Creating.
18. Creating: the first moment of a new VM, before any milestone; every evaluated fact above is
    more specific.
19. Starting: everything else that wants to run and is not up yet: being scheduled, preparing,
    pulling, booting, restarting after a stop or a crash.

Ready follows evroc: True with reason Ready only for Running; Unknown for Unknown; otherwise
False with the status value as reason (so Stopped gives reason Stopped).  Every condition
carries the VM's metadata.generation as observedGeneration.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal, TypedDict

VMStatus = Literal[
    "Creating", "ProvisioningFailed", "Deleting", "Stopped", "Provisioning", "Starting",
    "Running", "Paused", "Stopping", "Terminating", "CrashLoopBackOff", "Migrating", "Unknown",
    "ErrorUnschedulable", "ErrImagePull", "ImagePullBackOff", "ErrorPvcNotFound",
    "DataVolumeError", "WaitingForVolumeBinding",
]
Phase = Literal[
    "Pending", "Scheduled", "Pulling", "Starting", "Running", "Paused", "Stopping", "Stopped",
    "Failed", "Migrating",
]
ConditionStatus = Literal["True", "False", "Unknown"]


# ---- the status payload (what status of a VirtualMachine holds) ------------------------

class ConditionEntry(TypedDict):
    type: str
    status: ConditionStatus
    observedGeneration: int
    lastTransitionTime: str
    reason: str
    message: str


class Membership(TypedDict):
    name: str
    state: str  # Active, or Pending while the group does not exist


class SecurityGroups(TypedDict):
    securityGroupMemberships: list[Membership]


class Networking(TypedDict, total=False):
    privateIPv4Address: str
    publicIPv4Address: str
    sshEndpoint: str
    securityGroups: SecurityGroups


class Placement(TypedDict):
    zone: str


class AttachedDisk(TypedDict):
    name: str
    device: str


class HotswapAttachmentStatus(TypedDict, total=False):
    attachment: str
    disk: str
    attached: bool
    serial: str
    device: str
    message: str


class VirtualMachineStatusBody(TypedDict, total=False):
    virtualMachineStatus: VMStatus
    conditions: list[ConditionEntry]
    networking: Networking
    placement: Placement
    attachedDisks: list[AttachedDisk]
    hotswapDiskAttachments: list[HotswapAttachmentStatus]

CREATING_WINDOW_SECONDS: Final = 10.0
"""How long a new VM without any milestone reads as Creating rather than Starting."""

# Instance phases in which the guest is not running and will not run by itself.
_DOWN_PHASES: Final = frozenset({"Stopped", "Failed"})
# Instance phases in which the guest is up.
_UP_PHASES: Final = frozenset({"Running", "Paused", "Migrating"})
# Instance phases that can only be reached after the boot image was pulled.
_PULLED_PHASES: Final = frozenset({"Starting", "Running", "Paused", "Stopping", "Migrating"})


# ---- facts ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class DiskFacts:
    """One disk the VM references in spec.diskRefs, as the Disk object reports it.

    `exists` is False when no Disk of that name exists (then the other fields mean nothing);
    `bound` is False while the disk has no zone yet (it takes the VM's zone at first use);
    `failed` with `failure_message` says provisioning the disk failed for good; `reported` is
    False while the Disk controller has not given the disk a Ready condition yet.
    """

    name: str
    exists: bool
    ready: bool
    failed: bool
    failure_message: str = ""
    zone: str | None
    bound: bool
    reported: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceFacts:
    """The VM's VirtualMachineInstance (the run), as the scheduler and host agent report it.

    `host` is the host the instance is bound to (None until scheduled); `unschedulable_message`
    is the scheduler's verdict while unbound.  `image_pull_error` is the error of the current
    boot image pull (cleared by the agent when a pull succeeds), `image_pull_failures` how often
    it failed, `image_retry_at` when the agent tries again.  `crash_count` counts consecutive
    guest failures and `crash_retry_at` is when the agent starts the guest again.
    """

    phase: Phase
    host: str | None
    unschedulable_message: str = ""
    image_pull_error: str = ""
    image_pull_failures: int = 0
    image_retry_at: float | None = None
    crash_count: int = 0
    crash_retry_at: float | None = None
    message: str = ""
    ssh_endpoint: str | None = None  # where the host forwards the guest's SSH server
    disks: tuple[AttachedDisk, ...] = ()  # the instance's disks and their devices
    hotswap: tuple[Mapping[str, Any], ...] = ()  # the hot-plugged disks as the host reports them


@dataclass(frozen=True, slots=True, kw_only=True)
class HostFacts:
    """The Host the instance is bound to: `alive` while its heartbeat is fresh."""

    name: str
    alive: bool
    draining: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class HotswapFacts:
    """A HotswapDiskAttachment naming the VM: `problem` says why it may not hold its disk."""

    attachment: str
    disk: str
    serial: str
    problem: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkFacts:
    """The VM's addresses: `private_address` as allocated in its zone's subnet, or
    `address_problem` saying why none could be (the subnet is exhausted)."""

    zone: str | None = None
    private_address: str | None = None
    address_problem: str = ""
    public_address: str | None = None
    # (group, whether it exists): the default group always does.
    security_groups: tuple[tuple[str, bool], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class VMFacts:
    """Everything the status depends on.

    `running` is spec.running; `deleting` says metadata.deletionTimestamp is set;
    `has_finalizers_pending` says cleanup finalizers for the VM's associated resources
    (addresses, disk-usage records, hot-swap attachments) are still on the object;
    `created_seconds_ago` is now minus metadata.creationTimestamp; `provisioning_failed_message`
    is set when the controller could not prepare the VM's resources.  `host` describes the host
    named by `instance.host`, and is None when there is no instance, it is unbound, or that
    host no longer exists.
    """

    generation: int
    running: bool
    deleting: bool
    has_finalizers_pending: bool
    created_seconds_ago: float
    provisioning_failed_message: str = ""
    disks: tuple[DiskFacts, ...]
    instance: InstanceFacts | None
    host: HostFacts | None
    network: NetworkFacts = NetworkFacts()
    hotswaps: tuple[HotswapFacts, ...] = ()
    previous_conditions: tuple[Mapping[str, Any], ...] = ()  # status.conditions as shown now


# ---- the decision -----------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class Condition:
    """A condition following the Kubernetes API conventions (lastTransitionTime added on output)."""

    type: str
    status: ConditionStatus
    reason: str
    message: str
    observed_generation: int

    def to_dict(self, now_rfc3339: str) -> ConditionEntry:
        return {
            "type": self.type,
            "status": self.status,
            "observedGeneration": self.observed_generation,
            "lastTransitionTime": now_rfc3339,
            "reason": self.reason,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class VMStatusDecision:
    """The status to show, the Ready condition, and every evaluated fact as a condition.

    `recheck_at` is the earliest time at which the same facts give a different status (a
    back-off or the Creating window ends), for the controller to requeue; None if never.
    `body` is the whole status object to write.
    """

    status: VMStatus
    ready: Condition
    conditions: tuple[Condition, ...]
    recheck_at: float | None = None
    body: VirtualMachineStatusBody = dataclasses.field(default_factory=lambda: VirtualMachineStatusBody())

    @property
    def all_conditions(self) -> tuple[Condition, ...]:
        """Ready first, then the facts: what status.conditions should hold."""
        return (self.ready, *self.conditions)


def conditions_to_dicts(conditions: Iterable[Condition], now_rfc3339: str,
                        previous: Iterable[Mapping[str, Any]] = ()) -> list[dict[str, Any]]:
    """Conditions as status.conditions entries, keeping lastTransitionTime while status is unchanged."""
    return [dict(entry) for entry in _condition_entries(conditions, now_rfc3339, previous)]


def _condition_entries(conditions: Iterable[Condition], now_rfc3339: str,
                       previous: Iterable[Mapping[str, Any]] = ()) -> list[ConditionEntry]:
    before = {c.get("type"): c for c in previous}
    out = []
    for condition in conditions:
        entry = condition.to_dict(now_rfc3339)
        old = before.get(condition.type)
        if old is not None and old.get("status") == condition.status and old.get("lastTransitionTime"):
            entry["lastTransitionTime"] = old["lastTransitionTime"]
        out.append(entry)
    return out


# ---- small readings of the facts --------------------------------------------------------

def _rfc3339(t: float) -> str:
    return datetime.fromtimestamp(math.floor(t), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _at(t: float, now: float) -> str:
    return f"{_rfc3339(t)} (in {math.ceil(t - now)}s)"


def _times(n: int) -> str:
    return "once" if n == 1 else f"{n} times"


def _missing(f: VMFacts) -> tuple[DiskFacts, ...]:
    return tuple(d for d in f.disks if not d.exists)


def _failed(f: VMFacts) -> tuple[DiskFacts, ...]:
    return tuple(d for d in f.disks if d.exists and d.failed)


def _unbound(f: VMFacts) -> tuple[DiskFacts, ...]:
    return tuple(d for d in f.disks if d.exists and not d.failed and not d.bound)


def _unready(f: VMFacts) -> tuple[DiskFacts, ...]:
    return tuple(d for d in f.disks if d.exists and not d.failed and d.bound and not d.ready)


def _describe_disk(d: DiskFacts) -> str:
    if not d.exists:
        return f'disk "{d.name}" does not exist; create it or remove it from spec.diskRefs'
    if d.failed:
        why = f": {d.failure_message}" if d.failure_message else ""
        return f'disk "{d.name}" failed{why}; re-create it or remove it from spec.diskRefs'
    if not d.bound:
        return (f'disk "{d.name}" has no zone yet; it is bound to the VM\'s zone when the VM '
                f"is scheduled")
    if not d.ready:
        where = f' in zone "{d.zone}"' if d.zone else ""
        return f'disk "{d.name}" is being provisioned{where}'
    return f'disk "{d.name}" is ready'


def _describe_disks(disks: Iterable[DiskFacts]) -> str:
    return "; ".join(_describe_disk(d) for d in disks)


def _on_host(f: VMFacts) -> str:
    host = f.instance.host if f.instance is not None else None
    return f' on host "{host}"' if host else ""


def _host_lost(f: VMFacts) -> bool:
    inst = f.instance
    return inst is not None and inst.host is not None and (f.host is None or not f.host.alive)


def _draining(f: VMFacts) -> bool:
    return f.instance is not None and f.instance.host is not None and f.host is not None \
        and f.host.draining


def _phase(f: VMFacts) -> Phase | None:
    return f.instance.phase if f.instance is not None else None


def _image_backing_off(f: VMFacts, now: float) -> bool:
    inst = f.instance
    return inst is not None and bool(inst.image_pull_error) and inst.image_retry_at is not None \
        and inst.image_retry_at > now


def _crash_backing_off(f: VMFacts, now: float) -> bool:
    inst = f.instance
    return inst is not None and inst.crash_count > 0 and inst.crash_retry_at is not None \
        and inst.crash_retry_at > now


def _last(inst: InstanceFacts) -> str:
    return f" (last: {inst.message})" if inst.message else ""


# ---- the rules, in precedence order -----------------------------------------------------

@dataclass(frozen=True, slots=True)
class Rule:
    """One row of the precedence table: the status, when it applies, and what to tell the user."""

    status: VMStatus
    applies: Callable[[VMFacts, float], bool]
    explain: Callable[[VMFacts, float], str]


def _terminating(f: VMFacts, now: float) -> bool:
    return f.deleting and (f.instance is not None or f.has_finalizers_pending)


def _terminating_msg(f: VMFacts, now: float) -> str:
    parts = []
    if f.instance is not None:
        parts.append(f"its instance{_on_host(f)} is shutting down")
    if f.has_finalizers_pending:
        parts.append("its addresses and disk attachments are being released")
    return "the VM is being deleted; " + " and ".join(parts)


def _deleting_msg(f: VMFacts, now: float) -> str:
    return ("the VM is being deleted; its instance and resources are released and the object "
            "is removed when its last finalizer is cleared")


def _pvc_not_found_msg(f: VMFacts, now: float) -> str:
    return _describe_disks(_missing(f))


def _data_volume_error_msg(f: VMFacts, now: float) -> str:
    return _describe_disks(_failed(f))


def _provisioning_failed_msg(f: VMFacts, now: float) -> str:
    return f"could not prepare the VM's resources: {f.provisioning_failed_message}"


def _stopped(f: VMFacts, now: float) -> bool:
    return not f.running and (f.instance is None or f.instance.phase in _DOWN_PHASES)


def _stopped_msg(f: VMFacts, now: float) -> str:
    return "spec.running is false; set it to true to start the VM"


def _unknown_msg(f: VMFacts, now: float) -> str:
    assert f.instance is not None and f.instance.host is not None
    host = f.instance.host
    why = f'host "{host}" no longer exists' if f.host is None \
        else f'host "{host}" has stopped sending heartbeats'
    return (f"{why}; the VM was last reported {f.instance.phase} and its current state cannot be "
            f"obtained")


def _stopping(f: VMFacts, now: float) -> bool:
    return f.instance is not None and (not f.running or f.instance.phase == "Stopping")


def _stopping_msg(f: VMFacts, now: float) -> str:
    if not f.running:
        return f"spec.running is false; the VM is shutting down{_on_host(f)}"
    return (f"the guest is shutting down{_on_host(f)}; it will be started again because "
            f"spec.running is true")


def _migrating(f: VMFacts, now: float) -> bool:
    return _phase(f) == "Migrating" or (_draining(f) and _phase(f) in ("Running", "Paused"))


def _migrating_msg(f: VMFacts, now: float) -> str:
    assert f.instance is not None
    host = f.instance.host
    if f.instance.phase != "Migrating":
        return f'host "{host}" is being drained; the VM will be migrated to another host'
    drained = " because the host is being drained" if _draining(f) else ""
    return f'the VM is migrating away from host "{host}"{drained}'


def _paused_msg(f: VMFacts, now: float) -> str:
    return f"the VM is paused{_on_host(f)}; unpause it to resume"


def _running_msg(f: VMFacts, now: float) -> str:
    return f"the VM is running{_on_host(f)}"


def _unschedulable(f: VMFacts, now: float) -> bool:
    inst = f.instance
    return inst is not None and inst.host is None and bool(inst.unschedulable_message)


def _unschedulable_msg(f: VMFacts, now: float) -> str:
    assert f.instance is not None
    return f"no host can run the VM: {f.instance.unschedulable_message}"


def _err_image_pull(f: VMFacts, now: float) -> bool:
    inst = f.instance
    return inst is not None and bool(inst.image_pull_error) and not _image_backing_off(f, now)


def _err_image_pull_msg(f: VMFacts, now: float) -> str:
    assert f.instance is not None
    inst = f.instance
    failures = f" (failed {_times(inst.image_pull_failures)})" if inst.image_pull_failures else ""
    return f"cannot pull the boot image{_on_host(f)}: {inst.image_pull_error}; retrying now{failures}"


def _image_pull_back_off_msg(f: VMFacts, now: float) -> str:
    inst = f.instance
    assert inst is not None and inst.image_retry_at is not None
    failures = f"failed {_times(inst.image_pull_failures)}; " if inst.image_pull_failures else ""
    return (f"cannot pull the boot image{_on_host(f)}: {inst.image_pull_error}; {failures}"
            f"next attempt at {_at(inst.image_retry_at, now)}")


def _crash_loop_msg(f: VMFacts, now: float) -> str:
    inst = f.instance
    assert inst is not None and inst.crash_retry_at is not None
    return (f"the guest failed {_times(inst.crash_count)} in a row{_last(inst)}; next start at "
            f"{_at(inst.crash_retry_at, now)}")


def _waiting_for_binding_msg(f: VMFacts, now: float) -> str:
    return _describe_disks(_unbound(f))


def _provisioning_msg(f: VMFacts, now: float) -> str:
    return _describe_disks(_unready(f))


def _fresh(f: VMFacts) -> bool:
    return f.created_seconds_ago < CREATING_WINDOW_SECONDS


def _provisioning(f: VMFacts, now: float) -> bool:
    unready = _unready(f)
    return any(d.reported for d in unready) or (bool(unready) and not _fresh(f))


def _creating(f: VMFacts, now: float) -> bool:
    inst = f.instance
    return _fresh(f) and (inst is None or inst.phase == "Pending")


def _creating_msg(f: VMFacts, now: float) -> str:
    if f.instance is None:
        unready = _unready(f)
        if unready:
            return f"the VM was accepted; {_describe_disks(unready)}"
        return "the VM was accepted; its instance is being created"
    if f.instance.host is None:
        return "the VM was accepted; a host is being chosen for it"
    return f'the VM was accepted and scheduled to host "{f.instance.host}"; the host is preparing it'


def _starting_msg(f: VMFacts, now: float) -> str:
    inst = f.instance
    if inst is None:
        return "spec.running is true; the VM's instance is being created"
    if inst.phase in _DOWN_PHASES:
        if inst.crash_count:
            return f"the guest failed {_times(inst.crash_count)} in a row{_last(inst)}; starting it again"
        why = f": {inst.message}" if inst.message else ""
        return (f"the instance is {inst.phase.lower()}{why}; starting it again because "
                f"spec.running is true")
    if inst.host is None:
        return "waiting for the scheduler to choose a host"
    if inst.phase == "Pulling":
        return f'pulling the boot image on host "{inst.host}"'
    if inst.phase == "Starting":
        return f'the guest is booting on host "{inst.host}"'
    return f'scheduled to host "{inst.host}"; preparing the instance'


def _always(f: VMFacts, now: float) -> bool:
    return True


RULES: Final[tuple[Rule, ...]] = (
    Rule("Terminating", _terminating, _terminating_msg),
    Rule("Deleting", lambda f, now: f.deleting, _deleting_msg),
    Rule("ErrorPvcNotFound", lambda f, now: bool(_missing(f)), _pvc_not_found_msg),
    Rule("DataVolumeError", lambda f, now: bool(_failed(f)), _data_volume_error_msg),
    Rule("ProvisioningFailed", lambda f, now: bool(f.provisioning_failed_message),
         _provisioning_failed_msg),
    Rule("Stopped", _stopped, _stopped_msg),
    Rule("Unknown", lambda f, now: _host_lost(f), _unknown_msg),
    Rule("Stopping", _stopping, _stopping_msg),
    Rule("Migrating", _migrating, _migrating_msg),
    Rule("Paused", lambda f, now: _phase(f) == "Paused", _paused_msg),
    Rule("Running", lambda f, now: _phase(f) == "Running", _running_msg),
    Rule("ErrorUnschedulable", _unschedulable, _unschedulable_msg),
    Rule("ErrImagePull", _err_image_pull, _err_image_pull_msg),
    Rule("ImagePullBackOff", _image_backing_off, _image_pull_back_off_msg),
    Rule("CrashLoopBackOff", _crash_backing_off, _crash_loop_msg),
    Rule("WaitingForVolumeBinding", lambda f, now: bool(_unbound(f)), _waiting_for_binding_msg),
    Rule("Provisioning", _provisioning, _provisioning_msg),
    Rule("Creating", _creating, _creating_msg),
    Rule("Starting", _always, _starting_msg),
)
"""The precedence table: the first rule that applies decides the status."""


# ---- the fact conditions ----------------------------------------------------------------

def _fact_conditions(f: VMFacts, now: float) -> tuple[Condition, ...]:
    out: list[Condition] = []

    def add(type_: str, ok: bool, reason: str, message: str) -> None:
        out.append(Condition(type=type_, status="True" if ok else "False", reason=reason,
                             message=message, observed_generation=f.generation))

    existing = tuple(d for d in f.disks if d.exists)
    if f.disks:
        missing = _missing(f)
        add("DisksFound", not missing, "DiskNotFound" if missing else "DisksFound",
            _describe_disks(missing) if missing else f"all {len(f.disks)} referenced disks exist")
    if existing:
        failed = _failed(f)
        add("DisksHealthy", not failed, "DiskFailed" if failed else "DisksHealthy",
            _describe_disks(failed) if failed else "no referenced disk has failed")
        unbound = tuple(d for d in existing if not d.bound)
        add("DisksBound", not unbound, "WaitingForVolumeBinding" if unbound else "DisksBound",
            _describe_disks(unbound) if unbound else "every existing disk has a zone")
    if f.disks:
        not_ready = tuple(d for d in f.disks if not (d.exists and d.bound and d.ready and not d.failed))
        reason = ("DiskNotFound" if _missing(f) else "DiskFailed" if _failed(f)
                  else "WaitingForVolumeBinding" if _unbound(f) else "DiskProvisioning")
        add("DisksReady", not not_ready, reason if not_ready else "DisksReady",
            _describe_disks(not_ready) if not_ready else f"all {len(f.disks)} referenced disks are ready")

    inst = f.instance
    if f.provisioning_failed_message:
        add("ResourcesProvisioned", False, "ProvisioningFailed", _provisioning_failed_msg(f, now))
    elif inst is not None:
        add("ResourcesProvisioned", True, "Provisioned", "the VM's instance was created")

    if inst is None:
        return tuple(out)

    if inst.host is not None:
        add("Scheduled", True, "Scheduled", f'bound to host "{inst.host}"')
    elif inst.unschedulable_message:
        add("Scheduled", False, "Unschedulable", _unschedulable_msg(f, now))
    else:
        add("Scheduled", False, "WaitingForScheduler", "waiting for the scheduler to choose a host")

    if inst.image_pull_error:
        if _image_backing_off(f, now):
            add("ImagePulled", False, "ImagePullBackOff", _image_pull_back_off_msg(f, now))
        else:
            add("ImagePulled", False, "ErrImagePull", _err_image_pull_msg(f, now))
    elif inst.phase == "Pulling":
        add("ImagePulled", False, "Pulling", f"pulling the boot image{_on_host(f)}")
    elif inst.phase in _PULLED_PHASES:
        add("ImagePulled", True, "ImagePulled", "the boot image is in place")

    if inst.crash_count > 0:
        if _crash_backing_off(f, now):
            add("GuestHealthy", False, "CrashLoopBackOff", _crash_loop_msg(f, now))
        else:
            add("GuestHealthy", False, "Crashed",
                f"the guest failed {_times(inst.crash_count)} in a row{_last(inst)}")
    elif inst.phase in _UP_PHASES:
        add("GuestHealthy", True, "GuestHealthy", "the guest has not failed since it started")

    if inst.host is not None:
        if f.host is None:
            add("HostReachable", False, "HostNotFound", f'host "{inst.host}" no longer exists')
        elif not f.host.alive:
            add("HostReachable", False, "HeartbeatLost",
                f'host "{f.host.name}" has stopped sending heartbeats')
        else:
            add("HostReachable", True, "HeartbeatReceived", f'host "{f.host.name}" is sending heartbeats')
        if f.host is not None:
            add("HostDraining", f.host.draining, "Draining" if f.host.draining else "NotDraining",
                f'host "{f.host.name}" is being drained; its VMs are moved elsewhere' if f.host.draining
                else f'host "{f.host.name}" is not being drained')
    return tuple(out)


def _first_rule(f: VMFacts, now: float) -> Rule:
    return next(r for r in RULES if r.applies(f, now))  # the last rule always applies


def _recheck_at(f: VMFacts, now: float) -> float | None:
    """The first deadline in the facts after which the same facts pick another rule."""
    inst = f.instance
    deadlines = [now + CREATING_WINDOW_SECONDS - f.created_seconds_ago]
    if inst is not None:
        deadlines += [t for t in (inst.image_retry_at, inst.crash_retry_at) if t is not None]
    current = _first_rule(f, now).status
    for t in sorted(t for t in deadlines if t > now):
        later = dataclasses.replace(f, created_seconds_ago=f.created_seconds_ago + (t - now))
        if _first_rule(later, t).status != current:
            return t
    return None


# ---- the function -----------------------------------------------------------------------

def vm_status(facts: VMFacts, now: float) -> VMStatusDecision:
    """The status a VirtualMachine shows for these facts at time `now` (seconds since the epoch)."""
    rule = _first_rule(facts, now)
    status = rule.status
    ready_status: ConditionStatus = "True" if status == "Running" else \
        "Unknown" if status == "Unknown" else "False"
    ready = Condition(type="Ready", status=ready_status,
                      reason="Ready" if status == "Running" else status,
                      message=rule.explain(facts, now), observed_generation=facts.generation)
    conditions = _fact_conditions(facts, now)
    return VMStatusDecision(status=status, ready=ready, conditions=conditions,
                            recheck_at=_recheck_at(facts, now),
                            body=_body(facts, status, (ready, *conditions), now))


# ---- the whole status object ------------------------------------------------------------

# Instance phases in which the guest holds its disks and its SSH endpoint.
_ATTACHED_PHASES: Final = frozenset({"Running", "Paused", "Migrating", "Stopping"})
_ENDPOINT_PHASES: Final = frozenset({"Running", "Paused", "Stopping"})


def _body(f: VMFacts, status: VMStatus, conditions: tuple[Condition, ...],
          now: float) -> VirtualMachineStatusBody:
    """status of the VirtualMachine: the status value, conditions, addresses, disks."""
    net, inst = f.network, f.instance
    if net.address_problem:
        conditions = (*conditions, Condition(
            type="AddressAssigned", status="False", reason="SubnetExhausted",
            message=f"no private address is free in zone {net.zone}: {net.address_problem}; one "
                    "is assigned when a VM in the zone is deleted",
            observed_generation=f.generation))
    body: VirtualMachineStatusBody = {
        "virtualMachineStatus": status,
        "conditions": _condition_entries(conditions, _rfc3339(now), f.previous_conditions)}
    networking: Networking = {}
    if net.private_address and not f.deleting:
        networking["privateIPv4Address"] = net.private_address
    if net.public_address and not f.deleting:
        networking["publicIPv4Address"] = net.public_address
    if net.security_groups and net.private_address and not f.deleting:  # once on a network
        networking["securityGroups"] = {"securityGroupMemberships": [
            {"name": name, "state": "Active" if exists else "Pending"}
            for name, exists in net.security_groups]}
    if inst is not None and inst.ssh_endpoint and inst.phase in _ENDPOINT_PHASES:
        networking["sshEndpoint"] = inst.ssh_endpoint
    if networking:
        body["networking"] = networking
    if net.zone:
        body["placement"] = {"zone": net.zone}
    if inst is not None and inst.host and inst.phase in _ATTACHED_PHASES:
        body["attachedDisks"] = list(inst.disks)
    swaps = [_hotswap_entry(h, inst) for h in f.hotswaps]
    if swaps:
        body["hotswapDiskAttachments"] = swaps
    return body


def _hotswap_entry(h: HotswapFacts, inst: InstanceFacts | None) -> HotswapAttachmentStatus:
    """One attachment as the VM shows it: plugged (serial, device), or why not."""
    seen = next((e for e in (inst.hotswap if inst is not None else ())
                 if e.get("attachment") == h.attachment), {})
    entry: HotswapAttachmentStatus = {"attachment": h.attachment, "disk": h.disk,
                                      "attached": bool(seen.get("attached"))}
    if seen.get("attached"):
        entry["serial"] = str(seen.get("serial") or h.serial)
        if seen.get("device"):
            entry["device"] = str(seen["device"])
    elif h.problem is not None:
        entry["message"] = h.problem
    else:
        entry["message"] = str(seen.get("message") or (
            "waiting for the VM to run" if inst is None else "the host is hot-plugging the disk"))
    return entry
