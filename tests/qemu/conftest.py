"""Fixtures for the QEMU driver's tests: the image store, built images, SSH keys.

Images live in the driver's default cache (~/.cache/evroc-compute/images, or
$EVROC_IMAGE_STORE), so they are built once per machine, not once per run.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from evroc_compute.hosts.drivers.qemu import images
from evroc_compute.hosts.drivers.qemu.machine import QemuMachine

requires_qemu = pytest.mark.skipif(
    shutil.which("qemu-system-x86_64") is None or shutil.which("qemu-img") is None,
    reason="QEMU is not installed (apt-get install -y qemu-system-x86 qemu-utils)")


@dataclass(frozen=True)
class SshKey:
    private: Path
    public: str  # the authorized_keys line


@pytest.fixture(scope="session")
def store() -> images.ImageStore:
    root = os.environ.get("EVROC_IMAGE_STORE")
    return images.ImageStore(Path(root) if root else None)


@pytest.fixture(scope="session")
def minimal_image(store: images.ImageStore) -> images.StoredImage:
    asyncio.run(images.build_minimal(store))
    return store.get(images.MINIMAL_IMAGE)


@pytest.fixture(scope="session")
def debian_image(store: images.ImageStore) -> images.StoredImage:
    if os.geteuid() != 0 and images.DEBIAN_IMAGE not in store.names():
        pytest.skip("building the Debian image needs root (debootstrap)")
    asyncio.run(images.build_debian(store))
    return store.get(images.DEBIAN_IMAGE)


@pytest.fixture
def ssh_key(tmp_path: Path) -> SshKey:
    if shutil.which("ssh-keygen") is None or shutil.which("ssh") is None:
        pytest.skip("OpenSSH client is not installed (apt-get install -y openssh-client)")
    private = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "evroc-test",
                    "-f", str(private)], check=True)
    return SshKey(private=private, public=private.with_suffix(".pub").read_text().strip())


@pytest.fixture
async def workdir(tmp_path: Path) -> AsyncIterator[Path]:
    """A VM's work directory; whatever QEMU runs there is killed when the test ends."""
    path = tmp_path / "vm"
    yield path
    await (await QemuMachine.adopt(path)).remove()
