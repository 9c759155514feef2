"""The contract between the host agent and a hypervisor: small, idempotent, reporting what is.

The agent (hosts/agent.py) owns the lifecycle (hosts/lifecycle.py); a driver only observes the
guest of an instance and does one thing when asked.  Every method may be called again after a
crash or a restart of the agent and must then do nothing more: start a running guest, stop a
stopped one, plug a plugged disk, remove what is gone.  The same contract suite
(tests/unit/test_driver_contract.py) runs against every driver.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from evroc_compute.hosts.lifecycle import HotswapWant, Observation, Pending


class DriverError(Exception):
    """An action failed; the message says why, in words a person can act on."""


class MigrationUnsupported(DriverError):
    """The driver cannot move a running guest to another host."""


class Driver(Protocol):
    def serves(self, host: dict[str, Any]) -> bool:
        """Whether this driver runs the instances bound to `host` (a Host object)."""
        ...

    async def observe(self, instance: dict[str, Any]) -> Observation:
        """What the instance's guest is doing now, and which disks are plugged into it."""
        ...

    async def pull(self, instance: dict[str, Any]) -> Pending | None:
        """Have the boot image on this host: None once it is, Pending while it arrives."""
        ...

    async def start(self, instance: dict[str, Any]) -> Pending | None:
        """Start the guest unless it runs: None once started, Pending while it must wait."""
        ...

    async def stop(self, instance: dict[str, Any]) -> None:
        """Shut the guest down (ACPI power-down, then force) unless it is off."""
        ...

    async def attach(self, instance: dict[str, Any], want: HotswapWant) -> str:
        """Plug a disk into the running guest unless it is plugged; returns its device."""
        ...

    async def detach(self, instance: dict[str, Any], serial: str) -> None:
        """Unplug the disk with `serial` unless it is unplugged."""
        ...

    async def migrate(self, instance: dict[str, Any]) -> float | None:
        """Move the running guest to spec.migrateTo: seconds still to go, None once done.

        Raises MigrationUnsupported if the driver cannot.
        """
        ...

    async def remove(self, instance: dict[str, Any]) -> None:
        """Stop the guest and release everything the host holds for the instance."""
        ...

    def security_groups(self, host: str) -> Mapping[str, Mapping[str, int]] | None:
        """The generation of each SecurityGroup programmed for `host`, by project and name.

        None: the driver has no network (the simulated fleet); its hosts report what they
        would program, at once."""
        ...

    async def run(self) -> None:
        """The driver's own housekeeping for the life of the agent (returns if it has none)."""
        ...
