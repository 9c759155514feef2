"""The project network's DHCP responder: packets parsed and answered by pure functions."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from evroc_compute.hosts.network import dhcp

MAC = "52:54:00:ab:cd:ef"
LEASE = dhcp.Lease(ipaddress.IPv4Interface("10.0.1.5/24"))
ANY = ipaddress.IPv4Address(0)
EVERYONE = ipaddress.IPv4Address("255.255.255.255")


def packet(kind: int | None, *, mac: str = MAC, xid: int = 0x1234, ciaddr: str = "0.0.0.0",
           giaddr: str = "0.0.0.0", options: bytes = b"", op: int = 1,
           cookie: bytes = dhcp.MAGIC) -> bytes:
    """A client's packet as dhclient sends it (only the fields the responder reads)."""
    header = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", op, 1, 6, 0, xid, 0, 0,
                         ipaddress.IPv4Address(ciaddr).packed, bytes(4), bytes(4),
                         ipaddress.IPv4Address(giaddr).packed,
                         bytes.fromhex(mac.replace(":", "")).ljust(16, b"\0"), b"", b"")
    kind_option = bytes([dhcp.MESSAGE_TYPE, 1, kind]) if kind is not None else b""
    return header + cookie + kind_option + options + bytes([dhcp.END])


def option(code: int, address: str) -> bytes:
    return bytes([code, 4]) + ipaddress.IPv4Address(address).packed


def reply_options(data: bytes) -> dict[int, bytes]:
    return dhcp.options(data[240:])


def test_parse_reads_what_a_reply_depends_on() -> None:
    found = dhcp.parse(packet(dhcp.REQUEST, options=option(dhcp.REQUESTED_ADDRESS, "10.0.1.5")
                              + bytes([dhcp.PAD]) + option(dhcp.SERVER_ID, "10.0.1.1")))
    assert found == dhcp.Request(message_type=dhcp.REQUEST, xid=0x1234, mac=MAC, flags=0,
                                 ciaddr=ANY, giaddr=ANY,
                                 requested=ipaddress.IPv4Address("10.0.1.5"),
                                 server=ipaddress.IPv4Address("10.0.1.1"))


@pytest.mark.parametrize("data", [
    b"",
    b"\x01" * 100,  # too short
    packet(dhcp.DISCOVER, cookie=b"\0\0\0\0"),  # BOOTP, not DHCP
    packet(dhcp.DISCOVER, op=2),  # a reply (another server's)
    packet(None),  # no message type
], ids=["empty", "short", "bootp", "reply", "no-type"])
def test_parse_ignores_what_is_no_request(data: bytes) -> None:
    assert dhcp.parse(data) is None


def test_a_truncated_option_is_dropped_and_the_rest_kept() -> None:
    data = packet(dhcp.DISCOVER)[:-1] + bytes([dhcp.REQUESTED_ADDRESS, 4, 10])
    parsed = dhcp.parse(data)
    assert parsed is not None and parsed.message_type == dhcp.DISCOVER
    assert parsed.requested is None


def request(kind: int, *, requested: str | None = None, server: str | None = None,
            ciaddr: str = "0.0.0.0", giaddr: str = "0.0.0.0") -> dhcp.Request:
    return dhcp.Request(message_type=kind, xid=1, mac=MAC, flags=0,
                        ciaddr=ipaddress.IPv4Address(ciaddr), giaddr=ipaddress.IPv4Address(giaddr),
                        requested=ipaddress.IPv4Address(requested) if requested else None,
                        server=ipaddress.IPv4Address(server) if server else None)


