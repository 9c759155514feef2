"""Logging in with OpenID Connect, as cloud CLIs do: a small issuer the test runs (HTTPS on
loopback with its own CA, a discovery document, a key set), a server started with the
`--oidc-*` flags, and kubectl and the Python client with an `exec` credential plugin that prints
the ID token. Every bad token gets a 401 that says what is wrong with it."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import rsa
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from tests.api.client import Http
from tests.conftest import Kubectl, Server, kubectl_binary, start_server
from tests.e2e.oidc_issuer import CLIENT_ID, Issuer, running_issuer


@pytest.fixture
def issuer(tmp_path: Path) -> Iterator[Issuer]:
    with running_issuer(tmp_path / "issuer-pki") as found:
        yield found


@pytest.fixture
def server(tmp_path: Path, issuer: Issuer) -> Iterator[Server]:
    srv = start_server(tmp_path / "data", "--oidc-issuer-url", issuer.url, "--oidc-client-id",
                       CLIENT_ID, "--oidc-username-claim", "sub", "--oidc-groups-claim",
                       "groups", "--oidc-ca-file", str(issuer.ca), "--oidc-username-prefix",
                       "oidc:")
    yield srv
    srv.stop()


def exec_kubeconfig(server: Server, tmp: Path, token_file: Path) -> Path:
    """A kubeconfig whose user is an exec plugin printing the ID token, as cloud CLIs do."""
    plugin = tmp / "login.py"
    plugin.write_text(
        "import json, sys\n"
        "token = open(sys.argv[1]).read().strip()\n"
        "print(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1',\n"
        "                  'kind': 'ExecCredential', 'status': {'token': token}}))\n")
    admin = yaml.safe_load(server.kubeconfig())
    admin["users"] = [{"name": "oidc", "user": {"exec": {
        "apiVersion": "client.authentication.k8s.io/v1", "command": sys.executable,
        "args": [str(plugin), str(token_file)], "interactiveMode": "Never"}}}]
    admin["contexts"][0]["context"]["user"] = "oidc"
    path = tmp / "kubeconfig-oidc"
    path.write_text(yaml.safe_dump(admin))
    return path


def refusal(server: Server, token: str) -> str:
    answer = Http(server, token=token).request("GET", "/api/v1/namespaces")
    assert answer.status == 401, answer.raw
    return str(answer.body["message"])


def user_of(server: Server, token: str) -> str:
    """Who the server took the token for: an authenticated user without roles gets a 403
    naming them (authorization is not this test's subject)."""
    answer = Http(server, token=token).request("GET", "/api/v1/namespaces")
    assert answer.status in (200, 403), answer.raw
    return str(answer.body.get("message", ""))


def test_kubectl_and_the_python_client_log_in_through_an_exec_plugin(
        server: Server, issuer: Issuer, tmp_path: Path) -> None:
    token_file = tmp_path / "id-token"
    token_file.write_text(issuer.token())
    path = exec_kubeconfig(server, tmp_path, token_file)
    kubectl = Kubectl(kubectl_binary(), path, tmp_path / "kubectl-cache")
    answered = kubectl.run("get", "--raw", "/api/v1/namespaces", check=False)
    assert 'User "oidc:alice" cannot list resource "namespaces"' in answered.stderr, \
        answered.stderr
    with pytest.raises(ApiException) as python:
        client.CoreV1Api(config.new_client_from_config(str(path))).list_namespace()
    assert python.value.status == 403 and "oidc:alice" in str(python.value.body)

    token_file.write_text(issuer.token(lifetime=-60))
    expired = kubectl.run("get", "--raw", "/api/v1/namespaces", check=False)
    assert expired.returncode != 0 and "oidc:alice" not in expired.stderr
    assert "Unauthorized" in expired.stderr or "logged in" in expired.stderr


def test_rs256_and_es256_tokens_carry_user_and_groups(server: Server, issuer: Issuer) -> None:
    assert 'User "oidc:alice"' in user_of(server, issuer.token("rsa-1"))
    assert 'User "oidc:bob"' in user_of(server, issuer.token("ec-1", sub="bob"))


@pytest.mark.parametrize(("claims", "kid", "said"), [
    ({"lifetime": -60}, "rsa-1", "the token expired at"),
    ({"nbf": int(time.time()) + 3600}, "rsa-1", "not valid before"),
    ({"aud": "another-client"}, "rsa-1", "does not include this server's client id"),
    ({"iss": "https://issuer.example"}, "rsa-1", "is not trusted by this server"),
    ({}, "nobody-knows", "is not one of issuer"),
    ({"groups": ["system:masters"]}, "rsa-1", "reserved"),
], ids=["expired", "not-yet-valid", "wrong-audience", "unknown-issuer", "unknown-key",
        "reserved-name"])
def test_a_bad_token_is_refused_with_what_is_wrong(server: Server, issuer: Issuer,
                                                   claims: dict[str, Any], kid: str,
                                                   said: str) -> None:
    options = dict(claims)
    lifetime = options.pop("lifetime", 300)
    if kid not in issuer.keys:
        token = issuer.token(kid, key=issuer.keys["rsa-1"], lifetime=lifetime, **options)
    else:
        token = issuer.token(kid, lifetime=lifetime, **options)
    assert said in refusal(server, token)


def test_a_bad_signature_is_refused(server: Server, issuer: Issuer) -> None:
    forged = issuer.token("rsa-1", key=rsa.generate_private_key(public_exponent=65537,
                                                                key_size=2048))
    assert "signature does not verify" in refusal(server, forged)


def test_keys_are_cached_and_fetched_again_for_a_new_key(server: Server, issuer: Issuer) -> None:
    for _ in range(3):
        user_of(server, issuer.token("rsa-1"))
    assert issuer.fetches == 1
    time.sleep(1.1)  # the server asks the issuer again at most once a second
    issuer.add_key("rsa-2", rsa.generate_private_key(public_exponent=65537, key_size=2048))
    assert 'User "oidc:alice"' in user_of(server, issuer.token("rsa-2"))
    assert issuer.fetches == 2
