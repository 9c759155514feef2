"""A SecurityGroup's status through the real kubectl, with the simulated fleet: the VMs it
applies to, and Ready once every host running them reports its current rules programmed (a
simulated host reports at once; a silent one lags and is named)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.conftest import Kubectl
from tests.e2e.conftest import kubectl_in_new_namespace, start_cloud
from tests.e2e.test_lifecycle import apply, disk, get, ready, vm, wait_status

NETWORKING = "networking.evroclabs.net/v1alpha1"
FLEET = {"hosts": [{"name": f"h{i}", "zone": "se-sto-a", "vcpu": 4, "memoryGB": 16}
                   for i in (1, 2)]}


def group(name: str, *ports: int) -> dict[str, Any]:
    rules = [{"name": f"tcp-{p}", "direction": "Ingress", "protocol": "TCP", "port": p,
              "remote": {"address": "0.0.0.0/0"}} for p in ports]
    return {"apiVersion": NETWORKING, "kind": "SecurityGroup", "metadata": {"name": name},
            "spec": {"rules": rules}}


def member(name: str, *groups: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"networking": {"securityGroups": {
        "securityGroupMemberships": [{"name": g} for g in groups]}}} if groups else {}
    return vm(name, f"d-{name}", zone="se-sto-a", **spec)


def until(kc: Kubectl, what: str, check: Any, timeout: float = 20) -> dict[str, Any]:
    """The object once `check(obj)` holds; fails with the last one seen."""
    deadline = time.monotonic() + timeout
    while True:
        obj = get(kc, what)
        if check(obj):
            return obj
        assert time.monotonic() < deadline, f"{what} never got there: {obj.get('status')}"
        time.sleep(0.2)


def applies_to(obj: dict[str, Any]) -> list[str]:
    return [m["name"] for m in (obj.get("status") or {}).get("appliesTo") or []]


def is_ready(obj: dict[str, Any], reason: str, generation: int) -> bool:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["reason"] == reason
               and c["observedGeneration"] == generation for c in conditions)


def test_a_group_shows_its_vms_and_whether_every_host_enforces_it(tmp_path: Path) -> None:
    server = start_cloud(tmp_path, FLEET)
    try:
        kc = kubectl_in_new_namespace(server, tmp_path)
        apply(kc, group("web", 80), group("unused", 22), group("default", 22),
              *(disk(f"d-{n}", zone="se-sto-a") for n in ("a", "b", "c", "plain")),
              member("b", "web"), member("a", "web"), member("c", "web", "default"),
              member("plain"))
        for name in ("a", "b", "c", "plain"):
            wait_status(kc, name, "Running")

        web = until(kc, "sg/web", lambda o: is_ready(o, "Programmed", 1))
        assert applies_to(web) == ["a", "b", "c"] and web["status"]["appliesToCount"] == 3
        assert ready(web)["status"] == "True"
        hosts = {get(kc, f"vmi/{n}")["spec"]["host"] for n in ("a", "b", "c")}
        assert ready(web)["message"] == ("programmed on the host running its VMs" if len(hosts) == 1
                                         else "programmed on the 2 hosts running its VMs")
        for host in hosts:  # each host running a member reports the group programmed
            reported = get(kc, f"host/{host}")["status"]["securityGroups"]
            assert {"namespace": web["metadata"]["namespace"], "name": "web",
                    "generation": 1} in reported

        unused = until(kc, "sg/unused", lambda o: is_ready(o, "NoMembers", 1))
        assert applies_to(unused) == [] and unused["status"]["appliesToCount"] == 0
        # A VM naming no group is in the project's default group, with one that names it.
        default = until(kc, "sg/default", lambda o: is_ready(o, "Programmed", 1))
        assert applies_to(default) == ["c", "plain"]
        table = kc("get", "sg/web", "sg/unused")
        assert table.split("\n")[0].split()[:4] == ["NAME", "RULES", "VMS", "READY"]
        assert table.split("\n")[1].split()[:4] == ["web", "1", "3", "True"]

        # Membership: a new VM joins; deleting one leaves.
        apply(kc, disk("d-d", zone="se-sto-a"), member("d", "unused"))
        until(kc, "sg/unused", lambda o: applies_to(o) == ["d"])
        kc("delete", "vm/b", "--timeout=60s")
        until(kc, "sg/web", lambda o: applies_to(o) == ["a", "c"])

        # A host that stops reporting lags behind a rule change, and is named until it reports.
        silent = get(kc, "vmi/a")["spec"]["host"]
        kc("annotate", f"host/{silent}", "fault.evroc-compute.io/heartbeat=lost")
        apply(kc, group("web", 80, 443))
        web = until(kc, "sg/web", lambda o: is_ready(o, "Programming", 2))
        assert ready(web)["status"] == "False"
        assert silent in ready(web)["message"] and "generation 2" in ready(web)["message"]
        kc("annotate", f"host/{silent}", "fault.evroc-compute.io/heartbeat-")
        web = until(kc, "sg/web", lambda o: is_ready(o, "Programmed", 2))
        assert ready(web)["status"] == "True"
    finally:
        server.stop()
