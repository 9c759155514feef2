"""The host monitor: turns lease renewals into each Host's Ready condition, and tells who cares.

A host is alive while its Lease (`host-<name>`) was renewed within the heartbeat timeout.  Time
alone can make a host die, so the monitor looks every second; when a host's liveness changes it
writes the Host's Ready condition and calls `on_change(host name)` (the VM controller requeues
the VMs on it, which turn Unknown or recover; the scheduler tries unplaced instances again).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from evroc_compute.api.infra import HOST
from evroc_compute.api.meta import now_rfc3339, parse_time
from evroc_compute.client.base import Client, ClientError
from evroc_compute.controllers.vmstatus import Condition, conditions_to_dicts
from evroc_compute.runtime.settings import Settings
from evroc_compute.runtime.world import World, condition, get

log = logging.getLogger(__name__)


class HostMonitor:
    def __init__(self, client: Client, world: World, settings: Settings,
                 on_change: Callable[[str], None], *,
                 wall: Callable[[], float] = time.time) -> None:
        self.client, self.world, self.settings = client, world, settings
        self.on_change, self.wall = on_change, wall
        self._alive: dict[str, bool] = {}

    def _ready(self, host: dict[str, Any], alive: bool) -> Condition:
        name = host["metadata"]["name"]
        if alive:
            return Condition(type="Ready", status="True", reason="HeartbeatReceived",
                             message=f'lease "host-{name}" is being renewed',
                             observed_generation=host["metadata"].get("generation", 1))
        return Condition(type="Ready", status="Unknown", reason="HeartbeatLost",
                         message=f'lease "host-{name}" was not renewed within '
                                 f"{self.settings.heartbeat_timeout:g}s; the host's VMs are Unknown",
                         observed_generation=host["metadata"].get("generation", 1))

    def _new(self, host: dict[str, Any], name: str, now: float) -> bool:
        """Registered less than a heartbeat timeout ago and never heard from."""
        created = parse_time(host["metadata"].get("creationTimestamp")) or 0.0
        return self.world.leases.get("", f"host-{name}") is None and \
            now - created < self.settings.heartbeat_timeout

    async def check(self) -> None:
        now = self.wall()
        for (_, name), host in list(self.world.hosts.cache.items()):
            alive = self.world.host_alive(name, now, self.settings.heartbeat_timeout)
            shown = (condition(host, "Ready") or {}).get("status")
            if shown is None and not alive and self._new(host, name, now):
                continue  # not lost: its agent has not had the time to send a first heartbeat
            if self._alive.get(name) != alive:
                self._alive[name] = alive
                self.on_change(name)
            if shown != ("True" if alive else "Unknown"):
                ready = self._ready(host, alive)
                status = {**(host.get("status") or {}), "conditions": conditions_to_dicts(
                    [ready], now_rfc3339(), get(host, "status", "conditions") or [])}
                try:
                    await self.client.update(HOST, {**host, "status": status}, "status")
                except ClientError as problem:
                    if not problem.conflict and not problem.not_found:
                        raise  # a conflict: the next check sees the newer host

    async def run(self, interval: float = 1.0) -> None:
        while True:
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("host monitor pass failed")
            await asyncio.sleep(interval)
