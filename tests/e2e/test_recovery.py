"""Kill the server (kill -9) while its controllers are mid-reconcile, start it again: it converges.

Nothing is duplicated (one instance per VM, one allocation per instance, unique addresses) and
nothing leaks (the hosts report exactly the instances bound to them, every host's allocation adds
up and fits its capacity).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import yaml

from tests.conftest import make_kubectl, start_server
from tests.e2e.test_lifecycle import apply, disk, vm

FLEET = {"timing": {"provision": 0.2, "pull": 0.2, "boot": 0.3, "stop": 0.2},
         "heartbeat": {"interval": 0.5, "timeout": 5},
         "hosts": [{"name": "h", "zone": "se-sto-a", "vcpu": 8, "memoryGB": 64, "count": 4}]}
VMS = 40  # a1a.xs: 1 vCPU each; 32 fit on the fleet, 8 must wait


def test_a_server_killed_mid_reconcile_converges_without_duplicates_or_leaks(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(yaml.safe_dump(FLEET))
    data = tmp_path / "data"
    server = start_server(data, "--fleet", str(fleet))
    kc = make_kubectl(server, tmp_path)
    apply(kc, *(disk(f"d{i}") for i in range(VMS)), *(vm(f"v{i}", f"d{i}") for i in range(VMS)))
    time.sleep(0.5)  # the controllers are busy scheduling and starting
    server.kill()
    server = start_server(data, "--fleet", str(fleet), port=int(server.url.rsplit(":", 1)[1]))
    try:
        deadline = time.monotonic() + 60
        while True:
            vms = json.loads(kc("get", "vm", "-o", "json"))["items"]
            statuses = Counter(v.get("status", {}).get("virtualMachineStatus") for v in vms)
            instances = json.loads(kc("get", "vmi", "-o", "json"))["items"]
            hosts = json.loads(kc("get", "hosts", "-o", "json"))["items"]
            bound = {f"default/{i['metadata']['name']}": i["spec"].get("host") for i in instances}
            reservations = [(h["metadata"]["name"], e["instance"])
                            for h in hosts for e in h.get("status", {}).get("allocations", [])]
            # the hosts report what they hold within a second of a change
            reported = sorted(reservations) == sorted((h, i) for i, h in bound.items() if h)
            if statuses == Counter({"Running": 32, "ErrorUnschedulable": 8}) and reported:
                break
            assert time.monotonic() < deadline, \
                f"did not converge: {statuses}; hosts report what is bound to them: {reported}"
            time.sleep(0.5)
    finally:
        server.stop()
    assert sorted(i["metadata"]["name"] for i in instances) == sorted(v["metadata"]["name"] for v in vms)
    assert len(reservations) == len({r[1] for r in reservations}) == 32
    for host in hosts:
        used = sum(e["vcpu"] for e in host["status"].get("allocations", []))
        assert used == host["status"]["allocated"]["vcpu"] <= host["spec"]["capacity"]["vcpu"]
    addresses = [v["status"]["networking"]["privateIPv4Address"] for v in vms
                 if v["status"].get("networking")]
    assert len(addresses) == len(set(addresses)) >= 32


def test_a_namespace_being_deleted_when_the_server_dies_is_finished_by_the_next_leader(
        tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = start_server(data)  # the API with only the namespace controller behind it
    kc = make_kubectl(server, tmp_path)
    kc("create", "namespace", "doomed")
    held = {"apiVersion": "compute.evroclabs.net/v1alpha1", "kind": "PlacementGroup",
            "metadata": {"name": "held", "finalizers": ["example.com/hold"]},
            "spec": {"strategy": {"type": "spread"}}}
    kc("apply", "-n", "doomed", "-f", "-", input=yaml.safe_dump(held))
    kc("delete", "namespace", "doomed", "--wait=false")
    kc("wait", "-n", "doomed", "pg/held", "--for=jsonpath={.metadata.deletionTimestamp}",
       "--timeout=10s")
    server.kill()
    server = start_server(data, port=int(server.url.rsplit(":", 1)[1]))
    try:
        assert json.loads(kc("get", "namespace", "doomed", "-o", "json"))["status"][
            "phase"] == "Terminating"
        kc("patch", "-n", "doomed", "pg/held", "--type", "json",
           "-p", '[{"op":"remove","path":"/metadata/finalizers"}]')
        kc("wait", "--for=delete", "namespace/doomed", "--timeout=20s")
        assert kc.run("get", "namespace", "doomed", check=False).returncode == 1
    finally:
        server.stop()
