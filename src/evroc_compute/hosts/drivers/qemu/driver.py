"""The QEMU driver: the instances bound to one real host run as QEMU virtual machines.

The host agent (hosts/agent.py) runs it like any driver.  Everything the driver reports is read
back from what exists (the VM's work directory, the QEMU process and its monitor), never only
remembered, so an agent that restarts adopts the guests it finds running instead of killing
them.  Per instance:

- its boot image comes from the host's image store, imported from the DiskImage's
  `spec.source` when the store lacks it; a failure is ErrImagePull, then ImagePullBackOff;
- its disks are qcow2 files, `disks/<namespace>/<name>-<uid>.qcow2`, overlays of their image,
  created at first boot, kept when the VM goes and removed when the Disk is deleted;
- its NoCloud seed carries the VM's uid, name, SSH keys or user data, and private address;
  or, with `cloud_init_source="metadata"` (bridged only), there is no seed: the firmware says
  "OpenStack Nova" and cloud-init takes the same from the project network's DHCP and
  metadata service;
- its NIC is on its project's network (hosts/network, `network="bridged"`: a tap the agent
  opens and QEMU inherits) or on QEMU's user-mode network with SSH forwarded from loopback;
- Starting lasts until the guest's SSH server answers (on the forwarded loopback port, the
  VM's `sshEndpoint`, or at its private address inside its project's network); QEMU
  exiting without being asked to is a crash: Failed, then a
  back-off before the next start (CrashLoopBackOff);
- a guest that powers itself off is started again, since the VM still says `running`;
- hot-swapped disks are plugged on the virtio-scsi bus with the attachment's serial.

Directory layout under the agent's data directory: `vms/<namespace>/<name>/` (QEMU's pidfile,
monitor socket, serial console log, seed ISO) and `disks/<namespace>/`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from evroc_compute.api.catalog import DISK_IMAGE, IMAGE_STORE_LABEL
from evroc_compute.api.compute import size_in_bytes
from evroc_compute.api.infra import HOST
from evroc_compute.api.meta import parse_time
from evroc_compute.client.base import Client, ClientError
from evroc_compute.hosts.driver import DriverError, MigrationUnsupported
from evroc_compute.hosts.drivers.qemu import disks, images, seed
from evroc_compute.hosts.drivers.qemu.command_line import GUEST_SSH_PORT
from evroc_compute.hosts.drivers.qemu.errors import ImageNotFoundError, QemuDriverError
from evroc_compute.hosts.drivers.qemu.machine import QemuMachine, RunState
from evroc_compute.hosts.drivers.qemu.spec import DiskAttachment, MachineSpec
from evroc_compute.hosts.fleet import HostSpec
from evroc_compute.hosts.lifecycle import HotswapWant, Observation, Pending
from evroc_compute.hosts.network import names
from evroc_compute.hosts.network.linux import NetworkError
from evroc_compute.hosts.network.plane import UNDERLAY_ANNOTATION, NetworkPlane
from evroc_compute.runtime.controller import Key
from evroc_compute.runtime.settings import Settings
from evroc_compute.runtime.world import World, condition, get, key_of

log = logging.getLogger(__name__)

SSH_PROBE_INTERVAL = 0.5  # seconds between looks at a booting guest's SSH port
WATCH_INTERVAL = 2.0  # seconds between looks at a running guest (exits, pauses)
BOOT_GRACE = 300.0  # a guest whose SSH server never answers is called Running after this
BY_ID = "/dev/disk/by-id/scsi-0QEMU_QEMU_HARDDISK_"  # where a hot-plugged disk appears
_LOG_TAIL_LINES = 5
# The SMBIOS product cloud-init's OpenStack datasource (and ds-identify) recognizes.
OPENSTACK_PRODUCT = "OpenStack Nova"


@dataclass(frozen=True, kw_only=True)
class QemuHostConfig:
    """One real host: its name and zone, where its files live, how it runs guests."""

    name: str
    zone: str
    data_dir: Path  # vms/ and disks/
    image_dir: Path  # the image store
    accel: Literal["tcg", "kvm"]
    cpu_overcommit: float = 4.0  # vCPUs offered per core
    memory_overcommit: float = 1.0  # guest memory offered per byte of RAM
    stop_timeout: float = 30.0  # seconds a guest gets to power off before QEMU quits
    # bridged: project networks with taps, NAT, security groups (root); user: QEMU's own.
    network: Literal["bridged", "user"] = "user"
    # Bridged only: the namespace standing for this host's own network ("": the machine's),
    # and this host's address on the underlay VXLAN overlays use between hosts ("": none).
    host_netns: str = ""
    underlay: str = ""
    # Where cloud-init finds the VM's identity, keys, user data and network: a NoCloud seed
    # ISO, or (bridged only) the project network's metadata service, as OpenStack's.
    cloud_init_source: Literal["seed", "metadata"] = "seed"

    def __post_init__(self) -> None:
        if self.cloud_init_source == "metadata" and self.network != "bridged":
            raise ValueError("--cloud-init-source metadata needs bridged networking: the "
                             "metadata service lives in the project networks, and user-mode "
                             "networking has none")

    def host_spec(self) -> HostSpec:
        """The Host this machine offers: its cores and memory, times the over-commit."""
        cores = os.cpu_count() or 1
        return HostSpec(name=self.name, zone=self.zone, driver="qemu",
                        vcpu=max(1, int(cores * self.cpu_overcommit)),
                        memory_gb=max(1, int(_memory_bytes() * self.memory_overcommit / 10**9)))


def _memory_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def detect_accel() -> Literal["tcg", "kvm"]:
    """KVM if it runs a vCPU here, TCG otherwise (e.g. /dev/kvm present but broken)."""
    binary = shutil.which("qemu-system-x86_64")
    if binary is None or not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    # A broken KVM aborts while resetting the vCPU, before the guest runs (-S).
    probe = subprocess.Popen([binary, "-accel", "kvm", "-cpu", "host", "-machine", "pc",
                              "-m", "64", "-nodefaults", "-display", "none", "-S"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        probe.wait(timeout=3.0)
        return "tcg"
    except subprocess.TimeoutExpired:
        probe.kill()
        probe.wait()
        return "kvm"


async def register_host(client: Client, config: QemuHostConfig) -> None:
    """Create this host's Host object, and a DiskImage for each image in its store.

    Existing objects are left alone: an operator may have edited them.  With an overlay, the
    Host carries this host's underlay address (an annotation) for the other hosts.
    """
    store = images.ImageStore(config.image_dir)
    host = config.host_spec().to_object()
    if config.network == "bridged" and config.underlay:
        host["metadata"].setdefault("annotations", {})[UNDERLAY_ANNOTATION] = config.underlay
    objects = [(HOST, host)]
    for name in store.names():
        size = (await disks.disk_info(store.get(name).disk)).virtual_size
        objects.append((DISK_IMAGE, {
            "apiVersion": DISK_IMAGE.api_version, "kind": "DiskImage",
            "metadata": {"name": name, "labels": {IMAGE_STORE_LABEL: config.name}},
            "spec": {"displayName": f"{name} (from the image store of {config.name})",
                     "defaultDiskSize": {"amount": max(1, -(-size // 10**9)), "unit": "GB"}}}))
    for kind, obj in objects:
        try:
            await client.create(kind, obj)
        except ClientError as problem:
            if problem.code != 409:
                raise


class QemuDriver:
    """The driver of one QEMU host: each instance bound to it is a QemuMachine in its work dir."""

    def __init__(self, world: World, settings: Settings, config: QemuHostConfig, *,
                 wall: Callable[[], float] = time.time) -> None:
        self.world, self.settings, self.config, self.wall = world, settings, config, wall
        self.store = images.ImageStore(config.image_dir)
        self.vm_dir = config.data_dir.resolve() / "vms"
        self.disk_dir = config.data_dir.resolve() / "disks"
        self._machines: dict[Key, QemuMachine] = {}
        self._sweep = asyncio.Event()
        self.network = NetworkPlane(world, settings, config.name, config.zone, _user_data,
                                    host_netns=config.host_netns, underlay=config.underlay) \
            if config.network == "bridged" else None
        world.disks.add_handler(self._on_disk)

    def serves(self, host: dict[str, Any]) -> bool:
        return bool(host["metadata"]["name"] == self.config.name)

    def _on_disk(self, event: str, disk: dict[str, Any]) -> None:
        if event == "DELETED":
            self._sweep.set()

    async def run(self) -> None:
        self._sweep.set()
        async with asyncio.TaskGroup() as group:
            group.create_task(self._sweeper())
            if self.network is not None:
                group.create_task(self.network.run())

    def security_groups(self, host: str) -> dict[str, dict[str, int]]:
        # User-mode networking enforces no group: it reports none.
        return self.network.programmed if self.network is not None else {}

    def _machine(self, instance: dict[str, Any]) -> QemuMachine:
        key = key_of(instance)
        machine = self._machines.get(key)
        if machine is None:
            machine = self._machines[key] = QemuMachine(self.vm_dir / key[0] / key[1])
        return machine

    # ---- the Driver contract ----------------------------------------------------------

    async def observe(self, instance: dict[str, Any]) -> Observation:
        machine = self._machine(instance)
        seen = await machine.observe()
        endpoint = self._endpoint(instance, machine)
        if seen.state is RunState.CRASHED:
            return Observation("crashed", "QEMU exited unexpectedly: "
                               + (seen.failure or _log_tail(machine)))
        if seen.state is RunState.STARTING:
            return Observation("booting", wait=SSH_PROBE_INTERVAL, endpoint=endpoint)
        if seen.state is RunState.STOPPING:
            return Observation("stopping", wait=SSH_PROBE_INTERVAL, endpoint=endpoint)
        if seen.state is not RunState.RUNNING:
            return Observation("off")
        plugged = {serial: BY_ID + serial for serial in await machine.hotplugged_serials()}
        if seen.qemu_status == "paused":
            return Observation("paused", "QEMU paused the guest (a disk write failed or an "
                               "operator stopped it); it resumes with `cont` on its monitor",
                               WATCH_INTERVAL, endpoint, plugged)
        status = instance.get("status") or {}
        if status.get("phase") in ("Running", "Paused"):
            return Observation("up", "", WATCH_INTERVAL, endpoint, plugged)
        where = await self._ssh_answers(instance, machine)
        if where:
            return Observation("up", f"its SSH server answers on {where}", WATCH_INTERVAL,
                               endpoint, plugged)
        since = parse_time(status.get("phaseSince"))
        if status.get("phase") == "Starting" and since is not None and \
                self.wall() - since >= BOOT_GRACE:
            return Observation("up", f"its SSH server has not answered in {BOOT_GRACE:g} s",
                               WATCH_INTERVAL, endpoint, plugged)
        return Observation("booting", f"QEMU ({self.config.accel.upper()}) runs the guest; "
                           "waiting for its SSH server", SSH_PROBE_INTERVAL, endpoint, plugged)

    def _endpoint(self, instance: dict[str, Any], machine: QemuMachine) -> str | None:
        """Where SSH reaches the guest from the host: a loopback port, or its public IP."""
        if self.network is None:
            return f"127.0.0.1:{machine.ssh_port}" if machine.ssh_port else None
        public = get(self.world.vms.get(*key_of(instance)), "status", "networking",
                     "publicIPv4Address")
        return f"{public}:{GUEST_SSH_PORT}" if public else None

    async def _ssh_answers(self, instance: dict[str, Any], machine: QemuMachine) -> str | None:
        """Where the guest's SSH server greeted, if it did."""
        if self.network is None:
            port = machine.ssh_port
            return f"127.0.0.1:{port}" if await _ssh_answers(port) else None
        address = get(self.world.vms.get(*key_of(instance)), "status", "networking",
                      "privateIPv4Address")
        if address and await self.network.ssh_answers(instance["metadata"]["namespace"], address):
            return f"{address}:{GUEST_SSH_PORT} in the project's network"
        return None

    async def pull(self, instance: dict[str, Any]) -> Pending | None:
        boot = _boot_disk(instance)
        if boot is not None and boot.get("image"):
            try:
                await self._image(boot["image"])
            except QemuDriverError as problem:
                raise DriverError(str(problem)) from problem
        return None  # without a boot image, start says why

    async def start(self, instance: dict[str, Any]) -> Pending | None:
        vm = self.world.vms.get(*key_of(instance))
        if vm is None:
            return Pending("the VM is gone")  # its controller deletes the instance
        address = get(vm, "status", "networking", "privateIPv4Address")
        if not address and not _address_refused(vm):
            return Pending("waiting for the VM's private address")  # its event brings us back
        boot = _boot_disk(instance)
        if boot is None or not boot.get("image"):
            raise DriverError("the VM has no boot disk made from a DiskImage; nothing to boot")
        machine = self._machine(instance)
        if (await machine.observe()).state in (RunState.RUNNING, RunState.STARTING):
            return None
        tap_fd: int | None = None
        try:
            image = await self._image(boot["image"])
            if self.network is not None:
                tap_fd = await self.network.attach(vm)
            spec = await self._machine_spec(instance, vm, image, address, machine, tap_fd)
            await machine.start(spec)
        except (QemuDriverError, NetworkError) as problem:
            raise DriverError(str(problem)) from problem
        finally:
            if tap_fd is not None:
                os.close(tap_fd)  # QEMU holds the tap now (or it failed and the tap goes)
        return None

    async def stop(self, instance: dict[str, Any]) -> None:
        await self._machine(instance).stop(self.config.stop_timeout)
        await self._release(instance)

    async def attach(self, instance: dict[str, Any], want: HotswapWant) -> str:
        machine = self._machine(instance)
        try:
            if want["serial"] not in await machine.hotplugged_serials():
                path = await self._disk_file(instance["metadata"]["namespace"], want["disk"])
                await machine.attach_disk(path, want["serial"])
        except QemuDriverError as problem:
            raise DriverError(str(problem)) from problem
        return BY_ID + want["serial"]

    async def detach(self, instance: dict[str, Any], serial: str) -> None:
        try:
            await self._machine(instance).detach_disk(serial)
        except QemuDriverError as problem:
            raise DriverError(str(problem)) from problem

    async def migrate(self, instance: dict[str, Any]) -> float | None:
        raise MigrationUnsupported("the QEMU driver cannot move a running guest yet")

    async def remove(self, instance: dict[str, Any]) -> None:
        machine = self._machine(instance)
        await machine.stop(self.config.stop_timeout)
        await machine.remove()
        self._machines.pop(key_of(instance), None)
        await self._release(instance)

    async def _release(self, instance: dict[str, Any]) -> None:
        if self.network is not None:
            try:
                await self.network.release(instance["metadata"]["namespace"])
            except NetworkError as problem:
                raise DriverError(str(problem)) from problem

    # ---- what a start needs -----------------------------------------------------------

    async def _image(self, name: str) -> images.StoredImage:
        image = self.world.images.get("", name)
        source = get(image, "spec", "source", "url")
        if source:
            await images.import_image(self.store, name, source, get(image, "spec", "source", "sha256"))
            return self.store.get(name)
        try:
            return self.store.get(name)
        except ImageNotFoundError:
            raise ImageNotFoundError(
                f'DiskImage "{name}" is not in the image store of host {self.config.name} '
                f"({self.store.root}) and has no spec.source; import it with `evroc-compute "
                f"images import {name} FILE|URL` or give the DiskImage a spec.source.url") from None

    def disk_path(self, disk: dict[str, Any]) -> Path:
        meta = disk["metadata"]
        return self.disk_dir / str(meta["namespace"]) / f"{meta['name']}-{meta['uid']}.qcow2"

    async def _disk_file(self, namespace: str, name: str) -> Path:
        """The qcow2 file of Disk `name`, created (over its image) if it does not exist yet."""
        disk = self.world.disks.get(namespace, name)
        if disk is None:
            raise QemuDriverError(f'Disk "{name}" does not exist')
        path = self.disk_path(disk)
        if path.exists():
            return path
        image_name = get(disk, "spec", "diskImage", "diskImageRef", "name")
        base = (await self._image(image_name)).disk if image_name else None
        size = size_in_bytes(get(disk, "status", "diskSize")) or \
            size_in_bytes(get(disk, "spec", "diskSize"))
        if not size:
            raise QemuDriverError(f'Disk "{name}" has no size yet')
        await disks.create_disk(base, path, size)
        return path

    async def _machine_spec(self, instance: dict[str, Any], vm: dict[str, Any],
                            image: images.StoredImage, address: str | None,
                            machine: QemuMachine, tap_fd: int | None) -> MachineSpec:
        namespace, name = key_of(instance)
        files = [DiskAttachment(await self._disk_file(namespace, d["name"]), _serial(d["name"]))
                 for d in sorted(get(instance, "spec", "disks") or [],
                                 key=lambda d: not d.get("boot"))]
        mac = names.mac(vm["metadata"]["uid"])
        network: seed.StaticNetwork | None = None
        interface: ipaddress.IPv4Interface | None = None
        gateway: ipaddress.IPv4Address | None = None
        subnet = self.settings.subnet(self.config.zone)
        if address and subnet is not None:
            interface = ipaddress.IPv4Interface(f"{address}/{subnet.prefixlen}")
            gateway = subnet.network_address + 1
            network = seed.StaticNetwork(mac_address=mac, address=interface,
                                         gateway=gateway, nameservers=(subnet.network_address + 3,))
        machine.paths.workdir.mkdir(parents=True, exist_ok=True)
        seed_iso = machine.paths.workdir / "seed.iso"
        from_metadata = self.config.cloud_init_source == "metadata"
        if from_metadata:
            seed_iso.unlink(missing_ok=True)  # one a seed-mode run left
        else:
            await asyncio.to_thread(seed.write_seed_iso, seed.seed_files(
                instance_id=vm["metadata"]["uid"], hostname=name, ssh_authorized_keys=_keys(vm),
                user_data=get(vm, "spec", "osSettings", "cloudInitUserData"), network=network),
                seed_iso)
        resources = get(instance, "spec", "resources") or {}
        return MachineSpec(
            name=f"{name}.{namespace}", boot_disk=files[0], disks=tuple(files[1:]),
            seed_iso=None if from_metadata else seed_iso, kernel=image.kernel, initrd=image.initrd,
            kernel_cmdline=image.kernel_cmdline,
            memory_mib=max(128, int(resources.get("memoryBytes") or 0) >> 20),
            vcpus=max(1, int(resources.get("vcpu") or 1)), accel=self.config.accel,
            mac_address=mac, private_address=interface, gateway=gateway, tap_fd=tap_fd,
            system_product=OPENSTACK_PRODUCT if from_metadata else None,
            system_uuid=str(vm["metadata"]["uid"]) if from_metadata else None)

    # ---- files nobody owns any more ---------------------------------------------------

    async def _sweeper(self) -> None:
        while True:
            await self._sweep.wait()
            self._sweep.clear()
            try:
                await self.sweep()
            except Exception:
                log.exception("removing the files of deleted disks failed; retrying later")

    async def sweep(self) -> None:
        """Delete disk files whose Disk is gone, and VM directories without an instance here."""
        wanted = {self.disk_path(d) for d in self.world.disks.cache.values()}
        for path in self.disk_dir.glob("*/*.qcow2"):
            if path not in wanted:
                log.info("deleting %s: its Disk was deleted", path)
                disks.delete_disk(path)
        for workdir in self.vm_dir.glob("*/*"):
            key = (workdir.parent.name, workdir.name)
            instance = self.world.instances.get(*key)
            if instance is None or get(instance, "spec", "host") != self.config.name:
                log.info("removing %s: no instance of this host runs there", workdir)
                await QemuMachine(workdir).remove()


