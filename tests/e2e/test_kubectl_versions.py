"""Older and newer kubectl against one server: what a user of each version types and sees.

kubectl 1.27 and 1.28 fetch /openapi/v2 (as protobuf) before `apply` and `explain` and
stop with "the server could not find the requested resource" without it; 1.29+ read v3.
Each test runs for 1.27, 1.28, 1.30 and 1.33, with kubectl's default client-side
validation (no `--validate` flag unless the test is about it).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import Kubectl, Server, make_kubectl

VERSIONS = ("1.27", "1.28", "1.30", "1.33")
GROUP = "compute.evroclabs.net"
KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK+p/T/LDpSI7p4bOJfS7M1/t57vh7UQm7fAZSQE2zLB "
       "user@example")


def manifest(name: str, *, label: str = "web") -> str:
    return f"""\
apiVersion: {GROUP}/v1alpha1
kind: Disk
metadata:
  name: {name}-boot
spec:
  diskImage:
    diskImageRef:
      name: ubuntu.24-04.1
---
apiVersion: {GROUP}/v1alpha1
kind: VirtualMachine
metadata:
  name: {name}
  labels: {{app: {label}}}
spec:
  vmVirtualResourcesRef:
    vmVirtualResourcesRefName: a1a.s
  diskRefs:
  - name: {name}-boot
    bootFrom: true
  osSettings:
    ssh:
      authorizedKeys:
      - value: {KEY}
"""


def disk_with(spec_lines: str) -> str:
    return f"""\
apiVersion: {GROUP}/v1alpha1
kind: Disk
metadata:
  name: odd
spec:
  diskImage:
    diskImageRef:
      name: ubuntu.24-04.1
{spec_lines}"""


@pytest.fixture(params=VERSIONS, ids=[f"kubectl-{v}" for v in VERSIONS])
def k(request: pytest.FixtureRequest, shared_server: Server, tmp_path: Path) -> Kubectl:
    """kubectl of one version, in a fresh namespace of the module's server."""
    version: str = request.param
    kubectl = make_kubectl(shared_server, tmp_path, version=version)
    test = re.sub(r"[^a-z0-9]+", "-", request.node.originalname.removeprefix("test_"))
    namespace = f"v{version.replace('.', '')}-{test}"[:63].strip("-")
    kubectl("create", "namespace", namespace)
    kubectl("config", "set-context", "--current", f"--namespace={namespace}")
    return kubectl


def test_apply_with_default_validation_creates_then_configures(k: Kubectl) -> None:
    created = k("apply", "-f", "-", input=manifest("web"))
    assert created == (f"disk.{GROUP}/web-boot created\n"
                       f"virtualmachine.{GROUP}/web created\n")
    changed = k.run("apply", "-f", "-", input=manifest("web", label="shop"))
    assert changed.stdout == (f"disk.{GROUP}/web-boot unchanged\n"
                              f"virtualmachine.{GROUP}/web configured\n")
    # a JSON merge patch was sent (no strategic merge patch for these kinds), so no warning
    assert changed.stderr == ""
    assert k("get", "vm", "web", "-o", "jsonpath={.metadata.labels.app}") == "shop"


def test_get_and_describe(k: Kubectl) -> None:
    k("apply", "-f", "-", input=manifest("web"))
    rows = k("get", "vm").splitlines()
    assert rows[0].split() == ["NAME", "READY", "REASON", "VIRTUALMACHINESTATUS", "IP",
                               "PUBLIC", "IP", "AGE"]
    assert rows[1].split()[0] == "web"
    described = k("describe", "disk", "web-boot")
    assert re.search(r"^Name:\s+web-boot$", described, re.M)
    assert re.search(r"^Kind:\s+Disk$", described, re.M)


def test_an_unknown_field_is_refused_with_its_path(k: Kubectl) -> None:
    result = k.run("apply", "-f", "-", input=disk_with("  colour: blue\n"), check=False)
    assert result.returncode == 1
    assert result.stderr == ('Error from server (BadRequest): error when creating "STDIN": '
                             'strict decoding error: unknown field "spec.colour"\n')
    assert k.run("get", "disk", "odd", check=False).returncode == 1


def test_a_field_of_the_wrong_type_is_refused_with_its_path(k: Kubectl) -> None:
    wrong = disk_with("  diskSize:\n    amount: twenty\n    unit: GB\n")
    result = k.run("apply", "-f", "-", input=wrong, check=False)
    assert result.returncode == 1
    assert 'The Disk "odd" is invalid' in result.stderr
    assert ('spec.diskSize.amount: Invalid value: "twenty": spec.diskSize.amount in body must '
            'be of type integer') in result.stderr


def test_validate_warn_creates_and_warns(k: Kubectl) -> None:
    result = k.run("apply", "--validate=warn", "-f", "-", input=disk_with("  colour: blue\n"))
    assert result.stderr == 'Warning: unknown field "spec.colour"\n'
    assert result.stdout == f"disk.{GROUP}/odd created\n"


def test_explain_a_nested_field(k: Kubectl) -> None:
    out = k("explain", "vm.spec.osSettings")
    assert re.search(r"^KIND:\s+VirtualMachine$", out, re.M)
    assert re.search(r"cloudInitUserData\t<string>", out)
    assert "cannot be updated after the VM is created" in out


def test_explain_from_openapi_v2(k: Kubectl) -> None:
    """`--output plaintext-openapiv2` renders from /openapi/v2 on every version."""
    out = k("explain", "vm.spec.osSettings", "--output=plaintext-openapiv2")
    assert "KIND:     VirtualMachine\n" in out and f"VERSION:  {GROUP}/v1alpha1\n" in out
    assert "RESOURCE: osSettings <Object>" in out
    assert "   cloudInitUserData\t<string>\n" in out and "   ssh\t<Object>\n" in out
    # through the reference to the shared meta.k8s.io/v1 definitions
    owners = k("explain", "vm.metadata.ownerReferences", "--output=plaintext-openapiv2")
    assert "RESOURCE: ownerReferences <[]Object>" in owners
    assert "   uid\t<string> -required-\n" in owners
    missing = k.run("explain", "vm.spec.nope", "--output=plaintext-openapiv2", check=False)
    assert missing.returncode == 1 and missing.stderr == 'error: field "nope" does not exist\n'
