"""A real VM with the minimal guest: boot, SSH, hot-plug, stop, restart, adopt, remove."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest

from evroc_compute.hosts.drivers.qemu import disks, images, seed, ssh
from evroc_compute.hosts.drivers.qemu.errors import MachineError, MachineStateError
from evroc_compute.hosts.drivers.qemu.machine import QemuMachine, RunState
from evroc_compute.hosts.drivers.qemu.spec import DiskAttachment, MachineSpec

from .conftest import SshKey, requires_qemu

pytestmark = [pytest.mark.slow, requires_qemu, pytest.mark.timeout(600)]

GIB = 1 << 30
SERIAL = "evroc-test-1"
BY_ID = f"/dev/disk/by-id/scsi-0QEMU_QEMU_HARDDISK_{SERIAL}"


async def _prepare(tmp_path: Path, workdir: Path, image: images.StoredImage, key: SshKey,
                   name: str) -> MachineSpec:
    """Boot disk overlay in tmp/disks, seed in the VM's work directory."""
    boot = tmp_path / "disks" / "boot.qcow2"
    await disks.create_disk(image.disk, boot, GIB)
    files = seed.seed_files(instance_id=str(uuid.uuid4()), hostname=name,
                            ssh_authorized_keys=[key.public])
    seed_iso = workdir / "seed.iso"
    seed.write_seed_iso(files, seed_iso)
    return MachineSpec(name=name, boot_disk=DiskAttachment(boot, "boot"), seed_iso=seed_iso,
                       kernel=image.kernel, initrd=image.initrd, kernel_cmdline=image.kernel_cmdline)


async def _guest(machine: QemuMachine, key: SshKey, command: str) -> str:
    assert machine.ssh_port is not None
    result = await ssh.run(command, port=machine.ssh_port, key=key.private)
    assert result.returncode == 0, result.stderr
    return result.stdout


async def _until_guest_shows(machine: QemuMachine, key: SshKey, command: str, present: bool) -> float:
    """Seconds until `command` succeeds (present) or fails (absent) in the guest."""
    started = time.monotonic()
    assert machine.ssh_port is not None
    while time.monotonic() - started < 30:
        result = await ssh.run(command, port=machine.ssh_port, key=key.private)
        if (result.returncode == 0) == present:
            return time.monotonic() - started
        await asyncio.sleep(0.2)
    raise AssertionError(f"guest never {'showed' if present else 'dropped'}: {command}")


def _process_exists(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_minimal_vm_lifecycle(tmp_path: Path, workdir: Path,
                                    minimal_image: images.StoredImage, ssh_key: SshKey) -> None:
    spec = await _prepare(tmp_path, workdir, minimal_image, ssh_key, "vm-one")
    machine = QemuMachine(workdir)

    started = time.monotonic()
    await machine.start(spec)
    assert machine.ssh_port is not None
    await ssh.wait_for_ssh(port=machine.ssh_port, key=ssh_key.private, timeout=120)
    print(f"\nminimal guest: start to SSH in {time.monotonic() - started:.2f} s")
    assert (await _guest(machine, ssh_key, "hostname")).strip() == "vm-one"
    assert (await _guest(machine, ssh_key, "id -un")).strip() == "evroc-user"
    assert (await _guest(machine, ssh_key, "cat /sys/block/vda/serial")).strip() == "boot"

    hot = tmp_path / "disks" / "hot.qcow2"
    await disks.create_disk(None, hot, 64 << 20)
    await machine.attach_disk(hot, SERIAL)
    await machine.attach_disk(hot, SERIAL)  # idempotent
    seconds = await _until_guest_shows(machine, ssh_key, f"test -b {BY_ID}", present=True)
    print(f"hot-plugged disk visible in the guest after {seconds:.2f} s")
    vpd = await _guest(machine, ssh_key, f"cat /sys/block/$(basename $(readlink {BY_ID}))/device/vpd_pg80")
    assert SERIAL in vpd
    assert await machine.hotplugged_serials() == {SERIAL}
    await machine.detach_disk(SERIAL)
    await _until_guest_shows(machine, ssh_key, f"test -b {BY_ID}", present=False)
    assert await machine.hotplugged_serials() == set()
    await machine.detach_disk(SERIAL)  # idempotent

    pid = (await machine.observe()).pid
    assert pid is not None
    stopping = time.monotonic()
    await machine.stop(timeout=30)
    print(f"ACPI power-off took {time.monotonic() - stopping:.2f} s")
    assert machine.state is RunState.STOPPED
    assert (await machine.observe()).state is RunState.STOPPED
    assert not _process_exists(pid)
    with pytest.raises(MachineStateError, match="cannot attach a disk to a machine in state Stopped"):
        await machine.attach_disk(hot, SERIAL)

    restarted = time.monotonic()
    await machine.start(spec)
    assert machine.ssh_port is not None
    await ssh.wait_for_ssh(port=machine.ssh_port, key=ssh_key.private, timeout=120)
    print(f"minimal guest: restart to SSH in {time.monotonic() - restarted:.2f} s")
    pid = (await machine.observe()).pid
    assert pid is not None

    await machine.remove()
    assert not _process_exists(pid)
    assert not workdir.exists()
    assert machine.history == [RunState.ABSENT, RunState.STARTING, RunState.RUNNING,
                               RunState.STOPPING, RunState.STOPPED, RunState.STARTING,
                               RunState.RUNNING, RunState.ABSENT]
    assert disks.delete_disk(spec.boot_disk.path) and disks.delete_disk(hot)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")
                  if p.parent == tmp_path or p.is_file()) == [
        "disks", "id_ed25519", "id_ed25519.pub"]


