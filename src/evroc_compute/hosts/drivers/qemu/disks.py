"""VM disks as qcow2 files: an overlay on a base image, or blank.

A Disk object in the API outlives VMs and is created from a DiskImage, so each disk is a
copy-on-write overlay of the (shared, read-only) base image: creation is instant whatever
the image size. Creation is idempotent because a reconciler may retry it after a crash.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from . import commands
from .errors import DiskError

_QEMU_IMG_TIMEOUT = 120.0


@dataclass(frozen=True)
class DiskInfo:
    """What qemu-img reports about a disk file."""

    format: str  # "qcow2", "raw", ...
    virtual_size: int  # bytes the guest sees
    backing_file: Path | None  # the base image of an overlay


async def disk_info(path: Path) -> DiskInfo:
    """Read the format, size and backing file of a disk image."""
    qemu_img = commands.require_tool("qemu-img", "qemu-utils")
    output = await commands.run([qemu_img, "info", "--output=json", "-U", path],
                                timeout=_QEMU_IMG_TIMEOUT, error=DiskError)
    info = json.loads(output)
    backing = info.get("full-backing-filename") or info.get("backing-filename")
    return DiskInfo(format=str(info["format"]), virtual_size=int(info["virtual-size"]),
                    backing_file=Path(backing) if backing else None)


async def create_disk(base_image: Path | None, path: Path, size_bytes: int) -> DiskInfo:
    """Make `path` a qcow2 disk of `size_bytes` over `base_image` (or blank); idempotent.

    An existing disk with the same base is kept and grown if it is smaller than asked for;
    a disk is never shrunk and never silently re-based, since either would lose data.
    """
    if size_bytes <= 0:
        raise DiskError(f"disk size must be positive, got {size_bytes} bytes")
    base = base_image.resolve() if base_image is not None else None
    if base is not None and not base.is_file():
        raise DiskError(f"base image {base} does not exist")
    if path.exists():
        return await _reconcile_existing(path, base, size_bytes)
    qemu_img = commands.require_tool("qemu-img", "qemu-utils")
    argv: list[str | Path] = [qemu_img, "create", "-q", "-f", "qcow2"]
    if base is not None:
        base_info = await disk_info(base)
        if size_bytes < base_info.virtual_size:
            raise DiskError(f"disk size {size_bytes} bytes is smaller than its image {base} "
                            f"({base_info.virtual_size} bytes)")
        argv += ["-b", base, "-F", base_info.format]
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    await commands.run([*argv, partial, str(size_bytes)], timeout=_QEMU_IMG_TIMEOUT, error=DiskError)
    os.replace(partial, path)
    return await disk_info(path)


async def _reconcile_existing(path: Path, base: Path | None, size_bytes: int) -> DiskInfo:
    info = await disk_info(path)
    current_base = info.backing_file.resolve() if info.backing_file is not None else None
    if current_base != base:
        raise DiskError(f"{path} already exists with base image {current_base}, not {base}; "
                        "delete it first to re-create it")
    if info.virtual_size > size_bytes:
        raise DiskError(f"{path} is already {info.virtual_size} bytes; shrinking it to "
                        f"{size_bytes} bytes would lose data")
    if info.virtual_size < size_bytes:
        await resize_disk(path, size_bytes)
        info = await disk_info(path)
    return info


async def resize_disk(path: Path, size_bytes: int) -> None:
    """Grow a disk to `size_bytes` (the guest sees the new size on its next boot or rescan)."""
    qemu_img = commands.require_tool("qemu-img", "qemu-utils")
    await commands.run([qemu_img, "resize", "-q", "-f", "qcow2", path, str(size_bytes)],
                       timeout=_QEMU_IMG_TIMEOUT, error=DiskError)


def delete_disk(path: Path) -> bool:
    """Delete a disk file; True if it existed. Idempotent, like the API's delete."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise DiskError(f"cannot delete disk {path}: {exc}") from exc
    return True
