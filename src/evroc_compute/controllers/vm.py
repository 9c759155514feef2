"""The VirtualMachine controller: from the user's declaration to an instance, and back to a status.

One reconcile reads the VM and everything it refers to from the caches and moves one step:
keep its cleanup finalizer, ask for / update / delete its VirtualMachineInstance, hold its
private address, and write the status `vm_status` computes from the facts.  A new instance is
proposed to the scheduler, which creates it already bound to a host (one write where a create
and a bind were two); until then the VM has no instance, and asking again changes nothing.
Deleting a VM deletes its instance (the host agent shuts the guest down first), then releases
its address and clears the finalizer; its disks stay.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from evroc_compute.api import compute, infra
from evroc_compute.api.compute import FINALIZER_VM, VIRTUAL_MACHINE, size_in_bytes
from evroc_compute.api.infra import FAULT_PREFIX
from evroc_compute.api.meta import parse_time
from evroc_compute.client.base import Client, ClientError
from evroc_compute.controllers.addresses import AddressPool, PoolExhausted
from evroc_compute.controllers.hotswap import claim_problem, serial_for
from evroc_compute.controllers.vmstatus import (
    AttachedDisk,
    DiskFacts,
    HostFacts,
    HotswapFacts,
    InstanceFacts,
    NetworkFacts,
    VMFacts,
    vm_status,
)
from evroc_compute.runtime.controller import Key, Result
from evroc_compute.runtime.settings import Settings
from evroc_compute.runtime.world import (
    DEFAULT_SECURITY_GROUP,
    FINALIZER_INSTANCE,
    World,
    condition,
    deleting,
    disk_refs,
    disk_zone,
    get,
    key_of,
    public_ip_ref,
    security_group_refs,
)
from evroc_compute.runtime.writes import delete_quietly, set_finalizer, write_status

VIRTIO_DEVICES = tuple(f"/dev/vd{chr(ord('a') + i)}" for i in range(compute.MAX_DISKS))


class Placer(Protocol):
    """Who creates a VM's new instance, bound to a host (the scheduler)."""

    def propose(self, instance: dict[str, Any]) -> None:
        """Create this instance once a host is chosen (a newer proposal replaces it)."""

    def withdraw(self, key: Key) -> None:
        """The VM no longer wants the instance it proposed."""


def resources_of(profile: dict[str, Any]) -> dict[str, Any]:
    """A VMVirtualResources spec as instance resources (bytes, per-model GPUs)."""
    spec = profile.get("spec") or {}
    resources: dict[str, Any] = {"vcpu": spec.get("vcpu", 0),
                                 "memoryBytes": size_in_bytes(spec.get("memory")) or 0}
    gpus = spec.get("gpus") or {}
    if gpus.get("quantity"):
        resources["gpus"] = [{"model": gpus["model"], "count": gpus["quantity"]}]
    if gpus.get("localDisk"):
        resources["localDiskGB"] = gpus["localDisk"]
    return resources


def disk_facts(name: str, disk: dict[str, Any] | None) -> DiskFacts:
    if disk is None:  # a disk being deleted still exists: its finalizer holds it while used
        return DiskFacts(name=name, exists=False, ready=False, failed=False, zone=None, bound=False)
    ready = condition(disk, "Ready") or {}
    zone = disk_zone(disk)
    return DiskFacts(name=name, exists=True, ready=ready.get("status") == "True",
                     failed=ready.get("reason") == "ProvisioningFailed",
                     failure_message=str(ready.get("message") or ""), zone=zone,
                     bound=zone is not None, reported=bool(ready))


def instance_facts(instance: dict[str, Any]) -> InstanceFacts:
    status = instance.get("status") or {}
    return InstanceFacts(
        phase=status.get("phase") or "Pending", host=get(instance, "spec", "host") or None,
        unschedulable_message=status.get("unschedulable") or "",
        image_pull_error=status.get("imagePullError") or "",
        image_pull_failures=status.get("imagePullFailures") or 0,
        image_retry_at=parse_time(status.get("imageRetryAt")),
        crash_count=status.get("crashCount") or 0,
        crash_retry_at=parse_time(status.get("crashRetryAt")),
        message=status.get("message") or "",
        ssh_endpoint=status.get("sshEndpoint") or None,
        disks=tuple(AttachedDisk(name=d["name"], device=d["device"])
                    for d in get(instance, "spec", "disks") or []),
        hotswap=tuple(status.get("hotswap") or ()))


