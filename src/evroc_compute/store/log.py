"""LogStore: etcd semantics over an append-only SQL log, with the current state in memory.

- Reads at the latest revision come from memory (a dict per resource), so GET and LIST never
  touch SQL; reads at older revisions (continue tokens, explicit resourceVersion) and watch
  replay read the log.
- Writes are compare-and-swapped in memory (one event loop, so the check is atomic), then
  queued; a single writer commits everything queued in one transaction (group commit) and
  only then publishes the new state, resolves the callers and notifies watchers. A 2xx is
  therefore always on disk, and nobody ever observes a write that could still be lost.
- Writes to the same key wait for the previous in-flight write to settle, so a failed
  transaction can never leave a later write built on state that was not persisted.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import logging
import time
from typing import Any, Generic, TypeVar

import orjson
from prometheus_client import Counter, Histogram

from evroc_compute.store.base import (
    Compacted,
    Entry,
    Event,
    EventType,
    FutureRevision,
    KeyExists,
    KeyNotFound,
    LogBackend,
    LogReader,
    RevisionConflict,
    Row,
    StoreUnavailable,
    lean,
)

log = logging.getLogger(__name__)

# A watcher that falls this far behind is closed (the client re-watches from its last
# resourceVersion) rather than buffering without bound.
MAX_WATCH_BACKLOG = 100_000

COMMIT_SECONDS = Histogram(
    "evroc_store_commit_duration_seconds", "Time to make one batch of writes durable.",
    buckets=(.0005, .001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5))
COMMIT_ROWS = Histogram(
    "evroc_store_commit_batch_size", "Writes made durable by one transaction (group commit).",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000))
COMMIT_FAILURES = Counter("evroc_store_commit_failures_total",
                          "Transactions that failed (disk full, I/O error): nothing was applied.")


# Queued writes: (row to insert, entry to publish, previous entry, the caller's future).
_Batch = list[tuple[Row, Entry, Entry | None, "asyncio.Future[Entry]"]]


_Rows = list[Row]


def _resource_of(key: str) -> str:
    """'/group/plural/ns/name' -> '/group/plural/': the unit memory is indexed by."""
    second = key.index("/", key.index("/", 1) + 1)
    return key[: second + 1]


def _entry(row: Row) -> Entry:
    obj = orjson.loads(row.value)
    if isinstance(obj.get("metadata"), dict):
        obj["metadata"].pop("managedFields", None)  # our own parse: no copy needed
    return Entry(row.key, row.revision, row.create_revision, row.value, obj)


class _Watcher:
    def __init__(self, store: LogCache[Any], prefix: str, after: int) -> None:
        self.store, self.prefix, self.after = store, prefix, after
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self.closed = False

    def push(self, event: Event) -> None:
        if self.closed:
            return
        if self.queue.qsize() >= MAX_WATCH_BACKLOG:
            log.warning("closing a watch on %s: %d events behind", self.prefix, MAX_WATCH_BACKLOG)
            self.close()
            return
        self.queue.put_nowait(event)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.store._unsubscribe(self)
            self.queue.put_nowait(None)

    async def replay(self) -> list[Event]:
        """Logged events after `after` up to the live point; call once, before `next`."""
        # Subscribed before this (in LogStore.watch), so nothing falls between the two.
        live_from = self.store.revision
        if self.after >= live_from:
            return []
        rows, prevs = await self.store._read_checked(self.after, self.store._replay_rows,
                                                     self.prefix, self.after, live_from)
        events = []
        for row in rows:
            prev = prevs.get(row.prev_revision)
            kind: EventType = "DELETED" if row.deleted else "ADDED" if row.created \
                else "MODIFIED"
            events.append(Event(kind, _entry(row), _entry(prev) if prev else None))
            self.after = row.revision
        return events

    def idle(self) -> bool:
        """Nothing published is waiting here: a bookmark at the store's revision is true."""
        return self.queue.empty()

    def drain(self) -> tuple[list[Event], bool]:
        """Every live event already queued, without waiting; and whether the watch closed."""
        events: list[Event] = []
        while not self.queue.empty():
            item = self.queue.get_nowait()
            if item is None:
                self.queue.put_nowait(None)
                return events, True
            if item.entry.revision > self.after:
                self.after = item.entry.revision
                events.append(item)
        return events, False

    async def next(self) -> Event | None:
        """The next live event, None once closed. Cancel-safe: a timeout loses nothing."""
        while True:
            item = await self.queue.get()
            if item is None:
                self.queue.put_nowait(None)  # stay closed for later calls
                return None
            if item.entry.revision > self.after:
                self.after = item.entry.revision
                return item


