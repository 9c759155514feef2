"""The store's contract: a revisioned key-value log of Kubernetes objects, like etcd.

Every write gets the next global revision, which is the object's resourceVersion. Callers
(the HTTP handlers) only see `Store`; the SQL behind it is a `LogBackend` (SQLite now,
PostgreSQL later) that knows nothing about caching, batching or watches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol


@dataclass(frozen=True, slots=True)
class Entry:
    """One stored version of one object. `obj` is shared: never mutate it, copy via `raw`."""

    key: str
    revision: int
    create_revision: int
    raw: bytes  # the object as JSON, metadata.resourceVersion == str(revision)
    obj: dict[str, Any]


EventType = Literal["ADDED", "MODIFIED", "DELETED"]


@dataclass(frozen=True, slots=True)
class Event:
    type: EventType
    entry: Entry  # for DELETED: the last state, stamped with the deletion revision
    prev: Entry | None  # the state before this event, when still known


@dataclass(frozen=True, slots=True)
class Row:
    """A log row as the SQL backends store it (kine's layout)."""

    revision: int
    key: str
    created: bool
    deleted: bool
    create_revision: int
    prev_revision: int
    value: bytes


class StoreError(Exception):
    pass


class KeyExists(StoreError):
    pass


class KeyNotFound(StoreError):
    pass


class RevisionConflict(StoreError):
    """Compare-and-swap failed: the object changed since the caller read it."""

    def __init__(self, current: Entry | None) -> None:
        super().__init__("revision conflict")
        self.current = current


class Compacted(StoreError):
    """The requested revision is older than the retained history."""

    def __init__(self, requested: int, compacted: int) -> None:
        super().__init__(f"revision {requested} is compacted (oldest retained is {compacted})")
        self.requested, self.compacted = requested, compacted


class FutureRevision(StoreError):
    def __init__(self, requested: int, current: int) -> None:
        super().__init__(f"revision {requested} is newer than the current revision {current}")
        self.requested, self.current = requested, current


class StoreUnavailable(StoreError):
    """The write could not be made durable (disk full, I/O error); nothing was applied."""


class Watch(Protocol):
    async def replay(self) -> list[Event]: ...
    async def next(self) -> Event | None: ...
    def idle(self) -> bool: ...
    def drain(self) -> tuple[list[Event], bool]: ...
    def close(self) -> None: ...


class Store(Protocol):
    @property
    def revision(self) -> int: ...
    @property
    def compacted_revision(self) -> int: ...

    def get(self, key: str) -> Entry | None: ...

    def current(self, prefix: str) -> list[Entry]:
        """The latest entries under prefix, unordered, without waiting (for metrics)."""
        ...

    async def list(self, prefix: str, *, revision: int = 0, start_after: str = "",
                   limit: int = 0) -> tuple[list[Entry], int]:
        """Entries under prefix at `revision` (0 = latest), ordered by key; returns the
        entries and the revision they were read at."""
        ...

    async def create(self, key: str, obj: dict[str, Any]) -> Entry: ...
    async def update(self, key: str, obj: dict[str, Any], expected_revision: int) -> Entry: ...
    async def delete(self, key: str, expected_revision: int,
                     last: dict[str, Any] | None = None) -> Entry:
        """Remove key; its tombstone (and the DELETED event) carries `last` if given (the
        final state, e.g. without its last finalizer), else the current value."""
        ...

    def watch(self, prefix: str, after_revision: int) -> Watch:
        """Events under prefix with revision > after_revision; raises Compacted."""
        ...

    async def compact(self, keep: int) -> int: ...
    async def close(self) -> None: ...


class LogBackend(Protocol):
    """The SQL side: synchronous, called from a worker thread, one writer at a time."""

    def load(self) -> tuple[list[Row], int, int]:
        """Latest live row per key, the current revision, the compacted revision."""
        ...

    def append(self, rows: list[Row]) -> None:
        """Insert rows in one durable transaction; all or nothing."""
        ...

    def rows_at(self, prefix: str, revision: int, start_after: str, limit: int) -> list[Row]: ...
    def rows_after(self, prefix: str, after: int, upto: int) -> list[Row]: ...
    def rows(self, revisions: list[int]) -> dict[int, Row]: ...
    def compact(self, target: int) -> int: ...
    def close(self) -> None: ...
