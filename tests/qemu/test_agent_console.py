"""The serial console of a real guest on a separately run agent's host, read through the API.

One server (`serve --driver qemu`), one `evroc-compute agent` for a second host, one minimal
guest placed on that host, shared by the tests in file order: kubectl reads its boot, a
follow receives what the guest prints after it began, a user without
`virtualmachines/console` is refused, nobody but the server reads the agent directly, the
web console shows the text live, and a follow ends when the guest stops.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from evroc_compute.hosts.drivers.qemu import images
from tests.conftest import Kubectl, Server
from tests.console.agents import published_endpoint, refused_directly
from tests.console.conftest import issue_token
from tests.e2e.conftest import kubectl_in_new_namespace
from tests.e2e.users import Session
from tests.e2e.users import issue_token as issue_user_token
from tests.qemu.conftest import SshKey, requires_qemu
from tests.qemu.test_cloud import (
    disk,
    endpoint,
    host_ready,
    manifest,
    namespace_of,
    qemu_pids,
    serve_qemu,
    ssh_until_ok,
    start_agent,
    vm,
    wait_for,
    wait_status,
)

pytestmark = [pytest.mark.slow, requires_qemu, pytest.mark.timeout(300)]
HOST = "qemu-2"
BOOTED = "evroc-seed: 1 SSH key(s) for evroc-user"  # the minimal guest's last boot line
LOGIN = "auth succeeded for 'evroc-user'"  # dropbear's log (on the console) of an SSH login


@dataclass
class Remote:
    server: Server
    kubectl: Kubectl
    key: SshKey
    namespace: str
    ssh: tuple[str, int]

    @property
    def console(self) -> str:
        return (f"/apis/compute.evroclabs.net/v1alpha1/namespaces/{self.namespace}/"
                "virtualmachines/remote/console")

    def login(self) -> None:
        """An SSH login, which the guest's dropbear logs on the console."""
        ssh_until_ok(self.key, self.ssh, "true")


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory, store: images.ImageStore,
           minimal_image: images.StoredImage) -> Iterator[Remote]:
    base = tmp_path_factory.mktemp("remote-console")
    private = base / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "evroc-test", "-f",
                    str(private)], check=True)
    key = SshKey(private, private.with_suffix(".pub").read_text().strip())
    server = serve_qemu(base, store)
    agent = start_agent(server, base, store, HOST, "se-sto-b")
    try:
        kubectl = kubectl_in_new_namespace(server, base)
        wait_for(lambda: host_ready(kubectl, HOST) and published_endpoint(kubectl, HOST), 30,
                 "the agent's host to be Ready with its console endpoint")
        kubectl("apply", "-f", "-", input=manifest(disk("boot", minimal_image.name),
                                                   vm("remote", "boot", key, zone="se-sto-b")))
        status = wait_status(kubectl, "remote", "Running")
        assert json.loads(kubectl("get", "vmi/remote", "-o", "json"))["spec"]["host"] == HOST
        yield Remote(server, kubectl, key, namespace_of(kubectl), endpoint(status))
    finally:
        agent.send_signal(signal.SIGINT)
        agent.wait(15)
        server.stop()
        for pid in qemu_pids(base):
            subprocess.run(["kill", "-9", str(pid)], check=False)


def test_kubectl_reads_the_boot_of_a_guest_on_another_host(remote: Remote) -> None:
    kubectl = remote.kubectl
    wait_for(lambda: BOOTED in kubectl("get", "--raw", remote.console), 120,
             "the guest's boot on its console")
    tail = kubectl("get", "--raw", f"{remote.console}?tailLines=20")
    assert 0 < len(tail.splitlines()) <= 20 and BOOTED in tail
    whole = kubectl("get", "--raw", remote.console)
    assert "Linux version" in whole and whole.endswith(tail)


def test_a_follow_receives_what_the_guest_prints_next(remote: Remote) -> None:
    received: list[bytes] = []
    seen = threading.Event()

    def follow(client: httpx.Client) -> None:
        with client.stream("GET", f"{remote.server.url}{remote.console}",
                           params={"follow": "true", "tailLines": "0"}) as answer:
            assert answer.status_code == 200
            for chunk in answer.iter_raw():
                received.append(chunk)
                if LOGIN.encode() in b"".join(received):
                    seen.set()
                    return

    with httpx.Client(verify=remote.server.tls(), timeout=httpx.Timeout(10, read=120)) as client:
        follower = threading.Thread(target=follow, args=(client,), daemon=True)
        follower.start()
        before = remote.kubectl("get", "--raw", remote.console).count(LOGIN)
        remote.login()
        assert seen.wait(60), b"".join(received)
        follower.join(10)
    assert remote.kubectl("get", "--raw", remote.console).count(LOGIN) == before + 1


def test_a_user_without_the_console_subresource_is_refused(remote: Remote) -> None:
    token, _ = issue_user_token(remote.server, "vm-getter")
    remote.kubectl("create", "role", "vm-getter", "--verb=get", "--resource=virtualmachines")
    remote.kubectl("create", "rolebinding", "vm-getter", "--role=vm-getter", "--user=vm-getter")
    session = Session(remote.server, token)
    try:
        code, _, body = session.request("GET", remote.console.removesuffix("/console"))
        assert code == 200, body
        code, _, body = session.request("GET", remote.console)
        status = json.loads(body)
        assert code == 403 and status["reason"] == "Forbidden", body
        assert 'cannot get resource "virtualmachines/console"' in status["message"]
    finally:
        session.close()


def test_nobody_but_the_server_reads_the_agent(remote: Remote, tmp_path: Path) -> None:
    found = published_endpoint(remote.kubectl, HOST)
    assert found is not None
    refused_directly(remote.server, tmp_path, found, f"/console/{remote.namespace}/remote")


def test_the_web_console_shows_the_serial_console_live(remote: Remote) -> None:
    from tests.console.browser import chromium
    from tests.console.test_browser import expect, signed_in

    token = issue_token(remote.server, "console-admin", "system:masters")
    with chromium() as browser:
        page = signed_in(browser, remote.server, token)
        page.goto(page.url.split("#")[0] + f"#/{remote.namespace}/vms/remote")
        serial = page.locator("[data-testid=serial-console]")
        expect(serial).to_contain_text(BOOTED, timeout=30_000)
        logins = serial.inner_text().count(LOGIN)
        remote.login()  # printed after the page began to follow: it must arrive live
        wait_for(lambda: serial.inner_text().count(LOGIN) > logins, 30,
                 "the SSH login's console line in the page")


def test_a_follow_ends_when_the_guest_stops(remote: Remote) -> None:
    follower = subprocess.Popen(
        [remote.kubectl.binary, "--kubeconfig", str(remote.kubectl.kubeconfig), "--cache-dir",
         str(remote.kubectl.cache_dir), "get", "--raw", f"{remote.console}?follow=true&tailLines=1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        remote.kubectl("patch", "vm", "remote", "--type", "merge", "-p",
                       '{"spec":{"running":false}}')
        out, err = follower.communicate(timeout=90)
    finally:
        follower.kill()
    assert follower.returncode == 0, err
    assert "Requesting system poweroff" in out, out  # busybox init's last words, then the end
    wait_status(remote.kubectl, "remote", "Stopped")
