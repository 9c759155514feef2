"""HTTP connections: uvicorn's httptools protocol with the limits a server facing clients needs.

Left alone, uvicorn keeps a connection that sends nothing open for ever, buffers a request
head of any size, and accepts connections until the process runs out of file descriptors.
Here, before a request reaches the application:

- a request must begin within `head_timeout` of the connection opening or of the previous
  response, and its head (request line and headers) must be complete within
  `head_timeout` of its first bytes: a connection that sent nothing is closed, one that
  sent part of a head is answered 408;
- a request line over MAX_REQUEST_LINE_BYTES is answered 414, a head over MAX_HEAD_BYTES 431;
- past `max_connections` open connections a new one is answered 503 at once.

Each answer is a Kubernetes Status, written by hand (no request reached the application),
and the connection is closed after it. Once a head is complete none of this applies: a
watch streams for as long as its timeout says.

Writes made in one turn of the event loop leave as one (`CoalescingTransport`): uvicorn
writes a response's head and its body separately, and over TLS each write is a record, an
encryption and a send() of its own: half of a GET's server time went there.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from evroc_compute.server import errors
from evroc_compute.server.auth.authn import CLIENT_CERT, ClientCertificate

MAX_REQUEST_LINE_BYTES = 32 * 1024  # nginx allows 8 KiB; long selectors fit in 32
MAX_HEAD_BYTES = 256 * 1024  # a bearer token or client certificate header is a few KiB
DEFAULT_MAX_CONNECTIONS = 4096
FD_RESERVE = 256  # descriptors kept for the store, logs, QEMU and outgoing connections
REFUSAL_GRACE = 1.0  # seconds a refused client gets to read its answer before the close
JOIN_BELOW = 256 * 1024  # pending writes smaller than this in all are copied into one


class CoalescingTransport:
    """A transport whose writes wait for the end of the loop's turn, then go out together."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport, self.loop = transport, loop
        self._pending: list[bytes] = []
        self._size = 0

    def write(self, data: bytes) -> None:
        if not self._pending:
            self.loop.call_soon(self.flush)
        self._pending.append(data)
        self._size += len(data)

    def flush(self) -> None:
        pending, size = self._pending, self._size
        if not pending:
            return
        self._pending, self._size = [], 0
        if self.transport.is_closing():
            return  # the connection went meanwhile: nobody to write to
        if len(pending) == 1 or size >= JOIN_BELOW:
            for data in pending:
                self.transport.write(data)
        else:
            self.transport.write(b"".join(pending))

    def get_write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size() + self._size

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def write_eof(self) -> None:
        self.flush()
        self.transport.write_eof()

    def abort(self) -> None:
        self._pending, self._size = [], 0
        self.transport.abort()

    def __getattr__(self, name: str) -> Any:  # everything else is the transport's own
        return getattr(self.transport, name)


