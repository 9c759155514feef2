"""DHCP in every project network: each VM's own private address, to the VM's MAC only.

Guests configured from the metadata service (cloud-init's OpenStack datasource) first take an
ephemeral DHCP lease to reach 169.254.169.254; the lease is what the API allocated anyway (the
VM's private address, the zone subnet's mask and gateway), so there is no pool and no state.
An unknown MAC gets no answer.  Packets are parsed and built by pure functions; the agent's
event loop serves one UDP socket per zone bridge, made inside the project's namespace and bound
to the bridge (its replies leave there, whatever the namespace's routes say).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from evroc_compute.hosts.network import linux

log = logging.getLogger(__name__)
SERVER_PORT, CLIENT_PORT = 67, 68
LEASE_SECONDS = 86400
MAGIC = b"\x63\x82\x53\x63"
# Message types (option 53).
DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK, RELEASE, INFORM = range(1, 9)
# Options used here.
SUBNET_MASK, ROUTER, DNS, REQUESTED_ADDRESS, LEASE_TIME, MESSAGE_TYPE, SERVER_ID, END, PAD = \
    1, 3, 6, 50, 51, 53, 54, 255, 0
_HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")  # BOOTP, 236 bytes before the cookie
_BROADCAST_FLAG = 0x8000
_ANY = ipaddress.IPv4Address(0)
_EVERYONE = ipaddress.IPv4Address("255.255.255.255")


@dataclass(frozen=True)
class Request:
    """What a client asked: the fields a reply depends on."""

    message_type: int
    xid: int
    mac: str  # chaddr, lower case, colon-separated
    flags: int
    ciaddr: ipaddress.IPv4Address  # the client's address when it has one (renewing)
    giaddr: ipaddress.IPv4Address
    requested: ipaddress.IPv4Address | None  # option 50
    server: ipaddress.IPv4Address | None  # option 54: the server it chose


@dataclass(frozen=True)
class Lease:
    """What a VM gets: its address in its zone subnet, whose first address is the gateway."""

    address: ipaddress.IPv4Interface
    dns: tuple[ipaddress.IPv4Address, ...] = ()

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        return self.address.network.network_address + 1


def parse(packet: bytes) -> Request | None:
    """The DHCP request in a UDP payload, or None for anything else (a reply, BOOTP, junk)."""
    if len(packet) < _HEADER.size + len(MAGIC) or packet[_HEADER.size:_HEADER.size + 4] != MAGIC:
        return None
    op, htype, hlen, _, xid, _, flags, ciaddr, _, _, giaddr, chaddr, _, _ = \
        _HEADER.unpack_from(packet)
    if op != 1 or htype != 1 or hlen != 6:  # a BOOTREQUEST from an Ethernet NIC
        return None
    given = options(packet[_HEADER.size + 4:])
    kind = given.get(MESSAGE_TYPE, b"")
    if len(kind) != 1:
        return None

    def address(code: int) -> ipaddress.IPv4Address | None:
        value = given.get(code, b"")
        return ipaddress.IPv4Address(value) if len(value) == 4 else None

    return Request(message_type=kind[0], xid=xid, mac=":".join(f"{b:02x}" for b in chaddr[:6]),
                   flags=flags, ciaddr=ipaddress.IPv4Address(ciaddr),
                   giaddr=ipaddress.IPv4Address(giaddr), requested=address(REQUESTED_ADDRESS),
                   server=address(SERVER_ID))


def options(data: bytes) -> dict[int, bytes]:
    """Options by code (a code given twice is concatenated, RFC 3396); stops at END."""
    found: dict[int, bytes] = {}
    at = 0
    while at < len(data):
        code = data[at]
        if code == END:
            break
        if code == PAD:
            at += 1
            continue
        if at + 1 >= len(data) or at + 2 + data[at + 1] > len(data):
            break  # truncated: keep what was whole
        length = data[at + 1]
        found[code] = found.get(code, b"") + data[at + 2:at + 2 + length]
        at += 2 + length
    return found


def decide(request: Request, lease: Lease | None) -> int | None:
    """The message type to answer `request` with (OFFER, ACK, NAK), or None to stay silent.

    Silent to strangers, to requests for another server, to relayed requests (there is no
    relay in a project network), and to DECLINE, RELEASE and INFORM (nothing to free or add).
    """
    if lease is None or request.giaddr != _ANY:
        return None
    if request.message_type == DISCOVER:
        return OFFER
    if request.message_type != REQUEST:
        return None
    if request.server is not None and request.server != lease.gateway:
        return None  # it took another server's offer
    asked = request.requested or (request.ciaddr if request.ciaddr != _ANY else None)
    return ACK if asked == lease.address.ip else NAK


def reply(request: Request, lease: Lease, message_type: int) -> bytes:
    """The OFFER, ACK or NAK for `request` (the gateway is the server)."""
    yours = lease.address.ip if message_type != NAK else _ANY
    header = _HEADER.pack(2, 1, 6, 0, request.xid, 0, request.flags, request.ciaddr.packed
                          if message_type == ACK else _ANY.packed, yours.packed, _ANY.packed,
                          _ANY.packed, bytes.fromhex(request.mac.replace(":", "")).ljust(16, b"\0"),
                          b"", b"")
    fields = [(MESSAGE_TYPE, bytes([message_type])), (SERVER_ID, lease.gateway.packed)]
    if message_type != NAK:
        fields += [(LEASE_TIME, struct.pack("!I", LEASE_SECONDS)),
                    (SUBNET_MASK, lease.address.netmask.packed), (ROUTER, lease.gateway.packed)]
        if lease.dns:
            fields.append((DNS, b"".join(a.packed for a in lease.dns)))
    body = b"".join(bytes([code, len(value)]) + value for code, value in fields)
    return header + MAGIC + body + bytes([END])


def destination(request: Request, message_type: int) -> ipaddress.IPv4Address:
    """Where the reply goes (RFC 2131 4.1): a renewing client's own address, else everyone on
    the link (a client without an address cannot take unicast before it has one)."""
    if message_type != NAK and request.ciaddr != _ANY:
        return request.ciaddr
    return _EVERYONE


def answer(packet: bytes, lease_of: Callable[[str], Lease | None]
           ) -> tuple[bytes, ipaddress.IPv4Address] | None:
    """The reply to a UDP payload and where to send it, or None: the whole decision."""
    request = parse(packet)
    if request is None:
        return None
    lease = lease_of(request.mac)
    kind = decide(request, lease)
    if kind is None or lease is None:
        return None
    return reply(request, lease, kind), destination(request, kind)


# The lease of a MAC on a zone's bridge of a project, or None: (project, zone, mac).
Lookup = Callable[[str, str, str], Lease | None]


class _Responder(asyncio.DatagramProtocol):
    def __init__(self, lease_of: Callable[[str], Lease | None]) -> None:
        self.lease_of = lease_of
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        try:
            found = answer(data, self.lease_of)
        except ValueError:  # a malformed address in an option
            return
        if found is not None and self.transport is not None:
            self.transport.sendto(found[0], (str(found[1]), CLIENT_PORT))

    def error_received(self, exc: Exception) -> None:
        log.debug("DHCP socket error: %s", exc)


class DhcpServer:
    """One UDP socket per (project namespace, zone bridge), served from the event loop."""

    def __init__(self, lookup: Lookup) -> None:
        self.lookup = lookup
        self._transports: dict[tuple[str, str], asyncio.DatagramTransport] = {}

    async def serve(self, netns: str, project: str, zone: str, bridge: str) -> None:
        """Answer on `bridge` in `netns` once it exists (every agent of the machine may too)."""
        if (netns, bridge) in self._transports:
            return
        sock = linux.socket_in(netns, socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, bridge.encode())
            sock.bind(("0.0.0.0", SERVER_PORT))
        except OSError as problem:
            sock.close()
            if problem.errno == errno.ENODEV:
                return  # another host's namespace without this zone's bridge (yet)
            raise
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: _Responder(lambda mac: self.lookup(project, zone, mac)), sock=sock)
        self._transports[netns, bridge] = transport

    def close(self, netns: str) -> None:
        """Stop answering in `netns` (the sockets would keep a deleted namespace alive)."""
        for key in [k for k in self._transports if k[0] == netns]:
            with contextlib.suppress(OSError):
                self._transports.pop(key).close()
