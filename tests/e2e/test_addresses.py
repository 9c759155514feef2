"""Private addresses through the real kubectl: a full subnet says so, a freed address is reused,
and every project has the zone's whole subnet to itself."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.e2e.conftest import kubectl_in_new_namespace, start_cloud
from tests.e2e.test_lifecycle import apply, disk, vm, wait_status

# A /30 has two host addresses; the first is the gateway, so one VM fits.
FLEET = {"subnets": {"se-sto-a": "10.0.9.0/30"},
         "hosts": [{"name": "h", "zone": "se-sto-a", "vcpu": 16, "memoryGB": 64}]}


def address_condition(status: dict) -> dict | None:
    return next((c for c in status.get("conditions", []) if c["type"] == "AddressAssigned"), None)


def test_a_vm_in_a_full_subnet_says_so_and_gets_the_address_freed_by_another(tmp_path: Path) -> None:
    server = start_cloud(tmp_path, FLEET)
    try:
        kc = kubectl_in_new_namespace(server, tmp_path)
        apply(kc, disk("d1", zone="se-sto-a"), vm("first", "d1"))
        wait_status(kc, "first", "Running")
        first = json.loads(kc("get", "vm/first", "-o", "json"))["status"]
        assert first["networking"]["privateIPv4Address"] == "10.0.9.2"

        apply(kc, disk("d2", zone="se-sto-a"), vm("second", "d2"))
        kc("wait", "vm/second", "--for=jsonpath={.status.conditions[?(@.type=='AddressAssigned')]"
           ".reason}=SubnetExhausted", "--timeout=30s", timeout=40)
        second = json.loads(kc("get", "vm/second", "-o", "json"))["status"]
        condition = address_condition(second)
        assert condition is not None and condition["status"] == "False"
        assert "se-sto-a" in condition["message"] and "10.0.9.0/30" in condition["message"]
        assert "privateIPv4Address" not in second.get("networking", {})

        kc("delete", "vm/first", "--timeout=60s")
        deadline = time.monotonic() + 30
        while True:
            second = json.loads(kc("get", "vm/second", "-o", "json"))["status"]
            if second.get("networking", {}).get("privateIPv4Address") == "10.0.9.2":
                break
            assert time.monotonic() < deadline, f"the freed address was not reused: {second}"
            time.sleep(0.2)
        assert address_condition(second) is None
    finally:
        server.stop()


def test_each_project_has_the_zones_subnet_to_itself(tmp_path: Path) -> None:
    server = start_cloud(tmp_path, FLEET)  # room for one VM per project in se-sto-a
    try:
        (tmp_path / "one").mkdir()
        (tmp_path / "two").mkdir()
        first = kubectl_in_new_namespace(server, tmp_path / "one")
        second = kubectl_in_new_namespace(server, tmp_path / "two")
        for kc in (first, second):
            apply(kc, disk("d", zone="se-sto-a"), vm("web", "d"))
        for kc in (first, second):
            wait_status(kc, "web", "Running")
            web = json.loads(kc("get", "vm/web", "-o", "json"))["status"]
            assert web["networking"]["privateIPv4Address"] == "10.0.9.2"
            assert address_condition(web) is None
    finally:
        server.stop()
