"""The HTTP/1.1 transport under HttpClient: answers framed every way a server may frame them,
arriving in any pieces, and a connection that breaks mid-answer."""

from __future__ import annotations

import asyncio

import pytest

from evroc_compute.client.transport import (
    RemoteProtocolError,
    _Connection,
    parse_head,
    request_bytes,
)


class Wire:
    """What a connection writes to, and whether it was closed (a transport double)."""

    def __init__(self) -> None:
        self.written = b""
        self.closed = False
        self.paused = False

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


def connected() -> tuple[_Connection, Wire]:
    connection, wire = _Connection(), Wire()
    connection.connection_made(wire)  # type: ignore[arg-type]
    return connection, wire


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


LENGTH = b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\ncontent-type: application/json\r\n\r\n{\"a\": true}"
CHUNKED = (b"HTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\n"
           b"4\r\n{\"a\"\r\n7;ext=1\r\n: true}\r\n0\r\n\r\n")
TRAILERS = (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
            b"b\r\n{\"a\": true}\r\n0\r\nx-trailer: 1\r\n\r\n")
INTERIM = b"HTTP/1.1 100 Continue\r\n\r\n" + LENGTH
NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"


@pytest.mark.parametrize("size", [1, 2, 7, 1000])
@pytest.mark.parametrize(("answer", "status", "body", "reusable"), [
    (LENGTH, 200, b'{"a": true}', True),
    (CHUNKED, 201, b'{"a": true}', True),
    (TRAILERS, 200, b'{"a": true}', True),
    (INTERIM, 200, b'{"a": true}', True),
    (NO_CONTENT, 204, b"", True),
    (LENGTH.replace(b"OK\r\n", b"OK\r\nConnection: close\r\n"), 200, b'{"a": true}', False),
], ids=["content-length", "chunked", "trailers", "100-continue", "204", "connection-close"])
async def test_an_answer_in_any_pieces_is_read_whole(answer: bytes, status: int, body: bytes,
                                                      reusable: bool, size: int) -> None:
    connection, wire = connected()
    connection.send(b"GET / HTTP/1.1\r\n\r\n", streaming=False, timeout=5)
    for piece in pieces(answer, size):
        connection.data_received(piece)
    assert connection.done is not None
    response = await connection.done
    assert (response.status, response.body, connection.reusable) == (status, body, reusable)
    assert wire.written == b"GET / HTTP/1.1\r\n\r\n"


async def test_a_body_until_the_connection_closes_ends_with_it() -> None:
    connection, _ = connected()
    connection.send(b"GET / HTTP/1.1\r\n\r\n", streaming=False, timeout=5)
    connection.data_received(b"HTTP/1.0 200 OK\r\n\r\nall of ")
    connection.data_received(b"it")
    connection.connection_lost(None)
    assert connection.done is not None
    assert (await connection.done).body == b"all of it"


async def test_a_connection_that_breaks_mid_answer_fails_the_exchange() -> None:
    connection, _ = connected()
    connection.send(b"GET / HTTP/1.1\r\n\r\n", streaming=False, timeout=5)
    connection.data_received(LENGTH[:-3])
    connection.connection_lost(ConnectionResetError("reset by peer"))
    assert connection.done is not None
    with pytest.raises(RemoteProtocolError, match="mid-answer"):
        await connection.done
    assert not connection.reusable


async def test_no_answer_in_time_is_a_read_timeout_that_closes_the_connection() -> None:
    connection, wire = connected()
    connection.send(b"GET / HTTP/1.1\r\n\r\n", streaming=False, timeout=0.01)
    assert connection.done is not None
    with pytest.raises(Exception, match="no answer within") as timed_out:
        await connection.done
    assert type(timed_out.value).__name__ == "ReadTimeout" and timed_out.value.sent
    assert wire.closed


async def test_a_stream_yields_chunks_as_they_arrive_and_ends_at_the_last_chunk() -> None:
    connection, _ = connected()
    connection.send(b"GET /watch HTTP/1.1\r\n\r\n", streaming=True, timeout=5)
    connection.data_received(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nline\n")
    assert connection.head is not None
    await connection.head
    assert connection.status == 200
    connection.data_received(b"\r\n")
    assert await connection.next_chunk() == b"line\n"
    reading = asyncio.ensure_future(connection.next_chunk())
    await asyncio.sleep(0)
    assert not reading.done()  # waits for the server
    connection.data_received(b"6\r\nmore\n\n\r\n0\r\n\r\n")
    assert await reading == b"more\n\n"
    assert await connection.next_chunk() is None


async def test_a_stream_cut_before_its_last_chunk_raises() -> None:
    connection, _ = connected()
    connection.send(b"GET /watch HTTP/1.1\r\n\r\n", streaming=True, timeout=5)
    connection.data_received(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nline\n\r\n")
    assert await connection.next_chunk() == b"line\n"
    connection.connection_lost(None)
    with pytest.raises(RemoteProtocolError):
        await connection.next_chunk()


async def test_garbage_instead_of_an_answer_fails_the_exchange() -> None:
    connection, wire = connected()
    connection.send(b"GET / HTTP/1.1\r\n\r\n", streaming=False, timeout=5)
    connection.data_received(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
    assert connection.done is not None
    with pytest.raises(RemoteProtocolError, match="status line"):
        await connection.done
    assert wire.closed


def test_request_bytes_frame_a_body_by_its_length() -> None:
    assert request_bytes("POST", "/x?a=1", "h:1", [("accept", "application/json")], b"{}") == (
        b"POST /x?a=1 HTTP/1.1\r\nhost: h:1\r\naccept: application/json\r\n"
        b"content-length: 2\r\n\r\n{}")
    assert request_bytes("GET", "/x", "h", [], None) == b"GET /x HTTP/1.1\r\nhost: h\r\n\r\n"


def test_an_http_1_0_answer_closes_its_connection_unless_kept_alive() -> None:
    assert parse_head(b"HTTP/1.0 200 OK")[2]["connection"] == "close"
    assert parse_head(b"HTTP/1.0 200 OK\r\nConnection: keep-alive")[2]["connection"] == \
        "keep-alive"
    assert parse_head(b"HTTP/1.1 404 Not Found\r\nX-A:  b ") == (404, "Not Found", {"x-a": "b"})
