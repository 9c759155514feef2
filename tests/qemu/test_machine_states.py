"""Run states QEMU reaches without a booted guest: cheap, no SSH needed."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from pathlib import Path

import pytest

from evroc_compute.hosts.drivers.qemu import disks, images, seed
from evroc_compute.hosts.drivers.qemu.machine import QemuMachine, RunState
from evroc_compute.hosts.drivers.qemu.spec import DiskAttachment, MachineSpec

from .conftest import requires_qemu

pytestmark = [pytest.mark.slow, requires_qemu, pytest.mark.timeout(300)]


async def _spec(tmp_path: Path, workdir: Path, image: images.StoredImage) -> MachineSpec:
    boot = tmp_path / "boot.qcow2"
    await disks.create_disk(image.disk, boot, 1 << 30)
    seed.write_seed_iso(seed.seed_files(instance_id=str(uuid.uuid4()), hostname="vm"),
                        workdir / "seed.iso")
    return MachineSpec(name="vm", boot_disk=DiskAttachment(boot, "boot"), seed_iso=workdir / "seed.iso",
                       kernel=image.kernel, initrd=image.initrd, kernel_cmdline=image.kernel_cmdline)


async def test_stop_quits_qemu_when_the_guest_ignores_the_power_button(
        tmp_path: Path, workdir: Path, minimal_image: images.StoredImage) -> None:
    machine = QemuMachine(workdir)
    await machine.start(await _spec(tmp_path, workdir, minimal_image))
    await machine.stop(timeout=0.2)  # the guest's kernel is still booting: no ACPI handler yet
    assert (await machine.observe()).state is RunState.STOPPED
    assert machine.history == [RunState.ABSENT, RunState.STARTING, RunState.RUNNING,
                               RunState.STOPPING, RunState.STOPPED]
    await machine.stop()  # stopping a stopped machine is a no-op
    assert (await machine.observe()).state is RunState.STOPPED


async def test_a_killed_qemu_is_observed_as_crashed_and_can_start_again(
        tmp_path: Path, workdir: Path, minimal_image: images.StoredImage) -> None:
    spec = await _spec(tmp_path, workdir, minimal_image)
    machine = QemuMachine(workdir)
    await machine.start(spec)
    pid = (await machine.observe()).pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while (observation := await machine.observe()).state is not RunState.CRASHED:
        assert time.monotonic() < deadline, observation  # only Running/Starting until QEMU is gone
        await asyncio.sleep(0.05)
    assert (observation.state, observation.pid) == (RunState.CRASHED, None)
    await machine.start(spec)
    assert (await machine.observe()).state is RunState.RUNNING
    await machine.remove()
    assert (await QemuMachine.adopt(workdir)).state is RunState.ABSENT
