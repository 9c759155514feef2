"""The Disk controller: provisioning, size, zone binding, usage and protection while in use.

A disk is provisioned once it has a zone: its own spec.placement.zone, or the zone of the first
VM using it (or hot-swapping it), bound when that VM is scheduled (until then it waits, and the
VM shows WaitingForVolumeBinding).  An unknown image or storage class, or an injected fault, fails it
for good (ProvisioningFailed).  Deleting a disk that a VM or an attachment still uses is held
by a finalizer, with a condition that names the user, until the use ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from evroc_compute.api.compute import DISK, FINALIZER_DISK
from evroc_compute.api.infra import FAULT_PREFIX
from evroc_compute.api.meta import now_rfc3339, parse_time
from evroc_compute.client.base import Client
from evroc_compute.controllers.hotswap import claim_problem, reported
from evroc_compute.controllers.vmstatus import Condition, conditions_to_dicts
from evroc_compute.runtime.controller import Key, Result
from evroc_compute.runtime.settings import Settings
from evroc_compute.runtime.world import (
    World,
    condition,
    deleting,
    get,
    ns_name,
)
from evroc_compute.runtime.writes import set_finalizer, write_status

FAULT_PROVISIONING = FAULT_PREFIX + "provisioning"


class DiskController:
    def __init__(self, client: Client, world: World, settings: Settings, *,
                 wall: Callable[[], float] = time.time) -> None:
        self.client, self.world, self.settings, self.wall = client, world, settings, wall

    def usage(self, disk: dict[str, Any]) -> list[dict[str, Any]]:
        """Every consumer: VMs that list it in spec.diskRefs, attachments that validly claim it."""
        namespace, name = disk["metadata"]["namespace"], disk["metadata"]["name"]
        out: list[dict[str, Any]] = [{"useKind": "permanent", "vm": vm["metadata"]["name"]}
                                     for vm in self.world.vms.by_index("disk", ns_name(namespace, name))]
        for attachment in self.world.attachments.by_index("disk", ns_name(namespace, name)):
            plugged = (reported(self.world, attachment) or {}).get("attached")
            if claim_problem(self.world, attachment) is None or plugged:
                out.append({"useKind": "hotswap", "vm": get(attachment, "spec", "vmRef"),
                            "attachment": attachment["metadata"]["name"]})
        return out

    def _first_use_zone(self, disk: dict[str, Any]) -> str | None:
        """The zone of the host running the first VM that uses this disk, once it is scheduled.

        A hot-swap attachment is a use too: its VM's zone binds a disk nobody else uses.
        """
        namespace = disk["metadata"]["namespace"]
        at = ns_name(namespace, disk["metadata"]["name"])
        users = [vm["metadata"]["name"] for vm in self.world.vms.by_index("disk", at)]
        users += [get(a, "spec", "vmRef") for a in sorted(
            self.world.attachments.by_index("disk", at),
            key=lambda a: a["metadata"].get("creationTimestamp", "")) if not deleting(a)]
        for vm_name in users:
            instance = self.world.instances.get(namespace, vm_name or "")
            host = self.world.hosts.get("", get(instance, "spec", "host") or "")
            if host is not None:
                return str(host["spec"]["zone"])
        return None

    def _failure(self, disk: dict[str, Any]) -> str:
        fault = (disk["metadata"].get("annotations") or {}).get(FAULT_PROVISIONING)
        if fault is not None:
            return f"provisioning failed: {fault or 'injected fault'} ({FAULT_PROVISIONING})"
        image = get(disk, "spec", "diskImage", "diskImageRef", "name")
        if image and self.world.images.get("", image) is None:
            return (f'DiskImage "{image}" does not exist; `kubectl get diskimages` lists the '
                    "images; re-create the disk with one of them")
        storage_class = get(disk, "spec", "diskStorageClass", "name") or "persistent"
        if self.world.storage_classes.get("", storage_class) is None:
            return f'DiskStorageClass "{storage_class}" does not exist'
        return ""

    def _size(self, disk: dict[str, Any]) -> dict[str, Any] | None:
        size = get(disk, "spec", "diskSize")
        if size:
            return dict(size)
        image = self.world.images.get("", get(disk, "spec", "diskImage", "diskImageRef", "name"))
        default = get(image, "spec", "defaultDiskSize")
        return dict(default) if default else None

    async def reconcile(self, key: Key) -> Result:
        disk = self.world.disks.get(*key)
        if disk is None:
            return Result()
        usage = self.usage(disk)
        status: dict[str, Any] = dict(disk.get("status") or {})
        status["diskUsage"] = usage
        if not usage:
            del status["diskUsage"]
        generation = disk["metadata"].get("generation", 1)
        old_conditions = get(disk, "status", "conditions") or []
        if deleting(disk):
            if usage:
                users = ", ".join(f'VirtualMachine "{u["vm"]}"' + (
                    f' (attachment "{u["attachment"]}")' if u.get("attachment") else "")
                    for u in usage)
                held = Condition(type="DeletionBlocked", status="True", reason="InUse",
                                 message=f"the disk is deleted once no VM uses it; in use by {users}",
                                 observed_generation=generation)
                kept = [c for c in old_conditions if c.get("type") != "DeletionBlocked"]
                status["conditions"] = kept + conditions_to_dicts([held], now_rfc3339(),
                                                                  old_conditions)
                await write_status(self.client, DISK, disk, status)
                return Result()
            await set_finalizer(self.client, DISK, disk, FINALIZER_DISK, False)
            return Result()
        disk = await set_finalizer(self.client, DISK, disk, FINALIZER_DISK, True)
        now = self.wall()
        requeue: float | None = None
        failure = self._failure(disk)
        zone = get(disk, "spec", "placement", "zone") or get(disk, "status", "placement", "zone") \
            or self._first_use_zone(disk)
        size = self._size(disk)
        if size:
            status["diskSize"] = size
        if zone:
            status["placement"] = {"zone": zone}
        previous = condition(disk, "Ready") or {}
        if failure:
            ready = Condition(type="Ready", status="False", reason="ProvisioningFailed",
                              message=failure, observed_generation=generation)
        elif previous.get("status") == "True":
            ready = Condition(type="Ready", status="True", reason="Ready",
                              message=f"the disk is provisioned in zone {zone}",
                              observed_generation=generation)
        elif not zone:
            ready = Condition(type="Ready", status="False", reason="WaitingForFirstConsumer",
                              message="the disk has no zone yet; it is bound to the zone of the "
                                      "first VM that uses or hot-swaps it when that VM is "
                                      "scheduled",
                              observed_generation=generation)
        else:
            started = parse_time(previous.get("lastTransitionTime")) \
                if previous.get("reason") == "Provisioning" else None
            started = now if started is None else started
            remaining = started + self.settings.timing.provision - now
            if remaining <= 0:
                ready = Condition(type="Ready", status="True", reason="Ready",
                                  message=f"the disk is provisioned in zone {zone}",
                                  observed_generation=generation)
            else:
                ready = Condition(type="Ready", status="False", reason="Provisioning",
                                  message=f"the disk is being provisioned in zone {zone}",
                                  observed_generation=generation)
                requeue = remaining
        kept = [c for c in old_conditions if c.get("type") not in ("Ready", "DeletionBlocked")]
        status["conditions"] = conditions_to_dicts([ready], now_rfc3339(), old_conditions) + kept
        await write_status(self.client, DISK, disk, status)
        return Result(requeue_after=requeue)

