"""Importing a DiskImage's source: a local file or http(s) URL, qcow2 or raw, maybe gz/xz.

The source is fetched (its SHA-256 computed on the way and recorded in the image), checked
against the expected SHA-256 when one is given, decompressed and converted to a standalone
qcow2. Images with a backing file are refused: an untrusted
qcow2 could otherwise make qemu-img read any file on the host.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import http.client
import io
import json
import lzma
import os
import shutil
import stat
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
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

# Called with (bytes fetched so far, total bytes or None when the source does not say).
Progress = Callable[[int, int | None], None]


async def fetch(source: str, into: Path, sha256: str | None = None,
                progress: Progress | None = None) -> ImageFiles:
    """Write the image at `source` into `into` as disk.qcow2.

    `progress`, if given, is called (from a worker thread) once before the first byte and
    after every chunk copied from the source; the last call reports the whole size.
    """
    download = into / "source"
    actual = await asyncio.to_thread(_copy_source, source, download, progress)
    if sha256 is not None and actual != sha256.lower():
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
    return ImageFiles(source=source, sha256=actual)


def _copy_source(source: str, destination: Path, progress: Progress | None) -> str:
    """Copy `source` to `destination`; the SHA-256 of the bytes copied."""
    scheme = urllib.parse.urlsplit(source).scheme
    if scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(source, timeout=_HTTP_TIMEOUT) as response:
                total = _content_length(response.headers.get("Content-Length"))
                digest, done = _copy_hashed(response, destination, total, progress)
        except urllib.error.HTTPError as exc:
            raise ImagePullError(f"cannot fetch {source}: HTTP {exc.code} {exc.reason}") from exc
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
            raise ImagePullError(f"cannot fetch {source}: {reason}") from exc
        if total is not None and done != total:
            raise ImagePullError(f"cannot fetch {source}: the connection closed after {done} of "
                                 f"{total} bytes")
        return digest
    path = Path(urllib.parse.urlsplit(source).path if scheme == "file" else source)
    if scheme not in ("", "file"):
        raise ImagePullError(f"cannot fetch {source}: only local paths and http(s) URLs are "
                             "supported")
    try:
        with path.open("rb") as stream:
            status = os.fstat(stream.fileno())
            total = status.st_size if stat.S_ISREG(status.st_mode) else None  # a pipe's is 0
            return _copy_hashed(stream, destination, total, progress)[0]
    except OSError as exc:
        raise ImagePullError(f"cannot read {source}: {exc.strerror or exc}") from exc


def _content_length(header: str | None) -> int | None:
    try:
        return int(header) if header is not None else None
    except ValueError:
        return None


def _copy_hashed(stream: io.BufferedIOBase, destination: Path, total: int | None,
                 progress: Progress | None) -> tuple[str, int]:
    """Copy `stream` to `destination`, reporting progress; the SHA-256 and size copied."""
    digest = hashlib.sha256()
    done = 0
    if progress is not None:
        progress(done, total)
    with destination.open("wb") as out:
        while chunk := stream.read(_CHUNK):
            out.write(chunk)
            digest.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    return digest.hexdigest(), done


def _copy(stream: io.BufferedIOBase, destination: Path) -> None:
    with destination.open("wb") as out:
        shutil.copyfileobj(stream, out, _CHUNK)


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
