"""What a built or imported image consists of: the contract between builders and the store.

A builder writes files into a directory and describes them with `ImageFiles`; the store
adds the manifest and publishes the directory. Images without a kernel boot their disk
through the firmware; images with one are booted directly (-kernel/-initrd), which is how
the minimal and Debian guests skip a bootloader.
"""

from __future__ import annotations

from dataclasses import dataclass

DISK_FILE = "disk.qcow2"
KERNEL_FILE = "vmlinuz"
INITRD_FILE = "initrd.img"


@dataclass(frozen=True)
class ImageFiles:
    """File names (relative to the image directory) and how to boot them."""

    disk: str = DISK_FILE  # the base image every VM disk is an overlay of
    kernel: str | None = None  # for direct kernel boot
    initrd: str | None = None
    kernel_cmdline: str | None = None
    source: str = ""  # where it came from, for humans
    sha256: str | None = None  # of an imported source as fetched (before decompression)
