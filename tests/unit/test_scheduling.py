"""The scheduler's count of what each host holds, against a store played by a fake client.

Placement itself is tested in test_placement.py (pure); here: a placement is never made twice
and its share never given away while the cache lags its binding, a bind whose outcome is not
known keeps the place it may hold, and a host's report drops amounts it no longer holds.
"""

from __future__ import annotations

import asyncio
import copy
import time
from typing import Any

import pytest

from evroc_compute.api.kinds import Kind
from evroc_compute.api.meta import format_time
from evroc_compute.client.base import ClientError
from evroc_compute.controllers.scheduling import Scheduler
from evroc_compute.runtime.settings import Settings
from evroc_compute.runtime.world import World
from evroc_compute.server.handlers.patch import merge_patch

GPU = "nvidia.com/AD102GL_L40S"


class FakeStore:
    """Stored instances and hosts; binds as admission does (a bound instance cannot move)."""

    def __init__(self, fail_after_patch: int = 0, fail_before_patch: int = 0) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.version = 1
        self.fail_after_patch = fail_after_patch  # answers lost: applied, then a 503
        self.fail_before_patch = fail_before_patch  # a 503 and nothing applied

    def put(self, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        meta = obj["metadata"]
        self.objects[(kind, meta.get("namespace", ""), meta["name"])] = obj
        return copy.deepcopy(obj)

    async def get(self, kind: Kind, namespace: str | None, name: str) -> dict[str, Any]:
        obj = self.objects.get((kind.kind, namespace or "", name))
        if obj is None:
            raise ClientError({"code": 404, "reason": "NotFound"})
        return copy.deepcopy(obj)

    async def patch(self, kind: Kind, namespace: str | None, name: str, body: dict[str, Any],
                    subresource: str = "", **_: Any) -> dict[str, Any]:
        await asyncio.sleep(0)
        if self.fail_before_patch:
            self.fail_before_patch -= 1
            raise ClientError({"code": 503, "reason": "ServiceUnavailable"})
        obj = copy.deepcopy(self.objects[(kind.kind, namespace or "", name)])
        wanted = (body.get("spec") or {}).get("host")
        if wanted and obj["spec"].get("host") not in (None, wanted):
            raise ClientError({"code": 422, "reason": "Invalid", "message": "bound elsewhere"})
        written = self.put(kind.kind, merge_patch(obj, body))
        if self.fail_after_patch:
            self.fail_after_patch -= 1
            raise ClientError({"code": 503, "reason": "ServiceUnavailable"})
        return written

    async def create(self, kind: Kind, obj: dict[str, Any]) -> dict[str, Any]:
        return self.put(kind.kind, copy.deepcopy(obj))


def instance(name: str, vcpu: int = 2, gpus: int = 0) -> dict[str, Any]:
    resources: dict[str, Any] = {"vcpu": vcpu, "memoryBytes": 2**30}
    if gpus:
        resources["gpus"] = [{"model": GPU, "count": gpus}]
    return {"metadata": {"namespace": "ns", "name": name, "creationTimestamp": name},
            "spec": {"vmUID": name, "resources": resources}, "status": {"phase": "Pending"}}


def fleet(store: FakeStore, *hosts: str, gpus: int = 0) -> tuple[World, Scheduler]:
    world = World(store)  # type: ignore[arg-type]
    scheduler = Scheduler(store, world, Settings())  # type: ignore[arg-type]
    world.instances.add_handler(scheduler.on_instance)
    for name in hosts:
        capacity: dict[str, Any] = {"vcpu": 2, "memory": {"amount": 8, "unit": "GB"}}
        if gpus:
            capacity["gpus"] = [{"model": GPU, "count": gpus}]
        host = store.put("Host", {"metadata": {"name": name},
                                  "spec": {"zone": "z", "capacity": capacity}})
        world.hosts.cache[("", name)] = host
        world.leases.cache[("", f"host-{name}")] = {
            "spec": {"renewTime": format_time(time.time())}}
    return world, scheduler


def seen(world: World, event: str, obj: dict[str, Any]) -> None:
    """The instance informer delivers `obj` (the cache may lag the store)."""
    world.instances.cache[("ns", obj["metadata"]["name"])] = obj
    world.instances._emit(event, obj)


def stored_host(store: FakeStore, name: str) -> str | None:
    host: str | None = store.objects[("VirtualMachineInstance", "ns", name)]["spec"].get("host")
    return host


async def test_a_stale_event_neither_places_an_instance_twice_nor_gives_its_place_away() -> None:
    store = FakeStore()
    world, scheduler = fleet(store, "a", "b")
    x = store.put("VirtualMachineInstance", instance("x"))
    seen(world, "ADDED", x)
    await scheduler.schedule_batch()
    first = stored_host(store, "x")
    assert first in ("a", "b")
    seen(world, "MODIFIED", x)  # the cache still shows x unbound
    await scheduler.schedule_batch()
    y = store.put("VirtualMachineInstance", instance("y"))
    seen(world, "ADDED", y)
    await scheduler.schedule_batch()
    assert stored_host(store, "x") == first
    assert stored_host(store, "y") not in (None, first)  # each host holds 2 vCPU: one each


async def test_a_bind_whose_answer_was_lost_keeps_its_place() -> None:
    store = FakeStore(fail_after_patch=1)
    world, scheduler = fleet(store, "a", "b")
    x = store.put("VirtualMachineInstance", instance("x"))
    seen(world, "ADDED", x)
    with pytest.raises(ClientError):  # the pass fails (and is retried): the bind was applied
        await scheduler.schedule_batch()
    first = stored_host(store, "x")
    assert first in ("a", "b")
    y = store.put("VirtualMachineInstance", instance("y"))
    seen(world, "ADDED", y)
    await scheduler.schedule_batch()
    assert stored_host(store, "y") not in (None, first)


async def test_a_bind_that_failed_without_being_applied_is_placed_again() -> None:
    store = FakeStore(fail_before_patch=1)
    world, scheduler = fleet(store, "a", "b")
    x = store.put("VirtualMachineInstance", instance("x"))
    seen(world, "ADDED", x)
    scheduler.capacity_freed = False  # as the scheduler's loop leaves it before a pass
    with pytest.raises(ClientError):
        await scheduler.schedule_batch()
    assert stored_host(store, "x") is None
    assert scheduler.capacity_freed  # the scheduler's loop places everything unbound again
    scheduler.retry_all()
    await scheduler.schedule_batch()
    assert stored_host(store, "x") in ("a", "b")


async def test_a_hosts_report_says_what_it_holds_and_drops_what_it_no_longer_does() -> None:
    store = FakeStore()
    world, scheduler = fleet(store, "g", gpus=1)
    x = store.put("VirtualMachineInstance", instance("x", vcpu=1, gpus=1))
    seen(world, "ADDED", x)
    await scheduler.schedule_batch()
    seen(world, "MODIFIED", copy.deepcopy(store.objects[("VirtualMachineInstance", "ns", "x")]))
    scheduler.on_host("MODIFIED", world.hosts.cache[("", "g")])
    await scheduler.report()
    status = store.objects[("Host", "", "g")]["status"]
    assert [e["instance"] for e in status["allocations"]] == ["ns/x"]
    assert status["allocated"]["gpus"] == [{"model": GPU, "count": 1}]
    world.hosts.cache[("", "g")] = copy.deepcopy(store.objects[("Host", "", "g")])
    seen(world, "DELETED", world.instances.cache.pop(("ns", "x")))
    await scheduler.report()
    status = store.objects[("Host", "", "g")]["status"]
    assert status["allocations"] == []
    assert status["allocated"] == {"vcpu": 0, "memoryBytes": 0}  # no GPUs left behind
