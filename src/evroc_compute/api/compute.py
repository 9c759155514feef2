"""compute.evroclabs.net/v1alpha1: VirtualMachine, Disk, HotswapDiskAttachment, PlacementGroup.

Field names, descriptions and validation follow the seed API reference; where the seed is
silent (which fields are required, what may change after creation) the choices are the ones
documented in docs/api-decisions.md.
"""

from __future__ import annotations

from typing import Any

from evroc_compute.api import sshkeys
from evroc_compute.api.kinds import Column, Kind
from evroc_compute.api.meta import dns1123_label_errors
from evroc_compute.api.schema import (
    FieldError,
    Schema,
    array,
    boolean,
    defaulted,
    forbidden,
    integer,
    invalid,
    obj,
    required,
    string,
)
from evroc_compute.api.tables import age, condition_reason, condition_status, path

GROUP = "compute.evroclabs.net"
VERSION = "v1alpha1"
UNITS = ("KB", "MB", "GB", "TB")
STATUS_VALUES = (
    "Creating", "ProvisioningFailed", "Deleting", "Stopped", "Provisioning", "Starting",
    "Running", "Paused", "Stopping", "Terminating", "CrashLoopBackOff", "Migrating", "Unknown",
    "ErrorUnschedulable", "ErrImagePull", "ImagePullBackOff", "ErrorPvcNotFound",
    "DataVolumeError", "WaitingForVolumeBinding",
)
MAX_DISKS = 10
# Held by the VM controller until the VM's instance and address are released.
FINALIZER_VM = "compute.evroclabs.net/vm-cleanup"
# Held by the Disk controller while a VM or an attachment uses the disk.
FINALIZER_DISK = "compute.evroclabs.net/disk-protection"
MAX_SSH_KEYS = 10


def conditions(description: str) -> Schema:
    return array(obj(
        "A condition following the Kubernetes API conventions.",
        required=("type", "status"),
        type=string("Type of condition, e.g. Ready."),
        status=string("Status of the condition.", enum=("True", "False", "Unknown")),
        observedGeneration=integer("The metadata.generation the condition was set based upon.",
                                   minimum=0),
        lastTransitionTime=string("Last time the condition changed status (RFC 3339)."),
        reason=string("A CamelCase reason for the condition's last transition."),
        message=string("A human readable message about the transition."),
    ), description, list_map_keys=("type",))


def zone_placement(what: str) -> Schema:
    return obj(f"Placement defines the placement requirements for this {what}.",
               zone=string(f"The zone this {what} should be deployed to, e.g. se-sto-a."))


def size(description: str, minimum: int | None) -> Schema:
    return obj(description, required=("amount", "unit"),
               amount=integer(minimum=minimum), unit=string(enum=UNITS))


# ---- VirtualMachine ------------------------------------------------------------------

