"""Bridged networking with real VMs: project VPCs, public IPs, security groups (`--network bridged`).

Two hosts on this machine (the server's qemu-1 in se-sto-a and an agent's qemu-2 in se-sto-b)
run minimal guests; the test reaches them by SSH from inside their project's namespace (the
VPC's router, as an operator would), or at their public IP from the host, and probes from
inside the guests with busybox `nc`.  Every namespace, tap and route the hosts made is gone
when the VMs are (checked), and the test removes whatever a failure left.
"""

from __future__ import annotations

import ipaddress
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from evroc_compute.hosts.drivers.qemu import images
from evroc_compute.hosts.network import linux, names
from evroc_compute.runtime.settings import Settings
from tests.conftest import Kubectl, make_kubectl
from tests.qemu.conftest import SshKey, requires_qemu
from tests.qemu.test_cloud import (
    SSH_OPTIONS,
    disk,
    host_ready,
    manifest,
    qemu_pids,
    serve_qemu,
    start_agent,
    vm,
    vm_status,
    wait_for,
    wait_status,
)

pytestmark = [pytest.mark.slow, requires_qemu, pytest.mark.timeout(600),
              pytest.mark.skipif(linux.missing() is not None,
                                 reason=f"bridged networking cannot run: {linux.missing()}")]


# ---- helpers ----------------------------------------------------------------------------

def project(server_base: tuple[Any, Path], projects: list[str]) -> Kubectl:
    """kubectl in a fresh project (namespace) with a name no other run uses."""
    server, base = server_base
    name = f"net-{uuid.uuid4().hex[:8]}"
    projects.append(name)
    (base / name).mkdir()
    kubectl = make_kubectl(server, base / name)
    kubectl("create", "namespace", name)
    kubectl("config", "set-context", "--current", f"--namespace={name}")
    return kubectl


@pytest.fixture
def projects() -> Iterator[list[str]]:
    """The projects a test makes; their namespaces and uplinks are removed if anything is left."""
    made: list[str] = []
    yield made
    for name in made:
        subprocess.run(["ip", "link", "del", names.uplink(name)], capture_output=True)
        subprocess.run(["ip", "netns", "del", names.netns(name)], capture_output=True)
    if made and not linux.namespaces(names.NETNS_PREFIX):
        # What an agent stopped with its guests running leaves (they would be adopted).
        subprocess.run(["ip", "route", "del", "unreachable", Settings().public_ip_pool],
                       capture_output=True)


