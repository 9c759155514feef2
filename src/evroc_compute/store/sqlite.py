"""The embedded backend: kine's log table in SQLite, WAL mode, fsync on every commit.

`synchronous=FULL` in WAL mode syncs the WAL at each commit, so a batch the writer has
committed survives kill -9 and power loss. Writes and compaction share one connection
(SQLite has one writer); reads use their own, which WAL lets run alongside. With a single
server process owning the file, compare-and-swap is decided by LogStore in memory (the
PostgreSQL backend, shared by several servers, decides it in the database).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from evroc_compute.store.base import Row, Snapshot, StoreError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS log (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    created INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    create_revision INTEGER NOT NULL,
    prev_revision INTEGER NOT NULL,
    value BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS log_name_id ON log (name, id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

_COLUMNS = "id, name, created, deleted, create_revision, prev_revision, value"


def _prefix_end(prefix: str) -> str:
    return prefix + "\U0010ffff"


def _row(t: tuple[int, str, int, int, int, int, bytes]) -> Row:
    return Row(t[0], t[1], bool(t[2]), bool(t[3]), t[4], t[5], bytes(t[6]))


class SQLiteLog:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._writer = self._connect(path)
        self._writer.executescript(_SCHEMA)
        self._reader = self._connect(path)
        self._write_lock = threading.Lock()

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=10000")
        return conn

    def load(self) -> tuple[list[Row], int, int]:
        rows = self._reader.execute(
            f"SELECT {_COLUMNS} FROM log WHERE id IN (SELECT MAX(id) FROM log GROUP BY name) "
            "AND deleted = 0").fetchall()
        newest = self._reader.execute("SELECT COALESCE(MAX(id), 0) FROM log").fetchone()[0]
        meta = dict(self._reader.execute("SELECT key, value FROM meta").fetchall())
        compacted = meta.get("compacted", 0)
        # Compaction can delete the newest tombstones; revisions must still never repeat.
        return [_row(r) for r in rows], max(newest, compacted), compacted

    def append(self, rows: list[Row]) -> None:
        with self._write_lock:
            try:
                self._writer.execute("BEGIN IMMEDIATE")
                self._writer.executemany(
                    f"INSERT INTO log ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(r.revision, r.key, int(r.created), int(r.deleted), r.create_revision,
                      r.prev_revision, r.value) for r in rows])
                self._writer.execute("COMMIT")
            except BaseException:
                if self._writer.in_transaction:
                    self._writer.execute("ROLLBACK")
                raise

    def rows_at(self, prefix: str, revision: int, start_after: str, limit: int) -> list[Row]:
        sql = (f"SELECT {_COLUMNS} FROM log WHERE id IN ("
               "SELECT MAX(id) FROM log WHERE name >= ? AND name < ? AND name > ? AND id <= ? "
               "GROUP BY name) AND deleted = 0 ORDER BY name")
        params: list[object] = [prefix, _prefix_end(prefix), start_after, revision]
        if limit:
            sql += " LIMIT ?"
            params.append(limit)
        return [_row(r) for r in self._reader.execute(sql, params).fetchall()]

    def rows_after(self, prefix: str, after: int, upto: int) -> list[Row]:
        return [_row(r) for r in self._reader.execute(
            f"SELECT {_COLUMNS} FROM log WHERE id > ? AND id <= ? AND name >= ? AND name < ? "
            "ORDER BY id", (after, upto, prefix, _prefix_end(prefix))).fetchall()]

    def rows(self, revisions: list[int]) -> dict[int, Row]:
        found: dict[int, Row] = {}
        for start in range(0, len(revisions), 500):  # SQLite's bound-parameter limit
            chunk = revisions[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for t in self._reader.execute(f"SELECT {_COLUMNS} FROM log WHERE id IN ({marks})",
                                          chunk):
                found[t[0]] = _row(t)
        return found

    def compact(self, target: int) -> int:
        """Drop rows superseded at or before `target` and tombstones at or before it."""
        with self._write_lock:
            self._writer.execute("BEGIN IMMEDIATE")
            try:
                self._writer.execute(
                    "DELETE FROM log WHERE id <= ? AND (deleted = 1 OR EXISTS ("
                    "SELECT 1 FROM log AS newer WHERE newer.name = log.name "
                    "AND newer.id > log.id AND newer.id <= ?))", (target, target))
                self._writer.execute(
                    "INSERT INTO meta (key, value) VALUES ('compacted', ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (target,))
                self._writer.execute("COMMIT")
            except BaseException:
                self._writer.execute("ROLLBACK")
                raise
        return target

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[Snapshot]:
        """Every retained row, read in one WAL snapshot while the server goes on writing."""
        conn = sqlite3.connect(self._path, isolation_level=None)
        try:
            conn.execute("BEGIN")  # the snapshot starts at the first read
            newest = conn.execute("SELECT COALESCE(MAX(id), 0) FROM log").fetchone()[0]
            compacted = dict(conn.execute("SELECT key, value FROM meta").fetchall()).get(
                "compacted", 0)
            rows = (_row(t) for t in conn.execute(f"SELECT {_COLUMNS} FROM log ORDER BY id"))
            yield Snapshot(max(newest, compacted), compacted, rows)
        finally:
            conn.close()

    def restore(self, snapshot: Snapshot) -> int:
        with self._write_lock:
            self._writer.execute("BEGIN IMMEDIATE")
            try:
                if self._writer.execute("SELECT EXISTS (SELECT 1 FROM log) OR EXISTS "
                                        "(SELECT 1 FROM meta)").fetchone()[0]:
                    raise StoreError("the target store is not empty; restore fills an empty one")
                count = 0
                for row in snapshot.rows:
                    self._writer.execute(
                        f"INSERT INTO log ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (row.revision, row.key, int(row.created), int(row.deleted),
                         row.create_revision, row.prev_revision, row.value))
                    count += 1
                self._writer.execute("INSERT INTO meta (key, value) VALUES ('compacted', ?)",
                                     (snapshot.compacted,))
                self._writer.execute("COMMIT")
            except BaseException:
                self._writer.execute("ROLLBACK")
                raise
        return count

    def close(self) -> None:
        self._writer.close()
        self._reader.close()
