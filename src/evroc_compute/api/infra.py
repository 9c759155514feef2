"""infra.evroc-compute.io/v1alpha1: the kinds that run the cloud (Host, VirtualMachineInstance, Lease).

Users see VirtualMachines; operators and the control plane see these.  Like KubeVirt's VM/VMI
split, the VM stays the declaration and the VirtualMachineInstance is one run of it: created by
the VM controller when the VM should run, bound to a Host by the scheduler, run by that host's
agent, removed when the VM stops.  A Host's heartbeat is a Lease (`host-<name>`), as a
Kubernetes node's is, so heartbeats never conflict with the scheduler's writes to the Host.
"""

from __future__ import annotations

from typing import Any

from evroc_compute.api.catalog import GPU_MODELS
from evroc_compute.api.compute import conditions, size
from evroc_compute.api.kinds import Column, Kind
from evroc_compute.api.schema import FieldError, array, boolean, integer, invalid, obj, string
from evroc_compute.api.tables import age, path

GROUP = "infra.evroc-compute.io"
VERSION = "v1alpha1"

FAULT_PREFIX = "fault.evroc-compute.io/"
"""Annotations under this prefix inject faults into the simulated fleet (README: Simulation)."""

PHASES = ("Pending", "Scheduled", "Pulling", "Starting", "Running", "Paused", "Stopping",
          "Stopped", "Failed", "Migrating")

_GPUS = array(obj("GPUs of one model.", required=("model", "count"),
                  model=string("The GPU model.", enum=GPU_MODELS),
                  count=integer("How many.", minimum=0)), "GPUs per model.")


def _amounts(description: str) -> dict[str, Any]:
    return obj(description,
               vcpu=integer("Virtual CPUs.", minimum=0),
               memoryBytes=integer("Memory in bytes.", minimum=0),
               gpus=_GPUS,
               localDiskGB=integer("Local disk (GPU hosts) in GB.", minimum=0))


HOST = Kind(
    group=GROUP, version=VERSION, kind="Host", plural="hosts", namespaced=False,
    short_names=("ho",), categories=("infra",),
    description="A hypervisor host: where VirtualMachineInstances run.",
    spec=obj("The host.", required=("zone", "capacity"),
             zone=string("The zone the host is in, e.g. se-sto-a."),
             capacity=obj("What the host offers to VMs.", required=("vcpu", "memory"),
                          vcpu=integer("Virtual CPUs.", minimum=1),
                          memory=size("Memory.", 1),
                          gpus=_GPUS,
                          localDiskGB=integer("Local disk for GPU VMs, in GB.", minimum=0)),
             driver=string("What runs the VMs: sim (simulated) or qemu.", enum=("sim", "qemu"),
                           default="sim"),
             schedulable=boolean("False cordons the host: no new instances are placed on it.",
                                 default=True),
             drain=boolean("True drains the host: nothing new is placed on it and its running "
                           "VMs are migrated to other hosts.", default=False)),
    status=obj("What is placed on the host.",
               allocations=array(obj(
                   "The resources one instance bound (or migrating) here takes.",
                   required=("instance",),
                   instance=string("The instance, as namespace/name."),
                   vcpu=integer(), memoryBytes=integer(), gpus=_GPUS, localDiskGB=integer()),
                   "One entry per instance placed here, reported by the scheduler within a "
                   "second of a change (the bindings are the record).",
                   list_map_keys=("instance",)),
               allocated=_amounts("The sum of the allocations."),
               securityGroups=array(obj(
                   "A SecurityGroup the host's agent enforces.",
                   required=("namespace", "name", "generation"),
                   namespace=string("The group's project."), name=string("The group."),
                   generation=integer("The generation of the group's spec in force.")),
                   "The SecurityGroups programmed on the host, written by its agent (a "
                   "simulated host reports what it would program at once).",
                   list_map_keys=("namespace", "name")),
               agentEndpoint=obj(
                   "evroc-compute extension, QEMU hosts run by a separate agent: where the "
                   "agent serves its VMs' serial consoles to the API server (written by the "
                   "agent under the host's credential).",
                   url=string("The endpoint, https://HOST:PORT."),
                   certificate=string("The agent's serving certificate (PEM): the API server "
                                      "trusts exactly it.")),
               conditions=conditions("Ready: the host's heartbeat is fresh.")),
    columns=(
        Column("Zone", "string", path("spec", "zone"), "The zone."),
        Column("Ready", "string", lambda o: next(
            (c.get("status") for c in (o.get("status") or {}).get("conditions") or []
             if c.get("type") == "Ready"), ""), "Whether its heartbeat is fresh."),
        Column("vCPU", "string", lambda o: "{}/{}".format(
            ((o.get("status") or {}).get("allocated") or {}).get("vcpu", 0),
            o["spec"]["capacity"]["vcpu"]), "Allocated / capacity."),
        Column("Instances", "integer",
               lambda o: len((o.get("status") or {}).get("allocations") or []), "Instances."),
        Column("Schedulable", "boolean", path("spec", "schedulable"), "Open for placement."),
        Column("Drain", "boolean", path("spec", "drain"), "Being drained."),
        Column("Age", "date", age, "Time since creation."),
    ),
)

