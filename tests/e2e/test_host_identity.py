"""Host agents have identities: `credentials create --host NAME` prints a kubeconfig for
system:host:NAME, and like kube's Node authorizer with NodeRestriction, host A may write its own
Host status, Lease and instances but never host B's (403 saying what a host may write)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from evroc_compute.client import kubeconfig as kubeconfigs
from tests.api.client import Http, Reply
from tests.conftest import ROOT, Kubectl, Server, kubectl_binary

INFRA = "/apis/infra.evroc-compute.io/v1alpha1"
MERGE = "application/merge-patch+json"


def host_kubeconfig(server: Server, tmp: Path, name: str) -> Path:
    made = subprocess.run(
        [sys.executable, "-m", "evroc_compute.cli", "credentials", "create", "--host", name,
         "--data-dir", str(server.data_dir), "--pki-dir", str(server.pki_dir), "--server",
         server.url], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert made.returncode == 0, made.stderr
    path = tmp / f"kubeconfig-{name}"
    path.write_text(made.stdout)
    return path


def as_host(server: Server, path: Path) -> Http:
    connection = kubeconfigs.load(path)
    return Http(server, token=connection.token)


def host(name: str) -> dict[str, Any]:
    return {"apiVersion": "infra.evroc-compute.io/v1alpha1", "kind": "Host",
            "metadata": {"name": name},
            "spec": {"zone": "se-sto-a", "capacity": {"vcpu": 8, "memory": {"amount": 16, "unit": "GB"}}}}


def lease(name: str) -> dict[str, Any]:
    return {"apiVersion": "infra.evroc-compute.io/v1alpha1", "kind": "Lease",
            "metadata": {"name": name}, "spec": {"holderIdentity": name}}


def instance(name: str, bound_to: str) -> dict[str, Any]:
    return {"apiVersion": "infra.evroc-compute.io/v1alpha1", "kind": "VirtualMachineInstance",
            "metadata": {"name": name}, "spec": {
                "vmUID": f"uid-{name}", "resources": {"vcpu": 1, "memoryBytes": 1 << 30},
                "host": bound_to}}


def refused(reply: Reply, host_name: str) -> None:
    assert reply.status == 403, reply.raw
    assert reply.body["reason"] == "Forbidden"
    assert f'system:host:{host_name}' in reply.body["message"]


@pytest.fixture
def hosts(server: Server, tmp_path: Path) -> tuple[Http, Http, Http]:
    """The admin, host a's agent, host b's agent; a VMI bound to each host in project p."""
    admin = Http(server)
    assert admin.request("POST", "/api/v1/namespaces", {
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "p"}}).status == 201
    for name, bound in (("vm-a", "a"), ("vm-b", "b")):
        made = admin.request("POST", f"{INFRA}/namespaces/p/virtualmachineinstances",
                             instance(name, bound))
        assert made.status == 201, made.raw
    a = as_host(server, host_kubeconfig(server, tmp_path, "a"))
    b = as_host(server, host_kubeconfig(server, tmp_path, "b"))
    return admin, a, b


def test_a_host_registers_and_heartbeats_only_as_itself(hosts: tuple[Http, Http, Http]) -> None:
    _, a, b = hosts
    assert a.request("POST", f"{INFRA}/hosts", host("a")).status == 201
    refused(a.request("POST", f"{INFRA}/hosts", host("b")), "a")
    assert b.request("POST", f"{INFRA}/hosts", host("b")).status == 201
    assert a.request("POST", f"{INFRA}/leases", lease("host-a")).status == 201
    refused(a.request("POST", f"{INFRA}/leases", lease("host-b")), "a")
    refused(a.request("POST", f"{INFRA}/leases", lease("evroc-compute-controllers")), "a")
    assert b.request("POST", f"{INFRA}/leases", lease("host-b")).status == 201

    renew = {"spec": {"renewTime": "2026-01-01T00:00:00.000000Z"}}
    assert a.request("PATCH", f"{INFRA}/leases/host-a", renew, content_type=MERGE).status == 200
    refused(a.request("PATCH", f"{INFRA}/leases/host-b", renew, content_type=MERGE), "a")
    refused(a.request("DELETE", f"{INFRA}/leases/host-a"), "a")

    status = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    assert a.request("PATCH", f"{INFRA}/hosts/a/status", status,
                     content_type=MERGE).status == 200
    refused(a.request("PATCH", f"{INFRA}/hosts/b/status", status, content_type=MERGE), "a")
    refused(a.request("PATCH", f"{INFRA}/hosts/a", {"spec": {"schedulable": False}},
                      content_type=MERGE), "a")
    refused(a.request("DELETE", f"{INFRA}/hosts/b"), "a")
    message = a.request("PATCH", f"{INFRA}/hosts/b/status", status,
                        content_type=MERGE).body["message"]
    assert 'host "a" may write only its own Host status, its Lease "host-a"' in message


def test_a_host_writes_only_the_instances_bound_to_it(hosts: tuple[Http, Http, Http]) -> None:
    admin, a, _ = hosts
    vmis = f"{INFRA}/namespaces/p/virtualmachineinstances"
    running = {"status": {"phase": "Running"}}
    assert a.request("PATCH", f"{vmis}/vm-a/status", running, content_type=MERGE).status == 200
    refused(a.request("PATCH", f"{vmis}/vm-b/status", running, content_type=MERGE), "a")
    refused(a.request("PATCH", f"{vmis}/vm-b", {"metadata": {"finalizers": None}},
                      content_type=MERGE), "a")
    refused(a.request("POST", vmis, instance("vm-c", "a")), "a")
    refused(a.request("DELETE", f"{vmis}/vm-a"), "a")
    assert admin.request("GET", f"{vmis}/vm-b").body.get("status", {}).get("phase") != "Running"
    # Migration: an instance on its way to a host is that host's to report, too.
    assert admin.request("PATCH", f"{vmis}/vm-b", {"spec": {"migrateTo": "a"}},
                         content_type=MERGE).status == 200
    assert a.request("PATCH", f"{vmis}/vm-b/status", running, content_type=MERGE).status == 200


def test_a_host_reads_what_its_instances_need_and_nothing_else(
        hosts: tuple[Http, Http, Http], server: Server, tmp_path: Path) -> None:
    _, a, _ = hosts
    for path in (f"{INFRA}/hosts", f"{INFRA}/virtualmachineinstances",
                 "/apis/compute.evroclabs.net/v1alpha1/virtualmachines",
                 "/apis/compute.evroclabs.net/v1alpha1/disks",
                 "/apis/compute.evroclabs.net/v1alpha1/diskimages"):
        assert a.request("GET", path).status == 200, path
    for path in ("/apis/networking.evroclabs.net/v1alpha1/publicips",
                 "/apis/compute.evroclabs.net/v1alpha1/placementgroups",
                 "/apis/identity.evroc-compute.io/v1/credentials", "/api/v1/namespaces"):
        refused(a.request("GET", path), "a")
    kubectl = Kubectl(kubectl_binary(), tmp_path / "kubeconfig-a", tmp_path / "kubectl-cache")
    listed = yaml.safe_load(kubectl("get", "--raw", f"{INFRA}/namespaces/p/"
                                    "virtualmachineinstances"))
    assert sorted(i["metadata"]["name"] for i in listed["items"]) == ["vm-a", "vm-b"]
    secret = kubectl.run("get", "--raw", "/apis/identity.evroc-compute.io/v1/credentials",
                         check=False)
    assert secret.returncode != 0 and "Forbidden" in secret.stderr
