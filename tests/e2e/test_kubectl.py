"""The real kubectl (1.32) against a real server process: what a user types and sees.

Every test runs kubectl as a subprocess and asserts on its exit code, stdout and stderr.
Tests share one server per module (`shared_server`) and isolate themselves by namespace:
the `ns` fixture creates a fresh namespace per test with `kubectl create namespace`.
Long-running commands (`get -w`, `wait`, `delete` waiting on a finalizer) run in the
background with `-v=6`, so a test can see from kubectl's own log that the watch is open
before it makes the change the command is waiting for.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import Kubectl, Server, make_kubectl

GROUP = "compute.evroclabs.net"
API_VERSION = f"{GROUP}/v1alpha1"
IMAGES = (
    "ubuntu-minimal.24-04.1", "ubuntu.24-04.1", "ubuntu.22-04.1", "rocky.10-0.1", "rocky.9-6.1",
    "rocky.9-5.1", "rocky.8-10.1", "opensuse.15-6.1", "opensuse.15-5.1", "sles.15-6.1",
    "sles.15-5.1", "sl-micro.6-1.1",
)
VM_COLUMNS = ["NAME", "READY", "REASON", "VIRTUALMACHINESTATUS", "IP", "PUBLIC IP", "AGE"]


# ---- fixtures -------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """kubectl honours HTTP(S)_PROXY; the server is on loopback."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        if var in os.environ:
            monkeypatch.delenv(var)


@pytest.fixture(scope="module")
def k(shared_server: Server, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    """kubectl for the module's server (one discovery cache for the whole module)."""
    return make_kubectl(shared_server, tmp_path_factory.mktemp("kubectl"))


@pytest.fixture
def ns(k: Kubectl, request: pytest.FixtureRequest) -> str:
    """A fresh namespace named after the test, made the way a user makes one."""
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower().removeprefix("test_"))
    name = name.strip("-")[:50].strip("-")
    assert k("create", "namespace", name) == f"namespace/{name} created\n"
    return name


@pytest.fixture(scope="module")
def ssh_key(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real ed25519 public key from ssh-keygen."""
    key = tmp_path_factory.mktemp("ssh") / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "e2e@test", "-f",
                    str(key)], check=True, capture_output=True, timeout=30)
    return key.with_suffix(".pub").read_text().strip()


# ---- manifests ------------------------------------------------------------------------

def vm(name: str, *, size: str = "a1a.s", labels: dict[str, str] | None = None,
       disks: list[dict[str, Any]] | None = None, cloud_init: str | None = None,
       keys: list[str] | None = None, finalizers: list[str] | None = None,
       **spec: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if labels:
        metadata["labels"] = labels
    if finalizers:
        metadata["finalizers"] = finalizers
    body: dict[str, Any] = {
        "running": True,
        "vmVirtualResourcesRef": {"vmVirtualResourcesRefName": size},
        "diskRefs": disks if disks is not None else [{"name": f"{name}-boot", "bootFrom": True}],
    }
    os_settings: dict[str, Any] = {}
    if cloud_init is not None:
        os_settings["cloudInitUserData"] = cloud_init
    if keys:
        os_settings["ssh"] = {"authorizedKeys": [{"value": key} for key in keys]}
    if os_settings:
        body["osSettings"] = os_settings
    body.update(spec)
    return {"apiVersion": API_VERSION, "kind": "VirtualMachine", "metadata": metadata,
            "spec": body}


def disk(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "Disk", "metadata": {"name": name},
            "spec": spec or {"diskImage": {"diskImageRef": {"name": "ubuntu.24-04.1"}}}}


def pg(name: str, *, labels: dict[str, str] | None = None,
       finalizers: list[str] | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if labels:
        metadata["labels"] = labels
    if finalizers:
        metadata["finalizers"] = finalizers
    return {"apiVersion": API_VERSION, "kind": "PlacementGroup", "metadata": metadata,
            "spec": {"strategy": {"type": "spread"}}}


def manifest(*objects: dict[str, Any]) -> str:
    """YAML, as a user writes it (several objects: one multi-document file)."""
    return yaml.safe_dump_all(objects, sort_keys=False)


def apply(k: Kubectl, ns: str, *objects: dict[str, Any], extra: tuple[str, ...] = ()) -> str:
    return k("apply", "-n", ns, "-f", "-", *extra, input=manifest(*objects))


def jsonpath(k: Kubectl, ns: str, what: str, expr: str) -> str:
    return k("get", "-n", ns, what, "-o", f"jsonpath={expr}")


def get_json(k: Kubectl, ns: str, what: str, *, show_managed: bool = False) -> dict[str, Any]:
    extra = ("--show-managed-fields",) if show_managed else ()
    return json.loads(k("get", "-n", ns, what, "-o", "json", *extra))  # type: ignore[no-any-return]


def assert_not_found(k: Kubectl, ns: str, resource: str, name: str, plural: str) -> None:
    result = k.run("get", "-n", ns, resource, name, check=False)
    assert result.returncode == 1, result.stdout
    assert f'Error from server (NotFound): {plural}.{GROUP} "{name}" not found' in result.stderr


def set_status(k: Kubectl, ns: str, what: str, status: dict[str, Any]) -> None:
    """What a controller would do: write status through the status subresource."""
    out = k("patch", "-n", ns, what, "--subresource", "status", "--type", "merge",
            "-p", json.dumps({"status": status}))
    assert "patched" in out


def ready(status: str, reason: str) -> dict[str, Any]:
    return {"type": "Ready", "status": status, "reason": reason,
            "lastTransitionTime": "2025-01-01T00:00:00Z", "message": f"{reason} for the test"}


def table(output: str) -> list[list[str]]:
    """kubectl's table output as rows of cells (columns are separated by 2+ spaces)."""
    return [re.split(r"\s{2,}", line.strip()) for line in output.splitlines() if line.strip()]


def names(output: str) -> list[str]:
    rows = table(output)
    assert rows and rows[0][0] == "NAME", output
    return [row[0] for row in rows[1:]]


# ---- background kubectl ---------------------------------------------------------------

class Background:
    """A long-running kubectl (watch, wait, delete) whose output files tests can poll."""

    def __init__(self, k: Kubectl, tmp: Path, *args: str) -> None:
        tag = re.sub(r"[^a-z0-9]+", "-", "-".join(args[:3]).lower())
        self.out_path, self.err_path = tmp / f"{tag}.out", tmp / f"{tag}.err"
        self._out, self._err = open(self.out_path, "w"), open(self.err_path, "w")
        self.proc = subprocess.Popen(
            [k.binary, "--kubeconfig", str(k.kubeconfig), "--cache-dir", str(k.cache_dir),
             "-v=6", *args], stdout=self._out, stderr=self._err, text=True)

    @property
    def out(self) -> str:
        return self.out_path.read_text()

    @property
    def err(self) -> str:
        return self.err_path.read_text()

    def until(self, check: Callable[[], bool], what: str, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}\nstdout:\n{self.out}\n"
                             f"stderr:\n{self.err[-3000:]}")

    def watching(self) -> None:
        """kubectl -v=6 logs the watch request once the server has answered it."""
        self.until(lambda: re.search(r"GET \S+watch=true\S* 200 OK", self.err) is not None,
                   "kubectl to open its watch")

    def exit_code(self, timeout: float = 15) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"kubectl did not finish\nstdout:\n{self.out}\n"
                                 f"stderr:\n{self.err[-3000:]}") from None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._out.close()
        self._err.close()


