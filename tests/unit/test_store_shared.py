"""Several stores on one PostgreSQL database, as several API servers run: one truth.

Each `SharedLogStore` here has its own connections, writer, poller and listener, exactly as in
its own server process; the process-level tests (kill -9) are in tests/api/test_ha.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest

from evroc_compute.store import urls
from evroc_compute.store.base import Event, KeyExists, RevisionConflict, StoreUnavailable
from evroc_compute.store.shared import SharedLogStore
from tests import postgres

pytestmark = pytest.mark.slow

PREFIX = "/compute.evroclabs.net/virtualmachines/default/"


def vm(name: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": spec}


@pytest.fixture
def url() -> Iterator[str]:
    with postgres.database() as found:
        yield found


async def open_stores(url: str, n: int) -> list[SharedLogStore]:
    stores = []
    for _ in range(n):
        store = await asyncio.to_thread(urls.store, url)
        assert isinstance(store, SharedLogStore)
        await store.open()
        stores.append(store)
    return stores


@pytest.fixture
async def three(url: str) -> AsyncIterator[list[SharedLogStore]]:
    stores = await open_stores(url, 3)
    yield stores
    for store in stores:
        await store.close()


async def collect(store: SharedLogStore, until: int) -> list[Event]:
    """Every event a watcher from revision 0 sees, up to revision `until`."""
    watch = store.watch(PREFIX, 0)
    events = await watch.replay()
    while not events or events[-1].entry.revision < until:
        event = await asyncio.wait_for(watch.next(), 20)
        assert event is not None
        events.append(event)
    watch.close()
    return events


async def test_concurrent_writers_on_three_servers_lose_nothing_and_every_watcher_agrees(
        three: list[SharedLogStore]) -> None:
    """CAS increments of 5 shared counters from 8 writers per server, creates besides."""
    counters = [PREFIX + f"counter-{i}" for i in range(5)]
    for key in counters:
        await three[0].create(key, vm(key, n=0))
    watches = [asyncio.create_task(collect(store, 10**9)) for store in three]

    async def increment(store: SharedLogStore, key: str) -> None:
        while True:
            entry = store.get(key)
            assert entry is not None
            try:
                await store.update(key, vm(key, n=entry.obj["spec"]["n"] + 1), entry.revision)
                return
            except RevisionConflict:
                pass

    async def writer(store: SharedLogStore, who: int) -> None:
        assert await store.sync()  # a server's first read of what another one wrote
        for i in range(25):
            await increment(store, counters[(who + i) % len(counters)])
            await store.create(PREFIX + f"w{who}-{i}", vm(f"w{who}-{i}"))

    await asyncio.gather(*(writer(store, s * 8 + w) for s, store in enumerate(three)
                           for w in range(8)))
    for store in three:
        assert await store.sync()
    assert {store.revision for store in three} == {three[0].revision}
    for store in three:
        assert sum(store.get(k).obj["spec"]["n"] for k in counters) == 3 * 8 * 25  # type: ignore[union-attr]
    final = three[0].revision
    for task in watches:
        task.cancel()
    streams = await asyncio.gather(*(collect(store, final) for store in three))
    for events in streams:
        assert [e.entry.revision for e in events] == list(range(1, final + 1))  # gapless
        assert [(e.type, e.entry.raw) for e in events] == \
            [(e.type, e.entry.raw) for e in streams[0]]


async def test_a_write_acknowledged_by_one_server_is_read_by_another(
        three: list[SharedLogStore]) -> None:
    a, b, _ = three
    for i in range(20):
        written = await a.create(PREFIX + f"o{i}", vm(f"o{i}"))
        assert await b.sync()
        seen = b.get(PREFIX + f"o{i}")
        assert seen is not None and seen.raw == written.raw
        listed, at = await b.list(PREFIX)
        assert at >= written.revision and len(listed) == i + 1


async def test_the_database_decides_conflicts_between_servers(
        three: list[SharedLogStore]) -> None:
    a, b, _ = three
    first = await a.create(PREFIX + "x", vm("x"))
    with pytest.raises(KeyExists):
        await b.create(PREFIX + "x", vm("x"))
    await asyncio.gather(a.update(PREFIX + "x", vm("x", by="a"), first.revision),
                         b.update(PREFIX + "x", vm("x", by="b"), first.revision),
                         return_exceptions=True)
    await a.sync()
    await b.sync()
    assert a.get(PREFIX + "x") == b.get(PREFIX + "x")
    assert a.get(PREFIX + "x").revision == first.revision + 1  # type: ignore[union-attr]


async def test_compaction_runs_on_one_server_and_every_server_refuses_older_reads(
        three: list[SharedLogStore]) -> None:
    entry = await three[0].create(PREFIX + "a", vm("a"))
    for i in range(10):
        entry = await three[1].update(PREFIX + "a", vm("a", n=i), entry.revision)
    results = await asyncio.gather(*(store.compact(keep=2) for store in three))
    assert max(results) == entry.revision - 2
    for store in three:
        await store.sync()
        with pytest.raises(Exception, match="compacted"):
            await store.list(PREFIX, revision=2)
        assert store.get(PREFIX + "a").obj["spec"]["n"] == 9  # type: ignore[union-attr]


def drop_connections(url: str) -> None:
    """What the servers see when PostgreSQL restarts: every connection to the database cut."""
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(f"{postgres.SERVER}/postgres", autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))


async def test_writes_across_a_database_restart_lose_nothing_acknowledged_and_resume(
        url: str, three: list[SharedLogStore]) -> None:
    acked: list[str] = []
    refused = 0

    async def writer(store: SharedLogStore, who: int) -> None:
        nonlocal refused
        for i in range(60):
            key = PREFIX + f"w{who}-{i}"
            try:
                await store.create(key, vm(key))
                acked.append(key)
            except StoreUnavailable:
                refused += 1
            await asyncio.sleep(0.005)

    writers = asyncio.gather(*(writer(store, s) for s, store in enumerate(three)))
    while len(acked) < 30:
        await asyncio.sleep(0.01)
    await asyncio.to_thread(drop_connections, url)
    await writers
    assert refused, "the writers never met the restart"
    # Every server resumes by itself: new writes go through and everyone sees everything.
    for store in three:
        await store.create(PREFIX + f"after-{id(store)}", vm("after"))
    for store in three:
        assert await store.sync()
        missing = [key for key in acked if store.get(key) is None]
        assert not missing, f"{len(missing)} acknowledged writes lost"
    assert {store.revision for store in three} == {three[0].revision}
