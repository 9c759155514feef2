"""The metadata service at 169.254.169.254 in every project network, answering by source address.

One HTTP server per agent; each project namespace on the host gets its own listening socket
(made inside the namespace, so it accepts only that project's traffic) and the requester is
the project's VM with that private address, trustworthy because port security stops spoofing.
An unknown source gets 403.  EC2 paths (`/latest/meta-data/...`, `/latest/user-data`, and the
IMDSv2 token) and OpenStack paths (`/openstack/latest/meta_data.json`, `network_data.json`,
`user_data`) are served from the VM object as the API has it now.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import secrets
import socket
from collections.abc import Callable
from typing import Any

from evroc_compute.hosts.network import linux, names
from evroc_compute.runtime.world import get

log = logging.getLogger(__name__)
PORT = 80
_MAX_REQUEST = 16384

# The VM of a project with a private address, or None.
Lookup = Callable[[str, str], dict[str, Any] | None]


def _keys(vm: dict[str, Any]) -> list[str]:
    return [str(k.get("value", "")).strip()
            for k in get(vm, "spec", "osSettings", "ssh", "authorizedKeys") or []
            if str(k.get("value", "")).strip()]


def answer(vm: dict[str, Any], path: str, user_data: bytes,
           subnet: ipaddress.IPv4Network | None) -> tuple[int, bytes, str]:
    """(status, body, content type) for GET `path` asked by `vm`."""
    meta = vm["metadata"]
    private = get(vm, "status", "networking", "privateIPv4Address") or ""
    public = get(vm, "status", "networking", "publicIPv4Address") or ""
    keys = _keys(vm)
    ec2: dict[str, str] = {"instance-id": meta["uid"], "hostname": meta["name"],
                           "local-hostname": meta["name"], "local-ipv4": private}
    if public:
        ec2["public-ipv4"] = public
    text = "text/plain"
    path = path.split("?", 1)[0]
    if path in ("/latest/meta-data", "/latest/meta-data/"):
        listing = [*ec2, *(("public-keys/",) if keys else ())]
        return 200, "\n".join(listing).encode(), text
    if path.startswith("/latest/meta-data/"):
        item = path.removeprefix("/latest/meta-data/").rstrip("/")
        if item in ec2:
            return 200, ec2[item].encode(), text
        if item == "public-keys" and keys:
            return 200, "\n".join(f"{i}=key{i}" for i in range(len(keys))).encode(), text
        parts = item.split("/")
        if len(parts) >= 2 and parts[0] == "public-keys" and parts[1].isdigit() \
                and int(parts[1]) < len(keys):
            if len(parts) == 2:
                return 200, b"openssh-key", text
            if parts[2:] == ["openssh-key"]:
                return 200, keys[int(parts[1])].encode(), text
    if path in ("/openstack", "/openstack/"):
        # The versions served; cloud-init's OpenStack datasource waits for this answer.
        return 200, b"latest", text
    if path in ("/latest/user-data", "/openstack/latest/user_data"):
        return 200, user_data, "application/octet-stream"
    if path == "/openstack/latest/meta_data.json":
        document = {"uuid": meta["uid"], "name": meta["name"], "hostname": meta["name"],
                    "project_id": meta["namespace"],
                    "availability_zone": get(vm, "status", "placement", "zone") or "",
                    "public_keys": {f"key{i}": key for i, key in enumerate(keys)}}
        return 200, json.dumps(document).encode(), "application/json"
    if path == "/openstack/latest/network_data.json" and private and subnet is not None:
        gateway = str(subnet.network_address + 1)
        # `gateway` is no Nova key, but cloud-init keeps it: without it, the default route
        # is only a `route add` line (net-tools), which ifupdown-only guests cannot run.
        document = {"links": [{"id": "eth0", "type": "phy",
                               "ethernet_mac_address": names.mac(meta["uid"])}],
                    "networks": [{"id": "private", "link": "eth0", "type": "ipv4",
                                  "ip_address": private, "netmask": str(subnet.netmask),
                                  "gateway": gateway,
                                  "routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0",
                                              "gateway": gateway}]}],
                    "services": []}
        return 200, json.dumps(document).encode(), "application/json"
    return 404, b"not found\n", text


class MetadataServer:
    """Listening sockets in project namespaces, served from the agent's event loop."""

    def __init__(self, lookup: Lookup, user_data: Callable[[dict[str, Any]], bytes],
                 subnet: Callable[[dict[str, Any]], ipaddress.IPv4Network | None]) -> None:
        self.lookup, self.user_data, self.subnet = lookup, user_data, subnet
        self._servers: dict[str, asyncio.Server] = {}  # netns -> its listener

    async def serve(self, netns: str, project: str) -> None:
        """Listen in `netns` (once; SO_REUSEPORT lets every agent of the machine listen)."""
        if netns in self._servers:
            return
        sock = linux.socket_in(netns)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((str(names.METADATA_ADDRESS), PORT))
        except OSError:
            sock.close()
            raise

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._handle(project, reader, writer)

        self._servers[netns] = await asyncio.start_server(handle, sock=sock)

    async def close(self, netns: str) -> None:
        """Stop listening in `netns` (the socket would keep a deleted namespace alive)."""
        server = self._servers.pop(netns, None)
        if server is not None:
            server.close()
            await server.wait_closed()

    async def _handle(self, project: str, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10.0)
            method, path, *_ = head.decode("latin-1").split(" ", 2)
            source = str(writer.get_extra_info("peername")[0])
            vm = self.lookup(project, source)
            if vm is None:
                status, body, kind = 403, f"{source} is no VM of this network\n".encode(), \
                    "text/plain"
            elif method == "PUT" and path == "/latest/api/token":
                # IMDSv2 clients ask for a token first; one is given, none is required.
                status, body, kind = 200, secrets.token_urlsafe(24).encode(), "text/plain"
            elif method not in ("GET", "HEAD"):
                status, body, kind = 405, b"GET only\n", "text/plain"
            else:
                status, body, kind = answer(vm, path, self.user_data(vm), self.subnet(vm))
            reason = {200: "OK", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed"}
            writer.write(f"HTTP/1.0 {status} {reason[status]}\r\nContent-Type: {kind}\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                         + (body if method != "HEAD" else b""))
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
                ConnectionError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
