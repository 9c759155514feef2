"""Importing a DiskImage's source: a local file or http(s) URL, qcow2 or raw, maybe gz/xz.

The source is fetched, checked against its SHA-256 when one is given, decompressed and
converted to a standalone qcow2. Images with a backing file are refused: an untrusted
qcow2 could otherwise make qemu-img read any file on the host.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import lzma
import shutil
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from . import commands
from .errors import ImagePullError
from .imagefiles import DISK_FILE, ImageFiles

_CHUNK = 1 << 20
_HTTP_TIMEOUT = 60.0  # seconds without progress before a download is abandoned
_CONVERT_TIMEOUT = 3600.0
_FORMATS = ("qcow2", "raw")
# Compression is recognised by content, not by name, so a mis-named file still imports.
_MAGIC = {b"\x1f\x8b": "gz", b"\xfd7zXZ\x00": "xz"}


async def fetch(source: str, into: Path, sha256: str | None = None) -> ImageFiles:
    """Write the image at `source` into `into` as disk.qcow2."""
    download = into / "source"
    await asyncio.to_thread(_copy_source, source, download)
    if sha256 is not None:
        actual = await asyncio.to_thread(_sha256, download)
        if actual != sha256.lower():
            raise ImagePullError(f"checksum mismatch for {source}: expected sha256 {sha256}, "
                                 f"got {actual}")
    plain = into / "source.img"
    compression = _compression(download)
    if compression is None:
        download.rename(plain)
    else:
        await asyncio.to_thread(_decompress, download, plain, compression, source)
        download.unlink()
    image_format = await _format(plain, source)
    qemu_img = commands.require_tool("qemu-img", "qemu-utils")
    await commands.run([qemu_img, "convert", "-q", "-f", image_format, "-O", "qcow2", plain,
                        into / DISK_FILE], timeout=_CONVERT_TIMEOUT, error=ImagePullError)
    plain.unlink()
    return ImageFiles(source=source, sha256=sha256.lower() if sha256 else None)


def _copy_source(source: str, destination: Path) -> None:
    scheme = urllib.parse.urlsplit(source).scheme
    if scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(source, timeout=_HTTP_TIMEOUT) as response:
                _copy(response, destination)
        except urllib.error.HTTPError as exc:
            raise ImagePullError(f"cannot fetch {source}: HTTP {exc.code} {exc.reason}") from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ImagePullError(f"cannot fetch {source}: {reason}") from exc
        return
    path = Path(urllib.parse.urlsplit(source).path if scheme == "file" else source)
    if scheme not in ("", "file"):
        raise ImagePullError(f"cannot fetch {source}: only local paths and http(s) URLs are "
                             "supported")
    try:
        with path.open("rb") as stream:
            _copy(stream, destination)
    except OSError as exc:
        raise ImagePullError(f"cannot read {source}: {exc.strerror or exc}") from exc


def _copy(stream: io.BufferedIOBase, destination: Path) -> None:
    with destination.open("wb") as out:
        shutil.copyfileobj(stream, out, _CHUNK)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _compression(path: Path) -> str | None:
    with path.open("rb") as stream:
        head = stream.read(8)
    return next((kind for magic, kind in _MAGIC.items() if head.startswith(magic)), None)


def _decompress(source_file: Path, destination: Path, compression: str, source: str) -> None:
    try:
        stream = gzip.open(source_file) if compression == "gz" else lzma.open(source_file)
        with stream:
            _copy(stream, destination)
    except (OSError, EOFError, lzma.LZMAError) as exc:
        raise ImagePullError(f"cannot decompress {source} ({compression}): {exc}") from exc


async def _format(path: Path, source: str) -> str:
    qemu_img = commands.require_tool("qemu-img", "qemu-utils")
    info = json.loads(await commands.run([qemu_img, "info", "--output=json", path],
                                         timeout=_CONVERT_TIMEOUT, error=ImagePullError))
    image_format = str(info.get("format"))
    if image_format not in _FORMATS:
        raise ImagePullError(f"{source} is a {image_format} image; only qcow2 and raw are supported")
    if info.get("backing-filename"):
        raise ImagePullError(f"{source} has a backing file ({info['backing-filename']}); "
                             "import a standalone image (qemu-img convert) instead")
    return image_format
