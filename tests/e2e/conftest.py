"""Fixtures shared by the Python-client suites: clients for the module's shared server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import Server
from tests.e2e.test_python_support import Clients, make_clients, new_namespace


@pytest.fixture(scope="module")
def k8s(shared_server: Server) -> Iterator[Clients]:
    clients = make_clients(shared_server)
    yield clients
    clients.api_client.close()


@pytest.fixture
def ns(k8s: Clients) -> str:
    """A fresh namespace on the module's shared server, for one test."""
    return new_namespace(k8s)
