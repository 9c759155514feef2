"""Core v1 ResourceQuota: hard limits on what a project (namespace) may hold, and what counts.

Resource names (docs/api-decisions.md, "Quotas"):

- `count/<plural>.<group>`: objects of a kind, as kube names object counts; served for
  virtualmachines, disks, hotswapdiskattachments, placementgroups (compute.evroclabs.net)
  and publicips (networking.evroclabs.net). An object counts until it is gone.
- `compute.evroclabs.net/vcpu`, `compute.evroclabs.net/memory` (bytes, a quantity such as
  `64G` or `64Gi`), `compute.evroclabs.net/gpu` (all models) and
  `compute.evroclabs.net/gpu.<model>` (the part of the model after its last `/`, e.g.
  `gpu.AD102GL_L40S`, `gpu.GB100_B200`): the VM's VMVirtualResources profile, counted
  while the VM should run (spec.running, true by default), so stopping a VM frees them.
- `compute.evroclabs.net/disk-storage` (bytes): each Disk's spec.diskSize, or its image's
  default size when it gives none.

Usage is a pure function of an object's spec (and the catalog it names), so the API server's
admission and the quota controller count the same way. Quantities follow kube's notation.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from evroc_compute.api import compute, networking
from evroc_compute.api.kinds import Column, Kind
from evroc_compute.api.schema import (
    FieldError,
    Schema,
    array,
    forbidden,
    free_form,
    invalid,
    obj,
    string,
)
from evroc_compute.api.tables import age

PREFIX = f"{compute.GROUP}/"
VCPU = f"{PREFIX}vcpu"
MEMORY = f"{PREFIX}memory"
GPU = f"{PREFIX}gpu"
GPU_MODEL_PREFIX = f"{PREFIX}gpu."
DISK_STORAGE = f"{PREFIX}disk-storage"
COUNTED_KINDS = (compute.VIRTUAL_MACHINE, compute.DISK, compute.HOTSWAP_DISK_ATTACHMENT,
                 compute.PLACEMENT_GROUP, networking.PUBLIC_IP)


def count_of(kind: Kind) -> str:
    return f"count/{kind.qualified_resource}"


def gpu_resource(model: str) -> str:
    """`nvidia.com/AD102GL_L40S` -> `compute.evroclabs.net/gpu.AD102GL_L40S`."""
    return GPU_MODEL_PREFIX + model.rsplit("/", 1)[-1]


COUNTED = frozenset(k.qualified_resource for k in COUNTED_KINDS)
FIXED_RESOURCES = (VCPU, MEMORY, GPU, DISK_STORAGE, *(count_of(k) for k in COUNTED_KINDS))
_GPU_MODEL = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")

# The spec field a refusal points at: what the user changes to use less.
FIELD_AT_FAULT = {VCPU: "spec.vmVirtualResourcesRef.vmVirtualResourcesRefName",
                  MEMORY: "spec.vmVirtualResourcesRef.vmVirtualResourcesRefName",
                  GPU: "spec.vmVirtualResourcesRef.vmVirtualResourcesRefName",
                  DISK_STORAGE: "spec.diskSize"}


def field_at_fault(resource: str) -> str:
    if resource.startswith(GPU_MODEL_PREFIX):
        return FIELD_AT_FAULT[GPU]
    return FIELD_AT_FAULT.get(resource, "metadata.name")


# ---- quantities ------------------------------------------------------------------------

_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?\d+)?$")
_SUFFIXES = {"n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000),
             "": Fraction(1), "k": Fraction(10**3), "M": Fraction(10**6), "G": Fraction(10**9),
             "T": Fraction(10**12), "P": Fraction(10**15), "E": Fraction(10**18),
             "Ki": Fraction(2**10), "Mi": Fraction(2**20), "Gi": Fraction(2**30),
             "Ti": Fraction(2**40), "Pi": Fraction(2**50), "Ei": Fraction(2**60)}
_DECIMAL_UP = (("E", 10**18), ("P", 10**15), ("T", 10**12), ("G", 10**9), ("M", 10**6),
               ("k", 10**3))


class QuantityError(ValueError):
    pass


def parse_quantity(value: Any) -> Fraction:
    """A Kubernetes quantity (`10`, `1.5`, `64Gi`, `500m`, `1e3`) as an exact number."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise QuantityError("must be a quantity, e.g. 10, 64Gi or 500G")
    if isinstance(value, (int, float)):
        return Fraction(value)
    match = _QUANTITY.match(value.strip())
    if not match:
        raise QuantityError("quantities must match the regular expression "
                            "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$', e.g. 10, 64Gi or 500G")
    number, suffix = Fraction(match.group(1)), match.group(2) or ""
    if suffix[:1] in ("e", "E"):
        return number * Fraction(10) ** int(suffix[1:])
    return number * _SUFFIXES[suffix]


