"""The virtualmachines/console subresource, read with `kubectl get --raw` like pods/log."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Kubectl, Server, make_kubectl
from tests.e2e.conftest import start_cloud

FLEET = {
    "timing": {"provision": 0.2, "pull": 0.2, "boot": 0.5, "stop": 1.5, "migrate": 1},
    "hosts": [{"name": "a-general", "zone": "se-sto-a", "vcpu": 32, "memoryGB": 128}],
}
KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK+p/T/LDpSI7p4bOJfS7M1/t57vh7UQm7fAZSQE2zLB "
       "user@example")
MANIFEST = f"""
apiVersion: compute.evroclabs.net/v1alpha1
kind: Disk
metadata: {{name: con-boot}}
spec: {{diskImage: {{diskImageRef: {{name: ubuntu.24-04.1}}}}}}
---
apiVersion: compute.evroclabs.net/v1alpha1
kind: VirtualMachine
metadata: {{name: con}}
spec:
  vmVirtualResourcesRef: {{vmVirtualResourcesRefName: a1a.s}}
  diskRefs: [{{name: con-boot, bootFrom: true}}]
  osSettings: {{ssh: {{authorizedKeys: [{{value: "{KEY}"}}]}}}}
"""
CONSOLE = "/apis/compute.evroclabs.net/v1alpha1/namespaces/default/virtualmachines/con/console"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_cloud(tmp_path_factory.mktemp("serial"), FLEET)
    yield server
    server.stop()


@pytest.fixture
def kubectl(cloud: Server, tmp_path: Path) -> Kubectl:
    return make_kubectl(cloud, tmp_path)


def test_the_console_of_a_simulated_vm(cloud: Server, kubectl: Kubectl) -> None:
    kubectl("apply", "-f", "-", input=MANIFEST)
    kubectl("wait", "vm/con", "--for=jsonpath={.status.virtualMachineStatus}=Running",
            "--timeout=30s")
    log = kubectl("get", "--raw", CONSOLE)
    assert "Set hostname to <con>." in log and "1 SSH key(s) authorized" in log
    assert log.endswith("con login: \n")
    assert kubectl("get", "--raw", f"{CONSOLE}?tailLines=1") == "con login: \n"
    refused = kubectl.run("get", "--raw", f"{CONSOLE}?tailLines=x", check=False)
    assert refused.returncode != 0 and "tailLines must be a number" in refused.stderr
    assert '"virtualmachines/console"' in kubectl("get", "--raw",
                                                  "/apis/compute.evroclabs.net/v1alpha1")

    # follow=true streams what comes next: the power-down when the VM stops, then the end.
    follower = subprocess.Popen(
        [kubectl.binary, "--kubeconfig", str(kubectl.kubeconfig), "--cache-dir",
         str(kubectl.cache_dir), "get", "--raw", f"{CONSOLE}?follow=true&tailLines=1"],
        stdout=subprocess.PIPE, text=True)
    time.sleep(1)
    kubectl("patch", "vm", "con", "--type", "merge", "-p", '{"spec":{"running":false}}')
    out, _ = follower.communicate(timeout=30)
    assert out.startswith("con login: \n")
    assert out.rstrip().endswith("reboot: Power down")

    stopped = kubectl.run("get", "--raw", CONSOLE, check=False)
    assert stopped.returncode != 0
    assert 'VirtualMachine "con" has no running instance (status Stopped)' in stopped.stderr
    missing = kubectl.run("get", "--raw", CONSOLE.replace("/con/", "/nope/"), check=False)
    assert "NotFound" in missing.stderr or "not found" in missing.stderr


def test_the_console_of_a_qemu_vm_is_its_console_file(cloud: Server, kubectl: Kubectl) -> None:
    """A QEMU VM on this server's own host: the file its driver writes (here written by the
    test in the same place), tailed and followed as it grows."""
    kubectl("apply", "-f", "-", input=MANIFEST.replace("con", "qcon"))
    path = cloud.data_dir / "qemu" / "vms" / "default" / "qcon" / "console.log"
    path.parent.mkdir(parents=True)
    path.write_text("SeaBIOS\nLinux version 6.1\nqcon login: ")
    qconsole = CONSOLE.replace("/con/", "/qcon/")
    assert kubectl("get", "--raw", qconsole) == "SeaBIOS\nLinux version 6.1\nqcon login: "
    assert kubectl("get", "--raw", f"{qconsole}?tailLines=2") == "Linux version 6.1\nqcon login: "
    follower = subprocess.Popen(
        [kubectl.binary, "--kubeconfig", str(kubectl.kubeconfig), "--cache-dir",
         str(kubectl.cache_dir), "get", "--raw", f"{qconsole}?follow=true&tailLines=0"],
        stdout=subprocess.PIPE, text=True)
    time.sleep(1)
    with path.open("a") as console:
        console.write("root\nroot@qcon:~# ")
    time.sleep(1)
    kubectl("delete", "vm", "qcon")  # the follow ends with the VM
    out, _ = follower.communicate(timeout=30)
    assert out == "root\nroot@qcon:~# "
