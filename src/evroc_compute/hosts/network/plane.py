"""A host's project networks: what the QEMU driver asks for, built from what exists and the API.

Per project with a VM NIC on this machine: a network namespace (names.netns) holding one
bridge per zone subnet with the subnet's gateway address, one tap per NIC, a veth `uplink` to
the root namespace (a /30 from names.UPLINK_RANGE; the host routes each of the project's public
IPs through it), and the project's nftables tables (rules.ruleset).  The namespace routes
between the project's zones; two projects share nothing, so their subnets may overlap.

Taps are opened here and handed to QEMU by fd; they are not persistent, so a tap goes when its
QEMU exits.  A namespace without taps is removed (with its veth, bridges, rules and routes), so
nothing is left once a project's last VM on the machine stops or goes, and an agent that
restarts adopts what runs and removes the rest.  Rules and routes are recomputed from the
API's objects (all the project's VMs) whenever they change, so every agent of a machine
programs the same namespace the same way; a machine-wide lock serializes their changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from evroc_compute.hosts.network import linux, names, rules, security
from evroc_compute.hosts.network.metadata import MetadataServer
from evroc_compute.runtime.settings import Settings
from evroc_compute.runtime.world import World, get, key_of

log = logging.getLogger(__name__)
SWEEP_INTERVAL = 5.0  # seconds between looks for namespaces nobody uses
_SYSCTLS = {"net/ipv4/ip_forward": "1", "net/bridge/bridge-nf-call-iptables": "1",
            "net/netfilter/nf_conntrack_tcp_loose": "0"}


@dataclass(frozen=True)
class Nic:
    """A VM NIC plugged into its project's bridge: QEMU takes `fd` (and closes ours)."""

    fd: int
    tap: str
    mac: str
    netns: str


