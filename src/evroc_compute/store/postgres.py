"""The shared backend: kine's log table in PostgreSQL, for several API servers on one database.

Revisions are gapless and follow commit order (../shared/reference/postgres-store.md, design
(c) + (d)): each server's writer sends its whole batch as one autocommit call to
`evroc_write()`, which takes a transaction advisory lock, reads `max(id)` and each key's latest
row in statements *after* the lock (so it sees every earlier commit), inserts the rows that
pass their compare-and-swap with consecutive revisions, and NOTIFYs. PostgreSQL makes a commit
visible before it releases the lock, so no snapshot ever holds revision N+1 without N: each
server's poller reads `id > last` and never meets a gap, no fill rows, no skipped events.

Stored values carry no meaningful resourceVersion (the revision is only known inside the
database); rows are stamped with their revision when read. Every failure to reach the
database is a `StoreUnavailable`; nothing here keeps a transaction open across a round trip
to the client, and every session has statement and idle-in-transaction timeouts so one stuck
connection cannot hold the write lock.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import psycopg
import psycopg_pool

from evroc_compute.store.base import (
    Compacted,
    Outcome,
    Row,
    Snapshot,
    StoreError,
    StoreUnavailable,
)

log = logging.getLogger(__name__)

CHANNEL = "evroc_compute_log"
# Advisory lock keys (arbitrary, fixed): one serialises writes, one compaction, one migration.
_WRITE_LOCK, _COMPACT_LOCK, _MIGRATE_LOCK = 0x65766301, 0x65766302, 0x65766303

# Ops as evroc_write() takes them.
CREATE, UPDATE, DELETE = 1, 2, 3

_SESSION = {
    "autocommit": True,
    "connect_timeout": 3,
    "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3,
    "options": "-c statement_timeout=10s -c idle_in_transaction_session_timeout=10s "
               "-c lock_timeout=10s",
}

# Versioned schema: each server applies what the database lacks, under an advisory lock, so
# servers of several versions starting at once agree. Append; never edit an applied step.
MIGRATIONS: list[tuple[int, str]] = [(1, f"""
CREATE TABLE log (
    id bigint PRIMARY KEY,
    name text COLLATE "C" NOT NULL,
    created boolean NOT NULL,
    deleted boolean NOT NULL,
    create_revision bigint NOT NULL,
    prev_revision bigint NOT NULL,
    value bytea NOT NULL
);
CREATE INDEX log_name_id ON log (name, id);
-- A safety net under the lock: two updates can never both follow one version of a key.
CREATE UNIQUE INDEX log_name_prev ON log (name, prev_revision) WHERE NOT created;
CREATE TABLE meta (key text PRIMARY KEY, value bigint NOT NULL);

CREATE FUNCTION evroc_write(p_names text[], p_ops smallint[], p_expected bigint[],
                            p_values bytea[])
RETURNS TABLE (revision bigint, latest bigint) LANGUAGE plpgsql AS $$
DECLARE
    next_id bigint;
    first_id bigint;
    cur_id bigint;
    cur_deleted boolean;
    cur_create bigint;
BEGIN
    PERFORM pg_advisory_xact_lock({_WRITE_LOCK});
    -- Later statements than the lock: each reads a snapshot with every earlier commit.
    SELECT GREATEST(COALESCE(max(l.id), 0),
                    COALESCE((SELECT m.value FROM meta m WHERE m.key = 'compacted'), 0)) + 1
      INTO next_id FROM log l;
    first_id := next_id;
    FOR i IN 1 .. COALESCE(array_length(p_names, 1), 0) LOOP
        cur_id := NULL;
        SELECT l.id, l.deleted, l.create_revision INTO cur_id, cur_deleted, cur_create
          FROM log l WHERE l.name = p_names[i] ORDER BY l.id DESC LIMIT 1;
        IF p_ops[i] = 1 THEN
            IF cur_id IS NOT NULL AND NOT cur_deleted THEN
                revision := 0; latest := cur_id; RETURN NEXT; CONTINUE;
            END IF;
            INSERT INTO log VALUES (next_id, p_names[i], true, false, next_id, 0, p_values[i]);
        ELSE
            IF cur_id IS NULL OR cur_deleted OR cur_id <> p_expected[i] THEN
                revision := 0; latest := COALESCE(cur_id, first_id - 1); RETURN NEXT; CONTINUE;
            END IF;
            INSERT INTO log VALUES (next_id, p_names[i], false, p_ops[i] = 3, cur_create, cur_id,
                                    p_values[i]);
        END IF;
        revision := next_id; latest := next_id; RETURN NEXT;
        next_id := next_id + 1;
    END LOOP;
    IF next_id > first_id THEN
        PERFORM pg_notify('{CHANNEL}', (next_id - 1)::text);
    END IF;
