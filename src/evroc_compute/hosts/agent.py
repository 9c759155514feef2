"""The host agent: runs the instances bound to its driver's hosts and keeps their heartbeats.

One class for every driver.  Per instance, `converge` asks the driver what is, asks the pure
lifecycle (hosts/lifecycle.py) what the status is and what to do, reports the status, lets the
driver act, and looks again, until nothing is left to do now; the instance is looked at again
when the lifecycle says something changes by itself, or when it changes.  The agent renews one
Lease per host (`host-<name>`) every heartbeat interval; a host annotated
`fault.evroc-compute.io/heartbeat: lost` goes silent: no renewals and no reports, as a host that
lost its network would (its VMs turn Unknown once the lease expires).  Deleting an instance
removes its guest, then the agent removes the instance's finalizer.  Each host's status lists
the SecurityGroups its driver has programmed (`report_hosts`); a driver without a network
(the simulated fleet) reports, for every project with an instance on the host, each of the
project's groups at its current generation: what a real host would program.  An agent that
serves its consoles (hosts/console.py) keeps its endpoint in its hosts' `status.agentEndpoint`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from evroc_compute.api.infra import FAULT_PREFIX, VIRTUAL_MACHINE_INSTANCE
from evroc_compute.api.meta import format_time
from evroc_compute.client.base import Client
from evroc_compute.hosts import lifecycle
from evroc_compute.hosts.driver import Driver, DriverError, MigrationUnsupported
from evroc_compute.hosts.reports import (
    renew_lease,
    report,
    report_endpoint,
    report_security_groups,
)
from evroc_compute.runtime.controller import Controller, Key, Result, WorkQueue
from evroc_compute.runtime.periodic import every
from evroc_compute.runtime.settings import Settings
from evroc_compute.runtime.world import FINALIZER_INSTANCE, World, deleting, get, key_of
from evroc_compute.runtime.writes import set_finalizer

log = logging.getLogger(__name__)
FAULT_HEARTBEAT = FAULT_PREFIX + "heartbeat"
MAX_ACTIONS = 4  # pull, start and a retry fit; more in one reconcile means look again at once
INTERIM_REPORT_SECONDS = 0.05
GROUP_REPORT_INTERVAL = 1.0  # how often programmed SecurityGroups are compared with the reports

Report = Callable[[dict[str, Any], dict[str, Any]], Awaitable[None]]


@dataclass
class Converged:
    """Where one pass over an instance left it."""

    status: dict[str, Any]
    wait: float | None  # seconds until it should be looked at again; None: when it changes
    transitions: list[lifecycle.Transition] = field(default_factory=list)


async def converge(driver: Driver, instance: dict[str, Any], now: float, settings: Settings,
                   report: Report) -> Converged:
    """Move the instance's guest as far as it goes now; `report(instance, status)` says so.

    The status before an action is reported only if the action takes a while (longer than
    `INTERIM_REPORT_SECONDS`: a real pull, boot or shutdown), so a step that is over at once
    (the simulated fleet's immediate timing) costs no write of a state nobody could see."""
    transitions: list[lifecycle.Transition] = []
    outcome: lifecycle.Outcome | None = None
    reported = instance
    for _ in range(MAX_ACTIONS):
        seen = await driver.observe(instance)
        plan = lifecycle.plan(instance, seen, now, settings, outcome)
        if plan.transition is not None:
            transitions.append(plan.transition)
        if plan.action is None and seen.state in ("up", "paused"):
            plan = await _plug(driver, instance, plan, seen)
        instance = {**instance, "status": plan.status}
        if plan.action is None:
            await report(reported, plan.status)
            return Converged(plan.status, plan.wait, transitions)
        acting = asyncio.ensure_future(_act(driver, instance, plan.action))
        try:
            done, _ = await asyncio.wait([acting], timeout=INTERIM_REPORT_SECONDS)
            if not done:
                await report(reported, plan.status)
                reported = instance
            outcome = await acting
        except BaseException:  # the report failed or we were cancelled: no action left behind
            acting.cancel()
            await asyncio.gather(acting, return_exceptions=True)
            raise
    await report(reported, instance["status"])
    return Converged(instance["status"], 0.0, transitions)


async def _act(driver: Driver, instance: dict[str, Any], action: lifecycle.Action) -> lifecycle.Outcome:
    try:
        if action == "pull":
            return lifecycle.Outcome(action, pending=await driver.pull(instance))
        if action == "start":
            return lifecycle.Outcome(action, pending=await driver.start(instance))
        await driver.stop(instance)
        return lifecycle.Outcome(action)
    except DriverError as problem:
        return lifecycle.Outcome(action, error=str(problem))


async def _plug(driver: Driver, instance: dict[str, Any], plan: lifecycle.Plan,
                seen: lifecycle.Observation) -> lifecycle.Plan:
    """Plug the wanted disks into the running guest and unplug the others."""
    wanted: list[lifecycle.HotswapWant] = get(instance, "spec", "hotswap") or []
    plugged = dict(seen.plugged)
    for serial in set(plugged) - {w["serial"] for w in wanted}:
        try:
            await driver.detach(instance, serial)
            del plugged[serial]
        except DriverError as problem:
            log.warning("unplugging disk %s from %s/%s: %s", serial, *key_of(instance), problem)
    failures: dict[str, str] = {}
    for want in wanted:
        if want["serial"] not in plugged:
            try:
                plugged[want["serial"]] = await driver.attach(instance, want)
            except DriverError as problem:
                failures[want["serial"]] = str(problem)
    return lifecycle.with_hotswap(plan, wanted, plugged, failures, up=True)


class Agent:
    """The agent of the hosts one driver serves: a reconciler of the instances bound to them."""

    def __init__(self, name: str, client: Client, world: World, settings: Settings, driver: Driver,
                 *, wall: Callable[[], float] = time.time, workers: int = 32,
                 endpoint: dict[str, str] | None = None) -> None:
        self.client, self.world, self.settings, self.driver = client, world, settings, driver
        self.endpoint = endpoint  # the console endpoint's URL and certificate, if it serves one
        self.wall = wall
        self.queue = WorkQueue()
        self.controller = Controller(name, self, self.queue, workers=workers)
        self._host_specs: dict[str, Any] = {}
        self._groups_changed = asyncio.Event()
        # Which projects have instances on which host, kept as instances come and go, so the
        # group report neither scans the instances nor wakes for their status writes.
        self._placed: dict[Key, str] = {}
        self._projects: dict[str, Counter[str]] = {}
        world.instances.add_handler(self._on_instance)
        world.instances.add_handler(self._place)
        world.security_groups.add_handler(lambda event, group: self._groups_changed.set())
        world.hosts.add_handler(self._on_host)
        world.vms.add_handler(self._on_vm)

    def _mine(self, host_name: str | None) -> bool:
        host = self.world.hosts.get("", host_name or "")
        return host is not None and self.driver.serves(host)

    def _silent(self, host_name: str | None) -> bool:
        host = self.world.hosts.get("", host_name or "")
        return (get(host, "metadata", "annotations") or {}).get(FAULT_HEARTBEAT) == "lost"

    def _on_instance(self, event: str, instance: dict[str, Any]) -> None:
        if event != "DELETED" and self._mine(get(instance, "spec", "host")):
            self.queue.add(key_of(instance))

    def _place(self, event: str, instance: dict[str, Any]) -> None:
        key = key_of(instance)
        host = "" if event == "DELETED" else get(instance, "spec", "host") or ""
        was = self._placed.get(key, "")
        if host == was:
            return
        if was:
            del self._placed[key]
            projects = self._projects[was]
            projects[key[0]] -= 1
            if not projects[key[0]]:
                del projects[key[0]]
                self._groups_changed.set()
        if host:
            self._placed[key] = host
            projects = self._projects.setdefault(host, Counter())
            if not projects[key[0]]:
                self._groups_changed.set()
            projects[key[0]] += 1

    def _on_vm(self, event: str, vm: dict[str, Any]) -> None:
        # A start may wait for what the VM controller writes (the private address).
        instance = self.world.instances.get(*key_of(vm))
        if instance is not None and get(instance, "status", "phase") == "Starting":
            self._on_instance(event, instance)

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
        await self.world.synced.wait()
        for instance in self.world.instances.cache.values():
            self._on_instance("ADDED", instance)
            self._place("ADDED", instance)  # a no-op for those its handler saw
        async with asyncio.TaskGroup() as group:
            group.create_task(self.controller.run())
            group.create_task(every(self.settings.heartbeat_interval, self.renew_leases, log,
                                    "renewing host leases"))
            group.create_task(self._report_hosts_forever())
            group.create_task(self.driver.run())

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
            await self.driver.remove(instance)
            await set_finalizer(self.client, VIRTUAL_MACHINE_INSTANCE, instance,
                                FINALIZER_INSTANCE, False)
            return Result()
        now = self.wall()
        if get(instance, "spec", "migrateTo"):
            try:
                return await self._migrate(instance, now)
            except MigrationUnsupported:
                pass  # it keeps running here
        done = await converge(self.driver, instance, now, self.settings, self._report)
        for transition in done.transitions:
            log.debug("%s/%s: %s: %s", *key, transition.reason, transition.message)
        return Result(requeue_after=done.wait)

    async def _report(self, instance: dict[str, Any], status: dict[str, Any]) -> None:
        await report(self.client, instance, status)

    async def _migrate(self, instance: dict[str, Any], now: float) -> Result:
        plan = lifecycle.migrate(instance, await self.driver.migrate(instance), now)
        if plan.status.get("phase") == "Running":  # moved: the target host runs it now
            namespace, name = key_of(instance)
            await self.client.patch(VIRTUAL_MACHINE_INSTANCE, namespace, name,
                                    {"spec": {"host": instance["spec"]["migrateTo"], "migrateTo": None}})
        await self._report(instance, plan.status)
        return Result(requeue_after=plan.wait)

    # ---- programmed SecurityGroups ---------------------------------------------------------

    def programmed(self, host: str) -> Mapping[str, Mapping[str, int]]:
        """The generation of each SecurityGroup programmed on `host`, by project and name."""
        found = self.driver.security_groups(host)
        if found is not None:
            return found
        projects = self._projects.get(host, ())
        return {p: {key_of(g)[1]: int(g["metadata"].get("generation", 1))
                    for g in self.world.security_groups.by_index("namespace", p)}
                for p in sorted(projects)}

    async def report_hosts(self) -> None:
        """Write each host's programmed SecurityGroups where its status shows others, and
        its console endpoint where it shows another (or none)."""
        for (_, name), host in list(self.world.hosts.cache.items()):
            if self._mine(name) and not self._silent(name):
                await report_security_groups(self.client, host, self.programmed(name))
                if self.endpoint is not None:
                    await report_endpoint(self.client, host, self.endpoint)

    async def _report_hosts_forever(self) -> None:
        # Woken by a change to groups or instances; the interval catches the driver's own
        # programming, which ends after the change that caused it, and a Host made again.
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._groups_changed.wait(), GROUP_REPORT_INTERVAL)
            self._groups_changed.clear()
            try:
                await self.report_hosts()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reporting programmed security groups failed; retrying")

    # ---- heartbeats -------------------------------------------------------------------

    async def renew_leases(self) -> None:
        now = format_time(self.wall())
        names = [k[1] for k in self.world.hosts.cache if self._mine(k[1]) and not self._silent(k[1])]
        await asyncio.gather(*(renew_lease(self.client, name, now, self.settings) for name in names))
