"""The HTTP client against a real server process: the same contract as the in-process client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import pytest

from evroc_compute.api.compute import VIRTUAL_MACHINE
from evroc_compute.api.infra import HOST, LEASE
from evroc_compute.client.base import ClientError, WatchEvent
from evroc_compute.client.http import HttpClient
from tests.conftest import Server, free_port


@pytest.fixture
async def client(shared_server: Server) -> AsyncIterator[HttpClient]:
    async with HttpClient(shared_server.url, "http-agent", connection=shared_server.connection(),
                          timeout=5) as http:
        yield http


def lease(name: str, holder: str = "agent-1") -> dict[str, Any]:
    return {"apiVersion": "infra.evroc-compute.io/v1alpha1", "kind": "Lease",
            "metadata": {"name": name},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 10}}


def host(name: str) -> dict[str, Any]:
    return {"apiVersion": "infra.evroc-compute.io/v1alpha1", "kind": "Host",
            "metadata": {"name": name, "labels": {"suite": "http-client"}},
            "spec": {"zone": "se-sto-a", "capacity": {"vcpu": 8, "memory": {"amount": 16,
                                                                             "unit": "GB"}}}}


def vm(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "compute.evroclabs.net/v1alpha1", "kind": "VirtualMachine",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"vmVirtualResourcesRef": {"vmVirtualResourcesRefName": "a1a.s"},
                     "diskRefs": [{"name": f"{name}-boot", "bootFrom": True}], **spec}}


async def test_crud_and_compare_and_swap(client: HttpClient) -> None:
    created = await client.create(LEASE, lease("crud"))
    assert created["metadata"]["managedFields"][0]["manager"] == "http-agent"
    fetched = await client.get(LEASE, None, "crud")
    assert fetched["metadata"]["uid"] == created["metadata"]["uid"]
    items, version = await client.list(LEASE)
    assert "crud" in [i["metadata"]["name"] for i in items] and int(version) > 0

    patched = await client.patch(LEASE, None, "crud", {"spec": {"holderIdentity": "agent-2"}})
    assert patched["spec"]["holderIdentity"] == "agent-2"
    with pytest.raises(ClientError) as stale:
        await client.update(LEASE, created)  # created's resourceVersion is now stale
    assert stale.value.conflict and stale.value.reason == "Conflict"
    fresh = {**patched, "spec": {**patched["spec"], "leaseTransitions": 1}}
    updated = await client.update(LEASE, fresh)
    assert updated["spec"]["leaseTransitions"] == 1

    await client.delete(LEASE, None, "crud")
    with pytest.raises(ClientError) as missing:
        await client.get(LEASE, None, "crud")
    assert missing.value.not_found and missing.value.status["kind"] == "Status"


async def test_patch_types_and_the_status_subresource(client: HttpClient) -> None:
    await client.create(VIRTUAL_MACHINE, vm("status"))
    written = await client.patch(VIRTUAL_MACHINE, "default", "status",
                                 {"status": {"virtualMachineStatus": "Running"}},
                                 subresource="status")
    assert written["status"]["virtualMachineStatus"] == "Running"
    assert written["metadata"]["generation"] == 1
    fetched = await client.get(VIRTUAL_MACHINE, "default", "status", "status")
    assert fetched["status"]["virtualMachineStatus"] == "Running"

    jsonpatched = await client.patch(VIRTUAL_MACHINE, "default", "status",
                                     [{"op": "replace", "path": "/spec/running", "value": False}],
                                     patch_type="json")
    assert jsonpatched["spec"]["running"] is False and jsonpatched["metadata"]["generation"] == 2
    applied = await client.patch(LEASE, None, "applied", lease("applied", "agent-3"),
                                 patch_type="apply", force=True)
    assert applied["spec"]["holderIdentity"] == "agent-3"
    assert {f["manager"] for f in applied["metadata"]["managedFields"]} == {"http-agent"}
    await client.delete(VIRTUAL_MACHINE, "default", "status")
    await client.delete(LEASE, None, "applied")


async def test_validation_errors_carry_the_servers_status(client: HttpClient) -> None:
    with pytest.raises(ClientError) as invalid:
        await client.create(VIRTUAL_MACHINE, vm("invalid", running="yes"))
    problem = invalid.value
    assert problem.code == 422 and problem.reason == "Invalid"
    assert "spec.running" in problem.status["message"]
    assert problem.status["details"]["causes"][0]["field"] == "spec.running"
    with pytest.raises(ClientError) as duplicate:
        await client.create(LEASE, lease("twice"))
        await client.create(LEASE, lease("twice"))
    assert duplicate.value.code == 409 and duplicate.value.reason == "AlreadyExists"
    await client.delete(LEASE, None, "twice")


async def test_watch_from_a_lists_resource_version(client: HttpClient) -> None:
    _, version = await client.list(HOST, label_selector="suite=http-client")
    seen: list[WatchEvent] = []

    async def consume() -> None:
        events = client.watch(HOST, resource_version=version, label_selector="suite=http-client",
                              timeout_seconds=5)
        async with aclosing(events):
            async for event in events:
                seen.append(event)
                if event.type == "DELETED":
                    return

    watching = asyncio.create_task(consume())
    await client.create(HOST, host("watched"))
    await client.patch(HOST, None, "watched", {"spec": {"schedulable": False}})
    await client.delete(HOST, None, "watched")
    await asyncio.wait_for(watching, 5)
    changes = [(e.type, e.object["metadata"]["name"]) for e in seen if e.type != "BOOKMARK"]
    assert changes == [("ADDED", "watched"), ("MODIFIED", "watched"), ("DELETED", "watched")]
    assert seen[1].object["spec"]["schedulable"] is False
    assert int(seen[-1].resource_version) > int(version)


async def test_a_closed_port_is_a_service_unavailable_status() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with HttpClient(url, "http-agent", timeout=2) as client:
        with pytest.raises(ClientError) as down:
            await client.get(HOST, None, "anything")
        assert down.value.code == 503 and down.value.reason == "ServiceUnavailable"
        assert url in down.value.status["message"]
        with pytest.raises(ClientError) as watch_down:
            async for _ in client.watch(HOST):
                pass
        assert watch_down.value.code == 503
