"""The agent's console endpoint's decisions: which request is a console, who may read it, and
the subresource's tailLines, as tables."""

from __future__ import annotations

from typing import Any

import pytest

from evroc_compute.api import consolelog
from evroc_compute.hosts.console import ConsoleRequest, Refusal, caller_refusal, parse_request


def head(line: str) -> bytes:
    return f"{line}\r\nhost: agent\r\n\r\n".encode()


@pytest.mark.parametrize(("line", "wanted"), [
    ("GET /console/p/web HTTP/1.1", ConsoleRequest("p", "web", None, False)),
    ("GET /console/p/web?tailLines=20&follow=true HTTP/1.1", ConsoleRequest("p", "web", 20, True)),
    ("GET /console/p/web?follow=false&tailLines=0 HTTP/1.1", ConsoleRequest("p", "web", 0, False)),
    ("GET /console/p/web.v2?follow=1 HTTP/1.1", ConsoleRequest("p", "web.v2", None, True)),
])
def test_console_requests(line: str, wanted: ConsoleRequest) -> None:
    assert parse_request(head(line)) == wanted


@pytest.mark.parametrize(("line", "code", "says"), [
    ("GET /console/p/web?tailLines=-1 HTTP/1.1", 400, "tailLines must be a number"),
    ("GET /console/p/web?tailLines=x HTTP/1.1", 400, "tailLines must be a number"),
    ("POST /console/p/web HTTP/1.1", 405, "GET only"),
    ("GET /console/p HTTP/1.1", 404, "no such path"),
    ("GET /containerLogs/p/web/c HTTP/1.1", 404, "no such path"),
    ("GET /console/p/web/extra HTTP/1.1", 404, "no such path"),
    ("GET /console/../web HTTP/1.1", 404, "no such VM"),
    ("GET /console/p/..%2F..%2Fetc HTTP/1.1", 404, "no such VM"),
    ("GET /console/P/web HTTP/1.1", 404, "no such VM"),
    ("GET /console/p/a..b HTTP/1.1", 404, "no such VM"),
    ("GARBAGE", 400, "a request line is"),
])
def test_other_requests_are_refused(line: str, code: int, says: str) -> None:
    with pytest.raises(Refusal) as refused:
        parse_request(head(line))
    assert refused.value.code == code and says in refused.value.message
    status = refused.value.status()
    assert status["kind"] == "Status" and status["code"] == code and status["reason"]


def subject(*names: tuple[str, str]) -> dict[str, Any]:
    return {"subject": tuple(((key, value),) for key, value in names)}


@pytest.mark.parametrize(("peer", "code"), [
    (subject(("commonName", "system:apiserver")), None),
    (subject(("organizationName", "x"), ("commonName", "system:apiserver")), None),
    (None, 401),
    ({}, 401),
    (subject(("commonName", "admin")), 403),
    (subject(("organizationName", "system:masters")), 403),
    (subject(("commonName", "system:apiserver"), ("commonName", "admin")), 403),
])
def test_only_the_api_server_may_read(peer: dict[str, Any] | None, code: int | None) -> None:
    refusal = caller_refusal("h", peer)
    assert (refusal.code if refusal else None) == code


@pytest.mark.parametrize(("data", "lines", "wanted"), [
    (b"a\nb\nc", None, b"a\nb\nc"),
    (b"a\nb\nc", 2, b"b\nc"),
    (b"a\nb\nc\n", 1, b"c\n"),
    (b"a\nb\nc", 0, b""),
    (b"a\nb", 10, b"a\nb"),
])
def test_tail(data: bytes, lines: int | None, wanted: bytes) -> None:
    assert consolelog.tail(data, lines) == wanted


@pytest.mark.parametrize(("value", "wanted"), [(None, None), ("0", 0), ("20", 20)])
def test_tail_lines(value: str | None, wanted: int | None) -> None:
    assert consolelog.parse_tail_lines(value) == wanted


@pytest.mark.parametrize("value", ["", "-1", "1.5", "x", "²"])
def test_tail_lines_refused(value: str) -> None:
    with pytest.raises(ValueError, match="tailLines must be a number"):
        consolelog.parse_tail_lines(value)
