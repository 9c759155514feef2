"""The names and addresses of a project's network on a host: pure functions of the API's names.

Linux keeps interface names to 15 characters, so every name is a short prefix and a hash of
what it stands for.  The same inputs give the same names on every host and after a restart,
which is what lets an agent adopt what it finds and tell what nobody owns.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re

NETNS_PREFIX = "evp-"  # a project's network namespace
UPLINK_PREFIX = "evu"  # the host's end of a project's uplink (veth)
UPLINK_INSIDE = "uplink"  # the namespace's end
BRIDGE_PREFIX = "evb"  # a zone subnet's bridge in the project's namespace
TAP_PREFIX = "evt"  # a VM NIC
VXLAN_PREFIX = "evx"  # a zone subnet's overlay port on that bridge
VXLAN_PORT = 4789
# Uplinks are /30s from this range, one per project namespace on the machine: host .1, project .2.
UPLINK_RANGE = ipaddress.IPv4Network("169.254.128.0/17")
METADATA_ADDRESS = ipaddress.IPv4Address("169.254.169.254")


def _digest(*parts: str, length: int) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:length]


_DIGEST = 10
_UNSCOPED = re.compile(f"^{NETNS_PREFIX}[0-9a-f]{{{_DIGEST}}}$")


def netns(project: str, scope: str = "") -> str:
    """The network namespace of `project` (a Kubernetes namespace) on this machine.

    `scope` (a host namespace's name) tells apart hosts simulated on one machine."""
    return NETNS_PREFIX + (f"{scope}-" if scope else "") + _digest(project, length=_DIGEST)


def in_scope(name: str, scope: str) -> bool:
    """Whether namespace `name` is a project namespace of `scope`."""
    if not scope:
        return bool(_UNSCOPED.match(name))
    rest = name.removeprefix(f"{NETNS_PREFIX}{scope}-")
    return rest != name and len(rest) == _DIGEST


def uplink_of(netns_name: str) -> str:
    """The host's end of the veth between the host's namespace and the project's."""
    return UPLINK_PREFIX + netns_name[-_DIGEST:]


def uplink(project: str, scope: str = "") -> str:
    return uplink_of(netns(project, scope))


def vxlan(project: str, zone: str) -> str:
    """A project subnet's overlay device (made in the host's namespace, so unique there)."""
    return VXLAN_PREFIX + _digest(project, zone, length=_DIGEST)


def vni(project: str, zone: str) -> int:
    """The VXLAN network identifier of a project subnet: the same on every host."""
    return int(_digest(project, zone, length=6), 16) % 0xFFFFFE + 1


def gateway_mac(zone: str) -> str:
    """The gateway's MAC on a zone subnet: the same on every host, so a guest that moves or
    an ARP answered by another host's bridge agree."""
    digest = _digest("gateway", zone, length=6)
    return "52:54:01:" + ":".join(digest[i:i + 2] for i in range(0, 6, 2))


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
