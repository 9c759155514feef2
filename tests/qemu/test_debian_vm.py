"""A real Debian bookworm VM: cloud-init reads the NoCloud seed and runs user-data."""

from __future__ import annotations

import base64
import time
import uuid
from pathlib import Path

import pytest

from evroc_compute.hosts.drivers.qemu import disks, images, seed, ssh
from evroc_compute.hosts.drivers.qemu.machine import QemuMachine, RunState
from evroc_compute.hosts.drivers.qemu.spec import DiskAttachment, MachineSpec

from .conftest import SshKey, requires_qemu

pytestmark = [pytest.mark.slow, requires_qemu, pytest.mark.timeout(900)]


def _user_data(key: SshKey, marker: str) -> str:
    """cloudInitUserData as a VM spec may give it: base64 of a #cloud-config."""
    config = f"""#cloud-config
users:
  - name: evroc-user
    shell: /bin/bash
    sudo: "ALL=(ALL) NOPASSWD:ALL"
    ssh_authorized_keys:
      - {key.public}
write_files:
  - path: /etc/evroc-user-data
    content: "{marker}\\n"
runcmd:
  - [sh, -c, "echo ran > /run/evroc-runcmd"]
"""
    return base64.b64encode(config.encode()).decode()


async def test_cloud_init_runs_user_data(tmp_path: Path, workdir: Path,
                                         debian_image: images.StoredImage, ssh_key: SshKey) -> None:
    marker = f"written-by-user-data-{uuid.uuid4()}"
    boot = tmp_path / "disks" / "boot.qcow2"
    await disks.create_disk(debian_image.disk, boot, 4 << 30)
    files = seed.seed_files(instance_id=str(uuid.uuid4()), hostname="debian-vm",
                            ssh_authorized_keys=[ssh_key.public],
                            user_data=_user_data(ssh_key, marker))
    seed.write_seed_iso(files, workdir / "seed.iso")
    spec = MachineSpec(name="debian-vm", boot_disk=DiskAttachment(boot, "boot"),
                       seed_iso=workdir / "seed.iso", kernel=debian_image.kernel,
                       initrd=debian_image.initrd, kernel_cmdline=debian_image.kernel_cmdline,
                       memory_mib=768)
    machine = QemuMachine(workdir)

    started = time.monotonic()
    await machine.start(spec)
    assert machine.ssh_port is not None
    await ssh.wait_for_ssh(port=machine.ssh_port, key=ssh_key.private, timeout=600)
    print(f"\nDebian guest: start to SSH in {time.monotonic() - started:.2f} s")
    done = await ssh.run("cloud-init status --wait", port=machine.ssh_port, key=ssh_key.private,
                         timeout=300)
    print(f"Debian guest: cloud-init done {time.monotonic() - started:.2f} s after start")
    assert "status: done" in done.stdout, done.stdout + done.stderr
    for command, expected in [("cat /etc/evroc-user-data", marker),
                              ("cat /run/evroc-runcmd", "ran"),
                              ("hostname", "debian-vm"),
                              ("sudo -n id -un", "root"),
                              ("findmnt -no SIZE /", None)]:
        result = await ssh.run(command, port=machine.ssh_port, key=ssh_key.private)
        assert result.returncode == 0, f"{command}: {result.stderr}"
        if expected is not None:
            assert result.stdout.strip() == expected, command
        else:
            print(f"Debian guest: root filesystem {result.stdout.strip()} (disk 4 GiB)")
    stopping = time.monotonic()
    await machine.stop(timeout=60)
    print(f"Debian guest: ACPI power-off took {time.monotonic() - stopping:.2f} s")
    assert machine.state is RunState.STOPPED
    await machine.remove()
    assert not workdir.exists()