def connection_cap(requested: int, fd_limit: int) -> int:
    """The connections a process with `fd_limit` descriptors can hold open, at most `requested`
    (a quarter of a small limit is kept for the store, logs and outgoing connections)."""
    return max(1, min(requested, fd_limit - min(FD_RESERVE, fd_limit // 4)))


def raise_file_limit(ceiling: int = 1 << 20) -> int:
    """Raise the open-file limit to the hard limit (as Go servers do) and return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = ceiling if hard == resource.RLIM_INFINITY else min(hard, ceiling)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return wanted if soft == resource.RLIM_INFINITY else soft
    for attempt in (wanted, min(wanted, 10_240)):  # macOS refuses more than its kernel's max
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (attempt, hard))
            return attempt
    return soft


class LimitedProtocol(HttpToolsProtocol):
    """One client connection; `limited` makes the subclass `serve` hands to uvicorn."""

    max_connections = DEFAULT_MAX_CONNECTIONS
    head_timeout = 60.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reading_head = True  # until the current request's headers are complete
        self._line_bytes, self._line_done = 0, False  # of its request line
        self._head_bytes = 0  # of its request line and headers
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_began = 0.0  # loop time the current head began (or the wait for it)
        self._refused = False
        self._certificate: ClientCertificate | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = CoalescingTransport(transport, self.loop)  # type: ignore[assignment]
        self._certificate = peer_certificate(transport)
        if len(self.connections) > self.max_connections:
            self._refuse(errors.unavailable(
                f"the server has too many open connections ({self.max_connections}); "
                "retry later"))
            return
        self._head_began = self.loop.time()
        self._head_timer = self.loop.call_later(self.head_timeout, self._check_head)

    def shutdown(self) -> None:
        """At server shutdown an idle connection is dropped at once: closing a TLS connection
        waits for the client's close_notify, which an idle pooled client never sends (the
        shutdown would wait out its grace for every idle kubectl or client pool)."""
        if self.cycle is None or self.cycle.response_complete:
            self.transport.abort()
        else:
            HttpToolsProtocol.shutdown(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # read and dropped, so the close after the answer is not a reset
        if self._reading_head:
            # Measured before parsing: httptools would buffer any amount, and refuses a
            # URL over 64 KiB with a bare 400.
            if not self._head_bytes:
                self._head_began = self.loop.time()
            if not self._line_done:
                line_end = data.find(b"\n")
                self._line_bytes += len(data) if line_end < 0 else line_end + 1
                self._line_done = line_end >= 0
            head_end = data.find(b"\r\n\r\n")
            self._head_bytes += len(data) if head_end < 0 else head_end + 4
            if self._line_bytes > MAX_REQUEST_LINE_BYTES:
                self._refuse(errors.ApiError(
                    414, "RequestURITooLong", f"the request line is longer than "
                    f"{MAX_REQUEST_LINE_BYTES} bytes; split long selectors over several requests"))
                return
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse(errors.ApiError(
                    431, "RequestHeaderFieldsTooLarge",
                    f"the request line and headers are larger than {MAX_HEAD_BYTES} bytes"))
                return
        HttpToolsProtocol.data_received(self, data)

    # One timer per connection, not one per request (arming and cancelling a timer costs
    # 2 us, a twentieth of a GET): requests only note when their head began (its first
    # bytes) and when their response ended. Base methods are called directly: these run
    # for every request, and super() costs a little more.

    def on_message_begin(self) -> None:
        HttpToolsProtocol.on_message_begin(self)
        if self._certificate is not None:
            self.scope["extensions"] = {CLIENT_CERT: self._certificate}  # type: ignore[typeddict-unknown-key,dict-item]

    def on_headers_complete(self) -> None:
        self._reading_head = False
        HttpToolsProtocol.on_headers_complete(self)

    def on_message_complete(self) -> None:
        HttpToolsProtocol.on_message_complete(self)
        self._reading_head, self._line_done, self._line_bytes, self._head_bytes = \
            True, False, 0, 0

    def on_response_complete(self) -> None:
        HttpToolsProtocol.on_response_complete(self)
        if not self._reading_head:
            # Answered before the request's body arrived (413, 408): the rest of the body
            # would be read and dropped with no deadline. Close, as Go's server does, after a
            # grace in which the body still in flight is read (closing on unread input would
            # reset the connection and lose the answer before the client reads it).
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self.loop.call_later(REFUSAL_GRACE, self.transport.close)
            return
        self._head_began = self.loop.time()  # the wait for the next request begins

    def _check_head(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        waited = self.loop.time() - self._head_began
        answering = self.cycle is not None and not self.cycle.response_complete  # a watch
        if answering or not self._reading_head or waited < self.head_timeout:
            self._head_timer = self.loop.call_later(
                max(self.head_timeout - waited, 0.1) if self._reading_head and not answering
                else self.head_timeout, self._check_head)
            return
        if self._head_bytes == 0:
            self.transport.close()  # sent nothing: nobody to answer
            return
        self._refuse(errors.ApiError(
            408, "Timeout", f"the request head did not arrive within {self.head_timeout:g} s"))

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _refuse(self, error: errors.ApiError) -> None:
        """Answer `error` without the application and close; later input is dropped."""
        self._refused = True
        self._stop_head_timer()
        body = error.body()
        retry = b"retry-after: %d\r\n" % error.retry_after if error.retry_after else b""
        self.transport.write(b"".join((
            STATUS_LINE[error.code], b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body), retry, b"connection: close\r\n\r\n", body)))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(REFUSAL_GRACE, self.transport.close)


def peer_certificate(transport: asyncio.BaseTransport) -> ClientCertificate | None:
    """The client certificate the TLS handshake verified against the client CA, if one was
    presented (the handshake is over when the protocol sees the connection)."""
    tls = transport.get_extra_info("ssl_object")
    peer = tls.getpeercert() if tls is not None else None
    if not peer:
        return None
    names: dict[str, list[str]] = {}
    for rdn in peer.get("subject", ()):
        for key, value in rdn:
            names.setdefault(key, []).append(value)
    common = names.get("commonName", [""])[0]
    return ClientCertificate(common, tuple(names.get("organizationName", ())),
                             str(peer.get("serialNumber", "")).lower().lstrip("0")) if common else None


def limited(max_connections: int, head_timeout: float) -> type[LimitedProtocol]:
    """The protocol class for uvicorn's `http=` with these limits."""
    return type("LimitedProtocol", (LimitedProtocol,),
                {"max_connections": max_connections, "head_timeout": head_timeout})
