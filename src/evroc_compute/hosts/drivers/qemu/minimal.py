"""Building the minimal guest: a Debian cloud kernel and a busybox + dropbear initramfs.

Everything comes from the host's Debian archive and is assembled without root; the guest
reaches SSH in about five seconds under TCG (see minimal_guest for what it does).
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from . import commands, cpio, debs, minimal_guest
from .errors import ImageBuildError
from .imagefiles import DISK_FILE, INITRD_FILE, KERNEL_FILE, ImageFiles

# Packages unpacked into the initramfs, besides the kernel (for its modules).
PACKAGES = ("busybox-static", "dropbear-bin", "libtomcrypt1", "libtommath1", "libc6", "zlib1g",
            "libcrypt1", "libgmp10")
_BINARIES = ("usr/sbin/dropbear",)  # dynamically linked: their libraries are copied too
_LIB_DIRS = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu")
_LOADER = "lib64/ld-linux-x86-64.so.2"
_DISK_SIZE = 64 << 20  # the boot disk is not used by the guest, only attached as /dev/vda
_LDD_LINE = re.compile(r"^\s*(\S+)\s+=>\s+(\S+)")
_TIMEOUT = 300.0


async def build(into: Path) -> ImageFiles:
    """Write vmlinuz, initrd.img and a blank disk.qcow2 into `into`."""
    with tempfile.TemporaryDirectory(prefix="evroc-minimal-") as scratch:
        work = Path(scratch)
        kernel_package = await debs.kernel_package()
        version = kernel_package.removeprefix("linux-image-")
        packages = await debs.download([kernel_package, *PACKAGES], work / "debs")
        root = work / "root"
        await debs.extract(packages, root)
        modules = await _module_files(root, version, minimal_guest.MODULES)
        libraries = await _libraries(root, _BINARIES)
        entries = [
            *minimal_guest.entries(),
            cpio.file("bin/busybox", (root / "bin/busybox").read_bytes(), 0o755),
            *(cpio.file(name, (root / name).read_bytes(), 0o755) for name in _BINARIES),
            cpio.directory("lib/x86_64-linux-gnu"), cpio.directory("lib64"),
            *(cpio.file(f"lib/x86_64-linux-gnu/{soname}", path.read_bytes(), 0o755)
              for soname, path in libraries.items()),
            cpio.file(_LOADER, _inside(root, root / _LOADER).read_bytes(), 0o755),
            *(cpio.file(f"{minimal_guest.MODULE_DIR}/{path.name}", path.read_bytes())
              for path in modules),
            cpio.file(minimal_guest.MODULE_ORDER, "".join(f"{p.name}\n" for p in modules).encode()),
        ]
        (into / INITRD_FILE).write_bytes(gzip.compress(cpio.archive(entries), compresslevel=6))
        shutil.copyfile(root / "boot" / f"vmlinuz-{version}", into / KERNEL_FILE)
    qemu_img = commands.require_tool("qemu-img", "qemu-utils")
    await commands.run([qemu_img, "create", "-q", "-f", "qcow2", into / DISK_FILE, str(_DISK_SIZE)],
                       timeout=_TIMEOUT, error=ImageBuildError)
    return ImageFiles(kernel=KERNEL_FILE, initrd=INITRD_FILE,
                      kernel_cmdline=minimal_guest.KERNEL_CMDLINE,
                      source=f"minimal guest: {kernel_package}, {', '.join(PACKAGES)}")


async def _module_files(root: Path, version: str, modules: Sequence[str]) -> list[Path]:
    """The .ko files of `modules` and their dependencies, each after what it needs."""
    depmod = commands.require_tool("depmod", "kmod")
    modprobe = commands.require_tool("modprobe", "kmod")
    await commands.run([depmod, "-b", root, version], timeout=_TIMEOUT, error=ImageBuildError)
    ordered: dict[Path, None] = {}
    for module in modules:
        output = await commands.run([modprobe, "-d", root, "-S", version, "--show-depends", module],
                                    timeout=_TIMEOUT, error=ImageBuildError)
        for line in output.splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] == "insmod":
                ordered.setdefault(Path(words[1]), None)
            elif words and words[0] == "builtin":
                continue
            else:
                raise ImageBuildError(f"unexpected modprobe output for {module}: {line!r}")
    return list(ordered)


async def _libraries(root: Path, binaries: Sequence[str]) -> dict[str, Path]:
    """soname -> file under `root` for every shared library the binaries load."""
    ldd = commands.require_tool("ldd", "libc-bin")
    env = {**os.environ, "LD_LIBRARY_PATH": ":".join(str(root / d) for d in _LIB_DIRS)}
    found: dict[str, Path] = {}
    for binary in binaries:
        output = await commands.run([ldd, root / binary], timeout=_TIMEOUT, env=env,
                                    error=ImageBuildError)
        for line in output.splitlines():
            match = _LDD_LINE.match(line)
            if match is not None:
                found[match.group(1)] = _inside(root, Path(match.group(2)))
    return found


def _inside(root: Path, path: Path) -> Path:
    """`path` with symlinks resolved inside `root` (absolute links point into the image)."""
    current = path
    for _ in range(40):
        if not current.is_symlink():
            break
        target = Path(os.readlink(current))
        current = root / target.relative_to("/") if target.is_absolute() else current.parent / target
    if not current.resolve().is_relative_to(root.resolve()) or not current.is_file():
        raise ImageBuildError(f"{path} resolves to {current}, which is not a file of the image; "
                              "a library the guest needs is missing from PACKAGES")
    return current
