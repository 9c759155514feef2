"""The image store: a directory of base images, one sub-directory per DiskImage name.

Building or importing an image is slow, so every image is made once and published
atomically (built in a staging directory, then renamed): a crash never leaves a
half-built image that later looks complete, and a second request is instant. A file lock
makes concurrent builders (two agents, two tests) wait for each other instead of racing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from . import debian, imports, minimal
from .errors import ImageNotFoundError
from .imagefiles import ImageFiles

DEFAULT_ROOT = Path("~/.cache/evroc-compute/images")
# The names end in a build version: bump it when the builder changes, so caches rebuild.
MINIMAL_IMAGE = "evroc-minimal.3"  # busybox + dropbear, SSH in ~5 s under TCG
DEBIAN_IMAGE = "debian.12.3"  # Debian bookworm with real cloud-init
_MANIFEST = "image.json"

Builder = Callable[[Path], Awaitable[ImageFiles]]


@dataclass(frozen=True)
class StoredImage:
    """A published image: absolute paths of its files and how to boot it."""

    name: str
    disk: Path  # the base every VM disk is an overlay of
    kernel: Path | None  # set for direct kernel boot
    initrd: Path | None
    kernel_cmdline: str | None
    source: str
    sha256: str | None


class ImageStore:
    """Base images under `root` (default ~/.cache/evroc-compute/images)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = (root if root is not None else DEFAULT_ROOT).expanduser().resolve()

    def get(self, name: str) -> StoredImage:
        """The published image called `name`, or ImageNotFoundError."""
        directory = self._directory(name)
        try:
            manifest = json.loads((directory / _MANIFEST).read_text())
        except FileNotFoundError:
            raise ImageNotFoundError(f"no image {name!r} in {self.root}; build or import it "
                                     "first") from None
        files = ImageFiles(**manifest)
        return StoredImage(
            name=name, disk=directory / files.disk,
            kernel=directory / files.kernel if files.kernel else None,
            initrd=directory / files.initrd if files.initrd else None,
            kernel_cmdline=files.kernel_cmdline, source=files.source, sha256=files.sha256)

    def base_image(self, name: str) -> Path:
        """The base disk of the image that DiskImage `name` maps to."""
        return self.get(name).disk

    def names(self) -> list[str]:
        """The names of all published images."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / _MANIFEST).is_file())

    def delete(self, name: str) -> bool:
        """Remove an image (disks made from it break: their base is gone); True if it existed."""
        directory = self._directory(name)
        existed = directory.exists()
        shutil.rmtree(directory, ignore_errors=True)
        return existed

    async def ensure(self, name: str, builder: Builder,
                     is_current: Callable[[StoredImage], bool] = lambda image: True) -> StoredImage:
        """The image `name`, built with `builder` unless a current one is published already."""
        self.root.mkdir(parents=True, exist_ok=True)
        lock = await asyncio.to_thread(_lock, self.root / f".{name}.lock")
        try:
            try:
                image = self.get(name)
                if is_current(image):
                    return image
            except ImageNotFoundError:
                pass
            staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=self.root))
            try:
                files = await builder(staging)
                (staging / _MANIFEST).write_text(json.dumps(dataclasses.asdict(files), indent=2))
                staging.chmod(0o755)  # mkdtemp's 0700 would hide it from a QEMU run as another user
                self.delete(name)
                os.rename(staging, self._directory(name))
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            return self.get(name)
        finally:
            os.close(lock)

    def _directory(self, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise ImageNotFoundError(f"invalid image name {name!r}: a DiskImage name, "
                                     "without slashes or a leading dot")
        return self.root / name


def _lock(path: Path) -> int:
    """An exclusive lock held until the returned descriptor is closed."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(descriptor, fcntl.LOCK_EX)
    return descriptor


async def build_minimal(store: ImageStore) -> Path:
    """The base disk of the minimal guest, built on first use (about a second)."""
    return (await store.ensure(MINIMAL_IMAGE, minimal.build)).disk


async def build_debian(store: ImageStore) -> Path:
    """The base disk of the Debian bookworm guest, built on first use (minutes, needs root)."""
    return (await store.ensure(DEBIAN_IMAGE, debian.build)).disk


async def import_image(store: ImageStore, name: str, source: str, sha256: str | None = None,
                       progress: imports.Progress | None = None) -> Path:
    """The base disk of image `name`, imported from a file or http(s) URL on first use.

    A different `sha256` than the one recorded at import re-imports the image. `progress`
    is called with (bytes fetched, total or None) while the source is fetched.
    """
    expected = sha256.lower() if sha256 else None
    image = await store.ensure(
        name, lambda into: imports.fetch(source, into, expected, progress),
        is_current=lambda image: expected is None or image.sha256 == expected)
    return image.disk
