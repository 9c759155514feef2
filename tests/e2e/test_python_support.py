"""Shared pieces of the end-to-end tests with the official Python `kubernetes` client (v37).

Clients are built from a bare `Configuration(host=server.url)`: no kubeconfig. The test
modules (test_python_client.py, test_python_watch.py) share one server per module and keep
apart by namespace; the few tests that need a fresh store or special flags start their own.
This module holds no tests.
"""

from __future__ import annotations

import itertools
import json
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException
from kubernetes.dynamic import DynamicClient

from tests.conftest import Server

GROUP = "compute.evroclabs.net"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
VMS = "virtualmachines"
DISKS = "disks"


# ---- clients and helpers -------------------------------------------------------------

@dataclass
class Clients:
    api_client: client.ApiClient
    # Any: CustomObjectsApi returns `object`; the tests index into the JSON it decodes.
    custom: Any
    core: Any
    url: str
    tls: ssl.SSLContext  # the admin's, for raw requests

    def dynamic(self) -> DynamicClient:
        return DynamicClient(self.api_client)


def make_clients(server: Server) -> Clients:
    config = client.Configuration()
    config.host = server.url
    config.ssl_ca_cert = str(server.ca)
    config.cert_file, config.key_file = (str(path) for path in server.admin_cert)
    api_client = client.ApiClient(config)
    return Clients(api_client, client.CustomObjectsApi(api_client),
                   client.CoreV1Api(api_client), server.url, server.tls())


_namespace_ids = itertools.count(1)


def new_namespace(k8s: Clients, prefix: str = "py") -> str:
    """A fresh namespace (test modules wrap this in their `ns` fixture)."""
    name = f"{prefix}-{next(_namespace_ids)}-{int(time.time() * 1000) % 100000}"
    k8s.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    return name


def new_ssh_public_key(directory: Path) -> str:
    key = directory / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "e2e@test", "-f",
                    str(key)], check=True, capture_output=True)
    return key.with_suffix(".pub").read_text().strip()


def vm_body(name: str, *, labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": API_VERSION, "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": {"vmVirtualResourcesRef": {"vmVirtualResourcesRefName": "a1a.s"},
                 "diskRefs": [{"name": f"{name}-boot", "bootFrom": True}], **spec},
    }
    if labels:
        body["metadata"]["labels"] = labels
    return body


def disk_body(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "Disk", "metadata": {"name": name},
            "spec": spec or {"diskImage": {"diskImageRef": {"name": "ubuntu.24-04.1"}}}}


def create_vm(k8s: Clients, ns: str, name: str, **kwargs: Any) -> dict[str, Any]:
    result: dict[str, Any] = k8s.custom.create_namespaced_custom_object(
        GROUP, VERSION, ns, VMS, vm_body(name, **kwargs))
    return result


def get_vm(k8s: Clients, ns: str, name: str) -> dict[str, Any]:
    result: dict[str, Any] = k8s.custom.get_namespaced_custom_object(GROUP, VERSION, ns, VMS,
                                                                     name)
    return result


def api_error(call: Callable[[], Any]) -> tuple[ApiException, dict[str, Any]]:
    """Run a call that must fail; the exception and its body as a Status."""
    with pytest.raises(ApiException) as caught:
        call()
    problem = caught.value
    assert problem.body is not None
    body: dict[str, Any] = json.loads(problem.body)
    assert body["kind"] == "Status" and body["apiVersion"] == "v1", body
    assert body["status"] == "Failure" and body["code"] == problem.status, body
    return problem, body


def raw_request(k8s: Clients, url: str, method: str, body: bytes,
                content_type: str = "application/json") -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=body, method=method,
                                     headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=10, context=k8s.tls) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as problem:
        return problem.code, json.loads(problem.read())


def vms_path(url: str, ns: str, name: str = "") -> str:
    return f"{url}/apis/{GROUP}/{VERSION}/namespaces/{ns}/{VMS}" + (f"/{name}" if name else "")


class EventReader:
    """Read events from a watch generator on a thread so a test can wait with a deadline."""

    def __init__(self, events: Iterator[dict[str, Any]]) -> None:
        self.events = events
        self.seen: list[dict[str, Any]] = []
        self.ended = threading.Event()
        self.error: BaseException | None = None
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for event in self.events:
                with self._cond:
                    self.seen.append(event)
                    self._cond.notify_all()
        except BaseException as problem:
            self.error = problem
        finally:
            self.ended.set()
            with self._cond:
                self._cond.notify_all()

    def wait_for(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.seen) < count and not self.ended.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return list(self.seen)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


def summary(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["type"], e["raw_object"]["metadata"].get("name", "")) for e in events]


def stream(k8s: Clients, ns: str, w: watch.Watch | None = None, **kwargs: Any) -> \
        tuple[watch.Watch, Iterator[dict[str, Any]]]:
    w = w or watch.Watch()
    kwargs.setdefault("timeout_seconds", 10)
    return w, w.stream(k8s.custom.list_namespaced_custom_object, GROUP, VERSION, ns, VMS,
                       **kwargs)