@pytest.fixture
def base(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    for pid in qemu_pids(tmp_path):
        os.kill(pid, 9)


def ssh_in(project_name: str, key: SshKey, address: str, command: str,
           timeout: float = 30, scope: str = "", user: str = "evroc-user"
           ) -> subprocess.CompletedProcess[str]:
    """ssh USER@ADDRESS from inside the project's namespace (the VPC's router)."""
    netns = names.netns(project_name, scope)
    return subprocess.run(["ip", "netns", "exec", netns, "ssh", *SSH_OPTIONS,
                           "-i", str(key.private), f"{user}@{address}", command],
                          capture_output=True, text=True, timeout=timeout)


def ssh_public(key: SshKey, address: str, command: str, timeout: float = 30,
               connect_timeout: int = 5) -> subprocess.CompletedProcess[str]:
    # ssh keeps the first value of an option: this ConnectTimeout wins over SSH_OPTIONS'.
    return subprocess.run(["ssh", "-o", f"ConnectTimeout={connect_timeout}", *SSH_OPTIONS,
                           "-i", str(key.private), f"evroc-user@{address}", command],
                          capture_output=True, text=True, timeout=timeout)


def ssh_in_until_ok(project_name: str, key: SshKey, address: str, command: str = "true",
                    scope: str = "", user: str = "evroc-user", timeout: float = 120) -> str:
    def attempt() -> tuple[str] | None:
        result = ssh_in(project_name, key, address, command, scope=scope, user=user,
                        timeout=max(30.0, timeout))
        return (result.stdout,) if result.returncode == 0 else None
    found: tuple[str] = wait_for(attempt, timeout, f"ssh {address} in {project_name}: {command}")
    return found[0]


METADATA = "http://169.254.169.254"


def probe(target: str, port: int = 22) -> str:
    """A guest command: the first bytes a TCP server at target:port sends ('' if none)."""
    return f"printf '' | timeout 4 nc -w 3 {target} {port} | head -c 4; true"


def private(kubectl: Kubectl, name: str) -> str:
    return str(wait_status(kubectl, name, "Running", 180)["networking"]["privateIPv4Address"])


def leftovers(project_names: list[str]) -> list[str]:
    """Namespaces, uplinks and taps of these projects that still exist."""
    found = [n for n in linux.namespaces(names.NETNS_PREFIX)
             if n in {names.netns(p) for p in project_names}]
    links = subprocess.run(["ip", "-j", "link"], capture_output=True, text=True).stdout
    uplinks = {names.uplink(p) for p in project_names}
    found += [link["ifname"] for link in json.loads(links) if link["ifname"] in uplinks]
    return found


# ---- the tests ---------------------------------------------------------------------------

def test_project_vpcs_route_between_zones_and_isolate_projects(
        base: Path, store: images.ImageStore, minimal_image: images.StoredImage,
        ssh_key: SshKey, projects: list[str]) -> None:
    server = serve_qemu(base, store, network="bridged")
    agent = start_agent(server, base, store, "qemu-2", "se-sto-b", network="bridged")
    try:
        first = project((server, base), projects)
        wait_for(lambda: host_ready(first, "qemu-2"), 30, "the second host")
        second = project((server, base), projects)
        image = minimal_image.name
        first("apply", "-f", "-", input=manifest(
            disk("a1-boot", image), vm("a1", "a1-boot", ssh_key, zone="se-sto-a"),
            disk("a2-boot", image), vm("a2", "a2-boot", ssh_key, zone="se-sto-a"),
            disk("b1-boot", image, zone="se-sto-b"), vm("b1", "b1-boot", ssh_key, zone="se-sto-b")))
        second("apply", "-f", "-", input=manifest(
            disk("x1-boot", image), vm("x1", "x1-boot", ssh_key, zone="se-sto-a")))
        a1, a2, b1 = (private(first, n) for n in ("a1", "a2", "b1"))
        x1 = private(second, "x1")
        assert a1.startswith("10.0.1.") and b1.startswith("10.0.2.")
        assert x1 == a1  # each project has the zone's whole subnet: the addresses overlap

        # The same address is a different VM in each project's network.
        assert ssh_in_until_ok(projects[0], ssh_key, a1, "hostname").strip() == "a1"
        assert ssh_in_until_ok(projects[1], ssh_key, x1, "hostname").strip() == "x1"
        assert ssh_in_until_ok(projects[0], ssh_key, b1, "hostname").strip() == "b1"
        shown = ssh_in_until_ok(projects[0], ssh_key, a2, "ip -4 addr show eth0; ip route")
        assert f"inet {a2}/24" in shown and "default via 10.0.1.1" in shown

        # Inside one project: TCP within a zone and across zones (the hosts' namespace routes).
        assert ssh_in_until_ok(projects[0], ssh_key, a1, probe(a2)) == "SSH-"
        assert ssh_in_until_ok(projects[0], ssh_key, a1, probe(b1)) == "SSH-"
        assert ssh_in_until_ok(projects[0], ssh_key, b1, probe(a1)) == "SSH-"
        # The other project reaches none of them, not even at the addresses it shares.
        assert ssh_in_until_ok(projects[1], ssh_key, x1, probe(b1)) == ""
        assert ssh_in_until_ok(projects[1], ssh_key, x1, probe(a2)) == ""
        # The metadata service answers each VM about itself, by source address, in its project.
        for name, kubectl, address in (("a1", first, a1), ("x1", second, x1), ("b1", first, b1)):
            uid = json.loads(kubectl("get", "vm", name, "-o", "json"))["metadata"]["uid"]
            owner = projects[0] if kubectl is first else projects[1]
            assert ssh_in_until_ok(owner, ssh_key, address, f"wget -q -O - {METADATA}/latest/"
                                   "meta-data/instance-id") == uid
        local = ssh_in_until_ok(projects[0], ssh_key, a1, f"wget -q -O - {METADATA}/openstack/"
                                "latest/meta_data.json")
        assert json.loads(local)["name"] == "a1"
        # A source that is no VM (here the project's router itself) is refused.
        stranger = subprocess.run(
            ["ip", "netns", "exec", names.netns(projects[0]), sys.executable, "-c",
             f"import urllib.request; urllib.request.urlopen('{METADATA}/latest/meta-data/')"],
            capture_output=True, text=True)
        assert "HTTP Error 403" in stranger.stderr

        # Nor does the host: it routes no private address into a project (no traffic is sent).
        for name in projects:
            route = subprocess.run(["ip", "route", "get", b1], capture_output=True, text=True)
            assert names.uplink(name) not in route.stdout

        # Deleting the VMs, or the whole project, leaves no namespace, uplink or tap behind.
        first("delete", "vm", "a1", "a2", "b1")
        second("delete", "namespace", projects[1], "--wait=false")
        wait_for(lambda: not qemu_pids(base), 60, "the guests to go")
        wait_for(lambda: not leftovers(projects), 20, "the projects' networks to be removed")
    finally:
        agent.send_signal(2)
        agent.wait(15)
        server.stop()


@pytest.mark.parametrize("source", ["metadata", "seed"])
def test_debian_cloud_init_reads_the_metadata_service_without_a_seed(
        base: Path, store: images.ImageStore, debian_image: images.StoredImage,
        ssh_key: SshKey, projects: list[str], source: str) -> None:
    """`--cloud-init-source metadata`: no seed disk; cloud-init's OpenStack datasource takes a
    DHCP lease, reads the metadata service and configures the guest from it (the `seed` run
    is the same guest from a NoCloud seed, for comparison)."""
    server = serve_qemu(base, store, network="bridged", extra=("--cloud-init-source", source))
    marker = f"from-user-data-{uuid.uuid4().hex}"
    # No `users`: the image's default user (debian) gets the datasource's public keys, i.e.
    # meta_data.json's `public_keys` when there is no seed.
    user_data = "\n".join(["#cloud-config", "write_files:", "  - path: /etc/evroc-proof",
                           f"    content: {marker}", "runcmd:",
                           "  - [sh, -c, 'hostname > /var/tmp/hostname-at-boot']"])
    try:
        kubectl = project((server, base), projects)
        started = time.monotonic()
        kubectl("apply", "-f", "-", input=manifest(
            disk("deb-boot", debian_image.name),
            vm("deb", "deb-boot", ssh_key, user_data=user_data)))
        address = str(wait_status(kubectl, "deb", "Running", 300)["networking"]
                      ["privateIPv4Address"])
        ssh_in_until_ok(projects[0], ssh_key, address, user="debian", timeout=180)
        print(f"\nDebian, bridged, cloud-init from the {source}: kubectl apply -> ssh true "
              f"{time.monotonic() - started:.1f} s")
        uid = json.loads(kubectl("get", "vm", "deb", "-o", "json"))["metadata"]["uid"]
        shown = ssh_in_until_ok(projects[0], ssh_key, address, "; ".join([
            "cloud-init status --wait >/dev/null", "cat /etc/evroc-proof; echo",
            "cat /var/tmp/hostname-at-boot", "cat /var/lib/cloud/data/instance-id",
            "cloud-init query platform", "ip -4 route show default",
            "sudo -n blkid -t LABEL=cidata -o device | grep . || echo no-cidata"]),
            user="debian", timeout=180).splitlines()
        assert shown[:4] == [marker, "deb", uid, "openstack" if source == "metadata" else "nocloud"]
        assert shown[4].startswith("default via 10.0.1.1 ")  # network_data.json's gateway
        assert (shown[5] == "no-cidata") == (source == "metadata"), shown
        qemu = (Path("/proc") / str(qemu_pids(base)[0]) / "cmdline").read_bytes().split(b"\0")
        assert (b"ide-cd,drive=seed,bus=ide.1" in qemu) == (source == "seed")
        assert (f"type=1,product=OpenStack Nova,uuid={uid}".encode() in qemu) == \
            (source == "metadata")

        kubectl("delete", "vm", "deb")
        wait_for(lambda: not qemu_pids(base), 60, "the guest to go")
        wait_for(lambda: not leftovers(projects), 20, "the project's network to be removed")
    finally:
        server.stop()


def public_ip(name: str) -> dict[str, Any]:
    return {"apiVersion": "networking.evroclabs.net/v1alpha1", "kind": "PublicIP",
            "metadata": {"name": name}, "spec": {}}


def security_group(name: str, *rules: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "networking.evroclabs.net/v1alpha1", "kind": "SecurityGroup",
            "metadata": {"name": name}, "spec": {"rules": list(rules)}}


def ssh_rule(remote: str) -> dict[str, Any]:
    return {"name": "ssh", "direction": "Ingress", "protocol": "TCP", "port": 22,
            "remote": {"address": remote}}


def with_network(obj: dict[str, Any], public: str | None, groups: list[str]) -> dict[str, Any]:
    networking: dict[str, Any] = {}
    if public:
        networking["publicIPv4Address"] = {"static": {"publicIPRef": public}}
    if groups:
        networking["securityGroups"] = {"securityGroupMemberships": [{"name": g} for g in groups]}
    obj["spec"]["networking"] = networking
    return obj


def test_public_ips_nat_and_security_groups(
        base: Path, store: images.ImageStore, minimal_image: images.StoredImage,
        ssh_key: SshKey, projects: list[str]) -> None:
    server = serve_qemu(base, store, network="bridged")
    try:
        kubectl = project((server, base), projects)
        image = minimal_image.name
        started = time.monotonic()
        kubectl("apply", "-f", "-", input=manifest(
            public_ip("web-ip"), security_group("web", ssh_rule("10.0.0.0/8")),
            disk("web-boot", image), with_network(vm("web", "web-boot", ssh_key), "web-ip", ["web"]),
            disk("db-boot", image), vm("db", "db-boot", ssh_key)))
        status = wait_status(kubectl, "web", "Running", 180)
        address = wait_for(lambda: vm_status(kubectl, "web")["networking"].get(
            "publicIPv4Address"), 30, "the public address")
        web, db = status["networking"]["privateIPv4Address"], private(kubectl, "db")
        assert address.startswith("198.51.100.")
        assert status["networking"]["securityGroups"] == {
            "securityGroupMemberships": [{"name": "web", "state": "Active"}]}
        assert vm_status(kubectl, "db")["networking"]["securityGroups"] == {
            "securityGroupMemberships": [{"name": "default", "state": "Active"}]}
        ssh_in_until_ok(projects[0], ssh_key, web)
        print(f"\nbridged: kubectl apply -> ssh true (in the VPC) {time.monotonic() - started:.1f} s")

        # The group allows SSH from the VPC only: the host, at the public IP, is refused.
        assert ssh_public(ssh_key, address, "true", timeout=15).returncode != 0
        # A rule change opens it within a second.
        changed = time.monotonic()  # kubectl's own time included
        kubectl("apply", "-f", "-", input=manifest(security_group("web", ssh_rule("0.0.0.0/0"))))
        wait_for(lambda: _port_open(address, 22), 5, "port 22 at the public IP")
        print(f"rule change -> port open {time.monotonic() - changed:.2f} s")
        # The host reports the new rules programmed: the group is Ready at generation 2.
        wait_for(lambda: _ready_reason(kubectl, "sg/web", 2) == "Programmed", 5,
                 "the group's new rules to be reported programmed")
        print(f"rule change -> group Ready (Programmed) {time.monotonic() - changed:.2f} s")
        group = json.loads(kubectl("get", "sg/web", "-o", "json"))
        assert group["status"]["appliesTo"] == [{"name": "web"}]
        assert ssh_public(ssh_key, address, "hostname").stdout.strip() == "web"
        assert vm_status(kubectl, "web")["networking"].get("sshEndpoint") == f"{address}:22"

        # Outbound: the guest with the public IP leaves as it; the other is masqueraded.
        uplink = _uplink_address(projects[0])
        seen = ListenOnce(uplink)
        ssh_in_until_ok(projects[0], ssh_key, web, f"echo hi | nc -w 3 {uplink} {seen.port}")
        assert seen.wait() == address
        seen = ListenOnce(uplink)
        ssh_in_until_ok(projects[0], ssh_key, db, f"echo hi | nc -w 3 {uplink} {seen.port}")
        assert seen.wait() == str(ipaddress.IPv4Address(uplink) + 1)  # the namespace's end
        # db has no public IP and is in the default group: the host cannot reach it at all,
        # and web reaches it inside the VPC (the default group allows the VPC).
        assert ssh_in_until_ok(projects[0], ssh_key, web, probe(db)) == "SSH-"

        # A live connection is cut when the rule that allowed it goes.
        live = subprocess.Popen(["ssh", *SSH_OPTIONS, "-i", str(ssh_key.private),
                                 f"evroc-user@{address}", "while true; do echo tick; sleep 0.2; done"],
                                stdout=subprocess.PIPE)
        assert live.stdout is not None
        assert live.stdout.readline().strip() == b"tick"
        cut = time.monotonic()
        kubectl("apply", "-f", "-", input=manifest(security_group("web", ssh_rule("10.0.0.0/8"))))
        wait_for(lambda: not _port_open(address, 22), 5, "port 22 closed again")
        print(f"rule removed -> new connections refused {time.monotonic() - cut:.2f} s")
        stalled = _stalls(live, 3.0)
        live.kill()
        live.wait()
        assert stalled, "the live SSH session kept flowing after its rule was removed"

        kubectl("delete", "vm", "web", "db")
        wait_for(lambda: not qemu_pids(base), 60, "the guests to go")
        wait_for(lambda: not leftovers(projects), 20, "the project's network to be removed")
        routes = subprocess.run(["ip", "route", "show", f"{address}/32"], capture_output=True,
                                text=True).stdout
        assert routes.strip() == ""
    finally:
        server.stop()


def _ready_reason(kubectl: Kubectl, what: str, generation: int) -> str | None:
    """The reason of the Ready condition of `what` once it observed `generation`."""
    conditions = json.loads(kubectl("get", what, "-o", "json")).get("status", {}).get(
        "conditions") or []
    return next((c["reason"] for c in conditions if c["type"] == "Ready"
                 and c["observedGeneration"] == generation), None)


def _port_open(address: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((address, port)) == 0


def _uplink_address(project_name: str) -> str:
    shown = json.loads(subprocess.run(["ip", "-j", "addr", "show", "dev", names.uplink(project_name)],
                                      capture_output=True, text=True, check=True).stdout)
    return str(next(a["local"] for a in shown[0]["addr_info"] if a["family"] == "inet"))


class ListenOnce:
    """A TCP listener on the host's uplink address: the source address of the first client."""

    def __init__(self, address: str) -> None:
        self.server = socket.create_server((address, 0))
        self.server.settimeout(30)
        self.port = self.server.getsockname()[1]
        self.peer: str | None = None
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        try:
            conn, peer = self.server.accept()
            conn.close()
            self.peer = str(peer[0])
        except OSError:
            pass

    def wait(self) -> str | None:
        self.thread.join(30)
        self.server.close()
        return self.peer


def _stalls(process: subprocess.Popen[bytes], seconds: float) -> bool:
    """Whether `process` printed nothing for `seconds` (after what was in flight at the cut)."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:  # drain what was in flight before the cut
        if select.select([fd], [], [], 0.1)[0] and not os.read(fd, 65536):
            return True  # closed
    readable, _, _ = select.select([fd], [], [], seconds)
    return not readable or not os.read(fd, 65536)



def test_a_restarted_host_adopts_its_networks_and_removes_what_nobody_owns(
        base: Path, store: images.ImageStore, minimal_image: images.StoredImage,
        ssh_key: SshKey, projects: list[str]) -> None:
    server = serve_qemu(base, store, network="bridged")
    kubectl = project((server, base), projects)
    started = time.monotonic()
    kubectl("apply", "-f", "-", input=manifest(
        public_ip("ip"), security_group("open", ssh_rule("0.0.0.0/0")), disk("boot", minimal_image.name),
        with_network(vm("steady", "boot", ssh_key), "ip", ["open"])))
    wait_status(kubectl, "steady", "Running", 180)
    address = wait_for(lambda: vm_status(kubectl, "steady")["networking"].get(
        "publicIPv4Address"), 30, "the public address")
    # Short connection timeouts: a SYN sent before the guest's network is up is not answered
    # (its retransmission would wait seconds), unlike user-mode's loopback forward.
    wait_for(lambda: ssh_public(ssh_key, address, "echo before > /tmp/mark",
                                connect_timeout=1).returncode == 0, 120, "ssh at the public IP")
    print(f"\nbridged, one VM: kubectl apply -> ssh at its public IP {time.monotonic() - started:.1f} s")
    [pid] = qemu_pids(server.data_dir)
    server.kill()
    # What a crashed agent may leave: a namespace no VM uses.
    stale = f"net-{uuid.uuid4().hex[:8]}"
    projects.append(stale)
    subprocess.run(["ip", "netns", "add", names.netns(stale)], check=True)
    assert ssh_public(ssh_key, address, "cat /tmp/mark").stdout.strip() == "before"  # no agent
    server = serve_qemu(base, store, port=int(server.url.rsplit(":", 1)[1]), network="bridged")
    try:
        wait_for(lambda: not leftovers([stale]), 20, "the stale namespace to be removed")
        assert ssh_public(ssh_key, address, "cat /tmp/mark").stdout.strip() == "before"
        assert qemu_pids(server.data_dir) == [pid]  # adopted, not restarted
        # The adopted network still follows the API: closing the group closes the port.
        kubectl("apply", "-f", "-", input=manifest(security_group("open", ssh_rule("10.0.0.0/8"))))
        wait_for(lambda: not _port_open(address, 22), 5, "port 22 closed after the restart")
        kubectl("delete", "vm", "steady")
        wait_for(lambda: not qemu_pids(base), 60, "the guest to go")
        wait_for(lambda: not leftovers(projects), 20, "the project's network to be removed")
    finally:
        server.stop()


@pytest.fixture
def two_hosts() -> Iterator[tuple[str, str]]:
    """Two namespaces standing for two hosts' networks, joined by an underlay link."""
    tag = uuid.uuid4().hex[:6]
    hosts = (f"evh{tag}a", f"evh{tag}b")
    for host in hosts:
        subprocess.run(["ip", "netns", "add", host], check=True)
        subprocess.run(["ip", "-n", host, "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "link", "add", "underlay", "netns", hosts[0], "type", "veth", "peer",
                    "name", "underlay", "netns", hosts[1]], check=True)
    for index, host in enumerate(hosts):
        subprocess.run(["ip", "-n", host, "addr", "add", f"192.168.77.{index + 1}/24", "dev",
                        "underlay"], check=True)
        subprocess.run(["ip", "-n", host, "link", "set", "underlay", "up"], check=True)
    yield hosts
    for host in hosts:
        for netns in linux.namespaces(names.NETNS_PREFIX):
            if names.in_scope(netns, host):
                subprocess.run(["ip", "netns", "del", netns], capture_output=True)
        subprocess.run(["ip", "netns", "del", host], capture_output=True)


def underlay_bytes(host: str) -> int:
    shown = json.loads(subprocess.run(["ip", "-n", host, "-j", "-s", "link", "show", "underlay"],
                                      capture_output=True, text=True, check=True).stdout)
    return int(shown[0]["stats64"]["tx"]["bytes"])


def test_a_project_spans_two_hosts_over_vxlan(
        base: Path, store: images.ImageStore, minimal_image: images.StoredImage,
        ssh_key: SshKey, projects: list[str], two_hosts: tuple[str, str]) -> None:
    host_a, host_b = two_hosts
    server = serve_qemu(base, store, network="bridged", extra=(
        "--host-netns", host_a, "--underlay-address", "192.168.77.1"))
    agent = start_agent(server, base, store, "qemu-2", "se-sto-b", network="bridged", extra=(
        "--host-netns", host_b, "--underlay-address", "192.168.77.2"))
    try:
        kubectl = project((server, base), projects)
        wait_for(lambda: host_ready(kubectl, "qemu-2"), 30, "the second host")
        image = minimal_image.name
        kubectl("apply", "-f", "-", input=manifest(
            disk("c1-boot", image), vm("c1", "c1-boot", ssh_key, zone="se-sto-a"),
            disk("c2-boot", image, zone="se-sto-b"), vm("c2", "c2-boot", ssh_key, zone="se-sto-b")))
        c1, c2 = private(kubectl, "c1"), private(kubectl, "c2")
        name = projects[0]
        assert ssh_in_until_ok(name, ssh_key, c1, "hostname", scope=host_a).strip() == "c1"
        assert ssh_in_until_ok(name, ssh_key, c2, "hostname", scope=host_b).strip() == "c2"
        # Each host has its own namespace for the project; the subnets meet over the underlay.
        before = underlay_bytes(host_a)
        assert ssh_in_until_ok(name, ssh_key, c1, probe(c2), scope=host_a) == "SSH-"
        assert ssh_in_until_ok(name, ssh_key, c2, probe(c1), scope=host_b) == "SSH-"
        assert underlay_bytes(host_a) > before
        kubectl("delete", "vm", "c1", "c2")
        wait_for(lambda: not qemu_pids(base), 60, "the guests to go")
        wait_for(lambda: not [n for n in linux.namespaces(names.NETNS_PREFIX)
                              if names.in_scope(n, host_a) or names.in_scope(n, host_b)], 20,
                 "the project's namespaces on both hosts to be removed")
    finally:
        agent.send_signal(2)
        agent.wait(15)
        server.stop()
