"""Quota admission across API servers sharing one PostgreSQL database: concurrent creates sent
to two servers at once never exceed the quota (the charge on the quota's status is a
compare-and-swap the database decides)."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import pytest

from tests.api.client import Http, vm, vm_path
from tests.api.test_ha import servers

pytestmark = pytest.mark.slow

VCPU = "compute.evroclabs.net/vcpu"


def test_fifty_creates_across_two_servers_never_exceed_the_quota(
        tmp_path: Path, database: str) -> None:
    fleet = servers(tmp_path, database, 2)
    try:
        http = [Http(server) for server in fleet]
        quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q"},
                 "spec": {"hard": {VCPU: "25"}}}
        assert http[0].request("POST", "/api/v1/namespaces/default/resourcequotas",
                               quota).status == 201

        def create(index: int) -> int:
            answer = http[index % 2].request("POST", vm_path(), vm(f"vm-{index}"))
            if answer.status == 403:
                assert "exceeded quota: q, requested: compute.evroclabs.net/vcpu=2" in \
                    answer.body["message"]
            return answer.status

        with concurrent.futures.ThreadPoolExecutor(50) as pool:
            codes = list(pool.map(create, range(50)))
        assert sorted(codes) == [201] * 12 + [403] * 38  # a1a.s: 12 x 2 vCPUs fit in 25
        for client in http:
            assert len(client.request("GET", vm_path()).body["items"]) == 12
            stored = client.request("GET", "/api/v1/namespaces/default/resourcequotas/q")
            assert stored.body["status"]["used"] == {VCPU: "24"}
    finally:
        for server in fleet:
            server.stop()
