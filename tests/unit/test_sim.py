"""The simulated host: each fault and timing gives the phases a real host would report.

Each step is one pass of the agent over the instance (`converge`) with the simulated driver.
"""

from __future__ import annotations

from typing import Any

import pytest

from evroc_compute.hosts.agent import Converged, converge
from evroc_compute.hosts.drivers.sim import SimDriver
from evroc_compute.runtime.settings import Settings, Timing

T0 = 1_800_000_000.0


async def _no_report(instance: dict[str, Any], status: dict[str, Any]) -> None:
    return None


async def step(obj: dict[str, Any], now: float, settings: Settings,
               driver: SimDriver | None = None) -> Converged:
    """One pass of the agent over `obj` at `now`."""
    driver = driver or SimDriver(settings)
    driver.wall = lambda: now
    return await converge(driver, obj, now, settings, _no_report)


def instance(status: dict[str, Any] | None = None, running: bool = True, disks_ready: bool = True,
             **faults: str) -> dict[str, Any]:
    annotations = {f"fault.evroc-compute.io/{k.replace('_', '-')}": v for k, v in faults.items()}
    return {"metadata": {"name": "vm", "annotations": annotations},
            "spec": {"running": running, "disksReady": disks_ready,
                     "hotswap": [{"attachment": "a", "disk": "d", "serial": "evroc-1"}]},
            "status": status or {}}


async def run(obj: dict[str, Any], settings: Settings, until: float, start: float = T0) -> list[str]:
    """Step the instance as the agent would (at each wait) and return the phases it reports."""
    now, phases, driver = start, [], SimDriver(settings)
    while now <= until:
        result = await step(obj, now, settings, driver)
        obj = {**obj, "status": result.status}
        if not phases or phases[-1] != result.status["phase"]:
            phases.append(result.status["phase"])
        if result.wait is None:
            break
        now += result.wait
    return phases


IMMEDIATE = Settings(timing=Timing(), backoff_base=1, backoff_max=4)
BOOTING = Settings(timing=Timing(boot=1), backoff_base=1, backoff_max=4)
SLOW = Settings(timing=Timing(pull=3, boot=5, stop=2), backoff_base=1, backoff_max=4)


@pytest.mark.parametrize("settings,obj,phases", [
    (IMMEDIATE, instance(), ["Running"]),
    (SLOW, instance(), ["Pulling", "Starting", "Running"]),
    (IMMEDIATE, instance(disks_ready=False), ["Scheduled"]),
    (IMMEDIATE, instance(running=False), ["Stopped"]),
    (SLOW, instance({"phase": "Running"}, running=False), ["Stopping", "Stopped"]),
    (BOOTING, instance(crash_on_boot="2"),
     ["Starting", "Failed", "Starting", "Failed", "Starting", "Running"]),
    (IMMEDIATE, instance({"phase": "Running"}, io_error="disk full"), ["Paused"]),
], ids=["immediate", "timed", "disks-not-ready", "created-stopped", "stop", "crash-twice", "io-error"])
async def test_phases(settings: Settings, obj: dict[str, Any], phases: list[str]) -> None:
    assert await run(obj, settings, T0 + 60) == phases


async def test_a_failed_pull_is_reported_then_backs_off_doubling_and_keeps_trying() -> None:
    obj = instance(image_pull="no route to registry")
    first = (await step(obj, T0, IMMEDIATE)).status
    assert first["imagePullError"] == "no route to registry" and "imageRetryAt" not in first
    backing_off = await step({**obj, "status": first}, T0 + 1, IMMEDIATE)
    assert backing_off.status["imageRetryAt"] and backing_off.wait == 1
    second = (await step({**obj, "status": backing_off.status}, T0 + 2, IMMEDIATE)).status
    assert second["imagePullFailures"] == 2
    third = await step({**obj, "status": second}, T0 + 3, IMMEDIATE)
    assert third.wait == 2  # doubled


async def test_hotswap_disks_are_plugged_only_while_running_and_keep_their_device() -> None:
    running = (await step(instance(), T0, IMMEDIATE)).status
    assert running["hotswap"] == [{"attachment": "a", "disk": "d", "serial": "evroc-1",
                                   "device": "/dev/sda", "attached": True}]
    stopped = (await step(instance(running, running=False), T0, IMMEDIATE)).status
    assert stopped["hotswap"][0]["attached"] is False and "not running" in stopped["hotswap"][0]["message"]
