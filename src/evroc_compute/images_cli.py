"""`evroc-compute images`: the operator's commands for a QEMU host's image store.

    evroc-compute images build [minimal|debian|all]
    evroc-compute images import NAME FILE|URL [--sha256 HEX]
    evroc-compute images list
    evroc-compute images delete NAME

Each takes `--image-dir DIR` (default: $EVROC_IMAGE_STORE, else ~/.cache/evroc-compute/images).
Status and progress go to stderr, the `list` table to stdout. A failure prints one line,
`evroc-compute: <what went wrong>`, and exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import threading
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from evroc_compute.hosts.drivers.qemu import disks, images
from evroc_compute.hosts.drivers.qemu.errors import ImageNotFoundError, ImagePullError, QemuDriverError

IMAGE_STORE_ENV = "EVROC_IMAGE_STORE"
PROGRAM = "evroc-compute"
_PROGRESS_INTERVAL = 0.5  # seconds between progress lines: at most two a second
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_SHORT_SHA256 = 12
_SOURCE_WIDTH = 80  # `list` elides longer sources (the built images' list their packages)


def default_image_dir() -> Path:
    """The image store's directory: $EVROC_IMAGE_STORE, else ~/.cache/evroc-compute/images."""
    root = os.environ.get(IMAGE_STORE_ENV)
    return Path(root).expanduser() if root else images.DEFAULT_ROOT.expanduser()


# The images `build` knows: target name -> (image name, builder, how long it takes).
_BUILDS: dict[str, tuple[str, Callable[[images.ImageStore], Awaitable[Path]], str]] = {
    "minimal": (images.MINIMAL_IMAGE, images.build_minimal, "about a second"),
    "debian": (images.DEBIAN_IMAGE, images.build_debian,
               "a few minutes; needs root, debootstrap and the Debian mirror"),
}


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `images` and its sub-commands to the CLI's sub-commands."""
    store_options = argparse.ArgumentParser(add_help=False)
    store_options.add_argument(
        "--image-dir", type=Path, default=None, metavar="DIR",
        help=f"the image store (default: ${IMAGE_STORE_ENV}, else {images.DEFAULT_ROOT})")
    parser = commands.add_parser(
        "images", help="build, import, list and delete the base images of QEMU hosts",
        description="Manage the image store a QEMU host makes VM disks from: one base image "
                    "per DiskImage name.")
    actions = parser.add_subparsers(dest="images_command", required=True, metavar="COMMAND")

    build = actions.add_parser(
        "build", parents=[store_options], help="build the built-in guest images",
        description=f"Build {images.MINIMAL_IMAGE} (busybox, about a second), {images.DEBIAN_IMAGE} "
                    "(Debian bookworm with cloud-init: minutes, needs root and debootstrap) or "
                    "both. An image that is already built is kept.")
    build.add_argument("target", nargs="?", choices=(*_BUILDS, "all"), default="all",
                       help="which image to build (default: all)")

    pull = actions.add_parser(
        "import", parents=[store_options], help="import an image from a file or http(s) URL",
        description="Import a qcow2 or raw image, optionally gzip- or xz-compressed, as a "
                    "standalone qcow2 base image. Its SHA-256 (of the source as fetched) is "
                    "printed and recorded. An image of that name is kept unless --sha256 "
                    "differs from the recorded one.")
    pull.add_argument("name", type=_image_name, metavar="NAME", help="the DiskImage name")
    pull.add_argument("source", metavar="FILE|URL", help="a local path, file:// or http(s):// URL")
    pull.add_argument("--sha256", type=_sha256, metavar="HEX",
                      help="refuse the source unless its SHA-256 is this")

    actions.add_parser("list", parents=[store_options], help="list the images in the store",
                       description="Print NAME, virtual disk SIZE, SOURCE and (shortened) SHA256 "
                                   "of every image in the store.")

    delete = actions.add_parser(
        "delete", parents=[store_options], help="delete an image",
        description="Delete an image from the store. VM disks made from it are overlays of it: "
                    "they cannot be opened any more.")
    delete.add_argument("name", type=_image_name, metavar="NAME")


def run(args: argparse.Namespace) -> int:
    """Carry out an `images` command; its exit code."""
    root = args.image_dir if args.image_dir is not None else default_image_dir()
    command = _COMMANDS[args.images_command]
    try:
        return asyncio.run(command(images.ImageStore(root), args))
    except QemuDriverError as problem:
        return _fail(str(problem))
    except OSError as problem:
        where = f"{problem.filename}: " if problem.filename else ""
        return _fail(f"{where}{problem.strerror or problem}")
    except KeyboardInterrupt:
        return _fail("interrupted", code=130)


async def _build(store: images.ImageStore, args: argparse.Namespace) -> int:
    targets = list(_BUILDS) if args.target == "all" else [args.target]
    for target in targets:
        name, builder, duration = _BUILDS[target]
        present = name in store.names()
        if not present:
            _say(f"building {name} in {store.root} ({duration})")
        started = time.monotonic()
        disk = await builder(store)
        if present:
            _say(f"{name} is already built: {disk}")
        else:
            _say(f"built {name} in {time.monotonic() - started:.1f} s: {disk}")
    return 0


