"""The catalog: cluster-scoped kinds every project reads and admins write, seeded at start.

DiskImage (the 12 images of the seed), VMVirtualResources (the size profiles evroc's SDK
lists) and DiskStorageClass (`persistent`). Figures that are not public (image default
sizes, `test.xs`) are this project's choices, listed in docs/api-decisions.md.
"""

from __future__ import annotations

from typing import Any

from evroc_compute.api.compute import GROUP, UNITS, VERSION, conditions, size
from evroc_compute.api.kinds import Column, Kind
from evroc_compute.api.schema import integer, obj, string
from evroc_compute.api.tables import age, path

IMAGE_STORE_LABEL = "evroc-compute.io/image-store"  # on DiskImages a host registered: its name

GPU_MODELS = ("nvidia.com/AD102GL_L40S", "nvidia.com/GB100_B200")

IMAGE_DEFAULT_SIZES_GB = {
    "ubuntu-minimal.24-04.1": 10,
    "ubuntu.24-04.1": 20,
    "ubuntu.22-04.1": 20,
    "rocky.10-0.1": 20,
    "rocky.9-6.1": 20,
    "rocky.9-5.1": 20,
    "rocky.8-10.1": 20,
    "opensuse.15-6.1": 20,
    "opensuse.15-5.1": 20,
    "sles.15-6.1": 30,
    "sles.15-5.1": 30,
    "sl-micro.6-1.1": 20,
}


def _catalog_object(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind,
            "metadata": {"name": name, "labels": {"evroc.com/catalog": "builtin"}}, "spec": spec}


DISK_IMAGE = Kind(
    group=GROUP, version=VERSION, kind="DiskImage", plural="diskimages", namespaced=False,
    short_names=("di",), categories=("evroc",),
    description="An operating system image a Disk can be created from.",
    spec=obj("The image.", required=("defaultDiskSize",),
             displayName=string("A human readable name."),
             defaultDiskSize=size("The default size of the disk if Disk does not specify one.", 1),
             source=obj("Where a real host fetches the image from (real-VM driver only).",
                        url=string("A path or http(s) URL of a qcow2 or raw image, optionally "
                                   "gz or xz compressed."),
                        sha256=string("The expected SHA-256 of the downloaded file."))),
    status=obj("The observed state of the image.",
               conditions=conditions("Whether the image can be fetched (real-VM driver).")),
    seed=tuple(_catalog_object("DiskImage", name, {
        "displayName": name, "defaultDiskSize": {"amount": gb, "unit": "GB"}})
        for name, gb in IMAGE_DEFAULT_SIZES_GB.items()),
    columns=(
        Column("Display Name", "string", path("spec", "displayName"), "The name."),
        Column("Default Size", "string", lambda o: "{amount}{unit}".format(
            **(o.get("spec") or {}).get("defaultDiskSize") or {"amount": "", "unit": ""}),
            "Size of a disk created from it without a size."),
        Column("Age", "date", age, "Time since creation."),
    ),
)


def _profiles() -> list[tuple[str, int, int, dict[str, Any] | None]]:
    """(name, vCPUs, memory GB, gpus) for every profile."""
    vcpus = {"xs": 1, "s": 2, "m": 4, "l": 8, "xl": 16, "2xl": 32}
    series = {"a1a": (4, list(vcpus)), "c1a": (2, list(vcpus)[1:]), "m1a": (8, list(vcpus)[1:5])}
    profiles: list[tuple[str, int, int, dict[str, Any] | None]] = [("test.xs", 1, 2, None)]
    for prefix, (gb_per_cpu, sizes) in series.items():
        profiles += [(f"{prefix}.{s}", vcpus[s], vcpus[s] * gb_per_cpu, None) for s in sizes]
    gpu_rows = [
        ("gn-l40s", GPU_MODELS[0], [("s", 15, 198, 1, 3800), ("m", 30, 396, 2, 7600),
                                    ("l", 60, 792, 4, 15200)]),
        ("gn-b200", GPU_MODELS[1], [("s", 26, 262, 1, 4000), ("m", 52, 524, 2, 8000),
                                    ("l", 104, 1048, 4, 16000), ("xl", 208, 2096, 8, 32000)]),
    ]
    for prefix, model, rows in gpu_rows:
        profiles += [(f"{prefix}.{s}", cpu, mem, {"model": model, "quantity": n, "localDisk": disk})
                     for s, cpu, mem, n, disk in rows]
    return profiles


def _profile_spec(vcpu: int, memory_gb: int, gpus: dict[str, Any] | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"vcpu": vcpu, "memory": {"amount": memory_gb, "unit": "GB"},
                            "processorArchitecture": "amd64"}
    if gpus:
        spec["gpus"] = gpus
    return spec


VM_VIRTUAL_RESOURCES = Kind(
    group=GROUP, version=VERSION, kind="VMVirtualResources", plural="vmvirtualresources",
    namespaced=False, short_names=("vmvr",), categories=("evroc",),
    description="A VM size profile: vCPUs, memory, processor architecture and GPUs.",
    spec=obj("The profile.", required=("vcpu", "memory"),
             vcpu=integer("The number of virtual CPUs.", minimum=1),
             memory=obj("The memory.", required=("amount", "unit"),
                        amount=integer("The amount of memory, in the related unit.", minimum=1),
                        unit=string(enum=UNITS)),
             processorArchitecture=string("The processor architecture.",
                                          enum=("amd64", "arm64"), default="amd64"),
             gpus=obj("GPUs passed through to the VM.",
                      model=string("The model of GPUs.", enum=GPU_MODELS),
                      quantity=integer("The quantity of GPUs.", minimum=0),
                      localDisk=integer("The size of the local disk created automatically for "
                                        "this GPU VM, in GB.", minimum=0))),
    status=None,
    seed=tuple(_catalog_object("VMVirtualResources", name, _profile_spec(cpu, mem, gpus))
               for name, cpu, mem, gpus in _profiles()),
    columns=(
        Column("vCPU", "integer", path("spec", "vcpu"), "Virtual CPUs."),
        Column("Memory", "string", lambda o: "{amount}{unit}".format(
            **(o.get("spec") or {}).get("memory") or {"amount": "", "unit": ""}), "Memory."),
        Column("GPUs", "string", lambda o: "{quantity}x {model}".format(
            **(o.get("spec") or {})["gpus"]) if (o.get("spec") or {}).get("gpus") else "",
            "GPUs."),
        Column("Arch", "string", path("spec", "processorArchitecture"), "Architecture.",
               priority=1),
        Column("Age", "date", age, "Time since creation."),
    ),
)

DISK_STORAGE_CLASS = Kind(
    group=GROUP, version=VERSION, kind="DiskStorageClass", plural="diskstorageclasses",
    namespaced=False, short_names=("dsc",), categories=("evroc",),
    description="A class of disk storage.",
    spec=obj("The storage class.", description=string("What the class offers.")),
    status=None,
    seed=(_catalog_object("DiskStorageClass", "persistent", {
        "description": "Survives node failure and can be detached and reused. Recommended for "
                       "most use cases."}),),
    columns=(Column("Description", "string", path("spec", "description"), "What it offers."),
             Column("Age", "date", age, "Time since creation.")),
)

KINDS = (DISK_IMAGE, VM_VIRTUAL_RESOURCES, DISK_STORAGE_CLASS)
