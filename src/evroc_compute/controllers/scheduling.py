"""The scheduler: binds VirtualMachineInstances to Hosts, in batches, never over-committing.

The decision is `scheduler.placement.assign_many` (pure); this module turns facts into its
input and its output into writes.  As kube-scheduler does, it keeps what each host holds in
memory and the binding is the record:

- what a host holds is the instances bound to it (`spec.host`) or migrating to it
  (`spec.migrateTo`), counted from the instance cache as it changes (O(1) per change), plus
  the ones this scheduler has placed and not yet seen bound ("assumed");
- binding is one write: a new instance is proposed by the VM controller and not stored yet,
  so it is created here with `spec.host` already set (its creation is its binding; one that
  fits nowhere is created unbound, to carry the verdict); a stored one gets `spec.host`, or
  `spec.migrateTo` when it leaves a drained host (admission refuses to move a bound instance);
- each Host's `status.allocations` and `status.allocated` report what it holds, written at
  most once a second per host that changed (a merge patch of those two fields only, so the
  agents' writes to the rest of the status never conflict with it).

Only the leader runs a scheduler, so one process decides every placement.  A crash loses only
assumptions: bindings are stored or not, and the next leader counts the stored ones before it
places anything (its cache is synced first).  Nothing is reserved apart from a binding, so
nothing can leak: an instance deleted, or withdrawn before it was created, frees its share at
once.  Proposals live in memory only: after a restart the VM controller, reconciling every VM,
proposes again what is missing.  Instances that fit nowhere get the placement message on
`status.unschedulable` and are tried again whenever capacity may have freed (an instance
ends, a host changes).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from evroc_compute.api.compute import size_in_bytes
from evroc_compute.api.infra import HOST, VIRTUAL_MACHINE_INSTANCE
from evroc_compute.client.base import Client, ClientError
from evroc_compute.controllers.placementgroup import members
from evroc_compute.runtime.controller import Key
from evroc_compute.runtime.periodic import every
from evroc_compute.runtime.settings import Settings
from evroc_compute.runtime.world import World, deleting, get, key_of, ns_name
from evroc_compute.scheduler.placement import (
    MAX_GROUP_MEMBERS,
    HostState,
    Placed,
    Request,
    Resources,
    assign_many,
)

log = logging.getLogger(__name__)

BATCH = 1000
REPORT_SECONDS = 1.0  # each changed host's status.allocations is written at most this often


def resources(amounts: dict[str, Any] | None) -> Resources:
    amounts = amounts or {}
    return Resources(vcpu=amounts.get("vcpu") or 0, memory_bytes=amounts.get("memoryBytes") or 0,
                     gpus={g["model"]: g["count"] for g in amounts.get("gpus") or []},
                     local_disk_gb=amounts.get("localDiskGB") or 0)


def amounts(r: Resources) -> dict[str, Any]:
    out: dict[str, Any] = {"vcpu": r.vcpu, "memoryBytes": r.memory_bytes}
    if r.gpus:
        out["gpus"] = [{"model": m, "count": n} for m, n in r.gpus.items()]
    if r.local_disk_gb:
        out["localDiskGB"] = r.local_disk_gb
    return out


def capacity(host: dict[str, Any]) -> Resources:
    cap = host["spec"]["capacity"]
    return Resources(vcpu=cap["vcpu"], memory_bytes=size_in_bytes(cap["memory"]) or 0,
                     gpus={g["model"]: g["count"] for g in cap.get("gpus") or []},
                     local_disk_gb=cap.get("localDiskGB") or 0)


def allocations_status(held: dict[str, Resources], total: Resources) -> dict[str, Any]:
    """A host's `status.allocations` and `status.allocated`: the instances it holds, and
    their sum."""
    return {"allocations": [{"instance": name, **amounts(held[name])} for name in sorted(held)],
            "allocated": amounts(total)}


def as_merge_patch(status: dict[str, Any]) -> dict[str, Any]:
    """The merge patch that makes a stored status say `status`: amounts left out (no GPUs, no
    local disk) are removed, not left as they were (RFC 7386)."""
    return {**status, "allocated": {"gpus": None, "localDiskGB": None, **status["allocated"]}}


@dataclass(slots=True)
class Assumption:
    """A placement this scheduler made and the cache does not show yet: the instance counts
    on `host` until the cache has reached `settled_at` (the instance's resourceVersion that
    tells the truth: the bind's own, or one read back after an uncertain failure)."""

    host: str
    amount: Resources
    settled_at: int | None = None  # None while the bind is in flight


def needs_placement(instance: dict[str, Any]) -> bool:
    return not deleting(instance) and not get(instance, "spec", "host")


class Scheduler:
    def __init__(self, client: Client, world: World, settings: Settings, *,
                 wall: Callable[[], float] = time.time) -> None:
        self.client, self.world, self.settings, self.wall = client, world, settings, wall
        self.pending: set[Key] = set()
        self.wake = asyncio.Event()
        self.capacity_freed = True
        self.proposals: dict[Key, dict[str, Any]] = {}  # instances to create once placed
        self._created: set[Key] = set()  # created here, not yet seen in the cache
        # What each host holds: host -> {"ns/name": resources}, with its sum and names kept
        # as it changes; where and how much each instance is counted; as the cache says
        # (hosts bound or migrating to, resources, resourceVersion); placements not seen yet.
        self._held: dict[str, dict[str, Resources]] = {}
        self._sums: dict[str, Resources] = {}
        self._names: dict[str, frozenset[str]] = {}
        self._counted: dict[str, tuple[tuple[str, ...], Resources]] = {}
        self._bound: dict[str, tuple[tuple[str, ...], Resources, int]] = {}
        self._assumed: dict[str, Assumption] = {}
        self._unreported: set[str] = set()  # hosts whose status.allocations may be behind

    # ---- proposals (the VM controller's Placer) ------------------------------------------

    def propose(self, instance: dict[str, Any]) -> None:
        key = key_of(instance)
        if key in self._created:
            return  # created already; the cache has not caught up
        self.proposals[key] = instance
        self.pending.add(key)
        self.wake.set()

    def withdraw(self, key: Key) -> None:
        if self.proposals.pop(key, None) is not None:
            self.pending.discard(key)

    def _instance(self, key: Key) -> dict[str, Any] | None:
        """The instance stored, or else the one proposed."""
        stored = self.world.instances.get(*key)
        if stored is not None:
            self.proposals.pop(key, None)
            return stored
        return self.proposals.get(key)

    # ---- what each host holds ---------------------------------------------------------

    def _count(self, name: str) -> None:
        """Count `name` ("ns/name") on the hosts it is bound or migrating to, and on the one
        it is assumed on until the cache shows the truth about that placement."""
        bound_on, amount, version = self._bound.get(name, ((), Resources(), 0))
        hosts = bound_on
        assumed = self._assumed.get(name)
        if assumed is not None:
            if assumed.host in bound_on or (assumed.settled_at is not None
                                            and version >= assumed.settled_at):
                del self._assumed[name]  # the cache tells the truth about it now
            else:
                hosts, amount = (*bound_on, assumed.host), assumed.amount
        if self._counted.get(name, ((), None)) == (hosts, amount):
            return
        before, _ = self._counted.pop(name, ((), Resources()))
        for host in before:
            self._change(host, name, None)
        if hosts:
            self._counted[name] = (hosts, amount)
            for host in hosts:
                self._change(host, name, amount)

    def _change(self, host: str, name: str, amount: Resources | None) -> None:
        held = self._held.setdefault(host, {})
        before = held.pop(name, None)
        total = self._sums.get(host, Resources())
        if before is not None:
            total = total - before
        if amount is not None:
            held[name] = amount
            total = total + amount
        self._sums[host] = total
        self._names.pop(host, None)
        self._unreported.add(host)

    def _assume(self, name: str, host: str, amount: Resources) -> None:
        """A placement being bound: it holds its share until the cache shows the truth about
        it (or the instance gone), or `_bind` fails and forgets it."""
        self._assumed[name] = Assumption(host, amount)
        self._count(name)

    def _settle(self, name: str, version: str) -> None:
        """The bind of `name` is over: the cache tells the truth from `version` on."""
        assumed = self._assumed.get(name)
        if assumed is not None:
            assumed.settled_at = int(version)
            self._count(name)
            if name not in self._assumed:  # the cache was there already: if the instance is
                self.capacity_freed = True  # still unbound, it is placed again
                self.wake.set()

    def _forget(self, name: str) -> None:
        """A placement that will not be bound (refused, withdrawn, cancelled): its share goes
        back."""
        if self._assumed.pop(name, None) is not None:
            self._count(name)
            self.capacity_freed = True

    def _held_by(self, host: str) -> tuple[Resources, frozenset[str]]:
        names = self._names.get(host)
        if names is None:
            names = self._names[host] = frozenset(self._held.get(host, ()))
        return self._sums.get(host, Resources()), names

    # ---- event intake -----------------------------------------------------------------

    def on_instance(self, event: str, instance: dict[str, Any]) -> None:
        key = key_of(instance)
        name = ns_name(*key)
        self._created.discard(key)
        if event != "DELETED" and (needs_placement(instance) or self._must_migrate(instance)):
            self.pending.add(key)
        else:
            self.pending.discard(key)
        if event == "DELETED":
            self._bound.pop(name, None)
            self._assumed.pop(name, None)
            self.capacity_freed = True  # its share is free, which another may be waiting for
        else:
            hosts = tuple(h for h in (get(instance, "spec", "host"),
                                      get(instance, "spec", "migrateTo")) if h)
            self._bound[name] = (hosts, resources(get(instance, "spec", "resources")),
                                 int(instance["metadata"].get("resourceVersion") or 0))
        self._count(name)
        self.wake.set()

    def on_host(self, event: str, host: dict[str, Any]) -> None:
        """A host written by anyone (registered, edited, or this report landing): its report
        is compared with what it holds on the next report (an edit by hand is undone)."""
        if event != "DELETED":
            self._unreported.add(host["metadata"]["name"])

    def retry_all(self) -> None:
        for instance in self.world.instances.cache.values():
            if needs_placement(instance) or self._must_migrate(instance):
                self.pending.add(key_of(instance))
        self.wake.set()

    def _must_migrate(self, instance: dict[str, Any]) -> bool:
        host = self.world.hosts.get("", get(instance, "spec", "host") or "")
        return (host is not None and bool(get(host, "spec", "drain")) and not deleting(instance)
                and not get(instance, "spec", "migrateTo")
                and get(instance, "status", "phase") in ("Running", "Paused"))

    # ---- the loop ---------------------------------------------------------------------

    async def run(self) -> None:
        """Schedule, and report what each host holds, until cancelled."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._report_forever(), name="host-allocations")
            await self._schedule_forever()

    async def _schedule_forever(self) -> None:
        self.retry_all()
        while True:
            await self.wake.wait()
            self.wake.clear()
            try:
                if self.capacity_freed:
                    self.capacity_freed = False
                    self.retry_all()
                while self.pending:
                    await self.schedule_batch()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("scheduler pass failed; retrying")
                await asyncio.sleep(0.5)
                self.wake.set()

    def _host_states(self, now: float) -> list[HostState]:
        out = []
        for name in sorted(k[1] for k in self.world.hosts.cache):
            host = self.world.hosts.get("", name)
            if host is None:
                continue
            allocated, instances = self._held_by(name)
            out.append(HostState(
                name=name, zone=host["spec"]["zone"], capacity=capacity(host),
                allocated=allocated,
                schedulable=get(host, "spec", "schedulable") is not False
                and not get(host, "spec", "drain"),
                alive=self.world.host_alive(name, now, self.settings.heartbeat_timeout),
                instances=instances))
        return out

    def _beyond_group_limit(self, instance: dict[str, Any]) -> str:
        """Why a spread group's member beyond the limit is not placed, or ""."""
        group = get(instance, "spec", "placementGroup")
        if not group or get(instance, "spec", "host"):
            return ""
        namespace, name = key_of(instance)
        names = [vm["metadata"]["name"] for vm in members(self.world, namespace, group)]
        if name not in names[MAX_GROUP_MEMBERS:]:
            return ""
        return (f"placement group {group} holds at most {MAX_GROUP_MEMBERS} VMs and this VM is "
                f"member {names.index(name) + 1} (the members are "
                f"{', '.join(names[:MAX_GROUP_MEMBERS])}); stop it and remove "
                "spec.placementGroup, or delete a member")

    def _request(self, instance: dict[str, Any]) -> Request:
        namespace, name = key_of(instance)
        group = get(instance, "spec", "placementGroup")
        members: dict[str, str] = {}
        group_zone = None
        if group:
            pg = self.world.groups.get(namespace, group)
            group_zone = get(pg, "spec", "placement", "zone")
            for vm in self.world.vms.by_index("group", ns_name(namespace, group)):
                other = self.world.instances.get(namespace, vm["metadata"]["name"])
                host = get(other, "spec", "host")
                if host and vm["metadata"]["name"] != name:
                    members[ns_name(namespace, vm["metadata"]["name"])] = host
        return Request(instance=ns_name(namespace, name),
                       resources=resources(get(instance, "spec", "resources")),
                       zone=get(instance, "spec", "zone") or None,
                       placement_group=ns_name(namespace, group) if group else None,
                       group_zone=group_zone, group_members_on_hosts=members)

    async def schedule_batch(self) -> None:
        now = self.wall()
        keys = sorted(self.pending, key=lambda k: (
            (self._instance(k) or {}).get("metadata", {}).get("creationTimestamp", ""), k))
        batch = keys[:BATCH]
        self.pending.difference_update(batch)
        # An instance assumed somewhere is being bound or waits for the cache to show it: it
        # is not placed again meanwhile (a stale event may still show it unbound).
        instances = [i for k in batch if ns_name(*k) not in self._assumed
                     and (i := self._instance(k)) is not None
                     and (needs_placement(i) or self._must_migrate(i))]
        if not instances:
            return
        too_many = [i for i in instances if self._beyond_group_limit(i)]
        for instance in too_many:
            await self._unschedulable(instance, self._beyond_group_limit(instance))
        instances = [i for i in instances if i not in too_many]
        requests = [self._request(i) for i in instances]
        decisions = assign_many(requests, self._host_states(now))
        by_host: dict[str, list[tuple[dict[str, Any], Request]]] = {}
        for instance, request, decision in zip(instances, requests, decisions, strict=True):
            if isinstance(decision, Placed):
                by_host.setdefault(decision.host, []).append((instance, request))
            else:
                await self._unschedulable(instance, decision.message)
        await asyncio.gather(*(self._bind_all(host, placed) for host, placed in by_host.items()))

    async def _create(self, proposed: dict[str, Any], host: str | None) -> dict[str, Any] | None:
        """Store a proposed instance (bound to `host`, or unbound), unless the VM controller
        withdrew it or now wants other resources (then it is placed again)."""
        key = key_of(proposed)
        current = self.proposals.get(key)
        if current is None or get(current, "spec", "resources") != get(proposed, "spec", "resources"):
            if current is not None:
                self.pending.add(key)
                self.wake.set()
            return None
        del self.proposals[key]
        spec = {**current["spec"], "host": host} if host else current["spec"]
        try:
            created = await self.client.create(VIRTUAL_MACHINE_INSTANCE, {**current, "spec": spec})
        except ClientError as problem:
            if problem.code != 409:
                self._not_created(key, current, problem)
                return None
            # It exists (a create before a restart, or this one's answer lost): placed as
            # it is stored.
            created = await self.client.get(VIRTUAL_MACHINE_INSTANCE, *key)
        self._created.add(key)
        return created

    def _not_created(self, key: Key, proposed: dict[str, Any], problem: ClientError) -> None:
        if problem.code >= 500 or problem.code == 429:  # tried again on the next pass
            self.proposals.setdefault(key, proposed)
            self.pending.add(key)
            raise problem
        # Refused for good (e.g. its namespace is being deleted): the VM controller proposes
        # again when the VM changes.
        log.warning("instance %s/%s not created: %s", *key, problem)

    async def _bind(self, instance: dict[str, Any], host: str) -> None:
        """Bind (or create bound) an instance assumed on `host`. Bound, the assumption stays
        until the cache has the bind's version; refused, it goes (and the instance is placed
        again if it still needs a place); not known (a timeout, a 5xx), the stored instance
        is read back to say."""
        namespace, name = key_of(instance)
        written: dict[str, Any] | None = None
        uncertain = False
        try:
            if "resourceVersion" not in instance["metadata"]:
                written = await self._create(instance, host)
                return
            field = "migrateTo" if get(instance, "spec", "host") else "host"
            try:
                written = await self.client.patch(VIRTUAL_MACHINE_INSTANCE, namespace, name,
                                                  {"spec": {field: host}})
            except ClientError as problem:
                if problem.code not in (404, 409, 422):  # gone, or bound elsewhere meanwhile
                    raise
                return
            if get(instance, "status", "unschedulable"):
                await self.client.patch(VIRTUAL_MACHINE_INSTANCE, namespace, name,
                                        {"status": {"unschedulable": None}}, subresource="status")
        except ClientError as problem:
            uncertain = problem.code >= 500 or problem.code == 429
            raise
        finally:
            if written is not None:
                self._settle(ns_name(namespace, name), written["metadata"]["resourceVersion"])
            elif uncertain:
                await self._read_back(namespace, name)
            else:
                self._forget(ns_name(namespace, name))

    async def _read_back(self, namespace: str, name: str) -> None:
        who = ns_name(namespace, name)
        try:
            stored = await self.client.get(VIRTUAL_MACHINE_INSTANCE, namespace, name)
        except ClientError as problem:
            if problem.not_found:
                self._forget(who)
            else:  # it keeps its place (never over-committed) until the cache shows it
                log.warning("instance %s: whether it was bound is not known (%s)", who, problem)
            return
        self._settle(who, stored["metadata"]["resourceVersion"])

    async def _unschedulable(self, instance: dict[str, Any], message: str) -> None:
        if get(instance, "spec", "host"):
            return  # a migration with no target: the VM keeps running where it is
        if "resourceVersion" not in instance["metadata"]:
            created = await self._create(instance, None)
            if created is None:
                return
            instance = created
        if get(instance, "status", "unschedulable") == message:
            return
        namespace, name = key_of(instance)
        try:
            await self.client.patch(VIRTUAL_MACHINE_INSTANCE, namespace, name,
                                    {"status": {"unschedulable": message, "phase": "Pending"}},
                                    subresource="status")
        except ClientError as problem:
            if not problem.not_found:
                raise

    async def _bind_all(self, host: str, placed: list[tuple[dict[str, Any], Request]]) -> None:
        for _, request in placed:
            self._assume(request.instance, host, request.resources)
        await asyncio.gather(*(self._bind(instance, host) for instance, _ in placed))

    # ---- reporting --------------------------------------------------------------------

    async def _report_forever(self) -> None:
        await asyncio.sleep(REPORT_SECONDS)
        await every(REPORT_SECONDS, self.report, log, "reporting host allocations")

    async def report(self) -> int:
        """Write `status.allocations` of each host whose holdings may have changed since it
        was last written and differ from what is stored (all at once, so the store commits
        them together); returns how many were written."""
        due, self._unreported = self._unreported, set()
        writes = {}
        for name in sorted(due):
            host = self.world.hosts.get("", name)
            if host is None:
                continue
            wanted = allocations_status(self._held.get(name, {}), self._sums.get(name, Resources()))
            status = host.get("status") or {}
            if status.get("allocations", []) != wanted["allocations"] or \
                    status.get("allocated") != wanted["allocated"]:
                writes[name] = self.client.patch(HOST, None, name,
                                                 {"status": as_merge_patch(wanted)},
                                                 subresource="status")
        outcomes = await asyncio.gather(*writes.values(), return_exceptions=True)
        for name, outcome in zip(writes, outcomes, strict=True):
            if isinstance(outcome, ClientError) and outcome.not_found:
                continue
            if isinstance(outcome, BaseException):
                self._unreported.add(name)  # tried again on the next report
                log.warning("host %s: allocations not reported: %s", name, outcome)
        return len(writes)
