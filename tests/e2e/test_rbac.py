"""RBAC end to end: projects, users and roles through kubectl and the official Python client.

Users get tokens from `evroc-compute credentials create`. alice and bob may create projects
(bound to project-creator by the admin) and each creates one: alice `pa` with kubectl, bob
`pb` with the Python client; each becomes its project's admin. In pa, alice binds carol as
viewer and dave as editor with `kubectl create rolebinding`. The isolation matrix then runs
every verb on every project kind as each of them, in their project and in the other one.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from tests.api.client import Http
from tests.conftest import ROOT, Kubectl, Server, kubectl_binary, make_kubectl, start_server
from tests.e2e.test_python_support import disk_body, vm_body

VM_GROUP, NET_GROUP = "compute.evroclabs.net", "networking.evroclabs.net"
SPECS: dict[str, tuple[str, str, Callable[[str], dict[str, Any]]]] = {
    # plural: (group, kind, a valid object of that name)
    "virtualmachines": (VM_GROUP, "VirtualMachine", vm_body),
    "disks": (VM_GROUP, "Disk", disk_body),
    "hotswapdiskattachments": (VM_GROUP, "HotswapDiskAttachment", lambda n: {
        "spec": {"vmRef": "vm", "diskRef": n}}),
    "placementgroups": (VM_GROUP, "PlacementGroup", lambda n: {
        "spec": {"strategy": {"type": "spread"}}}),
    "publicips": (NET_GROUP, "PublicIP", lambda n: {"spec": {}}),
    "securitygroups": (NET_GROUP, "SecurityGroup", lambda n: {"spec": {"rules": []}}),
}
VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection",
         "status")
READS = {"get", "list", "watch"}


def body(plural: str, name: str) -> dict[str, Any]:
    group, kind, make = SPECS[plural]
    return {**make(name), "apiVersion": f"{group}/v1alpha1", "kind": kind,
            "metadata": {"name": name}}


def credentials(server: Server, user: str, *, cluster: str = "") -> str:
    """A user's kubeconfig, as `evroc-compute credentials create` prints it."""
    url = f"{server.url}/clusters/{cluster}" if cluster else server.url
    return subprocess.run(
        [sys.executable, "-m", "evroc_compute.cli", "credentials", "create", user,
         "--data-dir", str(server.data_dir), "--pki-dir", str(server.pki_dir), "--server", url],
        check=True, capture_output=True, text=True, cwd=ROOT).stdout


def kubectl_as(server: Server, tmp: Path, user: str, cluster: str = "") -> Kubectl:
    path = tmp / f"kubeconfig-{user}-{cluster}"
    path.write_text(credentials(server, user, cluster=cluster))
    return Kubectl(kubectl_binary(), path, tmp / f"cache-{user}-{cluster}")


def python_as(kubeconfig: Path) -> client.CustomObjectsApi:
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    return client.CustomObjectsApi(client.ApiClient(configuration))


@dataclass
class World:
    server: Server
    admin: Kubectl
    kubectl: dict[str, Kubectl]
    python: dict[str, client.CustomObjectsApi]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("rbac")
    server = start_server(tmp / "data")
    try:
        admin = make_kubectl(server, tmp)
        users = {u: kubectl_as(server, tmp, u) for u in ("alice", "bob", "carol", "dave")}
        python = {u: python_as(k.kubeconfig) for u, k in users.items()}
        for creator in ("alice", "bob"):
            admin("create", "clusterrolebinding", f"{creator}-creates-projects",
                  "--clusterrole=project-creator", f"--user={creator}")
        users["alice"]("create", "namespace", "pa")
        bob_core = client.CoreV1Api(python["bob"].api_client)
        bob_core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="pb")))
        users["alice"]("create", "rolebinding", "carol-views", "--clusterrole=view",
                       "--user=carol", "-n", "pa")
        users["alice"]("create", "rolebinding", "dave-edits", "--clusterrole=edit",
                       "--user=dave", "-n", "pa")
        for namespace in ("pa", "pb"):
            admin("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(
                [body(plural, "seed") for plural in SPECS]))
        yield World(server, admin, users, python)
    finally:
        server.stop()


