"""Fixtures shared by the Python-client suites: clients for the module's shared server."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import Kubectl, Server, make_kubectl, start_server
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


def start_cloud(base: Path, fleet: dict[str, Any]) -> Server:
    """A server running the controllers and a simulated fleet described by `fleet`."""
    path = base / "fleet.yaml"
    path.write_text(yaml.safe_dump(fleet))
    return start_server(base / "data", "--fleet", str(path))


_namespaces = itertools.count(1)


def kubectl_in_new_namespace(server: Server, tmp: Path) -> Kubectl:
    """kubectl whose kubeconfig defaults to a namespace of its own on `server`."""
    kubectl = make_kubectl(server, tmp)
    namespace = f"t-{next(_namespaces)}"
    kubectl("create", "namespace", namespace)
    kubectl("config", "set-context", "--current", f"--namespace={namespace}")
    return kubectl