@pytest.fixture
def background(k: Kubectl, tmp_path: Path) -> Iterator[Callable[..., Background]]:
    started: list[Background] = []

    def start(*args: str) -> Background:
        started.append(Background(k, tmp_path, *args))
        return started[-1]

    yield start
    for proc in started:
        proc.stop()


# ---- apply ----------------------------------------------------------------------------

def test_client_side_apply_create_unchanged_configured(k: Kubectl, ns: str, ssh_key: str) -> None:
    obj = vm("web-1", labels={"app": "web"}, cloud_init="#cloud-config\n", keys=[ssh_key])
    assert apply(k, ns, obj) == f"virtualmachine.{GROUP}/web-1 created\n"
    assert apply(k, ns, obj) == f"virtualmachine.{GROUP}/web-1 unchanged\n"
    rv = jsonpath(k, ns, "vm/web-1", "{.metadata.resourceVersion}")

    obj["spec"]["vmVirtualResourcesRef"]["vmVirtualResourcesRefName"] = "a1a.m"
    assert apply(k, ns, obj) == f"virtualmachine.{GROUP}/web-1 configured\n"
    stored = get_json(k, ns, "vm/web-1")
    assert stored["spec"]["vmVirtualResourcesRef"] == {"vmVirtualResourcesRefName": "a1a.m"}
    assert stored["spec"]["osSettings"]["ssh"]["authorizedKeys"] == [{"value": ssh_key}]
    assert stored["metadata"]["resourceVersion"] != rv
    assert stored["metadata"]["generation"] == 2
    last = stored["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
    assert json.loads(last)["spec"]["vmVirtualResourcesRef"]["vmVirtualResourcesRefName"] == "a1a.m"

    # Removing a field from the manifest removes it from the object (three-way merge).
    del obj["metadata"]["labels"]
    assert apply(k, ns, obj) == f"virtualmachine.{GROUP}/web-1 configured\n"
    assert jsonpath(k, ns, "vm/web-1", "{.metadata.labels}") == ""


def test_server_side_apply_and_field_manager_conflict(k: Kubectl, ns: str) -> None:
    obj = vm("ssa-1")
    assert apply(k, ns, obj, extra=("--server-side",)) == \
        f"virtualmachine.{GROUP}/ssa-1 serverside-applied\n"
    managers = jsonpath(k, ns, "vm/ssa-1", "{.metadata.managedFields[*].manager}")
    assert managers.split() == ["kubectl"]

    obj["spec"]["vmVirtualResourcesRef"]["vmVirtualResourcesRefName"] = "a1a.m"
    assert apply(k, ns, obj, extra=("--server-side",)) == \
        f"virtualmachine.{GROUP}/ssa-1 serverside-applied\n"
    size = "{.spec.vmVirtualResourcesRef.vmVirtualResourcesRefName}"
    assert jsonpath(k, ns, "vm/ssa-1", size) == "a1a.m"

    # Someone else takes the field over...
    out = k("patch", "-n", ns, "vm/ssa-1", "--type", "merge", "--field-manager", "ops-team",
            "-p", '{"spec":{"vmVirtualResourcesRef":{"vmVirtualResourcesRefName":"a1a.l"}}}')
    assert out == f"virtualmachine.{GROUP}/ssa-1 patched\n"

    # ...so applying a different value conflicts and changes nothing.
    obj["spec"]["vmVirtualResourcesRef"]["vmVirtualResourcesRefName"] = "a1a.xl"
    result = k.run("apply", "-n", ns, "--server-side", "-f", "-", input=manifest(obj),
                   check=False)
    assert result.returncode != 0
    assert "conflict" in result.stderr.lower()
    assert 'conflict with "ops-team"' in result.stderr
    assert ".spec.vmVirtualResourcesRef.vmVirtualResourcesRefName" in result.stderr
    assert "--force-conflicts" in result.stderr
    assert jsonpath(k, ns, "vm/ssa-1", size) == "a1a.l"

    assert apply(k, ns, obj, extra=("--server-side", "--force-conflicts")) == \
        f"virtualmachine.{GROUP}/ssa-1 serverside-applied\n"
    assert jsonpath(k, ns, "vm/ssa-1", size) == "a1a.xl"


def test_switching_from_client_side_to_server_side_apply(k: Kubectl, ns: str) -> None:
    """As with kube-apiserver, `apply --server-side` takes over what `apply` set, no conflict."""
    obj = vm("upgrade-1", labels={"app": "web"})
    apply(k, ns, obj)
    obj["spec"]["vmVirtualResourcesRef"]["vmVirtualResourcesRefName"] = "a1a.m"
    assert apply(k, ns, obj, extra=("--server-side",)) == \
        f"virtualmachine.{GROUP}/upgrade-1 serverside-applied\n"
    stored = get_json(k, ns, "vm/upgrade-1")
    assert stored["spec"]["vmVirtualResourcesRef"]["vmVirtualResourcesRefName"] == "a1a.m"
    # The server keeps the client-side annotation in step with what was applied.
    last = stored["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
    assert json.loads(last)["spec"]["vmVirtualResourcesRef"]["vmVirtualResourcesRefName"] == "a1a.m"
    # A field set by someone else (not in the last-applied configuration) still conflicts.
    k("patch", "-n", ns, "vm/upgrade-1", "--type", "merge", "--field-manager", "ops-team",
      "-p", '{"spec":{"placement":{"zone":"se-sto-a"}}}')
    obj["spec"]["placement"] = {"zone": "se-sto-b"}
    result = k.run("apply", "-n", ns, "--server-side", "-f", "-", input=manifest(obj),
                   check=False)
    assert result.returncode != 0
    assert 'conflict with "ops-team"' in result.stderr and ".spec.placement.zone" in result.stderr


def test_after_switching_to_server_side_apply_dropped_fields_are_removed(
        k: Kubectl, ns: str) -> None:
    """kubectl hands client-side-apply ownership over by rewriting managedFields; once it has,
    a field left out of the next server-side apply is removed, as in Kubernetes."""
    obj = vm("upgrade-2", labels={"app": "web"})
    apply(k, ns, obj)
    apply(k, ns, obj, extra=("--server-side",))
    managers = {e["manager"] for e in get_json(k, ns, "vm/upgrade-2", show_managed=True)[
        "metadata"]["managedFields"]}
    assert "kubectl-client-side-apply" not in managers
    del obj["metadata"]["labels"]
    apply(k, ns, obj, extra=("--server-side",))
    assert "labels" not in get_json(k, ns, "vm/upgrade-2")["metadata"]


# ---- get ------------------------------------------------------------------------------

def test_get_yaml_json_jsonpath(k: Kubectl, ns: str) -> None:
    apply(k, ns, vm("fmt-1", labels={"tier": "db"}))
    set_status(k, ns, "vm/fmt-1", {"virtualMachineStatus": "Running"})

    as_yaml = yaml.safe_load(k("get", "-n", ns, "vm", "fmt-1", "-o", "yaml"))
    assert as_yaml["apiVersion"] == API_VERSION and as_yaml["kind"] == "VirtualMachine"
    assert as_yaml["metadata"]["name"] == "fmt-1" and as_yaml["metadata"]["namespace"] == ns
    assert as_yaml["metadata"]["labels"] == {"tier": "db"}
    assert as_yaml["metadata"]["uid"] and as_yaml["metadata"]["creationTimestamp"]
    assert as_yaml["spec"]["diskRefs"] == [{"name": "fmt-1-boot", "bootFrom": True}]
    assert as_yaml["status"]["virtualMachineStatus"] == "Running"

    as_json = get_json(k, ns, "vm/fmt-1")
    assert as_json == as_yaml

    listed = json.loads(k("get", "-n", ns, "vms", "-o", "json"))
    assert listed["kind"] == "List" and [i["metadata"]["name"] for i in listed["items"]] == \
        ["fmt-1"]

    assert jsonpath(k, ns, "vm/fmt-1", "{.spec.diskRefs[0].name}") == "fmt-1-boot"
    assert jsonpath(k, ns, "virtualmachines", "{.items[*].status.virtualMachineStatus}") == \
        "Running"
    assert k("get", "-n", ns, "vm", "-o", "name") == f"virtualmachine.{GROUP}/fmt-1\n"


def test_get_vm_columns_and_wide(k: Kubectl, ns: str) -> None:
    apply(k, ns, vm("col-1", size="c1a.m"), vm("col-2", running=False))
    set_status(k, ns, "vm/col-1", {
        "virtualMachineStatus": "Running", "conditions": [ready("True", "Booted")],
        "networking": {"privateIPv4Address": "10.0.0.5", "publicIPv4Address": "203.0.113.7"},
        "placement": {"zone": "se-sto-a"}})

    rows = table(k("get", "-n", ns, "vm"))
    assert rows[0] == VM_COLUMNS
    assert rows[1][:6] == ["col-1", "True", "Booted", "Running", "10.0.0.5", "203.0.113.7"]
    assert re.fullmatch(r"\d+s", rows[1][6])
    assert rows[2][:6] == ["col-2", "<none>", "<none>", "<none>", "<none>", "<none>"]
    assert len(rows) == 3

    wide = table(k("get", "-n", ns, "vm", "-o", "wide"))
    assert wide[0] == [*VM_COLUMNS, "ZONE", "RESOURCES", "RUNNING"]
    assert wide[1][0] == "col-1" and wide[1][7:] == ["se-sto-a", "c1a.m", "true"]
    assert wide[2][0] == "col-2" and wide[2][7:] == ["<none>", "a1a.s", "false"]

    # A single object by name and by a short name, and a missing one.
    assert table(k("get", "-n", ns, "vms", "col-2"))[1][0] == "col-2"
    result = k.run("get", "-n", ns, "vm", "nope", check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == \
        f'Error from server (NotFound): virtualmachines.{GROUP} "nope" not found'


def test_get_all_namespaces_shows_namespace_column(k: Kubectl, ns: str) -> None:
    other = f"{ns}-b"
    k("create", "namespace", other)
    apply(k, ns, vm("alpha"))
    apply(k, other, vm("beta"))
    rows = table(k("get", "vm", "-A"))
    assert rows[0] == ["NAMESPACE", *VM_COLUMNS]
    assert [ns, "alpha"] in [row[:2] for row in rows]
    assert [other, "beta"] in [row[:2] for row in rows]
    # Without -A only the namespace asked for.
    assert names(k("get", "vm", "-n", other)) == ["beta"]


def test_label_selectors(k: Kubectl, ns: str) -> None:
    apply(k, ns, pg("pa", labels={"app": "a"}), pg("pb", labels={"app": "b"}),
          pg("pweb", labels={"app": "web", "tier": "front"}), pg("pnone"))
    assert names(k("get", "-n", ns, "pg", "-l", "app=web")) == ["pweb"]
    assert names(k("get", "-n", ns, "pg", "-l", "app in (a,b)")) == ["pa", "pb"]
    assert names(k("get", "-n", ns, "pg", "-l", "!app")) == ["pnone"]
    assert names(k("get", "-n", ns, "pg", "-l", "app!=web")) == ["pa", "pb", "pnone"]
    assert names(k("get", "-n", ns, "pg", "-l", "app,tier=front")) == ["pweb"]
    empty = k.run("get", "-n", ns, "pg", "-l", "app=nothing")
    assert empty.stdout == "" and empty.stderr.strip() == f"No resources found in {ns} namespace."
    bad = k.run("get", "-n", ns, "pg", "-l", "app in (a", check=False)
    assert bad.returncode != 0 and bad.stderr


def test_chunk_size_pages_through_all_objects(k: Kubectl, ns: str) -> None:
    apply(k, ns, *[pg(f"page-{i}") for i in range(5)])
    result = k.run("get", "-n", ns, "pg", "--chunk-size=2", "-v=6")
    assert names(result.stdout) == [f"page-{i}" for i in range(5)]
    pages = re.findall(r"GET \S+/placementgroups\?\S*limit=2\S* 200 OK", result.stderr)
    assert len(pages) == 3, result.stderr
    assert sum("continue=" in page for page in pages) == 2
    as_names = k("get", "-n", ns, "pg", "--chunk-size=2", "-o", "name").split()
    assert as_names == [f"placementgroup.{GROUP}/page-{i}" for i in range(5)]


# ---- watch and wait -------------------------------------------------------------------

def test_get_watch_prints_new_and_changed_rows(k: Kubectl, ns: str,
                                               background: Callable[..., Background]) -> None:
    apply(k, ns, vm("watch-1"))
    watch = background("get", "vm", "-n", ns, "-w")
    watch.watching()
    watch.until(lambda: "watch-1" in watch.out, "the initial row")
    assert table(watch.out)[0] == VM_COLUMNS

    apply(k, ns, vm("watch-2"))
    watch.until(lambda: "watch-2" in watch.out, "the created object's row")
    set_status(k, ns, "vm/watch-1", {"virtualMachineStatus": "Running",
                                     "conditions": [ready("True", "Booted")]})
    watch.until(lambda: "Running" in watch.out, "the modified object's row")
    rows = table(watch.out)
    assert rows[0] == VM_COLUMNS
    assert [row[:4] for row in rows[1:]] == [
        ["watch-1", "<none>", "<none>", "<none>"],
        ["watch-2", "<none>", "<none>", "<none>"],
        ["watch-1", "True", "Booted", "Running"],
    ]
    assert watch.proc.poll() is None  # still watching


def test_get_single_object_watch(k: Kubectl, ns: str,
                                 background: Callable[..., Background]) -> None:
    apply(k, ns, vm("solo"), vm("bystander"))
    watch = background("get", "vm", "solo", "-n", ns, "-w")
    watch.watching()
    watch.until(lambda: "solo" in watch.out, "the initial row")
    set_status(k, ns, "vm/bystander", {"virtualMachineStatus": "Stopped"})
    set_status(k, ns, "vm/solo", {"virtualMachineStatus": "Starting"})
    watch.until(lambda: "Starting" in watch.out, "the modified row")
    rows = table(watch.out)
    assert [row[0] for row in rows] == ["NAME", "solo", "solo"]
    assert rows[2][3] == "Starting" and "bystander" not in watch.out


def test_wait_for_condition_ready(k: Kubectl, ns: str,
                                  background: Callable[..., Background]) -> None:
    apply(k, ns, vm("wait-ready"))
    waiter = background("wait", "-n", ns, "--for=condition=Ready", "vm/wait-ready",
                        "--timeout=30s")
    waiter.watching()
    set_status(k, ns, "vm/wait-ready", {"conditions": [ready("False", "Booting")]})
    time.sleep(0.5)
    assert waiter.proc.poll() is None, "Ready=False must not satisfy the wait"
    set_status(k, ns, "vm/wait-ready", {"conditions": [ready("True", "Booted")]})
    assert waiter.exit_code() == 0, waiter.err[-2000:]
    assert waiter.out == f"virtualmachine.{GROUP}/wait-ready condition met\n"


def test_wait_for_jsonpath_running(k: Kubectl, ns: str,
                                   background: Callable[..., Background]) -> None:
    apply(k, ns, vm("wait-run"))
    waiter = background("wait", "-n", ns, "--for=jsonpath={.status.virtualMachineStatus}=Running",
                        "vm/wait-run", "--timeout=30s")
    waiter.watching()
    set_status(k, ns, "vm/wait-run", {"virtualMachineStatus": "Starting"})
    time.sleep(0.5)
    assert waiter.proc.poll() is None, "Starting must not satisfy the wait"
    set_status(k, ns, "vm/wait-run", {"virtualMachineStatus": "Running"})
    assert waiter.exit_code() == 0, waiter.err[-2000:]
    assert waiter.out == f"virtualmachine.{GROUP}/wait-run condition met\n"


def test_wait_times_out_with_a_clear_message(k: Kubectl, ns: str) -> None:
    apply(k, ns, vm("never-ready"))
    result = k.run("wait", "-n", ns, "--for=condition=Ready", "vm/never-ready", "--timeout=1s",
                   check=False)
    assert result.returncode != 0
    assert "timed out waiting for the condition on virtualmachines/never-ready" in result.stderr


# ---- patch, edit, replace -------------------------------------------------------------

def test_patch_merge_json_and_strategic(k: Kubectl, ns: str) -> None:
    apply(k, ns, vm("patch-1"))
    assert k("patch", "-n", ns, "vm", "patch-1", "--type", "merge",
             "-p", '{"spec":{"running":false}}') == f"virtualmachine.{GROUP}/patch-1 patched\n"
    assert jsonpath(k, ns, "vm/patch-1", "{.spec.running}") == "false"

    ops = [{"op": "add", "path": "/metadata/labels", "value": {"team": "blue"}},
           {"op": "replace", "path": "/spec/vmVirtualResourcesRef/vmVirtualResourcesRefName",
            "value": "m1a.s"}]
    assert k("patch", "-n", ns, "vm", "patch-1", "--type", "json", "-p", json.dumps(ops)) == \
        f"virtualmachine.{GROUP}/patch-1 patched\n"
    stored = get_json(k, ns, "vm/patch-1")
    assert stored["metadata"]["labels"] == {"team": "blue"}
    assert stored["spec"]["vmVirtualResourcesRef"]["vmVirtualResourcesRefName"] == "m1a.s"

    # A patch that changes nothing says so.
    assert k("patch", "-n", ns, "vm", "patch-1", "--type", "merge",
             "-p", '{"spec":{"running":false}}') == \
        f"virtualmachine.{GROUP}/patch-1 patched (no change)\n"

    # A failed JSON patch test names the field and the values, and changes nothing.
    failed = k.run("patch", "-n", ns, "vm", "patch-1", "--type", "json", "-p",
                   '[{"op":"test","path":"/spec/running","value":true},'
                   '{"op":"replace","path":"/spec/running","value":true}]', check=False)
    assert failed.returncode != 0
    assert "spec.running" in failed.stderr and "false" in failed.stderr
    assert "<class" not in failed.stderr
    missing = k.run("patch", "-n", ns, "vm", "patch-1", "--type", "json", "-p",
                    '[{"op":"replace","path":"/spec/nope/x","value":1}]', check=False)
    assert missing.returncode != 0 and "spec.nope.x" in missing.stderr
    assert "a1a" not in missing.stderr and "diskRefs" not in missing.stderr  # no object dump

    # Strategic merge patch (kubectl's default) is not supported for these kinds.
    strategic = k.run("patch", "-n", ns, "vm", "patch-1", "-p", '{"spec":{"running":true}}',
                      check=False)
    assert strategic.returncode != 0
    assert "application/strategic-merge-patch+json is not supported" in strategic.stderr
    assert "application/merge-patch+json" in strategic.stderr  # what to use instead
    assert jsonpath(k, ns, "vm/patch-1", "{.spec.running}") == "false"


def test_status_is_written_only_through_the_status_subresource(k: Kubectl, ns: str) -> None:
    obj = vm("stat-1")
    obj["status"] = {"virtualMachineStatus": "Running"}
    apply(k, ns, obj)
    assert jsonpath(k, ns, "vm/stat-1", "{.status.virtualMachineStatus}") == ""

    out = k("patch", "-n", ns, "vm/stat-1", "--type", "merge",
            "-p", '{"status":{"virtualMachineStatus":"Running"}}')
    assert out == f"virtualmachine.{GROUP}/stat-1 patched (no change)\n"
    assert jsonpath(k, ns, "vm/stat-1", "{.status.virtualMachineStatus}") == ""

    generation = jsonpath(k, ns, "vm/stat-1", "{.metadata.generation}")
    k("patch", "-n", ns, "vm/stat-1", "--subresource", "status", "--type", "merge",
      "-p", '{"spec":{"running":false},"status":{"virtualMachineStatus":"Stopped"}}')
    assert jsonpath(k, ns, "vm/stat-1", "{.spec.running} {.status.virtualMachineStatus}") == \
        "true Stopped"
    assert jsonpath(k, ns, "vm/stat-1", "{.metadata.generation}") == generation


def test_edit_with_an_editor(k: Kubectl, ns: str, tmp_path: Path) -> None:
    apply(k, ns, vm("edit-1"))
    size = "{.spec.vmVirtualResourcesRef.vmVirtualResourcesRefName}"
    out = k("edit", "-n", ns, "vm", "edit-1", env={"EDITOR": "sed -i s/a1a.s/a1a.m/"})
    assert out == f"virtualmachine.{GROUP}/edit-1 edited\n"
    assert jsonpath(k, ns, "vm/edit-1", size) == "a1a.m"

    script = tmp_path / "editor.py"
    script.write_text(
        "import sys, yaml\n"
        "path = sys.argv[1]\n"
        "obj = yaml.safe_load(open(path))\n"
        "obj['metadata'].setdefault('labels', {})['edited'] = 'yes'\n"
        "obj['spec']['running'] = False\n"
        "open(path, 'w').write(yaml.safe_dump(obj))\n")
    out = k("edit", "-n", ns, "vm/edit-1", env={"EDITOR": f"{sys.executable} {script}"})
    assert out == f"virtualmachine.{GROUP}/edit-1 edited\n"
    stored = get_json(k, ns, "vm/edit-1")
    assert stored["metadata"]["labels"] == {"edited": "yes"}
    assert stored["spec"]["running"] is False

    # An editor that changes nothing.
    result = k.run("edit", "-n", ns, "vm/edit-1", env={"EDITOR": "true"})
    assert "Edit cancelled, no changes made." in result.stdout + result.stderr


def test_replace_and_stale_resource_version(k: Kubectl, ns: str) -> None:
    apply(k, ns, vm("repl-1"))
    original = k("get", "-n", ns, "vm", "repl-1", "-o", "yaml")

    obj = yaml.safe_load(original)
    obj["spec"]["running"] = False
    out = k("replace", "-f", "-", input=yaml.safe_dump(obj))
    assert out == f"virtualmachine.{GROUP}/repl-1 replaced\n"
    assert jsonpath(k, ns, "vm/repl-1", "{.spec.running}") == "false"

    stale = yaml.safe_load(original)  # carries the resourceVersion from before the replace
    stale["spec"]["vmVirtualResourcesRef"]["vmVirtualResourcesRefName"] = "a1a.xl"
    result = k.run("replace", "-f", "-", input=yaml.safe_dump(stale), check=False)
    assert result.returncode != 0
    assert "Error from server (Conflict)" in result.stderr
    assert f'Operation cannot be fulfilled on virtualmachines.{GROUP} "repl-1": the object has ' \
           "been modified; please apply your changes to the latest version and try again" \
           in result.stderr
    stored = get_json(k, ns, "vm/repl-1")
    assert stored["spec"]["running"] is False
    assert stored["spec"]["vmVirtualResourcesRef"]["vmVirtualResourcesRefName"] == "a1a.s"


# ---- delete and finalizers ------------------------------------------------------------

def test_delete_without_waiting_then_remove_finalizer(k: Kubectl, ns: str) -> None:
    apply(k, ns, pg("held", finalizers=["example.com/hold"]))
    out = k("delete", "-n", ns, "pg", "held", "--wait=false")
    assert out == f'placementgroup.{GROUP} "held" deleted\n'

    stored = get_json(k, ns, "pg/held")
    assert stored["metadata"]["deletionTimestamp"]
    assert stored["metadata"]["finalizers"] == ["example.com/hold"]
    assert names(k("get", "-n", ns, "pg")) == ["held"]

    out = k("patch", "-n", ns, "pg", "held", "--type", "json",
            "-p", '[{"op":"remove","path":"/metadata/finalizers"}]')
    assert out == f"placementgroup.{GROUP}/held patched\n"
    assert_not_found(k, ns, "pg", "held", "placementgroups")


def test_delete_waits_until_finalizer_is_removed(k: Kubectl, ns: str,
                                                 background: Callable[..., Background]) -> None:
    apply(k, ns, vm("held-vm", finalizers=["example.com/hold"]))
    deleter = background("delete", "-n", ns, "vm", "held-vm", "--timeout=30s")
    deleter.watching()  # kubectl saw the object still there and waits for DELETED
    assert deleter.proc.poll() is None
    assert jsonpath(k, ns, "vm/held-vm", "{.metadata.deletionTimestamp}")

    k("patch", "-n", ns, "vm", "held-vm", "--type", "json",
      "-p", '[{"op":"remove","path":"/metadata/finalizers/0"}]')
    assert deleter.exit_code() == 0, deleter.err[-2000:]
    assert deleter.out == f'virtualmachine.{GROUP} "held-vm" deleted\n'
    assert_not_found(k, ns, "vm", "held-vm", "virtualmachines")


def test_delete_missing_object(k: Kubectl, ns: str) -> None:
    result = k.run("delete", "-n", ns, "vm", "ghost", check=False)
    assert result.returncode == 1
    assert f'virtualmachines.{GROUP} "ghost" not found' in result.stderr
    assert k("delete", "-n", ns, "vm", "ghost", "--ignore-not-found") == ""


# ---- discovery and documentation ------------------------------------------------------

def test_explain(k: Kubectl) -> None:
    out = k("explain", "vm.spec.osSettings")
    assert "KIND:       VirtualMachine" in out and f"GROUP:      {GROUP}" in out
    assert "FIELD: osSettings <Object>" in out
    assert "cloudInitUserData\t<string>" in out and "ssh\t<Object>" in out
    assert "cannot be updated after the VM is created" in out

    out = k("explain", "disk.spec")
    assert "KIND:       Disk" in out
    for field in ("diskSize", "diskImage", "diskStorageClass", "placement"):
        assert f"  {field}\t<Object>" in out

    recursive = k("explain", "vm.spec", "--recursive")
    assert "vmVirtualResourcesRefName" in recursive and "authorizedKeys" in recursive

    missing = k.run("explain", "vm.spec.nope", check=False)
    assert missing.returncode != 0 and 'field "nope" does not exist' in missing.stderr


def test_api_resources_short_names(k: Kubectl) -> None:
    rows = table(k("api-resources"))
    assert rows[0] == ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
    by_name = {row[0]: row for row in rows[1:]}
    expected = {
        "virtualmachines": ("vm,vms", GROUP, "true", "VirtualMachine"),
        "disks": ("dk", GROUP, "true", "Disk"),
        "hotswapdiskattachments": ("hda", GROUP, "true", "HotswapDiskAttachment"),
        "placementgroups": ("pg", GROUP, "true", "PlacementGroup"),
        "diskimages": ("di", GROUP, "false", "DiskImage"),
        "vmvirtualresources": ("vmvr", GROUP, "false", "VMVirtualResources"),
        "diskstorageclasses": ("dsc", GROUP, "false", "DiskStorageClass"),
        "publicips": ("pip", "networking.evroclabs.net", "true", "PublicIP"),
        "securitygroups": ("sg", "networking.evroclabs.net", "true", "SecurityGroup"),
        "namespaces": ("ns", "", "false", "Namespace"),
    }
    for name, (short, group, namespaced, kind) in expected.items():
        row = by_name[name]
        api_version = f"{group}/v1alpha1" if group else "v1"
        assert row[1:] == [short, api_version, namespaced, kind], row
    compute = table(k("api-resources", f"--api-group={GROUP}", "-o", "name"))
    assert [row[0] for row in compute] == sorted(
        f"{n}.{GROUP}" for n in ("virtualmachines", "disks", "hotswapdiskattachments",
                                 "placementgroups", "diskimages", "vmvirtualresources",
                                 "diskstorageclasses"))


def test_catalog_lists_sizes_and_images(k: Kubectl) -> None:
    rows = table(k("get", "vmvr"))
    by_name = {row[0]: row for row in rows[1:]}
    assert rows[0][:3] == ["NAME", "VCPU", "MEMORY"]
    assert by_name["a1a.s"][1:3] == ["2", "8GB"]
    assert by_name["a1a.xs"][1:3] == ["1", "4GB"]
    assert {"test.xs", "a1a.m", "c1a.s", "m1a.l", "a1a.2xl"} <= set(by_name)

    images = names(k("get", "di"))
    assert sorted(images) == sorted(IMAGES) and len(images) == 12
    assert k("get", "di", "ubuntu.24-04.1", "-o", "jsonpath={.spec.defaultDiskSize}") == \
        '{"amount":20,"unit":"GB"}'
    assert names(k("get", "dsc")) == ["persistent"]


def test_kcp_style_cluster_prefix(shared_server: Server, tmp_path: Path) -> None:
    acme = make_kubectl(shared_server, tmp_path, cluster="root:acme")
    assert apply(acme, "default", pg("kcp-pg")) == f"placementgroup.{GROUP}/kcp-pg created\n"
    result = acme.run("get", "pg", "kcp-pg", "-v=6")
    assert names(result.stdout) == ["kcp-pg"]
    assert "/clusters/root:acme/apis/compute.evroclabs.net/v1alpha1/namespaces/default/" \
           "placementgroups/kcp-pg 200 OK" in result.stderr
    assert apply(acme, "default", pg("kcp-pg")) == f"placementgroup.{GROUP}/kcp-pg unchanged\n"
    assert "a1a.s" in names(acme("get", "vmvr"))
    acme("delete", "pg", "kcp-pg")


# ---- dry run --------------------------------------------------------------------------

def test_server_dry_run_persists_nothing(k: Kubectl, ns: str) -> None:
    obj = pg("dry")
    out = k("create", "-n", ns, "-f", "-", "--dry-run=server", input=manifest(obj))
    assert out == f"placementgroup.{GROUP}/dry created (server dry run)\n"
    assert_not_found(k, ns, "pg", "dry", "placementgroups")
    assert apply(k, ns, obj, extra=("--dry-run=server",)) == \
        f"placementgroup.{GROUP}/dry created (server dry run)\n"
    assert apply(k, ns, obj, extra=("--server-side", "--dry-run=server")) == \
        f"placementgroup.{GROUP}/dry serverside-applied (server dry run)\n"
    assert_not_found(k, ns, "pg", "dry", "placementgroups")

    # Server dry run still validates.
    bad = k.run("create", "-n", ns, "-f", "-", "--dry-run=server", check=False,
                input=manifest(vm("dry-bad", disks=[{"name": "a"}])))
    assert bad.returncode != 0 and "spec.diskRefs" in bad.stderr

    apply(k, ns, vm("dry-vm"))
    before = get_json(k, ns, "vm/dry-vm")
    changed = vm("dry-vm", size="a1a.xl")
    assert apply(k, ns, changed, extra=("--dry-run=server",)) == \
        f"virtualmachine.{GROUP}/dry-vm configured (server dry run)\n"
    assert apply(k, ns, changed, extra=("--server-side", "--dry-run=server")) == \
        f"virtualmachine.{GROUP}/dry-vm serverside-applied (server dry run)\n"
    out = k("delete", "-n", ns, "vm", "dry-vm", "--dry-run=server")
    assert out == f'virtualmachine.{GROUP} "dry-vm" deleted (server dry run)\n'
    assert get_json(k, ns, "vm/dry-vm") == before


# ---- validation -----------------------------------------------------------------------

ELEVEN_DISKS: list[dict[str, Any]] = [{"name": "d0", "bootFrom": True},
                                      *({"name": f"d{i}"} for i in range(1, 11))]
INVALID = {
    "two-boot-disks": (
        vm("two-boot", disks=[{"name": "a", "bootFrom": True}, {"name": "b", "bootFrom": True}]),
        ['The VirtualMachine "two-boot" is invalid',
         "spec.diskRefs[1].bootFrom: Invalid value: true: only one Disk can be marked as "
         "bootFrom"]),
    "no-boot-disk": (
        vm("no-boot", disks=[{"name": "a"}]),
        ["spec.diskRefs: Required value", "exactly one disk must be marked bootFrom: true"]),
    "invalid-ssh-key": (
        vm("bad-key", keys=["ssh-ed25519 AAAAnotakey user@host"]),
        ["spec.osSettings.ssh.authorizedKeys[0].value: Invalid value",
         "not a valid SSH public key"]),
    "eleven-disks": (
        vm("many-disks", disks=ELEVEN_DISKS),
        ["spec.diskRefs: Too many: 11: must have at most 10 items"]),
    "uppercase-name": (
        vm("BadName"),
        ['metadata.name: Invalid value: "BadName"', "lowercase RFC 1123"]),
    "bad-label-value": (
        vm("bad-label", labels={"app": "-bad value-"}),
        ['metadata.labels: Invalid value: "-bad value-"', "a valid label must"]),
    "disk-unit-xb": (
        disk("bad-unit", diskSize={"amount": 10, "unit": "XB"}),
        ['spec.diskSize.unit: Unsupported value: "XB"',
         'supported values: "KB", "MB", "GB", "TB"']),
    "unknown-field": (
        vm("strict", foo="bar"),
        ['unknown field "spec.foo"']),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_objects_are_rejected(k: Kubectl, ns: str, case: str) -> None:
    obj, expected = INVALID[case]
    for command in (("apply",), ("create",), ("apply", "--server-side")):
        result = k.run(*command, "-n", ns, "-f", "-", input=manifest(obj), check=False)
        assert result.returncode != 0, (command, result.stdout)
        for text in expected:
            assert text in result.stderr, (command, result.stderr)
    plural = {"VirtualMachine": "virtualmachines", "Disk": "disks"}[obj["kind"]]
    name = obj["metadata"]["name"]
    listed = k.run("get", "-n", ns, plural)
    assert listed.stdout == "", name
    assert listed.stderr.strip() == f"No resources found in {ns} namespace."
    assert_not_found(k, ns, plural, name, plural)


def test_invalid_update_leaves_object_unchanged(k: Kubectl, ns: str, ssh_key: str) -> None:
    obj = vm("immut", cloud_init="#cloud-config\npackages: [nginx]\n", keys=[ssh_key])
    apply(k, ns, obj)
    before = get_json(k, ns, "vm/immut")

    changed = vm("immut", cloud_init="#cloud-config\npackages: [apache2]\n", keys=[ssh_key])
    result = k.run("apply", "-n", ns, "-f", "-", input=manifest(changed), check=False)
    assert result.returncode != 0
    assert 'The VirtualMachine "immut" is invalid' in result.stderr
    assert "spec.osSettings.cloudInitUserData" in result.stderr
    assert "field is immutable" in result.stderr

    result = k.run("patch", "-n", ns, "vm/immut", "--type", "merge", "-p",
                   '{"spec":{"diskRefs":[{"name":"a","bootFrom":true},'
                   '{"name":"b","bootFrom":true}]}}', check=False)
    assert result.returncode != 0 and "spec.diskRefs[1].bootFrom" in result.stderr

    # kubectl patch sends no fieldValidation: the server's default (Warn) drops the unknown
    # field and kubectl shows the warning.
    result = k.run("patch", "-n", ns, "vm/immut", "--type", "merge",
                   "-p", '{"spec":{"foo":1}}')
    assert result.stdout == f"virtualmachine.{GROUP}/immut patched (no change)\n"
    assert 'Warning: unknown field "spec.foo"' in result.stderr

    keys = {"authorizedKeys": [{"value": "ssh-rsa AAAA"}]}
    result = k.run("patch", "-n", ns, "vm/immut", "--type", "merge",
                   "-p", json.dumps({"spec": {"osSettings": {"ssh": keys}}}), check=False)
    assert result.returncode != 0
    assert "spec.osSettings.ssh.authorizedKeys[0].value" in result.stderr
    assert get_json(k, ns, "vm/immut") == before


# ---- namespaces -----------------------------------------------------------------------

def test_namespace_lifecycle(k: Kubectl) -> None:
    name = "proj-lifecycle"
    assert k("create", "namespace", name) == f"namespace/{name} created\n"
    rows = table(k("get", "namespace", name))
    assert rows[0] == ["NAME", "STATUS", "AGE"] and rows[1][:2] == [name, "Active"]

    apply(k, name, vm("in-ns"), disk("in-ns-boot"), pg("in-ns-pg"))
    assert names(k("get", "vm", "-n", name)) == ["in-ns"]

    out = k("delete", "namespace", name, "--timeout=30s")
    assert out == f'namespace "{name}" deleted\n'
    gone = k.run("get", "namespace", name, check=False)
    assert gone.returncode == 1
    assert f'Error from server (NotFound): namespaces "{name}" not found' in gone.stderr
    for resource in ("vm", "disk", "pg"):
        listed = k.run("get", resource, "-n", name, check=False)
        assert listed.returncode == 1 and f'namespaces "{name}" not found' in listed.stderr
    everywhere = k("get", "vm,disk,pg", "-A", "-o", "jsonpath={.items[*].metadata.namespace}")
    assert name not in everywhere.split()

    # The name can be used again, empty.
    k("create", "namespace", name)
    empty = k.run("get", "vm", "-n", name)
    assert empty.stdout == "" and f"No resources found in {name} namespace." in empty.stderr
    k("delete", "namespace", name)


def test_namespace_deletion_waits_for_finalizers(k: Kubectl) -> None:
    name = "proj-held"
    k("create", "namespace", name)
    apply(k, name, vm("free"), pg("held-pg", finalizers=["example.com/hold"]))
    assert k("delete", "namespace", name, "--wait=false") == f'namespace "{name}" deleted\n'

    k("wait", "--for=delete", "-n", name, "vm/free", "--timeout=10s")
    assert table(k("get", "namespace", name))[1][:2] == [name, "Terminating"]
    assert jsonpath(k, name, "pg/held-pg", "{.metadata.deletionTimestamp}")
    refused = k.run("apply", "-n", name, "-f", "-", input=manifest(pg("late")), check=False)
    assert refused.returncode != 0 and "terminat" in refused.stderr.lower()

    k("patch", "-n", name, "pg/held-pg", "--type", "json",
      "-p", '[{"op":"remove","path":"/metadata/finalizers"}]')
    out = k("wait", "--for=delete", f"namespace/{name}", "--timeout=15s")
    # kubectl prints nothing when the namespace was already gone before it started waiting.
    assert out in ("", f"namespace/{name} condition met\n")
    assert k.run("get", "namespace", name, check=False).returncode == 1


def test_creating_in_a_missing_namespace_fails(k: Kubectl) -> None:
    result = k.run("apply", "-n", "x", "-f", "-", input=manifest(vm("lost")), check=False)
    assert result.returncode != 0
    assert 'namespaces "x" not found' in result.stderr
    result = k.run("create", "-n", "x", "-f", "-", input=manifest(pg("lost")), check=False)
    assert result.returncode != 0 and 'namespaces "x" not found' in result.stderr
    assert k.run("get", "namespace", "x", check=False).returncode == 1


def test_namespace_names_are_validated(k: Kubectl) -> None:
    result = k.run("create", "namespace", "Bad_Name", check=False)
    assert result.returncode != 0
    assert 'metadata.name: Invalid value: "Bad_Name"' in result.stderr
    default = k.run("delete", "namespace", "default", check=False)
    assert default.returncode != 0 and "forbidden" in default.stderr.lower()

