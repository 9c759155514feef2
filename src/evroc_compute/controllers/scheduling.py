"""The scheduler: binds VirtualMachineInstances to Hosts, in batches, never over-committing.

The decision is `scheduler.placement.assign_many` (pure); this module turns facts into its
input and its output into writes.  Binding is two writes with optimistic concurrency:

1. reserve: the instance's resources are added to the Host's `status.allocations`, written with
   the Host's resourceVersion, so two schedulers (or one racing a stale cache) can never both
   fill the last slot: the second write gets a 409 and its instances are placed again;
2. bind: `spec.host` is set on the instance (admission refuses to move a bound instance).  A
   new instance is proposed by the VM controller and not stored yet: it is created here, with
   `spec.host` already set, so its creation is its binding.  One that fits nowhere is created
   unbound, to carry the verdict.

A crash between the two leaves a reservation without a binding (or without an instance); the
sweep removes reservations whose instance is gone or bound elsewhere (and not in flight in this
process), so capacity is never leaked.  Proposals live in memory only: after a restart the VM
controller, reconciling every VM, proposes again what is missing.  Deleting an instance frees
its reservation the same way.  An instance on a drained host is migrated: a reservation on
another host, then `spec.migrateTo` for its agent.
Instances that fit nowhere get the placement message on `status.unschedulable` and are tried
again whenever capacity may have freed (an instance ends, a host changes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from evroc_compute.api.compute import size_in_bytes
from evroc_compute.api.infra import HOST, VIRTUAL_MACHINE_INSTANCE
from evroc_compute.client.base import Client, ClientError
from evroc_compute.controllers.placementgroup import members
from evroc_compute.runtime.controller import Key
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
IN_FLIGHT_SECONDS = 30.0  # a reservation younger than this may still be waiting for its binding


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


def allocated(host: dict[str, Any]) -> Resources:
    total = Resources()
    for entry in get(host, "status", "allocations") or []:
        total = total + resources(entry)
    return total


def with_allocations(host: dict[str, Any], entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The host with these allocations and their sum as its status."""
    total = amounts(sum((resources(e) for e in entries), Resources()))
    return {**host, "status": {**(host.get("status") or {}), "allocations": entries,
                               "allocated": total}}


def needs_placement(instance: dict[str, Any]) -> bool:
    return not deleting(instance) and not get(instance, "spec", "host")


