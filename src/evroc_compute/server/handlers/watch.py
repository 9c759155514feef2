"""GET a collection with watch=true: a stream of ADDED/MODIFIED/DELETED/BOOKMARK/ERROR.

Without a resourceVersion (or "0") the stream opens with a synthetic ADDED per current
object; with one, it replays from the log. Selector transitions become ADDED/DELETED, as a
client filtering by selector expects. Bookmarks go out only when the client allows them,
and only when everything up to their revision has been delivered.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from evroc_compute.server import errors, tables
from evroc_compute.server.handlers.common import Context, Target, ensure_namespace
from evroc_compute.server.handlers.list import (
    Filter,
    int_param,
    parse_filter,
    parse_resource_version,
)
from evroc_compute.server.http import Request, StreamingResponse
from evroc_compute.store.base import Compacted, Entry, Event, FutureRevision, Watch

DEFAULT_TIMEOUT = 1800.0


def _line(kind: str, raw: bytes) -> bytes:
    return b'{"type":"' + kind.encode() + b'","object":' + raw + b"}\n"


def _error_line(error: errors.ApiError) -> bytes:
    return _line("ERROR", error.body())


async def watch(ctx: Context, req: Request, target: Target) -> StreamingResponse:
    ensure_namespace(ctx, target, creating=False)
    keep, _ = parse_filter(req, target.kind)
    # As in kube-apiserver, 0 (or absent) means the server's default.
    timeout = float(int_param(req, "timeoutSeconds") or DEFAULT_TIMEOUT)
    bookmarks = req.query.get("allowWatchBookmarks", "").lower() in ("true", "1")
    initial_events = req.query.get("sendInitialEvents", "").lower() in ("true", "1")
    requested = parse_resource_version(req)
    wanted = tables.negotiate(req)
    prefix = target.kind.key_prefix(target.namespace)
    synthetic: list[Entry] = []
    if requested in (None, 0) or initial_events:
        # Snapshot and subscription happen with no await between them: nothing is missed.
        synthetic, after = await ctx.store.list(prefix)
        if requested and not initial_events:
            after = requested
    else:
        after = requested
    try:
        stream = ctx.store.watch(prefix, after)
    except Compacted:
        return StreamingResponse(_single(_error_line(errors.gone_too_old(after))))
    except FutureRevision as problem:
        raise errors.too_large_resource_version(problem.requested, problem.current) from None
    encoder = _Encoder(target, wanted, req.query.get("includeObject", "Metadata"))
    content_type = b"application/json;as=Table;v=v1;g=meta.k8s.io" if wanted == "Table" \
        else b"application/json"
    lines = _lines(ctx, stream, synthetic, keep, encoder, timeout, bookmarks,
                   after if initial_events else 0)
    return StreamingResponse(lines, content_type)


async def _single(line: bytes) -> AsyncIterator[bytes]:
    yield line


class _Encoder:
    def __init__(self, target: Target, wanted: tables.Wanted | None, include: str) -> None:
        self.kind, self.wanted, self.include = target.kind, wanted, include
        self.columns_sent = False

    def event(self, kind: str, entry: Entry) -> bytes:
        if self.wanted != "Table":
            return _line(kind, entry.raw)
        body = tables.table(self.kind, [entry], str(entry.revision), "", self.include,
                            with_columns=not self.columns_sent)
        self.columns_sent = True
        return _line(kind, orjson.dumps(body))

    def bookmark(self, revision: int, initial_end: bool = False) -> bytes:
        meta: dict[str, Any] = {"resourceVersion": str(revision)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return _line("BOOKMARK", orjson.dumps({"kind": self.kind.kind,
                                                "apiVersion": self.kind.api_version,
                                                "metadata": meta}))


def _transition(event: Event, keep: Filter | None) -> str | None:
    """The event type a client filtering with `keep` should see, or None."""
    if keep is None:
        return event.type
    now = keep(event.entry)
    if event.type == "ADDED":
        return "ADDED" if now else None
    if event.type == "DELETED":
        before = keep(event.prev) if event.prev is not None else now
        return "DELETED" if before or now else None
    before = keep(event.prev) if event.prev is not None else now
    if before and now:
        return "MODIFIED"
    if now:
        return "ADDED"
    return "DELETED" if before else None


async def _lines(ctx: Context, stream: Watch, synthetic: list[Entry], keep: Filter | None,
                 encoder: _Encoder, timeout: float, bookmarks: bool,
                 initial_revision: int) -> AsyncIterator[bytes]:
    """initial_revision: with sendInitialEvents, the snapshot's revision (else 0).

    Bookmarks, when allowed, go out every bookmark interval: at the revision of the last
    event taken off the stream (sent or filtered out, so a selective watch on a busy
    collection still advances), or at the store's revision when nothing is pending here.
    """
    deadline = time.monotonic() + timeout
    pending: asyncio.Future[Event | None] | None = None
    processed = 0  # revision of the last event taken off the stream
    bookmarked_at = time.monotonic()

    def shown_lines(events: list[Event]) -> list[bytes]:
        nonlocal processed
        lines = []
        for event in events:
            processed = event.entry.revision
            shown = _transition(event, keep)
            if shown is not None:
                lines.append(encoder.event(shown, event.entry))
        return lines

    try:
        for entry in synthetic:
            if keep is None or keep(entry):
                yield encoder.event("ADDED", entry)
        if initial_revision:
            yield encoder.bookmark(initial_revision, initial_end=True)
        try:
            replayed = await stream.replay()
        except Compacted as gone:  # compaction overtook us between subscribing and replaying
            yield _error_line(errors.gone_too_old(gone.requested))
            return
        for line in shown_lines(replayed):
            yield line
        while True:
            now = time.monotonic()
            remaining = deadline - now
            if remaining <= 0:
                return
            if bookmarks and processed and now - bookmarked_at >= ctx.bookmark_interval:
                yield encoder.bookmark(processed)
                bookmarked_at = now
            if pending is None:  # a busy stream: everything queued goes out in one write
                ready, closed = stream.drain()
                chunk = shown_lines(ready)
                if chunk:
                    yield b"".join(chunk)
                if closed:
                    return
                if ready:
                    continue
            wait = min(remaining, ctx.bookmark_interval) if bookmarks else remaining
            if pending is None:
                pending = asyncio.ensure_future(stream.next())
            done, _ = await asyncio.wait([pending], timeout=wait)
            if not done:  # the pending read stays: nothing is lost to the timeout
                # A bookmark at the store's revision promises every event up to it was
                # sent: only when nothing is queued here or picked up by the pending read.
                if bookmarks and time.monotonic() < deadline and not pending.done() \
                        and stream.idle():
                    yield encoder.bookmark(ctx.store.revision)
                    bookmarked_at = time.monotonic()
                continue
            live, pending = pending.result(), None
            if live is None:
                return
            for line in shown_lines([live]):
                yield line
    finally:
        if pending is not None:
            pending.cancel()
        stream.close()