VM_SPEC = obj(
    "The desired state of the virtual machine.",
    required=("vmVirtualResourcesRef", "diskRefs"),
    running=boolean("Whether the VM should be running or not. If not set, this defaults to true",
                    default=True),
    vmVirtualResourcesRef=obj(
        "A reference to a VMVirtualResources object, which in turn defines the number of vCPUs, "
        "memory and the processor architecture that this VM will use.",
        required=("vmVirtualResourcesRefName",),
        vmVirtualResourcesRefName=string(
            "The name of a VMVirtualResources resource, e.g. 'test.xs' or 'a1a.l'. It generally "
            "has the form <series>.<size> where series is one of 'a1a', 'c1a', or 'm1a' and size "
            "is one of 'xs', 's', 'm', 'l', 'xl', or '2xl'."),
    ),
    diskRefs=array(obj(
        "A reference to a Disk object. If marked as bootFrom, the VM will boot from the Disk.",
        required=("name",),
        name=string("Name of the Disk object which should be attached to the VM."),
        bootFrom=boolean("BootFrom indicates whether the VM should boot from this Disk. Only one "
                         "Disk can be marked as BootFrom."),
    ), "The VM's Disks.", max_items=MAX_DISKS),
    placementGroup=string("The name of the placement group to use for this VM. This is used to "
                          "control the placement of the VM on the underlying hardware."),
    osSettings=obj(
        "Settings that are applied to the guest operating system.",
        cloudInitUserData=string(
            "User-data passed to the VM. This can either be a base64 string, or a multi-line "
            "string. This cannot be updated after the VM is created, and is only supported on "
            "Linux VMs."),
        ssh=obj(
            "SSH settings in the guest operating system. This field is only supported for Linux "
            "VMs. It is ignored for other operating systems.",
            authorizedKeys=array(obj(
                "An SSH public key.", required=("value",),
                value=string("The content of an authorized key, must be a valid SSH public key "
                             "according to the sshd(8) manual page."),
            ), "A list of public SSH keys that will be added to the \"evroc-user\" user created "
               "in the guest VM. The keys are written to /home/evroc-user/.ssh/authorized_keys "
               "on first boot; later changes have no effect.", max_items=MAX_SSH_KEYS),
        ),
    ),
    networking=obj(
        "Networking settings for the VM.",
        publicIPv4Address=obj(
            "Options that control whether and how the VM is assigned a public IPv4 address. If "
            "this structure is not specified, the VM will not be assigned a public address.",
            static=obj("Settings related to static public IPv4 addressing. Static addresses are "
                       "not released when the VM is stopped.",
                       publicIPRef=string("The name of the public IP that the VM will attach to.")),
        ),
        securityGroups=obj(
            "Options related to security groups.",
            securityGroupMemberships=array(obj("A security group the VM belongs to.",
                                               name=string()),
                                           "The security groups the VM belongs to."),
        ),
    ),
    placement=zone_placement("Virtual Machine"),
)

VM_STATUS = obj(
    "The observed state of the virtual machine.",
    conditions=conditions("The state of the Virtual Machine over time."),
    virtualMachineStatus=string("The status of the VM, e.g. Running, Stopped, Creating.",
                                enum=STATUS_VALUES),
    networking=obj("The current status of the networking set up on the VM.",
                   privateIPv4Address=string("The assigned private IPv4 address of the VM."),
                   publicIPv4Address=string("The assigned public IPv4 address of the VM."),
                   sshEndpoint=string("evroc-compute extension, real (QEMU) hosts only: the "
                                      "host:port where `ssh evroc-user@HOST -p PORT` reaches the "
                                      "guest, a loopback port forwarded by its host."),
                   securityGroups=obj(
                       "evroc-compute extension: the security groups the VM is in.",
                       securityGroupMemberships=array(obj(
                           "One membership.", name=string("The group (default: the "
                                                          "project's default group)."),
                           state=string("Active, or Pending while the group does not exist "
                                        "(it allows nothing until it does).",
                                        enum=("Active", "Pending"))),
                           "The VM's memberships."))),
    attachedDisks=array(obj("The current mapping of a permanent Disk to a Device on the VM.",
                            name=string("The name of the attached Disk."),
                            device=string("The device the Disk corresponds to on the VM "
                                          "(e.g. /dev/vda).")),
                        "The current mapping between permanent evroc Disks and Devices on the VM."),
    placement=zone_placement("Virtual Machine"),
    hotswapDiskAttachments=array(obj(
        "The status of a HotswapDiskAttachment targeting this VM.",
        attachment=string("Name of HotswapDiskAttachment being requested."),
        disk=string("Name of the disk being attached."),
        attached=boolean("Attachment status."),
        serial=string("Serial of an attached disk."),
        device=string("The device that an attached disk corresponds to on the VM."),
        message=string("Message indicating the reason for a non-attached Disk."),
    ), "The current requested Hotswap Disk Attachments for this VM."),
)


