"""HotswapDiskAttachment: who may attach which disk, and what the attachment reports.

A claim is valid when the VM and the disk exist, the disk is Ready, in the VM's zone and not
used elsewhere (by a VM's spec.diskRefs or by an older valid attachment).  A valid claim holds
the disk for its VM across stops and starts; it is plugged in while the VM runs (the VM
controller puts it on the instance, the host agent hot-plugs it and reports the device).
Deleting the attachment unplugs the disk first: its finalizer goes once the agent no longer
reports it attached.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from evroc_compute.api.compute import HOTSWAP_DISK_ATTACHMENT
from evroc_compute.api.meta import now_rfc3339
from evroc_compute.client.base import Client
from evroc_compute.controllers.vmstatus import Condition, conditions_to_dicts
from evroc_compute.runtime.controller import Key, Result
from evroc_compute.runtime.world import (
    FINALIZER_ATTACHMENT,
    World,
    condition,
    deleting,
    disk_zone,
    get,
    ns_name,
)
from evroc_compute.runtime.writes import set_finalizer, write_status


@dataclass(frozen=True, slots=True)
class Problem:
    reason: str
    message: str


def serial_for(attachment: dict[str, Any]) -> str:
    """A stable serial the guest sees (/dev/disk/by-id), derived from the attachment's uid."""
    return "evroc-" + attachment["metadata"]["uid"].replace("-", "")[:14]


def _order(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj["metadata"]
    return meta.get("creationTimestamp", ""), meta["name"]


def claim_problem(world: World, attachment: dict[str, Any]) -> Problem | None:
    """Why this attachment may not hold its disk, or None when its claim is valid."""
    namespace = attachment["metadata"]["namespace"]
    vm_name, disk_name = get(attachment, "spec", "vmRef"), get(attachment, "spec", "diskRef")
    vm = world.vms.get(namespace, vm_name)
    if vm is None or deleting(vm):
        return Problem("VMNotFound", f'VirtualMachine "{vm_name}" does not exist; create it or '
                       "delete this attachment")
    disk = world.disks.get(namespace, disk_name)
    if disk is None or (deleting(disk) and not (reported(world, attachment) or {}).get("attached")):
        return Problem("DiskNotFound", f'Disk "{disk_name}" does not exist')
    ready = condition(disk, "Ready")
    if not ready or ready.get("status") != "True":
        return Problem("DiskNotReady", f'Disk "{disk_name}" is not ready'
                       + (f': {ready.get("message")}' if ready and ready.get("message") else ""))
    for user in world.vms.by_index("disk", ns_name(namespace, disk_name)):
        return Problem("DiskInUse", f'Disk "{disk_name}" is a permanent disk of VirtualMachine '
                       f'"{user["metadata"]["name"]}"; a disk is used by one VM at a time')
    for other in sorted(world.attachments.by_index("disk", ns_name(namespace, disk_name)),
                        key=_order):
        if other["metadata"]["name"] == attachment["metadata"]["name"]:
            break
        if not deleting(other) and claim_problem(world, other) is None:
            return Problem("DiskInUse", f'Disk "{disk_name}" is attached to VirtualMachine '
                           f'"{get(other, "spec", "vmRef")}" by HotswapDiskAttachment '
                           f'"{other["metadata"]["name"]}"')
    vm_zone = get(vm, "status", "placement", "zone") or get(vm, "spec", "placement", "zone")
    zone = disk_zone(disk)
    if vm_zone and zone and vm_zone != zone:
        return Problem("ZoneMismatch", f'Disk "{disk_name}" is in zone {zone} but VirtualMachine '
                       f'"{vm_name}" runs in zone {vm_zone}; a disk attaches only in its own zone')
    return None


def reported(world: World, attachment: dict[str, Any]) -> dict[str, Any] | None:
    """The agent's report of this attachment on the VM's instance, if any."""
    meta = attachment["metadata"]
    instance = world.instances.get(meta["namespace"], get(attachment, "spec", "vmRef"))
    for entry in get(instance, "status", "hotswap") or []:
        if entry.get("attachment") == meta["name"]:
            return dict(entry)
    return None


class HotswapController:
    def __init__(self, client: Client, world: World) -> None:
        self.client, self.world = client, world

    async def reconcile(self, key: Key) -> Result:
        attachment = self.world.attachments.get(*key)
        if attachment is None:
            return Result()
        plugged = reported(self.world, attachment)
        if deleting(attachment):
            if plugged is None or not plugged.get("attached"):
                await set_finalizer(self.client, HOTSWAP_DISK_ATTACHMENT, attachment,
                                    FINALIZER_ATTACHMENT, False)
            return Result()
        attachment = await set_finalizer(self.client, HOTSWAP_DISK_ATTACHMENT, attachment,
                                         FINALIZER_ATTACHMENT, True)
        generation = attachment["metadata"].get("generation", 1)
        problem = claim_problem(self.world, attachment)
        vm = self.world.vms.get(key[0], get(attachment, "spec", "vmRef"))
        if problem is not None:
            ready = Condition(type="Ready", status="False", reason=problem.reason,
                              message=problem.message, observed_generation=generation)
        elif plugged is not None and plugged.get("attached"):
            ready = Condition(type="Ready", status="True", reason="Attached",
                              message=f'attached to VirtualMachine "{get(attachment, "spec", "vmRef")}" '
                                      f'as {plugged.get("device")}', observed_generation=generation)
        elif get(vm, "status", "virtualMachineStatus") != "Running":
            ready = Condition(type="Ready", status="False", reason="VMNotRunning",
                              message=f'VirtualMachine "{get(attachment, "spec", "vmRef")}" is '
                                      f'{get(vm, "status", "virtualMachineStatus") or "not running"}'
                                      "; the disk is hot-plugged once it runs",
                              observed_generation=generation)
        else:
            why = plugged.get("message") if plugged else ""
            ready = Condition(type="Ready", status="False", reason="Attaching",
                              message=why or "the host is hot-plugging the disk",
                              observed_generation=generation)
        status = {"conditions": conditions_to_dicts(
                      [ready], now_rfc3339(), get(attachment, "status", "conditions") or []),
                  "serial": serial_for(attachment)}
        await write_status(self.client, HOTSWAP_DISK_ATTACHMENT, attachment, status)
        return Result()
