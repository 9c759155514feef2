"""An instance's life on its host, as one pure function: `plan(instance, seen, now, settings)`.

Why this module exists: every driver (the simulated fleet, QEMU, later others) must report the
same lifecycle: Scheduled -> Pulling -> Starting -> Running, Stopping -> Stopped, a crash as
Failed followed by a doubling back-off (CrashLoopBackOff), a failed image pull shown once
(ErrImagePull) and then retried after a doubling back-off (ImagePullBackOff), a paused guest,
hot-plugged disks that are unplugged while the guest is down.  Those semantics live here once;
a driver only says what *is* (an `Observation`) and does one idempotent thing when asked
(`Action`), like kine's LogStructured over its Log interface.

`plan` reads the instance (spec: what should be; status: what the host last reported), what
the driver observed, the outcome of the action just taken (if any) and the time; it returns
the whole next status, the one action to take next, how long until something changes by
itself, and the transition it decided (a reason and a message, for events).  It does no I/O
and reads no clock, so every rule below is a row in a table-driven test.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

from evroc_compute.api.meta import format_time, parse_time
from evroc_compute.runtime.settings import Settings

FAILURE_REPORT_SECONDS = 1.0  # a failed pull is shown this long (ErrImagePull) before backing off
NOT_RUNNING = "the VM is not running; the disk is plugged in when it starts"

GuestState = Literal["off", "booting", "up", "paused", "stopping", "crashed"]
"""off: no guest (never started, shut down, or powered itself off); booting: started, not yet
up; up: the guest runs (for QEMU: its SSH server answers); paused: frozen by the hypervisor;
stopping: shutting down; crashed: the guest or its hypervisor process died."""

Action = Literal["pull", "start", "stop"]


class HotswapWant(TypedDict):
    """One entry of an instance's spec.hotswap: a disk to plug while the guest runs."""

    attachment: str
    disk: str
    serial: str


class HotswapEntry(TypedDict, total=False):
    """One entry of an instance's status.hotswap."""

    attachment: str
    disk: str
    serial: str
    device: str
    attached: bool
    message: str


@dataclass(frozen=True)
class Observation:
    """What the driver found on the host."""

    state: GuestState
    detail: str = ""  # the driver's words for it: why it crashed, what runs it, why it paused
    wait: float | None = None  # seconds until the driver should look again; None: on events only
    endpoint: str | None = None  # where the guest's SSH server is reached, if the driver knows
    plugged: Mapping[str, str] = field(default_factory=dict)  # hot-plugged disks: serial -> device


@dataclass(frozen=True)
class Pending:
    """An action that is not done yet (a pull under way, a start waiting for its address)."""

    why: str
    wait: float | None = None  # seconds until it may be done; None: when something changes


@dataclass(frozen=True)
class Outcome:
    """What the action just taken came to: done, failed (`error`), or `pending`."""

    action: Action
    error: str | None = None
    pending: Pending | None = None


@dataclass(frozen=True)
class Transition:
    """A change of phase worth telling a person about (an event's reason and message)."""

    reason: str
    message: str


@dataclass(frozen=True)
class Plan:
    status: dict[str, Any]  # the instance's whole next status
    action: Action | None = None  # the one thing the driver does next
    wait: float | None = None  # seconds until something changes by itself; None: on events only
    transition: Transition | None = None


class Status:
    """A status being written: the last report plus this decision's changes."""

    def __init__(self, old: Mapping[str, Any], now: float) -> None:
        self.new: dict[str, Any] = dict(old)
        self.now = now
        self.transition: Transition | None = None

    @property
    def phase(self) -> str:
        return str(self.new.get("phase") or "Scheduled")

    def in_phase_for(self) -> float:
        return self.now - (parse_time(self.new.get("phaseSince")) or self.now)

    def move(self, phase: str, message: str, reason: str | None = None) -> None:
        """Enter `phase` (its start time kept if it is the phase already) with `message`."""
        if phase != self.phase or reason is not None:
            self.transition = Transition(reason or phase, message)
        if phase != self.phase:
            self.new["phaseSince"] = format_time(self.now)
        self.new["phase"], self.new["message"] = phase, message

    def drop(self, *fields: str) -> None:
        for name in fields:
            self.new.pop(name, None)

    def count(self, name: str) -> int:
        return int(self.new.get(name) or 0)

    def plan(self, action: Action | None = None, wait: float | None = None) -> Plan:
        return Plan(self.new, action, wait, self.transition)


