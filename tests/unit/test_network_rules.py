"""The pure half of bridged networking: names, security-group semantics, rulesets, flows."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
import uuid
from typing import Any

import pytest

from evroc_compute.hosts.network import linux, names, rules, security
from evroc_compute.runtime.world import security_group_refs

SUBNETS = {"se-sto-a": "10.0.1.0/24", "se-sto-b": "10.0.2.0/24"}
A = ipaddress.IPv4Address


def vm(name: str, address: str, groups: list[str] | None = None,
       public: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if groups is not None:
        spec["networking"] = {"securityGroups": {
            "securityGroupMemberships": [{"name": g} for g in groups]}}
    networking = {"privateIPv4Address": address}
    if public:
        networking["publicIPv4Address"] = public
    return {"metadata": {"namespace": "p", "name": name, "uid": f"uid-{name}"}, "spec": spec,
            "status": {"networking": networking}}


def group(name: str, *rules_: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"namespace": "p", "name": name}, "spec": {"rules": list(rules_)}}


def rule(direction: str, protocol: str, remote: dict[str, Any], port: int | None = None,
         end: int | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"name": f"r{uuid.uuid4().hex[:4]}", "direction": direction,
                             "protocol": protocol, "remote": remote}
    if port is not None:
        found["port"] = port
    if end is not None:
        found["endPort"] = end
    return found


WEB = group("web",
            rule("Ingress", "TCP", {"address": "0.0.0.0/0"}, 80, 81),
            rule("Ingress", "TCP", {"securityGroupRef": {"name": "admin"}}, 22),
            rule("Egress", "UDP", {"subnetRef": {"name": "default-se-sto-b"}}, 53))
ADMIN = group("admin")
PROJECT = security.project_network(
    SUBNETS, [vm("plain", "10.0.1.2", public="198.51.100.7"), vm("web", "10.0.1.3", ["web"]),
              vm("admin", "10.0.2.2", ["admin"]), vm("ghost", "10.0.2.3", ["missing"])],
    {"web": WEB, "admin": ADMIN})


@pytest.mark.parametrize(("source", "destination", "protocol", "port", "allowed"), [
    # The default group: everything from the VPC, any zone; nothing from outside; all egress.
    ("10.0.2.2", "10.0.1.2", "tcp", 5432, True),
    ("10.0.1.3", "10.0.1.2", "icmp", None, False),  # web's egress is UDP 53 to se-sto-b only
    ("169.254.128.1", "10.0.1.2", "tcp", 22, False),
    ("10.0.1.2", "169.254.128.1", "tcp", 443, True),
    # A named group: its rules only (port ranges, remote groups, subnets), default dropped.
    ("169.254.128.1", "10.0.1.3", "tcp", 81, True),
    ("169.254.128.1", "10.0.1.3", "tcp", 82, False),
    ("10.0.2.2", "10.0.1.3", "tcp", 22, True),  # admin is a member of the remote group
    ("10.0.1.2", "10.0.1.3", "tcp", 22, False),  # plain is not
    ("10.0.1.3", "10.0.2.9", "udp", 53, True),
    ("10.0.1.3", "10.0.1.9", "udp", 53, False),
    # A group with no Egress rule leaves egress open; one that does not exist allows nothing in.
    ("10.0.2.2", "169.254.128.1", "tcp", 443, True),
    ("10.0.2.2", "10.0.2.3", "tcp", 22, False),
])
def test_security_group_semantics(source: str, destination: str, protocol: str,
                                  port: int | None, allowed: bool) -> None:
    flow = rules.Flow(A(source), A(destination), protocol, port)
    assert rules.allows(PROJECT, flow) is allowed


def test_memberships_default_and_named() -> None:
    assert security_group_refs(vm("a", "10.0.1.2")) == ["default"]
    assert security_group_refs(vm("a", "10.0.1.2", ["b", "a", "b"])) == ["a", "b"]


def test_names_fit_linux_and_are_stable() -> None:
    for made in (names.netns("a" * 63), names.uplink("a" * 63), names.bridge("se-sto-a"),
                 names.tap(str(uuid.uuid4()))):
        assert len(made) <= 15
    assert names.netns("p") != names.netns("q") and names.netns("p") == names.netns("p")
    assert names.uplink("p")[3:] == names.netns("p")[4:]  # the namespace finds its uplink
    assert names.mac("u").startswith("52:54:00:") and len(names.mac("u")) == 17
    assert names.uplink_pair(1) == (ipaddress.IPv4Interface("169.254.128.5/30"),
                                    ipaddress.IPv4Interface("169.254.128.6/30"))
    assert names.free_slot({A("169.254.128.1"), A("169.254.128.9")}) == 1


def test_conntrack_listing_parsed_to_flows() -> None:
    listed = (
        "tcp      6 431999 ESTABLISHED src=169.254.128.1 dst=198.51.100.1 sport=40000 dport=22 "
        "src=10.0.1.2 dst=169.254.128.1 sport=22 dport=40000 [ASSURED] mark=0 use=1\n"
        "icmp     1 29 src=10.0.1.2 dst=10.0.2.2 type=8 code=0 id=5 src=10.0.2.2 dst=10.0.1.2 "
        "type=0 code=0 id=5 mark=0 use=1\n"
        "conntrack v1.4.7 (conntrack-tools): 2 flow entries have been shown.\n")
    assert linux.flows(listed) == [
        rules.Flow(A("169.254.128.1"), A("10.0.1.2"), "tcp", 22),
        rules.Flow(A("10.0.1.2"), A("10.0.2.2"), "icmp", None)]


def test_ruleset_has_nat_port_security_and_group_chains() -> None:
    text = rules.ruleset(PROJECT)
    tap = names.tap("uid-plain")
    assert "198.51.100.7 : 10.0.1.2" in text and "10.0.1.2 : 198.51.100.7" in text
    assert f'"{tap}" . {names.mac("uid-plain")} . 10.0.1.2' in text
    assert "tcp dport 80-81 accept" in text
    assert "set g_missing" in text and "set g_admin { type ipv4_addr; elements = { 10.0.2.2 }" in text


@pytest.mark.skipif(linux.missing() is not None or shutil.which("nft") is None,
                    reason="needs root and nftables")
def test_nft_accepts_the_ruleset_twice_and_an_empty_one() -> None:
    netns = f"evtest-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        for project in (PROJECT, PROJECT, rules.ProjectNetwork(zones=(), nics=())):
            subprocess.run(["ip", "netns", "exec", netns, "nft", "-f", "-"],
                           input=rules.ruleset(project), text=True, check=True)
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=True)
