"""A host's project networks: what the QEMU driver asks for, built from what exists and the API.

Per project with a VM NIC on this machine: a network namespace (names.netns) holding one
bridge per zone subnet with the subnet's gateway address, one tap per NIC, a veth `uplink` to
the host's namespace (the root one unless `host_netns` stands for the host; a /30 from
names.UPLINK_RANGE; the host routes the public IPs of its VMs through it), and the project's
nftables tables (rules.ruleset).  The namespace routes between the project's zones; two
projects share nothing, so their subnets may overlap.  With an `underlay` address, every zone
subnet is a bridge here, joined to the same subnet on the other hosts by VXLAN.

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
from typing import Any

from evroc_compute.hosts.network import dhcp, linux, names, rules, security
from evroc_compute.hosts.network.metadata import MetadataServer
from evroc_compute.runtime.settings import Settings
from evroc_compute.runtime.world import World, get, key_of

log = logging.getLogger(__name__)
UNDERLAY_ANNOTATION = "network.evroc-compute.io/underlay"  # on a Host: its VTEP address
SWEEP_INTERVAL = 5.0  # seconds between looks for namespaces nobody uses
_SYSCTLS = {"net/ipv4/ip_forward": "1", "net/bridge/bridge-nf-call-iptables": "1",
            "net/netfilter/nf_conntrack_tcp_loose": "0"}


class NetworkPlane:
    """The project networks of one host (zone `zone`), driven by the QEMU driver."""

    def __init__(self, world: World, settings: Settings, host: str, zone: str,
                 user_data: Callable[[dict[str, Any]], bytes], *, host_netns: str = "",
                 underlay: str = "", lock: linux.MachineLock | None = None) -> None:
        self.world, self.settings, self.host, self.zone = world, settings, host, zone
        # The namespace standing for this host's own network ("" = the root namespace), and
        # its address on the underlay between hosts ("" = no overlay: one machine only).
        self.host_netns, self.underlay = host_netns, underlay
        self._at_host: tuple[str, ...] = ("-n", host_netns) if host_netns else ()
        self.lock = lock or linux.MachineLock()
        self.metadata = MetadataServer(self._vm_at, user_data, self._subnet_of)
        self.dhcp = dhcp.DhcpServer(self._lease)
        self._applied: dict[str, tuple[str, rules.ProjectNetwork]] = {}  # netns -> last loaded
        # netns -> (project, generation of each of its SecurityGroups in the loaded rules)
        self._programmed: dict[str, tuple[str, dict[str, int]]] = {}
        self._dirty: set[str] = set()  # projects whose rules may have changed
        self._wake = asyncio.Event()
        world.vms.add_handler(self._on_change)
        world.public_ips.add_handler(self._on_change)
        world.security_groups.add_handler(self._on_change)
        if underlay:  # which host runs a VM, and where hosts are: routes and the overlay
            world.instances.add_handler(self._on_change)
            world.hosts.add_handler(self._on_host)

    def _on_host(self, event: str, host: dict[str, Any]) -> None:
        self._dirty.update(str(vm["metadata"]["namespace"]) for vm in self.world.vms.cache.values())
        self._wake.set()

    def _netns(self, project: str) -> str:
        return names.netns(project, self.host_netns)

    def _mine(self) -> list[str]:
        """This host's project namespaces that exist."""
        return [n for n in linux.namespaces(names.NETNS_PREFIX) if names.in_scope(n, self.host_netns)]

    def _on_change(self, event: str, obj: dict[str, Any]) -> None:
        self._dirty.add(str(obj["metadata"]["namespace"]))
        self._wake.set()

    # ---- what the driver asks -------------------------------------------------------

    async def attach(self, vm: dict[str, Any]) -> int:
        """Plumb the VM's NIC: namespace, bridge and uplink as needed, its tap, its rules.

        Returns the tap's fd, for QEMU to inherit; the caller closes its own copy."""
        project, uid = str(vm["metadata"]["namespace"]), str(vm["metadata"]["uid"])
        address = get(vm, "status", "networking", "privateIPv4Address")
        subnet = self.settings.subnet(self.zone)
        if not address or subnet is None:
            raise linux.NetworkError(f"zone {self.zone} has no subnet or the VM no private "
                                     "address; a bridged NIC needs both")
        netns, tap, mac = self._netns(project), names.tap(uid), names.mac(uid)
        bridge = names.bridge(self.zone)
        async with self.lock.held():
            await self._ensure_namespace(project)
            await self._ensure_bridge(project, self.zone, subnet)
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
        return fd

    async def release(self, project: str) -> None:
        """Remove the project's namespace if no NIC uses it any more (a VM stopped or went)."""
        async with self.lock.held():
            await self._remove_if_unused(self._netns(project))

    async def ssh_answers(self, project: str, address: str) -> bool:
        """Whether an SSH server greets on `address`:22 inside the project's network."""
        try:
            sock = linux.socket_in(self._netns(project))
        except (linux.NetworkError, OSError):
            return False
        loop = asyncio.get_running_loop()
        with sock:
            sock.setblocking(False)
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(loop.sock_connect(sock, (address, 22)), 1.0)
                return (await asyncio.wait_for(loop.sock_recv(sock, 4), 5.0)) == b"SSH-"
        return False

    @property
    def programmed(self) -> dict[str, dict[str, int]]:
        """The generation of each SecurityGroup in force here, by project and name."""
        return {project: groups for project, groups in self._programmed.values()}

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
                    for netns in self._mine():
                        await self._remove_if_unused(netns)
            except Exception:  # a failed command or namespace: keep serving, try again
                log.exception("programming project networks failed; retrying")
                self._dirty |= dirty

    def _projects_here(self) -> list[str]:
        present = set(self._mine())
        projects = {str(vm["metadata"]["namespace"]) for vm in self.world.vms.cache.values()}
        return sorted(p for p in projects if self._netns(p) in present)

    def _vm_at(self, project: str, address: str) -> dict[str, Any] | None:
        return next((vm for vm in self.world.vms.cache.values()
                     if vm["metadata"]["namespace"] == project
                     and get(vm, "status", "networking", "privateIPv4Address") == address), None)

    def _subnet_of(self, vm: dict[str, Any]) -> ipaddress.IPv4Network | None:
        return self.settings.subnet(str(get(vm, "status", "placement", "zone") or ""))

    def _lease(self, project: str, zone: str, mac: str) -> dhcp.Lease | None:
        """The DHCP lease of the project's VM in `zone` with that MAC: its private address."""
        subnet = self.settings.subnet(zone)
        for vm in self.world.vms.cache.values():
            address = get(vm, "status", "networking", "privateIPv4Address")
            if vm["metadata"]["namespace"] == project and address and subnet is not None \
                    and get(vm, "status", "placement", "zone") == zone \
                    and names.mac(str(vm["metadata"]["uid"])) == mac:
                return dhcp.Lease(ipaddress.IPv4Interface(f"{address}/{subnet.prefixlen}"))
        return None

    # ---- plumbing ---------------------------------------------------------------------

    async def _ensure_namespace(self, project: str) -> None:
        netns = self._netns(project)
        outside = names.uplink_of(netns)
        # While a project network is here, the public pool ends on this host: an address not
        # (yet) routed into a project is unreachable at once instead of leaving by the
        # default route.
        await linux.run("ip", *self._at_host, "route", "replace", "unreachable",
                        self.settings.public_ip_pool)
        if netns not in linux.namespaces(names.NETNS_PREFIX):
            await linux.run("ip", "netns", "add", netns)
            await linux.run("ip", "-n", netns, "link", "set", "lo", "up")
        with linux.inside(netns):
            for key, value in _SYSCTLS.items():
                with open(f"/proc/sys/{key}", "w") as knob:
                    knob.write(value)
        if self.underlay:  # every zone subnet here too, joined to the other hosts' by VXLAN
            for zone, cidr in sorted(self.settings.subnets.items()):
                await self._ensure_bridge(project, zone, ipaddress.IPv4Network(cidr))
        if any(link["ifname"] == outside for link in await linux.links(self.host_netns or None)):
            return
        used = {ipaddress.IPv4Address(a["local"])
                for link in await linux.addresses(self.host_netns or None)
                for a in link.get("addr_info", ()) if a.get("family") == "inet"}
        host, inner = names.uplink_pair(names.free_slot(used))
        await linux.run("ip", "-n", netns, "link", "del", names.UPLINK_INSIDE, check=False)
        await linux.run("ip", *self._at_host, "link", "add", outside, "type", "veth", "peer",
                        "name", names.UPLINK_INSIDE, "netns", netns)
        await linux.run("ip", *self._at_host, "addr", "add", str(host), "dev", outside)
        await linux.run("ip", *self._at_host, "link", "set", outside, "up")
        await linux.run("ip", "-n", netns, "addr", "add", str(inner), "dev", names.UPLINK_INSIDE)
        await linux.run("ip", "-n", netns, "link", "set", names.UPLINK_INSIDE, "up")
        await linux.run("ip", "-n", netns, "route", "replace", "default", "via", str(host.ip))
        log.info("network namespace %s for project %s, uplink %s %s", netns, project, outside, host)

    async def _ensure_bridge(self, project: str, zone: str,
                             subnet: ipaddress.IPv4Network) -> None:
        netns, bridge = self._netns(project), names.bridge(zone)
        present = {link["ifname"] for link in await linux.links(netns)}
        if bridge not in present:
            gateway = f"{subnet.network_address + 1}/{subnet.prefixlen}"
            await linux.run("ip", "-n", netns, "link", "add", bridge, "address",
                            names.gateway_mac(zone), "type", "bridge")
            await linux.run("ip", "-n", netns, "addr", "add", gateway, "dev", bridge)
            await linux.run("ip", "-n", netns, "addr", "add", f"{names.METADATA_ADDRESS}/32",
                            "dev", bridge)
            await linux.run("ip", "-n", netns, "link", "set", bridge, "up")
        vxlan = names.vxlan(project, zone)
        if self.underlay and vxlan not in present:
            # Made where the underlay is (its packets stay there), then moved to the project.
            await linux.run("ip", *self._at_host, "link", "del", vxlan, check=False)
            await linux.run("ip", *self._at_host, "link", "add", vxlan, "type", "vxlan", "id",
                            str(names.vni(project, zone)), "local", self.underlay, "dstport",
                            str(names.VXLAN_PORT), "nolearning")
            await linux.run("ip", *self._at_host, "link", "set", vxlan, "netns", netns)
            await linux.run("ip", "-n", netns, "link", "set", vxlan, "master", bridge, "up")

    async def _remove_if_unused(self, netns: str) -> None:
        if netns not in linux.namespaces(names.NETNS_PREFIX):
            self._programmed.pop(netns, None)
            return
        if any(link["ifname"].startswith(names.TAP_PREFIX) for link in await linux.links(netns)):
            return
        await self.metadata.close(netns)
        self.dhcp.close(netns)
        await linux.run("ip", *self._at_host, "link", "del", names.uplink_of(netns), check=False)
        await linux.run("ip", "netns", "del", netns)
        self._applied.pop(netns, None)
        self._programmed.pop(netns, None)
        log.info("removed network namespace %s: no VM NIC uses it", netns)
        if not self._mine():  # the last project here: the host is left as it was found
            await linux.run("ip", *self._at_host, "route", "del", "unreachable",
                            self.settings.public_ip_pool, check=False)

    async def _program(self, project: str) -> None:
        """Load the project's rules (if they changed) and route its public IPs here."""
        netns, wanted = self._netns(project), self.network(project)
        generations = {key_of(g)[1]: int(g["metadata"].get("generation", 1))
                       for g in self.world.security_groups.by_index("namespace", project)}
        text = rules.ruleset(wanted)
        applied = self._applied.get(netns)
        if applied is None or applied[0] != text:
            await linux.run("nft", "-f", "-", netns=netns, stdin=text)
            self._applied[netns] = (text, wanted)
            if applied is not None:
                await self._cut(netns, wanted)
        here = self._vms_here(project)
        await self._route_public(netns, [n.public for n in wanted.nics
                                         if n.public is not None and n.address in here])
        if self.underlay:
            await self._overlay(project, here)
        await self.metadata.serve(netns, project)
        await self.dhcp.serve(netns, project, self.zone, names.bridge(self.zone))
        self._programmed[netns] = (project, generations)

    def _vms_here(self, project: str) -> set[ipaddress.IPv4Address]:
        """The private addresses of the project's VMs this host (or, without an overlay, this
        machine, whose hosts share the namespace) runs."""
        found = set()
        for vm in self.world.vms.cache.values():
            address = get(vm, "status", "networking", "privateIPv4Address")
            if vm["metadata"]["namespace"] != project or not address:
                continue
            if self.underlay and self._host_of(vm) != self.host:
                continue
            found.add(ipaddress.IPv4Address(address))
        return found

    def _host_of(self, vm: dict[str, Any]) -> str | None:
        host = get(self.world.instances.get(*key_of(vm)), "spec", "host")
        return str(host) if host else None

    async def _overlay(self, project: str, here: set[ipaddress.IPv4Address]) -> None:
        """Point each zone subnet's VXLAN at the other hosts: one flood entry per host (ARP
        among a subnet's VMs), one entry and a neighbour per VM elsewhere (no learning)."""
        netns = self._netns(project)
        remotes = sorted({a for h in self.world.hosts.cache.values()
                          if (a := (get(h, "metadata", "annotations") or {}).get(UNDERLAY_ANNOTATION))
                          and a != self.underlay})
        for zone in sorted(self.settings.subnets):
            vxlan = names.vxlan(project, zone)
            wanted = {("00:00:00:00:00:00", remote) for remote in remotes}
            for vm in self.world.vms.cache.values():
                address = get(vm, "status", "networking", "privateIPv4Address")
                host = self.world.hosts.get("", self._host_of(vm) or "")
                remote = (get(host, "metadata", "annotations") or {}).get(UNDERLAY_ANNOTATION)
                if vm["metadata"]["namespace"] != project or not address or not remote \
                        or ipaddress.IPv4Address(address) in here \
                        or get(vm, "status", "placement", "zone") != zone:
                    continue
                mac = names.mac(str(vm["metadata"]["uid"]))
                wanted.add((mac, remote))
                await linux.run("ip", "-n", netns, "neigh", "replace", address, "lladdr", mac,
                                "dev", names.bridge(zone), "nud", "permanent")
            shown = _json_list(await linux.run("bridge", "-j", "-n", netns, "fdb", "show", "dev",
                                               vxlan))
            have = {(e["mac"], e["dst"]) for e in shown if e.get("dst")}
            for mac, remote in sorted(wanted - have):
                await linux.run("bridge", "-n", netns, "fdb", "append", mac, "dev", vxlan, "dst",
                                remote, "self", "permanent")
            for mac, remote in sorted(have - wanted):
                await linux.run("bridge", "-n", netns, "fdb", "del", mac, "dev", vxlan, "dst",
                                remote, "self", check=False)

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

    async def _route_public(self, netns: str, public: Iterable[ipaddress.IPv4Address]) -> None:
        outside = names.uplink_of(netns)
        routes = await linux.run("ip", *self._at_host, "-j", "route", "show", "dev", outside,
                                 "proto", "static")
        have = {r["dst"] for r in _json_list(routes)}
        inner = await self._uplink_peer(outside)
        want = {str(a) for a in public}
        for address in sorted(want - have):
            await linux.run("ip", *self._at_host, "route", "replace", f"{address}/32", "via",
                            inner, "dev", outside, "proto", "static")
        for address in sorted(have - want):
            await linux.run("ip", *self._at_host, "route", "del", f"{address}/32", "dev",
                            outside, check=False)

    async def _uplink_peer(self, outside: str) -> str:
        for link in await linux.addresses(self.host_netns or None):
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
        groups = {key_of(g)[1]: g for g in self.world.security_groups.by_index("namespace", project)}
        return security.project_network(self.settings.subnets, vms, groups)

def _json_list(text: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = json.loads(text or "[]")
    return result
