"""The nftables ruleset of one project namespace: a pure function of what the project wants.

Three tables, replaced together in one atomic `nft -f` transaction:

- `ip evroc-nat`: a static public IP is DNAT'ed to its VM and the VM SNAT'ed to it; everything
  else leaving by the uplink is masqueraded; traffic DNAT'ed back into a bridge (one VM
  reaching another by its public IP) is masqueraded too, so replies return the same way.
- `bridge evroc-port`: port security.  A tap may only send from its VM's MAC and IP (ARP
  included), so every source address the other tables see is trustworthy; before it has its
  address, its MAC may ask for it (DHCP from 0.0.0.0).  The bridge family
  has no connection tracking here, which is why groups are enforced in the inet table.
- `inet evroc-sg`: security groups, stateful.  Each VM has an ingress and an egress chain
  holding the rules of all its groups, reached through verdict maps keyed by its address;
  one set per group holds its members' addresses for rules naming a remote group.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from evroc_compute.hosts.network.names import METADATA_ADDRESS, UPLINK_INSIDE

Protocol = Literal["TCP", "UDP", "ICMP", "All"]
Direction = Literal["in", "out"]
TABLES = (("ip", "evroc-nat"), ("bridge", "evroc-port"), ("inet", "evroc-sg"))


@dataclass(frozen=True)
class Zone:
    bridge: str
    subnet: ipaddress.IPv4Network


@dataclass(frozen=True)
class Rule:
    """One allowed flow, seen from the VM: `peer` is the source (ingress) or destination (egress).

    `peer_set` names a group's member set instead of CIDRs; no peer at all means anywhere.
    """

    protocol: Protocol = "All"
    ports: tuple[int, int] | None = None  # inclusive range; None: every port
    peers: tuple[ipaddress.IPv4Network, ...] = ()
    peer_set: str | None = None


@dataclass(frozen=True)
class Nic:
    """A VM's NIC as the namespace sees it, and the rules its groups give it."""

    tap: str
    mac: str
    address: ipaddress.IPv4Address
    public: ipaddress.IPv4Address | None = None
    ingress: tuple[Rule, ...] = ()
    egress: tuple[Rule, ...] = ()


@dataclass(frozen=True)
class ProjectNetwork:
    zones: tuple[Zone, ...]
    nics: tuple[Nic, ...]
    # Member sets by set name (set_name): the addresses rules naming a remote group match.
    groups: dict[str, tuple[ipaddress.IPv4Address, ...]] = field(default_factory=dict)


def ruleset(project: ProjectNetwork) -> str:
    """The `nft -f` input that replaces the namespace's tables with what `project` wants."""
    lines: list[str] = []
    for family, table in TABLES:  # declare-then-delete: deletes whether it exists or not
        lines += [f"table {family} {table}", f"delete table {family} {table}"]
    lines += _nat(project) + _ports(project) + _groups(project)
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Flow:
    """A tracked connection: who opened it, to whom (after DNAT), protocol and port."""

    source: ipaddress.IPv4Address
    destination: ipaddress.IPv4Address
    protocol: str  # "tcp", "udp", "icmp", ...
    port: int | None


def allows(project: ProjectNetwork, flow: Flow) -> bool:
    """Whether the rules let `flow` start: the sender's egress and the receiver's ingress,
    as the forward chain judges them (an address that is no VM's is not judged)."""
    nics = {n.address: n for n in project.nics}
    sender, receiver = nics.get(flow.source), nics.get(flow.destination)
    if sender is not None and not any(
            _allows(r, flow.destination, flow, project) for r in sender.egress):
        return False
    return receiver is None or any(_allows(r, flow.source, flow, project) for r in receiver.ingress)


def _allows(rule: Rule, peer: ipaddress.IPv4Address, flow: Flow, project: ProjectNetwork) -> bool:
    if rule.peer_set is not None and peer not in project.groups.get(rule.peer_set, ()):
        return False
    if rule.peers and not any(peer in network for network in rule.peers):
        return False
    if rule.protocol != "All" and rule.protocol.lower() != flow.protocol:
        return False
    return rule.ports is None or (flow.port is not None
                                  and rule.ports[0] <= flow.port <= rule.ports[1])


def _elements(items: Iterable[str]) -> str:
    listed = ", ".join(items)
    return f" elements = {{ {listed} }};" if listed else ""


