"""Users other than the admin, for tests: issued by `evroc-compute credentials create`, and a
keep-alive HTTPS connection that acts as one."""

from __future__ import annotations

import http.client
import json
import ssl
import subprocess
import sys
from urllib.parse import urlparse

import yaml

from tests.conftest import ROOT, Server


def issue_token(server: Server, user: str, *groups: str) -> tuple[str, str]:
    """A bearer token for `user` in `groups`, and the kubeconfig the command printed."""
    issued = subprocess.run(
        [sys.executable, "-m", "evroc_compute.cli", "credentials", "create", user,
         *(arg for group in groups for arg in ("--group", group)),
         "--data-dir", str(server.data_dir), "--pki-dir", str(server.pki_dir),
         "--server", server.url], capture_output=True, text=True, check=True, cwd=ROOT)
    config = yaml.safe_load(issued.stdout)
    return config["users"][0]["user"]["token"], issued.stdout


class Session:
    """One keep-alive connection to the server, as the admin (client certificate) or as the
    holder of `token`."""

    def __init__(self, server: Server, token: str = "") -> None:
        parsed = urlparse(server.url)
        context = ssl.create_default_context(cafile=str(server.ca)) if token else server.tls()
        self.conn = http.client.HTTPSConnection(parsed.hostname or "127.0.0.1", parsed.port,
                                                timeout=60, context=context)
        self.headers = {"Accept": "application/json", "Content-Type": "application/json",
                        "User-Agent": "tests/session"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"

    def request(self, method: str, path: str, body: object = None) -> tuple[int, dict[str, str],
                                                                           bytes]:
        data = json.dumps(body).encode() if body is not None else None
        self.conn.request(method, path, body=data, headers=self.headers)
        response = self.conn.getresponse()
        return (response.status, {k.lower(): v for k, v in response.getheaders()},
                response.read())

    def close(self) -> None:
        self.conn.close()
