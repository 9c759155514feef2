"""Issued credentials through kubectl and the Python client: tokens and client certificates
work, revocation and expiry take effect on the next request with a 401 that says so, an unknown
token and a wrong secret read the same, and tokens never reach the server's log."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from evroc_compute.client import kubeconfig as kubeconfigs
from tests.api.client import Http
from tests.conftest import ROOT, Kubectl, Server, kubectl_binary, start_server


def credentials(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "evroc_compute.cli", "credentials", *args, "--data-dir",
         str(server.data_dir), "--pki-dir", str(server.pki_dir), "--server", server.url],
        capture_output=True, text=True, cwd=ROOT, timeout=60)


def issue(server: Server, tmp: Path, *args: str) -> Path:
    """A kubeconfig from `credentials create ARGS`, written to a file."""
    made = credentials(server, "create", *args)
    assert made.returncode == 0, made.stderr
    path = tmp / f"kubeconfig-{len(list(tmp.glob('kubeconfig-*')))}"
    path.write_text(made.stdout)
    return path


def token_of(path: Path) -> str:
    return str(yaml.safe_load(path.read_text())["users"][0]["user"]["token"])


def as_user(path: Path, tmp: Path) -> Kubectl:
    return Kubectl(kubectl_binary(), path, tmp / "kubectl-cache")


def refusal(server: Server, token: str) -> str:
    answer = Http(server, token=token).request("GET", "/api/v1/namespaces")
    assert answer.status == 401, answer.raw
    assert answer.body["reason"] == "Unauthorized"
    return str(answer.body["message"])


@pytest.fixture
def logged(tmp_path: Path) -> Server:
    server = start_server(tmp_path / "data", "--log-level", "debug")
    yield server  # type: ignore[misc]
    server.stop()


def test_a_token_works_until_it_is_revoked_by_name_or_by_user(logged: Server,
                                                              tmp_path: Path) -> None:
    alice = issue(logged, tmp_path, "alice", "--group", "system:masters", "--group", "ops",
                  "--ttl", "1h")
    kubectl = as_user(alice, tmp_path)
    assert kubectl("get", "namespace", "default", "-o", "name").strip() == "namespace/default"
    api = client.CoreV1Api(config.new_client_from_config(str(alice)))
    assert api.read_namespace("default").metadata.name == "default"

    listed = credentials(logged, "list")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if " alice " in line)
    name, user, groups, kind, expires, revoked = row.split()
    assert (user, groups, kind, revoked) == ("alice", "system:masters,ops", "token", "false")
    assert expires.endswith("Z")
    secret = token_of(alice).split(".", 1)[1]
    assert secret not in listed.stdout

    revoked_now = credentials(logged, "revoke", name)
    assert revoked_now.returncode == 0 and name in revoked_now.stdout
    assert "revoked" in refusal(logged, token_of(alice))
    refused = kubectl.run("get", "namespace", "default", check=False)
    assert refused.returncode != 0 and ("Unauthorized" in refused.stderr
                                        or "logged in" in refused.stderr)
    with pytest.raises(ApiException) as python_refused:
        api.read_namespace("default")
    assert python_refused.value.status == 401

    bob = issue(logged, tmp_path, "bob", "--group", "system:masters")
    bob_too = issue(logged, tmp_path, "bob", "--group", "system:masters")
    assert as_user(bob, tmp_path)("get", "ns", "default", "-o", "name")
    by_user = credentials(logged, "revoke", "bob")
    assert by_user.returncode == 0 and by_user.stdout.count("(bob)") == 2
    for path in (bob, bob_too):
        assert "revoked" in refusal(logged, token_of(path))
    bob_rows = [line.split() for line in credentials(logged, "list").stdout.splitlines()
                if " bob " in line]
    assert len(bob_rows) == 2 and all(row[-1] == "true" for row in bob_rows)
    again = credentials(logged, "revoke", "bob")
    assert again.returncode == 1 and "no credential" in again.stderr

    log = logged.log_path.read_text()
    assert "/api/v1/namespaces" in log  # the requests were logged ...
    for path in (alice, bob, bob_too):
        token = token_of(path)
        assert token.split(".", 1)[1] not in log  # ... their tokens were not


def test_a_token_stops_working_when_it_expires(logged: Server, tmp_path: Path) -> None:
    short = issue(logged, tmp_path, "carol", "--group", "system:masters", "--ttl", "2s")
    token = token_of(short)
    assert Http(logged, token=token).request("GET", "/api/v1/namespaces").status == 200
    time.sleep(2.5)
    assert "expired at" in refusal(logged, token)
    refused = as_user(short, tmp_path).run("get", "ns", check=False)
    assert refused.returncode != 0


def test_an_unknown_token_and_a_wrong_secret_read_the_same(logged: Server,
                                                           tmp_path: Path) -> None:
    real = token_of(issue(logged, tmp_path, "dave"))
    name = real.split(".", 1)[0]
    messages = {refusal(logged, f"{name}.wrong-secret"), refusal(logged, "nobody.secret"),
                refusal(logged, "no-dot-at-all")}
    assert len(messages) == 1, messages
    assert "dave" not in messages.pop()


def test_a_client_certificate_works_with_kubectl_and_is_revocable(logged: Server,
                                                                 tmp_path: Path) -> None:
    erin = issue(logged, tmp_path, "erin", "--cert", "--group", "system:masters",
                 "--group", "ops")
    user = yaml.safe_load(erin.read_text())["users"][0]["user"]
    assert "client-certificate-data" in user and "token" not in user
    kubectl = as_user(erin, tmp_path)
    assert kubectl("get", "namespace", "default", "-o", "name").strip() == "namespace/default"
    listed = credentials(logged, "list").stdout
    assert any(" erin " in line and "certificate" in line for line in listed.splitlines())

    assert credentials(logged, "revoke", "erin").returncode == 0
    tls = kubeconfigs.load(erin).tls
    answer = Http(logged, tls=tls).request("GET", "/api/v1/namespaces")
    assert answer.status == 401 and "client certificate was revoked" in answer.body["message"]
    assert kubectl.run("get", "ns", check=False).returncode != 0


def test_names_under_system_are_reserved(logged: Server) -> None:
    refused = credentials(logged, "create", "system:admin")
    assert refused.returncode == 1 and "reserved" in refused.stderr