def _nat(project: ProjectNetwork) -> list[str]:
    public = [n for n in project.nics if n.public is not None]
    subnets = ", ".join(str(z.subnet) for z in project.zones)
    lines = [
        "table ip evroc-nat {",
        "  map dnat_pub { type ipv4_addr : ipv4_addr;"
        + _elements(f"{n.public} : {n.address}" for n in public) + " }",
        "  map snat_pub { type ipv4_addr : ipv4_addr;"
        + _elements(f"{n.address} : {n.public}" for n in public) + " }",
        "  chain prerouting { type nat hook prerouting priority dstnat;",
        "    dnat to ip daddr map @dnat_pub; }",
        "  chain postrouting { type nat hook postrouting priority srcnat;",
        f'    oifname "{UPLINK_INSIDE}" snat to ip saddr map @snat_pub',
    ]
    if subnets:
        lines += [f'    oifname "{UPLINK_INSIDE}" ip saddr {{ {subnets} }} masquerade',
                  f"    ip saddr {{ {subnets} }} ct status dnat masquerade"]
    lines += ["  }", "}"]
    return lines


def _ports(project: ProjectNetwork) -> list[str]:
    ports = _elements(f'"{n.tap}" . {n.mac} . {n.address}' for n in project.nics)
    macs = _elements(f'"{n.tap}" . {n.mac}' for n in project.nics)
    return [
        "table bridge evroc-port {",
        "  set ports { type ifname . ether_addr . ipv4_addr;" + ports + " }",
        "  set macs { type ifname . ether_addr;" + macs + " }",
        "  chain prerouting { type filter hook prerouting priority filter;",
        '    iifname != "evt*" accept',
        "    ether type ip iifname . ether saddr . ip saddr @ports accept",
        "    ether type arp iifname . ether saddr . arp saddr ip @ports accept",
        "    iifname . ether saddr @macs ip saddr 0.0.0.0 udp sport 68 udp dport 67 accept",
        "    counter drop",
        "  }",
        "}",
    ]


def set_name(group: str) -> str:
    """The member set of a group (nft names: letters, digits, '_')."""
    return "g_" + "".join(c if c.isalnum() else "_" for c in group)


def chain_name(nic: Nic, direction: Direction) -> str:
    return f"{nic.tap}-{direction}"


def _match(rule: Rule, direction: Direction) -> str:
    peer = "saddr" if direction == "in" else "daddr"
    parts = []
    if rule.peer_set is not None:
        parts.append(f"ip {peer} @{rule.peer_set}")
    elif rule.peers:
        parts.append(f"ip {peer} {{ {', '.join(str(p) for p in rule.peers)} }}")
    if rule.protocol == "ICMP":
        parts.append("meta l4proto icmp")
    elif rule.protocol in ("TCP", "UDP"):
        proto = rule.protocol.lower()
        if rule.ports is None:
            parts.append(f"meta l4proto {proto}")
        else:
            low, high = rule.ports
            parts.append(f"{proto} dport {low}" + (f"-{high}" if high != low else ""))
    return " ".join(parts)


def _groups(project: ProjectNetwork) -> list[str]:
    lines = ["table inet evroc-sg {"]
    referenced = {r.peer_set for n in project.nics for r in (*n.ingress, *n.egress) if r.peer_set}
    sets = {name: () for name in referenced} | dict(project.groups)  # a group without members too
    for name, members in sorted(sets.items()):
        lines.append(f"  set {name} {{ type ipv4_addr;" + _elements(str(m) for m in members) + " }")
    for nic in project.nics:
        directions: tuple[tuple[Direction, tuple[Rule, ...], str], ...] = (
            ("in", nic.ingress, "accept"), ("out", nic.egress, "return"))
        for direction, allowed, verdict in directions:
            body = ["    " + " ".join(p for p in (_match(r, direction), verdict) if p)
                    for r in allowed]
            lines += [f"  chain {chain_name(nic, direction)} {{", *body, "    drop", "  }"]
    lines += [
        "  map vm_in { type ipv4_addr : verdict;"
        + _elements(f"{n.address} : jump {chain_name(n, 'in')}" for n in project.nics) + " }",
        "  map vm_out { type ipv4_addr : verdict;"
        + _elements(f"{n.address} : jump {chain_name(n, 'out')}" for n in project.nics) + " }",
        "  chain forward { type filter hook forward priority filter;",
        "    ct state established,related accept",
        "    ct state invalid drop",
        "    ip saddr vmap @vm_out",
        "    ip daddr vmap @vm_in",
        "  }",
        # The namespace itself (gateway, metadata): what a VM may ask of it, nothing else.
        "  chain input { type filter hook input priority filter;",
        f'    iifname "{UPLINK_INSIDE}" ct state established,related accept',
        f'    iifname "{UPLINK_INSIDE}" drop',
        "    ct state established,related accept",
        f"    ip daddr {METADATA_ADDRESS} tcp dport 80 accept",
        "    udp sport 68 udp dport 67 accept",
        "    meta l4proto icmp accept",
        "    drop",
        "  }",
        "}",
    ]
    return lines
