"""Logging in with OpenID Connect, as cloud CLIs do: a small issuer the test runs (HTTPS on
loopback with its own CA, a discovery document, a key set), a server started with the
`--oidc-*` flags, and kubectl and the Python client with an `exec` credential plugin that prints
the ID token. Every bad token gets a 401 that says what is wrong with it."""

from __future__ import annotations

import json
import ssl
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from evroc_compute.server.auth.pki import Pki
from tests.api.client import Http
from tests.conftest import Kubectl, Server, kubectl_binary, start_server

CLIENT_ID = "evroc-compute"


@dataclass
class Issuer:
    url: str
    ca: Path
    keys: dict[str, Any] = field(default_factory=dict)  # kid -> private key
    published: list[str] = field(default_factory=list)  # the kids its key set shows
    fetches: int = 0

    def add_key(self, kid: str, key: Any) -> None:
        self.keys[kid] = key
        self.published.append(kid)

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid in self.published:
            key = self.keys[kid]
            codec = RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else ECAlgorithm
            jwk = codec.to_jwk(key.public_key(), as_dict=True)
            keys.append({**jwk, "kid": kid, "use": "sig"})
        return {"keys": keys}

    def token(self, kid: str = "rsa-1", *, key: Any = None, lifetime: float = 300,
              **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": self.url, "aud": CLIENT_ID, "sub": "alice", "iat": now,
                "exp": now + lifetime, "groups": ["developers", "team-a"], **claims}
        signer = key or self.keys[kid]
        algorithm = "RS256" if isinstance(signer, rsa.RSAPrivateKey) else "ES256"
        return jwt.encode(body, signer, algorithm=algorithm, headers={"kid": kid})


@pytest.fixture
def issuer(tmp_path: Path) -> Iterator[Issuer]:
    pki = Pki(tmp_path / "issuer-pki")  # the issuer's own CA and certificate
    pki.ensure(["127.0.0.1"])
    state: dict[str, Issuer] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found = state["issuer"]
            if self.path == "/.well-known/openid-configuration":
                body = {"issuer": found.url, "jwks_uri": f"{found.url}/keys",
                        "id_token_signing_alg_values_supported": ["RS256", "ES256"]}
            elif self.path == "/keys":
                found.fetches += 1
                body = found.jwks()
            else:
                self.send_error(404)
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.serving_cert, pki.serving_key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    found = state["issuer"] = Issuer(f"https://127.0.0.1:{httpd.server_address[1]}", pki.ca_cert)
    found.add_key("rsa-1", rsa.generate_private_key(public_exponent=65537, key_size=2048))
    found.add_key("ec-1", ec.generate_private_key(ec.SECP256R1()))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield found
    httpd.shutdown()


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