B = TypeVar("B", bound=LogReader)


class LogCache(Generic[B]):
    """The current state in memory, reads, watches and publishing: what both stores share."""

    def __init__(self, backend: B) -> None:
        self.backend = backend
        self._resources: dict[str, dict[str, Entry]] = {}
        self._revision = 0
        self._compacted = 0
        self._inflight: dict[str, asyncio.Future[Entry]] = {}
        self._watchers: dict[str, list[_Watcher]] = {}
        self._read_lock = asyncio.Lock()
        # Key order per resource, kept until a key is added or removed (lists sort once).
        self._sorted_keys: dict[str, list[str]] = {}

    async def open(self) -> None:
        self._load(*await asyncio.to_thread(self.backend.load))

    def _load(self, rows: list[Row], revision: int, compacted: int) -> None:
        self._resources.clear()
        self._sorted_keys.clear()
        for row in rows:
            entry = _entry(row)
            self._resources.setdefault(_resource_of(row.key), {})[row.key] = entry
        self._revision, self._compacted = revision, compacted

    def _close_watches(self) -> None:
        for watchers in list(self._watchers.values()):
            for watcher in list(watchers):
                watcher.close()

    async def close(self) -> None:
        self._close_watches()
        await asyncio.to_thread(self.backend.close)

    @property
    def revision(self) -> int:
        return self._revision

    @property
    def compacted_revision(self) -> int:
        return self._compacted

    # ---- reads ------------------------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        return self._resources.get(_resource_of(key), {}).get(key)

    def current(self, prefix: str) -> list[Entry]:
        objects = self._resources.get(_resource_of(prefix), {})
        return [entry for key, entry in objects.items() if key.startswith(prefix)]

    async def sync(self, revision: int = 0) -> bool:
        return True  # one server owns the data: memory is the latest state

    async def list(self, prefix: str, *, revision: int = 0, start_after: str = "",
                   limit: int = 0) -> tuple[list[Entry], int]:
        if revision and revision < self._compacted:
            raise Compacted(revision, self._compacted)
        if revision > self._revision:
            raise FutureRevision(revision, self._revision)
        if revision in (0, self._revision):
            resource = _resource_of(prefix)
            objects = self._resources.get(resource, {})
            keys = self._sorted_keys.get(resource)
            if keys is None:
                keys = self._sorted_keys[resource] = sorted(objects)
            first = bisect.bisect_right(keys, max(start_after, prefix))
            found = []
            for key in itertools.islice(keys, first, None):
                if not key.startswith(prefix):
                    break
                found.append(objects[key])
                if len(found) == limit:
                    break
            return found, self._revision
        rows = await self._read_checked(revision, self.backend.rows_at, prefix, revision,
                                        start_after, limit)
        return [_entry(r) for r in rows], revision

    async def _read_checked(self, revision: int, fn: Any, *args: Any) -> Any:
        """Read the log at `revision`, refusing it if compaction got there first."""
        async with self._read_lock:
            if revision < self._compacted:
                raise Compacted(revision, self._compacted)
            return await asyncio.to_thread(fn, *args)

    def _replay_rows(self, prefix: str, after: int, upto: int) -> tuple[_Rows, dict[int, Row]]:
        """Rows after `after` and the rows they replaced, in one trip to the worker thread."""
        rows = self.backend.rows_after(prefix, after, upto)
        return rows, self.backend.rows([r.prev_revision for r in rows if r.prev_revision])

    # ---- publishing --------------------------------------------------------------------

    async def _settle(self, key: str) -> None:
        """Wait until no write to `key` is queued or committing."""
        while (pending := self._inflight.get(key)) is not None:
            await asyncio.wait([pending])

    def _settled(self, key: str, future: asyncio.Future[Entry]) -> None:
        if self._inflight.get(key) is future:
            del self._inflight[key]

    def _publish_one(self, row: Row, entry: Entry, prev: Entry | None) -> None:
        """Make one committed row the current state and tell the watchers, in revision order."""
        resource = _resource_of(row.key)
        objects = self._resources.setdefault(resource, {})
        if row.deleted:
            objects.pop(row.key, None)
            self._sorted_keys.pop(resource, None)
            kind: EventType = "DELETED"
        else:
            if row.key not in objects:
                self._sorted_keys.pop(resource, None)
            objects[row.key] = entry
            kind = "ADDED" if row.created else "MODIFIED"
        self._revision = row.revision
        watchers = self._watchers.get(resource)
        if watchers:
            event = Event(kind, entry, prev)
            for watcher in list(watchers):
                if row.key.startswith(watcher.prefix):
                    watcher.push(event)

    # ---- watch and compaction -----------------------------------------------------------

    def watch(self, prefix: str, after_revision: int) -> _Watcher:
        if after_revision and after_revision < self._compacted:
            raise Compacted(after_revision, self._compacted)
        if after_revision > self._revision:
            raise FutureRevision(after_revision, self._revision)
        watcher = _Watcher(self, prefix, after_revision)
        self._watchers.setdefault(_resource_of(prefix), []).append(watcher)
        return watcher

    def _unsubscribe(self, watcher: _Watcher) -> None:
        watchers = self._watchers.get(_resource_of(watcher.prefix), [])
        if watcher in watchers:
            watchers.remove(watcher)

    async def compact(self, keep: int) -> int:
        raise NotImplementedError

    async def compact_forever(self, interval: float, keep: int) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.compact(keep)
            except Exception:
                log.exception("compaction failed")


