"""Every answer is an answer: whatever a client sends, it gets a Status, never a dropped connection.

Raw sockets where an HTTP client library would refuse to send what is tested (a header
too long, a head that never ends, an upgrade).
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from evroc_compute.api.compute import DISK
from evroc_compute.client.http import HttpClient
from evroc_compute.runtime.writes import set_finalizer
from evroc_compute.server.app import App
from evroc_compute.server.connections import MAX_HEAD_BYTES, MAX_REQUEST_LINE_BYTES
from evroc_compute.server.http import warning_header
from tests.api.client import GROUP, Http, Reply, disk, disk_path
from tests.conftest import Server, start_server


@pytest.fixture(scope="module")
def http(shared_server: Server) -> Http:
    return Http(shared_server)


def _port(server: Server) -> int:
    return int(server.url.rsplit(":", 1)[1])


def _connect(server: Server, timeout: float | None = None) -> socket.socket:
    """A raw connection, TLS handshake done, as the admin (nothing sent yet)."""
    sock = socket.create_connection(("127.0.0.1", _port(server)), timeout=timeout)
    return server.tls().wrap_socket(sock, server_hostname="127.0.0.1")


def _exchange(server: Server, data: bytes, timeout: float = 30) -> bytes:
    """Send raw bytes, read until the server closes the connection."""
    with _connect(server, timeout) as sock:
        sock.sendall(data)
        answer = b""
        with contextlib.suppress(ssl.SSLEOFError, ConnectionResetError):
            while chunk := sock.recv(65536):
                answer += chunk
        return answer


def _status(answer: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body)


def _until(condition: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


# --- Warning headers ----------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "header"), [
    ('unknown field "spec.foo"', b'299 - "unknown field \\"spec.foo\\""'),
    ("a\\b", b'299 - "a\\\\b"'),
    ("tab\there", b'299 - "tab\\\\u0009here"'),
    ("line\r\nbreak", b'299 - "line\\\\u000d\\\\u000abreak"'),
    ("nul\x00 del\x7f", b'299 - "nul\\\\u0000 del\\\\u007f"'),
    ("surrogate \ud800", b'299 - "surrogate \\\\ud800"'),
    ("non-latin-1 €日本", '299 - "non-latin-1 €日本"'.encode()),
], ids=["quotes escaped", "backslash escaped", "tab", "CR LF", "NUL and DEL", "lone surrogate",
        "UTF-8 kept"])
def test_warning_header_values_are_quoted_strings_a_header_can_carry(text: str,
                                                                      header: bytes) -> None:
    name, value = warning_header(text)
    assert (name, value) == (b"warning", header)
    assert not any(byte < 0x20 or byte == 0x7f for byte in value)


@pytest.mark.parametrize("field", ["a\x01b", "line\nbreak", "snow☃man", "€"],
                         ids=["control character", "newline", "non-latin-1", "euro sign"])
def test_an_unknown_field_with_any_name_is_created_and_warned_about(http: Http, field: str) -> None:
    name = f"warned-{abs(hash(field)) % 10**8}"
    body = disk(name)
    body["spec"][field] = 1
    reply = http.request("POST", disk_path(), body, fieldValidation="Warn")
    assert reply.status == 201, reply.raw
    assert reply.headers["warning"].startswith('299 - "unknown field \\"spec.')
    assert http.request("GET", disk_path(name=name)).status == 200


# --- methods ------------------------------------------------------------------------------------

DOCUMENTS = ["/", "/version", "/api", "/api/v1", "/apis", "/apis/compute.evroclabs.net",
             f"{GROUP}", "/openapi/v3", "/openapi/v3/apis/compute.evroclabs.net/v1alpha1",
             "/healthz", "/readyz", "/livez", "/metrics", "/clusters/root:org/version"]


@pytest.mark.parametrize("path", DOCUMENTS)
@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_read_only_paths_answer_other_methods_405(http: Http, path: str, method: str) -> None:
    assert http.request("GET", path).status == 200
    reply = http.request(method, path, {})
    assert reply.status == 405, reply.raw
    assert (reply.body["kind"], reply.body["reason"]) == ("Status", "MethodNotAllowed")
    assert method in reply.body["message"]


def test_an_unknown_path_is_404_whatever_the_method(http: Http) -> None:
    for method in ("GET", "POST"):
        for path in ("/nothing", "/apis/nothing.example.com", "/apis/nothing.example.com/v1",
                     "/api/v2", "/openapi/v9"):
            assert http.request(method, path, {}).status == 404, (method, path)


# --- websocket upgrades -------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/version", f"{GROUP}/namespaces/default/virtualmachines",
                                  "/nothing"])
def test_a_websocket_upgrade_is_a_400_status(shared_server: Server, path: str) -> None:
    key = base64.b64encode(b"0123456789abcdef").decode()
    answer = _exchange(shared_server, (
        f"GET {path}?watch=true HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    code, headers, status = _status(answer)
    assert code == 400 and headers["content-type"] == "application/json"
    assert (status["kind"], status["reason"]) == ("Status", "BadRequest")
    assert "websocket" in status["message"] and "watch=true" in status["message"]


# --- request heads ------------------------------------------------------------------------------


def test_a_request_line_too_long_is_414(shared_server: Server) -> None:
    selector = "a" * MAX_REQUEST_LINE_BYTES
    answer = _exchange(shared_server, f"GET /api/v1?labelSelector={selector} HTTP/1.1\r\n"
                       "Host: x\r\n\r\n".encode())
    code, headers, status = _status(answer)
    assert (code, status["reason"], headers["connection"]) == (414, "RequestURITooLong", "close")


@pytest.mark.parametrize("headers", [
    [f"X-Big: {'b' * MAX_HEAD_BYTES}"],
    [f"X-Many-{i}: {'c' * 1000}" for i in range(MAX_HEAD_BYTES // 1000 + 1)],
], ids=["one big header", "many headers"])
def test_headers_too_large_are_431(shared_server: Server, headers: list[str]) -> None:
    answer = _exchange(shared_server, ("GET /version HTTP/1.1\r\nHost: x\r\n"
                                       + "".join(f"{h}\r\n" for h in headers) + "\r\n").encode())
    code, _, status = _status(answer)
    assert (code, status["reason"]) == (431, "RequestHeaderFieldsTooLarge")


def test_a_head_just_under_the_limits_is_served(shared_server: Server) -> None:
    answer = _exchange(shared_server, (
        f"GET /version?x={'a' * (MAX_REQUEST_LINE_BYTES - 100)} HTTP/1.1\r\nHost: x\r\n"
        f"X-Big: {'b' * (MAX_HEAD_BYTES - MAX_REQUEST_LINE_BYTES)}\r\nConnection: close\r\n\r\n"
    ).encode())
    assert answer.startswith(b"HTTP/1.1 200 ")


# --- idle connections and the connection cap ----------------------------------------------------


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that closes idle connections after 1 s and holds at most 6 (3 watches)."""
    server = start_server(tmp_path_factory.mktemp("limited") / "data",
                          "--idle-timeout", "1", "--max-connections", "6")
    yield server
    server.stop()


