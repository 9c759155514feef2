"""The QEMU host agent: runs the instances bound to one real host as QEMU virtual machines.

Everything the agent decides is read back from what exists (the instance in the API, the
VM's work directory, the QEMU process and its monitor), never only remembered, so an agent
that restarts adopts the guests it finds running instead of killing them.  Per instance:

- its boot image comes from the host's image store, imported from the DiskImage's
  `spec.source` when the store lacks it; a failure is ErrImagePull, then ImagePullBackOff;
- its disks are qcow2 files, `disks/<namespace>/<name>-<uid>.qcow2`, overlays of their image,
  created at first boot, kept when the VM goes and removed when the Disk is deleted;
- its NoCloud seed carries the VM's uid, name, SSH keys or user data, and private address;
- Starting lasts until the guest's SSH server answers on the forwarded loopback port (the
  VM's `sshEndpoint`); QEMU exiting without being asked to is a crash: Failed, then a
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

from evroc_compute.api.catalog import DISK_IMAGE
from evroc_compute.api.compute import size_in_bytes
from evroc_compute.api.infra import HOST, VIRTUAL_MACHINE_INSTANCE
from evroc_compute.api.meta import format_time, parse_time
from evroc_compute.client.base import Client, ClientError
from evroc_compute.hosts.drivers.qemu import disks, images, seed
from evroc_compute.hosts.drivers.qemu.errors import ImageNotFoundError, QemuDriverError
from evroc_compute.hosts.drivers.qemu.machine import Observation, QemuMachine, RunState
from evroc_compute.hosts.drivers.qemu.spec import DEFAULT_MAC, DiskAttachment, MachineSpec
from evroc_compute.hosts.fleet import HostSpec
from evroc_compute.hosts.reports import heartbeats, renew_lease, report
from evroc_compute.runtime.controller import Controller, Key, Result, WorkQueue
from evroc_compute.runtime.settings import Settings
from evroc_compute.runtime.world import (
    FINALIZER_INSTANCE,
    World,
    condition,
    deleting,
    get,
    key_of,
)
from evroc_compute.runtime.writes import set_finalizer

log = logging.getLogger(__name__)

SSH_PROBE_INTERVAL = 0.5  # seconds between looks at a booting guest's SSH port
WATCH_INTERVAL = 2.0  # seconds between looks at a running guest (exits, pauses)
BOOT_GRACE = 300.0  # a guest whose SSH server never answers is called Running after this
FAILURE_REPORT_SECONDS = 1.0  # an image pull failure is shown this long before backing off
BY_ID = "/dev/disk/by-id/scsi-0QEMU_QEMU_HARDDISK_"  # where a hot-plugged disk appears
_LOG_TAIL_LINES = 5
IMAGE_STORE_LABEL = "evroc-compute.io/image-store"  # on DiskImages a host registered


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

    Existing objects are left alone: an operator may have edited them.
    """
    store = images.ImageStore(config.image_dir)
    objects = [(HOST, config.host_spec().to_object())]
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


class _Status:
    """The instance's status being written: the last report plus this reconcile's changes."""

    def __init__(self, instance: dict[str, Any], now: float) -> None:
        self.new: dict[str, Any] = dict(instance.get("status") or {})
        self.now = now

    @property
    def phase(self) -> str:
        return str(self.new.get("phase") or "Scheduled")

    def in_phase_for(self) -> float:
        return self.now - (parse_time(self.new.get("phaseSince")) or self.now)

    def move(self, phase: str, message: str) -> None:
        if phase != self.phase:
            self.new["phaseSince"] = format_time(self.now)
        self.new["phase"], self.new["message"] = phase, message

    def drop(self, *fields: str) -> None:
        for field in fields:
            self.new.pop(field, None)