# ---- the isolation matrix -------------------------------------------------------------------

# user -> namespace -> role there (None: none)
ROLES = {"alice": {"pa": "admin", "pb": None}, "bob": {"pa": None, "pb": "admin"},
         "carol": {"pa": "view", "pb": None}, "dave": {"pa": "edit", "pb": None}}


def allowed(role: str | None, verb: str) -> bool:
    if role is None:
        return False
    if verb == "status":  # only the controllers and hosts write status
        return False
    return verb in READS or role in ("admin", "edit")


def attempt(api: client.CustomObjectsApi, verb: str, plural: str, namespace: str,
            name: str) -> int:
    """Do `verb` as the user; the HTTP status (2xx or the refusal's code)."""
    group = SPECS[plural][0]
    args = (group, "v1alpha1", namespace, plural)
    try:
        if verb == "get":
            api.get_namespaced_custom_object(*args, "seed")
        elif verb == "list":
            api.list_namespaced_custom_object(*args)
        elif verb == "watch":
            for _ in watch.Watch().stream(api.list_namespaced_custom_object, *args,
                                          timeout_seconds=1):
                break
        elif verb == "create":
            api.create_namespaced_custom_object(*args, body(plural, name))
        elif verb == "update":
            current = api.get_namespaced_custom_object(*args, name)
            current["metadata"]["labels"] = {"touched": "yes"}
            api.replace_namespaced_custom_object(*args, name, current)
        elif verb == "patch":
            api.patch_namespaced_custom_object(*args, name, {"metadata": {"labels": {"p": "1"}}})
        elif verb == "status":
            api.patch_namespaced_custom_object_status(*args, "seed",
                                                      {"status": {"conditions": []}})
        elif verb == "delete":
            api.delete_namespaced_custom_object(*args, name)
        elif verb == "deletecollection":
            api.delete_collection_namespaced_custom_object(*args, label_selector="none=none")
    except ApiException as problem:
        return int(problem.status)
    return 200


def test_isolation_matrix(world: World) -> None:
    """Every verb on every project kind, as each user, in each project: allowed exactly as
    their role says, refused with 403 otherwise; nothing crosses projects."""
    wrong: list[str] = []
    crossed = 0
    for user, namespaces in ROLES.items():
        api = world.python[user]
        for namespace, role in namespaces.items():
            for plural in SPECS:
                name = f"{user}-{plural[:5]}"
                if not allowed(role, "create"):  # the object the writes aim at exists
                    world.admin("apply", "-n", namespace, "-f", "-",
                                input=json.dumps(body(plural, name)))
                for verb in VERBS:
                    code = attempt(api, verb, plural, namespace, name)
                    expected = allowed(role, verb)
                    if (code < 300) != expected or (not expected and code != 403):
                        wrong.append(f"{user} {verb} {plural} in {namespace} ({role}): {code}")
                    crossed += code < 300 and role is None
    assert wrong == []
    assert crossed == 0


@pytest.mark.parametrize("user", ["alice", "bob", "carol", "dave"])
def test_across_namespaces_is_refused_never_filtered(world: World, user: str) -> None:
    api = world.python[user]
    for plural, (group, _, _) in SPECS.items():
        with pytest.raises(ApiException) as listed:
            api.list_cluster_custom_object(group, "v1alpha1", plural)
        assert listed.value.status == 403
        with pytest.raises(ApiException) as watched:
            for _ in watch.Watch().stream(api.list_cluster_custom_object, group, "v1alpha1",
                                          plural, timeout_seconds=1):
                break
        assert watched.value.status == 403
    refused = world.kubectl[user].run("get", "vm", "-A", check=False)
    assert refused.returncode != 0
    assert (f'User "{user}" cannot list resource "virtualmachines" in API group '
            f'"{VM_GROUP}" at the cluster scope') in refused.stderr
    namespaces = world.kubectl[user].run("get", "namespaces", check=False)
    assert "cannot list resource \"namespaces\"" in namespaces.stderr


