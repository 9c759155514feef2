"""Real VMs through the API: `serve --driver qemu` driven by the real kubectl, guests reached by SSH.

Each test starts the server as its own process on a fresh data directory (the image store is
the shared, cached one) and checks what a user sees: VM status, the SSH endpoint, the guest
itself over SSH, and that nothing is left behind once the VM and its disks are deleted.
The time from `kubectl apply` to a successful SSH login is printed (`pytest -s` shows it).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from evroc_compute.hosts.drivers.qemu import images
from tests.conftest import ROOT, Kubectl, Server, start_server
from tests.e2e.conftest import kubectl_in_new_namespace
from tests.e2e.test_host_identity import host_kubeconfig
from tests.qemu.conftest import SshKey, requires_qemu

pytestmark = [pytest.mark.slow, requires_qemu, pytest.mark.timeout(400)]

GROUP = "compute.evroclabs.net/v1alpha1"
FLEET = {"heartbeat": {"interval": 1, "timeout": 5}, "backoff": {"base": 1, "max": 4}}
SSH_OPTIONS = ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
               "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
               "-o", "ConnectTimeout=5", "-o", "IdentitiesOnly=yes"]


# ---- helpers ----------------------------------------------------------------------------

def serve_qemu(base: Path, store: images.ImageStore, port: int | None = None,
               network: str = "user", extra: tuple[str, ...] = ()) -> Server:
    fleet = base / "fleet.yaml"
    fleet.write_text(yaml.safe_dump(FLEET))
    return start_server(base / "data", "--driver", "qemu", "--host-name", "qemu-1",
                        "--zone", "se-sto-a", "--image-dir", str(store.root), "--accel", "tcg",
                        "--stop-timeout", "10", "--fleet", str(fleet), "--network", network,
                        *extra, port=port)


def start_agent(server: Server, base: Path, store: images.ImageStore, name: str, zone: str,
                network: str = "user", extra: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
    """A second host: `agent --host-name NAME` on this machine, its files under base/NAME."""
    agent_dir = base / name
    agent_dir.mkdir()
    kubeconfig = host_kubeconfig(server, base, name)  # the host's own credential
    return subprocess.Popen(
        [sys.executable, "-m", "evroc_compute.cli", "agent", "--kubeconfig", str(kubeconfig),
         "--host-name", name, "--zone", zone, "--data-dir", str(agent_dir),
         "--image-dir", str(store.root), "--accel", "tcg", "--fleet", str(base / "fleet.yaml"),
         "--network", network, *extra],
        stdout=open(base / f"{name}.log", "ab"), stderr=subprocess.STDOUT, cwd=ROOT)


def host_ready(kubectl: Kubectl, name: str) -> bool:
    found = kubectl.run("get", f"host/{name}", "-o", "json", check=False)
    conditions = (json.loads(found.stdout or "{}").get("status") or {}).get("conditions")
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions or [])


def qemu_pids(data_dir: Path) -> list[int]:
    """QEMU processes whose files live under `data_dir` (zombies excluded)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            state = (proc / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if b"qemu-system" in cmdline and str(data_dir).encode() in cmdline and state != "Z":
            found.append(int(proc.name))
    return found


@pytest.fixture
def base(tmp_path: Path) -> Iterator[Path]:
    """The test's directory; every QEMU started under it is killed when the test ends."""
    yield tmp_path
    for pid in qemu_pids(tmp_path):
        os.kill(pid, signal.SIGKILL)


def manifest(*objects: dict[str, Any]) -> str:
    return yaml.safe_dump_all(objects)


def disk(name: str, image: str | None = None, zone: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if image:
        spec["diskImage"] = {"diskImageRef": {"name": image}}
    else:
        spec["diskSize"] = {"amount": 1, "unit": "GB"}
    if zone:
        spec["placement"] = {"zone": zone}
    return {"apiVersion": GROUP, "kind": "Disk", "metadata": {"name": name}, "spec": spec}


def vm(name: str, boot: str, key: SshKey, *, user_data: str | None = None,
       zone: str | None = None, size: str = "test.xs") -> dict[str, Any]:
    os_settings: dict[str, Any] = {"ssh": {"authorizedKeys": [{"value": key.public}]}}
    if user_data is not None:
        os_settings["cloudInitUserData"] = user_data
    spec: dict[str, Any] = {"running": True, "vmVirtualResourcesRef": {"vmVirtualResourcesRefName": size},
                            "diskRefs": [{"name": boot, "bootFrom": True}], "osSettings": os_settings}
    if zone:
        spec["placement"] = {"zone": zone}
    return {"apiVersion": GROUP, "kind": "VirtualMachine", "metadata": {"name": name}, "spec": spec}


def get(kubectl: Kubectl, what: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(kubectl("get", what, "-o", "json"))
    return result


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; last: {last!r}")


def vm_status(kubectl: Kubectl, name: str) -> dict[str, Any]:
    return get(kubectl, f"vm/{name}").get("status") or {}


def wait_status(kubectl: Kubectl, name: str, wanted: str, timeout: float = 60) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        status = vm_status(kubectl, name)
        return status if status.get("virtualMachineStatus") == wanted else None
    try:
        result: dict[str, Any] = wait_for(reached, timeout, f"VM {name} {wanted}")
    except AssertionError:
        raise AssertionError(f"VM {name} not {wanted}: {vm_status(kubectl, name)}") from None
    return result


def endpoint(status: dict[str, Any]) -> tuple[str, int]:
    host, port = status["networking"]["sshEndpoint"].rsplit(":", 1)
    return host, int(port)


def ssh(key: SshKey, where: tuple[str, int], command: str,
        timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ssh", *SSH_OPTIONS, "-i", str(key.private), "-p", str(where[1]),
                           f"evroc-user@{where[0]}", command],
                          capture_output=True, text=True, timeout=timeout)


def ssh_until_ok(key: SshKey, where: tuple[str, int], command: str = "true",
                 timeout: float = 120) -> str:
    def attempt() -> tuple[str] | None:  # a tuple: empty output is a success too
        result = ssh(key, where, command)
        return (result.stdout,) if result.returncode == 0 else None
    output: tuple[str] = wait_for(attempt, timeout, f"ssh {where} {command}")
    return output[0]


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def console(server: Server, namespace: str, name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "evroc_compute.cli", "console", name,
                           "-n", namespace, "--data-dir", str(server.data_dir)],
                          capture_output=True, text=True, timeout=30, cwd=ROOT)


def namespace_of(kubectl: Kubectl) -> str:
    return kubectl("config", "view", "--minify", "-o", "jsonpath={..namespace}").strip()


# ---- the tests ---------------------------------------------------------------------------

def test_a_vm_from_apply_to_ssh_hotswap_stop_start_and_delete(
        base: Path, store: images.ImageStore, minimal_image: images.StoredImage,
        ssh_key: SshKey) -> None:
    server = serve_qemu(base, store)
    try:
        kubectl = kubectl_in_new_namespace(server, base)
        namespace = namespace_of(kubectl)
        image = minimal_image.name
        assert image in kubectl("get", "diskimages", "-o", "name")  # registered by the host

        started = time.monotonic()
        kubectl("apply", "-f", "-", input=manifest(disk("boot", image), vm("web", "boot", ssh_key)))
        status = wait_status(kubectl, "web", "Running")
        where = endpoint(status)
        assert where[0] == "127.0.0.1"
        ssh_until_ok(ssh_key, where)
        print(f"\nminimal image: kubectl apply -> ssh true {time.monotonic() - started:.1f} s")

        # The guest is the VM: its name, its private address, its boot disk.
        facts = ssh_until_ok(ssh_key, where, "hostname; ip -4 addr show eth0; cat /sys/block/vda/serial")
        assert facts.splitlines()[0] == "web"
        assert f"inet {status['networking']['privateIPv4Address']}/24" in facts
        assert status["attachedDisks"] == [{"name": "boot", "device": "/dev/vda"}]

        # A hot-swapped disk appears in the guest under its serial.
        kubectl("apply", "-f", "-", input=manifest(disk("data"), {
            "apiVersion": GROUP, "kind": "HotswapDiskAttachment", "metadata": {"name": "data-web"},
            "spec": {"vmRef": "web", "diskRef": "data"}}))
        plugged = wait_for(lambda: [a for a in vm_status(kubectl, "web").get(
            "hotswapDiskAttachments") or [] if a.get("attached")], 60, "the hot-plug")[0]
        serial = plugged["serial"]
        assert plugged["device"].endswith(serial)
        wait_for(lambda: serial in ssh(key=ssh_key, where=where, command="ls /dev/disk/by-id").stdout,
                 20, "the disk in the guest")

        # Stop: ACPI power-off, no QEMU left; start: SSH again, the disk plugged in again.
        kubectl("patch", "vm", "web", "--type", "merge", "-p", '{"spec":{"running":false}}')
        stopped = wait_status(kubectl, "web", "Stopped")
        assert "sshEndpoint" not in (stopped.get("networking") or {})
        assert qemu_pids(server.data_dir) == []
        assert not listening(where[1])
        kubectl("patch", "vm", "web", "--type", "merge", "-p", '{"spec":{"running":true}}')
        where = endpoint(wait_status(kubectl, "web", "Running"))
        wait_for(lambda: serial in ssh(ssh_key, where, "ls /dev/disk/by-id").stdout, 60,
                 "the disk in the guest after a restart")

        shown = console(server, namespace, "web")
        assert shown.returncode == 0 and "Linux version" in shown.stdout

        # Delete everything: no process, file or port is left.
        kubectl("delete", "hotswapdiskattachment", "data-web", "--wait=false")
        kubectl("delete", "vm", "web")
        kubectl("delete", "disk", "boot", "data")
        wait_for(lambda: "No resources" in kubectl.run("get", "vm,disk,vmi").stderr, 60,
                 "everything to be deleted")
        assert qemu_pids(server.data_dir) == []
        wait_for(lambda: not list((server.data_dir / "qemu").glob("*/*/*")), 10,
                 "the VM's and the disks' files to be removed")
        assert not listening(where[1])
        assert console(server, namespace, "web").returncode == 1
    finally:
        server.stop()


def test_qemu_exiting_is_a_crash_loop_then_the_guest_runs_again(
        base: Path, store: images.ImageStore, minimal_image: images.StoredImage,
        ssh_key: SshKey) -> None:
    server = serve_qemu(base, store)
    try:
        kubectl = kubectl_in_new_namespace(server, base)
        kubectl("apply", "-f", "-", input=manifest(disk("boot", minimal_image.name),
                                                   vm("crashy", "boot", ssh_key)))
        wait_status(kubectl, "crashy", "Running")
        [pid] = qemu_pids(server.data_dir)
        os.kill(pid, signal.SIGKILL)
        crashed = wait_status(kubectl, "crashy", "CrashLoopBackOff", timeout=20)
        guest = next(c for c in crashed["conditions"] if c["type"] == "GuestHealthy")
        assert guest["status"] == "False" and "QEMU exited unexpectedly" in guest["message"]
        ssh_until_ok(ssh_key, endpoint(wait_status(kubectl, "crashy", "Running")))
        assert qemu_pids(server.data_dir) not in ([], [pid])
        vmi = get(kubectl, "vmi/crashy")
        assert vmi["status"]["bootCount"] == 2 and "crashCount" not in vmi["status"]
    finally:
        server.stop()


def test_an_image_that_cannot_be_fetched_backs_off_and_says_why(
        base: Path, store: images.ImageStore, minimal_image: images.StoredImage,
        ssh_key: SshKey) -> None:
    server = serve_qemu(base, store)
    try:
        kubectl = kubectl_in_new_namespace(server, base)
        missing = base / "nowhere" / "image.qcow2"
        kubectl("apply", "-f", "-", input=manifest({
            "apiVersion": GROUP, "kind": "DiskImage", "metadata": {"name": "gone"},
            "spec": {"defaultDiskSize": {"amount": 1, "unit": "GB"},
                     "source": {"url": str(missing)}}}))
        kubectl("apply", "-f", "-", input=manifest(disk("boot", "gone"),
                                                   vm("pull", "boot", ssh_key)))
        failed = wait_status(kubectl, "pull", "ErrImagePull")
        pulled = next(c for c in failed["conditions"] if c["type"] == "ImagePulled")
        assert str(missing) in pulled["message"]
        backing_off = wait_status(kubectl, "pull", "ImagePullBackOff", timeout=20)
        assert "next" in next(c for c in backing_off["conditions"]
                          if c["type"] == "ImagePulled")["message"]
        assert qemu_pids(server.data_dir) == []

        # A DiskImage the host's store lacks, without a source, says how to import it.
        kubectl("apply", "-f", "-", input=manifest(disk("boot2", "ubuntu.24-04.1"),
                                                   vm("nostore", "boot2", ssh_key)))
        message = next(c for c in wait_status(kubectl, "nostore", "ErrImagePull")["conditions"]
                   if c["type"] == "ImagePulled")["message"]
        assert "evroc-compute images import ubuntu.24-04.1" in message
    finally:
        server.stop()


def test_a_restarted_server_adopts_its_running_guests(
        base: Path, store: images.ImageStore, minimal_image: images.StoredImage,
        ssh_key: SshKey) -> None:
    server = serve_qemu(base, store)
    kubectl = kubectl_in_new_namespace(server, base)
    kubectl("apply", "-f", "-", input=manifest(disk("boot", minimal_image.name),
                                               vm("steady", "boot", ssh_key)))
    where = endpoint(wait_status(kubectl, "steady", "Running"))
    ssh_until_ok(ssh_key, where, "echo before > /tmp/mark")
    [pid] = qemu_pids(server.data_dir)
    server.kill()
    assert qemu_pids(server.data_dir) == [pid]  # the guest outlives its agent
    server = serve_qemu(base, store, port=int(server.url.rsplit(":", 1)[1]))
    try:
        status = wait_status(kubectl, "steady", "Running")
        assert endpoint(status) == where
        assert ssh_until_ok(ssh_key, where, "cat /tmp/mark").strip() == "before"
        assert qemu_pids(server.data_dir) == [pid]  # adopted, not restarted
        assert get(kubectl, "vmi/steady")["status"]["bootCount"] == 1
    finally:
        server.stop()


def test_a_separate_agent_is_a_second_host(
        base: Path, store: images.ImageStore, minimal_image: images.StoredImage,
        ssh_key: SshKey) -> None:
    server = serve_qemu(base, store)
    agent_dir = base / "qemu-2"
    agent = start_agent(server, base, store, "qemu-2", "se-sto-b")
    try:
        kubectl = kubectl_in_new_namespace(server, base)
        wait_for(lambda: host_ready(kubectl, "qemu-2"), 30,
                 "the agent's host to register and be Ready")
        kubectl("apply", "-f", "-", input=manifest(disk("boot", minimal_image.name),
                                                   vm("remote", "boot", ssh_key, zone="se-sto-b")))
        status = wait_status(kubectl, "remote", "Running")
        assert get(kubectl, "vmi/remote")["spec"]["host"] == "qemu-2"
        assert status["networking"]["privateIPv4Address"].startswith("10.0.2.")
        assert ssh_until_ok(ssh_key, endpoint(status), "hostname").strip() == "remote"
        assert qemu_pids(agent_dir) and not qemu_pids(server.data_dir)
        kubectl("delete", "vm", "remote")
        wait_for(lambda: not qemu_pids(agent_dir), 30, "the remote guest to go")
    finally:
        agent.send_signal(signal.SIGINT)
        agent.wait(15)
        server.stop()


def test_debian_runs_real_cloud_init_user_data(
        base: Path, store: images.ImageStore, debian_image: images.StoredImage,
        ssh_key: SshKey) -> None:
    server = serve_qemu(base, store)
    user_data = "\n".join([
        "#cloud-config",
        "users:",
        "  - name: evroc-user",
        "    sudo: ALL=(ALL) NOPASSWD:ALL",
        "    shell: /bin/bash",
        f"    ssh_authorized_keys: ['{ssh_key.public}']",
        "write_files:",
        "  - path: /etc/evroc-proof",
        "    content: written by cloud-init from the VM's user data",
        "runcmd:",
        "  - [sh, -c, 'hostname > /var/tmp/hostname-at-boot']",
    ])
    try:
        kubectl = kubectl_in_new_namespace(server, base)
        started = time.monotonic()
        kubectl("apply", "-f", "-", input=manifest(
            disk("boot", debian_image.name), vm("deb", "boot", ssh_key, user_data=user_data)))
        where = endpoint(wait_status(kubectl, "deb", "Running", timeout=240))
        ssh_until_ok(ssh_key, where, timeout=120)
        print(f"\nDebian image: kubectl apply -> ssh true {time.monotonic() - started:.1f} s")
        proof = ssh_until_ok(ssh_key, where, "cloud-init status --wait >/dev/null; "
                                             "cat /etc/evroc-proof; echo; cat /var/tmp/hostname-at-boot",
                             timeout=180)
        assert proof.splitlines() == ["written by cloud-init from the VM's user data", "deb"]
        kubectl("delete", "vm", "deb")
        kubectl("delete", "disk", "boot")
        wait_for(lambda: not qemu_pids(server.data_dir), 60, "the guest to go")
    finally:
        server.stop()