def test_a_connection_that_sends_nothing_is_closed(limited: Server) -> None:
    assert _exchange(limited, b"") == b""


def test_a_head_that_never_ends_is_408(limited: Server) -> None:
    code, _, status = _status(_exchange(limited, b"GET /version HTTP/1.1\r\nHost: x\r\nX-Slow"))
    assert (code, status["reason"]) == (408, "Timeout")


def test_a_watch_outlives_the_idle_timeout(limited: Server) -> None:
    http = Http(limited)
    conn, watch = http.stream(f"{GROUP}/namespaces/default/disks", watch="true")
    try:
        assert _exchange(limited, b"") == b""  # an idle timeout has passed since the watch began
        assert http.request("POST", disk_path(), disk("after-idle")).status == 201
        event = watch.readline()
        while b"after-idle" not in event:
            assert event, "the watch was closed"
            event = watch.readline()
        assert event.startswith(b'{"type":"ADDED"')
    finally:
        conn.close()


def _get(server: Server) -> Reply:
    return Http(server).request("GET", "/version")


def test_connections_past_the_cap_get_503_until_one_closes(limited: Server) -> None:
    idle = [_connect(limited) for _ in range(6)]
    try:
        refused = _get(limited)
        assert refused.status == 503 and refused.body["reason"] == "ServiceUnavailable"
        assert refused.headers["retry-after"] == "1"
        assert "too many open connections (6)" in refused.body["message"]
    finally:
        for sock in idle:
            sock.close()
    _until(lambda: _get(limited).status == 200)


