"""A server whose PostgreSQL becomes unreachable, over HTTP: writes answer 503 with Retry-After
and a Status, reads answer from the server's memory with a Warning, and once the database is
back the server serves writes again by itself, having lost nothing it acknowledged.

The database is cut with a TCP proxy between the server and the machine's PostgreSQL (the
cluster itself is never stopped: other tests share it)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import start_server
from tests.proxy import Proxy, proxy

pytestmark = pytest.mark.slow

NAMESPACES = "/api/v1/namespaces"


def namespace(name: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


@pytest.fixture
def cut(database: str) -> Iterator[Proxy]:
    port = urlsplit(database).port or 5432
    with proxy(port) as forwarder:
        yield forwarder


def through(url: str, forwarder: Proxy) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=f"{parts.username}@127.0.0.1:{forwarder.port}").geturl()


def until(attempt: Callable[[], httpx.Response], done: Callable[[httpx.Response], bool],
          timeout: float, what: str) -> httpx.Response:
    """The first answer of `attempt` that is `done`, retried for up to `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = attempt()
        if done(answer):
            return answer
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_database_down_writes_503_reads_warn_and_the_server_resumes_by_itself(
        tmp_path: Path, database: str, cut: Proxy) -> None:
    server = start_server(tmp_path / "server", "--store", through(database, cut))
    acked: list[str] = []
    names = iter(f"ns-{i:03d}" for i in range(1000))
    http = httpx.Client(base_url=server.url, timeout=30, verify=server.tls())

    def create() -> httpx.Response:
        name = next(names)
        answer = http.post(NAMESPACES, json=namespace(name))
        if answer.status_code == 201:
            acked.append(name)
        return answer

    try:
        for _ in range(5):
            assert create().status_code == 201
        cut.set("cut")
        refused = until(create, lambda answer: answer.status_code != 201, 30,
                        "a write to be refused")
        assert refused.status_code == 503
        assert int(refused.headers["retry-after"]) >= 1
        status = refused.json()
        assert status["kind"] == "Status" and status["reason"] == "ServiceUnavailable"
        assert status["message"]
        listed = http.get(NAMESPACES)
        assert listed.status_code == 200
        assert "storage is unreachable" in listed.headers["warning"]
        assert set(acked) <= {item["metadata"]["name"] for item in listed.json()["items"]}
        got = http.get(f"{NAMESPACES}/{acked[0]}")
        assert got.status_code == 200 and "warning" in got.headers
        cut.set("forward")
        until(create, lambda answer: answer.status_code == 201, 60, "writes to be served again")
        assert "warning" not in http.get(NAMESPACES).headers
    finally:
        http.close()
        server.stop()
    # What was acknowledged is in the database: a fresh server straight on it has it all.
    fresh = start_server(tmp_path / "fresh", "--store", database)
    try:
        listed = httpx.get(f"{fresh.url}{NAMESPACES}", timeout=30, verify=fresh.tls()).json()
        present = {item["metadata"]["name"] for item in listed["items"]}
        assert [name for name in acked if name not in present] == []
    finally:
        fresh.stop()
