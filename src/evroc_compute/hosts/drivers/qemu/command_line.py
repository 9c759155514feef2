"""The qemu-system-x86_64 command line for a MachineSpec: a pure function, tested alone.

Device choices follow what the guest must see: the boot disk as virtio-blk /dev/vda and
permanent disks after it, a virtio-scsi controller so disks can be hot-plugged the way
evroc does (scsi-hd with a serial), the NoCloud seed as a CD-ROM (if there is one), the
firmware's system product and UUID (what cloud-init looks at before asking a metadata
service), the NIC on a tap the host's network opened (bridged) or on user-mode networking
with SSH forwarded to a loopback port, and the monitor (QMP) and serial console on files in
the VM's work directory. JSON -blockdev options avoid quoting paths.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path

from .spec import DiskAttachment, MachineSpec

QEMU_BINARY = "qemu-system-x86_64"
SCSI_BUS = "scsi0.0"  # the hot-plug controller's bus, for device_add
GUEST_SSH_PORT = 22
TAP_FD = 3  # the fd number QEMU finds a tap under (machine.py moves the spec's fd there)


@dataclass(frozen=True)
class MachinePaths:
    """The files of one VM in its work directory."""

    workdir: Path

    @property
    def pidfile(self) -> Path:
        return self.workdir / "qemu.pid"

    @property
    def qmp_socket(self) -> Path:
        return self.workdir / "qmp.sock"

    @property
    def console_log(self) -> Path:
        return self.workdir / "console.log"  # the guest's serial console

    @property
    def qemu_log(self) -> Path:
        return self.workdir / "qemu.log"  # QEMU's own stdout and stderr

    @property
    def state_file(self) -> Path:
        return self.workdir / "machine.json"


def node_name(serial: str) -> str:
    """The block node of the disk with `serial` (letters, digits, '-', '.', '_' allowed)."""
    return f"disk-{serial}"


def device_id(serial: str) -> str:
    """The QEMU device id of the disk with `serial`."""
    return f"dev-{serial}"


def argv(spec: MachineSpec, paths: MachinePaths, ssh_port: int,
         binary: str = QEMU_BINARY) -> list[str]:
    """The full command line that runs `spec` with its files under `paths`."""
    accel = f"tcg,tb-size={spec.tcg_cache_mib}" if spec.accel == "tcg" else "kvm"
    args = [
        binary, "-name", f"guest={_escape(spec.name)}", "-machine", "pc", "-accel", accel,
        "-smp", str(spec.vcpus), "-m", str(spec.memory_mib),
        "-nodefaults", "-no-user-config", "-display", "none",
        "-pidfile", str(paths.pidfile),
        "-chardev", f"socket,id=qmp,path={_escape(str(paths.qmp_socket))},server=on,wait=off",
        "-mon", "chardev=qmp,mode=control",
        "-chardev", f"file,id=console,path={_escape(str(paths.console_log))}",
        "-serial", "chardev:console",
    ]
    if spec.accel == "kvm":
        args += ["-cpu", "host"]
    system = [f"{key}={_escape(value)}" for key, value in
              (("product", spec.system_product), ("uuid", spec.system_uuid)) if value]
    if system:
        args += ["-smbios", ",".join(["type=1", *system])]
    if spec.kernel is not None:
        args += ["-kernel", str(spec.kernel)]
        if spec.initrd is not None:
            args += ["-initrd", str(spec.initrd)]
        if spec.kernel_cmdline is not None:
            args += ["-append", spec.kernel_cmdline]
    for index, disk in enumerate((spec.boot_disk, *spec.disks)):
        args += ["-blockdev", json.dumps(blockdev(disk)),
                 "-device", f"virtio-blk-pci,drive={node_name(disk.serial)},id={device_id(disk.serial)},"
                            f"serial={disk.serial}" + (",bootindex=1" if index == 0 else "")]
    if spec.seed_iso is not None:
        seed = {"driver": "file", "filename": str(spec.seed_iso), "node-name": "seed",
                "read-only": True}
        args += ["-blockdev", json.dumps(seed), "-device", "ide-cd,drive=seed,bus=ide.1"]
    args += ["-device", "virtio-scsi-pci,id=scsi0",
             "-device", "virtio-rng-pci",  # host entropy: guests need it for SSH host keys
             "-netdev", f"tap,id=net0,fd={TAP_FD}" if spec.tap_fd is not None
             else f"user,id=net0,{_user_network(spec, ssh_port)}",
             "-device", f"virtio-net-pci,netdev=net0,mac={spec.mac_address}"]
    return args


def blockdev(disk: DiskAttachment) -> dict[str, object]:
    """The -blockdev / QMP blockdev-add description of a disk file."""
    return {"driver": disk.format, "node-name": node_name(disk.serial), "read-only": disk.read_only,
            "file": {"driver": "file", "filename": str(disk.path)}}


def _user_network(spec: MachineSpec, ssh_port: int) -> str:
    if spec.private_address is None:
        return f"hostfwd=tcp:127.0.0.1:{ssh_port}-:{GUEST_SSH_PORT}"
    address = spec.private_address
    gateway = spec.gateway or ipaddress.IPv4Address(int(address.network.network_address) + 2)
    return (f"net={address.network},host={gateway},dhcpstart={address.ip},"
            f"hostfwd=tcp:127.0.0.1:{ssh_port}-{address.ip}:{GUEST_SSH_PORT}")


def _escape(value: str) -> str:
    """QEMU option values double their commas."""
    return value.replace(",", ",,")
