"""Removing the last finalizer is one commit: a kill -9 while hundreds are removed strands none."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx

from tests.conftest import Server, start_server

DISKS = "/apis/compute.evroclabs.net/v1alpha1/namespaces/default/disks"
COUNT = 300
HOLD = "example.com/hold"


def disk(name: str) -> dict:
    return {"apiVersion": "compute.evroclabs.net/v1alpha1", "kind": "Disk",
            "metadata": {"name": name, "finalizers": [HOLD]},
            "spec": {"diskImage": {"diskImageRef": {"name": "ubuntu.24-04.1"}}}}


async def release_until_killed(server: Server, kill: asyncio.Event) -> set[str]:
    """PATCH every disk's finalizers away, many at once; stop when `kill` is set.
    Returns the names whose removal the server acknowledged."""
    acknowledged: set[str] = set()
    limits = httpx.Limits(max_connections=32)
    async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=10,
                                 verify=server.tls()) as http:
        async def release(name: str) -> None:
            try:
                reply = await http.patch(f"{DISKS}/{name}", content=json.dumps(
                    {"metadata": {"finalizers": None}}),
                    headers={"content-type": "application/merge-patch+json"})
            except httpx.HTTPError:
                return  # the server died mid-request: not acknowledged
            if reply.status_code == 200:
                acknowledged.add(name)
                if len(acknowledged) == COUNT // 3:
                    kill.set()

        tasks = [asyncio.create_task(release(f"d{i}")) for i in range(COUNT)]
        await asyncio.wait(tasks)
    return acknowledged


def test_kill_9_while_finalizers_are_removed_strands_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = start_server(data)
    with httpx.Client(base_url=server.url, timeout=30, verify=server.tls()) as http:
        for i in range(COUNT):
            assert http.post(DISKS, json=disk(f"d{i}")).status_code == 201
            assert http.delete(f"{DISKS}/d{i}").status_code == 200  # held by its finalizer
        before = http.get(DISKS).json()["metadata"]["resourceVersion"]

    async def run() -> set[str]:
        kill = asyncio.Event()
        releasing = asyncio.create_task(release_until_killed(server, kill))
        await kill.wait()
        server.kill()
        return await releasing

    acknowledged = asyncio.run(run())
    server = start_server(data, port=int(server.url.rsplit(":", 1)[1]))
    try:
        with httpx.Client(base_url=server.url, timeout=30, verify=server.tls()) as http:
            left = {d["metadata"]["name"]: d for d in http.get(DISKS).json()["items"]}
            # Every object is either gone or still held: none deleting with nothing to finish it.
            assert all(d["metadata"]["finalizers"] == [HOLD] for d in left.values())
            assert not acknowledged & set(left)  # an acknowledged removal is never lost
            assert len(left) < COUNT
            # Watchers saw each removal as the deletion itself, never a finalizer-less state.
            with http.stream("GET", DISKS, params={"watch": "1", "resourceVersion": before,
                                                   "timeoutSeconds": "1"}) as stream:
                events = [json.loads(line) for line in stream.iter_lines() if line]
            seen = [(e["type"], e["object"]["metadata"].get("finalizers")) for e in events]
            assert {t for t, _ in seen} == {"DELETED"}
            assert len(seen) == COUNT - len(left)
    finally:
        server.stop()
