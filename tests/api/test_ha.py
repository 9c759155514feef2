"""Several API server processes on one PostgreSQL database: the HA control plane.

Real `evroc-compute serve` processes, real HTTP; each test has its own database."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server, start_server

pytestmark = pytest.mark.slow

LEASE = "/apis/infra.evroc-compute.io/v1alpha1/leases/evroc-compute-controllers"


def servers(tmp_path: Path, url: str, n: int, *, controllers: bool = False) -> list[Server]:
    """`n` servers of one database, sharing one PKI (so one credential works on all)."""
    return [start_server(tmp_path / f"server-{i}", "--store", url, controllers=controllers,
                         pki_dir=tmp_path / "pki") for i in range(n)]


def namespace(name: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def test_a_write_on_one_server_is_read_at_once_on_the_others(
        tmp_path: Path, database: str) -> None:
    fleet = servers(tmp_path, database, 3)
    try:
        with httpx.Client(timeout=10, verify=fleet[0].tls()) as http:
            for i in range(30):
                writer, reader = fleet[i % 3], fleet[(i + 1) % 3]
                made = http.post(f"{writer.url}/api/v1/namespaces", json=namespace(f"ns-{i}"))
                assert made.status_code == 201
                got = http.get(f"{reader.url}/api/v1/namespaces/ns-{i}")
                assert got.status_code == 200
                assert got.json()["metadata"]["resourceVersion"] == \
                    made.json()["metadata"]["resourceVersion"]
                listed = http.get(f"{fleet[(i + 2) % 3].url}/api/v1/namespaces").json()
                assert f"ns-{i}" in {item["metadata"]["name"] for item in listed["items"]}
    finally:
        for server in fleet:
            server.stop()


def test_kill_9_of_a_server_during_creates_loses_no_acknowledged_write(
        tmp_path: Path, database: str) -> None:
    victim, survivor = servers(tmp_path, database, 2)
    acked: list[str] = []
    lock = threading.Lock()

    def create(i: int) -> None:
        target = victim if i % 2 else survivor
        try:
            with httpx.Client(timeout=10, verify=target.tls()) as http:
                response = http.post(f"{target.url}/api/v1/namespaces",
                                     json=namespace(f"ns-{i:04d}"))
        except httpx.TransportError:
            return  # the server died with the request: not acknowledged
        if response.status_code == 201:
            with lock:
                acked.append(f"ns-{i:04d}")

    try:
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            futures = [pool.submit(create, i) for i in range(2000)]
            while len(acked) < 400:
                time.sleep(0.01)
            victim.kill()
            concurrent.futures.wait(futures)
        listed = httpx.get(f"{survivor.url}/api/v1/namespaces", timeout=30,
                           verify=survivor.tls()).json()
        present = {item["metadata"]["name"] for item in listed["items"]}
        missing = [name for name in acked if name not in present]
        assert not missing, f"{len(missing)} of {len(acked)} acknowledged creates lost"
        assert len(acked) > 1000  # the survivor kept serving its half
    finally:
        survivor.stop()


def test_kill_9_of_the_leader_hands_the_controllers_to_another_server(
        tmp_path: Path, database: str) -> None:
    fleet = servers(tmp_path, database, 2, controllers=True)
    try:
        def holder() -> str:
            response = httpx.get(fleet[-1].url + LEASE, timeout=5, verify=fleet[-1].tls())
            return str(response.json()["spec"]["holderIdentity"]) \
                if response.status_code == 200 else ""

        deadline = time.monotonic() + 30
        while not holder() and time.monotonic() < deadline:
            time.sleep(0.1)
        first = holder()
        assert first
        leader = next(s for s in fleet if f":{s.process.pid}:" in first)
        leader.kill()
        fleet.remove(leader)
        deadline = time.monotonic() + 40
        while holder() == first and time.monotonic() < deadline:
            time.sleep(0.1)
        assert holder() not in ("", first), "no other server took the controllers over"
    finally:
        for server in fleet:
            server.stop()