class LogStore(LogCache[LogBackend]):
    """The store of one server that owns its log (SQLite): CAS in memory, group commit."""

    def __init__(self, backend: LogBackend) -> None:
        super().__init__(backend)
        self._next_revision = 1
        self._queue: _Batch = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._committing = False

    async def open(self) -> None:
        await super().open()
        self._next_revision = self._revision + 1
        self._writer = asyncio.create_task(self._write_loop(), name="store-writer")

    async def close(self) -> None:
        if self._writer:
            while self._queue or self._committing:  # never cancel a commit midway
                await asyncio.sleep(0.001)
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        await super().close()

    # ---- writes -----------------------------------------------------------------------

    async def create(self, key: str, obj: dict[str, Any]) -> Entry:
        await self._settle(key)
        if self.get(key) is not None:
            raise KeyExists(key)
        return await self._enqueue(key, obj, None, created=True, deleted=False)

    async def update(self, key: str, obj: dict[str, Any], expected_revision: int) -> Entry:
        await self._settle(key)
        current = self.get(key)
        if current is None:
            raise KeyNotFound(key)
        if expected_revision and current.revision != expected_revision:
            raise RevisionConflict(current)
        return await self._enqueue(key, obj, current, created=False, deleted=False)

    async def delete(self, key: str, expected_revision: int,
                     last: dict[str, Any] | None = None) -> Entry:
        await self._settle(key)
        current = self.get(key)
        if current is None:
            raise KeyNotFound(key)
        if expected_revision and current.revision != expected_revision:
            raise RevisionConflict(current)
        return await self._enqueue(key, last if last is not None else orjson.loads(current.raw),
                                   current, created=False, deleted=True)

    async def _enqueue(self, key: str, obj: dict[str, Any], prev: Entry | None, *,
                       created: bool, deleted: bool) -> Entry:
        revision = self._next_revision
        self._next_revision += 1
        obj["metadata"]["resourceVersion"] = str(revision)
        raw = orjson.dumps(obj)
        create_revision = revision if prev is None else prev.create_revision
        row = Row(revision, key, created, deleted, create_revision,
                  prev.revision if prev else 0, raw)
        entry = Entry(key, revision, create_revision, raw, lean(obj))
        future: asyncio.Future[Entry] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        self._queue.append((row, entry, prev, future))
        self._wake.set()
        # Shielded: a caller that goes away does not un-queue a write that may still commit;
        # the writer settles the future and clears `_inflight` either way.
        return await asyncio.shield(future)

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._queue = self._queue, []
            if not batch:
                continue
            self._committing = True
            started = time.perf_counter()
            try:
                await asyncio.to_thread(self.backend.append, [item[0] for item in batch])
                COMMIT_SECONDS.observe(time.perf_counter() - started)
                COMMIT_ROWS.observe(len(batch))
            except Exception as problem:  # disk full, I/O error: nothing was applied
                COMMIT_FAILURES.inc()
                log.error("store write of %d rows failed: %s", len(batch), problem)
                for row, _, _, future in batch:
                    self._settled(row.key, future)
                    if not future.done():
                        future.set_exception(StoreUnavailable(str(problem)))
                        future.exception()  # retrieved: a departed caller is no error
                continue
            finally:
                self._committing = False
            self._publish(batch)

    def _publish(self, batch: _Batch) -> None:
        for row, entry, prev, future in batch:
            self._publish_one(row, entry, prev)
            self._settled(row.key, future)
            if not future.done():
                future.set_result(entry)

    async def compact(self, keep: int) -> int:
        target = self._revision - keep
        if target <= self._compacted:
            return self._compacted
        async with self._read_lock:  # no log read runs while history is deleted
            self._compacted = target  # later readers of older revisions get Compacted
            await asyncio.to_thread(self.backend.compact, target)
        return target
