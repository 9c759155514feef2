"""The image store: importing sources (file, http, compressed, checksummed) and caching."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import lzma
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from evroc_compute.hosts.drivers.qemu import images
from evroc_compute.hosts.drivers.qemu.errors import ImageNotFoundError, ImagePullError

from .conftest import requires_qemu

pytestmark = [pytest.mark.slow, requires_qemu]

MIB = 1 << 20


@pytest.fixture
def raw_image(tmp_path: Path) -> Path:
    path = tmp_path / "src" / "disk.raw"
    path.parent.mkdir()
    path.write_bytes(b"evroc" * 1000 + bytes(MIB - 5000))
    return path


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


def _guest_bytes(disk: Path) -> bytes:
    raw = disk.with_suffix(".check.raw")
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(disk), str(raw)], check=True)
    try:
        return raw.read_bytes()
    finally:
        raw.unlink()


async def test_raw_file_imports_as_qcow2_with_the_same_contents(tmp_path: Path, raw_image: Path) -> None:
    store = images.ImageStore(tmp_path / "store")
    disk = await images.import_image(store, "plain", str(raw_image))
    assert disk == store.base_image("plain")
    assert disk.read_bytes()[:4] == b"QFI\xfb"
    assert _guest_bytes(disk) == raw_image.read_bytes()
    assert store.names() == ["plain"]


async def test_compressed_sources_are_recognised_by_content(tmp_path: Path, raw_image: Path) -> None:
    store = images.ImageStore(tmp_path / "store")
    qcow2 = tmp_path / "src" / "disk.qcow2"
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(raw_image), str(qcow2)], check=True)
    gz = tmp_path / "src" / "disk.qcow2.gz"
    gz.write_bytes(gzip.compress(qcow2.read_bytes()))
    xz = tmp_path / "src" / "disk.img.xz"
    xz.write_bytes(lzma.compress(raw_image.read_bytes()))
    for name, source in (("from-gz", gz), ("from-xz", xz)):
        disk = await images.import_image(store, name, str(source))
        assert _guest_bytes(disk) == raw_image.read_bytes(), name


async def test_http_source_with_matching_checksum(tmp_path: Path, raw_image: Path,
                                                  http_root: tuple[str, Path]) -> None:
    url, root = http_root
    (root / "disk.raw.gz").write_bytes(gzip.compress(raw_image.read_bytes()))
    digest = hashlib.sha256((root / "disk.raw.gz").read_bytes()).hexdigest()
    store = images.ImageStore(tmp_path / "store")
    disk = await images.import_image(store, "web", f"{url}/disk.raw.gz", sha256=digest.upper())
    assert _guest_bytes(disk) == raw_image.read_bytes()
    assert store.get("web").sha256 == digest


async def test_an_imported_image_is_not_fetched_again(tmp_path: Path, raw_image: Path) -> None:
    store = images.ImageStore(tmp_path / "store")
    first = await images.import_image(store, "once", str(raw_image))
    raw_image.unlink()  # a second fetch would now fail
    assert await images.import_image(store, "once", str(raw_image)) == first


@pytest.mark.parametrize(("source", "message"), [
    pytest.param("{url}/missing.qcow2", "HTTP 404", id="http-404"),
    pytest.param("http://127.0.0.1:1/x.qcow2", "cannot fetch", id="connection-refused"),
    pytest.param("{tmp}/missing.qcow2", "No such file", id="missing-file"),
    pytest.param("ftp://example.invalid/x.qcow2", "only local paths and http", id="unsupported-scheme"),
])
async def test_unfetchable_sources_raise_image_pull_error(
        tmp_path: Path, http_root: tuple[str, Path], source: str, message: str) -> None:
    store = images.ImageStore(tmp_path / "store")
    with pytest.raises(ImagePullError, match=message):
        await images.import_image(store, "bad", source.format(url=http_root[0], tmp=tmp_path))
    assert store.names() == []
    assert [p.name for p in store.root.iterdir() if not p.name.endswith(".lock")] == []


async def test_checksum_mismatch_is_refused(tmp_path: Path, raw_image: Path) -> None:
    store = images.ImageStore(tmp_path / "store")
    with pytest.raises(ImagePullError, match="checksum mismatch"):
        await images.import_image(store, "bad", str(raw_image), sha256="0" * 64)
    with pytest.raises(ImageNotFoundError, match="build or import it first"):
        store.get("bad")


async def test_images_with_a_backing_file_are_refused(tmp_path: Path, raw_image: Path) -> None:
    overlay = tmp_path / "src" / "overlay.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(raw_image), "-F", "raw",
                    str(overlay)], check=True)
    with pytest.raises(ImagePullError, match="has a backing file"):
        await images.import_image(images.ImageStore(tmp_path / "store"), "bad", str(overlay))


async def test_non_disk_files_are_refused(tmp_path: Path) -> None:
    iso = tmp_path / "x.vmdk"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", str(iso), "1M"], check=True)
    with pytest.raises(ImagePullError, match="is a vmdk image"):
        await images.import_image(images.ImageStore(tmp_path / "store"), "bad", str(iso))


def test_minimal_image_is_cached_and_boots_directly(minimal_image: images.StoredImage) -> None:
    assert minimal_image.kernel is not None and minimal_image.kernel.is_file()
    assert minimal_image.initrd is not None and minimal_image.initrd.stat().st_size < 16 * MIB
    assert minimal_image.kernel_cmdline == "console=ttyS0"
    assert minimal_image.disk.is_file()


async def test_building_the_minimal_image_again_is_instant(store: images.ImageStore,
                                                           minimal_image: images.StoredImage) -> None:
    started = time.monotonic()
    assert await images.build_minimal(store) == minimal_image.disk
    assert time.monotonic() - started < 1.0