class QemuAgent:
    """The agent of one QEMU host: a reconciler of the instances bound to it."""

    def __init__(self, client: Client, world: World, settings: Settings, config: QemuHostConfig,
                 *, wall: Callable[[], float] = time.time, workers: int = 4) -> None:
        self.client, self.world, self.settings, self.config = client, world, settings, config
        self.wall = wall
        self.store = images.ImageStore(config.image_dir)
        self.vm_dir = config.data_dir.resolve() / "vms"
        self.disk_dir = config.data_dir.resolve() / "disks"
        self.queue = WorkQueue()
        self.controller = Controller("qemu-agent", self, self.queue, workers=workers)
        self._machines: dict[Key, QemuMachine] = {}
        self._sweep = asyncio.Event()
        world.instances.add_handler(self._on_instance)
        world.vms.add_handler(self._on_vm)
        world.disks.add_handler(self._on_disk)

    def _on_instance(self, event: str, instance: dict[str, Any]) -> None:
        if get(instance, "spec", "host") == self.config.name:
            self.queue.add(key_of(instance))

    def _on_vm(self, event: str, vm: dict[str, Any]) -> None:
        # The seed waits for the VM's private address, which the VM controller writes.
        instance = self.world.instances.get(*key_of(vm))
        if instance is not None:
            self._on_instance(event, instance)

    def _on_disk(self, event: str, disk: dict[str, Any]) -> None:
        if event == "DELETED":
            self._sweep.set()

    async def run(self) -> None:
        await self.world.synced.wait()
        for instance in self.world.instances.cache.values():
            self._on_instance("ADDED", instance)
        self._sweep.set()
        async with asyncio.TaskGroup() as group:
            group.create_task(self.controller.run())
            group.create_task(heartbeats(self.renew_lease, self.settings.heartbeat_interval))
            group.create_task(self._sweeper())

    def stop(self) -> None:
        self.controller.stop()

    async def renew_lease(self) -> None:
        await renew_lease(self.client, self.config.name, format_time(self.wall()), self.settings)

    # ---- one instance -----------------------------------------------------------------

    def _machine(self, key: Key) -> QemuMachine:
        machine = self._machines.get(key)
        if machine is None:
            machine = self._machines[key] = QemuMachine(self.vm_dir / key[0] / key[1])
        return machine

    async def reconcile(self, key: Key) -> Result:
        instance = self.world.instances.get(*key)
        if instance is None or get(instance, "spec", "host") != self.config.name:
            return Result()
        machine = self._machine(key)
        if deleting(instance):
            await machine.stop(self.config.stop_timeout)
            await machine.remove()
            self._machines.pop(key, None)
            await set_finalizer(self.client, VIRTUAL_MACHINE_INSTANCE, instance,
                                FINALIZER_INSTANCE, False)
            return Result()
        status = _Status(instance, self.wall())
        observation = await machine.observe()
        if get(instance, "spec", "running") is False:
            return await self._power_off(instance, machine, observation, status)
        if not get(instance, "spec", "disksReady"):
            status.move("Scheduled", "waiting for the VM's disks to be provisioned")
            await report(self.client, instance, status.new)
            return Result()
        state = observation.state
        if state is RunState.RUNNING:
            return await self._running(instance, machine, observation, status)
        if state in (RunState.STARTING, RunState.STOPPING):
            return Result(requeue_after=SSH_PROBE_INTERVAL)
        if state is RunState.CRASHED and status.phase != "Failed":
            return await self._failed(instance, status, "QEMU exited unexpectedly: "
                                      + (observation.failure or _log_tail(machine)))
        return await self._start(instance, machine, status, state)

    async def _power_off(self, instance: dict[str, Any], machine: QemuMachine,
                         observation: Observation, status: _Status) -> Result:
        if observation.state in (RunState.RUNNING, RunState.STARTING, RunState.STOPPING):
            status.move("Stopping", "ACPI power-down sent; waiting for the guest to shut down "
                                    f"(QEMU quits it after {self.config.stop_timeout:g} s)")
            await report(self.client, instance, status.new)
            await machine.stop(self.config.stop_timeout)
            status.move("Stopped", "the guest shut down")
        elif not status.new.get("bootCount"):
            status.move("Stopped", "the guest was never started")
        elif status.phase != "Stopped":
            status.move("Stopped", f"the guest is stopped (it was {status.phase}: "
                                   f"{status.new.get('message')})")
        status.drop("sshEndpoint", "crashCount", "crashRetryAt")
        status.new["hotswap"] = [
            {"attachment": w["attachment"], "disk": w["disk"], "serial": w["serial"],
             "attached": False, "message": "the VM is not running; the disk is plugged in when it "
                                          "starts"} for w in get(instance, "spec", "hotswap") or []]
        if not status.new["hotswap"]:
            status.drop("hotswap")
        await report(self.client, instance, status.new)
        return Result()

    async def _failed(self, instance: dict[str, Any], status: _Status, why: str) -> Result:
        crashes = int(status.new.get("crashCount") or 0) + 1
        wait = self.settings.backoff(crashes)
        status.move("Failed", why)
        status.new.update(crashCount=crashes, crashRetryAt=format_time(status.now + wait))
        status.drop("sshEndpoint")
        await report(self.client, instance, status.new)
        return Result(requeue_after=wait)

    async def _start(self, instance: dict[str, Any], machine: QemuMachine, status: _Status,
                     state: RunState) -> Result:
        now = status.now
        retry_at = parse_time(status.new.get("crashRetryAt"))
        if status.phase == "Failed" and retry_at is not None and now < retry_at:
            return Result(requeue_after=retry_at - now)
        waited = self._image_backoff(status)
        if waited is not None:
            if status.new != (instance.get("status") or {}):
                await report(self.client, instance, status.new)
            return Result(requeue_after=waited)
        vm = self.world.vms.get(*key_of(instance))
        if vm is None:
            return Result()  # the VM is gone: its controller deletes the instance
        address = get(vm, "status", "networking", "privateIPv4Address")
        if not address and not _address_refused(vm):
            return Result()  # the VM controller assigns it; its event brings us back
        boot = next((d for d in get(instance, "spec", "disks") or [] if d.get("boot")), None) \
            or next(iter(get(instance, "spec", "disks") or []), None)
        if boot is None or not boot.get("image"):
            return await self._failed(instance, status, "the VM has no boot disk made from a "
                                                        "DiskImage; nothing to boot")
        if state is RunState.STOPPED and status.phase in ("Running", "Starting"):
            log.info("guest %s/%s powered itself off; starting it again", *key_of(instance))
        status.move("Pulling", f'preparing boot image "{boot["image"]}"')
        await report(self.client, instance, status.new)
        try:
            image = await self._image(boot["image"])
        except QemuDriverError as problem:
            status.new["imagePullError"] = str(problem)
            status.new["imagePullFailures"] = int(status.new.get("imagePullFailures") or 0) + 1
            status.new["phaseSince"] = format_time(now)
            status.new["message"] = f"pulling the boot image failed: {problem}"
            status.drop("imageRetryAt")
            await report(self.client, instance, status.new)
            return Result(requeue_after=FAILURE_REPORT_SECONDS)
        status.drop("imagePullError", "imagePullFailures", "imageRetryAt")
        try:
            spec = await self._machine_spec(instance, vm, image, address, machine)
            status.move("Starting", f"starting QEMU ({self.config.accel.upper()})")
            await report(self.client, instance, status.new)
            await machine.start(spec)
        except QemuDriverError as problem:
            return await self._failed(instance, status, f"the guest could not start: {problem}")
        status.new["bootCount"] = int(status.new.get("bootCount") or 0) + 1
        status.new["sshEndpoint"] = f"127.0.0.1:{machine.ssh_port}"
        status.move("Starting", f"QEMU ({self.config.accel.upper()}) runs the guest; waiting for "
                                "its SSH server")
        await report(self.client, instance, status.new)
        return Result(requeue_after=SSH_PROBE_INTERVAL)

    def _image_backoff(self, status: _Status) -> float | None:
        """Seconds to wait before pulling the boot image again, or None to pull now."""
        if not status.new.get("imagePullError"):
            return None
        retry_at = parse_time(status.new.get("imageRetryAt"))
        if retry_at is None:  # the failure was shown (ErrImagePull); now back off
            shown = status.in_phase_for()
            if shown < FAILURE_REPORT_SECONDS:
                return FAILURE_REPORT_SECONDS - shown
            wait = self.settings.backoff(int(status.new.get("imagePullFailures") or 1))
            status.new["imageRetryAt"] = format_time(status.now + wait)
            return wait
        return retry_at - status.now if status.now < retry_at else None

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
        return self.disk_dir / meta["namespace"] / f"{meta['name']}-{meta['uid']}.qcow2"

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
                            machine: QemuMachine) -> MachineSpec:
        namespace, name = key_of(instance)
        files = [DiskAttachment(await self._disk_file(namespace, d["name"]), _serial(d["name"]))
                 for d in sorted(get(instance, "spec", "disks") or [],
                                 key=lambda d: not d.get("boot"))]
        network: seed.StaticNetwork | None = None
        interface: ipaddress.IPv4Interface | None = None
        gateway: ipaddress.IPv4Address | None = None
        subnet = self.settings.subnet(self.config.zone)
        if address and subnet is not None:
            interface = ipaddress.IPv4Interface(f"{address}/{subnet.prefixlen}")
            gateway = subnet.network_address + 1
            network = seed.StaticNetwork(mac_address=DEFAULT_MAC, address=interface,
                                         gateway=gateway, nameservers=(subnet.network_address + 3,))
        keys = [k.get("value", "") for k in get(vm, "spec", "osSettings", "ssh", "authorizedKeys")
                or []]
        seed_iso = machine.paths.workdir / "seed.iso"
        machine.paths.workdir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(seed.write_seed_iso, seed.seed_files(
            instance_id=vm["metadata"]["uid"], hostname=name, ssh_authorized_keys=keys,
            user_data=get(vm, "spec", "osSettings", "cloudInitUserData"), network=network),
            seed_iso)
        resources = get(instance, "spec", "resources") or {}
        return MachineSpec(
            name=f"{name}.{namespace}", boot_disk=files[0], disks=tuple(files[1:]),
            seed_iso=seed_iso, kernel=image.kernel, initrd=image.initrd,
            kernel_cmdline=image.kernel_cmdline,
            memory_mib=max(128, int(resources.get("memoryBytes") or 0) >> 20),
            vcpus=max(1, int(resources.get("vcpu") or 1)), accel=self.config.accel,
            private_address=interface, gateway=gateway)

    async def _running(self, instance: dict[str, Any], machine: QemuMachine,
                       observation: Observation, status: _Status) -> Result:
        wait = WATCH_INTERVAL
        if observation.qemu_status == "paused":
            status.move("Paused", "QEMU paused the guest (a disk write failed or an operator "
                                  "stopped it); it resumes with `cont` on its monitor")
        elif status.phase != "Running":
            booting = status.in_phase_for() if status.phase == "Starting" else 0.0
            if await _ssh_answers(machine.ssh_port):
                status.move("Running", "the guest is running; its SSH server answers on "
                                       f"{status.new.get('sshEndpoint')}")
                status.drop("crashCount", "crashRetryAt")
            elif booting >= BOOT_GRACE:
                status.move("Running", f"the guest is running; its SSH server has not answered "
                                       f"in {BOOT_GRACE:g} s")
                status.drop("crashCount", "crashRetryAt")
            else:
                status.move("Starting", status.new.get("message") or "the guest is booting")
                wait = SSH_PROBE_INTERVAL
        status.new["sshEndpoint"] = f"127.0.0.1:{machine.ssh_port}"
        swaps = await self._hotswap(instance, machine)
        status.new["hotswap"] = swaps
        if not swaps:
            status.drop("hotswap")
        await report(self.client, instance, status.new)
        return Result(requeue_after=wait)

    async def _hotswap(self, instance: dict[str, Any], machine: QemuMachine) -> list[dict[str, Any]]:
        """Plug the wanted disks, unplug the others; the entries the status shows."""
        namespace = instance["metadata"]["namespace"]
        wanted = {w["serial"]: w for w in get(instance, "spec", "hotswap") or []}
        plugged = await machine.hotplugged_serials()
        for serial in plugged - set(wanted):
            try:
                await machine.detach_disk(serial)
            except QemuDriverError as problem:
                log.warning("unplugging disk %s from %s/%s: %s", serial, *key_of(instance), problem)
        entries = []
        for serial, want in wanted.items():
            entry: dict[str, Any] = {"attachment": want["attachment"], "disk": want["disk"],
                                     "serial": serial}
            try:
                if serial not in plugged:
                    await machine.attach_disk(await self._disk_file(namespace, want["disk"]), serial)
                entries.append({**entry, "device": BY_ID + serial, "attached": True})
            except QemuDriverError as problem:
                entries.append({**entry, "attached": False,
                                "message": f"hot-plugging the disk failed: {problem}"})
        return entries

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
