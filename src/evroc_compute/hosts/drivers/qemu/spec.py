"""What a VM is made of, as QEMU needs it: the input of `QemuMachine.start`.

Plain frozen records, independent of the API objects, so the host agent decides the
mapping (Disk -> DiskAttachment, VM -> MachineSpec) and this package stays testable alone.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .errors import MachineError

# Serials end up in QEMU device ids and guest /dev/disk/by-id names; QEMU's scsi-hd keeps 36.
_SERIAL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,35}$")
DEFAULT_MAC = "52:54:00:12:34:56"


def check_serial(serial: str) -> str:
    """`serial` if usable as a disk serial, else a MachineError saying what is allowed."""
    if not _SERIAL.match(serial):
        raise MachineError(f"invalid disk serial {serial!r}: 1-36 characters, letters, digits, "
                           "'.', '_' or '-', starting with a letter or digit")
    return serial


@dataclass(frozen=True)
class DiskAttachment:
    """A disk file given to the VM, identified in the guest by its serial."""

    path: Path
    serial: str
    format: Literal["qcow2", "raw"] = "qcow2"
    read_only: bool = False

    def __post_init__(self) -> None:
        check_serial(self.serial)


@dataclass(frozen=True)
class MachineSpec:
    """Everything needed to launch one VM."""

    name: str  # the VM's name: QEMU's -name, visible in process listings
    boot_disk: DiskAttachment  # virtio-blk, /dev/vda in the guest
    disks: tuple[DiskAttachment, ...] = ()  # permanent extra disks, /dev/vdb, /dev/vdc...
    seed_iso: Path | None = None  # NoCloud seed, attached as an IDE CD-ROM
    kernel: Path | None = None  # direct kernel boot; None boots the disk via the firmware
    initrd: Path | None = None
    kernel_cmdline: str | None = None
    memory_mib: int = 256
    vcpus: int = 1
    accel: Literal["tcg", "kvm"] = "tcg"  # KVM is broken on the project's machines
    tcg_cache_mib: int = 128  # TCG translation cache: QEMU's default (1 GiB) dominates its RSS
    mac_address: str = DEFAULT_MAC
    # The guest's address on QEMU's user-mode network (None: QEMU's default, 10.0.2.15/24);
    # with it the network, gateway (.2 unless given) and DHCP lease follow this address.
    private_address: ipaddress.IPv4Interface | None = None
    gateway: ipaddress.IPv4Address | None = None
    # A tap device opened by the host's network (its fd, QEMU inherits it); None: user-mode.
    tap_fd: int | None = None
    # SMBIOS type 1 (system) product name and UUID the guest reads from its firmware tables
    # (cloud-init's OpenStack datasource looks for "OpenStack Nova"); None: QEMU's own.
    system_product: str | None = None
    system_uuid: str | None = None

    def __post_init__(self) -> None:
        if self.kernel is None and (self.initrd is not None or self.kernel_cmdline is not None):
            raise MachineError("initrd and kernel_cmdline need a kernel")
        if self.memory_mib < 64 or self.vcpus < 1:
            raise MachineError(f"too small a VM: {self.memory_mib} MiB, {self.vcpus} vCPUs")
        serials = [d.serial for d in (self.boot_disk, *self.disks)]
        if len(set(serials)) != len(serials):
            raise MachineError(f"disk serials must be unique, got {serials}")
