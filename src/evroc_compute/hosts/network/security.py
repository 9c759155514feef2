"""Security groups as nft rules: a pure function from the API's objects to a ProjectNetwork.

evroc's semantics: a VM that names no group is in the project's default group, which allows
all traffic from inside the VPC (every zone subnet of the project) and all egress; naming
groups drops the default one, and the VM gets the union of its groups' rules.  A rule allows
one direction, one protocol (TCP, UDP, ICMP or All), a port or port range, and a remote: a
CIDR, another group (its members' addresses, kept current in a set) or a subnet
(`default-<zone>`).  A VM whose groups have no Egress rule at all may send anywhere (as a new
OpenStack or AWS group does); once one has, egress is only what they allow.  Replies to
allowed flows always pass (the tables are stateful).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

from evroc_compute.hosts.network import names, rules
from evroc_compute.runtime.world import DEFAULT_SECURITY_GROUP, get, security_group_refs

SUBNET_PREFIX = "default-"  # evroc's default subnets are named default-<zone>


def _subnets(subnets: Mapping[str, str]) -> tuple[ipaddress.IPv4Network, ...]:
    return tuple(ipaddress.IPv4Network(cidr) for _, cidr in sorted(subnets.items()))


def group_rules(group: dict[str, Any] | None, name: str, subnets: Mapping[str, str]
                ) -> tuple[list[rules.Rule], list[rules.Rule]]:
    """(ingress, egress) of a group; the default group's when it has no object of its own."""
    if group is None:
        if name == DEFAULT_SECURITY_GROUP:
            return [rules.Rule(peers=_subnets(subnets))], [rules.Rule()]
        return [], []  # named but not created (yet): allows nothing
    ingress: list[rules.Rule] = []
    egress: list[rules.Rule] = []
    for spec in get(group, "spec", "rules") or []:
        rule = _rule(spec, subnets)
        if rule is not None:
            (ingress if spec.get("direction") == "Ingress" else egress).append(rule)
    return ingress, egress


def _rule(spec: dict[str, Any], subnets: Mapping[str, str]) -> rules.Rule | None:
    protocol: rules.Protocol = spec.get("protocol") or "All"
    port, end = spec.get("port"), spec.get("endPort")
    ports = (int(port), int(end or port)) if protocol in ("TCP", "UDP") and port else None
    remote = spec.get("remote") or {}
    if remote.get("address"):
        return rules.Rule(protocol, ports, (ipaddress.IPv4Network(remote["address"], strict=False),))
    if get(remote, "securityGroupRef", "name"):
        return rules.Rule(protocol, ports, peer_set=rules.set_name(remote["securityGroupRef"]["name"]))
    subnet = str(get(remote, "subnetRef", "name") or "")
    cidr = subnets.get(subnet.removeprefix(SUBNET_PREFIX))
    if cidr is None:
        return None  # an unknown subnet names no address
    return rules.Rule(protocol, ports, (ipaddress.IPv4Network(cidr),))


def project_network(subnets: Mapping[str, str], vms: Sequence[dict[str, Any]],
                    groups: Mapping[str, dict[str, Any]]) -> rules.ProjectNetwork:
    """The namespace's wanted state: zones, each VM's NIC with its groups' rules, group sets.

    `vms` are the project's VMs with a private address; `groups` its SecurityGroups by name.
    """
    members: dict[str, list[ipaddress.IPv4Address]] = {name: [] for name in groups}
    nics = []
    for vm in vms:
        address = ipaddress.IPv4Address(get(vm, "status", "networking", "privateIPv4Address"))
        public = get(vm, "status", "networking", "publicIPv4Address")
        ingress: list[rules.Rule] = []
        egress: list[rules.Rule] = []
        for name in security_group_refs(vm):
            members.setdefault(name, []).append(address)
            rules_in, rules_out = group_rules(groups.get(name), name, subnets)
            ingress += rules_in
            egress += rules_out
        uid = str(vm["metadata"]["uid"])
        nics.append(rules.Nic(tap=names.tap(uid), mac=names.mac(uid), address=address,
                              public=ipaddress.IPv4Address(public) if public else None,
                              ingress=tuple(dict.fromkeys(ingress)),
                              egress=tuple(dict.fromkeys(egress)) or (rules.Rule(),)))
    zones = tuple(rules.Zone(names.bridge(zone), ipaddress.IPv4Network(cidr))
                  for zone, cidr in sorted(subnets.items()))
    return rules.ProjectNetwork(zones=zones, nics=tuple(nics),
                                groups={rules.set_name(n): tuple(m) for n, m in members.items()})