def test_watches_hold_at_most_half_the_connections(limited: Server) -> None:
    http = Http(limited)
    watches = [http.stream(f"{GROUP}/namespaces/default/disks", watch="true") for _ in range(3)]
    try:
        for _, response in watches:
            assert response.status == 200
        refused = http.request("GET", f"{GROUP}/namespaces/default/disks", watch="true")
        assert refused.status == 429 and refused.body["reason"] == "TooManyRequests"
        assert refused.headers["retry-after"] == "1"
        assert _get(limited).status == 200, "requests still get through"
    finally:
        for conn, _ in watches:
            conn.close()
    _until(lambda: http.request("GET", f"{GROUP}/namespaces/default/disks", watch="true",
                                timeoutSeconds="1").status == 200)


# --- controllers --------------------------------------------------------------------------------


async def test_removing_a_finalizer_from_an_object_already_gone_is_done(server: Server) -> None:
    async with HttpClient(server.url, "finalizer-test",
                          connection=server.connection()) as client:
        body = disk("gone")
        body["metadata"]["finalizers"] = ["example.com/keep"]
        stale = await client.create(DISK, {**body, "metadata": {**body["metadata"],
                                                                "namespace": "default"}})
        await client.delete(DISK, "default", "gone")
        await client.patch(DISK, "default", "gone", {"metadata": {"finalizers": None}})
        assert await set_finalizer(client, DISK, stale, "example.com/keep", False) == stale


# --- request bodies -----------------------------------------------------------------------------


def test_a_body_that_never_arrives_is_408(limited: Server) -> None:
    answer = _exchange(limited, (f"POST {disk_path()} HTTP/1.1\r\nHost: x\r\n"
                                 "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
                                 '{"kind": "Di').encode())
    code, _, status = _status(answer)
    assert (code, status["reason"]) == (408, "Timeout") and "body" in status["message"]


def test_a_connection_answered_before_its_body_is_closed(limited: Server) -> None:
    """A 413 for a body too large: the server closes, instead of reading a trickle forever."""
    with _connect(limited, 10) as sock:
        sock.sendall((f"POST {disk_path()} HTTP/1.1\r\nHost: x\r\nContent-Type: "
                      "application/json\r\nContent-Length: 999999999999\r\n\r\n{").encode())
        answer, started = b"", time.monotonic()
        sock.settimeout(0.5)
        while True:
            assert time.monotonic() - started < 8, "the connection was kept open"
            try:
                sock.sendall(b" ")  # a trickle of body bytes, as a slow client sends them
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
                break
            if not chunk:
                break
            answer += chunk
    assert _status(answer)[0] == 413


async def test_a_body_cut_short_by_a_disconnect_is_never_acted_on(tmp_path: Path) -> None:
    """YAML cut at a line end still decodes: the server must see that the client left."""
    sent_part = yaml.safe_dump(disk("cut-short")).encode()  # a whole document by itself
    app = App(tmp_path)
    await app.start()
    try:
        messages = [{"type": "http.request", "body": sent_part, "more_body": True},
                    {"type": "http.disconnect"}]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return messages.pop(0)

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app({"type": "http", "method": "POST", "path": disk_path(), "query_string": b"",
                   "headers": [(b"content-type", b"application/yaml"),
                               (b"content-length", str(len(sent_part) + 100).encode())]},
                  receive, send)
        assert sent == []
        assert app.ctx is not None and app.ctx.store.get(DISK.key("default", "cut-short")) is None
    finally:
        await app.stop()
