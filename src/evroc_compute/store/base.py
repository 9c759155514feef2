"""The store's contract: a revisioned key-value log of Kubernetes objects, like etcd.

Every write gets the next global revision, which is the object's resourceVersion. Callers
(the HTTP handlers) only see `Store`; the SQL behind it is a `LogBackend` (SQLite: one
server owns the file) or a `SharedLogBackend` (PostgreSQL: several servers share it), which
know nothing about caching or watches.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal, Protocol


@dataclass(frozen=True, slots=True)
class Entry:
    """One stored version of one object. `obj` is shared: never mutate it, copy via `raw`.

    `obj` is the object without `metadata.managedFields` (`lean`): they are a third of a
    VM's memory and only writes need them, which parse `raw` for a private copy anyway.
    """

    key: str
    revision: int
    create_revision: int
    raw: bytes  # the object as JSON (managedFields included), resourceVersion == str(revision)
    obj: dict[str, Any]


def lean(obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` without metadata.managedFields (a new top level and metadata when it had them)."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or "managedFields" not in meta:
        return obj
    return {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}


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


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A store at one revision: every retained row up to it, in revision order (backups)."""

    revision: int
    compacted: int
    rows: Iterator[Row]


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

    async def sync(self, revision: int = 0) -> bool:
        """Bring the in-memory state up to the database: to `revision` if given (and it
        exists), else to every write committed before this call, by any server. False when
        the database cannot say (the state is what this server last saw)."""
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


class LogReader(Protocol):
    """What both SQL sides offer: synchronous, called from worker threads."""

    def load(self) -> tuple[list[Row], int, int]:
        """Latest live row per key, the current revision, the compacted revision."""
        ...

    def rows_at(self, prefix: str, revision: int, start_after: str, limit: int) -> list[Row]: ...
    def rows_after(self, prefix: str, after: int, upto: int) -> list[Row]: ...
    def rows(self, revisions: list[int]) -> dict[int, Row]: ...
    def snapshot(self) -> AbstractContextManager[Snapshot]: ...

    def restore(self, snapshot: Snapshot) -> int:
        """Fill an empty store with a snapshot's rows, revisions kept; returns the row count."""
        ...

    def close(self) -> None: ...


class LogBackend(LogReader, Protocol):
    """A log one server owns: it numbers the rows and decides compare-and-swap in memory."""

    def append(self, rows: list[Row]) -> None:
        """Insert rows in one durable transaction; all or nothing."""
        ...

    def compact(self, target: int) -> int: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    """One shared write's answer: its revision, or 0 and the key's latest revision."""

    revision: int
    latest: int


class SharedLogBackend(LogReader, Protocol):
    """A log several servers write: it numbers rows and decides compare-and-swap itself."""

    def commit(self, names: list[str], ops: list[int], expected: list[int],
               values: list[bytes]) -> list[Outcome]: ...

    def compact(self, keep: int) -> int: ...

    def poll(self, after: int, limit: int) -> tuple[list[Row], int]:
        """Rows after `after` in revision order, and the compacted revision."""
        ...

    def current_revision(self) -> int: ...
    def listen(self, wake: Callable[[], None], stopping: threading.Event) -> None: ...