END $$;
""")]

_COLUMNS = "id, name, created, deleted, create_revision, prev_revision, value"


def _row(t: tuple[Any, ...]) -> Row:
    obj = orjson.loads(t[6])
    obj["metadata"]["resourceVersion"] = str(t[0])
    return Row(t[0], t[1], t[2], t[3], t[4], t[5], orjson.dumps(obj))


def _prefix_end(prefix: str) -> str:
    return prefix + "\U0010ffff"


@contextlib.contextmanager
def _unavailable(what: str) -> Iterator[None]:
    try:
        yield
    except (psycopg.OperationalError, psycopg.InterfaceError, psycopg_pool.PoolTimeout,
            psycopg.errors.QueryCanceled, psycopg.errors.LockNotAvailable) as problem:
        raise StoreUnavailable(f"PostgreSQL {what}: {str(problem).strip() or type(problem).__name__}"
                               ) from problem


class _Session:
    """One dedicated connection (the writer's, the poller's), reopened after a failure."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: psycopg.Connection[Any] | None = None

    def get(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self.close()
            self._conn = psycopg.connect(self.url, **_SESSION)  # type: ignore[arg-type]
        return self._conn

    @contextlib.contextmanager
    def use(self, what: str) -> Iterator[psycopg.Connection[Any]]:
        try:
            with _unavailable(what):
                yield self.get()
        except StoreUnavailable:
            self.close()  # the next use reconnects
            raise

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None


class PostgresLog:
    def __init__(self, url: str) -> None:
        self.url = url
        self._writer = _Session(url)
        self._poller = _Session(url)
        self._fetcher = _Session(url)
        self._pool = psycopg_pool.ConnectionPool(
            url, min_size=1, max_size=4, kwargs=dict(_SESSION), timeout=5,
            check=psycopg_pool.ConnectionPool.check_connection, open=False)
        self.migrate()
        self._pool.open()

    def migrate(self) -> None:
        """Bring the schema to the newest version (each step in its own transaction)."""
        with _unavailable("migration"), psycopg.connect(self.url, connect_timeout=5) as conn:
            conn.execute(f"SELECT pg_advisory_lock({_MIGRATE_LOCK})")
            conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations ("
                         "version integer PRIMARY KEY, applied timestamptz NOT NULL DEFAULT now())")
            conn.commit()
            applied = {v for (v,) in conn.execute("SELECT version FROM schema_migrations")}
            for version, sql in MIGRATIONS:
                if version not in applied:
                    log.info("applying PostgreSQL schema migration %d", version)
                    conn.execute(sql)  # type: ignore[arg-type]
                    conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
                    conn.commit()
            conn.execute(f"SELECT pg_advisory_unlock({_MIGRATE_LOCK})")
            conn.commit()

    @contextlib.contextmanager
    def _snapshot_txn(self, what: str) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection in one REPEATABLE READ snapshot."""
        with _unavailable(what), self._pool.connection() as conn:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            try:
                with conn.transaction():
                    yield conn
            finally:
                conn.isolation_level = None

    @staticmethod
    def _floor(conn: psycopg.Connection[Any]) -> tuple[int, int]:
        """The current and the compacted revision, in the connection's snapshot."""
        row = conn.execute("SELECT COALESCE((SELECT max(id) FROM log), 0), "
                           "COALESCE((SELECT value FROM meta WHERE key = 'compacted'), 0)"
                           ).fetchone()
        assert row is not None
        return max(row[0], row[1]), row[1]

    def load(self) -> tuple[list[Row], int, int]:
        with self._snapshot_txn("load") as conn:
            revision, compacted = self._floor(conn)
            rows = conn.execute(f"SELECT {_COLUMNS} FROM (SELECT DISTINCT ON (name) * FROM log "
                                "ORDER BY name, id DESC) latest WHERE NOT deleted").fetchall()
        return [_row(r) for r in rows], revision, compacted

    # ---- writes (the writer's session) ------------------------------------------------

    def commit(self, names: list[str], ops: list[int], expected: list[int],
               values: list[bytes]) -> list[Outcome]:
        """One batch in one call: per write its new revision or the key's latest one."""
        with self._writer.use("write") as conn:
            rows = conn.execute(
                "SELECT revision, latest FROM evroc_write(%s::text[], %s::smallint[], "
                "%s::bigint[], %b::bytea[])", (names, ops, expected, values)).fetchall()
        return [Outcome(r[0], r[1]) for r in rows]

    def compact(self, keep: int) -> int:
        """Drop history older than the newest `keep` revisions, if no other server is at it;
        returns the compacted revision either way."""
        with _unavailable("compaction"), self._pool.connection() as conn, conn.transaction():
            conn.execute("SET LOCAL statement_timeout = '10min'")
            locked = conn.execute(f"SELECT pg_try_advisory_xact_lock({_COMPACT_LOCK})").fetchone()
            revision, compacted = self._floor(conn)
            target = revision - keep
            if not (locked and locked[0]) or target <= compacted:
                return compacted
            conn.execute("DELETE FROM log WHERE id <= %(t)s AND (deleted OR EXISTS ("
                         "SELECT 1 FROM log newer WHERE newer.name = log.name "
                         "AND newer.id > log.id AND newer.id <= %(t)s))", {"t": target})
            conn.execute("INSERT INTO meta (key, value) VALUES ('compacted', %s) "
                         "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (target,))
        return target

    # ---- change feed (the poller's session, the listener's thread) --------------------

    def poll(self, after: int, limit: int) -> tuple[list[Row], int]:
        """Rows after `after` in revision order, and the compacted revision."""
        with self._poller.use("poll") as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS}, (SELECT value FROM meta WHERE key = 'compacted') "
                "FROM log WHERE id > %s ORDER BY id LIMIT %s", (after, limit)).fetchall()
        return [_row(r) for r in rows], (rows[-1][7] or 0) if rows else 0

    def current_revision(self) -> int:
        with self._fetcher.use("read") as conn:
            return self._floor(conn)[0]

    def listen(self, wake: Callable[[], None], stopping: threading.Event) -> None:
        """Call `wake` on every NOTIFY until `stopping`; reconnects (and wakes) after a failure.
        Runs on its own thread: NOTIFY only says "poll now", correctness is the poller's."""
        while not stopping.is_set():
            try:
                with psycopg.connect(self.url, **_SESSION) as conn:  # type: ignore[arg-type]
                    conn.execute(f"LISTEN {CHANNEL}")
                    wake()  # whatever was committed while nobody listened
                    while not stopping.is_set():
                        for _ in conn.notifies(timeout=0.5):
                            wake()
            except psycopg.Error as problem:
                log.warning("PostgreSQL notifications lost (%s); reconnecting", problem)
                stopping.wait(0.5)

    # ---- reads of history (pooled, each in one snapshot) ------------------------------

    def _check(self, conn: psycopg.Connection[Any], revision: int) -> None:
        _, compacted = self._floor(conn)
        if revision < compacted:
            raise Compacted(revision, compacted)

    def rows_at(self, prefix: str, revision: int, start_after: str, limit: int) -> list[Row]:
        with self._snapshot_txn("read") as conn:
            self._check(conn, revision)
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM (SELECT DISTINCT ON (name) * FROM log WHERE name >= %s "
                "AND name < %s AND name > %s AND id <= %s ORDER BY name, id DESC) latest "
                "WHERE NOT deleted ORDER BY name" + (" LIMIT %s" if limit else ""),
                [prefix, _prefix_end(prefix), start_after, revision] + ([limit] if limit else [])
            ).fetchall()
        return [_row(r) for r in rows]

    def rows_after(self, prefix: str, after: int, upto: int) -> list[Row]:
        with self._snapshot_txn("read") as conn:
            self._check(conn, after)
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM log WHERE id > %s AND id <= %s AND name >= %s "
                "AND name < %s ORDER BY id", (after, upto, prefix, _prefix_end(prefix))).fetchall()
        return [_row(r) for r in rows]

    def rows(self, revisions: list[int]) -> dict[int, Row]:
        if not revisions:
            return {}
        with _unavailable("read"), self._pool.connection() as conn:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM log WHERE id = ANY(%s)",
                                (revisions,)).fetchall()
        return {r[0]: _row(r) for r in rows}

    # ---- backup and restore -----------------------------------------------------------

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[Snapshot]:
        """Every retained row up to one revision, read in one snapshot while writes go on."""
        with _unavailable("backup"), psycopg.connect(self.url, connect_timeout=5) as conn:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            with conn.transaction():
                revision, compacted = self._floor(conn)

                def rows() -> Iterator[Row]:
                    with conn.cursor(name="backup") as cursor:
                        cursor.execute(f"SELECT {_COLUMNS} FROM log ORDER BY id")
                        for r in cursor:
                            yield _row(r)
                yield Snapshot(revision, compacted, rows())

    def restore(self, snapshot: Snapshot) -> int:
        with _unavailable("restore"), psycopg.connect(self.url, connect_timeout=5) as conn, \
                conn.transaction():
            conn.execute(f"SELECT pg_advisory_xact_lock({_WRITE_LOCK})")
            if conn.execute("SELECT EXISTS (SELECT 1 FROM log) OR EXISTS "
                            "(SELECT 1 FROM meta)").fetchone() != (False,):
                raise StoreError("the target store is not empty; restore fills an empty one")
            count = 0
            with conn.cursor().copy(f"COPY log ({_COLUMNS}) FROM STDIN") as copy:
                for row in snapshot.rows:
                    copy.write_row((row.revision, row.key, row.created, row.deleted,
                                    row.create_revision, row.prev_revision, row.value))
                    count += 1
            conn.execute("INSERT INTO meta (key, value) VALUES ('compacted', %s)",
                         (snapshot.compacted,))
        return count

    def close(self) -> None:
        for session in (self._writer, self._poller, self._fetcher):
            session.close()
        self._pool.close()
