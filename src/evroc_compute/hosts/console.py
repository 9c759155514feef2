"""The agent's console endpoint: its host's serial consoles, served to the API server only.

As a kubelet serves `containerLogs` to kube-apiserver, a QEMU host's agent serves HTTPS
(`agent --console-address`) with one route:

    GET /console/NAMESPACE/NAME?tailLines=N&follow=true

answering the VM's console file with the subresource's meaning (api/consolelog.py); a follow
ends when the VM's instance is no longer bound to this host (the guest stopped, the VM was
deleted) or the caller leaves. The serving certificate is the agent's own (self-signed; the
agent publishes it with the URL in its Host's `status.agentEndpoint`, and the API server
trusts exactly it). The caller must present a client certificate signed by the CA the agent
is given (the cluster CA of its kubeconfig) with CN `system:apiserver`: the handshake refuses
a certificate of another CA, and a caller without one, or with another name, is answered
401 or 403. Every refusal is a Kubernetes Status. One request per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import ssl
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from evroc_compute.api import consolelog

log = logging.getLogger(__name__)
HEAD_TIMEOUT = 10.0  # seconds a caller has to complete its TLS handshake and request head
MAX_HEAD = 16 * 1024
_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
_NAMESPACE = re.compile(_LABEL)
_NAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*")
_REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
            405: "MethodNotAllowed"}
_PHRASES = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
            404: "Not Found", 405: "Method Not Allowed"}


class Refusal(Exception):
    """An answer other than the console: a Status with this code and message."""

    def __init__(self, code: int, message: str, field: str = "") -> None:
        super().__init__(message)
        self.code, self.message, self.field = code, message, field

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                "status": "Failure", "message": self.message,
                                "reason": _REASONS[self.code], "code": self.code}
        if self.field:
            body["details"] = {"causes": [{"type": "FieldValueInvalid", "message": self.message,
                                           "field": self.field}]}
        return body


@dataclass(frozen=True)
class ConsoleRequest:
    namespace: str
    name: str
    lines: int | None
    follow: bool


def caller_refusal(host: str, peer: dict[str, Any] | None) -> Refusal | None:
    """Why the caller whose verified certificate is `peer` may not read (None: it may)."""
    if not peer:
        return Refusal(401, f'the console endpoint of host "{host}" serves only the API server: '
                            f"present its client certificate (CN {consolelog.API_SERVER_USER})")
    names = [value for rdn in peer.get("subject", ()) for key, value in rdn
             if key == "commonName"]
    if names != [consolelog.API_SERVER_USER]:
        who = names[0] if names else "(no common name)"
        return Refusal(403, f'User "{who}" cannot read consoles on host "{host}": only '
                            f"{consolelog.API_SERVER_USER} may")
    return None


def parse_request(head: bytes) -> ConsoleRequest:
    """The console a request head asks for; a Refusal for any other request."""
    try:
        method, target, _ = head.split(b"\r\n", 1)[0].decode("ascii").split(" ")
    except ValueError:
        raise Refusal(400, "a request line is METHOD TARGET HTTP/1.1") from None
    url = urlsplit(target)
    parts = url.path.split("/")
    if len(parts) != 4 or parts[:2] != ["", "console"]:
        raise Refusal(404, f"no such path: {url.path} (GET /console/NAMESPACE/NAME)")
    if method != "GET":
        raise Refusal(405, f"method {method} is not allowed on {url.path}: GET only")
    namespace, name = unquote(parts[2]), unquote(parts[3])
    if not _NAMESPACE.fullmatch(namespace) or not _NAME.fullmatch(name):
        raise Refusal(404, f"no such VM: {namespace}/{name}")
    query = parse_qs(url.query)
    try:
        lines = consolelog.parse_tail_lines(query.get("tailLines", [None])[-1])
    except ValueError as problem:
        raise Refusal(400, str(problem), "tailLines") from None
    return ConsoleRequest(namespace, name, lines, query.get("follow", [""])[-1] in ("true", "1"))


def _head(code: int, content_type: str, length: int | None = None) -> bytes:
    size = f"content-length: {length}" if length is not None else "transfer-encoding: chunked"
    return (f"HTTP/1.1 {code} {_PHRASES[code]}\r\ncontent-type: {content_type}\r\n{size}\r\n"
            "cache-control: no-cache, private\r\nconnection: close\r\n\r\n").encode()


class ConsoleServer:
    """Serves the consoles under `vm_dir`; `bound(namespace, name)` says whether the VM's
    instance is (still) bound to this host."""

    def __init__(self, host: str, vm_dir: Path, tls: ssl.SSLContext,
                 bound: Callable[[str, str], bool]) -> None:
        self.host, self.vm_dir, self.tls, self.bound = host, vm_dir, tls, bound
        self._server: asyncio.Server | None = None

    async def start(self, address: str, port: int) -> int:
        """Listen on `address:port` (port 0: one the system picks); the port listened on."""
        self._server = await asyncio.start_server(
            self._connection, address, port, ssl=self.tls, ssl_handshake_timeout=HEAD_TIMEOUT,
            limit=MAX_HEAD)
        port_bound: int = self._server.sockets[0].getsockname()[1]
        return port_bound

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1)

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
            await self._answer(head, reader, writer)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ConnectionError, ssl.SSLError):
            pass  # the caller left or sent no request: nobody to answer
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, head: bytes, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        try:
            refusal = caller_refusal(self.host, writer.get_extra_info("peercert"))
            if refusal is not None:
                raise refusal
            wanted = parse_request(head)
            path = consolelog.console_path(self.vm_dir, wanted.namespace, wanted.name)
            if not await asyncio.to_thread(path.is_file):
                raise Refusal(404, f'no console of VM "{wanted.namespace}/{wanted.name}" on '
                                   f'host "{self.host}": its guest has not started here')
            text, offset = await asyncio.to_thread(consolelog.read_end, path, wanted.lines)
        except Refusal as refusal:
            body = json.dumps(refusal.status()).encode()
            writer.write(_head(refusal.code, "application/json", len(body)) + body)
            await writer.drain()
            return
        if not wanted.follow:
            writer.write(_head(200, "text/plain; charset=utf-8", len(text)) + text)
            await writer.drain()
            return
        writer.write(_head(200, "text/plain; charset=utf-8"))
        chunks = consolelog.follow(path, text, offset,
                                   lambda: self.bound(wanted.namespace, wanted.name))
        # The caller sends nothing more: end of input means it left (stop at once, not at
        # the next write, which may be long in coming).
        left = asyncio.ensure_future(reader.read())
        pump = asyncio.ensure_future(_send_chunked(chunks, writer))
        try:
            await asyncio.wait([left, pump], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (left, pump):
                task.cancel()
            await asyncio.gather(left, pump, return_exceptions=True)


async def _send_chunked(chunks: AsyncGenerator[bytes], writer: asyncio.StreamWriter) -> None:
    try:
        async for chunk in chunks:
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()
    finally:
        await chunks.aclose()
    writer.write(b"0\r\n\r\n")
    await writer.drain()