class Scheduler:
    def __init__(self, client: Client, world: World, settings: Settings, *,
                 wall: Callable[[], float] = time.time) -> None:
        self.client, self.world, self.settings, self.wall = client, world, settings, wall
        self.pending: set[Key] = set()
        self.wake = asyncio.Event()
        self.decisions = 0
        self.sweep_due = True
        self._latest: dict[str, dict[str, Any]] = {}  # hosts as last written by this process
        self._in_flight: dict[str, float] = {}  # "ns/name" -> when it was reserved
        # host -> (resourceVersion, allocated, instances allocated)
        self._sums: dict[str, tuple[str, Resources, frozenset[str]]] = {}
        self.proposals: dict[Key, dict[str, Any]] = {}  # instances to create once placed
        self._created: set[Key] = set()  # created here, not yet seen in the cache

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

    # ---- event intake -----------------------------------------------------------------

    def on_instance(self, event: str, instance: dict[str, Any]) -> None:
        key = key_of(instance)
        self._created.discard(key)
        if event != "DELETED" and (needs_placement(instance) or self._must_migrate(instance)):
            self.pending.add(key)
        else:
            self.pending.discard(key)
        if event == "DELETED" or get(instance, "spec", "host"):
            self._in_flight.pop(ns_name(*key), None)
        if event == "DELETED":
            self.sweep_due = True  # its reservation can go, and capacity may have freed
        self.wake.set()

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

    async def run(self, sweep_interval: float = 5.0) -> None:
        self.retry_all()
        last_sweep = time.monotonic()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=sweep_interval)
            self.wake.clear()
            try:
                if self.sweep_due or time.monotonic() - last_sweep >= sweep_interval:
                    self.sweep_due = False
                    last_sweep = time.monotonic()
                    await self.sweep()
                while self.pending:
                    await self.schedule_batch()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("scheduler pass failed; retrying")
                await asyncio.sleep(0.5)
                self.wake.set()

    def _host(self, name: str) -> dict[str, Any] | None:
        cached, written = self.world.hosts.get("", name), self._latest.get(name)
        if cached is None:
            return None
        if written is not None and int(written["metadata"]["resourceVersion"]) > \
                int(cached["metadata"]["resourceVersion"]):
            return written
        self._latest.pop(name, None)
        return cached

    def _host_states(self, now: float) -> list[HostState]:
        out = []
        for name in sorted(k[1] for k in self.world.hosts.cache):
            host = self._host(name)
            if host is None:
                continue
            out.append(HostState(
                name=name, zone=host["spec"]["zone"], capacity=capacity(host),
                allocated=self._allocations(name, host)[0],
                schedulable=get(host, "spec", "schedulable") is not False
                and not get(host, "spec", "drain"),
                alive=self.world.host_alive(name, now, self.settings.heartbeat_timeout),
                instances=self._allocations(name, host)[1]))
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

    def _allocations(self, name: str, host: dict[str, Any]) -> tuple[Resources, frozenset[str]]:
        """The host's allocations summed, and the instances they are for, once per version of
        the host (not once per batch: a host of a big fleet holds hundreds)."""
        version = host["metadata"]["resourceVersion"]
        cached = self._sums.get(name)
        if cached is None or cached[0] != version:
            instances = frozenset(e["instance"] for e in get(host, "status", "allocations") or [])
            cached = self._sums[name] = (version, allocated(host), instances)
        return cached[1], cached[2]

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
        instances = [i for k in batch if (i := self._instance(k)) is not None
                     and (needs_placement(i) or self._must_migrate(i))]
        if not instances:
            return
        too_many = [i for i in instances if self._beyond_group_limit(i)]
        for instance in too_many:
            await self._unschedulable(instance, self._beyond_group_limit(instance))
        instances = [i for i in instances if i not in too_many]
        requests = [self._request(i) for i in instances]
        decisions = assign_many(requests, self._host_states(now))
        self.decisions += len(decisions) + len(too_many)
        by_host: dict[str, list[tuple[dict[str, Any], Request]]] = {}
        for instance, request, decision in zip(instances, requests, decisions, strict=True):
            if isinstance(decision, Placed):
                by_host.setdefault(decision.host, []).append((instance, request))
            else:
                await self._unschedulable(instance, decision.message)
        await asyncio.gather(*(self._reserve_and_bind(host, placed)
                               for host, placed in by_host.items()))

    async def _reserve_and_bind(self, host_name: str,
                                placed: list[tuple[dict[str, Any], Request]]) -> None:
        host = self._host(host_name)
        if host is None:
            self.pending.update(key_of(i) for i, _ in placed)
            return
        entries = list(get(host, "status", "allocations") or [])
        taken = {e["instance"] for e in entries}
        for _, request in placed:
            if request.instance not in taken:
                entries.append({"instance": request.instance, **amounts(request.resources)})
        try:
            written = await self.client.update(HOST, with_allocations(host, entries), "status")
        except ClientError as problem:
            if not problem.conflict:
                raise
            # Someone else wrote the host: read it and place these again.
            self._latest[host_name] = await self.client.get(HOST, None, host_name)
            self.pending.update(key_of(i) for i, _ in placed)
            self.wake.set()
            return
        self._latest[host_name] = written
        now = self.wall()
        for _, request in placed:
            self._in_flight[request.instance] = now
        await asyncio.gather(*(self._bind(instance, host_name) for instance, _ in placed))

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
            if problem.code == 409:  # it exists (a create before a restart): placed as it is
                return None
            if problem.code >= 500 or problem.code == 429:  # tried again on the next pass
                self.proposals.setdefault(key, current)
                self.pending.add(key)
                raise
            # Refused for good (e.g. its namespace is being deleted): the VM controller
            # proposes again when the VM changes.
            log.warning("instance %s/%s not created: %s", *key, problem)
            return None
        self._created.add(key)
        return created

    async def _bind(self, instance: dict[str, Any], host: str) -> None:
        namespace, name = key_of(instance)
        if "resourceVersion" not in instance["metadata"]:
            if await self._create(instance, host) is None:
                self._in_flight.pop(ns_name(namespace, name), None)
                self.sweep_due = True  # its reservation goes back
            return
        field = "migrateTo" if get(instance, "spec", "host") else "host"
        try:
            await self.client.patch(VIRTUAL_MACHINE_INSTANCE, namespace, name,
                                    {"spec": {field: host}})
            if get(instance, "status", "unschedulable"):
                await self.client.patch(VIRTUAL_MACHINE_INSTANCE, namespace, name,
                                        {"status": {"unschedulable": None}}, subresource="status")
        except ClientError as problem:
            # Gone, or bound elsewhere meanwhile: the sweep returns the reservation.
            self._in_flight.pop(ns_name(namespace, name), None)
            if problem.code not in (404, 409, 422):
                raise

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

    # ---- giving capacity back ---------------------------------------------------------

    def _stale(self, host_name: str, entry: dict[str, Any], now: float) -> bool:
        reserved = self._in_flight.get(entry["instance"])
        if reserved is not None and now - reserved < IN_FLIGHT_SECONDS:
            return False
        namespace, _, name = entry["instance"].partition("/")
        instance = self.world.instances.get(namespace, name)
        return instance is None or host_name not in (get(instance, "spec", "host"),
                                                     get(instance, "spec", "migrateTo"))

    async def sweep(self) -> int:
        """Remove reservations nobody holds; returns how many were removed."""
        now = self.wall()
        removed = 0
        for name in sorted(k[1] for k in self.world.hosts.cache):
            host = self._host(name)
            entries = get(host, "status", "allocations") or []
            keep = [e for e in entries if not self._stale(name, e, now)]
            if host is None or len(keep) == len(entries):
                continue
            try:
                self._latest[name] = await self.client.update(HOST, with_allocations(host, keep),
                                                              "status")
            except ClientError as problem:
                if not problem.conflict:
                    raise
                continue  # the next sweep sees the newer host
            removed += len(entries) - len(keep)
        if removed:
            self.retry_all()
        return removed