@pytest.mark.parametrize(("asked", "lease", "expected"), [
    (request(dhcp.DISCOVER), LEASE, dhcp.OFFER),
    (request(dhcp.DISCOVER), None, None),  # a MAC that is no VM's: silence
    (request(dhcp.REQUEST, requested="10.0.1.5", server="10.0.1.1"), LEASE, dhcp.ACK),
    (request(dhcp.REQUEST, requested="10.0.1.5"), LEASE, dhcp.ACK),  # init-reboot
    (request(dhcp.REQUEST, ciaddr="10.0.1.5"), LEASE, dhcp.ACK),  # renewing
    (request(dhcp.REQUEST, requested="10.0.1.9"), LEASE, dhcp.NAK),  # not its address
    (request(dhcp.REQUEST), LEASE, dhcp.NAK),  # asks for nothing
    (request(dhcp.REQUEST, requested="10.0.1.5", server="10.0.1.77"), LEASE, None),  # other server
    (request(dhcp.DISCOVER, giaddr="10.9.9.9"), LEASE, None),  # relayed: no relay here
    (request(dhcp.RELEASE, ciaddr="10.0.1.5"), LEASE, None),
    (request(dhcp.DECLINE, requested="10.0.1.5"), LEASE, None),
    (request(dhcp.INFORM, ciaddr="10.0.1.5"), LEASE, None),
], ids=["discover", "stranger", "select", "init-reboot", "renew", "wrong-address", "no-address",
        "other-server", "relayed", "release", "decline", "inform"])
def test_decide(asked: dhcp.Request, lease: dhcp.Lease | None, expected: int | None) -> None:
    assert dhcp.decide(asked, lease) == expected


@pytest.mark.parametrize(("asked", "kind", "to"), [
    (request(dhcp.DISCOVER), dhcp.OFFER, EVERYONE),
    (request(dhcp.REQUEST, requested="10.0.1.5"), dhcp.ACK, EVERYONE),
    (request(dhcp.REQUEST, ciaddr="10.0.1.5"), dhcp.ACK, ipaddress.IPv4Address("10.0.1.5")),
    (request(dhcp.REQUEST, ciaddr="10.0.1.9"), dhcp.NAK, EVERYONE),
])
def test_destination(asked: dhcp.Request, kind: int, to: ipaddress.IPv4Address) -> None:
    assert dhcp.destination(asked, kind) == to


def test_an_offer_carries_the_vms_address_mask_and_gateway() -> None:
    found = dhcp.answer(packet(dhcp.DISCOVER, xid=0xCAFE), lambda mac: LEASE if mac == MAC else None)
    assert found is not None
    data, to = found
    assert to == EVERYONE
    op, _, _, _, xid, _, _, _, yiaddr, _, _, chaddr = struct.unpack_from(
        "!BBBBIHH4s4s4s4s16s", data)
    assert (op, xid, yiaddr, chaddr[:6]) == (2, 0xCAFE, bytes([10, 0, 1, 5]),
                                            bytes.fromhex(MAC.replace(":", "")))
    assert data[236:240] == dhcp.MAGIC
    assert reply_options(data) == {
        dhcp.MESSAGE_TYPE: bytes([dhcp.OFFER]), dhcp.SERVER_ID: bytes([10, 0, 1, 1]),
        dhcp.LEASE_TIME: struct.pack("!I", dhcp.LEASE_SECONDS),
        dhcp.SUBNET_MASK: bytes([255, 255, 255, 0]), dhcp.ROUTER: bytes([10, 0, 1, 1])}


def test_dns_servers_when_given_and_a_nak_says_only_no() -> None:
    with_dns = dhcp.Lease(LEASE.address, dns=(ipaddress.IPv4Address("10.0.1.3"),))
    asked = request(dhcp.REQUEST, requested="10.0.1.5")
    assert reply_options(dhcp.reply(asked, with_dns, dhcp.ACK))[dhcp.DNS] == bytes([10, 0, 1, 3])
    nak = dhcp.reply(request(dhcp.REQUEST, requested="10.0.1.9"), LEASE, dhcp.NAK)
    assert nak[16:20] == bytes(4)  # no address offered
    assert set(reply_options(nak)) == {dhcp.MESSAGE_TYPE, dhcp.SERVER_ID}


def test_a_stranger_or_junk_gets_nothing() -> None:
    assert dhcp.answer(packet(dhcp.DISCOVER, mac="52:54:00:00:00:01"),
                       lambda mac: LEASE if mac == MAC else None) is None
    assert dhcp.answer(b"junk", lambda mac: LEASE) is None
