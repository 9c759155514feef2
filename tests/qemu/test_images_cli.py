"""`evroc-compute images`: the operator's build, import, list and delete commands."""

from __future__ import annotations

import argparse
import asyncio
import gzip
import hashlib
import http.server
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from evroc_compute import images_cli
from evroc_compute.hosts.drivers.qemu import images, imports

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None,
                                reason="qemu-img is not installed (apt-get install -y qemu-utils)")

MIB = 1 << 20


class Result:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code = code
        self.out = out
        self.err = err

    @property
    def error(self) -> str:
        """The one error line a failed command must print."""
        return self.err.strip().splitlines()[-1]


Cli = Callable[..., Result]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evroc-compute")
    images_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def cli(store_dir: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    """Runs `evroc-compute images ARGS --image-dir <tmp store>` as the CLI would."""
    def run(*argv: str) -> Result:
        args = _parser().parse_args(["images", *argv, "--image-dir", str(store_dir)])
        assert args.command == "images"
        code = images_cli.run(args)
        out, err = capsys.readouterr()
        assert "Traceback" not in err
        return Result(code, out, err)
    return run


def _qemu_img_create(path: Path, image_format: str, size: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", image_format, str(path), size], check=True)
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def raw_image(tmp_path: Path) -> Path:
    return _qemu_img_create(tmp_path / "src" / "disk.raw", "raw", "16M")


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


def _leftovers(store_dir: Path) -> list[str]:
    """What the store holds besides lock files: staging directories must not survive."""
    if not store_dir.exists():
        return []
    return sorted(p.name for p in store_dir.iterdir() if not p.name.endswith(".lock"))


def test_raw_and_compressed_qcow2_imports_are_listed(cli: Cli, tmp_path: Path, raw_image: Path) -> None:
    qcow2 = _qemu_img_create(tmp_path / "src" / "disk.qcow2", "qcow2", "32M")
    gz = tmp_path / "src" / "disk.qcow2.gz"
    gz.write_bytes(gzip.compress(qcow2.read_bytes()))

    plain = cli("import", "plain", str(raw_image))
    assert plain.code == 0, plain.err
    assert f"sha256 {_sha256(raw_image)}" in plain.err
    assert "virtual size 16.0 MiB" in plain.err
    packed = cli("import", "packed", str(gz))
    assert packed.code == 0, packed.err
    assert f"sha256 {_sha256(gz)}" in packed.err  # of the source as fetched, computed unasked

    listing = cli("list")
    assert listing.code == 0
    lines = listing.out.splitlines()
    assert lines[0].split() == ["NAME", "SIZE", "SOURCE", "SHA256"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert sorted(rows) == ["packed", "plain"]
    for name, size, source in (("packed", "32.0", gz), ("plain", "16.0", raw_image)):
        _, *number_unit, shown, short_sha = rows[name]
        assert number_unit == [size, "MiB"]
        # Long sources are elided in the middle; the file name survives.
        assert shown == str(source) or (shown.startswith("/") and shown.endswith(source.name)
                                        and "..." in shown and len(shown) < len(str(source)))
        assert short_sha == _sha256(source)[:12]


def test_the_computed_checksum_is_recorded(cli: Cli, store_dir: Path, raw_image: Path) -> None:
    assert cli("import", "plain", str(raw_image)).code == 0
    assert images.ImageStore(store_dir).get("plain").sha256 == _sha256(raw_image)
    again = cli("import", "plain", str(raw_image), "--sha256", _sha256(raw_image).upper())
    assert again.code == 0
    assert "already imported" in again.err


def test_relative_sources_are_recorded_as_absolute_paths(cli: Cli, store_dir: Path, raw_image: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(raw_image.parent)
    assert cli("import", "plain", raw_image.name).code == 0
    assert images.ImageStore(store_dir).get("plain").source == str(raw_image)


def test_wrong_checksum_exits_1_and_leaves_no_image(cli: Cli, store_dir: Path, raw_image: Path) -> None:
    result = cli("import", "bad", str(raw_image), "--sha256", "0" * 64)
    assert result.code == 1
    assert result.error.startswith("evroc-compute: checksum mismatch")
    assert _sha256(raw_image) in result.error
    assert images.ImageStore(store_dir).names() == []
    assert _leftovers(store_dir) == []


def test_missing_file_exits_1_with_a_clear_message(cli: Cli, tmp_path: Path, store_dir: Path) -> None:
    result = cli("import", "gone", str(tmp_path / "missing.qcow2"))
    assert result.code == 1
    assert result.error == (f"evroc-compute: cannot read {tmp_path / 'missing.qcow2'}: "
                            "No such file or directory")
    assert _leftovers(store_dir) == []


def test_a_non_disk_file_exits_1(cli: Cli, tmp_path: Path) -> None:
    vmdk = _qemu_img_create(tmp_path / "x.vmdk", "vmdk", "1M")
    result = cli("import", "bad", str(vmdk))
    assert result.code == 1
    assert result.error.startswith("evroc-compute: ") and "is a vmdk image" in result.error


def test_importing_another_source_under_an_existing_name_is_refused(
        cli: Cli, tmp_path: Path, store_dir: Path, raw_image: Path) -> None:
    other = _qemu_img_create(tmp_path / "src" / "other.raw", "raw", "1M")
    assert cli("import", "plain", str(raw_image)).code == 0
    result = cli("import", "plain", str(other))
    assert result.code == 1
    assert "already exists" in result.error and "images delete plain" in result.error
    assert images.ImageStore(store_dir).get("plain").source == str(raw_image)


def test_delete_removes_the_image_and_a_missing_one_exits_1(cli: Cli, store_dir: Path,
                                                           raw_image: Path) -> None:
    assert cli("import", "plain", str(raw_image)).code == 0
    deleted = cli("delete", "plain")
    assert deleted.code == 0
    assert images.ImageStore(store_dir).names() == []
    missing = cli("delete", "plain")
    assert missing.code == 1
    assert missing.error == f"evroc-compute: no image 'plain' in {store_dir.resolve()}"
    empty = cli("list")
    assert (empty.code, empty.out) == (0, "")
    assert "no images" in empty.err


def test_http_import_reports_progress(cli: Cli, raw_image: Path, http_root: tuple[str, Path]) -> None:
    url, root = http_root
    served = root / "disk.raw.gz"
    served.write_bytes(gzip.compress(raw_image.read_bytes()))
    digest = _sha256(served)
    result = cli("import", "web", f"{url}/disk.raw.gz", "--sha256", digest)
    assert result.code == 0, result.err
    lines = result.err.splitlines()
    assert lines[0].startswith(f"importing {url}/disk.raw.gz as image web")
    size = served.stat().st_size
    assert any(line.strip().startswith("fetched") and f"({100}%)" in line for line in lines)
    assert len([line for line in lines if line.strip().startswith("fetched")]) <= 3
    assert lines[-1].startswith("imported web in ")
    assert f"sha256 {digest} (verified)" in lines[-1]
    assert f"fetched {size / 1024:.1f} KiB" in lines[-1]
    assert "virtual size 16.0 MiB" in lines[-1]


def test_http_errors_exit_1(cli: Cli, http_root: tuple[str, Path]) -> None:
    result = cli("import", "web", f"{http_root[0]}/missing.qcow2")
    assert result.code == 1
    assert result.error == (f"evroc-compute: cannot fetch {http_root[0]}/missing.qcow2: "
                            "HTTP 404 File not found")


def test_fetch_reports_progress_from_zero_to_the_whole_size(tmp_path: Path) -> None:
    source = tmp_path / "big.raw"
    source.write_bytes(bytes(3 * MIB + 5))
    into = tmp_path / "into"
    into.mkdir()
    calls: list[tuple[int, int | None]] = []
    files = asyncio.run(imports.fetch(str(source), into, progress=lambda done, total: calls.append(
        (done, total))))
    assert calls[0] == (0, 3 * MIB + 5)
    assert calls[-1] == (3 * MIB + 5, 3 * MIB + 5)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    assert files.sha256 == _sha256(source)


def test_a_damaged_manifest_is_reported_not_raised(cli: Cli, store_dir: Path, raw_image: Path) -> None:
    assert cli("import", "plain", str(raw_image)).code == 0
    (store_dir / "plain" / "image.json").write_text("{not json")
    listing = cli("list")
    assert listing.code == 0 and "unreadable image.json" in listing.out
    again = cli("import", "plain", str(raw_image))
    assert again.code == 1 and "damaged" in again.error
    assert cli("delete", "plain").code == 0


@pytest.mark.parametrize("argv", [
    pytest.param(["import", "bad", "x.raw", "--sha256", "xyz"], id="not-a-sha256"),
    pytest.param(["import", "a/b", "x.raw"], id="name-with-slash"),
    pytest.param(["delete", ".hidden"], id="name-with-leading-dot"),
    pytest.param(["build", "windows"], id="unknown-build"),
])
def test_bad_arguments_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _parser().parse_args(["images", *argv])
    assert exit_info.value.code == 2
    assert "error: argument" in capsys.readouterr().err


def test_the_image_dir_defaults_to_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv(images_cli.IMAGE_STORE_ENV, raising=False)
    assert images_cli.default_image_dir() == images.DEFAULT_ROOT.expanduser()
    monkeypatch.setenv(images_cli.IMAGE_STORE_ENV, str(tmp_path / "env-store"))
    assert images_cli.default_image_dir() == tmp_path / "env-store"
    assert images_cli.run(_parser().parse_args(["images", "list"])) == 0
    assert f"no images in {(tmp_path / 'env-store').resolve()}" in capsys.readouterr().err


@pytest.mark.slow
def test_build_minimal_is_cached(capsys: pytest.CaptureFixture[str]) -> None:
    """Uses the shared store ($EVROC_IMAGE_STORE or the default): built once per machine."""
    for _ in range(2):
        assert images_cli.run(_parser().parse_args(["images", "build", "minimal"])) == 0
    err = capsys.readouterr().err
    assert f"{images.MINIMAL_IMAGE} is already built" in err
    assert images_cli.run(_parser().parse_args(["images", "list"])) == 0
    assert images.MINIMAL_IMAGE in capsys.readouterr().out
