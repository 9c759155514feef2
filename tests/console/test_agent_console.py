"""The console of a VM on a separately run agent's host, read through that agent.

A real server (API only: the test binds the instance to the host itself) and a real
`evroc-compute agent` process; the console file is written by the test where QEMU writes it
on the agent's host (tests/qemu/test_agent_console.py boots a real guest instead).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from evroc_compute.hosts.drivers.qemu import images
from tests.conftest import Kubectl, Server, make_kubectl, start_server
from tests.console.agents import connections_to, port_of, published_endpoint, refused_directly
from tests.e2e.users import Session, issue_token
from tests.qemu.test_cloud import start_agent, wait_for

HOST = "agent-1"
VMS = "/apis/compute.evroclabs.net/v1alpha1/namespaces/p/virtualmachines"
INFRA = "/apis/infra.evroc-compute.io/v1alpha1"


@dataclass
class Setup:
    server: Server
    kubectl: Kubectl
    console: Path  # the console file of VM p/con on the agent's host
    agent: subprocess.Popen[bytes]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    base = tmp_path_factory.mktemp("agentcon")
    (base / "fleet.yaml").write_text(yaml.safe_dump({"heartbeat": {"interval": 1, "timeout": 5}}))
    server = start_server(base / "data")
    (base / "images").mkdir()
    agent = start_agent(server, base, images.ImageStore(base / "images"), HOST, "se-sto-a")
    try:
        kubectl = make_kubectl(server, base)
        wait_for(lambda: published_endpoint(kubectl, HOST), 30, "the agent's console endpoint")
        kubectl("create", "namespace", "p")
        for name in ("con", "quiet"):
            kubectl("create", "-f", "-", input=json.dumps(vm(name)))
            kubectl("create", "-f", "-", input=json.dumps(instance(name)))
        console = base / HOST / "qemu" / "vms" / "p" / "con" / "console.log"
        console.parent.mkdir(parents=True)
        console.write_text("SeaBIOS\nLinux version 6.1\ncon login: ")
        yield Setup(server, kubectl, console, agent)
    finally:
        if agent.poll() is None:
            agent.send_signal(signal.SIGINT)
            agent.wait(15)
        server.stop()


def vm(name: str) -> dict[str, Any]:
    return {"apiVersion": "compute.evroclabs.net/v1alpha1", "kind": "VirtualMachine",
            "metadata": {"name": name, "namespace": "p"},
            "spec": {"vmVirtualResourcesRef": {"vmVirtualResourcesRefName": "a1a.s"},
                     "diskRefs": [{"name": f"{name}-boot", "bootFrom": True}]}}


def instance(name: str) -> dict[str, Any]:
    return {"apiVersion": "infra.evroc-compute.io/v1alpha1", "kind": "VirtualMachineInstance",
            "metadata": {"name": name, "namespace": "p"},
            "spec": {"vmUID": f"uid-{name}", "resources": {"vcpu": 1, "memoryBytes": 1 << 30},
                     "host": HOST}}


def follower(kubectl: Kubectl, query: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [kubectl.binary, "--kubeconfig", str(kubectl.kubeconfig), "--cache-dir",
         str(kubectl.cache_dir), "get", "--raw", f"{VMS}/con/console?{query}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_kubectl_reads_and_follows_the_console_through_the_agent(
        setup: Setup) -> None:
    kubectl, console = setup.kubectl, setup.console
    endpoint = published_endpoint(kubectl, HOST)
    assert endpoint is not None and endpoint["url"].startswith("https://127.0.0.1:")
    assert endpoint["certificate"].startswith("-----BEGIN CERTIFICATE-----")
    assert kubectl("get", "--raw", f"{VMS}/con/console") == "SeaBIOS\nLinux version 6.1\ncon login: "
    assert kubectl("get", "--raw", f"{VMS}/con/console?tailLines=2") == \
        "Linux version 6.1\ncon login: "

    # follow=true: what the guest prints next arrives through the server and the agent.
    port = port_of(endpoint)
    watching = follower(kubectl, "follow=true&tailLines=0")
    wait_for(lambda: connections_to(port) == 1, 10, "the server's connection to the agent")
    with console.open("a") as out:
        out.write("root\n")
    assert watching.stdout is not None
    assert watching.stdout.readline() == "root\n"
    # The client leaves: the server's connection to the agent closes.
    watching.kill()
    watching.wait(5)
    wait_for(lambda: connections_to(port) == 0, 10, "the connection to the agent to close")

    # The guest stops (its instance goes): the follow ends once what it printed is sent.
    watching = follower(kubectl, "follow=true&tailLines=1")
    assert watching.stdout is not None
    assert watching.stdout.readline() == "con login: root\n"
    with console.open("a") as out:
        out.write("reboot: Power down\n")
    kubectl("-n", "p", "delete", "vmi", "con", "--wait=false")
    out, _ = watching.communicate(timeout=30)
    assert out == "reboot: Power down\n"


def test_a_vm_the_agent_has_no_console_of_is_not_running(
        setup: Setup) -> None:
    kubectl = setup.kubectl
    refused = kubectl.run("get", "--raw", f"{VMS}/quiet/console", check=False)
    assert refused.returncode != 0
    assert 'VirtualMachine "quiet" has no running instance' in refused.stderr


def test_only_users_allowed_the_console_read_it(
        setup: Setup) -> None:
    server, kubectl = setup.server, setup.kubectl
    token, _ = issue_token(server, "vm-reader")
    kubectl("-n", "p", "create", "role", "vm-reader", "--verb=get", "--resource=virtualmachines")
    kubectl("-n", "p", "create", "rolebinding", "vm-reader", "--role=vm-reader", "--user=vm-reader")
    reader = Session(server, token)
    try:
        code, _, body = reader.request("GET", f"{VMS}/quiet")
        assert code == 200, body
        code, _, body = reader.request("GET", f"{VMS}/quiet/console")
        status = json.loads(body)
        assert code == 403 and status["reason"] == "Forbidden", body
        assert 'cannot get resource "virtualmachines/console"' in status["message"]
    finally:
        reader.close()


def test_nobody_but_the_server_reads_the_agent(
        setup: Setup, tmp_path: Path) -> None:
    server, kubectl = setup.server, setup.kubectl
    endpoint = published_endpoint(kubectl, HOST)
    assert endpoint is not None
    refused_directly(server, tmp_path, endpoint, "/console/p/con?tailLines=1")


def test_an_agent_that_is_gone_is_a_503_naming_host_and_address(
        setup: Setup) -> None:
    kubectl, agent = setup.kubectl, setup.agent
    endpoint = published_endpoint(kubectl, HOST)
    assert endpoint is not None
    agent.send_signal(signal.SIGINT)
    agent.wait(15)
    time.sleep(0.2)
    refused = kubectl.run("get", "--raw", f"{VMS}/quiet/console", check=False)
    assert refused.returncode != 0
    assert f'cannot reach the agent of host "{HOST}" at {endpoint["url"]}' in refused.stderr
    assert "ServiceUnavailable" in refused.stderr
