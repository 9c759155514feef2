"""Serving a kind as another version of a stored kind: a Store that converts at its edge.

The handlers work on the served version (its schema, admission, managedFields and tables);
this wrapper turns what they store into the stored version and what they read back into the
served one. Keys under other prefixes (the namespace a request checks) pass through.
"""

from __future__ import annotations

from typing import Any

import orjson

from evroc_compute.api.kinds import StoredAs
from evroc_compute.store.base import Entry, Event, Store, Watch, lean


class ConvertingStore:
    def __init__(self, store: Store, stored_as: StoredAs) -> None:
        self.store, self.stored_as = store, stored_as
        self.prefix = stored_as.kind.key_prefix(None)

    @property
    def revision(self) -> int:
        return self.store.revision

    @property
    def compacted_revision(self) -> int:
        return self.store.compacted_revision

    def served(self, entry: Entry) -> Entry:
        if not entry.key.startswith(self.prefix):
            return entry
        # An entry's object lacks only managedFields; a kind that records none (events) is
        # converted from it without parsing the JSON again.
        stored = orjson.loads(entry.raw) if self.stored_as.kind.managed_fields else entry.obj
        obj = self.stored_as.from_storage(stored)
        return Entry(entry.key, entry.revision, entry.create_revision, orjson.dumps(obj),
                     lean(obj))

    def _stored(self, obj: dict[str, Any]) -> dict[str, Any]:
        return self.stored_as.to_storage(obj)

    def current(self, prefix: str) -> list[Entry]:
        return [self.served(e) for e in self.store.current(prefix)]

    async def sync(self, revision: int = 0) -> bool:
        return await self.store.sync(revision)

    def get(self, key: str) -> Entry | None:
        entry = self.store.get(key)
        return None if entry is None else self.served(entry)

    async def list(self, prefix: str, *, revision: int = 0, start_after: str = "",
                   limit: int = 0) -> tuple[list[Entry], int]:
        entries, read_at = await self.store.list(prefix, revision=revision,
                                                 start_after=start_after, limit=limit)
        return [self.served(e) for e in entries], read_at

    async def create(self, key: str, obj: dict[str, Any]) -> Entry:
        return self.served(await self.store.create(key, self._stored(obj)))

    async def update(self, key: str, obj: dict[str, Any], expected_revision: int) -> Entry:
        return self.served(await self.store.update(key, self._stored(obj), expected_revision))

    async def delete(self, key: str, expected_revision: int,
                     last: dict[str, Any] | None = None) -> Entry:
        stored_last = None if last is None else self._stored(last)
        return self.served(await self.store.delete(key, expected_revision, stored_last))

    def watch(self, prefix: str, after_revision: int) -> Watch:
        return _ConvertingWatch(self, self.store.watch(prefix, after_revision))

    async def compact(self, keep: int) -> int:
        return await self.store.compact(keep)

    async def close(self) -> None:
        """The wrapped store belongs to the server, not to this view of it."""


class _ConvertingWatch:
    def __init__(self, view: ConvertingStore, watch: Watch) -> None:
        self.view, self.watch = view, watch

    def _event(self, event: Event) -> Event:
        prev = None if event.prev is None else self.view.served(event.prev)
        return Event(event.type, self.view.served(event.entry), prev)

    async def replay(self) -> list[Event]:
        return [self._event(e) for e in await self.watch.replay()]

    async def next(self) -> Event | None:
        event = await self.watch.next()
        return None if event is None else self._event(event)

    def idle(self) -> bool:
        return self.watch.idle()

    def drain(self) -> tuple[list[Event], bool]:
        events, closed = self.watch.drain()
        return [self._event(e) for e in events], closed

    def close(self) -> None:
        self.watch.close()
