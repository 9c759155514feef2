"""The shared read side of every controller: one informer per kind, with the indexes they need.

Controllers read the world here and write through the client; one cache per kind (not one per
controller) keeps memory at one copy of each object however many controllers read it.  The
small readers at the bottom turn cached objects into the facts the pure decision functions take.
"""

from __future__ import annotations

import asyncio
from typing import Any

from evroc_compute.api import catalog, compute, infra, networking, quota
from evroc_compute.api.kinds import Kind
from evroc_compute.api.meta import parse_time
from evroc_compute.client.base import Client
from evroc_compute.runtime.controller import Key
from evroc_compute.runtime.informer import Informer

FINALIZER_ATTACHMENT = "compute.evroclabs.net/hotswap-detach"
FINALIZER_INSTANCE = "infra.evroc-compute.io/guest-shutdown"


def get(obj: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def ns_name(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def key_of(obj: dict[str, Any]) -> Key:
    meta = obj["metadata"]
    return meta.get("namespace") or "", meta["name"]


def deleting(obj: dict[str, Any]) -> bool:
    return bool(obj["metadata"].get("deletionTimestamp"))


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for c in get(obj, "status", "conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return None


def disk_refs(vm: dict[str, Any]) -> list[dict[str, Any]]:
    """spec.diskRefs with the boot disk first (it is /dev/vda), the others in order."""
    refs = [r for r in get(vm, "spec", "diskRefs") or [] if isinstance(r, dict)]
    return sorted(refs, key=lambda r: not r.get("bootFrom"))


def disk_zone(disk: dict[str, Any]) -> str | None:
    zone = get(disk, "status", "placement", "zone") or get(disk, "spec", "placement", "zone")
    return str(zone) if zone else None


def public_ip_ref(vm: dict[str, Any]) -> str | None:
    ref = get(vm, "spec", "networking", "publicIPv4Address", "static", "publicIPRef")
    return ref if isinstance(ref, str) and ref else None


DEFAULT_SECURITY_GROUP = "default"


def security_group_refs(vm: dict[str, Any]) -> list[str]:
    """The security groups the VM is in: the ones it names, or its project's default group."""
    named = get(vm, "spec", "networking", "securityGroups", "securityGroupMemberships") or []
    return sorted({str(m["name"]) for m in named if isinstance(m, dict) and m.get("name")}) \
        or [DEFAULT_SECURITY_GROUP]


class World:
    """Informers for every kind the control plane reads."""

    def __init__(self, client: Client) -> None:
        def informer(kind: Kind) -> Informer:
            return Informer(client, kind)

        self.vms = informer(compute.VIRTUAL_MACHINE)
        self.disks = informer(compute.DISK)
        self.attachments = informer(compute.HOTSWAP_DISK_ATTACHMENT)
        self.groups = informer(compute.PLACEMENT_GROUP)
        self.public_ips = informer(networking.PUBLIC_IP)
        self.security_groups = informer(networking.SECURITY_GROUP)
        self.profiles = informer(catalog.VM_VIRTUAL_RESOURCES)
        self.images = informer(catalog.DISK_IMAGE)
        self.storage_classes = informer(catalog.DISK_STORAGE_CLASS)
        self.instances = informer(infra.VIRTUAL_MACHINE_INSTANCE)
        self.hosts = informer(infra.HOST)
        self.leases = informer(infra.LEASE)
        self.quotas = informer(quota.RESOURCE_QUOTA)
        self.informers = (self.vms, self.disks, self.attachments, self.groups, self.public_ips,
                          self.security_groups, self.profiles, self.images,
                          self.storage_classes, self.instances, self.hosts, self.leases,
                          self.quotas)

        def ns_refs(obj: dict[str, Any], names: list[Any]) -> list[str]:
            namespace = obj["metadata"].get("namespace", "")
            return [ns_name(namespace, n) for n in names if isinstance(n, str) and n]

        self.vms.add_index("disk", lambda vm: ns_refs(vm, [r.get("name") for r in disk_refs(vm)]))
        self.vms.add_index("group", lambda vm: ns_refs(vm, [get(vm, "spec", "placementGroup")]))
        self.vms.add_index("publicip", lambda vm: ns_refs(vm, [public_ip_ref(vm)]))
        self.vms.add_index("securitygroup", lambda vm: ns_refs(vm, security_group_refs(vm)))
        self.security_groups.add_index("namespace", lambda g: [g["metadata"]["namespace"]])
        self.attachments.add_index("vm", lambda a: ns_refs(a, [get(a, "spec", "vmRef")]))
        self.attachments.add_index("disk", lambda a: ns_refs(a, [get(a, "spec", "diskRef")]))
        self.instances.add_index("host", lambda i: [h for h in (
            get(i, "spec", "host"), get(i, "spec", "migrateTo")) if h])
        self._tasks: list[asyncio.Task[None]] = []
        self.synced = asyncio.Event()

    @property
    def agent_informers(self) -> tuple[Informer, ...]:
        """What a host agent reads (and, as a host, may read): its instances and hosts, what
        the instances run (VMs, Disks, images), and the SecurityGroups it enforces."""
        return (self.instances, self.hosts, self.vms, self.disks, self.images,
                self.security_groups)

    async def start(self, informers: tuple[Informer, ...] | None = None) -> None:
        """Run the informers (default: every one) and wait until each has listed once."""
        running = self.informers if informers is None else informers
        self._tasks = [asyncio.create_task(i.run(), name=f"informer-{i.kind.plural}")
                       for i in running]
        await asyncio.gather(*(i.synced.wait() for i in running))
        self.synced.set()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    # ---- readings ----------------------------------------------------------------------

    def host_alive(self, name: str, now: float, timeout: float) -> bool:
        """A host is alive while its lease was renewed within `timeout` seconds."""
        lease = self.leases.get("", f"host-{name}")
        renewed = parse_time(get(lease, "spec", "renewTime"))
        return renewed is not None and now - renewed <= timeout
