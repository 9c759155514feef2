"""Building the Debian bookworm guest: a real distribution with real cloud-init.

The minimal guest only imitates NoCloud; this image proves the seed works with the
software customers' images run. It is built with debootstrap (root and the Debian
mirror needed, about 1.5 minutes), turned into an ext4 filesystem without mounting
anything, and booted directly from its kernel and initrd with root=/dev/vda.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from . import commands
from .errors import ImageBuildError
from .imagefiles import DISK_FILE, INITRD_FILE, KERNEL_FILE, ImageFiles

MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"
# python3-cffi-backend: without it cloud-init's dependencies fail to import.
PACKAGES = ("systemd-sysv", "udev", "dbus", "linux-image-cloud-amd64", "initramfs-tools",
            "openssh-server", "cloud-init", "python3-cffi-backend", "ifupdown",
            "isc-dhcp-client", "iproute2", "sudo", "netbase", "e2fsprogs")
KERNEL_CMDLINE = "root=/dev/vda rw console=ttyS0"
FILESYSTEM_SIZE = "2G"  # grown to the disk's size by cloud-init's resize_rootfs on first boot
_CLOUD_CFG = """\
# evroc: seeds come from a NoCloud filesystem labelled cidata, or, on a host that gives no
# seed (--cloud-init-source metadata), from the metadata service at 169.254.169.254 as
# OpenStack's (ds-identify picks it when the firmware says "OpenStack Nova").
datasource_list: [ NoCloud, OpenStack, None ]
locale: C.UTF-8
# Under TCG, RSA-3072 and DSA host keys cost 2-6 s before sshd can start; these two ~0.3 s.
ssh_genkeytypes: [ ed25519, ecdsa ]
ssh_quiet_keygen: true
# sudo looks the hostname up; without it in /etc/hosts every call waits ~3 s for DNS.
manage_etc_hosts: localhost
"""
# What cloud-init writes for `ssh_pwauth: false`; baked in, so it does not restart sshd
# (refusing logins for a second) right after the guest came up.
_SSHD_DROPIN = "PasswordAuthentication no\n"
_FSTAB = "/dev/vda / ext4 defaults,errors=remount-ro 0 1\n"
# debootstrap copies the build machine's resolver, which guests cannot reach: every lookup
# then waits out its timeouts (cloud-init's OpenStack datasource makes three before it asks
# 169.254.169.254: 30 s).  With no nameserver, a lookup fails at once.
_RESOLV_CONF = "# No resolver: evroc-compute's project networks have no DNS server.\n"
_DEBOOTSTRAP_TIMEOUT = 1800.0
_TIMEOUT = 600.0


async def build(into: Path, mirror: str = MIRROR) -> ImageFiles:
    """Write disk.qcow2, vmlinuz and initrd.img of a fresh Debian guest into `into`."""
    if os.geteuid() != 0:
        raise ImageBuildError("building the Debian image needs root (debootstrap creates "
                              "root-owned files and device nodes); run the build as root")
    debootstrap = commands.require_tool("debootstrap", "debootstrap")
    mkfs = commands.require_tool("mkfs.ext4", "e2fsprogs")
    qemu_img = commands.require_tool("qemu-img", "qemu-utils")
    with tempfile.TemporaryDirectory(prefix="evroc-debian-", dir=into.parent) as scratch:
        rootfs = Path(scratch) / "rootfs"
        await commands.run([debootstrap, "--variant=minbase", f"--include={','.join(PACKAGES)}",
                            SUITE, rootfs, mirror], timeout=_DEBOOTSTRAP_TIMEOUT, error=ImageBuildError)
        _configure(rootfs)
        shutil.copyfile(_single(rootfs / "boot", "vmlinuz-*"), into / KERNEL_FILE)
        shutil.copyfile(_single(rootfs / "boot", "initrd.img-*"), into / INITRD_FILE)
        filesystem = Path(scratch) / "rootfs.ext4"
        await commands.run(["truncate", "-s", FILESYSTEM_SIZE, filesystem], timeout=_TIMEOUT,
                           error=ImageBuildError)
        await commands.run([mkfs, "-q", "-L", "rootfs", "-d", rootfs, filesystem], timeout=_TIMEOUT,
                           error=ImageBuildError)
        await commands.run([qemu_img, "convert", "-q", "-c", "-f", "raw", "-O", "qcow2", filesystem,
                            into / DISK_FILE], timeout=_TIMEOUT, error=ImageBuildError)
    return ImageFiles(kernel=KERNEL_FILE, initrd=INITRD_FILE, kernel_cmdline=KERNEL_CMDLINE,
                      source=f"debootstrap {SUITE} from {mirror}")


def _configure(rootfs: Path) -> None:
    """Make the tree a cloud image: NoCloud or OpenStack, no identity baked in, no caches."""
    (rootfs / "etc/cloud/cloud.cfg.d/90-evroc.cfg").write_text(_CLOUD_CFG)
    (rootfs / "etc/fstab").write_text(_FSTAB)
    (rootfs / "etc/resolv.conf").unlink(missing_ok=True)  # it may be a link out of the tree
    (rootfs / "etc/resolv.conf").write_text(_RESOLV_CONF)
    dropin = rootfs / "etc/ssh/sshd_config.d/50-cloud-init.conf"
    dropin.parent.mkdir(parents=True, exist_ok=True)
    dropin.write_text(_SSHD_DROPIN)
    dropin.chmod(0o600)
    # A 17 s shell job on the only vCPU, just as sshd starts: no use on a fresh disk.
    (rootfs / "etc/systemd/system/multi-user.target.wants/e2scrub_reap.service").unlink(
        missing_ok=True)
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()  # every VM must get its own host keys (cloud-init makes them)
    (rootfs / "etc/machine-id").write_text("")  # systemd makes one per VM on first boot
    (rootfs / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for item in (rootfs / cache).glob("*"):
            if item.is_file():
                item.unlink()


def _single(directory: Path, pattern: str) -> Path:
    """The one file matching `pattern`: kernel versions drift, so they are globbed."""
    matches = sorted(p for p in directory.glob(pattern) if p.is_file())
    if len(matches) != 1:
        raise ImageBuildError(f"expected one {pattern} in {directory}, found "
                              f"{[p.name for p in matches]}")
    return matches[0]
