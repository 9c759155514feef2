"""Helpers of the tests of consoles read through a host agent: its published endpoint, direct
callers of it, and the connections open to it."""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import httpx

from evroc_compute.server.auth.pki import issue
from tests.conftest import Kubectl, Server


def published_endpoint(kubectl: Kubectl, host: str) -> dict[str, str] | None:
    found = kubectl.run("get", f"host/{host}", "-o", "json", check=False)
    endpoint: dict[str, str] | None = \
        (json.loads(found.stdout or "{}").get("status") or {}).get("agentEndpoint")
    return endpoint


def direct_get(endpoint: dict[str, str], path: str,
               cert: tuple[Path, Path] | None = None) -> httpx.Response:
    """GET the agent's endpoint as someone other than the API server would: trusting the
    certificate the agent published, presenting `cert` (or no certificate)."""
    context = ssl.create_default_context(cadata=endpoint["certificate"])
    if cert is not None:
        context.load_cert_chain(*cert)
    with httpx.Client(verify=context, timeout=10) as client:
        return client.get(endpoint["url"] + path)


def cluster_ca_client_cert(server: Server, tmp: Path, name: str) -> tuple[Path, Path]:
    """A client certificate signed by the CA agents trust (the server's serving CA) for a
    user other than the API server: what a stolen CA key could mint."""
    cert, key = issue(server.pki_dir / "ca.crt", server.pki_dir / "ca.key", name, (), 1)
    paths = tmp / f"{name}.crt", tmp / f"{name}.key"
    paths[0].write_bytes(cert)
    paths[1].write_bytes(key)
    return paths


def port_of(endpoint: dict[str, str]) -> int:
    return int(endpoint["url"].rsplit(":", 1)[1])


def connections_to(port: int) -> int:
    """Established TCP connections whose local port is `port` (the agent's side)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                    count += 1
    return count


def refused_directly(server: Server, tmp: Path, endpoint: dict[str, str], path: str) -> None:
    """Nobody but the API server reads the agent's consoles: no certificate is a 401 Status,
    a certificate of the client CA (the admin's!) fails the handshake, one of the agents' CA
    for another user is a 403 Status; the server's own certificate is answered."""
    anonymous = direct_get(endpoint, path)
    assert anonymous.status_code == 401, anonymous.text
    assert anonymous.json()["reason"] == "Unauthorized"
    assert "serves only the API server" in anonymous.json()["message"]
    try:  # TLS 1.3: the client hears the refusal after its side of the handshake, or the close
        answer = direct_get(endpoint, path, (server.pki_dir / "admin.crt",
                                             server.pki_dir / "admin.key"))
    except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
        pass
    else:
        raise AssertionError(f"the admin's client certificate was answered: {answer.text}")
    other = direct_get(endpoint, path, cluster_ca_client_cert(server, tmp, "mallory"))
    assert other.status_code == 403, other.text
    assert 'User "mallory" cannot read consoles' in other.json()["message"]
    own = (server.pki_dir / "apiserver-agent-client.crt",
           server.pki_dir / "apiserver-agent-client.key")
    assert direct_get(endpoint, path, own).status_code == 200
