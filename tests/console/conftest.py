"""Helpers of the console's tests: tokens issued as a user would get them."""

from __future__ import annotations

import subprocess
import sys

import yaml

from tests.conftest import ROOT, Server


def issue_token(server: Server, name: str, *groups: str) -> str:
    """A bearer token from `evroc-compute credentials create NAME [--group G]...`."""
    flags = [arg for group in groups for arg in ("--group", group)]
    printed = subprocess.run(
        [sys.executable, "-m", "evroc_compute.cli", "credentials", "create", name, *flags,
         "--data-dir", str(server.data_dir), "--pki-dir", str(server.pki_dir),
         "--server", server.url], check=True, capture_output=True, text=True, cwd=ROOT).stdout
    token: str = yaml.safe_load(printed)["users"][0]["user"]["token"]
    return token