INSTANCE_SPEC = obj(
    "One run of a VirtualMachine, as the VM controller wants it.",
    required=("vmUID", "resources"),
    vmUID=string("The uid of the VirtualMachine this instance runs."),
    resources=_amounts("What the instance needs (from its VMVirtualResources profile)."),
    zone=string("The zone the instance must run in, if any."),
    placementGroup=string("Its spread placement group, if any."),
    running=boolean("Whether the guest should run.", default=True),
    disksReady=boolean("Whether every disk is provisioned: the agent starts the guest only then."),
    disks=array(obj("A permanent disk.", required=("name", "device"),
                    name=string(), device=string(), boot=boolean(), image=string(),
                    sizeBytes=integer()), "Permanent disks, boot disk first."),
    hotswap=array(obj("A hot-swapped disk.", required=("attachment", "disk", "serial"),
                      attachment=string(), disk=string(), serial=string()),
                  "Disks to hot-plug on the SCSI bus while the guest runs."),
    host=string("The host the scheduler bound the instance to."),
    migrateTo=string("The host the instance is being migrated to."),
)

INSTANCE_STATUS = obj(
    "The run as the scheduler and the host agent report it.",
    phase=string("Where the run is.", enum=PHASES),
    message=string("What the agent last said about it."),
    unschedulable=string("Why no host fits, while unbound."),
    imagePullError=string("The error of the current boot image pull."),
    imagePullFailures=integer("Consecutive failed pulls."),
    imageRetryAt=string("When the next pull is tried (RFC 3339)."),
    crashCount=integer("Consecutive guest failures."),
    crashRetryAt=string("When the guest is started again (RFC 3339)."),
    bootCount=integer("How many times the guest was started on this instance."),
    phaseSince=string("When the current phase began (RFC 3339)."),
    sshEndpoint=string("Where the guest's SSH server is reached (real hosts): a loopback "
                       "address and port the agent forwards, e.g. 127.0.0.1:40022."),
    hotswap=array(obj("A hot-plug as the agent sees it.", required=("attachment",),
                      attachment=string(), disk=string(), serial=string(), device=string(),
                      attached=boolean(), message=string()), "Hot-plugged disks."),
)

def check_instance(new: dict[str, Any], old: dict[str, Any] | None) -> list[FieldError]:
    """A binding is final: an instance moves to another host only by migration."""
    if old is None:
        return []
    before, after = (old.get("spec") or {}).get("host"), (new.get("spec") or {}).get("host")
    migrated_to = (old.get("spec") or {}).get("migrateTo")
    if before and after != before and after != migrated_to:
        return [invalid("spec.host", after, f'the instance is bound to host "{before}"; it moves '
                        "only by migration (spec.migrateTo)")]
    return []


VIRTUAL_MACHINE_INSTANCE = Kind(
    group=GROUP, version=VERSION, kind="VirtualMachineInstance",
    plural="virtualmachineinstances", namespaced=True, short_names=("vmi",),
    categories=("infra",),
    description="One run of a VirtualMachine: bound to a Host, run by its agent; the agent "
                "removes its finalizer once the guest is gone.",
    spec=INSTANCE_SPEC, status=INSTANCE_STATUS, semantic_check=check_instance,
    columns=(
        Column("Phase", "string", path("status", "phase"), "Where the run is."),
        Column("Host", "string", path("spec", "host"), "The host."),
        Column("Running", "boolean", path("spec", "running"), "Whether the guest should run."),
        Column("Age", "date", age, "Time since creation."),
        Column("Message", "string", path("status", "message"), "The agent's last word.",
               priority=1),
    ),
)

LEASE = Kind(
    group=GROUP, version=VERSION, kind="Lease", plural="leases", namespaced=False,
    short_names=(), categories=("infra",),
    description="A lease, as coordination.k8s.io's: leader election and host heartbeats.",
    spec=obj("The lease.",
             holderIdentity=string("Who holds it."),
             leaseDurationSeconds=integer("How long a renewal holds.", minimum=1),
             acquireTime=string("When the holder acquired it (RFC 3339, microseconds)."),
             renewTime=string("When the holder last renewed it (RFC 3339, microseconds)."),
             leaseTransitions=integer("How often the holder changed.", minimum=0)),
    status=None,
    columns=(
        Column("Holder", "string", path("spec", "holderIdentity"), "Who holds it."),
        Column("Renewed", "string", path("spec", "renewTime"), "Last renewal."),
        Column("Age", "date", age, "Time since creation."),
    ),
)

KINDS = (HOST, VIRTUAL_MACHINE_INSTANCE, LEASE)
