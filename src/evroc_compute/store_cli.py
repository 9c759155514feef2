"""`evroc-compute store`: back up, restore and move a control plane's store.

    evroc-compute store backup FILE [--store URL]      a consistent snapshot, servers running
    evroc-compute store restore FILE [--store URL]     into an empty store, servers stopped
    evroc-compute store migrate --from URL --to URL    e.g. SQLite to PostgreSQL

URLs are those of `serve --store` (default $EVROC_STORE, else sqlite:///./data/store.db).
Every row keeps its revision, so objects keep their resourceVersions and clients' watches
resume. A failure prints one line, `evroc-compute: <what went wrong>`, and exits 1.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from evroc_compute.store import backup, urls
from evroc_compute.store.base import LogReader, StoreError


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser],
               default_data_dir: Path) -> None:
    default = os.environ.get("EVROC_STORE") or urls.default_url(default_data_dir)
    parser = commands.add_parser("store", help="back up, restore or migrate the store",
                                 description=__doc__.split("\n\n")[0] if __doc__ else None)
    actions = parser.add_subparsers(dest="store_command", required=True, metavar="COMMAND")
    save = actions.add_parser("backup", help="write a consistent snapshot to FILE (online)")
    save.add_argument("file", type=Path)
    save.add_argument("--store", default=default, help=f"the store (default {default})")
    load = actions.add_parser("restore", help="fill an empty store from a backup FILE")
    load.add_argument("file", type=Path)
    load.add_argument("--store", default=default, help=f"the store (default {default})")
    move = actions.add_parser("migrate", help="copy one store into another, empty one")
    move.add_argument("--from", dest="source", required=True, help="the store to copy")
    move.add_argument("--to", dest="target", required=True, help="the empty store to fill")


def run(args: argparse.Namespace) -> int:
    try:
        if args.store_command == "backup":
            with _open(args.store) as source, source.snapshot() as snapshot:
                count = backup.write(snapshot, args.file)
            _say(f"backed up {count} rows at revision {snapshot.revision} to {args.file}")
        elif args.store_command == "restore":
            with backup.read(args.file) as snapshot, _open(args.store) as target:
                count = target.restore(snapshot)
            _say(f"restored {count} rows at revision {snapshot.revision} into "
                 f"{urls.redacted(args.store)}")
        else:
            with _open(args.source) as source, source.snapshot() as snapshot, \
                    _open(args.target) as target:
                count = target.restore(snapshot)
            _say(f"copied {count} rows at revision {snapshot.revision} to "
                 f"{urls.redacted(args.target)}")
    except (StoreError, ValueError, OSError) as problem:
        print(f"evroc-compute: {problem}", file=sys.stderr)
        return 1
    return 0


@contextlib.contextmanager
def _open(url: str) -> Iterator[LogReader]:
    """A store's SQL side (a database's schema is created or migrated), closed after use."""
    backend = urls.backend(url)
    try:
        yield backend
    finally:
        backend.close()


def _say(line: str) -> None:
    print(f"evroc-compute: {line}", file=sys.stderr)