def _serial(disk_name: str) -> str:
    """The serial of a permanent disk (the guest sees it in /sys/block/vdX/serial).

    virtio-blk keeps 20 bytes: longer names are cut and made unique with a hash.
    """
    if len(disk_name) <= 20:
        return disk_name
    return f"{disk_name[:11]}-{hashlib.sha256(disk_name.encode()).hexdigest()[:8]}"


def _user_data(vm: dict[str, Any]) -> bytes:
    """The user-data the metadata service gives the VM: the same as its NoCloud seed's."""
    given = get(vm, "spec", "osSettings", "cloudInitUserData")
    if given is not None:
        return seed.decode_user_data(given)
    return seed.default_user_data(_keys(vm))


def _keys(vm: dict[str, Any]) -> list[str]:
    return [k.get("value", "") for k in get(vm, "spec", "osSettings", "ssh", "authorizedKeys") or []]


def _boot_disk(instance: dict[str, Any]) -> dict[str, Any] | None:
    disks_ = get(instance, "spec", "disks") or []
    return next((d for d in disks_ if d.get("boot")), None) or next(iter(disks_), None)


def _address_refused(vm: dict[str, Any]) -> bool:
    """Whether the VM controller said no private address is free (the guest boots without)."""
    assigned = condition(vm, "AddressAssigned")
    return assigned is not None and assigned.get("status") == "False"


async def _ssh_answers(port: int | None) -> bool:
    """Whether an SSH server greets on the loopback port (QEMU accepts before the guest does)."""
    if port is None:
        return False
    with contextlib.suppress(OSError, TimeoutError):
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1.0)
        try:
            # Generous: a guest busy booting greets late, and each retry costs it an sshd fork.
            return (await asyncio.wait_for(reader.read(4), 5.0)) == b"SSH-"
        finally:
            writer.close()
    return False


def _log_tail(machine: QemuMachine) -> str:
    try:
        lines = machine.paths.qemu_log.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "no QEMU log"
    tail = [line for line in lines if not line.startswith("--- ")][-_LOG_TAIL_LINES:]
    return " ".join(tail).strip() or "QEMU printed nothing (killed?)"