def plan(instance: Mapping[str, Any], seen: Observation, now: float, settings: Settings,
         outcome: Outcome | None = None) -> Plan:
    """The next status of `instance` and the next action, from what the driver `seen`."""
    spec = instance.get("spec") or {}
    s = Status(instance.get("status") or {}, now)
    if spec.get("running") is False:
        result = _power_off(s, seen)
    elif not spec.get("disksReady"):
        if s.phase in ("Scheduled", "Pending"):
            s.move("Scheduled", "waiting for the VM's disks to be provisioned")
        result = s.plan()
    elif outcome is not None and outcome.action == "pull":
        result = _pulled(s, outcome, settings)
    elif outcome is not None and outcome.action == "start" and outcome.error is not None:
        result = _crashed(s, f"the guest could not start: {outcome.error}", settings)
    elif outcome is not None and outcome.pending is not None:
        s.new["message"] = outcome.pending.why
        result = s.plan(wait=outcome.pending.wait)
    else:
        result = _run(s, seen, settings)
    return with_hotswap(result, spec.get("hotswap") or [], seen.plugged, {},
                        up=seen.state in ("up", "paused"))


def _power_off(s: Status, seen: Observation) -> Plan:
    s.drop("sshEndpoint", "crashCount", "crashRetryAt")
    if seen.state in ("booting", "up", "paused"):
        s.move("Stopping", "ACPI power-down sent; waiting for the guest to shut down"
               + (f" ({seen.detail})" if seen.detail else ""))
        return s.plan("stop")
    if seen.state == "stopping":
        if s.phase != "Stopping":
            s.move("Stopping", "the guest is shutting down")
        return s.plan(wait=seen.wait)
    if s.phase == "Stopping":
        s.move("Stopped", "the guest shut down")
    elif not s.count("bootCount"):
        s.move("Stopped", "the guest was never started")
    elif s.phase != "Stopped":
        s.move("Stopped", f"the guest is stopped (it was {s.phase}: {s.new.get('message')})")
    return s.plan()


def _run(s: Status, seen: Observation, settings: Settings) -> Plan:
    """The start sequence and the running guest."""
    if seen.endpoint:
        s.new["sshEndpoint"] = seen.endpoint
    if seen.state == "paused":
        s.move("Paused", seen.detail or "the hypervisor paused the guest")
        return s.plan(wait=seen.wait)
    if seen.state == "up":
        if seen.detail or s.phase != "Running":  # else keep what was said when it came up
            s.move("Running", "the guest is running" + (f"; {seen.detail}" if seen.detail else ""))
        s.drop("crashCount", "crashRetryAt")
        return s.plan(wait=seen.wait)
    if seen.state == "booting":
        if s.phase != "Starting":
            s.move("Starting", seen.detail or "the guest is booting")
        elif seen.detail:
            s.new["message"] = seen.detail
        return s.plan(wait=seen.wait)
    if seen.state == "stopping":
        return s.plan(wait=seen.wait)  # it powers itself off; started again once it is off
    s.drop("sshEndpoint")
    if seen.state == "crashed" and s.phase != "Failed":
        return _crashed(s, seen.detail or "the guest exited unexpectedly", settings)
    if s.phase == "Failed":  # crashed, or could not start: start again after the back-off
        retry_at = parse_time(s.new.get("crashRetryAt"))
        if retry_at is not None and s.now < retry_at:
            return s.plan(wait=retry_at - s.now)
        return _start(s, "starting the guest again after it failed")
    if s.phase == "Starting":  # started, nothing runs yet: its start waits, or it powered off
        return s.plan("start")
    if s.phase == "Pulling" and s.new.get("imagePullError"):
        return _pull_backoff(s, settings)
    if s.phase != "Pulling":
        s.move("Pulling", "pulling the boot image")
    return s.plan("pull")


