"""What counts against a ResourceQuota, and when a write exceeds one: the pure rules."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import pytest

from evroc_compute.api import catalog, compute, networking, quota
from evroc_compute.api.kinds import Kind

PROFILES = {o["metadata"]["name"]: o["spec"] for o in catalog.VM_VIRTUAL_RESOURCES.seed}
IMAGES = {o["metadata"]["name"]: o["spec"] for o in catalog.DISK_IMAGE.seed}
CATALOG = quota.Catalog(profile=PROFILES.get, image=IMAGES.get)
VMS = "count/virtualmachines.compute.evroclabs.net"
DISKS = "count/disks.compute.evroclabs.net"
L40S = "compute.evroclabs.net/gpu.AD102GL_L40S"
G = 10**9


def vm(profile: str = "a1a.m", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "v"},
            "spec": {"vmVirtualResourcesRef": {"vmVirtualResourcesRefName": profile}, **spec}}


def disk(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "d"}, "spec": spec}


UBUNTU = {"diskImage": {"diskImageRef": {"name": "ubuntu.24-04.1"}}}


@pytest.mark.parametrize(("kind", "obj", "expected"), [
    (compute.VIRTUAL_MACHINE, vm(), {VMS: 1, quota.VCPU: 4, quota.MEMORY: 16 * G}),
    (compute.VIRTUAL_MACHINE, vm(running=True), {VMS: 1, quota.VCPU: 4, quota.MEMORY: 16 * G}),
    (compute.VIRTUAL_MACHINE, vm(running=False), {VMS: 1}),
    (compute.VIRTUAL_MACHINE, vm("no-such-profile"), {VMS: 1}),
    (compute.VIRTUAL_MACHINE, vm("gn-l40s.m"),
     {VMS: 1, quota.VCPU: 30, quota.MEMORY: 396 * G, quota.GPU: 2, L40S: 2}),
    (compute.VIRTUAL_MACHINE, vm("gn-b200.xl", running=False), {VMS: 1}),
    (compute.DISK, disk(diskSize={"amount": 50, "unit": "GB"}, **UBUNTU),
     {DISKS: 1, quota.DISK_STORAGE: 50 * G}),
    (compute.DISK, disk(**UBUNTU), {DISKS: 1, quota.DISK_STORAGE: 20 * G}),
    (compute.DISK, disk(diskSize={"amount": 2, "unit": "TB"}), {DISKS: 1, quota.DISK_STORAGE: 2000 * G}),
    (compute.DISK, disk(diskImage={"diskImageRef": {"name": "gone"}}), {DISKS: 1, quota.DISK_STORAGE: 0}),
    (networking.PUBLIC_IP, {"metadata": {"name": "p"}, "spec": {}},
     {"count/publicips.networking.evroclabs.net": 1}),
    (compute.PLACEMENT_GROUP, {"metadata": {"name": "g"}, "spec": {}},
     {"count/placementgroups.compute.evroclabs.net": 1}),
    (networking.SECURITY_GROUP, {"metadata": {"name": "s"}, "spec": {}}, {}),
], ids=[
    "a VM that should run counts its profile's vCPUs and memory",
    "running: true is the same as the default",
    "a stopped VM counts only as a VM",
    "a VM naming no known profile counts only as a VM",
    "a GPU VM counts its GPUs in total and by model",
    "a stopped GPU VM frees its GPUs",
    "a disk counts its spec size",
    "a disk without a size counts its image's default size",
    "a blank disk counts its size in TB",
    "a disk of an unknown image and no size counts nothing but itself",
    "a public IP counts as one",
    "placement groups are counted",
    "kinds without a quota count nothing",
])
def test_usage(kind: Kind, obj: dict[str, Any], expected: quota.Usage) -> None:
    assert quota.usage(kind, obj, CATALOG) == expected


@pytest.mark.parametrize(("new", "old", "expected"), [
    ({VMS: 1, quota.VCPU: 4}, None, {VMS: 1, quota.VCPU: 4}),
    ({VMS: 1, quota.VCPU: 8}, {VMS: 1, quota.VCPU: 4}, {quota.VCPU: 4}),
    ({VMS: 1}, {VMS: 1, quota.VCPU: 4}, {}),
    ({VMS: 1, quota.VCPU: 4}, {VMS: 1}, {quota.VCPU: 4}),
    ({VMS: 1, quota.VCPU: 2, quota.MEMORY: 32 * G}, {VMS: 1, quota.VCPU: 4, quota.MEMORY: 16 * G},
     {quota.MEMORY: 16 * G}),
], ids=["a create adds everything", "a resize adds the difference", "a stop adds nothing",
        "a start adds the profile", "only what grows is added"])
def test_increase(new: quota.Usage, old: quota.Usage | None, expected: quota.Usage) -> None:
    assert quota.increase(new, old) == expected


@pytest.mark.parametrize(("hard", "used", "added", "expected"), [
    ({quota.VCPU: 10}, {quota.VCPU: 8}, {quota.VCPU: 2}, None),
    ({quota.VCPU: 10}, {quota.VCPU: 8}, {quota.VCPU: 4},
     "exceeded quota: q, requested: compute.evroclabs.net/vcpu=4, "
     "used: compute.evroclabs.net/vcpu=8, limited: compute.evroclabs.net/vcpu=10"),
    ({quota.VCPU: 10}, {}, {VMS: 1, quota.VCPU: 4}, None),
    ({VMS: 2, quota.MEMORY: 64 * G}, {VMS: 2, quota.MEMORY: 60 * G}, {VMS: 1, quota.MEMORY: 8 * G},
     "exceeded quota: q, requested: compute.evroclabs.net/memory=8G,"
     "count/virtualmachines.compute.evroclabs.net=1, used: compute.evroclabs.net/memory=60G,"
     "count/virtualmachines.compute.evroclabs.net=2, limited: compute.evroclabs.net/memory=64G,"
     "count/virtualmachines.compute.evroclabs.net=2"),
    ({VMS: 0}, {}, {VMS: 1}, "exceeded quota: q, requested: "
     "count/virtualmachines.compute.evroclabs.net=1, used: "
     "count/virtualmachines.compute.evroclabs.net=0, limited: "
     "count/virtualmachines.compute.evroclabs.net=0"),
    ({quota.VCPU: 10}, {quota.VCPU: 12}, {VMS: 1}, None),
], ids=["up to the limit is allowed", "past the limit is refused, in kube's words",
        "resources the quota does not limit are not checked",
        "every exceeded resource is named, sorted", "a zero limit refuses the first",
        "already over (limit lowered) refuses only what adds to it"])
def test_excess(hard: dict[str, int], used: quota.Usage, added: quota.Usage,
                expected: str | None) -> None:
    found = quota.excess("q", {r: Fraction(v) for r, v in hard.items()}, used, added)
    assert (found.message if found else None) == expected


@pytest.mark.parametrize(("text", "value"), [
    ("10", 10), (10, 10), ("64Gi", 64 * 2**30), ("64G", 64 * G), ("1.5G", 1500 * 10**6),
    ("500m", Fraction(1, 2)), ("1e3", 1000), ("2Ti", 2 * 2**40), ("0", 0), (" 3k", 3000),
])
def test_parse_quantity(text: Any, value: Fraction | int) -> None:
    assert quota.parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "ten", "10Gb", "1.2.3", True, None, [1]])
def test_parse_quantity_refuses_what_is_not_a_quantity(text: Any) -> None:
    with pytest.raises(quota.QuantityError):
        quota.parse_quantity(text)


@pytest.mark.parametrize(("value", "text"), [
    (0, "0"), (4, "4"), (16 * G, "16G"), (1500 * 10**6, "1500M"), (2 * 10**12, "2T"),
    (1024, "1024"), (Fraction(1, 2), "500m"),
])
def test_format_quantity(value: Fraction | int, text: str) -> None:
    assert quota.format_quantity(value) == text


@pytest.mark.parametrize(("hard", "fields"), [
    ({quota.VCPU: 8, quota.MEMORY: "64G", VMS: "5", L40S: 1}, []),
    ({"compute.evroclabs.net/vcpus": 8}, ["spec.hard[compute.evroclabs.net/vcpus]"]),
    ({quota.VCPU: "-1"}, ["spec.hard[compute.evroclabs.net/vcpu]"]),
    ({quota.MEMORY: "lots"}, ["spec.hard[compute.evroclabs.net/memory]"]),
    ({"compute.evroclabs.net/gpu./x": 1}, ["spec.hard[compute.evroclabs.net/gpu./x]"]),
], ids=["known resources and GPU models are accepted", "a misspelt resource is refused",
        "a negative limit is refused", "a limit that is not a quantity is refused",
        "a GPU model must be a name"])
def test_check_quota(hard: dict[str, Any], fields: list[str]) -> None:
    errors = quota.check_quota({"spec": {"hard": hard}}, None)
    assert [e.field for e in errors] == fields


def test_scopes_are_refused_rather_than_ignored() -> None:
    errors = quota.check_quota({"spec": {"hard": {VMS: 1}, "scopes": ["BestEffort"]}}, None)
    assert [e.field for e in errors] == ["spec.scopes"]


def test_status_names_every_limited_resource_with_its_use() -> None:
    item = {"spec": {"hard": {quota.VCPU: 8, quota.MEMORY: "64G", L40S: "2"}}}
    assert quota.quota_status(item, {quota.VCPU: 4, quota.MEMORY: 16 * G, VMS: 1}) == {
        "hard": {quota.VCPU: "8", quota.MEMORY: "64G", L40S: "2"},
        "used": {quota.VCPU: "4", quota.MEMORY: "16G", L40S: "0"}}
