"""Which store a URL names: `sqlite:///PATH` (embedded, one server) or `postgresql://...`
(shared by several servers). Relative SQLite paths are relative to the working directory, as
in SQLAlchemy's URLs (`sqlite:///data/store.db`; absolute: `sqlite:////var/lib/store.db`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from evroc_compute.store.base import LogReader
from evroc_compute.store.log import LogStore
from evroc_compute.store.shared import SharedLogStore
from evroc_compute.store.sqlite import SQLiteLog

if TYPE_CHECKING:
    from evroc_compute.store.postgres import PostgresLog

SCHEMES = ("sqlite:///", "postgresql://", "postgres://")


def default_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'store.db'}"


def check(url: str) -> str:
    """The URL if this program can open it, else a ValueError that says what it takes."""
    if not url.startswith(SCHEMES):
        raise ValueError(f"unsupported store URL {url!r}: use sqlite:///PATH or "
                         "postgresql://USER@HOST:PORT/DATABASE")
    return url


def redacted(url: str) -> str:
    """The URL without its password (in the authority or as a `password=` parameter)."""
    url = re.sub(r"://([^:/@]*):[^@]*@", r"://\1:***@", url)
    return re.sub(r"([?&]password=)[^&]*", r"\1***", url)


def backend(url: str) -> LogReader:
    """The SQL side alone (backup, restore, migrate)."""
    return _sqlite(url) if check(url).startswith("sqlite:///") else _postgres(url)


def store(url: str) -> LogStore | SharedLogStore:
    """The store for `url`, not yet opened. Connects (and migrates a database schema): call
    it off the event loop."""
    if check(url).startswith("sqlite:///"):
        return LogStore(_sqlite(url))
    return SharedLogStore(_postgres(url))


def _sqlite(url: str) -> SQLiteLog:
    return SQLiteLog(Path(url.removeprefix("sqlite:///")))


def _postgres(url: str) -> PostgresLog:
    from evroc_compute.store.postgres import PostgresLog  # psycopg only when asked for

    return PostgresLog(url)
