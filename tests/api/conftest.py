"""The in-process client on a fresh API server, for suites that drive the server from inside."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from evroc_compute.client.inprocess import InProcessClient
from evroc_compute.server.app import App


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[InProcessClient]:
    app = App(tmp_path, compact_interval=3600)
    await app.start()
    yield InProcessClient(app, "test")
    await app.stop()
