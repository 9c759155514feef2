"""The simulated driver: a hypervisor that is a function of time, the fleet's timing and faults.

It keeps no guests: what a simulated host "runs" follows from what it last reported (the
instance's status: phase and since when, boots so far) and the clock, so a restarted agent finds
every simulated guest where it left it.  Pulling takes `timing.pull`, booting `timing.boot`,
shutting down `timing.stop`, a live migration `timing.migrate`.  Faults come from the instance's
annotations (copied there from the VM and its boot image by the VM controller):

- `fault.evroc-compute.io/image-pull: MESSAGE`: every pull of the boot image fails with MESSAGE.
- `fault.evroc-compute.io/crash-on-boot: N`: the first N boots of the instance fail.
- `fault.evroc-compute.io/io-error: MESSAGE`: the guest is paused by the hypervisor, as QEMU does
  with werror=stop when a disk write fails (e.g. the backing storage is full); removing the
  annotation resumes it.

Hot-plugged disks get the next free SCSI device and keep it while plugged.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from evroc_compute.api.infra import FAULT_PREFIX
from evroc_compute.api.meta import parse_time
from evroc_compute.hosts.driver import DriverError
from evroc_compute.hosts.lifecycle import HotswapWant, Observation, Pending
from evroc_compute.runtime.controller import Key
from evroc_compute.runtime.settings import Settings
from evroc_compute.runtime.world import get, key_of

FAULT_IMAGE_PULL = FAULT_PREFIX + "image-pull"
FAULT_CRASH_ON_BOOT = FAULT_PREFIX + "crash-on-boot"
FAULT_IO_ERROR = FAULT_PREFIX + "io-error"
SCSI_DEVICES = tuple(f"/dev/sd{chr(ord('a') + i)}" for i in range(26))


def _faults(instance: dict[str, Any]) -> dict[str, str]:
    return {k: v for k, v in (instance["metadata"].get("annotations") or {}).items()
            if k.startswith(FAULT_PREFIX)}


def _crashes_wanted(faults: dict[str, str]) -> int:
    try:
        return max(0, int(faults.get(FAULT_CRASH_ON_BOOT, "0")))
    except ValueError:
        return 0


class SimDriver:
    """The simulated hosts: every Host with `driver: sim` (the default)."""

    def __init__(self, settings: Settings, *, wall: Callable[[], float] = time.time) -> None:
        self.settings, self.wall = settings, wall
        self._plugged: dict[Key, dict[str, str]] = {}  # serial -> device, per running guest

    def serves(self, host: dict[str, Any]) -> bool:
        return get(host, "spec", "driver") in (None, "sim")

    def _elapsed(self, instance: dict[str, Any]) -> tuple[str, float]:
        """The reported phase and how long the host has been in it."""
        status = instance.get("status") or {}
        now = self.wall()
        return str(status.get("phase") or "Scheduled"), now - (parse_time(status.get("phaseSince")) or now)

    async def observe(self, instance: dict[str, Any]) -> Observation:
        timing, faults = self.settings.timing, _faults(instance)
        phase, elapsed = self._elapsed(instance)
        boots = int(get(instance, "status", "bootCount") or 0)
        if phase == "Starting" and elapsed < timing.boot:
            return Observation("booting", wait=timing.boot - elapsed)
        if phase == "Starting" and boots <= _crashes_wanted(faults):
            return Observation("crashed", f"the guest exited during boot, boot {boots or 1} "
                                          f"({FAULT_CRASH_ON_BOOT})")
        if phase in ("Starting", "Running", "Paused", "Migrating"):
            plugged = self._plugged_now(instance)
            if FAULT_IO_ERROR in faults:
                return Observation("paused", "the hypervisor paused the guest after a disk I/O "
                                             f"error: {faults[FAULT_IO_ERROR] or 'injected fault'}",
                                   plugged=plugged)
            return Observation("up", plugged=plugged)
        if phase == "Stopping" and elapsed < timing.stop:
            return Observation("stopping", wait=timing.stop - elapsed)
        if phase == "Failed":
            return Observation("crashed", str(get(instance, "status", "message") or ""))
        return Observation("off")

    def _plugged_now(self, instance: dict[str, Any]) -> dict[str, str]:
        """The disks plugged into a running guest; after a restart, as last reported."""
        key = key_of(instance)
        if key not in self._plugged:
            self._plugged[key] = {e["serial"]: e["device"] for e in
                                  get(instance, "status", "hotswap") or [] if e.get("attached")}
        return dict(self._plugged[key])

    async def pull(self, instance: dict[str, Any]) -> Pending | None:
        phase, elapsed = self._elapsed(instance)
        failed_before = bool(get(instance, "status", "imagePullError"))
        if phase == "Pulling" and elapsed < self.settings.timing.pull and not failed_before:
            return Pending("pulling the boot image", self.settings.timing.pull - elapsed)
        faults = _faults(instance)
        if FAULT_IMAGE_PULL in faults:
            raise DriverError(faults[FAULT_IMAGE_PULL] or "the image could not be fetched")
        return None

    async def start(self, instance: dict[str, Any]) -> Pending | None:
        if get(instance, "status", "phase") not in ("Running", "Paused", "Migrating"):
            self._plugged[key_of(instance)] = {}  # a fresh guest has nothing plugged in
        return None

    async def stop(self, instance: dict[str, Any]) -> None:
        self._plugged.pop(key_of(instance), None)

    async def attach(self, instance: dict[str, Any], want: HotswapWant) -> str:
        plugged = self._plugged.setdefault(key_of(instance), {})
        if want["serial"] not in plugged:
            used = set(plugged.values())
            plugged[want["serial"]] = next(d for d in SCSI_DEVICES if d not in used)
        return plugged[want["serial"]]

    async def detach(self, instance: dict[str, Any], serial: str) -> None:
        self._plugged.get(key_of(instance), {}).pop(serial, None)

    async def migrate(self, instance: dict[str, Any]) -> float | None:
        phase, elapsed = self._elapsed(instance)
        if phase != "Migrating":
            return self.settings.timing.migrate
        remaining = self.settings.timing.migrate - elapsed
        return remaining if remaining > 0 else None

    async def remove(self, instance: dict[str, Any]) -> None:
        self._plugged.pop(key_of(instance), None)

    def security_groups(self, host: str) -> None:
        return None  # no network: the agent reports what the host would program

    async def run(self) -> None:
        return None