class NetworkPlane:
    """The project networks of one host (zone `zone`), driven by the QEMU driver."""

    def __init__(self, world: World, settings: Settings, zone: str,
                 user_data: Callable[[dict[str, Any]], bytes],
                 lock: linux.MachineLock | None = None) -> None:
        self.world, self.settings, self.zone = world, settings, zone
        self.lock = lock or linux.MachineLock()
        self.metadata = MetadataServer(self._vm_at, user_data, self._subnet_of)
        self._applied: dict[str, tuple[str, rules.ProjectNetwork]] = {}  # netns -> last loaded
        self._dirty: set[str] = set()  # projects whose rules may have changed
        self._wake = asyncio.Event()
        world.vms.add_handler(self._on_change)
        world.public_ips.add_handler(self._on_change)
        world.security_groups.add_handler(self._on_change)

    def _on_change(self, event: str, obj: dict[str, Any]) -> None:
        self._dirty.add(str(obj["metadata"]["namespace"]))
        self._wake.set()

    # ---- what the driver asks -------------------------------------------------------

    async def attach(self, vm: dict[str, Any]) -> Nic:
        """Plumb the VM's NIC: namespace, bridge and uplink as needed, its tap, its rules."""
        project, uid = str(vm["metadata"]["namespace"]), str(vm["metadata"]["uid"])
        address = get(vm, "status", "networking", "privateIPv4Address")
        subnet = self.settings.subnet(self.zone)
        if not address or subnet is None:
            raise linux.NetworkError(f"zone {self.zone} has no subnet or the VM no private "
                                     "address; a bridged NIC needs both")
        netns, tap, mac = names.netns(project), names.tap(uid), names.mac(uid)
        bridge = names.bridge(self.zone)
        async with self.lock.held():
            await self._ensure_namespace(project)
            await self._ensure_bridge(netns, bridge, subnet)
            fd = linux.open_tap(netns, tap)
            try:
                await linux.run("ip", "-n", netns, "link", "set", tap, "master", bridge, "up")
                # The agent knows every MAC: no ARP for a guest that may still be booting.
                await linux.run("ip", "-n", netns, "neigh", "replace", address, "lladdr", mac,
                                "dev", bridge, "nud", "permanent")
                await self._program(project)
            except BaseException:
                os.close(fd)
                raise
        return Nic(fd=fd, tap=tap, mac=mac, netns=netns)

    async def release(self, project: str) -> None:
        """Remove the project's namespace if no NIC uses it any more (a VM stopped or went)."""
        async with self.lock.held():
            await self._remove_if_unused(names.netns(project))

    async def ssh_answers(self, project: str, address: str) -> bool:
        """Whether an SSH server greets on `address`:22 inside the project's network."""
        netns = names.netns(project)
        try:
            sock = linux.socket_in(netns)
        except (linux.NetworkError, OSError):
            return False
        loop = asyncio.get_running_loop()
        with sock:
            sock.setblocking(False)
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(loop.sock_connect(sock, (address, 22)), 1.0)
                return (await asyncio.wait_for(loop.sock_recv(sock, 4), 5.0)) == b"SSH-"
        return False

    # ---- the life of the agent ----------------------------------------------------------

    async def run(self) -> None:
        """Reprogram projects whose objects changed; remove namespaces nobody uses."""
        await self.world.synced.wait()
        self._dirty.update(self._projects_here())
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), SWEEP_INTERVAL)
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            try:
                async with self.lock.held():
                    for project in sorted(dirty & set(self._projects_here())):
                        await self._program(project)
                    for netns in linux.namespaces(names.NETNS_PREFIX):
                        await self._remove_if_unused(netns)
            except linux.NetworkError:
                log.exception("programming project networks failed; retrying")
                self._dirty |= dirty

    def _projects_here(self) -> list[str]:
        present = set(linux.namespaces(names.NETNS_PREFIX))
        projects = {str(vm["metadata"]["namespace"]) for vm in self.world.vms.cache.values()}
        return sorted(p for p in projects if names.netns(p) in present)

    def _vm_at(self, project: str, address: str) -> dict[str, Any] | None:
        return next((vm for vm in self.world.vms.cache.values()
                     if vm["metadata"]["namespace"] == project
                     and get(vm, "status", "networking", "privateIPv4Address") == address), None)

    def _subnet_of(self, vm: dict[str, Any]) -> ipaddress.IPv4Network | None:
        return self.settings.subnet(str(get(vm, "status", "placement", "zone") or ""))

    # ---- plumbing ---------------------------------------------------------------------

    async def _ensure_namespace(self, project: str) -> None:
        netns, outside = names.netns(project), names.uplink(project)
        if netns not in linux.namespaces(names.NETNS_PREFIX):
            await linux.run("ip", "netns", "add", netns)
            await linux.run("ip", "-n", netns, "link", "set", "lo", "up")
        with linux.inside(netns):
            for key, value in _SYSCTLS.items():
                with open(f"/proc/sys/{key}", "w") as knob:
                    knob.write(value)
        if any(link["ifname"] == outside for link in await linux.links()):
            return
        used = {ipaddress.IPv4Address(a["local"]) for link in await linux.addresses()
                for a in link.get("addr_info", ()) if a.get("family") == "inet"}
        host, inner = names.uplink_pair(names.free_slot(used))
        await linux.run("ip", "-n", netns, "link", "del", names.UPLINK_INSIDE, check=False)
        await linux.run("ip", "link", "add", outside, "type", "veth", "peer", "name",
                        names.UPLINK_INSIDE, "netns", netns)
        await linux.run("ip", "addr", "add", str(host), "dev", outside)
        await linux.run("ip", "link", "set", outside, "up")
        await linux.run("ip", "-n", netns, "addr", "add", str(inner), "dev", names.UPLINK_INSIDE)
        await linux.run("ip", "-n", netns, "link", "set", names.UPLINK_INSIDE, "up")
        await linux.run("ip", "-n", netns, "route", "replace", "default", "via", str(host.ip))
        log.info("network namespace %s for project %s, uplink %s %s", netns, project, outside, host)

    async def _ensure_bridge(self, netns: str, bridge: str, subnet: ipaddress.IPv4Network) -> None:
        if any(link["ifname"] == bridge for link in await linux.links(netns)):
            return
        gateway = f"{subnet.network_address + 1}/{subnet.prefixlen}"
        await linux.run("ip", "-n", netns, "link", "add", bridge, "type", "bridge")
        await linux.run("ip", "-n", netns, "addr", "add", gateway, "dev", bridge)
        await linux.run("ip", "-n", netns, "addr", "add", f"{names.METADATA_ADDRESS}/32",
                        "dev", bridge)
        await linux.run("ip", "-n", netns, "link", "set", bridge, "up")

    async def _remove_if_unused(self, netns: str) -> None:
        if netns not in linux.namespaces(names.NETNS_PREFIX):
            return
        if any(link["ifname"].startswith(names.TAP_PREFIX) for link in await linux.links(netns)):
            return
        outside = names.UPLINK_PREFIX + netns.removeprefix(names.NETNS_PREFIX)
        await self.metadata.close(netns)
        await linux.run("ip", "link", "del", outside, check=False)
        await linux.run("ip", "netns", "del", netns)
        self._applied.pop(netns, None)
        log.info("removed network namespace %s: no VM NIC uses it", netns)

    async def _program(self, project: str) -> None:
        """Load the project's rules (if they changed) and route its public IPs here."""
        netns, wanted = names.netns(project), self.network(project)
        text = rules.ruleset(wanted)
        applied = self._applied.get(netns)
        if applied is None or applied[0] != text:
            await linux.run("nft", "-f", "-", netns=netns, stdin=text)
            self._applied[netns] = (text, wanted)
            if applied is not None:
                await self._cut(netns, wanted)
        await self._route_public(project, [n.public for n in wanted.nics if n.public is not None])
        await self.metadata.serve(netns, project)

    async def _cut(self, netns: str, wanted: rules.ProjectNetwork) -> None:
        """Forget the tracked connections the new rules would not let start: established
        flows outlive the rules that let them in, and with loose TCP pick-up off in the
        namespace (_SYSCTLS) their next packets are invalid and dropped."""
        listed = await linux.run("conntrack", "-L", "-f", "ipv4", netns=netns, check=False)
        for flow in linux.flows(listed):
            if not rules.allows(wanted, flow):
                await linux.run("conntrack", "-D", "-p", flow.protocol, "--orig-src",
                                str(flow.source), "--reply-src", str(flow.destination),
                                netns=netns, check=False)

    async def _route_public(self, project: str, public: Iterable[ipaddress.IPv4Address]) -> None:
        outside = names.uplink(project)
        routes = await linux.run("ip", "-j", "route", "show", "dev", outside, "proto", "static")
        have = {r["dst"] for r in _json_list(routes)}
        inner = await self._uplink_peer(outside)
        want = {str(a) for a in public}
        for address in sorted(want - have):
            await linux.run("ip", "route", "replace", f"{address}/32", "via", inner, "dev", outside,
                            "proto", "static")
        for address in sorted(have - want):
            await linux.run("ip", "route", "del", f"{address}/32", "dev", outside, check=False)

    async def _uplink_peer(self, outside: str) -> str:
        for link in await linux.addresses():
            if link["ifname"] == outside:
                for a in link.get("addr_info", ()):
                    if a.get("family") == "inet":
                        return str(ipaddress.IPv4Address(a["local"]) + 1)
        raise linux.NetworkError(f"the uplink {outside} has no address")

    def network(self, project: str) -> rules.ProjectNetwork:
        """What the project wants of a namespace, from the API's objects."""
        vms = [vm for vm in sorted(self.world.vms.cache.values(), key=key_of)
               if vm["metadata"]["namespace"] == project
               and get(vm, "status", "networking", "privateIPv4Address")]
        groups = {key_of(g)[1]: g for g in self.world.security_groups.cache.values()
                  if key_of(g)[0] == project}
        return security.project_network(self.settings.subnets, vms, groups)

def _json_list(text: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = json.loads(text or "[]")
    return result