def test_kubectl_under_a_cluster_path_watch_and_dry_run(world: World, tmp_path: Path) -> None:
    carol = kubectl_as(world.server, tmp_path, "carol", cluster="evroc")
    alice = kubectl_as(world.server, tmp_path, "alice", cluster="evroc")
    assert "seed" in carol("get", "vm", "-n", "pa")
    for args in (("get", "vm", "-n", "pb"), ("get", "vm", "-A"),
                 ("get", "vm", "-n", "pb", "--watch", "--request-timeout=3s")):
        refused = carol.run(*args, check=False)
        assert refused.returncode != 0 and "is forbidden" in refused.stderr, args
    vm = json.dumps(body("virtualmachines", "dry"))
    refused = carol.run("create", "-n", "pa", "--dry-run=server", "-f", "-", input=vm,
                        check=False)
    assert "cannot create resource" in refused.stderr
    assert "created (server dry run)" in alice("create", "-n", "pa", "--dry-run=server",
                                               "-f", "-", input=vm)
    refused = alice.run("create", "-n", "pb", "--dry-run=server", "-f", "-", input=vm,
                        check=False)
    assert 'cannot create resource "virtualmachines"' in refused.stderr
    assert "NotFound" in world.admin.run("get", "vm", "dry", "-n", "pa", check=False).stderr


def test_status_is_written_by_the_control_plane_only(world: World) -> None:
    patch = ["patch", "vm", "seed", "-n", "pa", "--subresource=status", "--type=merge",
             "-p", '{"status":{"virtualMachineStatus":"Running"}}']
    refused = world.kubectl["alice"].run(*patch, check=False)
    assert 'cannot patch resource "virtualmachines/status"' in refused.stderr
    assert "patched" in world.admin(*patch)


# ---- roles, bindings and what kubectl asks -------------------------------------------------

def test_a_project_creator_becomes_the_project_admin(world: World) -> None:
    binding = json.loads(world.admin("get", "rolebinding", "admin", "-n", "pa", "-o", "json"))
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                  "kind": "ClusterRole", "name": "admin"}
    assert binding["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                                    "name": "alice"}]
    annotations = json.loads(world.admin("get", "ns", "pa", "-o", "json"))["metadata"][
        "annotations"]
    assert annotations == {"evroc-compute.io/requester": "alice"}
    assert "pa" in world.kubectl["alice"]("get", "namespace", "pa")
    refused = world.kubectl["carol"].run("create", "namespace", "pc", check=False)
    assert 'User "carol" cannot create resource "namespaces"' in refused.stderr


def test_auth_can_i_and_whoami(world: World) -> None:
    carol, dave = world.kubectl["carol"], world.kubectl["dave"]
    assert carol("auth", "can-i", "list", "virtualmachines", "-n", "pa").strip() == "yes"
    assert carol.run("auth", "can-i", "create", "virtualmachines", "-n", "pa",
                     check=False).stdout.strip() == "no"
    assert dave("auth", "can-i", "create", "disks", "-n", "pa").strip() == "yes"
    assert dave.run("auth", "can-i", "patch", "virtualmachines", "--subresource=status",
                    "-n", "pa", check=False).stdout.strip() == "no"
    assert dave.run("auth", "can-i", "get", "virtualmachines", "-n", "pb",
                    check=False).stdout.strip() == "no"
    assert dave.run("auth", "can-i", "list", "hosts.infra.evroc-compute.io",
                    check=False).stdout.strip() == "no"
    assert dave("auth", "can-i", "list", "diskimages").strip() == "yes"
    listed = dave("auth", "can-i", "--list", "-n", "pa")
    rows = {line.split()[0]: line for line in listed.splitlines()[1:] if line.split()}
    assert "create" in rows["virtualmachines.compute.evroclabs.net"]
    assert "rolebindings.rbac.authorization.k8s.io" not in rows
    assert "update" not in rows["virtualmachines.compute.evroclabs.net/status"]
    whoami = json.loads(dave("auth", "whoami", "-o", "json"))
    assert whoami["status"]["userInfo"]["username"] == "dave"
    assert "system:authenticated" in whoami["status"]["userInfo"]["groups"]


def test_subject_access_review_is_for_admins(world: World) -> None:
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
              "spec": {"user": "carol", "resourceAttributes": {
                  "namespace": "pa", "verb": "delete", "group": VM_GROUP,
                  "resource": "disks"}}}
    path = "/apis/authorization.k8s.io/v1/subjectaccessreviews"
    reply = Http(world.server).request("POST", path, review)
    assert reply.status == 201 and reply.body["status"]["allowed"] is False
    review["spec"]["resourceAttributes"]["verb"] = "get"
    reply = Http(world.server).request("POST", path, review)
    assert reply.body["status"] == {"allowed": True, "reason": 'RBAC: allowed by RoleBinding '
                                    '"pa/carol-views" of ClusterRole "view"'}
    carol = world.kubectl["carol"]
    assert carol.run("create", "-f", "-", input=json.dumps(review), check=False).returncode