async def _import(store: images.ImageStore, args: argparse.Namespace) -> int:
    name: str = args.name
    source = _absolute_source(args.source)
    expected: str | None = args.sha256.lower() if args.sha256 else None
    existing = _stored(store, name)
    if existing is not None:
        if expected is None or existing.sha256 == expected:
            if existing.source != source:
                return _fail(f"image {name!r} already exists in {store.root}, from "
                             f"{existing.source or 'unknown source'}; delete it first "
                             f"({PROGRAM} images delete {name}) to import {source}")
            _say(f"image {name} is already imported from {source} "
                 f"(sha256 {existing.sha256 or 'not recorded'})")
            return 0
        _say(f"replacing image {name} (sha256 {existing.sha256 or 'not recorded'}, "
             f"not {expected})")
    _say(f"importing {source} as image {name} into {store.root}")
    progress = _Progress()
    started = time.monotonic()
    try:
        disk = await images.import_image(store, name, source, expected, progress)
    except asyncio.CancelledError:
        progress.abort()  # stop the copying thread, which asyncio.run would wait for
        raise
    image = store.get(name)
    size = await _virtual_size(disk)
    fetched = f"fetched {_human(progress.done)}, " if progress.done is not None else ""
    verified = " (verified)" if expected is not None else ""
    _say(f"imported {name} in {time.monotonic() - started:.1f} s: {fetched}"
         f"virtual size {_human(size) if size is not None else '?'}, "
         f"sha256 {image.sha256 or 'not recorded'}{verified}")
    return 0


async def _list(store: images.ImageStore, args: argparse.Namespace) -> int:
    names = store.names()
    if not names:
        _say(f"no images in {store.root}")
        return 0
    rows = await asyncio.gather(*(_row(store, name) for name in names))
    table = [("NAME", "SIZE", "SOURCE", "SHA256"), *rows]
    widths = [max(len(row[column]) for row in table) for column in range(3)]
    for row in table:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[3]]))
    return 0


async def _row(store: images.ImageStore, name: str) -> tuple[str, str, str, str]:
    try:
        image = _stored(store, name)
    except QemuDriverError:
        return name, "?", "? (unreadable image.json)", "-"
    if image is None:  # deleted since names() listed it
        return name, "?", "-", "-"
    size = await _virtual_size(image.disk)
    return (name, _human(size) if size is not None else "?", _elide(image.source) or "-",
            image.sha256[:_SHORT_SHA256] if image.sha256 else "-")


async def _delete(store: images.ImageStore, args: argparse.Namespace) -> int:
    if not store.delete(args.name):
        return _fail(f"no image {args.name!r} in {store.root}")
    _say(f"deleted image {args.name} from {store.root}")
    return 0


_COMMANDS: dict[str, Callable[[images.ImageStore, argparse.Namespace], Coroutine[Any, Any, int]]] = {
    "build": _build, "import": _import, "list": _list, "delete": _delete,
}


class _Progress:
    """Prints how much of the source is fetched, at most every _PROGRESS_INTERVAL seconds.

    Called from the thread that copies; `abort` makes its next call stop the copy.
    """

    def __init__(self) -> None:
        self.done: int | None = None
        self._started = self._last = time.monotonic()
        self._aborted = threading.Event()

    def abort(self) -> None:
        self._aborted.set()

    def __call__(self, done: int, total: int | None) -> None:
        if self._aborted.is_set():
            raise ImagePullError("import interrupted")
        self.done = done
        now = time.monotonic()
        complete = total is not None and done >= total
        if not complete and now - self._last < _PROGRESS_INTERVAL:
            return
        self._last = now
        line = f"  fetched {_human(done)}"
        if total is not None:
            line += f" of {_human(total)} ({100 * done // total if total else 100}%)"
        elapsed = now - self._started
        if elapsed > 0:
            line += f", {_human(int(done / elapsed))}/s"
        _say(line)


def _stored(store: images.ImageStore, name: str) -> images.StoredImage | None:
    """The image `name`, None if there is none, QemuDriverError if it is unreadable."""
    try:
        return store.get(name)
    except ImageNotFoundError:
        return None
    except (ValueError, TypeError) as exc:  # image.json edited by hand, or from a newer version
        raise QemuDriverError(f"image {name!r} in {store.root} is damaged (unreadable image.json: "
                              f"{exc}); delete it ({PROGRAM} images delete {name})") from exc


async def _virtual_size(disk: Path) -> int | None:
    try:
        return (await disks.disk_info(disk)).virtual_size
    except QemuDriverError:
        return None


def _absolute_source(source: str) -> str:
    """`source` with a relative local path made absolute: it is recorded for humans."""
    if urllib.parse.urlsplit(source).scheme:
        return source
    return str(Path(source).expanduser().absolute())


def _elide(text: str) -> str:
    """`text` cut to _SOURCE_WIDTH characters in the middle, keeping both ends (a file name)."""
    if len(text) <= _SOURCE_WIDTH:
        return text
    head = (_SOURCE_WIDTH - 3) // 2
    return f"{text[:head]}...{text[len(text) - (_SOURCE_WIDTH - 3 - head):]}"


def _image_name(text: str) -> str:
    if not text or "/" in text or text.startswith("."):
        raise argparse.ArgumentTypeError(f"invalid image name {text!r}: a DiskImage name, without "
                                         "slashes or a leading dot")
    return text


def _sha256(text: str) -> str:
    if not _SHA256.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a SHA-256: 64 hexadecimal digits")
    return text.lower()


def _human(size: int) -> str:
    """A byte count in binary units: 512 B, 1.5 MiB, 20.0 GiB."""
    if size < 1024:
        return f"{size} B"
    value = size / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _fail(message: str, code: int = 1) -> int:
    _say(f"{PROGRAM}: {message}")
    return code
