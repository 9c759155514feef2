"""Kubeconfigs: written for users and hosts; read for what a client needs to reach a server
(URL, trusted CA, credential).

The agent and the CLI take kubeconfigs as kubectl does: the current context's cluster and user,
with certificate-authority(-data), client-certificate(-data)/client-key(-data) or a token.
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class Connection:
    server: str
    tls: ssl.SSLContext | None  # None for http:// servers
    token: str = ""
    ca: str = ""  # the CA trusted (PEM), if the kubeconfig names one

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"} if self.token else {}


def kubeconfig(server: str, user: dict[str, str], *, ca: bytes = b"", cluster: str = "",
               user_name: str = "evroc-user", namespace: str = "default") -> str:
    """A kubeconfig for `server` with credentials `user` (a kubeconfig `user` entry), trusting
    `ca` (PEM) when given; with `cluster`, evroc's kcp-style URL."""
    url = f"{server.rstrip('/')}/clusters/{cluster}" if cluster else server
    entry: dict[str, object] = {"server": url}
    if ca:
        entry["certificate-authority-data"] = base64.b64encode(ca).decode()
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "evroc-compute",
        "clusters": [{"name": "evroc-compute", "cluster": entry}],
        "users": [{"name": user_name, "user": user}],
        "contexts": [{"name": "evroc-compute", "context": {
            "cluster": "evroc-compute", "user": user_name, "namespace": namespace}}],
    }, sort_keys=False)


def control_plane_kubeconfig(server: str, ca: bytes,
                             users: dict[str, dict[str, str]]) -> str:
    """A kubeconfig with one context per user (`users`: context name -> kubeconfig user
    entry), all for `server`; the first is current."""
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": next(iter(users)),
        "clusters": [{"name": "evroc-compute", "cluster": {
            "server": server, "certificate-authority-data": base64.b64encode(ca).decode()}}],
        "users": [{"name": name, "user": user} for name, user in users.items()],
        "contexts": [{"name": name, "context": {"cluster": "evroc-compute", "user": name}}
                     for name in users],
    }, sort_keys=False)


def certificate_user(cert: bytes, key: bytes) -> dict[str, str]:
    return {"client-certificate-data": base64.b64encode(cert).decode(),
            "client-key-data": base64.b64encode(key).decode()}


def admin_kubeconfig(ca: Path, cert: Path, key: Path, server: str, cluster: str = "",
                     token: str = "") -> str:
    """The admin's kubeconfig: the serving CA, the admin client certificate and, given, the
    admin token (for the web console's login; kubectl presents the certificate). Over plain
    HTTP, where no certificate can be presented, the token alone."""
    user = certificate_user(cert.read_bytes(), key.read_bytes())
    if token and server.startswith("http://"):
        user = {"token": token.strip()}
    elif token:
        user["token"] = token.strip()
    return kubeconfig(server, user, ca=ca.read_bytes(), cluster=cluster, user_name="admin")


class KubeconfigError(ValueError):
    pass


def load(path: Path, context_name: str = "") -> Connection:
    """The server, CA and credential of the current context, or of context `context_name`."""
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as problem:
        raise KubeconfigError(f"cannot read kubeconfig {path}: {problem}") from None
    try:
        context = _named(config, "contexts",
                         context_name or config["current-context"])["context"]
        cluster = _named(config, "clusters", context["cluster"])["cluster"]
        user = _named(config, "users", context["user"])["user"] or {}
        server = str(cluster["server"])
    except (KeyError, TypeError) as problem:
        raise KubeconfigError(f"kubeconfig {path} lacks {problem}") from None
    tls = None
    ca = _pem(cluster, "certificate-authority", path)
    if server.startswith("https://"):
        tls = ssl.create_default_context(cadata=ca or None)
        cert = _pem(user, "client-certificate", path)
        if cert:
            _load_chain(tls, cert, _pem(user, "client-key", path))
    return Connection(server, tls, str(user.get("token", "")), ca)


def _named(config: dict[str, Any], section: str, name: str) -> dict[str, Any]:
    for item in config.get(section) or ():
        if item.get("name") == name:
            return dict(item)
    raise KeyError(f"{section[:-1]} {name!r}")


def _pem(entry: dict[str, Any], field: str, base: Path) -> str:
    if entry.get(f"{field}-data"):
        return base64.b64decode(entry[f"{field}-data"]).decode()
    if entry.get(field):
        return (base.parent / entry[field]).read_text()
    return ""


def _load_chain(context: ssl.SSLContext, cert: str, key: str) -> None:
    """ssl reads a certificate and key only from files: write them, private, and remove them."""
    with tempfile.TemporaryDirectory() as directory:
        pair = Path(directory) / "client.pem"
        fd = os.open(pair, os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(cert + "\n" + key)
        context.load_cert_chain(pair)
