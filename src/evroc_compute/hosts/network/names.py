"""The names and addresses of a project's network on a host: pure functions of the API's names.

Linux keeps interface names to 15 characters, so every name is a short prefix and a hash of
what it stands for.  The same inputs give the same names on every host and after a restart,
which is what lets an agent adopt what it finds and tell what nobody owns.
"""

from __future__ import annotations

import hashlib
import ipaddress

NETNS_PREFIX = "evp-"  # a project's network namespace
UPLINK_PREFIX = "evu"  # the host's end of a project's uplink (veth)
UPLINK_INSIDE = "uplink"  # the namespace's end
BRIDGE_PREFIX = "evb"  # a zone subnet's bridge in the project's namespace
TAP_PREFIX = "evt"  # a VM NIC
# Uplinks are /30s from this range, one per project namespace on the machine: host .1, project .2.
UPLINK_RANGE = ipaddress.IPv4Network("169.254.128.0/17")
METADATA_ADDRESS = ipaddress.IPv4Address("169.254.169.254")


def _digest(*parts: str, length: int) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:length]


def netns(project: str) -> str:
    """The network namespace of `project` (a Kubernetes namespace) on any host."""
    return NETNS_PREFIX + _digest(project, length=10)


def uplink(project: str) -> str:
    """The host's end of the veth between the root namespace and the project's."""
    return UPLINK_PREFIX + _digest(project, length=10)


def bridge(zone: str) -> str:
    return BRIDGE_PREFIX + _digest(zone, length=8)


def tap(vm_uid: str) -> str:
    return TAP_PREFIX + _digest(vm_uid, length=10)


def mac(vm_uid: str) -> str:
    """A locally administered MAC (QEMU's 52:54:00 prefix) fixed by the VM's uid."""
    digest = _digest(vm_uid, length=6)
    return "52:54:00:" + ":".join(digest[i:i + 2] for i in range(0, 6, 2))


def uplink_pair(slot: int) -> tuple[ipaddress.IPv4Interface, ipaddress.IPv4Interface]:
    """The host's and the project's address on uplink number `slot` (/30 each)."""
    base = int(UPLINK_RANGE.network_address) + 4 * slot
    if not 0 <= slot < UPLINK_RANGE.num_addresses // 4:
        raise ValueError(f"uplink slot {slot} is outside {UPLINK_RANGE}")
    return (ipaddress.IPv4Interface(f"{ipaddress.IPv4Address(base + 1)}/30"),
            ipaddress.IPv4Interface(f"{ipaddress.IPv4Address(base + 2)}/30"))


def free_slot(used: set[ipaddress.IPv4Address]) -> int:
    """The lowest uplink slot whose host address is not in `used`."""
    for slot in range(UPLINK_RANGE.num_addresses // 4):
        if uplink_pair(slot)[0].ip not in used:
            return slot
    raise ValueError(f"every uplink of {UPLINK_RANGE} is in use")
