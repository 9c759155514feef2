"""The HTTP client with several server URLs: which requests fail over, and which may not.

A real server behind a TCP proxy the test breaks: `drop-answers` lets a request land and loses
its answer, the failure a client cannot tell from a request that never arrived."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from evroc_compute.api.infra import LEASE
from evroc_compute.client.base import ClientError
from evroc_compute.client.http import HttpClient, may_resend, parse_servers
from evroc_compute.client.kubeconfig import Connection
from tests.api.test_http_client import lease
from tests.conftest import Server, free_port
from tests.proxy import Proxy, proxy, tls12


def tls12_connection(server: Server) -> Connection:
    return Connection(server.url, tls12(server.tls()))


@pytest.mark.parametrize(("sent", "idempotent", "recheck", "resend"), [
    (False, False, False, True),   # never left: even a generateName create goes elsewhere
    (True, True, False, True),     # GET, PUT, DELETE, merge/apply patch: twice is once
    (True, False, True, True),     # named create: an AlreadyExists on the retry is checked
    (True, False, False, False),   # generateName create, JSON patch: may have landed
])
def test_which_requests_may_be_resent(sent: bool, idempotent: bool, recheck: bool,
                                      resend: bool) -> None:
    assert may_resend(sent, idempotent, recheck) is resend


def test_server_lists_are_comma_separated() -> None:
    assert parse_servers("http://a:1/, http://b:2") == ("http://a:1", "http://b:2")
    assert parse_servers(["http://a:1"]) == ("http://a:1",)
    with pytest.raises(ValueError):
        parse_servers(" , ")


@pytest.fixture
def lossy(shared_server: Server) -> Iterator[Proxy]:
    port = urlsplit(shared_server.url).port
    assert port
    with proxy(port, tls=True) as forwarder:
        yield forwarder


async def test_an_unreachable_server_is_skipped_and_the_next_one_kept(
        shared_server: Server) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    async with HttpClient(f"{down},{shared_server.url}", "failover",
                          connection=tls12_connection(shared_server), timeout=5) as client:
        made = await client.create(LEASE, lease("failover-refused"))
        assert client.base_url == shared_server.url
        got = await client.get(LEASE, None, "failover-refused")
        assert got["metadata"]["uid"] == made["metadata"]["uid"]


async def test_a_create_whose_answer_was_lost_is_recognised_on_the_next_server(
        shared_server: Server, lossy: Proxy) -> None:
    async with HttpClient(f"https://127.0.0.1:{lossy.port},{shared_server.url}", "failover",
                          connection=tls12_connection(shared_server), timeout=5) as client:
        lossy.set("drop-answers")
        made = await client.create(LEASE, lease("failover-landed"))
        assert made["metadata"]["name"] == "failover-landed"
        assert client.base_url == shared_server.url
    # Someone else's object of that name is still an AlreadyExists.
    async with HttpClient(f"https://127.0.0.1:{lossy.port},{shared_server.url}", "other",
                          connection=tls12_connection(shared_server), timeout=5) as client:
        with pytest.raises(ClientError) as exists:
            await client.create(LEASE, lease("failover-landed"))
        assert exists.value.reason == "AlreadyExists"


async def test_a_generate_name_create_that_may_have_landed_is_not_sent_twice(
        shared_server: Server, lossy: Proxy) -> None:
    body = lease("")
    body["metadata"] = {"generateName": "failover-gen-"}
    async with HttpClient(f"https://127.0.0.1:{lossy.port},{shared_server.url}", "failover",
                          connection=tls12_connection(shared_server), timeout=5) as client:
        lossy.set("drop-answers")
        with pytest.raises(ClientError) as unsure:
            await client.create(LEASE, body)
        assert unsure.value.code == 503
        assert "may have been applied" in unsure.value.status["message"]
    leases = httpx.get(f"{shared_server.url}/apis/infra.evroc-compute.io/v1alpha1/leases",
                       verify=shared_server.tls())
    names = [item["metadata"]["name"] for item in leases.json()["items"]]
    assert len([name for name in names if name.startswith("failover-gen-")]) == 1


async def test_idempotent_writes_are_resent_and_json_patches_are_not(
        shared_server: Server, lossy: Proxy) -> None:
    async with HttpClient(f"https://127.0.0.1:{lossy.port},{shared_server.url}", "failover",
                          connection=tls12_connection(shared_server), timeout=5) as client:
        await client.create(LEASE, lease("failover-writes"))
        lossy.set("drop-answers")
        patched = await client.patch(LEASE, None, "failover-writes",
                                     {"spec": {"holderIdentity": "agent-2"}})
        assert patched["spec"]["holderIdentity"] == "agent-2"
    async with HttpClient(f"https://127.0.0.1:{lossy.port},{shared_server.url}", "failover",
                          connection=tls12_connection(shared_server), timeout=5) as client:
        with pytest.raises(ClientError) as unsure:
            await client.patch(LEASE, None, "failover-writes",
                               [{"op": "replace", "path": "/spec/holderIdentity",
                                 "value": "agent-3"}], patch_type="json")
        assert "may have been applied" in unsure.value.status["message"]
        assert client.base_url == shared_server.url  # the next request goes elsewhere
        await client.delete(LEASE, None, "failover-writes")
