"""Backup while writes go on, then restore and migrate: one revision, nothing lost, nothing
from after it, revisions kept (so resourceVersions and watches carry over)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from evroc_compute.store import backup, urls
from evroc_compute.store.base import StoreError
from tests import postgres

PREFIX = "/compute.evroclabs.net/virtualmachines/default/"


async def test_a_backup_under_load_restores_exactly_what_was_acknowledged_before_it(
        store_url: str, tmp_path: Path) -> None:
    store = await asyncio.to_thread(urls.store, store_url)
    await store.open()
    acked: dict[str, int] = {}  # key -> acknowledged creation revision
    deleted: dict[str, int] = {}  # key -> acknowledged deletion revision
    stop = asyncio.Event()

    async def writer(who: int) -> None:
        i = 0
        while not stop.is_set():
            key = PREFIX + f"w{who}-{i}"
            entry = await store.create(key, {"metadata": {"name": key}})
            acked[key] = entry.revision
            if i % 3 == 0:  # history too: updates and deletes
                deleted[key] = (await store.delete(key, entry.revision)).revision
            i += 1

    writers = [asyncio.create_task(writer(w)) for w in range(8)]
    while len(acked) - len(deleted) < 200:
        await asyncio.sleep(0.01)

    def take_backup() -> int:
        source = urls.backend(store_url)  # as `store backup` does, beside the server
        try:
            with source.snapshot() as snapshot:
                backup.write(snapshot, tmp_path / "backup.gz")
                return snapshot.revision
        finally:
            source.close()

    revision = await asyncio.to_thread(take_backup)
    await asyncio.sleep(0.1)  # and more writes after it
    stop.set()
    await asyncio.gather(*writers)
    assert max(acked.values()) > revision
    await store.close()

    restored_url = urls.default_url(tmp_path / "restored")

    def restore() -> None:
        target = urls.backend(restored_url)
        try:
            with backup.read(tmp_path / "backup.gz") as snapshot:
                target.restore(snapshot)
        finally:
            target.close()

    await asyncio.to_thread(restore)
    restored = await asyncio.to_thread(urls.store, restored_url)
    await restored.open()
    assert restored.revision == revision
    listed, _ = await restored.list(PREFIX)
    # Live at the backup's revision: created at or before it, not deleted by then (a delete
    # acknowledged after the backup leaves the object in it).
    assert {e.key: e.revision for e in listed} == \
        {key: rev for key, rev in acked.items()
         if rev <= revision and deleted.get(key, revision + 1) > revision}
    assert all(e.obj["metadata"]["resourceVersion"] == str(e.revision) for e in listed)
    assert (await restored.create(PREFIX + "next", {"metadata": {"name": "n"}})).revision == \
        revision + 1
    await restored.close()
    with pytest.raises(StoreError, match="not empty"):
        await asyncio.to_thread(restore)


@pytest.mark.slow
async def test_migrating_sqlite_to_postgresql_keeps_revisions_and_history(
        tmp_path: Path) -> None:
    sqlite_url = urls.default_url(tmp_path)
    source = await asyncio.to_thread(urls.store, sqlite_url)
    await source.open()
    first = await source.create(PREFIX + "a", {"metadata": {"name": "a"}, "n": 1})
    second = await source.update(PREFIX + "a", {"metadata": {"name": "a"}, "n": 2},
                                 first.revision)
    await source.close()
    with postgres.database() as url:
        def migrate() -> None:
            old, new = urls.backend(sqlite_url), urls.backend(url)
            with old.snapshot() as snapshot:
                new.restore(snapshot)
            old.close()
            new.close()
        await asyncio.to_thread(migrate)
        moved = await asyncio.to_thread(urls.store, url)
        await moved.open()
        entry = moved.get(PREFIX + "a")
        assert entry is not None and entry.raw == second.raw
        watch = moved.watch(PREFIX, first.revision)  # a client's watch resumes
        assert [e.entry.raw for e in await watch.replay()] == [second.raw]
        watch.close()
        await moved.close()
