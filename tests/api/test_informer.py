"""The informer's cache follows the store through creates, changes, deletes and compaction."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from evroc_compute.api.compute import DISK
from evroc_compute.client.inprocess import InProcessClient
from evroc_compute.runtime.informer import Informer
from evroc_compute.server.app import App


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    instance = App(tmp_path, compact_interval=3600, compact_keep=2, bookmark_interval=0.05)
    await instance.start()
    yield instance
    await instance.stop()


def disk(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "compute.evroclabs.net/v1alpha1", "kind": "Disk",
            "metadata": {"name": name, "namespace": "default", "labels": labels},
            "spec": {"diskSize": {"amount": 1, "unit": "GB"}}}


async def eventually(check: Callable[[], bool], what: str) -> None:
    for _ in range(200):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


async def running(informer: Informer) -> Callable[[], Awaitable[None]]:
    task = asyncio.create_task(informer.run())
    await asyncio.wait_for(informer.synced.wait(), 5)

    async def stop() -> None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return stop


async def test_the_cache_follows_creates_changes_and_deletes(app: App) -> None:
    client = InProcessClient(app, "test")
    await client.create(DISK, disk("before"))
    informer = Informer(client, DISK, "default", watch_timeout=1)
    seen: list[tuple[str, str]] = []
    informer.add_handler(lambda kind, obj: seen.append((kind, obj["metadata"]["name"])))
    stop = await running(informer)
    await client.create(DISK, disk("after"))
    await client.patch(DISK, "default", "before", {"metadata": {"labels": {"x": "1"}}})
    await client.delete(DISK, "default", "after")
    await eventually(lambda: ("DELETED", "after") in seen, "the delete is seen")
    assert seen == [("ADDED", "before"), ("ADDED", "after"), ("MODIFIED", "before"),
                    ("DELETED", "after")]
    before = informer.get("default", "before")
    assert before is not None and before["metadata"]["labels"] == {"x": "1"}
    assert informer.get("default", "after") is None
    await stop()


async def test_after_history_is_compacted_a_relist_reports_what_was_missed(app: App) -> None:
    client = InProcessClient(app, "test")
    for name in ("a", "b"):
        await client.create(DISK, disk(name))
    informer = Informer(client, DISK, "default", watch_timeout=1)
    seen: list[tuple[str, str]] = []
    informer.add_handler(lambda kind, obj: seen.append((kind, obj["metadata"]["name"])))
    await informer._relist()  # synced at this revision, not yet watching
    await client.delete(DISK, "default", "a")
    await client.create(DISK, disk("c"))
    for i in range(5):
        await client.patch(DISK, "default", "b", {"metadata": {"labels": {"n": str(i)}}})
    assert app.ctx is not None
    await app.ctx.store.compact(keep=1)
    assert int(informer._version) < app.ctx.store.compacted_revision  # resuming must be 410
    stop = await running(informer)
    await eventually(lambda: informer.relists >= 2, "a relist after 410")
    assert informer.relists == 2  # the first list, and the one the 410 forced
    assert sorted(k for _, k in informer.cache) == ["b", "c"]
    assert ("DELETED", "a") in seen and ("ADDED", "c") in seen and ("MODIFIED", "b") in seen
    await stop()
