"""What generated clients (the official client, kubernetes-asyncio) get back from DELETE, and
generateName at the HTTP level."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator

import pytest
from kubernetes_asyncio import client as aclient

from tests.conftest import Server, start_server
from tests.e2e.test_python_support import Clients, make_clients, vm_body

GROUP, VERSION, VMS = "compute.evroclabs.net", "v1alpha1", "virtualmachines"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("generated") / "data")
    yield srv
    srv.stop()


@pytest.fixture
def k8s(server: Server) -> Iterator[Clients]:
    clients = make_clients(server)
    yield clients
    clients.api_client.close()


def held_vm(name: str) -> dict:
    body = vm_body(name)
    body["metadata"]["finalizers"] = ["example.com/hold"]
    return body


def test_official_client_gets_the_object_held_by_finalizers(k8s: Clients) -> None:
    k8s.custom.create_namespaced_custom_object(GROUP, VERSION, "default", VMS, held_vm("o-held"))
    deleted, status, _ = k8s.custom.delete_namespaced_custom_object_with_http_info(
        GROUP, VERSION, "default", VMS, "o-held")
    assert status == 200
    assert deleted["metadata"]["name"] == "o-held" and deleted["metadata"]["deletionTimestamp"]
    assert deleted["metadata"]["finalizers"] == ["example.com/hold"]
    k8s.custom.patch_namespaced_custom_object(GROUP, VERSION, "default", VMS, "o-held",
                                              {"metadata": {"finalizers": None}})


def test_kubernetes_asyncio_gets_the_object_back(server: Server) -> None:
    async def run() -> None:
        config = aclient.Configuration(host=server.url)
        config.ssl_ca_cert = str(server.ca)
        config.cert_file, config.key_file = (str(path) for path in server.admin_cert)
        async with aclient.ApiClient(config) as api:
            custom = aclient.CustomObjectsApi(api)
            await custom.create_namespaced_custom_object(GROUP, VERSION, "default", VMS,
                                                         held_vm("a-held"))
            deleted = await custom.delete_namespaced_custom_object(GROUP, VERSION, "default",
                                                                   VMS, "a-held")
            assert deleted is not None and deleted["metadata"]["name"] == "a-held"
            assert deleted["metadata"]["deletionTimestamp"]
            released = await custom.patch_namespaced_custom_object(
                GROUP, VERSION, "default", VMS, "a-held", {"metadata": {"finalizers": None}},
                _content_type="application/merge-patch+json")
            assert released["metadata"]["name"] == "a-held"  # the final state, now deleted
            await custom.create_namespaced_custom_object(GROUP, VERSION, "default", VMS,
                                                         vm_body("a-free"))
            deleted = await custom.delete_namespaced_custom_object(GROUP, VERSION, "default",
                                                                   VMS, "a-free")
            assert deleted["metadata"]["name"] == "a-free"
            core = aclient.CoreV1Api(api)
            await core.create_namespaced_event("default", aclient.CoreV1Event(
                metadata=aclient.V1ObjectMeta(name="ev.1"),
                involved_object=aclient.V1ObjectReference(kind="Disk", name="d"),
                reason="R", message="m", type="Normal"))
            status = await core.delete_namespaced_event("ev.1", "default")
            assert status.status == "Success" and status.details.name == "ev.1"
    asyncio.run(run())


def test_generate_name_uses_kubes_alphabet(k8s: Clients) -> None:
    names = set()
    for _ in range(50):
        body = vm_body("")
        body["metadata"] = {"generateName": "gen-"}
        names.add(k8s.custom.create_namespaced_custom_object(
            GROUP, VERSION, "default", VMS, body)["metadata"]["name"])
    assert len(names) == 50
    assert all(re.fullmatch(r"gen-[bcdfghjklmnpqrstvwxz2456789]{5}", n) for n in names)


def test_a_long_generate_name_is_cut_to_leave_a_valid_name(k8s: Clients) -> None:
    body = vm_body("")
    body["metadata"] = {"generateName": "x" * 70}
    name = k8s.custom.create_namespaced_custom_object(
        GROUP, VERSION, "default", VMS, body)["metadata"]["name"]
    assert len(name) == 63 and name.startswith("x" * 58)
