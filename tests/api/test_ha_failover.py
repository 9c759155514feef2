"""Clients of an HA control plane fail over: two servers on one PostgreSQL database, one of them
killed -9 while a watch, and a host agent process, are using it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import yaml

from evroc_compute.api.infra import LEASE
from evroc_compute.api.meta import parse_time
from evroc_compute.client.http import HttpClient
from tests.api.test_ha import servers
from tests.api.test_http_client import lease
from tests.conftest import ROOT
from tests.e2e.test_host_identity import host_kubeconfig

pytestmark = pytest.mark.slow

LEASES = "/apis/infra.evroc-compute.io/v1alpha1/leases"
HOSTS = "/apis/infra.evroc-compute.io/v1alpha1/hosts"


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


async def test_a_watch_resumes_on_the_next_server_from_its_last_version(
        tmp_path: Path, database: str) -> None:
    first, second = servers(tmp_path, database, 2)
    try:
        async with HttpClient(f"{first.url},{second.url}", "watcher",
                              connection=first.connection(), timeout=5) as client, \
                httpx.AsyncClient(base_url=second.url, timeout=10, verify=second.tls()) as other:
            _, version = await client.list(LEASE)
            events = client.watch(LEASE, resource_version=version)

            async def next_change() -> tuple[str, str]:
                async for event in events:
                    if event.type != "BOOKMARK":
                        return event.type, event.object["metadata"]["name"]
                raise AssertionError("the watch ended")

            assert (await other.post(LEASES, json=lease("before-kill"))).status_code == 201
            assert await asyncio.wait_for(next_change(), 10) == ("ADDED", "before-kill")
            assert client.base_url == first.url
            first.kill()
            # Written while the watch had no server: delivered from the last version seen.
            assert (await other.post(LEASES, json=lease("after-kill"))).status_code == 201
            assert await asyncio.wait_for(next_change(), 20) == ("ADDED", "after-kill")
            assert client.base_url == second.url
            await events.aclose()
    finally:
        second.stop()


def test_an_agent_with_two_servers_keeps_working_when_one_is_killed(
        tmp_path: Path, database: str) -> None:
    first, second = servers(tmp_path, database, 2)  # one PKI: one host kubeconfig for both
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(yaml.safe_dump({"heartbeat": {"interval": 0.5, "timeout": 5}}))
    kubeconfig = host_kubeconfig(first, tmp_path, "ha-host")
    agent = subprocess.Popen(
        [sys.executable, "-m", "evroc_compute.cli", "agent", "--kubeconfig", str(kubeconfig),
         "--server", f"{first.url},{second.url}", "--host-name", "ha-host", "--data-dir",
         str(tmp_path / "agent"), "--accel", "tcg", "--image-dir", str(tmp_path / "images"),
         "--fleet", str(fleet)],
        stdout=open(tmp_path / "agent.log", "ab"), stderr=subprocess.STDOUT, cwd=ROOT)
    http = httpx.Client(base_url=second.url, timeout=10, verify=second.tls())

    def renewed() -> float:
        got = http.get(f"{LEASES}/host-ha-host")
        if got.status_code != 200:
            return 0.0
        return parse_time(got.json()["spec"]["renewTime"]) or 0.0

    def silent(value: str | None) -> None:
        patched = http.patch(f"{HOSTS}/ha-host", content=json.dumps(
            {"metadata": {"annotations": {"fault.evroc-compute.io/heartbeat": value}}}),
            headers={"content-type": "application/merge-patch+json"})
        assert patched.status_code == 200, patched.text

    try:
        wait_for(lambda: renewed() > 0, 30, "the agent to register its host and heartbeat")
        first.kill()
        killed = time.time()
        # Its heartbeats go on through the other server...
        wait_for(lambda: renewed() > killed + 1, 20, "a heartbeat after the kill")
        # ...and so does its watch: it sees the host told to go silent, and told to resume.
        silent("lost")
        wait_for(lambda: time.time() - renewed() > 3, 20, "the agent to go silent")
        quiet = renewed()
        silent(None)
        wait_for(lambda: renewed() > quiet, 20, "the agent's heartbeats to resume")
        assert agent.poll() is None, (tmp_path / "agent.log").read_text()
    finally:
        http.close()
        agent.terminate()
        agent.wait(15)
        second.stop()