async def test_a_restarted_agent_adopts_the_running_vm(tmp_path: Path, workdir: Path,
                                                       minimal_image: images.StoredImage,
                                                       ssh_key: SshKey) -> None:
    spec = await _prepare(tmp_path, workdir, minimal_image, ssh_key, "vm-adopted")
    first_agent = QemuMachine(workdir)
    await first_agent.start(spec)
    port = first_agent.ssh_port
    assert port is not None
    await ssh.wait_for_ssh(port=port, key=ssh_key.private, timeout=120)
    pid = (await first_agent.observe()).pid
    boot_id = await _guest(first_agent, ssh_key, "cat /proc/sys/kernel/random/boot_id")
    del first_agent  # the agent dies; QEMU runs on

    second_agent = await QemuMachine.adopt(workdir)
    assert second_agent.state is RunState.RUNNING
    observation = await second_agent.observe()
    assert (observation.pid, observation.qemu_status) == (pid, "running")
    assert second_agent.ssh_port == port
    assert await _guest(second_agent, ssh_key, "cat /proc/sys/kernel/random/boot_id") == boot_id
    with pytest.raises(MachineStateError, match="cannot start a machine in state Running"):
        await second_agent.start(spec)

    await second_agent.stop(timeout=30)
    assert (await second_agent.observe()).state is RunState.STOPPED
    assert pid is not None and not _process_exists(pid)
    await second_agent.remove()
    assert not workdir.exists()
    assert (await QemuMachine.adopt(workdir)).state is RunState.ABSENT


async def test_a_qemu_that_cannot_start_is_reported_crashed_with_its_error(
        tmp_path: Path, workdir: Path, minimal_image: images.StoredImage, ssh_key: SshKey) -> None:
    spec = await _prepare(tmp_path, workdir, minimal_image, ssh_key, "vm-broken")
    not_a_kernel = workdir / "vmlinuz"
    not_a_kernel.write_text("not a kernel\n")
    broken = MachineSpec(name=spec.name, boot_disk=spec.boot_disk, seed_iso=spec.seed_iso,
                         kernel=not_a_kernel)
    machine = QemuMachine(workdir)
    with pytest.raises(MachineError, match=r"QEMU exited while starting vm-broken: .*invalid kernel"):
        await machine.start(broken)
    observation = await machine.observe()
    assert observation.state is RunState.CRASHED
    assert observation.failure is not None and "qemu.log" in observation.failure
    await machine.remove()