class VMController:
    def __init__(self, client: Client, world: World, settings: Settings, placer: Placer, *,
                 wall: Callable[[], float] = time.time) -> None:
        self.client, self.world, self.settings, self.wall = client, world, settings, wall
        self.placer = placer
        # One pool per project (namespace) and zone: like evroc's default subnets, every
        # project has the same ranges, which overlap between projects and never collide
        # within one.
        self.pools: dict[tuple[str, str], AddressPool] = {}

    def prime(self) -> None:
        """Take back the addresses recorded on VMs (after a restart)."""
        for vm in self.world.vms.cache.values():
            self._claim_recorded(vm)

    def _owner(self, vm: dict[str, Any]) -> str:
        return str(vm["metadata"]["uid"])

    def _pool(self, vm: dict[str, Any], zone: str | None) -> AddressPool | None:
        """The address pool of the VM's project in `zone` (None: the zone has no subnet)."""
        if not zone:
            return None
        key = (str(vm["metadata"]["namespace"]), zone)
        pool = self.pools.get(key)
        if pool is None:
            network = self.settings.subnet(zone)
            if network is None:
                return None
            pool = self.pools[key] = AddressPool(network)
        return pool

    def _claim_recorded(self, vm: dict[str, Any]) -> None:
        address = get(vm, "status", "networking", "privateIPv4Address")
        pool = self._pool(vm, get(vm, "status", "placement", "zone"))
        if address and pool is not None:
            pool.claim(self._owner(vm), address)

    def release(self, vm: dict[str, Any]) -> None:
        namespace = vm["metadata"]["namespace"]
        for (project, _), pool in self.pools.items():
            if project == namespace:
                pool.release(self._owner(vm))

    # ---- the reconcile ----------------------------------------------------------------

    async def reconcile(self, key: Key) -> Result:
        vm = self.world.vms.get(*key)
        if vm is None:
            self.placer.withdraw(key)
            return Result()
        instance = self.world.instances.get(*key)
        if instance is not None and deleting(instance) and \
                self.world.hosts.get("", get(instance, "spec", "host") or "") is None:
            # Never placed, or its host was removed: no agent is left to let it go.
            await set_finalizer(self.client, infra.VIRTUAL_MACHINE_INSTANCE, instance,
                                FINALIZER_INSTANCE, False)
        if instance is not None and get(instance, "spec", "vmUID") != vm["metadata"]["uid"]:
            await delete_quietly(self.client, infra.VIRTUAL_MACHINE_INSTANCE, instance)
            return Result()  # a previous VM's instance: gone first, then this VM runs
        if deleting(vm):
            return await self._tear_down(vm, instance)
        vm = await set_finalizer(self.client, VIRTUAL_MACHINE, vm, FINALIZER_VM, True)
        now = self.wall()
        disks = [disk_facts(ref["name"], self.world.disks.get(key[0], ref["name"]))
                 for ref in disk_refs(vm)]
        problem, resources = self._preconditions(vm, disks)
        running = bool(get(vm, "spec", "running") if get(vm, "spec", "running") is not None
                       else True)
        healthy = all(d.exists and not d.failed for d in disks) and not problem
        # An instance is made once its disks can be attached: every disk ready, or waiting
        # for the VM's placement to get a zone.  Then it is made whole, in one write.
        attachable = all(d.ready or not d.bound for d in disks)
        if running and healthy and (instance is not None or attachable):
            instance = await self._ensure_instance(vm, instance, resources, disks)
        else:
            self.placer.withdraw(key)
            if not (running and healthy) and instance is not None:
                instance = await self._wind_down(instance)
        facts = self._facts(vm, instance, disks, problem, now, self._network(vm, instance))
        decision = vm_status(facts, now)
        # Creating says the control plane has yet to act; its details (which step) are not
        # worth a write each: the status admission gave the VM stands until a real milestone.
        if not (decision.status == "Creating" == get(vm, "status", "virtualMachineStatus")):
            await write_status(self.client, VIRTUAL_MACHINE, vm, dict(decision.body))
        if decision.recheck_at is not None:
            return Result(requeue_after=max(0.0, decision.recheck_at - now))
        return Result()

    def _preconditions(self, vm: dict[str, Any],
                       disks: list[DiskFacts]) -> tuple[str, dict[str, Any]]:
        """(why the VM cannot be prepared or "", the instance's resources)."""
        namespace = vm["metadata"]["namespace"]
        profile_name = get(vm, "spec", "vmVirtualResourcesRef", "vmVirtualResourcesRefName")
        profile = self.world.profiles.get("", profile_name)
        if profile is None:
            return (f'VMVirtualResources "{profile_name}" does not exist; `kubectl get '
                    "vmvirtualresources` lists the profiles"), {}
        group = get(vm, "spec", "placementGroup")
        if group and self.world.groups.get(namespace, group) is None:
            return f'PlacementGroup "{group}" does not exist; create it or remove spec.placementGroup', {}
        pip = public_ip_ref(vm)
        if pip:
            address = self.world.public_ips.get(namespace, pip)
            used_by = get(address, "status", "usedBy")
            if address is None:
                return f'PublicIP "{pip}" does not exist; create it or remove the reference', {}
            if used_by and used_by != vm["metadata"]["name"]:
                return (f'PublicIP "{pip}" is used by VirtualMachine "{used_by}"; an address '
                        "serves one VM at a time"), {}
        zones = {d.zone for d in disks if d.zone}
        wanted = get(vm, "spec", "placement", "zone")
        if wanted:
            zones.add(wanted)
        if len(zones) > 1:
            where = ", ".join(f'disk "{d.name}" in {d.zone}' for d in disks if d.zone)
            return (f"the VM's disks and placement are in different zones ({where}"
                    f"{f', spec.placement.zone {wanted}' if wanted else ''}); a VM and its disks "
                    "must share one zone"), {}
        for ref in disk_refs(vm):
            for other in self.world.vms.by_index("disk", f"{namespace}/{ref['name']}"):
                if _older(other, vm):
                    return (f'Disk "{ref["name"]}" is already a disk of VirtualMachine '
                            f'"{other["metadata"]["name"]}"; a disk is used by one VM at a time'), {}
        return "", resources_of(profile)

    # ---- the instance -----------------------------------------------------------------

    def _instance_spec(self, vm: dict[str, Any], resources: dict[str, Any],
                       disks: list[DiskFacts]) -> dict[str, Any]:
        namespace = vm["metadata"]["namespace"]
        spec: dict[str, Any] = {
            "vmUID": vm["metadata"]["uid"], "resources": resources, "running": True,
            "disksReady": all(d.ready and d.bound for d in disks),
            "disks": [self._disk_entry(namespace, ref, VIRTIO_DEVICES[i])
                      for i, ref in enumerate(disk_refs(vm))],
            "hotswap": self._hotswaps(vm)}
        zone = get(vm, "spec", "placement", "zone") or next((d.zone for d in disks if d.zone), None)
        if zone:
            spec["zone"] = zone
        if get(vm, "spec", "placementGroup"):
            spec["placementGroup"] = get(vm, "spec", "placementGroup")
        return spec

    def _disk_entry(self, namespace: str, ref: dict[str, Any], device: str) -> dict[str, Any]:
        disk = self.world.disks.get(namespace, ref["name"]) or {}
        entry: dict[str, Any] = {"name": ref["name"], "device": device,
                                 "boot": bool(ref.get("bootFrom"))}
        image = get(disk, "spec", "diskImage", "diskImageRef", "name")
        if image:
            entry["image"] = image
        size = size_in_bytes(get(disk, "status", "diskSize"))
        if size:
            entry["sizeBytes"] = size
        return entry

    def _hotswaps(self, vm: dict[str, Any]) -> list[dict[str, Any]]:
        namespace, name = key_of(vm)
        out = []
        for attachment in self.world.attachments.by_index("vm", f"{namespace}/{name}"):
            if deleting(attachment) or claim_problem(self.world, attachment) is not None:
                continue
            out.append({"attachment": attachment["metadata"]["name"],
                        "disk": get(attachment, "spec", "diskRef"),
                        "serial": serial_for(attachment)})
        return out

    def _instance_annotations(self, vm: dict[str, Any]) -> dict[str, str]:
        """Faults injected on the VM or its boot image travel to the host agent on the instance."""
        found = {k: v for k, v in (vm["metadata"].get("annotations") or {}).items()
                 if k.startswith(FAULT_PREFIX)}
        boot = next((r for r in disk_refs(vm) if r.get("bootFrom")), None)
        disk = self.world.disks.get(vm["metadata"]["namespace"], boot["name"]) if boot else None
        image = self.world.images.get("", get(disk, "spec", "diskImage", "diskImageRef", "name"))
        for k, v in (get(image, "metadata", "annotations") or {}).items():
            if k.startswith(FAULT_PREFIX):
                found.setdefault(k, v)
        return found

    async def _ensure_instance(self, vm: dict[str, Any], instance: dict[str, Any] | None,
                               resources: dict[str, Any],
                               disks: list[DiskFacts]) -> dict[str, Any] | None:
        spec = self._instance_spec(vm, resources, disks)
        annotations = self._instance_annotations(vm)
        namespace, name = key_of(vm)
        if instance is None:
            metadata: dict[str, Any] = {
                "name": name, "namespace": namespace,
                "labels": {"compute.evroclabs.net/vm": name},
                "finalizers": [FINALIZER_INSTANCE],
                "ownerReferences": [{"apiVersion": VIRTUAL_MACHINE.api_version,
                                     "kind": "VirtualMachine", "name": name,
                                     "uid": vm["metadata"]["uid"], "controller": True}]}
            if annotations:
                metadata["annotations"] = annotations
            self.placer.propose({"apiVersion": infra.VIRTUAL_MACHINE_INSTANCE.api_version,
                                 "kind": "VirtualMachineInstance", "metadata": metadata,
                                 "spec": spec})
            return None
        current = instance.get("spec") or {}
        # The binding and a migration belong to the scheduler and the agent.
        wanted = {**spec, **{k: current[k] for k in ("host", "migrateTo") if k in current}}
        if current.get("zone") and "zone" not in spec:
            wanted["zone"] = current["zone"]
        if wanted == current and (instance["metadata"].get("annotations") or {}) == annotations:
            return instance
        body = {**instance, "spec": wanted,
                "metadata": {**instance["metadata"], "annotations": annotations}}
        return await self.client.update(infra.VIRTUAL_MACHINE_INSTANCE, body)

    async def _wind_down(self, instance: dict[str, Any]) -> dict[str, Any] | None:
        """Stop the guest, then remove the instance (which frees its host's capacity)."""
        phase = get(instance, "status", "phase") or "Pending"
        if not get(instance, "spec", "host") or phase in ("Stopped", "Failed", "Pending",
                                                           "Scheduled"):
            await delete_quietly(self.client, infra.VIRTUAL_MACHINE_INSTANCE, instance)
            return instance if get(instance, "spec", "host") else None
        if get(instance, "spec", "running") is not False:
            body = {**instance, "spec": {**instance["spec"], "running": False}}
            return await self.client.update(infra.VIRTUAL_MACHINE_INSTANCE, body)
        return instance

    async def _tear_down(self, vm: dict[str, Any], instance: dict[str, Any] | None) -> Result:
        self.placer.withdraw(key_of(vm))
        if instance is not None:
            await delete_quietly(self.client, infra.VIRTUAL_MACHINE_INSTANCE, instance)
        else:
            self.release(vm)
        now = self.wall()
        facts = self._facts(vm, instance, [], "", now, NetworkFacts(zone=self._zone(vm, instance)))
        decision = vm_status(facts, now)
        try:
            await write_status(self.client, VIRTUAL_MACHINE, vm, dict(decision.body))
        except ClientError as problem:
            if not problem.not_found:
                raise
            return Result()
        if instance is None:
            await set_finalizer(self.client, VIRTUAL_MACHINE, vm, FINALIZER_VM, False)
        return Result()

    # ---- the status -------------------------------------------------------------------

    def _facts(self, vm: dict[str, Any], instance: dict[str, Any] | None,
               disks: list[DiskFacts], problem: str, now: float, network: NetworkFacts) -> VMFacts:
        meta = vm["metadata"]
        inst = instance_facts(instance) if instance is not None else None
        host_facts = None
        if inst is not None and inst.host:
            host = self.world.hosts.get("", inst.host)
            if host is not None:
                host_facts = HostFacts(
                    name=inst.host,
                    alive=self.world.host_alive(inst.host, now, self.settings.heartbeat_timeout),
                    draining=bool(get(host, "spec", "drain")))
        created = parse_time(meta.get("creationTimestamp")) or now
        return VMFacts(
            generation=meta.get("generation", 1),
            running=get(vm, "spec", "running") is not False,
            deleting=deleting(vm),
            has_finalizers_pending=deleting(vm) and FINALIZER_VM in (meta.get("finalizers") or []),
            created_seconds_ago=now - created, provisioning_failed_message=problem,
            disks=tuple(disks), instance=inst, host=host_facts, network=network,
            hotswaps=self._hotswap_facts(vm),
            previous_conditions=tuple(get(vm, "status", "conditions") or ()))

    def _network(self, vm: dict[str, Any], instance: dict[str, Any] | None) -> NetworkFacts:
        """The VM's addresses: its private one allocated here (or kept), its public one read."""
        zone = self._zone(vm, instance)
        private, problem = get(vm, "status", "networking", "privateIPv4Address"), ""
        pool = self._pool(vm, zone)
        if pool is not None:
            try:
                private = pool.allocate(self._owner(vm))
            except PoolExhausted as exhausted:  # shown, and retried when an address is released
                private, problem = None, str(exhausted)
        pip = public_ip_ref(vm)
        address = self.world.public_ips.get(vm["metadata"]["namespace"], pip) if pip else None
        public = None
        if get(address, "status", "usedBy") == vm["metadata"]["name"]:
            public = get(address, "status", "publicIPv4Address") or None
        groups = tuple((name, name == DEFAULT_SECURITY_GROUP or self.world.security_groups.get(
            vm["metadata"]["namespace"], name) is not None) for name in security_group_refs(vm))
        return NetworkFacts(zone=zone, private_address=private or None, address_problem=problem,
                            public_address=public, security_groups=groups)

    def _hotswap_facts(self, vm: dict[str, Any]) -> tuple[HotswapFacts, ...]:
        namespace, name = key_of(vm)
        facts = []
        for attachment in self.world.attachments.by_index("vm", f"{namespace}/{name}"):
            problem = claim_problem(self.world, attachment)
            facts.append(HotswapFacts(attachment=attachment["metadata"]["name"],
                                      disk=str(get(attachment, "spec", "diskRef") or ""),
                                      serial=serial_for(attachment),
                                      problem=problem.message if problem is not None else None))
        return tuple(facts)

    def _zone(self, vm: dict[str, Any], instance: dict[str, Any] | None) -> str | None:
        host = self.world.hosts.get("", get(instance, "spec", "host") or "")
        zone = get(host, "spec", "zone") or get(instance, "spec", "zone") \
            or get(vm, "status", "placement", "zone")
        return str(zone) if zone else None


def _older(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether VM `a` came first (and so keeps a disk both refer to)."""
    if a["metadata"]["uid"] == b["metadata"]["uid"]:
        return False
    ka = (a["metadata"].get("creationTimestamp", ""), a["metadata"]["name"])
    kb = (b["metadata"].get("creationTimestamp", ""), b["metadata"]["name"])
    return ka < kb