def _get(obj_: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if not isinstance(obj_, dict):
            return None
        obj_ = obj_.get(key)  # type: ignore[assignment]
    return obj_


def _zone_errors(field: str, zone: Any) -> list[FieldError]:
    if isinstance(zone, str) and zone:
        return [invalid(field, zone, p) for p in dns1123_label_errors(zone)]
    return []


def check_vm(new: dict[str, Any], old: dict[str, Any] | None) -> list[FieldError]:
    errors: list[FieldError] = []
    disks = _get(new, "spec", "diskRefs") or []
    if isinstance(disks, list):
        boot = [i for i, d in enumerate(disks) if isinstance(d, dict) and d.get("bootFrom")]
        if disks and not boot:
            errors.append(required("spec.diskRefs",
                                   "Required value: exactly one disk must be marked bootFrom: true"))
        if len(boot) > 1:
            errors.append(invalid(f"spec.diskRefs[{boot[1]}].bootFrom", True,
                                  f"only one Disk can be marked as bootFrom; diskRefs[{boot[0]}] "
                                  "already is"))
        seen: dict[str, int] = {}
        for index, ref in enumerate(disks):
            name = ref.get("name") if isinstance(ref, dict) else None
            if isinstance(name, str) and name in seen:
                errors.append(FieldError(f"spec.diskRefs[{index}].name", "FieldValueDuplicate",
                                         f'Duplicate value: "{name}" (also diskRefs[{seen[name]}])',
                                         name))
            elif isinstance(name, str):
                seen[name] = index
        if disks == []:
            errors.append(required("spec.diskRefs", "Required value: a VM needs a boot disk"))
    keys = _get(new, "spec", "osSettings", "ssh", "authorizedKeys") or []
    if isinstance(keys, list):
        for index, key in enumerate(keys):
            value = key.get("value") if isinstance(key, dict) else None
            if isinstance(value, str):
                try:
                    sshkeys.parse_authorized_key(value)
                except sshkeys.InvalidSSHKey as problem:
                    errors.append(invalid(f"spec.osSettings.ssh.authorizedKeys[{index}].value",
                                          value, f"not a valid SSH public key: {problem}"))
    errors += _zone_errors("spec.placement.zone", _get(new, "spec", "placement", "zone"))
    if old is not None:
        group_before, group_after = _get(old, "spec", "placementGroup"), \
            _get(new, "spec", "placementGroup")
        stopped = _get(old, "spec", "running") is False and \
            _get(old, "status", "virtualMachineStatus") in ("Stopped", None)
        if group_before != group_after and not stopped:
            errors.append(forbidden(
                "spec.placementGroup", "placement group membership changes only while the VM is "
                "stopped; set spec.running to false, wait for Stopped, then change it"))
        before = _get(old, "spec", "osSettings", "cloudInitUserData")
        after = _get(new, "spec", "osSettings", "cloudInitUserData")
        if before != after:
            errors.append(invalid("spec.osSettings.cloudInitUserData", after,
                                  "field is immutable: cloudInitUserData cannot be updated after "
                                  "the VM is created; create a new VM instead"))
    return errors


def new_vm_status(vm: dict[str, Any]) -> dict[str, Any] | None:
    """A new VM that should run is Creating until its controller has looked; one created
    stopped gets its status (Stopped) from the controller, never Creating."""
    return None if _get(vm, "spec", "running") is False else {"virtualMachineStatus": "Creating"}


VIRTUAL_MACHINE = Kind(
    group=GROUP, version=VERSION, kind="VirtualMachine", plural="virtualmachines",
    namespaced=True, short_names=("vm", "vms"), categories=("evroc", "compute"),
    description="The schema for an evroc Virtual Machine API.",
    spec=VM_SPEC, status=VM_STATUS, semantic_check=check_vm,
    extra_subresources=("console",),  # the serial console, text like pods/log
    controlled_finalizers=(FINALIZER_VM,), controlled_status=new_vm_status,
    columns=(
        Column("Ready", "string", condition_status("Ready"), "Whether the VM is ready."),
        Column("Reason", "string", condition_reason("Ready"), "Why the VM is (not) ready."),
        Column("VirtualMachineStatus", "string", path("status", "virtualMachineStatus"),
               "The status of the VM."),
        Column("IP", "string", path("status", "networking", "privateIPv4Address"),
               "The private IPv4 address."),
        Column("Public IP", "string", path("status", "networking", "publicIPv4Address"),
               "The public IPv4 address."),
        Column("Age", "date", age, "Time since creation."),
        Column("Zone", "string", path("status", "placement", "zone"), "The zone.", priority=1),
        Column("Resources", "string",
               path("spec", "vmVirtualResourcesRef", "vmVirtualResourcesRefName"),
               "The VMVirtualResources profile.", priority=1),
        Column("Running", "boolean", path("spec", "running"), "Whether the VM should run.",
               priority=1),
    ),
)

# ---- Disk ----------------------------------------------------------------------------

DISK_SPEC = obj(
    "The desired state of the disk.",
    diskSize=size("The size of the disk. If not specified, the default size specified in the "
                  "diskImage is used.", 0),
    diskImage=obj("The OS image for this disk.",
                  diskImageRef=obj("A reference to a DiskImage object.", required=("name",),
                                   name=string("The name of the DiskImage to use, e.g. "
                                               "'ubuntu.24-04.1' (kubectl get diskimages lists "
                                               "them)."))),
    diskStorageClass=defaulted(obj("The disk storage class for this disk.",
                                   name=string("The name of the DiskStorageClass to use. "
                                               "'persistent' survives node failure and can be "
                                               "detached and reused.",
                                               enum=("persistent",), default="persistent")),
                               {"name": "persistent"}),
    placement=zone_placement("Disk"),
)

DISK_STATUS = obj(
    "The observed state of the disk.",
    conditions=conditions("The state of the disk over time. Persistent Disks report Ready=True "
                          "when they are ready for use in a VM."),
    diskSize=obj("The allocated disk size, either user-defined or a default.",
                 amount=integer(), unit=string(enum=UNITS)),
    placement=zone_placement("Disk"),
    diskUsage=array(obj("A consumer of this Disk.",
                        useKind=string("The kind of usage.", enum=("permanent", "hotswap")),
                        vm=string("The VM consuming this Disk."),
                        attachment=string("The HotswapDiskAttachment driving this usage, if the "
                                          "kind is hotswap.")),
                    "Where this Disk is being used."),
)

_BYTES_PER_UNIT = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}


