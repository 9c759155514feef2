"""The in-process client on a fresh API server, for suites that drive the server from inside."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from evroc_compute.client.inprocess import InProcessClient
from evroc_compute.server.app import App
from tests import postgres


@pytest.fixture
def database() -> Iterator[str]:
    """A PostgreSQL database of its own for one test, dropped after it."""
    with postgres.database() as url:
        yield url


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[InProcessClient]:
    app = App(tmp_path, compact_interval=3600)
    await app.start()
    yield InProcessClient(app, "test")
    await app.stop()