def format_quantity(value: Fraction | int) -> str:
    """Whole numbers with the largest decimal suffix that keeps them exact (8000000000 -> 8G)."""
    value = Fraction(value)
    if value.denominator != 1:
        milli = value * 1000
        return f"{milli.numerator // milli.denominator}m"
    whole = value.numerator
    if whole:
        for suffix, factor in _DECIMAL_UP:
            if whole % factor == 0:
                return f"{whole // factor}{suffix}"
    return str(whole)


# ---- usage -----------------------------------------------------------------------------

Usage = dict[str, int]


@dataclass(frozen=True)
class Catalog:
    """The catalog entries usage depends on: profile name -> its spec, image name -> its spec."""

    profile: Callable[[str], Mapping[str, Any] | None]
    image: Callable[[str], Mapping[str, Any] | None]


def _get(value: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def usage(kind: Kind, item: dict[str, Any], catalog: Catalog) -> Usage:
    """What one object of `kind` counts against its project's quotas."""
    if kind.qualified_resource not in COUNTED:
        return {}
    used: Usage = {count_of(kind): 1}
    resource = kind.qualified_resource
    if resource == compute.VIRTUAL_MACHINE.qualified_resource and \
            _get(item, "spec", "running") is not False:
        name = _get(item, "spec", "vmVirtualResourcesRef", "vmVirtualResourcesRefName")
        profile = catalog.profile(name) if isinstance(name, str) else None
        if profile is not None:
            vcpu = profile.get("vcpu")
            used[VCPU] = vcpu if isinstance(vcpu, int) else 0
            used[MEMORY] = compute.size_in_bytes(profile.get("memory")) or 0
            gpus = profile.get("gpus") or {}
            model, quantity = gpus.get("model"), gpus.get("quantity")
            if isinstance(model, str) and isinstance(quantity, int) and quantity:
                used[GPU] = quantity
                used[gpu_resource(model)] = quantity
    elif resource == compute.DISK.qualified_resource:
        size = compute.size_in_bytes(_get(item, "spec", "diskSize"))
        if size is None:
            image_name = _get(item, "spec", "diskImage", "diskImageRef", "name")
            image = catalog.image(image_name) if isinstance(image_name, str) else None
            size = compute.size_in_bytes((image or {}).get("defaultDiskSize"))
        used[DISK_STORAGE] = size or 0
    return used


def total(usages: Iterable[Usage]) -> Usage:
    result: Usage = {}
    for one in usages:
        for resource, amount in one.items():
            result[resource] = result.get(resource, 0) + amount
    return result


def increase(new: Usage, old: Usage | None) -> Usage:
    """What a write adds: the resources whose use grows, by how much (a create adds all)."""
    before = old or {}
    return {r: amount - before.get(r, 0) for r, amount in new.items()
            if amount > before.get(r, 0)}


def hard_limits(quota: dict[str, Any]) -> dict[str, Fraction]:
    """spec.hard parsed (admission has validated it)."""
    return {r: parse_quantity(v) for r, v in (_get(quota, "spec", "hard") or {}).items()}


@dataclass(frozen=True)
class Excess:
    """A quota a write would exceed, with the figures kube's refusal names."""

    quota: str
    requested: dict[str, int]
    used: dict[str, int]
    limited: dict[str, Fraction]

    @property
    def message(self) -> str:
        def shown(figures: Mapping[str, Fraction | int]) -> str:
            return ",".join(f"{r}={format_quantity(v)}" for r, v in sorted(figures.items()))
        return (f"exceeded quota: {self.quota}, requested: {shown(self.requested)}, "
                f"used: {shown(self.used)}, limited: {shown(self.limited)}")


def excess(name: str, hard: Mapping[str, Fraction], used: Usage, added: Usage) -> Excess | None:
    """The resources of one quota that `added` on top of `used` would take past `hard`."""
    over = sorted(r for r, amount in added.items()
                  if r in hard and used.get(r, 0) + amount > hard[r])
    if not over:
        return None
    return Excess(name, {r: added[r] for r in over}, {r: used.get(r, 0) for r in over},
                  {r: hard[r] for r in over})


def quota_status(quota: dict[str, Any], used: Usage) -> dict[str, Any]:
    """status.hard as the spec says, status.used for each limited resource."""
    hard = _get(quota, "spec", "hard") or {}
    return {"hard": {r: str(v) for r, v in hard.items()},
            "used": {r: format_quantity(used.get(r, 0)) for r in hard}}


# ---- the kind --------------------------------------------------------------------------

_QUANTITY_SCHEMA: Schema = {
    "x-kubernetes-int-or-string": True,
    "anyOf": [{"type": "integer"}, {"type": "string"}],
}


def _quantities(description: str) -> Schema:
    return {"type": "object", "description": description, "additionalProperties": _QUANTITY_SCHEMA}


def _resource_errors(resource: str) -> list[str]:
    if resource in FIXED_RESOURCES:
        return []
    if resource.startswith(GPU_MODEL_PREFIX) and _GPU_MODEL.fullmatch(
            resource.removeprefix(GPU_MODEL_PREFIX)):
        return []
    return [f"unsupported resource; supported: {', '.join(FIXED_RESOURCES)} and "
            f"{GPU_MODEL_PREFIX}<model> (e.g. {gpu_resource('nvidia.com/AD102GL_L40S')})"]


def check_quota(new: dict[str, Any], old: dict[str, Any] | None) -> list[FieldError]:
    errors: list[FieldError] = []
    for unsupported in ("scopes", "scopeSelector"):
        if _get(new, "spec", unsupported):
            errors.append(forbidden(f"spec.{unsupported}", "quota scopes are not supported: a "
                                    "quota counts every object of its project; remove them"))
    hard = _get(new, "spec", "hard")
    for resource, value in (hard.items() if isinstance(hard, dict) else ()):
        at = f"spec.hard[{resource}]"
        errors += [invalid(at, resource, problem) for problem in _resource_errors(resource)]
        try:
            if parse_quantity(value) < 0:
                errors.append(invalid(at, value, "must be greater than or equal to 0"))
        except QuantityError as problem:
            errors.append(invalid(at, value, str(problem)))
    return errors


def _request_cell(quota: dict[str, Any]) -> str:
    hard, used = _get(quota, "status", "hard") or {}, _get(quota, "status", "used") or {}
    return ", ".join(f"{r}: {used.get(r, 0)}/{hard[r]}" for r in sorted(hard))


RESOURCE_QUOTA = Kind(
    group="", version="v1", kind="ResourceQuota", plural="resourcequotas", namespaced=True,
    short_names=("quota",), description="ResourceQuota sets aggregate quota restrictions "
    "enforced per namespace (an evroc project): VMs, vCPUs, memory, GPUs, disks, disk storage "
    "and public IPs.",
    spec=obj("The hard limits.", hard=_quantities(
        "The hard limit for each named resource, e.g. compute.evroclabs.net/vcpu: 16."),
        scopes=array(string(), "Not supported: a quota counts every object of its project."),
        scopeSelector=free_form("Not supported: a quota counts every object of its project.")),
    status=obj("The enforced hard limits and the current use.",
               hard=_quantities("The enforced hard limit for each named resource."),
               used=_quantities("The current observed total usage of each resource in the "
                                "namespace.")),
    semantic_check=check_quota,
    columns=(Column("Age", "date", age, "Time since creation."),
             Column("Request", "string", _request_cell, "Used/hard for each limited resource.")),
)

KINDS = (RESOURCE_QUOTA,)
