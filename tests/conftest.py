"""Shared fixtures: a real server process on a free loopback port, and real clients for it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from evroc_compute.client.kubeconfig import Connection, admin_kubeconfig

ROOT = Path(__file__).resolve().parent.parent

# `EVROC_TEST_STORE=postgresql`: every server a test starts keeps its objects in a PostgreSQL
# database of its own (tests/e2e/test_on_postgresql.py reruns the e2e suites so). One database
# per data directory, so a server restarted on its data directory finds its objects again.
POSTGRES_STORES = os.environ.get("EVROC_TEST_STORE", "") == "postgresql"
_databases: dict[Path, str] = {}
_dropped_at_exit = contextlib.ExitStack()


def _database_of(data_dir: Path) -> str:
    from tests import postgres

    if data_dir not in _databases:
        _databases[data_dir] = _dropped_at_exit.enter_context(postgres.database())
    return _databases[data_dir]


@pytest.fixture(scope="session", autouse=True)
def _drop_test_databases() -> Iterator[None]:
    with _dropped_at_exit:
        yield


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    url: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    pki_dir: Path

    @property
    def ca(self) -> Path:
        return self.pki_dir / "ca.crt"

    @property
    def admin_cert(self) -> tuple[Path, Path]:
        return self.pki_dir / "admin.crt", self.pki_dir / "admin.key"

    def tls(self, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
        """A context that trusts the server's CA and presents `cert` (default: the admin's)."""
        context = ssl.create_default_context(cafile=str(self.ca))
        context.load_cert_chain(*(cert or self.admin_cert))
        return context

    def connection(self) -> Connection:
        """For HttpClient: the admin's connection to this server."""
        return Connection(self.url, self.tls())

    def kubeconfig(self, cluster: str = "") -> str:
        """The admin's kubeconfig, as `evroc-compute kubeconfig` prints it."""
        return admin_kubeconfig(self.ca, *self.admin_cert, self.url, cluster)

    def kill(self) -> None:
        """kill -9: the crash the store must survive."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry))
    return found


def start_server(data_dir: Path, *extra: str, port: int | None = None,
                 controllers: bool = False, pki_dir: Path | None = None) -> Server:
    """The server in its own process, on HTTPS with the PKI it makes in `pki_dir` (default
    DATA_DIR/pki; servers of one database share one); without `controllers`, API only (tests
    write status)."""
    port = port or free_port()
    pki_dir = pki_dir or data_dir / "pki"
    if not controllers and "--fleet" not in extra:
        extra = (*extra, "--no-controllers")
    if POSTGRES_STORES and "--store" not in extra:
        extra = (*extra, "--store", _database_of(data_dir))
    log_path = data_dir.parent / f"server-{port}.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [sys.executable, "-m", "evroc_compute.cli", "serve", "--port", str(port),
         "--data-dir", str(data_dir), "--pki-dir", str(pki_dir), *extra],
        stdout=open(log_path, "ab"), stderr=subprocess.STDOUT, cwd=ROOT)
    scheme = "http" if "--insecure-http" in extra else "https"
    url = f"{scheme}://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {log_path.read_text()}")
        try:
            context = ssl.create_default_context(cafile=str(pki_dir / "ca.crt")) \
                if scheme == "https" else None
            with urllib.request.urlopen(f"{url}/readyz", timeout=1, context=context) as response:
                if response.status == 200:
                    return Server(url, data_dir, process, log_path, pki_dir)
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"server did not become ready: {log_path.read_text()}")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """A fresh server per test (fast: ~0.5 s), with its own store."""
    srv = start_server(tmp_path / "data")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for a module whose tests use distinct names or namespaces."""
    srv = start_server(tmp_path_factory.mktemp("shared") / "data")
    yield srv
    srv.stop()


def kubectl_binary(version: str = "1.32") -> str:
    wrapper = shutil.which("kubectl")
    if wrapper:
        versioned = Path(os.path.realpath(wrapper)).parent / f"kubectl.{version}"
        if versioned.exists():
            return str(versioned)
    pytest.skip(f"kubectl.{version} is not installed next to kubectl")
    raise AssertionError


@dataclass
class Kubectl:
    binary: str
    kubeconfig: Path
    cache_dir: Path

    def run(self, *args: str, input: str | None = None, check: bool = True,
            env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.binary, "--kubeconfig", str(self.kubeconfig), "--cache-dir", str(self.cache_dir),
             *args], input=input, capture_output=True, text=True, timeout=timeout,
            env={**os.environ, **(env or {})})
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def __call__(self, *args: str, **kwargs: object) -> str:
        return self.run(*args, **kwargs).stdout  # type: ignore[arg-type]


def make_kubectl(server: Server, tmp: Path, cluster: str = "", version: str = "1.32") -> Kubectl:
    """kubectl as the server's admin."""
    config = tmp / f"kubeconfig-{cluster or 'plain'}"
    config.write_text(server.kubeconfig(cluster))
    return Kubectl(kubectl_binary(version), config, tmp / "kubectl-cache")


@pytest.fixture
def kubectl(server: Server, tmp_path: Path) -> Kubectl:
    return make_kubectl(server, tmp_path)
