"""The instance lifecycle every driver shares: each rule of `lifecycle.plan` as a row.

A row gives the instance (spec and last reported status), what the driver observed, the outcome
of the action just taken and the time; it expects the phase, the next action, the wait and the
status fields that rule is about.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from evroc_compute.api.meta import format_time
from evroc_compute.hosts import lifecycle
from evroc_compute.hosts.lifecycle import Observation, Outcome, Pending
from evroc_compute.runtime.settings import Settings

T0 = 1_800_000_000.0
SETTINGS = Settings(backoff_base=2, backoff_max=8)
WANT = {"attachment": "a", "disk": "d", "serial": "evroc-1"}


def at(seconds: float) -> str:
    return format_time(T0 + seconds)


@dataclass(frozen=True)
class Row:
    status: dict[str, Any]
    seen: Observation
    phase: str
    action: lifecycle.Action | None = None
    wait: float | None = None
    fields: dict[str, Any] = field(default_factory=dict)  # expected; None: absent
    outcome: Outcome | None = None
    running: bool = True
    disks_ready: bool = True
    message: str | None = None  # a part of the message


OFF, UP, BOOTING = Observation("off"), Observation("up"), Observation("booting", wait=0.5)

ROWS = {
    # -- the user asked for a stop
    "stop: a running guest is sent the power-down": Row(
        {"phase": "Running", "bootCount": 1, "sshEndpoint": "x"}, UP, "Stopping", "stop",
        fields={"sshEndpoint": None}, running=False, message="ACPI power-down"),
    "stop: a guest shutting down is waited for": Row(
        {"phase": "Stopping", "phaseSince": at(-1)}, Observation("stopping", wait=1.0), "Stopping",
        wait=1.0, fields={"phaseSince": at(-1)}, running=False),
    "stop: a guest that shut down is Stopped": Row(
        {"phase": "Stopping", "bootCount": 1}, OFF, "Stopped", running=False, message="shut down"),
    "stop: an instance created stopped was never started": Row(
        {}, OFF, "Stopped", running=False, message="never started"),
    "stop: a stopped crash loop ends, saying what it was": Row(
        {"phase": "Failed", "message": "boom", "bootCount": 2, "crashCount": 2, "crashRetryAt": at(5)},
        Observation("crashed"), "Stopped", fields={"crashCount": None, "crashRetryAt": None},
        running=False, message="it was Failed: boom"),
    # -- nothing starts before the disks exist
    "disks: a new instance waits for its disks": Row(
        {}, OFF, "Scheduled", disks_ready=False, message="disks"),
    "disks: a running guest is not called Scheduled": Row(
        {"phase": "Running"}, UP, "Running", disks_ready=False),
    # -- pulling the boot image
    "pull: an instance that should run pulls its image first": Row({}, OFF, "Pulling", "pull"),
    "pull: a pull under way is waited for": Row(
        {"phase": "Pulling"}, OFF, "Pulling", wait=3.0, outcome=Outcome("pull", pending=Pending("x", 3.0))),
    "pull: a failed pull is shown at once (ErrImagePull)": Row(
        {"phase": "Pulling", "phaseSince": at(-9)}, OFF, "Pulling",
        wait=lifecycle.FAILURE_REPORT_SECONDS, outcome=Outcome("pull", error="no route"),
        fields={"imagePullError": "no route", "imagePullFailures": 1, "imageRetryAt": None,
                "phaseSince": at(0)}, message="pulling the boot image failed: no route"),
    "pull: the failure stays shown for a second": Row(
        {"phase": "Pulling", "phaseSince": at(-0.25), "imagePullError": "e", "imagePullFailures": 1},
        OFF, "Pulling", wait=0.75, fields={"imageRetryAt": None}),
    "pull: then the host backs off (ImagePullBackOff)": Row(
        {"phase": "Pulling", "phaseSince": at(-1), "imagePullError": "e", "imagePullFailures": 1},
        OFF, "Pulling", wait=2.0, fields={"imageRetryAt": at(2)}),
    "pull: the back-off doubles with each failure": Row(
        {"phase": "Pulling", "phaseSince": at(-1), "imagePullError": "e", "imagePullFailures": 3},
        OFF, "Pulling", wait=8.0, fields={"imageRetryAt": at(8)}),
    "pull: during the back-off nothing is pulled": Row(
        {"phase": "Pulling", "imagePullError": "e", "imageRetryAt": at(5)}, OFF, "Pulling", wait=5.0),
    "pull: once the back-off ends the image is pulled again": Row(
        {"phase": "Pulling", "imagePullError": "e", "imageRetryAt": at(0)}, OFF, "Pulling", "pull"),
    "pull: a pulled image starts the guest and clears the failure": Row(
        {"phase": "Pulling", "imagePullError": "e", "imagePullFailures": 2, "imageRetryAt": at(0)},
        OFF, "Starting", "start", outcome=Outcome("pull"),
        fields={"bootCount": 1, "imagePullError": None, "imagePullFailures": None,
                "imageRetryAt": None}),
    # -- starting
    "start: a guest that cannot start has failed": Row(
        {"phase": "Starting", "bootCount": 1}, OFF, "Failed", wait=2.0,
        outcome=Outcome("start", error="no disk"), fields={"crashCount": 1, "crashRetryAt": at(2)},
        message="the guest could not start: no disk"),
    "start: a start that must wait says why": Row(
        {"phase": "Starting", "bootCount": 1}, OFF, "Starting",
        outcome=Outcome("start", pending=Pending("waiting for the address")),
        message="waiting for the address"),
    "start: a started guest with nothing running yet is started (again)": Row(
        {"phase": "Starting", "bootCount": 1}, OFF, "Starting", "start", fields={"bootCount": 1}),
    "start: a booting guest is Starting with the driver's words": Row(
        {"phase": "Starting"}, Observation("booting", "waiting for SSH", 0.5), "Starting", wait=0.5,
        message="waiting for SSH"),
    # -- up
    "up: a guest that is up is Running and its crash loop ends": Row(
        {"phase": "Starting", "crashCount": 2, "crashRetryAt": at(-1)},
        Observation("up", "SSH answers", 2.0, "127.0.0.1:2222"), "Running", wait=2.0,
        fields={"crashCount": None, "crashRetryAt": None, "sshEndpoint": "127.0.0.1:2222"},
        message="the guest is running; SSH answers"),
    "up: a running guest keeps what was said when it came up": Row(
        {"phase": "Running", "message": "the guest is running; SSH answered"}, UP, "Running",
        message="SSH answered"),
    "up: a guest the hypervisor paused is Paused": Row(
        {"phase": "Running"}, Observation("paused", "disk full"), "Paused", message="disk full"),
    "up: a guest shutting down by itself is waited for": Row(
        {"phase": "Running"}, Observation("stopping", wait=0.5), "Running", wait=0.5),
    "up: a guest that powered itself off is started again": Row(
        {"phase": "Running", "bootCount": 1}, OFF, "Pulling", "pull"),
    # -- crashes
    "crash: a crashed guest has Failed and the host backs off": Row(
        {"phase": "Running", "bootCount": 1, "sshEndpoint": "x"}, Observation("crashed", "QEMU exited"),
        "Failed", wait=2.0, fields={"crashCount": 1, "crashRetryAt": at(2), "sshEndpoint": None},
        message="QEMU exited"),
    "crash: the back-off doubles with each crash in a row": Row(
        {"phase": "Starting", "crashCount": 2}, Observation("crashed"), "Failed", wait=8.0,
        fields={"crashCount": 3}),
    "crash: during the back-off nothing starts": Row(
        {"phase": "Failed", "crashCount": 1, "crashRetryAt": at(1.5)}, Observation("crashed"),
        "Failed", wait=1.5),
    "crash: once the back-off ends the guest starts again": Row(
        {"phase": "Failed", "bootCount": 1, "crashCount": 1, "crashRetryAt": at(0)},
        Observation("crashed"), "Starting", "start", fields={"bootCount": 2, "crashCount": 1},
        message="again after it failed"),
}


def instance(row: Row) -> dict[str, Any]:
    return {"metadata": {"name": "vm"},
            "spec": {"running": row.running, "disksReady": row.disks_ready},
            "status": row.status}


@pytest.mark.parametrize("row", ROWS.values(), ids=ROWS.keys())
def test_rule(row: Row) -> None:
    plan = lifecycle.plan(instance(row), row.seen, T0, SETTINGS, row.outcome)
    assert (plan.status["phase"], plan.action, plan.wait) == (row.phase, row.action, row.wait)
    for name, value in row.fields.items():
        assert plan.status.get(name) == value, name
    if row.message is not None:
        assert row.message in plan.status["message"]


def test_every_phase_change_is_a_transition_with_its_message() -> None:
    plan = lifecycle.plan(instance(ROWS["crash: a crashed guest has Failed and the host backs off"]),
                          Observation("crashed", "QEMU exited"), T0, SETTINGS)
    assert plan.transition == lifecycle.Transition("Failed", "QEMU exited")
    failed_pull = ROWS["pull: a failed pull is shown at once (ErrImagePull)"]
    plan = lifecycle.plan(instance(failed_pull), OFF, T0, SETTINGS, failed_pull.outcome)
    assert plan.transition is not None and plan.transition.reason == "ErrImagePull"
    steady = lifecycle.plan(instance(Row({"phase": "Running", "message": "m"}, UP, "Running")), UP, T0,
                            SETTINGS)
    assert steady.transition is None


def test_a_phase_keeps_its_start_time_until_it_changes() -> None:
    status = lifecycle.Status({"phase": "Starting", "phaseSince": "2026-01-01T00:00:00.000000Z"},
                              now=1_800_000_000.0)
    status.move("Starting", "still booting")
    assert status.new["phaseSince"] == "2026-01-01T00:00:00.000000Z"
    status.move("Running", "up")
    assert status.new["phase"] == "Running" and status.new["phaseSince"].startswith("2027-")


@pytest.mark.parametrize(("seen", "entry"), [
    (Observation("up", plugged={"evroc-1": "/dev/sda"}), {"device": "/dev/sda", "attached": True}),
    (Observation("paused", plugged={"evroc-1": "/dev/sda"}), {"device": "/dev/sda", "attached": True}),
    (Observation("booting"), {"attached": False, "message": lifecycle.NOT_RUNNING}),
    (OFF, {"attached": False, "message": lifecycle.NOT_RUNNING}),
], ids=["up", "paused", "booting", "off"])
def test_hotswap_disks_are_plugged_only_while_the_guest_is_up(seen: Observation,
                                                              entry: dict[str, Any]) -> None:
    obj = {"metadata": {"name": "vm"}, "spec": {"running": True, "disksReady": True, "hotswap": [WANT]},
           "status": {"phase": "Running"}}
    assert lifecycle.plan(obj, seen, T0, SETTINGS).status["hotswap"] == [{**WANT, **entry}]


def test_a_disk_that_could_not_be_plugged_says_why_and_no_wanted_disk_shows_none() -> None:
    [entry] = lifecycle.hotswap_entries([WANT], {}, {"evroc-1": "no such file"}, up=True)
    assert entry["attached"] is False and entry["message"] == "hot-plugging the disk failed: no such file"
    obj = {"metadata": {"name": "vm"}, "spec": {"running": True, "disksReady": True},
           "status": {"phase": "Running", "hotswap": [{**WANT, "attached": True}]}}
    assert "hotswap" not in lifecycle.plan(obj, UP, T0, SETTINGS).status


@pytest.mark.parametrize(("status", "remaining", "phase", "wait", "message"), [
    ({"phase": "Running"}, 5.0, "Migrating", 5.0, 'migrating to host "h2"'),
    ({"phase": "Migrating", "message": "m"}, 2.0, "Migrating", 2.0, "m"),
    ({"phase": "Migrating"}, None, "Running", None, 'migrated from host "h1"'),
], ids=["begins", "goes-on", "done"])
def test_a_live_migration_is_migrating_until_the_driver_is_done(
        status: dict[str, Any], remaining: float | None, phase: str, wait: float | None,
        message: str) -> None:
    obj = {"metadata": {"name": "vm"}, "spec": {"host": "h1", "migrateTo": "h2"}, "status": status}
    plan = lifecycle.migrate(obj, remaining, T0)
    assert (plan.status["phase"], plan.wait, plan.status["message"]) == (phase, wait, message)
