"""Port security, groups and DHCP in the kernel: the generated ruleset loaded in a scratch namespace.

Two veth "guests" stand for VM NICs on a project's bridge (their bridge ends named like taps);
the test sends real TCP between them inside namespaces it creates and removes, nothing else.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import struct
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from evroc_compute.hosts.network import dhcp, linux, names, rules, security

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


def dhcp_exchange(lab: dict[str, str], kind: int, options: bytes = b"") -> bytes | None:
    """g1 broadcasts a DHCP message from 0.0.0.0 (it has no address) and returns the reply."""
    client = linux.socket_in(lab["g1"], socket.AF_INET, socket.SOCK_DGRAM)
    with client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
        client.bind(("0.0.0.0", dhcp.CLIENT_PORT))
        client.settimeout(2)
        mac = subprocess.run(["ip", "-n", lab["g1"], "-j", "link", "show", "eth0"],
                             capture_output=True, text=True, check=True).stdout
        chaddr = bytes.fromhex(json.loads(mac)[0]["address"].replace(":", ""))
        header = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, 42, 0, 0, bytes(4),
                             bytes(4), bytes(4), bytes(4), chaddr.ljust(16, b"\0"), b"", b"")
        client.sendto(header + dhcp.MAGIC + bytes([dhcp.MESSAGE_TYPE, 1, kind]) + options
                      + bytes([dhcp.END]), ("255.255.255.255", dhcp.SERVER_PORT))
        try:
            return client.recv(1500)
        except TimeoutError:
            return None


async def test_a_guest_without_an_address_gets_its_own_by_dhcp(lab: dict[str, str]) -> None:
    known = {names.mac("g1"): dhcp.Lease(ipaddress.IPv4Interface("10.0.1.2/24")),
             "52:54:00:de:ad:01": dhcp.Lease(ipaddress.IPv4Interface("10.0.1.2/24"))}
    server = dhcp.DhcpServer(lambda project, zone, mac: known.get(mac) if zone == "se-sto-a"
                             else None)
    await server.serve(lab["project"], "p", "se-sto-a", names.bridge("se-sto-a"))
    await server.serve(lab["project"], "p", "se-sto-b", "evbnosuchdev")  # no bridge: no socket
    try:
        ip("-n", lab["g1"], "addr", "flush", "dev", "eth0")
        offer = await asyncio.to_thread(dhcp_exchange, lab, dhcp.DISCOVER)
        assert offer is not None and offer[16:20] == bytes([10, 0, 1, 2])
        assert dhcp.options(offer[240:])[dhcp.ROUTER] == bytes([10, 0, 1, 1])
        ack = await asyncio.to_thread(dhcp_exchange, lab, dhcp.REQUEST, bytes(
            [dhcp.REQUESTED_ADDRESS, 4, 10, 0, 1, 2, dhcp.SERVER_ID, 4, 10, 0, 1, 1]))
        assert ack is not None and dhcp.options(ack[240:])[dhcp.MESSAGE_TYPE] == bytes([dhcp.ACK])
        # Another MAC on g1's port: port security drops its request before the server sees it.
        ip("-n", lab["g1"], "link", "set", "eth0", "address", "52:54:00:de:ad:01")
        assert await asyncio.to_thread(dhcp_exchange, lab, dhcp.DISCOVER) is None
    finally:
        server.close(lab["project"])
