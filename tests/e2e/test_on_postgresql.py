"""The kubectl, Python-client and lifecycle suites once more, with every server they start on
PostgreSQL (a database per server, `EVROC_TEST_STORE=postgresql`, see tests/conftest.py).

Each suite runs in a pytest of its own: its module-scoped servers and fixtures are built
exactly as in the SQLite run, only the store differs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent


@pytest.mark.parametrize("suite", ["test_kubectl.py", "test_python_client.py",
                                   "test_lifecycle.py"])
def test_the_suite_passes_with_servers_on_postgresql(suite: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp",
         str(tmp_path / "run"), str(HERE / suite)],
        env={**os.environ, "EVROC_TEST_STORE": "postgresql"}, cwd=ROOT, capture_output=True,
        text=True, timeout=900)
    assert result.returncode == 0, f"{suite} on PostgreSQL:\n{result.stdout[-8000:]}" \
                                   f"\n{result.stderr[-2000:]}"
