"""The host agent: runs the instances bound to its hosts and keeps the hosts' heartbeats.

For the simulated fleet one agent serves every `driver: sim` host; each instance is moved by
`drivers.sim.step` and its status reported back through the API.  The agent renews one Lease
per host (`host-<name>`) every heartbeat interval; a host annotated
`fault.evroc-compute.io/heartbeat: lost` goes silent: no renewals and no reports, as a host that
lost its network would (its VMs turn Unknown once the lease expires).  Deleting an instance
stops its guest, then the agent removes the instance's finalizer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from evroc_compute.api.infra import FAULT_PREFIX, VIRTUAL_MACHINE_INSTANCE
from evroc_compute.api.meta import format_time, parse_time
from evroc_compute.client.base import Client
from evroc_compute.hosts.drivers import sim
from evroc_compute.hosts.reports import heartbeats, renew_lease, report
from evroc_compute.runtime.controller import Controller, Key, Result, WorkQueue
from evroc_compute.runtime.settings import Settings
from evroc_compute.runtime.world import (
    FINALIZER_INSTANCE,
    World,
    deleting,
    get,
    key_of,
)
from evroc_compute.runtime.writes import set_finalizer

log = logging.getLogger(__name__)
FAULT_HEARTBEAT = FAULT_PREFIX + "heartbeat"


class SimAgent:
    def __init__(self, client: Client, world: World, settings: Settings, *,
                 wall: Callable[[], float] = time.time, workers: int = 4) -> None:
        self.client, self.world, self.settings, self.wall = client, world, settings, wall
        self.queue = WorkQueue()
        self.controller = Controller("sim-agent", self, self.queue, workers=workers)
        self._host_specs: dict[str, Any] = {}
        world.instances.add_handler(self._on_instance)
        world.hosts.add_handler(self._on_host)

    def _mine(self, host_name: str | None) -> bool:
        host = self.world.hosts.get("", host_name or "")
        return host is not None and get(host, "spec", "driver") in (None, "sim")

    def _silent(self, host_name: str | None) -> bool:
        host = self.world.hosts.get("", host_name or "")
        return (get(host, "metadata", "annotations") or {}).get(FAULT_HEARTBEAT) == "lost"

    def _on_instance(self, event: str, instance: dict[str, Any]) -> None:
        if event != "DELETED" and self._mine(get(instance, "spec", "host")):
            self.queue.add(key_of(instance))

    def _on_host(self, event: str, host: dict[str, Any]) -> None:
        # A host that comes back (or is drained) has instances to look at again; the
        # scheduler's writes to its allocations change nothing here.
        name = host["metadata"]["name"]
        seen = (host.get("spec"), host["metadata"].get("annotations"))
        if self._host_specs.get(name) == seen:
            return
        self._host_specs[name] = seen
        for instance in self.world.instances.by_index("host", name):
            self.queue.add(key_of(instance))

    async def run(self) -> None:
        for instance in self.world.instances.cache.values():
            self._on_instance("ADDED", instance)
        async with asyncio.TaskGroup() as group:
            group.create_task(self.controller.run())
            group.create_task(heartbeats(self.renew_leases, self.settings.heartbeat_interval))

    def stop(self) -> None:
        self.controller.stop()

    # ---- instances --------------------------------------------------------------------

    async def reconcile(self, key: Key) -> Result:
        instance = self.world.instances.get(*key)
        if instance is None:
            return Result()
        host = get(instance, "spec", "host")
        if not self._mine(host) or self._silent(host):
            return Result()
        if deleting(instance):
            await set_finalizer(self.client, VIRTUAL_MACHINE_INSTANCE, instance,
                                FINALIZER_INSTANCE, False)
            return Result()
        now = self.wall()
        if get(instance, "spec", "migrateTo"):
            return await self._migrate(instance, now)
        step = sim.step(instance, now, self.settings)
        await self._report(instance, step.status)
        return Result(requeue_after=step.wait)

    async def _report(self, instance: dict[str, Any], status: dict[str, Any]) -> None:
        await report(self.client, instance, status)

    async def _migrate(self, instance: dict[str, Any], now: float) -> Result:
        """Live migration: Migrating for `timing.migrate` seconds, then the target runs it."""
        status = dict(instance.get("status") or {})
        target = instance["spec"]["migrateTo"]
        if status.get("phase") != "Migrating":
            status.update(phase="Migrating", phaseSince=format_time(now),
                          message=f'migrating to host "{target}"')
            await self._report(instance, status)
            return Result(requeue_after=self.settings.timing.migrate)
        since = parse_time(status.get("phaseSince")) or now
        remaining = since + self.settings.timing.migrate - now
        if remaining > 0:
            return Result(requeue_after=remaining)
        namespace, name = key_of(instance)
        await self.client.patch(VIRTUAL_MACHINE_INSTANCE, namespace, name,
                                {"spec": {"host": target, "migrateTo": None}})
        status.update(phase="Running", phaseSince=format_time(now),
                      message=f'migrated from host "{instance["spec"]["host"]}"')
        await self._report(instance, status)
        return Result()

    # ---- heartbeats -------------------------------------------------------------------

    async def renew_leases(self) -> None:
        now = format_time(self.wall())
        names = [k[1] for k in self.world.hosts.cache if self._mine(k[1]) and not self._silent(k[1])]
        await asyncio.gather(*(renew_lease(self.client, name, now, self.settings) for name in names))
