"""`serve --audit-log`: an audit.k8s.io/v1 Event for every request, kubectl's and raw ones,
refusals (401, 403) included; bodies of writes at level Request with secrets redacted; no
token ever written; the file rotated by size."""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from evroc_compute.server.auth.authn import token_hash
from tests.api.client import Http, vm, vm_path
from tests.conftest import Kubectl, Server, make_kubectl, start_server
from tests.e2e.users import Session, issue_token

VM_YAML = """apiVersion: compute.evroclabs.net/v1alpha1
kind: VirtualMachine
metadata: {name: audited}
spec:
  vmVirtualResourcesRef: {vmVirtualResourcesRefName: a1a.s}
  diskRefs: [{name: d-audited, bootFrom: true}]
"""


def events(path: Path) -> list[dict[str, Any]]:
    """Every event in the log and its rotated files, oldest file first."""
    files = [*sorted(path.parent.glob(f"{path.stem}-*{path.suffix}")), path]
    return [json.loads(line) for f in files if f.exists() for line in f.read_text().splitlines()]


def settled(path: Path, count: int = 0) -> list[dict[str, Any]]:
    """The events once the writer has caught up (it writes every 50 ms): at least `count`, and
    no new line for 0.3 s."""
    deadline, seen = time.monotonic() + 10, -1
    while time.monotonic() < deadline:
        now = events(path)
        if len(now) >= count and len(now) == seen:
            return now
        seen = len(now)
        time.sleep(0.3)
    raise AssertionError(f"audit log has {seen} events, expected >= {count}")


@pytest.fixture
def audited(tmp_path: Path) -> Iterator[Server]:
    srv = start_server(tmp_path / "data", "--audit-log", str(tmp_path / "audit" / "audit.log"),
                       "--audit-level", "Request")
    yield srv
    srv.stop()


def log_path(server: Server) -> Path:
    return server.data_dir.parent / "audit" / "audit.log"


# kubectl -v=6 prints each request it sends: `GET https://host:port/path?query 200 OK in 3 ms`
KUBECTL_REQUEST = re.compile(r"\] (GET|POST|PUT|PATCH|DELETE) https://[^/]+(/\S*) (\d{3}) ")


def kubectl_requests(kubectl: Kubectl, *args: str, **kwargs: Any) -> list[tuple[str, str, int]]:
    result = kubectl.run(*args, "-v=6", **kwargs)
    return [(m[1], m[2], int(m[3])) for m in KUBECTL_REQUEST.finditer(result.stderr)]


def test_every_kubectl_request_is_one_event_with_who_what_and_outcome(
        audited: Server, tmp_path: Path) -> None:
    kubectl = make_kubectl(audited, tmp_path)
    sent = kubectl_requests(kubectl, "apply", "-f", "-", input=VM_YAML)
    sent += kubectl_requests(kubectl, "get", "virtualmachines", "audited", "-o", "name")
    sent += kubectl_requests(kubectl, "get", "virtualmachines", "missing", check=False)
    sent += kubectl_requests(kubectl, "delete", "virtualmachine", "audited", "--wait=false")
    assert len(sent) >= 6 and any(code == 404 for _, _, code in sent)
    logged = [e for e in settled(log_path(audited)) if e["userAgent"].startswith("kubectl")]
    methods = {"get": "GET", "list": "GET", "create": "POST", "patch": "PATCH",
               "delete": "DELETE", "update": "PUT"}
    assert Counter((methods[e["verb"]], e["requestURI"], e["responseStatus"]["code"])
                   for e in logged) == Counter(sent)
    for e in logged:
        assert (e["kind"], e["apiVersion"], e["stage"], e["level"]) == \
            ("Event", "audit.k8s.io/v1", "ResponseComplete", "Request")
        assert e["user"] == {"username": "admin",
                             "groups": ["system:masters", "system:authenticated"]}
        assert e["sourceIPs"] == ["127.0.0.1"] and e["auditID"]
        assert e["requestReceivedTimestamp"] <= e["stageTimestamp"]
        assert e["annotations"]["apiserver.latency.k8s.io/total"].endswith("ms")
    get = next(e for e in logged if e["verb"] == "get" and "/virtualmachines/audited"
               in e["requestURI"] and e["responseStatus"]["code"] == 200)
    assert get["objectRef"] == {"resource": "virtualmachines", "namespace": "default",
                                "name": "audited", "apiGroup": "compute.evroclabs.net",
                                "apiVersion": "v1alpha1"}
    written = [e for e in logged if e["verb"] in ("create", "patch")]
    assert written and all(e["requestObject"]["metadata"]["name"] == "audited" for e in written)
    assert all("requestObject" not in e for e in logged if e["verb"] in ("get", "list"))


def test_refusals_are_audited_and_no_token_or_its_hash_is_ever_written(audited: Server) -> None:
    token, _ = issue_token(audited, "carol")  # no group: refused everything
    secret = token.split(".", 1)[1]
    assert Session(audited, token).request("GET", vm_path())[0] == 403
    assert Http(audited, token="nobody.wrong").request("GET", vm_path()).status == 401
    assert Http(audited).request("POST", vm_path(), vm("by-admin")).status == 201
    watch = Http(audited).request("GET", vm_path(), watch="true", timeoutSeconds="1")
    assert watch.status == 200
    logged = settled(log_path(audited))
    codes = {(e["user"].get("username"), e["verb"], e["responseStatus"]["code"]) for e in logged}
    assert {("carol", "list", 403), (None, "get", 401), ("admin", "create", 201),
            ("admin", "watch", 200)} <= codes
    issued = next(e for e in logged if e.get("objectRef", {}).get("resource") == "credentials")
    assert issued["requestObject"]["spec"]["tokenHash"] == "<redacted>"
    text = "\n".join(path.read_text() for path in log_path(audited).parent.iterdir())
    for leaked in (secret, token_hash(secret), "nobody.wrong", "Bearer"):
        assert leaked not in text


def test_level_metadata_logs_no_bodies(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    srv = start_server(tmp_path / "data", "--audit-log", str(path))
    try:
        assert Http(srv).request("POST", vm_path(), vm("meta")).status == 201
        logged = settled(path)
    finally:
        srv.stop()
    create = next(e for e in logged if e["verb"] == "create")
    assert create["level"] == "Metadata" and "requestObject" not in create
    assert create["objectRef"]["resource"] == "virtualmachines"


def test_the_log_rotates_by_size_and_keeps_maxbackup_files(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    srv = start_server(tmp_path / "data", "--audit-log", str(path), "--audit-log-maxsize",
                       "0.002", "--audit-log-maxbackup", "3")  # ~2 KB: a few events a file
    try:
        client = Http(srv)
        for n in range(40):
            assert client.request("GET", vm_path(name=f"r{n}")).status == 404
        settled(path, 1)
    finally:
        srv.stop()
    backups = sorted(tmp_path.glob("audit-*.log"))
    assert len(backups) == 3
    assert all(f.stat().st_size <= 2097 for f in [*backups, path])
    uris = [e["requestURI"] for e in events(path)]
    assert uris[-1] == vm_path(name="r39")  # the newest kept, in order, without a gap
    kept = [int(u.rsplit("/r", 1)[1]) for u in uris if "/virtualmachines/r" in u]
    assert kept == list(range(kept[0], 40))
