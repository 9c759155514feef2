"""Port security and groups in the kernel: the generated ruleset loaded in a scratch namespace.

Two veth "guests" stand for VM NICs on a project's bridge (their bridge ends named like taps);
the test sends real TCP between them inside namespaces it creates and removes, nothing else.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from evroc_compute.hosts.network import linux, names, rules, security

pytestmark = pytest.mark.skipif(linux.missing() is not None, reason="needs root and nftables")

SUBNETS = {"se-sto-a": "10.0.1.0/24"}


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def vm(name: str, address: str) -> dict[str, Any]:
    return {"metadata": {"namespace": "p", "name": name, "uid": name},
            "status": {"networking": {"privateIPv4Address": address}}}


@pytest.fixture
def lab() -> Iterator[dict[str, str]]:
    """A project namespace with a bridge and two guests, 10.0.1.2 (g1) and 10.0.1.3 (g2)."""
    tag = uuid.uuid4().hex[:6]
    spaces = {"project": f"evtest-p{tag}", "g1": f"evtest-a{tag}", "g2": f"evtest-b{tag}"}
    for netns in spaces.values():
        ip("netns", "add", netns)
    project, bridge = spaces["project"], names.bridge("se-sto-a")
    try:
        ip("-n", project, "link", "add", bridge, "type", "bridge")
        ip("-n", project, "addr", "add", "10.0.1.1/24", "dev", bridge)
        ip("-n", project, "link", "set", bridge, "up")
        subprocess.run(["ip", "netns", "exec", project, "sh", "-c",
                        "echo 1 > /proc/sys/net/bridge/bridge-nf-call-iptables; "
                        "echo 1 > /proc/sys/net/ipv4/ip_forward"], check=True)
        for guest, address in (("g1", "10.0.1.2"), ("g2", "10.0.1.3")):
            tap = names.tap(guest)
            ip("link", "add", tap, "netns", project, "type", "veth", "peer", "name", "eth0",
               "netns", spaces[guest])
            ip("-n", project, "link", "set", tap, "master", bridge, "up")
            ip("-n", spaces[guest], "link", "set", "eth0", "address", names.mac(guest), "up")
            ip("-n", spaces[guest], "addr", "add", f"{address}/24", "dev", "eth0")
        network = security.project_network(SUBNETS, [vm("g1", "10.0.1.2"), vm("g2", "10.0.1.3")],
                                           {})
        subprocess.run(["ip", "netns", "exec", project, "nft", "-f", "-"], check=True, text=True,
                       input=rules.ruleset(network))
        yield spaces
    finally:
        for netns in spaces.values():
            subprocess.run(["ip", "netns", "del", netns], capture_output=True)


def connects(lab: dict[str, str], source: str | None = None) -> bool:
    """Whether g1 (from `source` if given) opens a TCP connection to g2."""
    server = linux.socket_in(lab["g2"])
    server.bind(("10.0.1.3", 0))
    server.listen()
    # No accept: the kernel completes the handshake for the listen backlog.
    client = linux.socket_in(lab["g1"])
    client.settimeout(2)
    try:
        if source:
            client.bind((source, 0))
        return client.connect_ex(("10.0.1.3", server.getsockname()[1])) == 0
    finally:
        client.close()
        server.close()


def test_a_guest_sends_only_from_its_own_address_and_mac(lab: dict[str, str]) -> None:
    assert connects(lab)
    ip("-n", lab["g1"], "addr", "add", "10.0.1.99/24", "dev", "eth0")
    assert not connects(lab, source="10.0.1.99")  # a spoofed source address is dropped
    assert connects(lab, source="10.0.1.2")
    ip("-n", lab["g1"], "link", "set", "eth0", "address", "52:54:00:de:ad:01")
    ip("-n", lab["g1"], "neigh", "flush", "all")
    assert not connects(lab)  # so is a spoofed MAC (its ARP too)


def test_the_default_group_admits_the_vpc_but_a_rule_change_can_shut_it(lab: dict[str, str]) -> None:
    assert connects(lab)
    closed = security.project_network(SUBNETS, [vm("g1", "10.0.1.2"), vm("g2", "10.0.1.3")],
                                      {})
    closed = rules.ProjectNetwork(zones=closed.zones, groups=closed.groups, nics=tuple(
        rules.Nic(n.tap, n.mac, n.address, ingress=(), egress=n.egress) for n in closed.nics))
    subprocess.run(["ip", "netns", "exec", lab["project"], "nft", "-f", "-"], check=True,
                   text=True, input=rules.ruleset(closed))
    assert not connects(lab)
