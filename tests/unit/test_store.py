"""The store's contract on every backend (SQLite; PostgreSQL, slow): revisions, CAS,
snapshots, watch. Tests that reach into one backend's internals name it."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from evroc_compute.store import urls
from evroc_compute.store.base import (
    Compacted,
    FutureRevision,
    KeyExists,
    KeyNotFound,
    RevisionConflict,
    Store,
    StoreUnavailable,
)
from evroc_compute.store.log import LogStore
from evroc_compute.store.sqlite import SQLiteLog

PREFIX = "/compute.evroclabs.net/virtualmachines/default/"


def vm(name: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": spec}


async def open_store(url: str) -> Store:
    store = await asyncio.to_thread(urls.store, url)
    await store.open()
    return store


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    s = await open_store(store_url)
    yield s
    await s.close()


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[LogStore]:
    s = LogStore(SQLiteLog(tmp_path / "store.db"))
    await s.open()
    yield s
    await s.close()


async def reopen(store: Store, url: str) -> Store:
    await store.close()
    return await open_store(url)


async def test_every_write_gets_the_next_revision_as_its_resource_version(store: Store) -> None:
    a = await store.create(PREFIX + "a", vm("a"))
    b = await store.create(PREFIX + "b", vm("b"))
    a2 = await store.update(PREFIX + "a", vm("a", running=False), a.revision)
    assert (a.revision, b.revision, a2.revision) == (1, 2, 3)
    assert a2.obj["metadata"]["resourceVersion"] == "3"
    assert a2.create_revision == 1
    assert store.revision == 3


async def test_create_twice_is_refused(store: Store) -> None:
    await store.create(PREFIX + "a", vm("a"))
    with pytest.raises(KeyExists):
        await store.create(PREFIX + "a", vm("a"))


async def test_update_and_delete_compare_and_swap(store: Store) -> None:
    a = await store.create(PREFIX + "a", vm("a"))
    await store.update(PREFIX + "a", vm("a", running=False), a.revision)
    with pytest.raises(RevisionConflict):
        await store.update(PREFIX + "a", vm("a", running=True), a.revision)
    with pytest.raises(RevisionConflict):
        await store.delete(PREFIX + "a", a.revision)
    with pytest.raises(KeyNotFound):
        await store.update(PREFIX + "missing", vm("missing"), 1)


async def test_list_at_an_old_revision_reads_that_snapshot(store: Store) -> None:
    a = await store.create(PREFIX + "a", vm("a", running=True))
    await store.create(PREFIX + "b", vm("b"))
    snapshot = store.revision
    await store.update(PREFIX + "a", vm("a", running=False), a.revision)
    await store.delete(PREFIX + "b", store.get(PREFIX + "b").revision)  # type: ignore[union-attr]
    await store.create(PREFIX + "c", vm("c"))
    old, at = await store.list(PREFIX, revision=snapshot)
    assert at == snapshot
    assert [(e.obj["metadata"]["name"], e.obj["spec"].get("running")) for e in old] == \
        [("a", True), ("b", None)]
    now, _ = await store.list(PREFIX)
    assert [e.obj["metadata"]["name"] for e in now] == ["a", "c"]


async def test_pages_follow_key_order_from_start_after(store: Store) -> None:
    for name in "edcba":
        await store.create(PREFIX + name, vm(name))
    first, rev = await store.list(PREFIX, limit=2)
    second, _ = await store.list(PREFIX, revision=rev, start_after=first[-1].key, limit=2)
    assert [e.key[-1] for e in first + second] == ["a", "b", "c", "d"]


async def test_list_beyond_the_current_revision_is_refused(store: Store) -> None:
    with pytest.raises(FutureRevision):
        await store.list(PREFIX, revision=store.revision + 5)


async def test_watch_replays_history_then_streams_live(store: Store) -> None:
    a = await store.create(PREFIX + "a", vm("a"))
    a2 = await store.update(PREFIX + "a", vm("a", running=False), a.revision)
    watch = store.watch(PREFIX, a.revision)
    replayed = await watch.replay()
    assert [(e.type, e.entry.revision) for e in replayed] == [("MODIFIED", a2.revision)]
    assert replayed[0].prev is not None and replayed[0].prev.revision == a.revision
    gone = await store.delete(PREFIX + "a", a2.revision)
    live = await asyncio.wait_for(watch.next(), 2)
    assert live is not None and (live.type, live.entry.revision) == ("DELETED", gone.revision)
    assert live.entry.obj["metadata"]["name"] == "a"
    watch.close()
    assert await watch.next() is None


async def test_watch_only_sees_its_prefix(store: Store) -> None:
    watch = store.watch(PREFIX, store.revision)
    await store.create("/compute.evroclabs.net/virtualmachines/other/x", vm("x"))
    await store.create(PREFIX + "y", vm("y"))
    event = await asyncio.wait_for(watch.next(), 2)
    assert event is not None and event.entry.key == PREFIX + "y"
    watch.close()


async def test_compaction_drops_history_and_watching_below_it_is_refused(
        store: Store) -> None:
    entry = await store.create(PREFIX + "a", vm("a"))
    for i in range(10):
        entry = await store.update(PREFIX + "a", vm("a", n=i), entry.revision)
    compacted = await store.compact(keep=3)
    assert compacted == store.revision - 3
    with pytest.raises(Compacted):
        store.watch(PREFIX, 1)
    with pytest.raises(Compacted):
        await store.list(PREFIX, revision=1)
    assert store.get(PREFIX + "a").obj["spec"]["n"] == 9  # type: ignore[union-attr]


async def test_state_survives_reopening_and_revisions_never_repeat(
        store: Store, store_url: str) -> None:
    a = await store.create(PREFIX + "a", vm("a"))
    b = await store.create(PREFIX + "b", vm("b"))
    await store.delete(PREFIX + "b", b.revision)
    await store.compact(keep=0)
    last = store.revision
    store = await reopen(store, store_url)
    assert store.revision == last
    assert store.get(PREFIX + "a").revision == a.revision  # type: ignore[union-attr]
    assert store.get(PREFIX + "b") is None
    c = await store.create(PREFIX + "c", vm("c"))
    assert c.revision == last + 1


async def test_concurrent_writers_to_one_key_never_lose_an_update(store: Store) -> None:
    """Read-modify-write with CAS from 20 writers: every increment lands exactly once."""
    await store.create(PREFIX + "counter", vm("counter", n=0))

    async def increment() -> None:
        while True:
            entry = store.get(PREFIX + "counter")
            assert entry is not None
            try:
                await store.update(PREFIX + "counter", vm("counter", n=entry.obj["spec"]["n"] + 1),
                                   entry.revision)
                return
            except RevisionConflict:
                await asyncio.sleep(0)

    await asyncio.gather(*(increment() for _ in range(20)))
    assert store.get(PREFIX + "counter").obj["spec"]["n"] == 20  # type: ignore[union-attr]


async def test_concurrent_creates_are_batched_and_all_durable(
        store: Store, store_url: str) -> None:
    entries = await asyncio.gather(*(store.create(PREFIX + f"vm-{i:04d}", vm(f"vm-{i}"))
                                     for i in range(500)))
    assert sorted(e.revision for e in entries) == list(range(1, 501))
    store = await reopen(store, store_url)
    listed, _ = await store.list(PREFIX)
    assert len(listed) == 500


async def test_a_failed_commit_applies_nothing_and_reports_unavailable(
        sqlite_store: LogStore, monkeypatch: pytest.MonkeyPatch) -> None:
    def disk_full(rows: object) -> None:
        raise OSError("database or disk is full")

    store = sqlite_store
    before = store.revision
    monkeypatch.setattr(store.backend, "append", disk_full)
    with pytest.raises(StoreUnavailable):
        await store.create(PREFIX + "a", vm("a"))
    assert store.get(PREFIX + "a") is None
    assert store.revision == before


def _writer(path: str, acked: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    async def main() -> None:
        store = LogStore(SQLiteLog(Path(path)))
        await store.open()

        async def one(i: int) -> None:
            await store.create(PREFIX + f"vm-{i:05d}", vm(f"vm-{i}"))
            acked.put(i)

        await asyncio.gather(*(one(i) for i in range(100_000)))
    asyncio.run(main())


def test_kill_9_loses_no_acknowledged_write(tmp_path: Path) -> None:
    acked: multiprocessing.Queue = multiprocessing.get_context("fork").Queue()  # type: ignore[type-arg]
    proc = multiprocessing.get_context("fork").Process(
        target=_writer, args=(str(tmp_path / "store.db"), acked))
    proc.start()
    seen: list[int] = []
    while len(seen) < 2000:
        seen.append(acked.get(timeout=30))
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    while not acked.empty():
        seen.append(acked.get())

    async def check() -> set[str]:
        store = LogStore(SQLiteLog(tmp_path / "store.db"))
        await store.open()
        listed, _ = await store.list(PREFIX)
        await store.close()
        return {e.key for e in listed}

    present = asyncio.run(check())
    missing = [i for i in seen if PREFIX + f"vm-{i:05d}" not in present]
    assert not missing, f"{len(missing)} acknowledged writes lost"




async def test_a_read_at_a_revision_being_compacted_is_refused_not_partial(
        store: Store) -> None:
    for i in range(5):
        await store.create(PREFIX + f"o{i}", vm(f"o{i}"))
    snapshot = store.revision
    for i in range(5):
        entry = store.get(PREFIX + f"o{i}")
        assert entry is not None
        await store.update(entry.key, vm(f"o{i}", x=1), entry.revision)
    compaction = asyncio.create_task(store.compact(keep=1))
    await asyncio.sleep(0)  # compaction holds the log while it deletes history
    try:
        entries, _ = await store.list(PREFIX, revision=snapshot)
    except Compacted:
        pass
    else:
        assert len(entries) == 5
    await compaction


async def test_a_cancelled_writer_still_settles_its_key(store: Store) -> None:
    """A caller that gives up does not un-queue its write: a second create sees the first."""
    first = asyncio.create_task(store.create(PREFIX + "a", vm("a", v=1)))
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(KeyExists):
        await store.create(PREFIX + "a", vm("a", v=2))
    assert store.get(PREFIX + "a").obj["spec"]["v"] == 1  # type: ignore[union-attr]


async def test_closing_waits_for_the_commit_in_progress(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LogStore(SQLiteLog(tmp_path / "store.db"))
    await store.open()
    commit = store.backend.append

    def slow_commit(rows: Any) -> None:
        time.sleep(0.3)
        commit(rows)

    monkeypatch.setattr(store.backend, "append", slow_commit)
    writer = asyncio.create_task(store.create(PREFIX + "a", vm("a")))
    await asyncio.sleep(0.05)
    await store.close()
    assert writer.done() and writer.result().revision == 1
    reopened = LogStore(SQLiteLog(tmp_path / "store.db"))
    await reopened.open()
    assert reopened.get(PREFIX + "a") is not None
    await reopened.close()


async def test_listing_uses_key_order_across_adds_and_deletes(store: Store) -> None:
    for name in ("b", "d"):
        await store.create(PREFIX + name, vm(name))
    assert [e.key[-1] for e in (await store.list(PREFIX))[0]] == ["b", "d"]
    await store.create(PREFIX + "a", vm("a"))
    gone = store.get(PREFIX + "d")
    assert gone is not None
    await store.delete(gone.key, gone.revision)
    await store.create(PREFIX + "c", vm("c"))
    assert [e.key[-1] for e in (await store.list(PREFIX))[0]] == ["a", "b", "c"]
    assert [e.key[-1] for e in (await store.list(PREFIX, start_after=PREFIX + "a",
                                                 limit=1))[0]] == ["b"]
