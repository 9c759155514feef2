"""The controller manager: one World of informers, the controllers, and the events between them.

Each controller is level-triggered and has its own work queue; the handlers here only decide
which keys an event concerns (a Disk's change concerns the VMs that use it, an instance's
change its VM, ...).  Everything runs in the server's event loop and talks to the API through
the client it is given.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import evroc_compute.runtime.metrics  # noqa: F401  (registers the controllers' metrics)
from evroc_compute.api.kinds import Kind
from evroc_compute.client.base import Client
from evroc_compute.client.recorder import EventRecorder
from evroc_compute.controllers.disk import DiskController
from evroc_compute.controllers.history import StatusHistory
from evroc_compute.controllers.hosts import HostMonitor
from evroc_compute.controllers.hotswap import HotswapController
from evroc_compute.controllers.placementgroup import PlacementGroupController
from evroc_compute.controllers.publicip import PublicIPController
from evroc_compute.controllers.quota import QuotaController
from evroc_compute.controllers.scheduling import Scheduler
from evroc_compute.controllers.securitygroup import SecurityGroupController
from evroc_compute.controllers.vm import VMController
from evroc_compute.runtime.controller import Controller, Key, WorkQueue
from evroc_compute.runtime.settings import Settings
from evroc_compute.runtime.world import World, get, key_of, public_ip_ref, security_group_refs

EVENT_SOURCE = "evroc-compute-controllers"


class Manager:
    def __init__(self, client: Client, settings: Settings, world: World | None = None, *,
                 workers: int = 32) -> None:
        """`workers`: reconciles at once of each of the VM and Disk controllers."""
        self.client, self.settings = client, settings
        self.world = world or World(client)
        w = self.world
        self.scheduler = Scheduler(client, w, settings)
        self.vm = VMController(client, w, settings, self.scheduler)
        self.disk = DiskController(client, w, settings)
        self.hotswap = HotswapController(client, w)
        self.public_ip = PublicIPController(client, w, settings)
        self.group = PlacementGroupController(client, w)
        self.security_group = SecurityGroupController(client, w)
        self.quota = QuotaController(client, w)
        self.monitor = HostMonitor(client, w, settings, self._host_changed)
        self.recorder = EventRecorder(client, EVENT_SOURCE, socket.gethostname())
        self.history = StatusHistory(w, self.recorder)
        self.queues: dict[str, WorkQueue] = {}
        self.controllers = [self._controller("vm", self.vm, workers),
                            self._controller("disk", self.disk, workers),
                            self._controller("hotswap", self.hotswap, 2),
                            self._controller("publicip", self.public_ip, 2),
                            self._controller("placementgroup", self.group, 2),
                            self._controller("securitygroup", self.security_group, 2),
                            self._controller("quota", self.quota, 1)]
        self._refs: dict[Key, dict[str, set[str]]] = {}
        self._host_specs: dict[str, Any] = {}
        self._host_groups: dict[str, list[Any]] = {}  # what each host reports programmed
        w.vms.add_handler(self._on_vm)
        w.disks.add_handler(self._on_disk)
        w.attachments.add_handler(self._on_attachment)
        w.instances.add_handler(self._on_instance)
        w.instances.add_handler(self.scheduler.on_instance)
        w.hosts.add_handler(self._on_host)
        w.hosts.add_handler(self.scheduler.on_host)
        w.public_ips.add_handler(self._on_public_ip)
        w.groups.add_handler(self._on_group)
        w.security_groups.add_handler(self._on_security_group)
        w.images.add_handler(lambda event, image: self._requeue_all("disk", w.disks.cache))
        w.profiles.add_handler(lambda event, profile: self._requeue_all("vm", w.vms.cache))
        for kind, informer in self.quota.counted:
            informer.add_handler(self._quota_handler(kind))
        w.quotas.add_handler(lambda event, item: self._add("quota", key_of(item)))
        for catalog_informer in (w.profiles, w.images):
            catalog_informer.add_handler(
                lambda event, entry: self._requeue_all("quota", w.quotas.cache))

    def _controller(self, name: str, reconciler: Any, workers: int) -> Controller:
        queue = self.queues[name] = WorkQueue()
        return Controller(name, reconciler, queue, workers=workers)

    def _add(self, queue: str, *keys: Key) -> None:
        for key in keys:
            self.queues[queue].add(key)

    def _requeue_all(self, queue: str, cache: dict[Key, Any]) -> None:
        self._add(queue, *cache)

    def _quota_handler(self, kind: Kind) -> Callable[[str, dict[str, Any]], None]:
        return lambda event, obj: self._add("quota", *self.quota.affected(kind, event, obj))

    # ---- who an event concerns --------------------------------------------------------

    def _on_vm(self, event: str, vm: dict[str, Any]) -> None:
        key = key_of(vm)
        namespace = key[0]
        now = {"disk": {r.get("name") for r in get(vm, "spec", "diskRefs") or []},
               "publicip": {public_ip_ref(vm)}, "group": {get(vm, "spec", "placementGroup")},
               "securitygroup": set(security_group_refs(vm))}
        before = self._refs.pop(key, {})
        if event == "DELETED":
            self.vm.release(vm)
            # A freed address may be what a VM of the project in an exhausted subnet waits for.
            self._add("vm", *(k for k, other in self.world.vms.cache.items()
                              if k[0] == namespace and get(other, "status", "placement", "zone")
                              and not get(other, "status", "networking", "privateIPv4Address")))
        else:
            self._refs[key] = {k: {n for n in v if n} for k, v in now.items()}
        for kind, queue in (("disk", "disk"), ("publicip", "publicip"), ("group", "placementgroup"),
                            ("securitygroup", "securitygroup")):
            names = {n for n in now[kind] | before.get(kind, set()) if n}
            self._add(queue, *((namespace, n) for n in names))
        self._add("vm", key)
        self._add("hotswap", *(key_of(a) for a in self.world.attachments.by_index(
            "vm", f"{namespace}/{key[1]}")))

    def _on_disk(self, event: str, disk: dict[str, Any]) -> None:
        namespace, name = key_of(disk)
        self._add("disk", (namespace, name))
        self._add("vm", *(key_of(vm) for vm in self.world.vms.by_index("disk", f"{namespace}/{name}")))
        self._add("hotswap", *(key_of(a) for a in self.world.attachments.by_index(
            "disk", f"{namespace}/{name}")))

    def _on_attachment(self, event: str, attachment: dict[str, Any]) -> None:
        namespace, _ = key_of(attachment)
        disk = get(attachment, "spec", "diskRef")
        self._add("hotswap", key_of(attachment), *(key_of(a) for a in self.world.attachments.by_index(
            "disk", f"{namespace}/{disk}")))
        self._add("vm", (namespace, get(attachment, "spec", "vmRef")))
        self._add("disk", (namespace, disk))

    def _on_instance(self, event: str, instance: dict[str, Any]) -> None:
        key = key_of(instance)
        self._add("vm", key)
        self._add("disk", *((key[0], d["name"]) for d in get(instance, "spec", "disks") or []))
        attachments = self.world.attachments.by_index("vm", f"{key[0]}/{key[1]}")
        self._add("hotswap", *(key_of(a) for a in attachments))
        self._add("disk", *((key[0], get(a, "spec", "diskRef")) for a in attachments))
        vm = self.world.vms.get(*key)
        group = get(vm, "spec", "placementGroup")
        if group:
            self._add("placementgroup", (key[0], group))
        if vm is not None:  # whether it runs, and where, says which hosts enforce its groups
            self._add("securitygroup", *((key[0], g) for g in security_group_refs(vm)))

    def _on_public_ip(self, event: str, pip: dict[str, Any]) -> None:
        namespace, name = key_of(pip)
        if event == "DELETED":
            self.public_ip.release(pip)
        else:
            self._add("publicip", (namespace, name))
        self._add("vm", *(key_of(vm) for vm in self.world.vms.by_index(
            "publicip", f"{namespace}/{name}")))

    def _on_group(self, event: str, group: dict[str, Any]) -> None:
        namespace, name = key_of(group)
        if event != "DELETED":
            self._add("placementgroup", (namespace, name))
        self._add("vm", *(key_of(vm) for vm in self.world.vms.by_index(
            "group", f"{namespace}/{name}")))

    def _on_security_group(self, event: str, group: dict[str, Any]) -> None:
        namespace, name = key_of(group)  # its members' status says whether it exists
        if event != "DELETED":
            self._add("securitygroup", (namespace, name))
        self._add("vm", *(key_of(vm) for vm in self.world.vms.by_index(
            "securitygroup", f"{namespace}/{name}")))

    def _on_host(self, event: str, host: dict[str, Any]) -> None:
        # The groups an agent reports programmed (or no longer) concern those groups.
        name = host["metadata"]["name"]
        reports = [] if event == "DELETED" else get(host, "status", "securityGroups") or []
        before = self._host_groups.pop(name, [])
        if reports:
            self._host_groups[name] = reports
        if reports != before:
            self._add("securitygroup", *{(g["namespace"], g["name"]) for g in reports + before})
        # Only what the operator changes (spec, fault annotations) concerns VMs and placement;
        # the scheduler's reports of status.allocations do not.
        seen = None if event == "DELETED" else (host.get("spec"), host["metadata"].get("annotations"))
        if self._host_specs.get(name) != seen:
            self._host_specs[name] = seen
            self._host_changed(name)

    def _host_changed(self, host: str) -> None:
        self._add("vm", *(key_of(i) for i in self.world.instances.by_index("host", host)))
        self.scheduler.retry_all()

    # ---- running ----------------------------------------------------------------------

    async def run(self) -> None:
        """Sync the caches, take back recorded addresses, then reconcile until cancelled."""
        await self.world.start()
        self.vm.prime()
        self.public_ip.prime()
        for queue, cache in (("vm", self.world.vms.cache), ("disk", self.world.disks.cache),
                             ("hotswap", self.world.attachments.cache),
                             ("publicip", self.world.public_ips.cache),
                             ("placementgroup", self.world.groups.cache),
                             ("securitygroup", self.world.security_groups.cache),
                             ("quota", self.world.quotas.cache)):
            self._requeue_all(queue, cache)
        try:
            async with asyncio.TaskGroup() as group:
                for controller in self.controllers:
                    group.create_task(controller.run())
                group.create_task(self.scheduler.run())
                group.create_task(self.monitor.run())
                group.create_task(self.recorder.run())
        finally:
            for controller in self.controllers:
                controller.stop()
            await self.world.stop()