def size_in_bytes(amount_and_unit: Any) -> int | None:
    if not isinstance(amount_and_unit, dict):
        return None
    amount, unit = amount_and_unit.get("amount"), amount_and_unit.get("unit")
    if not isinstance(amount, int) or unit not in _BYTES_PER_UNIT:
        return None
    return amount * _BYTES_PER_UNIT[unit]


def check_disk(new: dict[str, Any], old: dict[str, Any] | None) -> list[FieldError]:
    errors: list[FieldError] = []
    spec = new.get("spec") or {}
    if not spec.get("diskImage") and not spec.get("diskSize"):
        errors.append(required("spec.diskSize", "Required value: a disk without a diskImage needs "
                               "a diskSize"))
    if size_in_bytes(spec.get("diskSize")) == 0:
        errors.append(invalid("spec.diskSize.amount", 0, "a disk must be larger than 0"))
    errors += _zone_errors("spec.placement.zone", _get(spec, "placement", "zone"))
    if old is None:
        return errors
    old_spec = old.get("spec") or {}
    for field in ("diskImage", "diskStorageClass"):
        if spec.get(field) != old_spec.get(field):
            errors.append(invalid(f"spec.{field}", spec.get(field), "field is immutable"))
    old_zone = _get(old_spec, "placement", "zone")
    if old_zone and _get(spec, "placement", "zone") != old_zone:
        errors.append(invalid("spec.placement.zone", _get(spec, "placement", "zone"),
                              f"field is immutable once set (the disk lives in {old_zone})"))
    before, after = size_in_bytes(old_spec.get("diskSize")), size_in_bytes(spec.get("diskSize"))
    if before is not None and (after is None or after < before):
        errors.append(forbidden("spec.diskSize", "a disk can grow but cannot shrink"))
    return errors


DISK = Kind(
    group=GROUP, version=VERSION, kind="Disk", plural="disks", namespaced=True,
    short_names=("dk",), categories=("evroc", "compute"),
    description="The schema for a disk.", spec=DISK_SPEC, status=DISK_STATUS,
    semantic_check=check_disk, controlled_finalizers=(FINALIZER_DISK,),
    columns=(
        Column("Ready", "string", condition_status("Ready"), "Whether the disk is ready."),
        Column("Reason", "string", condition_reason("Ready"), "Why the disk is (not) ready."),
        Column("Image", "string", path("spec", "diskImage", "diskImageRef", "name"), "The image."),
        Column("Size", "string", lambda o: _size_cell(_get(o, "status", "diskSize")
                                                      or _get(o, "spec", "diskSize")),
               "The allocated size."),
        Column("Zone", "string", lambda o: _get(o, "status", "placement", "zone")
               or _get(o, "spec", "placement", "zone"), "The zone."),
        Column("Age", "date", age, "Time since creation."),
        Column("Used By", "string", lambda o: ",".join(
            u.get("vm", "") for u in _get(o, "status", "diskUsage") or []), "Consumers.",
            priority=1),
    ),
)