def test_bindings_count_at_once_and_cannot_escalate(world: World) -> None:
    bob = world.kubectl["bob"]
    assert bob.run("get", "disks", "-n", "pa", check=False).returncode != 0
    world.admin("create", "clusterrolebinding", "bob-views-all", "--clusterrole=view",
                "--user=bob")
    try:
        assert "seed" in bob("get", "disks", "-n", "pa")
        assert "seed" in bob("get", "disks", "-A")  # a cluster-wide grant lists across
    finally:
        world.admin("delete", "clusterrolebinding", "bob-views-all")
    assert bob.run("get", "disks", "-n", "pa", check=False).returncode != 0
    # An admin of pa may grant what it holds in pa, never more.
    alice = world.kubectl["alice"]
    refused = alice.run("create", "rolebinding", "mine", "--clusterrole=cluster-admin",
                        "--user=alice", "-n", "pa", check=False)
    assert "attempting to grant RBAC permissions not currently held" in refused.stderr
    refused = alice.run("create", "role", "status-writer", "--verb=update",
                        "--resource=virtualmachines/status", "-n", "pa", check=False)
    assert "attempting to grant RBAC permissions not currently held" in refused.stderr
    alice("create", "role", "disk-reader", "--verb=get", "--resource=disks", "-n", "pa")
    alice("create", "rolebinding", "bob-reads-disks", "--role=disk-reader", "--user=bob",
          "-n", "pa")
    assert "seed" in bob("get", "disk", "seed", "-n", "pa")
    assert bob.run("get", "vm", "seed", "-n", "pa", check=False).returncode != 0
    changed = alice.run("patch", "rolebinding", "bob-reads-disks", "-n", "pa", "--type=merge",
                        "-p", '{"roleRef":{"name":"view","kind":"ClusterRole"}}', check=False)
    assert "cannot change roleRef" in changed.stderr


# ---- a project whose creation a crash interrupted --------------------------------------------

def test_a_crash_between_project_and_binding_is_recovered(tmp_path: Path) -> None:
    """The state a kill -9 leaves after the namespace was stored and before its binding: the
    namespace names its creator as pending. The next start's namespace controller binds it."""
    server = start_server(tmp_path / "data")
    admin = make_kubectl(server, tmp_path)
    admin("create", "namespace", "pc")
    admin("annotate", "namespace", "pc", "evroc-compute.io/bind-admin=erin")
    server.kill()
    server = start_server(tmp_path / "data", port=int(server.url.rsplit(":", 1)[1]),
                          controllers=True)
    try:
        erin = kubectl_as(server, tmp_path, "erin")
        deadline = time.monotonic() + 20
        while erin.run("get", "vm", "-n", "pc", check=False).returncode != 0:
            assert time.monotonic() < deadline, "erin was not made pc's admin"
            time.sleep(0.2)
        annotations = json.loads(admin("get", "ns", "pc", "-o", "json"))["metadata"][
            "annotations"]
        assert annotations == {"evroc-compute.io/requester": "erin"}
    finally:
        server.stop()
