"""VM disks: qcow2 overlays of a base image, or blank, created idempotently (real qemu-img)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from evroc_compute.hosts.drivers.qemu import disks
from evroc_compute.hosts.drivers.qemu.errors import DiskError

from .conftest import requires_qemu

pytestmark = [pytest.mark.slow, requires_qemu]

MIB = 1 << 20


@pytest.fixture
def base(tmp_path: Path) -> Path:
    path = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), str(64 * MIB)], check=True)
    return path


async def test_blank_disk_has_the_requested_size(tmp_path: Path) -> None:
    info = await disks.create_disk(None, tmp_path / "blank.qcow2", 100 * MIB)
    assert (info.format, info.virtual_size, info.backing_file) == ("qcow2", 100 * MIB, None)


async def test_disk_from_an_image_is_an_overlay_grown_to_size(tmp_path: Path, base: Path) -> None:
    info = await disks.create_disk(base, tmp_path / "vms" / "vm.qcow2", 200 * MIB)
    assert (info.format, info.virtual_size, info.backing_file) == ("qcow2", 200 * MIB, base)
    assert (tmp_path / "vms" / "vm.qcow2").stat().st_size < MIB  # copy-on-write: nothing copied


async def test_creating_again_is_a_no_op(tmp_path: Path, base: Path) -> None:
    path = tmp_path / "vm.qcow2"
    first = await disks.create_disk(base, path, 100 * MIB)
    subprocess.run(["qemu-io", "-c", "write -P 0x5a 0 4k", str(path)], check=True, capture_output=True)
    again = await disks.create_disk(base, path, 100 * MIB)
    assert again == first
    dump = subprocess.run(["qemu-io", "-c", "read -P 0x5a 0 4k", str(path)], capture_output=True,
                          text=True, check=True)
    assert "Pattern verification failed" not in dump.stdout  # the data survived


async def test_an_existing_disk_is_grown_but_never_shrunk(tmp_path: Path) -> None:
    path = tmp_path / "vm.qcow2"
    await disks.create_disk(None, path, 100 * MIB)
    assert (await disks.create_disk(None, path, 300 * MIB)).virtual_size == 300 * MIB
    with pytest.raises(DiskError, match="would lose data"):
        await disks.create_disk(None, path, 100 * MIB)


async def test_an_existing_disk_is_never_re_based(tmp_path: Path, base: Path) -> None:
    path = tmp_path / "vm.qcow2"
    await disks.create_disk(None, path, 100 * MIB)
    with pytest.raises(DiskError, match="already exists with base image None"):
        await disks.create_disk(base, path, 100 * MIB)


@pytest.mark.parametrize(("size", "message"), [(0, "must be positive"), (MIB, "smaller than its image")])
async def test_impossible_sizes_are_refused(tmp_path: Path, base: Path, size: int, message: str) -> None:
    with pytest.raises(DiskError, match=message):
        await disks.create_disk(base, tmp_path / "vm.qcow2", size)
    assert not (tmp_path / "vm.qcow2").exists()


async def test_a_missing_base_image_is_reported(tmp_path: Path) -> None:
    with pytest.raises(DiskError, match="does not exist"):
        await disks.create_disk(tmp_path / "nope.qcow2", tmp_path / "vm.qcow2", 100 * MIB)


async def test_delete_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "vm.qcow2"
    await disks.create_disk(None, path, MIB)
    assert disks.delete_disk(path) is True
    assert disks.delete_disk(path) is False
    assert list(tmp_path.iterdir()) == []
