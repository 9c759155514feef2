"""SharedLogStore: the store of one of several API servers writing one database.

The memory state, reads and watches are LogCache's; what changes is who decides. The database
numbers rows and checks compare-and-swap (`SharedLogBackend.commit`); memory only follows it:
- **One order.** Every row reaches memory through `_apply` in revision order: this server's own
  batch straight from its writer when it follows on from memory's revision, everything else
  through the poller (`id > revision`), woken by NOTIFY, by this server's writes, by reads
  that find it behind, and every second regardless. So each server's watchers see every
  server's writes once, in order, with no gaps.
- **Read your writes.** A write is answered once memory has reached its revision; a conflict
  once memory has reached the key's latest revision, so a retry reads what it lost to.
- **Consistent reads.** `sync()` asks the database for its revision (one query shared by the
  requests that arrived before it started) and waits for the poller to get there.
- **Local checks only where they are safe.** Before a write, memory is brought to the revision
  the caller expects; then a mismatch in memory is a real conflict (memory is never ahead of
  the database), and a match still goes to the database, which may know newer.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from evroc_compute.store.base import (
    Entry,
    KeyExists,
    KeyNotFound,
    RevisionConflict,
    Row,
    SharedLogBackend,
    StoreUnavailable,
    lean,
)
from evroc_compute.store.log import LogCache, _entry

log = logging.getLogger(__name__)

CREATE, UPDATE, DELETE = 1, 2, 3
POLL_PAGE = 1000
POLL_FALLBACK = 1.0  # seconds between polls when nothing wakes the poller
CATCH_UP_TIMEOUT = 3.0  # as kube-apiserver waits for its watch cache on a consistent read


@dataclass
class _Write:
    key: str
    op: int
    expected: int  # the revision the database must still hold (0 for a create)
    obj: dict[str, Any]
    prev: Entry | None
    future: asyncio.Future[Entry]


class SharedLogStore(LogCache[SharedLogBackend]):
    def __init__(self, backend: SharedLogBackend) -> None:
        super().__init__(backend)
        self._queue: list[_Write] = []
        self._wake_writer = asyncio.Event()
        self._wake_poller = asyncio.Event()
        self._committing = False
        self._tasks: list[asyncio.Task[None]] = []
        self._waiting: list[tuple[int, int, Callable[[], None]]] = []  # heap by revision
        self._sequence = itertools.count()
        self._fetch: asyncio.Future[int] | None = None  # the next shared revision query
        self._fetcher: asyncio.Task[None] | None = None
        self._listening = threading.Event()  # set: the listener thread is to stop
        self._listener: threading.Thread | None = None

    async def open(self) -> None:
        await super().open()
        loop = asyncio.get_running_loop()
        self._tasks = [asyncio.create_task(self._write_loop(), name="store-writer"),
                       asyncio.create_task(self._poll_loop(), name="store-poller")]

        def notified() -> None:  # on the listener's thread
            if not self._listening.is_set():
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    loop.call_soon_threadsafe(self._wake_poller.set)
        self._listener = threading.Thread(target=self.backend.listen, name="store-listener",
                                          daemon=True, args=(notified, self._listening))
        self._listener.start()

    async def close(self) -> None:
        while self._queue or self._committing:  # never cancel a commit midway
            await asyncio.sleep(0.001)
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._listening.set()
        if self._listener is not None:
            await asyncio.to_thread(self._listener.join, 2.0)
        await super().close()

    # ---- catching up with the database --------------------------------------------------

    def _after(self, revision: int, callback: Callable[[], None]) -> None:
        """Call back once memory holds `revision` (at once if it does)."""
        if self._revision >= revision:
            callback()
            return
        heapq.heappush(self._waiting, (revision, next(self._sequence), callback))

    async def _reach(self, revision: int) -> bool:
        if self._revision >= revision:
            return True
        reached: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        def arrived() -> None:
            if not reached.done():
                reached.set_result(None)
        self._after(revision, arrived)
        self._wake_poller.set()
        try:
            async with asyncio.timeout(CATCH_UP_TIMEOUT):
                await reached
        except TimeoutError:
            return False
        return True

    async def _database_revision(self) -> int:
        """The database's revision, read by a query that started after this call."""
        if self._fetch is None:
            self._fetch = asyncio.get_running_loop().create_future()
            if self._fetcher is None or self._fetcher.done():
                self._fetcher = asyncio.create_task(self._run_fetches(), name="store-revision")
        return await asyncio.shield(self._fetch)

    async def _run_fetches(self) -> None:
        while self._fetch is not None:
            fetch, self._fetch = self._fetch, None
            try:
                fetch.set_result(await asyncio.to_thread(self.backend.current_revision))
            except Exception as problem:
                fetch.set_exception(problem)
                fetch.exception()  # retrieved: callers that left are no error

    async def sync(self, revision: int = 0) -> bool:
        if revision and revision <= self._revision:
            return True
        try:
            latest = await self._database_revision()
        except StoreUnavailable:
            return False
        return await self._reach(min(revision, latest) if revision else latest)

    async def _poll_loop(self) -> None:
        failing = False
        loop = asyncio.get_running_loop()
        while True:
            # A timer, not wait_for: before 3.12 wait_for can swallow a cancellation.
            fallback = loop.call_later(POLL_FALLBACK, self._wake_poller.set)
            await self._wake_poller.wait()
            fallback.cancel()
            self._wake_poller.clear()
            try:
                while True:
                    rows, compacted = await asyncio.to_thread(self.backend.poll, self._revision,
                                                              POLL_PAGE)
                    if not await self._apply_polled(rows, compacted):
                        break
                if failing:
                    log.warning("the store's database is reachable again")
                failing = False
            except StoreUnavailable as problem:
                if not failing:
                    log.error("cannot follow the store's database: %s", problem)
                failing = True
                await asyncio.sleep(0.2)
            except Exception:  # never die silently: this server would stop following the others
                log.exception("following the store's database failed; retrying")
                failing = True
                await asyncio.sleep(1.0)

    async def _apply_polled(self, rows: list[Row], compacted: int) -> bool:
        """Apply a page of polled rows; True if there may be more."""
        for row in rows:
            if row.revision <= self._revision:
                continue  # this server's writer published it already
            if row.revision != self._revision + 1:
                # Rows after the compacted revision are gapless; a gap means compaction
                # overtook this server: reload everything and make watchers start over.
                log.warning("store history from %d to %d was compacted before this server "
                            "read it; reloading", self._revision + 1, row.revision - 1)
                await self._relist()
                return True
            self._apply([(row, _entry(row))])
        self._compacted = max(self._compacted, compacted)
        return len(rows) == POLL_PAGE

    async def _relist(self) -> None:
        self._load(*await asyncio.to_thread(self.backend.load))
        self._close_watches()  # they re-watch from their revision and get 410 Gone, or resume
        self._advance()

    def _apply(self, rows: list[tuple[Row, Entry]]) -> None:
        for row, entry in rows:
            self._publish_one(row, entry, self.get(row.key))
        self._advance()

    def _advance(self) -> None:
        while self._waiting and self._waiting[0][0] <= self._revision:
            heapq.heappop(self._waiting)[2]()

    # ---- writes -----------------------------------------------------------------------

    async def create(self, key: str, obj: dict[str, Any]) -> Entry:
        await self._settle(key)
        if self.get(key) is not None:
            raise KeyExists(key)
        return await self._enqueue(key, CREATE, 0, obj, None)

    async def update(self, key: str, obj: dict[str, Any], expected_revision: int) -> Entry:
        while True:
            current = await self._current(key, expected_revision)
            try:
                return await self._enqueue(key, UPDATE, current.revision, obj, current)
            except RevisionConflict:
                if expected_revision:
                    raise  # unconditional: write over what the database had

    async def delete(self, key: str, expected_revision: int,
                     last: dict[str, Any] | None = None) -> Entry:
        while True:
            current = await self._current(key, expected_revision)
            value = last if last is not None else orjson.loads(current.raw)
            try:
                return await self._enqueue(key, DELETE, current.revision, value, current)
            except RevisionConflict:
                if expected_revision:
                    raise

    async def _current(self, key: str, expected: int) -> Entry:
        """The version to write over, as the caller expects it; memory is first brought to
        the expected revision, so a mismatch here is a conflict and not a stale memory."""
        await self._settle(key)
        if expected > self._revision and not await self.sync(expected):
            raise StoreUnavailable(f"this server has not caught up with revision {expected}")
        await self._settle(key)
        current = self.get(key)
        if current is None:
            raise KeyNotFound(key)
        if expected and current.revision != expected:
            raise RevisionConflict(current)
        return current

    async def _enqueue(self, key: str, op: int, expected: int, obj: dict[str, Any],
                       prev: Entry | None) -> Entry:
        future: asyncio.Future[Entry] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        self._queue.append(_Write(key, op, expected, obj, prev, future))
        self._wake_writer.set()
        return await asyncio.shield(future)

    async def _write_loop(self) -> None:
        while True:
            await self._wake_writer.wait()
            self._wake_writer.clear()
            batch, self._queue = self._queue, []
            if batch:
                self._committing = True
                try:
                    await self._commit(batch)
                finally:
                    self._committing = False

    async def _commit(self, batch: list[_Write]) -> None:
        for write in batch:
            write.obj["metadata"]["resourceVersion"] = ""  # the database numbers it
        try:
            outcomes = await asyncio.to_thread(
                self.backend.commit, [w.key for w in batch], [w.op for w in batch],
                [w.expected for w in batch], [orjson.dumps(w.obj) for w in batch])
        except Exception as problem:  # unreachable, timed out: the batch may or may not be in
            log.error("store write of %d rows failed: %s", len(batch), problem)
            for write in batch:
                self._fail(write, StoreUnavailable(
                    f"{problem}; the write may not have been applied"))
            self._wake_poller.set()  # what did commit shows up through the poller
            return
        ours: list[tuple[Row, Entry]] = []
        for write, outcome in zip(batch, outcomes, strict=True):
            if outcome.revision:
                ours.append(self._committed(write, outcome.revision))
            else:
                self._after(outcome.latest, self._refusal(write))
                self._wake_poller.set()
        if ours and ours[0][0].revision == self._revision + 1:
            self._apply(ours)  # nothing of another server's in between: no need to poll
        elif ours:
            self._wake_poller.set()

    def _committed(self, write: _Write, revision: int) -> tuple[Row, Entry]:
        obj = write.obj
        obj["metadata"]["resourceVersion"] = str(revision)
        raw = orjson.dumps(obj)
        prev = write.prev
        create_revision = prev.create_revision if prev and write.op != CREATE else revision
        row = Row(revision, write.key, write.op == CREATE, write.op == DELETE, create_revision,
                  prev.revision if prev and write.op != CREATE else 0, raw)
        entry = Entry(write.key, revision, create_revision, raw, lean(obj))

        def answer() -> None:
            self._settled(write.key, write.future)
            if not write.future.done():
                write.future.set_result(entry)
        self._after(revision, answer)
        return row, entry

    def _refusal(self, write: _Write) -> Callable[[], None]:
        return lambda: self._fail(write, self._conflict(write))

    def _conflict(self, write: _Write) -> Exception:
        current = self.get(write.key)
        if write.op == CREATE:
            return KeyExists(write.key)
        if current is None:
            return KeyNotFound(write.key)
        return RevisionConflict(current)

    def _fail(self, write: _Write, problem: Exception) -> None:
        self._settled(write.key, write.future)
        if not write.future.done():
            write.future.set_exception(problem)
            write.future.exception()  # retrieved: a departed caller is no error

    # ---- compaction ---------------------------------------------------------------------

    async def compact(self, keep: int) -> int:
        """Compact the shared log unless another server is at it (the database decides)."""
        async with self._read_lock:
            compacted = await asyncio.to_thread(self.backend.compact, keep)
        self._compacted = max(self._compacted, compacted)
        return self._compacted
