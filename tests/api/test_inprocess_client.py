"""The in-process client, and the channel client of serve's controllers process, get exactly
what an HTTP client gets: admission, CAS, watch."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from evroc_compute.api.compute import DISK, VIRTUAL_MACHINE
from evroc_compute.api.core import NAMESPACE
from evroc_compute.client.base import ClientError, WatchEvent
from evroc_compute.client.channel import ChannelClient
from evroc_compute.client.inprocess import InProcessClient, RoutedClient
from evroc_compute.server import channel
from evroc_compute.server.app import App
from evroc_compute.server.auth.users import CONTROLLERS


@pytest.fixture(params=["in-process", "channel"])
async def client(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RoutedClient]:
    app = App(tmp_path, compact_interval=3600, bookmark_interval=0.05)
    await app.start()
    if request.param == "in-process":
        yield InProcessClient(app, "test-controller")
    else:
        ours, theirs = socket.socketpair()
        serving = asyncio.create_task(channel.serve(app, ours, CONTROLLERS))
        async with ChannelClient(theirs, "test-controller") as over_channel:
            yield over_channel
        await serving
    await app.stop()


def vm(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "compute.evroclabs.net/v1alpha1", "kind": "VirtualMachine",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"vmVirtualResourcesRef": {"vmVirtualResourcesRefName": "a1a.s"},
                     "diskRefs": [{"name": f"{name}-boot", "bootFrom": True}], **spec}}


async def test_crud_goes_through_admission_and_records_the_field_manager(
        client: RoutedClient) -> None:
    created = await client.create(VIRTUAL_MACHINE, vm("a"))
    assert created["spec"]["running"] is True  # defaulted by admission
    assert created["metadata"]["managedFields"][0]["manager"] == "test-controller"
    fetched = await client.get(VIRTUAL_MACHINE, "default", "a")
    assert fetched["metadata"]["uid"] == created["metadata"]["uid"]
    patched = await client.patch(VIRTUAL_MACHINE, "default", "a", {"spec": {"running": False}})
    assert patched["metadata"]["generation"] == 2
    items, version = await client.list(VIRTUAL_MACHINE, "default")
    assert [i["metadata"]["name"] for i in items] == ["a"] and int(version) > 0
    await client.delete(VIRTUAL_MACHINE, "default", "a")
    with pytest.raises(ClientError) as missing:
        await client.get(VIRTUAL_MACHINE, "default", "a")
    assert missing.value.not_found and missing.value.reason == "NotFound"


async def test_invalid_objects_and_stale_updates_are_refused_as_for_http(
        client: RoutedClient) -> None:
    with pytest.raises(ClientError) as invalid:
        await client.create(VIRTUAL_MACHINE, vm("b", running="yes"))
    assert invalid.value.code == 422
    assert invalid.value.status["details"]["causes"][0]["field"] == "spec.running"
    created = await client.create(VIRTUAL_MACHINE, vm("c"))
    await client.patch(VIRTUAL_MACHINE, "default", "c", {"metadata": {"labels": {"x": "y"}}})
    with pytest.raises(ClientError) as stale:
        await client.update(VIRTUAL_MACHINE, created)
    assert stale.value.conflict


async def test_status_is_written_through_the_status_subresource(client: RoutedClient) -> None:
    await client.create(VIRTUAL_MACHINE, vm("d"))
    written = await client.patch(VIRTUAL_MACHINE, "default", "d",
                                 {"status": {"virtualMachineStatus": "Running"}},
                                 subresource="status")
    assert written["status"]["virtualMachineStatus"] == "Running"
    assert written["metadata"]["generation"] == 1


async def test_watch_delivers_events_and_bookmarks(client: RoutedClient) -> None:
    _, version = await client.list(DISK, "default")
    seen: list[WatchEvent] = []

    async def consume() -> None:
        async for event in client.watch(DISK, "default", resource_version=version,
                                        timeout_seconds=1):
            seen.append(event)

    watching = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    await client.create(DISK, {"apiVersion": "compute.evroclabs.net/v1alpha1", "kind": "Disk",
                               "metadata": {"name": "w", "namespace": "default"},
                               "spec": {"diskSize": {"amount": 1, "unit": "GB"}}})
    await client.delete(DISK, "default", "w")
    await watching
    kinds = [e.type for e in seen if e.type != "BOOKMARK"]
    assert kinds == ["ADDED", "DELETED"]
    assert any(e.type == "BOOKMARK" for e in seen)
    assert int(seen[-1].resource_version) >= int(version)


async def test_cluster_scoped_kinds(client: RoutedClient) -> None:
    namespaces, _ = await client.list(NAMESPACE)
    assert "default" in [n["metadata"]["name"] for n in namespaces]


async def test_a_refused_delete_is_answered_at_once_not_retried(
        client: RoutedClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from evroc_compute.api.networking import PUBLIC_IP
    from evroc_compute.server.handlers import delete

    created = await client.create(PUBLIC_IP, {
        "apiVersion": PUBLIC_IP.api_version, "kind": "PublicIP",
        "metadata": {"name": "ip", "namespace": "default"}, "spec": {}})
    await client.update(PUBLIC_IP, {**created, "status": {"usedBy": "web"}}, "status")
    reads = []
    real_current = delete.current
    monkeypatch.setattr(delete, "current", lambda ctx, target: reads.append(1) or real_current(ctx, target))
    with pytest.raises(ClientError) as refused:
        await client.delete(PUBLIC_IP, "default", "ip")
    assert refused.value.code == 409 and 'in use by VirtualMachine "web"' in str(refused.value)
    assert len(reads) == 1
