"""The backup file: a store's snapshot at one revision, gzip-compressed JSON lines.

The first line says what the file is, its revision and compacted revision; each further line
is one log row (revision, key, created, deleted, create revision, previous revision, object),
in revision order. Every retained row is kept, not only the latest per key, so a restored
store answers watches and reads at any revision the original still held.
"""

from __future__ import annotations

import contextlib
import gzip
import os
from collections.abc import Iterator
from pathlib import Path

import orjson

from evroc_compute.store.base import Row, Snapshot, StoreError

FORMAT = "evroc-compute-store-backup"
VERSION = 1


def write(snapshot: Snapshot, path: Path) -> int:
    """Write the snapshot to `path` (atomically: a partial file never has the name)."""
    partial = path.with_name(path.name + ".partial")
    count = 0
    try:
        with open(partial, "wb") as raw:
            with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=4) as out:
                out.write(orjson.dumps({"format": FORMAT, "version": VERSION,
                                        "revision": snapshot.revision,
                                        "compacted": snapshot.compacted}) + b"\n")
                for row in snapshot.rows:
                    head = orjson.dumps([row.revision, row.key, row.created, row.deleted,
                                         row.create_revision, row.prev_revision])
                    out.write(head[:-1] + b"," + row.value + b"]\n")
                    count += 1
            raw.flush()
            os.fsync(raw.fileno())  # on disk before it has the name: a crash leaves no half file
        partial.replace(path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # and the rename itself survives a crash
    finally:
        os.close(directory)
    return count


@contextlib.contextmanager
def read(path: Path) -> Iterator[Snapshot]:
    with gzip.open(path, "rb") as source:
        header = _header(source, path)

        def rows() -> Iterator[Row]:
            for line in source:
                r = orjson.loads(line)
                yield Row(r[0], r[1], r[2], r[3], r[4], r[5], orjson.dumps(r[6]))
        yield Snapshot(header["revision"], header["compacted"], rows())


def _header(source: gzip.GzipFile, path: Path) -> dict[str, int]:
    try:
        header = orjson.loads(source.readline())
    except (OSError, orjson.JSONDecodeError) as problem:
        raise StoreError(f"{path} is not a store backup: {problem}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise StoreError(f"{path} is not a store backup (no {FORMAT} header)")
    if header.get("version") != VERSION:
        raise StoreError(f"{path} is a version {header.get('version')} backup; this program "
                         f"reads version {VERSION}")
    return header
