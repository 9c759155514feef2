"""Every VirtualMachine status of the seed, reached for a real reason, seen through the real kubectl.

One server per module runs the controllers and a small simulated fleet whose transitions take a
second or two (so that kubectl can see Provisioning, Stopping, Migrating) and whose heartbeats
and back-off are short.  Each test uses its own namespace; tests that touch a host use a zone of
their own.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import Kubectl, Server
from tests.e2e.conftest import kubectl_in_new_namespace, start_cloud

FLEET = {
    "timing": {"provision": 1.5, "pull": 0, "boot": 0, "stop": 1.5, "migrate": 1.5},
    "heartbeat": {"interval": 0.5, "timeout": 2},
    "backoff": {"base": 1, "max": 4},
    "hosts": [
        {"name": "a-general", "zone": "se-sto-a", "vcpu": 16, "memoryGB": 64, "count": 3},
        {"name": "b-lonely", "zone": "se-sto-b", "vcpu": 16, "memoryGB": 64},
        {"name": "c-drain", "zone": "se-sto-c", "vcpu": 16, "memoryGB": 64, "count": 2},
    ],
}
GROUP = "compute.evroclabs.net/v1alpha1"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_cloud(tmp_path_factory.mktemp("cloud"), FLEET)
    yield server
    server.stop()


@pytest.fixture
def kc(cloud: Server, tmp_path: Path) -> Kubectl:
    """kubectl on the module's cloud, in a namespace of this test's own (its kubeconfig default)."""
    return kubectl_in_new_namespace(cloud, tmp_path)


def disk(name: str, zone: str | None = None, annotations: dict[str, str] | None = None) -> dict:
    spec: dict = {"diskImage": {"diskImageRef": {"name": "ubuntu-minimal.24-04.1"}}}
    if zone:
        spec["placement"] = {"zone": zone}
    meta: dict = {"name": name}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": GROUP, "kind": "Disk", "metadata": meta, "spec": spec}


def vm(name: str, *disks: str, profile: str = "a1a.xs", zone: str | None = None,
       running: bool = True, annotations: dict[str, str] | None = None, **spec: object) -> dict:
    body: dict = {"vmVirtualResourcesRef": {"vmVirtualResourcesRefName": profile},
                  "diskRefs": [{"name": d, "bootFrom": i == 0} for i, d in enumerate(disks)],
                  "running": running, **spec}
    if zone:
        body["placement"] = {"zone": zone}
    meta: dict = {"name": name}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": GROUP, "kind": "VirtualMachine", "metadata": meta, "spec": body}


def apply(kc: Kubectl, *objects: dict) -> None:
    kc("apply", "-f", "-", input=yaml.safe_dump_all(objects))


def wait_status(kc: Kubectl, name: str, status: str, timeout: int = 30) -> None:
    kc("wait", f"vm/{name}", f"--for=jsonpath={{.status.virtualMachineStatus}}={status}",
       f"--timeout={timeout}s", timeout=timeout + 10)


def get(kc: Kubectl, what: str) -> dict:
    result: dict = json.loads(kc("get", what, "-o", "json"))
    return result


def ready(obj: dict) -> dict:
    return next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")


class History:
    """Every status kubectl's watch shows for the VMs of a namespace, in order."""

    def __init__(self, kc: Kubectl) -> None:
        # -v=6 logs each request's answer: the watch's "200 OK" says it is open.
        self.process = subprocess.Popen(
            [kc.binary, "--kubeconfig", str(kc.kubeconfig), "--cache-dir", str(kc.cache_dir),
             "get", "vm", "--watch", "-v=6", "-o",
             "jsonpath={.metadata.name}={.status.virtualMachineStatus}{\"\\n\"}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.watching = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        threading.Thread(target=self._log, daemon=True).start()
        assert self.watching.wait(30), "kubectl did not open its watch"

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.strip())

    def _log(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            if "watch=true" in line and "200 OK" in line:
                self.watching.set()

    def wait_for(self, name: str, status: str, timeout: float = 30) -> None:
        """Until the watch has shown VM `name` in `status`."""
        deadline = time.monotonic() + timeout
        while status not in self.of(name):
            assert time.monotonic() < deadline, f"the watch never showed {name}={status}"
            time.sleep(0.05)

    def of(self, name: str) -> list[str]:
        """The distinct successive statuses of VM `name`."""
        out: list[str] = []
        for line in self.lines:
            vm_name, _, status = line.partition("=")
            if vm_name == name and status and (not out or out[-1] != status):
                out.append(status)
        return out

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


# ---- the happy path and the power states ---------------------------------------------------

def test_a_vm_goes_from_creating_to_running_with_its_disk_address_and_device(kc: Kubectl) -> None:
    history = History(kc)
    apply(kc, disk("boot", zone="se-sto-a"))
    kc("wait", "disk/boot", "--for=condition=Ready", "--timeout=20s")
    apply(kc, vm("web", "boot"))
    wait_status(kc, "web", "Running")
    history.stop()
    assert history.of("web")[0] == "Creating"
    assert history.of("web")[-1] == "Running"
    web = get(kc, "vm/web")
    assert ready(web)["status"] == "True" and ready(web)["reason"] == "Ready"
    assert ready(web)["observedGeneration"] == web["metadata"]["generation"]
    assert web["status"]["networking"]["privateIPv4Address"].startswith("10.0.1.")
    assert web["status"]["placement"] == {"zone": "se-sto-a"}
    assert web["status"]["attachedDisks"] == [{"name": "boot", "device": "/dev/vda"}]
    boot = get(kc, "disk/boot")
    assert boot["status"]["diskSize"] == {"amount": 10, "unit": "GB"}  # the image's default
    assert boot["status"]["diskUsage"] == [{"useKind": "permanent", "vm": "web"}]
    instance = get(kc, "vmi/web")
    assert instance["spec"]["host"].startswith("a-general-")
    assert instance["status"]["phase"] == "Running"


def test_a_new_vm_and_disk_are_protected_and_creating_from_their_creation(kc: Kubectl) -> None:
    new_disk, new_vm = (json.loads(kc("create", "-o", "json", "-f", "-", input=json.dumps(obj)))
                        for obj in (disk("fresh", zone="se-sto-a"), vm("fresh", "fresh")))
    # Finalizers and the first status come with the create, not from a controller's write.
    assert new_disk["metadata"]["finalizers"] == ["compute.evroclabs.net/disk-protection"]
    assert new_vm["metadata"]["finalizers"] == ["compute.evroclabs.net/vm-cleanup"]
    assert new_vm["status"] == {"virtualMachineStatus": "Creating"}
    wait_status(kc, "fresh", "Running")
    instance = get(kc, "vmi/fresh")
    # Created already bound to its host, with its disks ready: its spec was never rewritten.
    assert instance["spec"]["host"].startswith("a-general-") and instance["spec"]["disksReady"]
    assert instance["metadata"]["generation"] == 1


def test_an_unzoned_disk_waits_for_binding_then_provisions_in_the_vms_zone(kc: Kubectl) -> None:
    history = History(kc)
    apply(kc, disk("loose"), vm("binder", "loose", zone="se-sto-a"))
    wait_status(kc, "binder", "Running")
    history.stop()
    seen = history.of("binder")
    assert seen.index("WaitingForVolumeBinding") < seen.index("Provisioning") < seen.index("Running")
    assert get(kc, "disk/loose")["status"]["placement"] == {"zone": "se-sto-a"}


def test_stop_shows_stopping_then_stopped_removes_the_instance_and_keeps_the_address(
        kc: Kubectl) -> None:
    apply(kc, disk("d", zone="se-sto-a"), vm("sleeper", "d"))
    wait_status(kc, "sleeper", "Running")
    address = get(kc, "vm/sleeper")["status"]["networking"]["privateIPv4Address"]
    kc("patch", "vm/sleeper", "--type=merge", "-p", '{"spec":{"running":false}}')
    wait_status(kc, "sleeper", "Stopping", timeout=10)
    wait_status(kc, "sleeper", "Stopped")
    stopped = get(kc, "vm/sleeper")
    assert ready(stopped) | {"lastTransitionTime": ""} == ready(stopped) | {
        "status": "False", "reason": "Stopped", "lastTransitionTime": ""}
    assert "set it to true" in ready(stopped)["message"]
    assert stopped["status"]["networking"]["privateIPv4Address"] == address
    assert "NotFound" in kc.run("get", "vmi/sleeper", check=False).stderr
    kc("patch", "vm/sleeper", "--type=merge", "-p", '{"spec":{"running":true}}')
    wait_status(kc, "sleeper", "Running")
    assert get(kc, "vm/sleeper")["status"]["networking"]["privateIPv4Address"] == address


def test_a_vm_created_stopped_is_stopped_and_never_provisioning(kc: Kubectl) -> None:
    history = History(kc)
    apply(kc, disk("cold"), vm("cold", "cold", running=False))
    wait_status(kc, "cold", "Stopped")
    history.wait_for("cold", "Stopped")
    history.stop()
    assert history.of("cold") == ["Stopped"]


# ---- problems the user must fix -------------------------------------------------------------

def test_a_missing_disk_is_error_pvc_not_found_until_it_is_created(kc: Kubectl) -> None:
    apply(kc, vm("orphan", "nowhere"))
    wait_status(kc, "orphan", "ErrorPvcNotFound")
    assert 'disk "nowhere" does not exist' in ready(get(kc, "vm/orphan"))["message"]
    apply(kc, disk("nowhere", zone="se-sto-a"))
    wait_status(kc, "orphan", "Running")


def test_a_failed_disk_is_data_volume_error_and_the_disk_says_provisioning_failed(
        kc: Kubectl) -> None:
    apply(kc, disk("broken", annotations={"fault.evroc-compute.io/provisioning": "backend full"}),
          vm("victim", "broken"))
    wait_status(kc, "victim", "DataVolumeError")
    condition = ready(get(kc, "disk/broken"))
    assert (condition["status"], condition["reason"]) == ("False", "ProvisioningFailed")
    assert "backend full" in condition["message"]
    assert "backend full" in ready(get(kc, "vm/victim"))["message"]


def test_an_unknown_image_fails_the_disk(kc: Kubectl) -> None:
    apply(kc, {**disk("typo"), "spec": {"diskImage": {"diskImageRef": {"name": "ubuntu.99"}}}})
    kc("wait", "disk/typo", "--for=jsonpath={.status.conditions[0].reason}=ProvisioningFailed",
       "--timeout=20s")
    assert 'DiskImage "ubuntu.99" does not exist' in ready(get(kc, "disk/typo"))["message"]


def test_an_unknown_profile_is_provisioning_failed(kc: Kubectl) -> None:
    apply(kc, disk("d"), vm("odd", "d", profile="a1a.huge"))
    wait_status(kc, "odd", "ProvisioningFailed")
    assert 'VMVirtualResources "a1a.huge" does not exist' in ready(get(kc, "vm/odd"))["message"]


def test_a_vm_too_big_for_any_host_is_unschedulable_with_counts_per_reason(kc: Kubectl) -> None:
    apply(kc, disk("d"), vm("giant", "d", profile="a1a.2xl"))
    wait_status(kc, "giant", "ErrorUnschedulable")
    message = ready(get(kc, "vm/giant"))["message"]
    assert "0/6 hosts are available: 6 insufficient vCPU." in message
    assert "No ready host has 32 vCPUs free; the most free on one is" in message


# ---- faults injected by annotation -----------------------------------------------------------

def test_an_image_that_cannot_be_pulled_backs_off_and_recovers(kc: Kubectl) -> None:
    fault = {"fault.evroc-compute.io/image-pull": "registry unreachable"}
    apply(kc, disk("d", zone="se-sto-a"), vm("puller", "d", annotations=fault))
    wait_status(kc, "puller", "ErrImagePull")
    wait_status(kc, "puller", "ImagePullBackOff")
    assert "next attempt at" in ready(get(kc, "vm/puller"))["message"]
    assert "registry unreachable" in ready(get(kc, "vm/puller"))["message"]
    kc("annotate", "vm/puller", "fault.evroc-compute.io/image-pull-")
    wait_status(kc, "puller", "Running")


def test_a_guest_that_crashes_on_boot_loops_with_back_off_then_runs(kc: Kubectl) -> None:
    history = History(kc)
    apply(kc, disk("d", zone="se-sto-a"),
          vm("crashy", "d", annotations={"fault.evroc-compute.io/crash-on-boot": "2"}))
    wait_status(kc, "crashy", "CrashLoopBackOff")
    assert "next start at" in ready(get(kc, "vm/crashy"))["message"]
    wait_status(kc, "crashy", "Running")
    history.stop()
    seen = history.of("crashy")
    assert seen.count("CrashLoopBackOff") == 2 and "Starting" in seen


def test_a_disk_io_error_pauses_the_guest_until_it_is_cleared(kc: Kubectl) -> None:
    apply(kc, disk("d", zone="se-sto-a"), vm("paused", "d"))
    wait_status(kc, "paused", "Running")
    kc("annotate", "vm/paused", "fault.evroc-compute.io/io-error=disk full")
    wait_status(kc, "paused", "Paused")
    kc("annotate", "vm/paused", "fault.evroc-compute.io/io-error-")
    wait_status(kc, "paused", "Running")


def test_a_host_that_loses_its_heartbeat_makes_its_vms_unknown(kc: Kubectl) -> None:
    apply(kc, disk("d", zone="se-sto-b"), vm("remote", "d"))
    wait_status(kc, "remote", "Running")
    kc("annotate", "host/b-lonely", "fault.evroc-compute.io/heartbeat=lost")
    try:
        wait_status(kc, "remote", "Unknown")
        condition = ready(get(kc, "vm/remote"))
        assert condition["status"] == "Unknown"
        assert 'host "b-lonely" has stopped sending heartbeats' in condition["message"]
        kc("wait", "host/b-lonely", "--for=condition=Ready=Unknown", "--timeout=10s")
    finally:
        kc("annotate", "host/b-lonely", "fault.evroc-compute.io/heartbeat-")
    wait_status(kc, "remote", "Running")


def test_draining_a_host_migrates_its_vms_to_another_host(kc: Kubectl) -> None:
    apply(kc, disk("d", zone="se-sto-c"), vm("mover", "d"))
    wait_status(kc, "mover", "Running")
    source = get(kc, "vmi/mover")["spec"]["host"]
    kc("patch", f"host/{source}", "--type=merge", "-p", '{"spec":{"drain":true}}')
    try:
        wait_status(kc, "mover", "Migrating", timeout=10)
        wait_status(kc, "mover", "Running")
        target = get(kc, "vmi/mover")["spec"]["host"]
        assert target != source and target.startswith("c-drain-")
    finally:
        kc("patch", f"host/{source}", "--type=merge", "-p", '{"spec":{"drain":false}}')


# ---- deletion ---------------------------------------------------------------------------------

def test_deleting_a_vm_is_terminating_then_gone_and_its_disk_stays_unused(kc: Kubectl) -> None:
    history = History(kc)
    apply(kc, disk("keep", zone="se-sto-a"), vm("doomed", "keep"))
    wait_status(kc, "doomed", "Running")
    kc("delete", "vm/doomed", "--wait=true", "--timeout=30s")
    history.stop()
    assert "Terminating" in history.of("doomed")
    kept = get(kc, "disk/keep")
    assert ready(kept)["status"] == "True" and "diskUsage" not in kept["status"]
    assert "NotFound" in kc.run("get", "vmi/doomed", check=False).stderr


def test_a_deleted_vm_held_by_another_finalizer_is_deleting(kc: Kubectl) -> None:
    held = vm("held", "d")
    held["metadata"]["finalizers"] = ["example.com/backup"]
    apply(kc, disk("d", zone="se-sto-a"), held)
    wait_status(kc, "held", "Running")
    kc("delete", "vm/held", "--wait=false")
    wait_status(kc, "held", "Deleting")
    assert "last finalizer" in ready(get(kc, "vm/held"))["message"]
    kc("patch", "vm/held", "--type=json", "-p", '[{"op":"remove","path":"/metadata/finalizers"}]')
    kc("wait", "vm/held", "--for=delete", "--timeout=10s")


def test_deleting_a_disk_in_use_is_held_and_names_the_vm(kc: Kubectl) -> None:
    apply(kc, disk("busy", zone="se-sto-a"), vm("user", "busy"))
    wait_status(kc, "user", "Running")
    kc("delete", "disk/busy", "--wait=false")
    kc("wait", "disk/busy", "--for=condition=DeletionBlocked", "--timeout=10s")
    blocked = next(c for c in get(kc, "disk/busy")["status"]["conditions"]
                   if c["type"] == "DeletionBlocked")
    assert 'VirtualMachine "user"' in blocked["message"]
    assert get(kc, "vm/user")["status"]["virtualMachineStatus"] == "Running"
    kc("delete", "vm/user", "--wait=true", "--timeout=30s")
    kc("wait", "disk/busy", "--for=delete", "--timeout=10s")
