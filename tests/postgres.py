"""A throwaway PostgreSQL database per test, on the server the machine runs (.ci/run starts it).

`EVROC_TEST_POSTGRES` names the server (default: the local one, trust auth)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

SERVER = os.environ.get("EVROC_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")


@contextmanager
def database() -> Iterator[str]:
    """The URL of a new, empty database, dropped afterwards (with whatever still uses it)."""
    name = f"evroc_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield f"{SERVER}/{name}"
    finally:
        with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
