"""Fetching Debian packages without installing them: the raw material of guest images.

Images are built from the host's own Debian archive (apt-get download + dpkg-deb -x), so
no root, no chroot and no third-party download is needed for the minimal guest.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from . import commands
from .errors import ImageBuildError

_APT_TIMEOUT = 600.0
_DEPENDS = re.compile(r"^\s*Depends:\s*(linux-image-\S+)\s*$", re.MULTILINE)


async def kernel_package(flavour: str = "cloud-amd64") -> str:
    """The versioned kernel package the `linux-image-<flavour>` meta-package points at.

    Versions drift with every point release, so they are looked up, never hard-coded.
    """
    apt_cache = commands.require_tool("apt-cache", "apt")
    output = await commands.run([apt_cache, "depends", f"linux-image-{flavour}"],
                                timeout=_APT_TIMEOUT, error=ImageBuildError)
    match = _DEPENDS.search(output)
    if match is None:
        raise ImageBuildError(f"linux-image-{flavour} depends on no kernel package; "
                              f"is the Debian archive in apt's sources? ({output.strip()[:300]})")
    return match.group(1)


async def download(packages: Sequence[str], into: Path) -> list[Path]:
    """Download the .deb files of `packages` (not their dependencies) into `into`."""
    apt_get = commands.require_tool("apt-get", "apt")
    into.mkdir(parents=True, exist_ok=True)
    await commands.run([apt_get, "download", "-q", *packages], cwd=into,
                       timeout=_APT_TIMEOUT, error=ImageBuildError)
    debs = sorted(into.glob("*.deb"))
    if len(debs) < len(packages):
        raise ImageBuildError(f"apt-get download fetched {len(debs)} files for {len(packages)} "
                              f"packages ({', '.join(packages)})")
    return debs


async def extract(debs: Sequence[Path], root: Path) -> None:
    """Unpack the files of each package under `root` (maintainer scripts are not run)."""
    dpkg_deb = commands.require_tool("dpkg-deb", "dpkg")
    root.mkdir(parents=True, exist_ok=True)
    for deb in debs:
        await commands.run([dpkg_deb, "-x", deb, root], timeout=_APT_TIMEOUT, error=ImageBuildError)