def _size_cell(value: Any) -> str:
    if isinstance(value, dict) and "amount" in value:
        return f"{value.get('amount')}{value.get('unit', '')}"
    return ""


# ---- HotswapDiskAttachment -----------------------------------------------------------

def check_attachment(new: dict[str, Any], old: dict[str, Any] | None) -> list[FieldError]:
    if old is None:
        return []
    return [invalid(f"spec.{f}", _get(new, "spec", f),
                    "field is immutable: delete the attachment and create a new one")
            for f in ("vmRef", "diskRef") if _get(new, "spec", f) != _get(old, "spec", f)]


HOTSWAP_DISK_ATTACHMENT = Kind(
    group=GROUP, version=VERSION, kind="HotswapDiskAttachment", plural="hotswapdiskattachments",
    namespaced=True, short_names=("hda",), categories=("evroc", "compute"),
    description="Attaches a Disk to a running VirtualMachine over the SCSI bus.",
    spec=obj("The desired attachment.", required=("vmRef", "diskRef"),
             vmRef=string("Name of the VM to which the disk should be attached."),
             diskRef=string("Name of the Disk which should be attached to the VM.")),
    status=obj("The observed state of the attachment.",
               conditions=conditions("The state of this attachment over time."),
               serial=string("The serial identifier of the disk when attached.")),
    semantic_check=check_attachment,
    columns=(
        Column("VM", "string", path("spec", "vmRef"), "The VM."),
        Column("Disk", "string", path("spec", "diskRef"), "The disk."),
        Column("Ready", "string", condition_status("Ready"), "Whether the disk is attached."),
        Column("Serial", "string", path("status", "serial"), "The disk's serial."),
        Column("Age", "date", age, "Time since creation."),
        Column("Reason", "string", condition_reason("Ready"), "Why.", priority=1),
    ),
)

# ---- PlacementGroup ------------------------------------------------------------------

def check_placement_group(new: dict[str, Any], old: dict[str, Any] | None) -> list[FieldError]:
    errors = _zone_errors("spec.placement.zone", _get(new, "spec", "placement", "zone"))
    if old is not None:
        for field in ("strategy", "placement"):
            if _get(new, "spec", field) != _get(old, "spec", field):
                errors.append(invalid(f"spec.{field}", _get(new, "spec", field),
                                      "field is immutable"))
    return errors


PLACEMENT_GROUP = Kind(
    group=GROUP, version=VERSION, kind="PlacementGroup", plural="placementgroups",
    namespaced=True, short_names=("pg",), categories=("evroc", "compute"),
    description="The schema for a placement group API.",
    spec=obj("The desired placement group.", required=("strategy",),
             strategy=obj("The strategy for distribution of VMs across hardware. \"spread\" "
                          "places each VM on a different physical host.", required=("type",),
                          type=string("The name of the PlacementStrategy; only \"spread\".",
                                      enum=("spread",))),
             placement=zone_placement("Placement Group")),
    status=obj("The observed state of the placement group.",
               conditions=conditions("The state of the placement group over time."),
               virtualMachines=array(obj("A member VM.", name=string("Name of the VM.")),
                                     "The member virtual machines."),
               placement=zone_placement("Placement Group")),
    semantic_check=check_placement_group,
    columns=(
        Column("Strategy", "string", path("spec", "strategy", "type"), "The strategy."),
        Column("Zone", "string", path("spec", "placement", "zone"), "The zone."),
        Column("Members", "integer", lambda o: len(_get(o, "status", "virtualMachines") or []),
               "Number of member VMs."),
        Column("Age", "date", age, "Time since creation."),
    ),
)

KINDS = (VIRTUAL_MACHINE, DISK, HOTSWAP_DISK_ATTACHMENT, PLACEMENT_GROUP)