def _pull_backoff(s: Status, settings: Settings) -> Plan:
    """After a failed pull: show it, then wait a doubling back-off, then pull again."""
    retry_at = parse_time(s.new.get("imageRetryAt"))
    if retry_at is None:  # the failure is being shown (ErrImagePull); then back off
        shown = s.in_phase_for()
        if shown < FAILURE_REPORT_SECONDS:
            return s.plan(wait=FAILURE_REPORT_SECONDS - shown)
        wait = settings.backoff(s.count("imagePullFailures") or 1)
        s.new["imageRetryAt"] = format_time(s.now + wait)
        s.transition = Transition("ImagePullBackOff", f"pulling the boot image again in {wait:g} s")
        return s.plan(wait=wait)
    if s.now < retry_at:
        return s.plan(wait=retry_at - s.now)
    return s.plan("pull")


def _pulled(s: Status, outcome: Outcome, settings: Settings) -> Plan:
    if outcome.error is not None:
        s.new["imagePullError"] = outcome.error
        s.new["imagePullFailures"] = s.count("imagePullFailures") + 1
        s.new["phaseSince"] = format_time(s.now)
        s.drop("imageRetryAt")
        s.move("Pulling", f"pulling the boot image failed: {outcome.error}", reason="ErrImagePull")
        return s.plan(wait=FAILURE_REPORT_SECONDS)
    if outcome.pending is not None:
        return s.plan(wait=outcome.pending.wait)
    s.drop("imagePullError", "imagePullFailures", "imageRetryAt")
    return _start(s, "booting the guest")


def _start(s: Status, message: str) -> Plan:
    s.move("Starting", message)
    s.new["bootCount"] = s.count("bootCount") + 1
    return s.plan("start")


def _crashed(s: Status, why: str, settings: Settings) -> Plan:
    crashes = s.count("crashCount") + 1
    wait = settings.backoff(crashes)
    s.move("Failed", why)
    s.new.update(crashCount=crashes, crashRetryAt=format_time(s.now + wait))
    s.drop("sshEndpoint")
    return s.plan(wait=wait)


def migrate(instance: Mapping[str, Any], remaining: float | None, now: float) -> Plan:
    """A live migration to spec.migrateTo: Migrating until the driver says it is done."""
    s = Status(instance.get("status") or {}, now)
    target, source = instance["spec"]["migrateTo"], instance["spec"].get("host")
    if s.phase != "Migrating":
        s.move("Migrating", f'migrating to host "{target}"')
        return s.plan(wait=remaining or 0.0)
    if remaining:
        return s.plan(wait=remaining)
    s.move("Running", f'migrated from host "{source}"')
    return s.plan()


def with_hotswap(result: Plan, wanted: list[HotswapWant], plugged: Mapping[str, str],
                 failures: Mapping[str, str], *, up: bool) -> Plan:
    """`result` with its status.hotswap (absent when no disk is wanted)."""
    entries = hotswap_entries(wanted, plugged, failures, up=up)
    status = {k: v for k, v in result.status.items() if k != "hotswap"}
    if entries:
        status["hotswap"] = entries
    return Plan(status, result.action, result.wait, result.transition)


def hotswap_entries(wanted: list[HotswapWant], plugged: Mapping[str, str],
                    failures: Mapping[str, str], *, up: bool) -> list[HotswapEntry]:
    """status.hotswap: each wanted disk plugged (with its device) while the guest is up."""
    entries: list[HotswapEntry] = []
    for want in wanted:
        entry: HotswapEntry = {"attachment": want["attachment"], "disk": want["disk"],
                               "serial": want["serial"]}
        device = plugged.get(want["serial"])
        if not up:
            entries.append({**entry, "attached": False, "message": NOT_RUNNING})
        elif device is not None:
            entries.append({**entry, "device": device, "attached": True})
        else:
            why = failures.get(want["serial"], "waiting for the disk to be plugged in")
            entries.append({**entry, "attached": False,
                            "message": f"hot-plugging the disk failed: {why}"
                            if want["serial"] in failures else why})
    return entries
