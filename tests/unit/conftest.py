"""The store backends every store test runs on: SQLite, and PostgreSQL (slow)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from evroc_compute.store import urls
from tests import postgres


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty store of each kind: a SQLite file, or a database of its own."""
    if request.param == "sqlite":
        yield urls.default_url(tmp_path)
    else:
        with postgres.database() as url:
            yield url
