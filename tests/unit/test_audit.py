"""Audit events: what a completed request becomes, secrets redacted, and the rotating file."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from evroc_compute.server import audit
from evroc_compute.server.audit import AuditLog, Record, RotatingFile, event, redact
from evroc_compute.server.auth.authz import Attributes
from evroc_compute.server.auth.users import UserInfo

ALICE = UserInfo("alice", ("dev", "system:authenticated"), uid="alice-1a2b")
GET_VM = Attributes(ALICE, "get", "virtualmachines", "compute.evroclabs.net", "p1", "vm1")
CREATE_CREDENTIAL = Attributes(ALICE, "create", "credentials", "identity.evroc-compute.io")
BASE = Record(received=1_800_000_000.25, seconds=0.0125, method="GET",
              path="/apis/compute.evroclabs.net/v1alpha1/namespaces/p1/virtualmachines/vm1",
              query=b"", client=("10.0.0.7", 50123),
              headers=[(b"user-agent", b"kubectl/v1.32.0"), (b"authorization", b"Bearer s3cret")],
              user=ALICE, attributes=GET_VM, api_version="v1alpha1", code=200)
CREDENTIAL = {"apiVersion": "identity.evroc-compute.io/v1", "kind": "Credential",
              "metadata": {"name": "alice-1a2b"},
              "spec": {"user": "alice", "type": "token", "tokenHash": "ab" * 32}}


def test_a_request_becomes_kubes_event() -> None:
    assert event(BASE, "Metadata", "id-1") == {
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "auditID": "id-1",
        "stage": "ResponseComplete", "requestURI": BASE.path, "verb": "get",
        "user": {"username": "alice", "groups": ["dev", "system:authenticated"],
                 "uid": "alice-1a2b"},
        "sourceIPs": ["10.0.0.7"], "userAgent": "kubectl/v1.32.0",
        "objectRef": {"resource": "virtualmachines", "namespace": "p1", "name": "vm1",
                      "apiGroup": "compute.evroclabs.net", "apiVersion": "v1alpha1"},
        "responseStatus": {"metadata": {}, "code": 200},
        "requestReceivedTimestamp": "2027-01-15T08:00:00.250000Z",
        "stageTimestamp": "2027-01-15T08:00:00.262500Z",
        "annotations": {"apiserver.latency.k8s.io/total": "12.500ms"}}


def body_record(attributes: Attributes, body: Any, content_type: str = "application/json",
                raw: bytes | None = None) -> Record:
    return replace(BASE, method="POST", attributes=attributes, code=201,
                   body=raw if raw is not None else json.dumps(body).encode(),
                   content_type=content_type)


CREATE_VM = replace(GET_VM, verb="create", name="")
CASES: dict[str, tuple[Record, audit.Level, Any]] = {
    "Metadata never logs a body": (body_record(CREATE_VM, {"spec": {}}), "Metadata", None),
    "Request logs a write's body": (body_record(CREATE_VM, {"spec": {"a": 1}}), "Request",
                                    {"spec": {"a": 1}}),
    "Request logs no body of a read": (replace(body_record(GET_VM, {"x": 1}), code=200),
                                       "Request", None),
    "a Credential's tokenHash is redacted": (
        body_record(CREATE_CREDENTIAL, CREDENTIAL), "Request",
        {**CREDENTIAL, "spec": {**CREDENTIAL["spec"], "tokenHash": "<redacted>"}}),
    "YAML bodies are logged as objects": (
        body_record(CREATE_VM, None, "application/apply-patch+yaml", b"spec:\n  a: 1\n"),
        "Request", {"spec": {"a": 1}}),
}


@pytest.mark.parametrize(("record", "level", "logged"), CASES.values(), ids=CASES.keys())
def test_request_bodies(record: Record, level: audit.Level, logged: Any) -> None:
    assert event(record, level, "id").get("requestObject") == logged


def test_a_body_that_cannot_be_read_is_left_out_and_said_so() -> None:
    record = body_record(CREATE_VM, None, "application/vnd.kubernetes.protobuf", b"k8s\x00\xff")
    out = event(record, "Request", "id")
    assert "requestObject" not in out
    assert "not logged" in out["annotations"]["evroc-compute.io/request-object"]


@pytest.mark.parametrize(("value", "redacted"), [
    ({"spec": {"tokenHash": "x"}}, {"spec": {"tokenHash": "<redacted>"}}),
    ([{"op": "replace", "path": "/spec/tokenHash", "value": "x"}],  # a JSON patch
     [{"op": "replace", "path": "/spec/tokenHash", "value": "<redacted>"}]),
    ([{"op": "add", "path": "/spec", "value": {"tokenHash": "x", "user": "u"}}],
     [{"op": "add", "path": "/spec", "value": {"tokenHash": "<redacted>", "user": "u"}}]),
    ({"spec": {"user": "u"}}, {"spec": {"user": "u"}}),
], ids=["merge or apply body", "JSON patch of the field", "JSON patch of its parent", "no secret"])
def test_redact(value: Any, redacted: Any) -> None:
    assert redact(value) == redacted


def test_failed_authentication_has_no_user_and_the_authorization_header_is_never_logged() -> None:
    out = event(replace(BASE, user=None, attributes=None, code=401), "Request", "id")
    assert out["user"] == {} and out["verb"] == "get" and "objectRef" not in out
    assert "s3cret" not in json.dumps(out)


def test_the_file_rotates_by_size_and_keeps_the_newest_backups(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = RotatingFile(path, max_bytes=100, max_backups=2)
    for n in range(10):  # 10 lines of 40 bytes: 2 per file
        log.write_lines([f"{n:02d}".encode() + b"x" * 37 + b"\n"])
    log.close()
    backups = log.backups()
    assert len(backups) == 2  # older ones deleted
    assert all(p.stat().st_size <= 100 for p in [*backups, path])
    kept = b"".join(p.read_bytes() for p in [*backups, path]).splitlines()
    assert [line[:2] for line in kept] == [b"04", b"05", b"06", b"07", b"08", b"09"]


def test_the_writer_thread_writes_every_record_as_a_line(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.log")
    log.start()
    for n in range(1000):
        log.record(replace(BASE, path=f"/r/{n}"))
    log.close()
    lines = (tmp_path / "audit.log").read_text().splitlines()
    assert [json.loads(line)["requestURI"] for line in lines] == [f"/r/{n}" for n in range(1000)]
    assert len({json.loads(line)["auditID"] for line in lines}) == 1000
