"""The audit log (`serve --audit-log PATH`): one `audit.k8s.io/v1` Event per HTTP request, as
kube-apiserver writes them, so the tools that read kube's audit logs read this one.

Who (user, groups, source IP, user agent) did what (verb, requestURI, objectRef) with what
outcome (responseStatus.code), when (requestReceivedTimestamp, stageTimestamp) and how long it
took (the `apiserver.latency.k8s.io/total` annotation). At level `Request` the bodies of writes
are logged too (`requestObject`), with secrets redacted (a Credential's tokenHash). Headers are
never logged, so neither are bearer tokens.

A request only hands its `Record` to a buffer (no formatting, no I/O); a writer thread turns the
buffer into lines and appends them in batches, rotating the file by size as kube does
(`--audit-log-maxsize`, `--audit-log-maxbackup`). If the disk cannot keep up and the buffer
fills, events are dropped and counted rather than the requests made to wait (kube's batch
backend does the same).

Every request over HTTP is logged when it completes, those refused with 401, 403 or 429
included, and a watch when it ends. The in-process controllers' requests do not come over HTTP
and are not logged.
"""

from __future__ import annotations

import collections
import datetime as dt
import functools
import itertools
import logging
import os
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson

from evroc_compute.server import bodies
from evroc_compute.server.auth.authz import Attributes
from evroc_compute.server.auth.users import UserInfo

log = logging.getLogger(__name__)

Level = Literal["Metadata", "Request"]
LEVELS: tuple[Level, ...] = ("Metadata", "Request")
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
SECRET_FIELDS = frozenset({"tokenHash"})  # Credential.spec.tokenHash: a token's SHA-256
REDACTED = "<redacted>"
LATENCY = "apiserver.latency.k8s.io/total"  # kube's annotation for the same figure

FLUSH_INTERVAL = 0.05  # seconds between the writer's batches
MAX_BUFFER = 50_000  # events waiting for the writer; beyond that they are dropped


@dataclass(frozen=True)
class Record:
    """One completed request, as the request path hands it over (raw: formatting is the
    writer's work)."""

    received: float  # wall-clock seconds when the request arrived
    seconds: float  # how long it took
    method: str
    path: str
    query: bytes
    client: tuple[str, int] | None  # the peer's address
    headers: list[tuple[bytes, bytes]]  # only the user agent is read from these
    user: UserInfo | None  # None: authentication failed
    attributes: Attributes | None  # what was asked (None if refused before routing)
    api_version: str
    code: int
    body: bytes = b""  # the request body, kept only at level Request
    content_type: str = ""


def event(record: Record, level: Level, audit_id: str) -> dict[str, Any]:
    """The audit.k8s.io/v1 Event of a completed request."""
    uri = record.path + (f"?{record.query.decode('latin-1')}" if record.query else "")
    attributes = record.attributes
    verb = attributes.verb if attributes is not None else record.method.lower()
    out: dict[str, Any] = {
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": level, "auditID": audit_id,
        "stage": "ResponseComplete", "requestURI": uri, "verb": verb,
        "user": record.user.as_dict() if record.user is not None else {},
        "sourceIPs": [record.client[0]] if record.client else [],
    }
    agent = next((v for k, v in record.headers if k == b"user-agent"), None)
    if agent is not None:
        out["userAgent"] = agent.decode("latin-1")
    if attributes is not None and attributes.resource:
        ref = {"resource": attributes.resource, "namespace": attributes.namespace,
               "name": attributes.name, "apiGroup": attributes.api_group,
               "apiVersion": record.api_version, "subresource": attributes.subresource}
        out["objectRef"] = {k: v for k, v in ref.items() if v}
    out["responseStatus"] = {"metadata": {}, "code": record.code}
    if level == "Request" and record.body and verb in WRITE_VERBS:
        try:
            out["requestObject"] = redact(bodies.decode(record.body, record.content_type))
        except Exception:  # not JSON or YAML (protobuf): the metadata still tells what happened
            out.setdefault("annotations", {})["evroc-compute.io/request-object"] = \
                f"not logged: a {record.content_type or 'binary'} body"
    out["requestReceivedTimestamp"] = _timestamp(record.received)
    out["stageTimestamp"] = _timestamp(record.received + record.seconds)
    out.setdefault("annotations", {})[LATENCY] = f"{record.seconds * 1000:.3f}ms"
    return out


def redact(value: Any) -> Any:
    """`value` with every secret field's value replaced, also where a JSON patch sets one."""
    if isinstance(value, dict):
        if isinstance(value.get("path"), str) and "value" in value \
                and value["path"].rsplit("/", 1)[-1] in SECRET_FIELDS:  # a JSON patch op
            return {**value, "value": REDACTED}
        return {k: REDACTED if k in SECRET_FIELDS else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def _timestamp(seconds: float) -> str:
    """RFC 3339 with microseconds, in UTC, as kube writes audit timestamps."""
    whole = int(seconds)
    return f"{_second(whole)}.{int((seconds - whole) * 1e6):06d}Z"


@functools.lru_cache(maxsize=4)
def _second(whole: int) -> str:
    """The formatted second (formatting is 6 us; a second holds thousands of events)."""
    return dt.datetime.fromtimestamp(whole, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


class AuditIds:
    """kube's auditIDs are UUIDs; these are UUID-shaped, a random prefix per process and a
    counter (unique, and a tenth of uuid4's cost)."""

    def __init__(self) -> None:
        prefix = uuid.uuid4().hex
        self.prefix = f"{prefix[:8]}-{prefix[8:12]}-{prefix[12:16]}-{prefix[16:20]}-"
        self.counter = itertools.count(int(prefix[20:], 16) & 0xFFFFFFFF)

    def next(self) -> str:
        return f"{self.prefix}{next(self.counter) & 0xFFFFFFFFFFFF:012x}"


class RotatingFile:
    """An append-only file that, before it would grow past `max_bytes`, is renamed to
    `<stem>-<UTC timestamp><suffix>` beside it (as kube's lumberjack does) and started afresh;
    only the newest `max_backups` renamed files are kept (0: all)."""

    def __init__(self, path: Path, max_bytes: int, max_backups: int) -> None:
        self.path, self.max_bytes, self.max_backups = path, max_bytes, max_backups
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "ab")
        self.size = self._file.tell()
        self._last_rotation = dt.datetime.min.replace(tzinfo=dt.timezone.utc)

    def write_lines(self, lines: Iterable[bytes]) -> None:
        pending: list[bytes] = []
        pending_size = 0
        for line in lines:
            if self.max_bytes and self.size + pending_size + len(line) > self.max_bytes \
                    and self.size + pending_size > 0:
                self._write(pending)
                pending, pending_size = [], 0
                self._rotate()
            pending.append(line)
            pending_size += len(line)
        self._write(pending)

    def _write(self, lines: list[bytes]) -> None:
        data = b"".join(lines)
        if data:
            self._file.write(data)
            self._file.flush()
            self.size += len(data)

    def _rotate(self) -> None:
        self._file.close()
        # Strictly increasing, so that two rotations within a microsecond keep both files.
        when = max(dt.datetime.now(dt.timezone.utc),
                   self._last_rotation + dt.timedelta(microseconds=1))
        self._last_rotation = when
        stamp = when.strftime("%Y-%m-%dT%H-%M-%S.%f")
        os.replace(self.path, self.path.with_name(f"{self.path.stem}-{stamp}{self.path.suffix}"))
        self._file = open(self.path, "ab")
        self.size = 0
        if self.max_backups:
            for old in self.backups()[:-self.max_backups]:
                old.unlink(missing_ok=True)

    def backups(self) -> list[Path]:
        """The rotated files, oldest first (the timestamp in the name sorts them)."""
        stem, suffix = self.path.stem, self.path.suffix
        return sorted(p for p in self.path.parent.glob(f"{stem}-*{suffix}")
                      if p != self.path and p.name[len(stem) + 1:len(stem) + 2].isdigit())

    def close(self) -> None:
        self._file.close()


class AuditLog:
    """Records handed over by requests, written as JSON lines by a thread of its own."""

    def __init__(self, path: Path, level: Level = "Metadata", max_megabytes: float = 100,
                 max_backups: int = 10) -> None:
        self.path, self.level = path, level
        self.keeps_bodies = level == "Request"
        self._file = RotatingFile(path, int(max_megabytes * 1024 * 1024), max_backups)
        self._buffer: collections.deque[Record] = collections.deque()
        self.dropped = 0
        self._ids = AuditIds()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def record(self, record: Record) -> None:
        """Hand a completed request over (never blocks: a full buffer drops it)."""
        if len(self._buffer) >= MAX_BUFFER:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 10_000 == 0:
                log.warning("audit log %s cannot keep up: %d events dropped", self.path,
                            self.dropped)
            return
        self._buffer.append(record)

    def _run(self) -> None:
        while not self._stop.wait(FLUSH_INTERVAL):
            self._flush()
        self._flush()

    def _flush(self) -> None:
        buffer, level = self._buffer, self.level
        lines: list[bytes] = []
        while buffer:
            record = buffer.popleft()
            try:
                lines.append(orjson.dumps(event(record, level, self._ids.next()),
                                          option=orjson.OPT_APPEND_NEWLINE))
            except Exception:  # a bug here must not stop the log
                log.exception("audit event of %s %s", record.method, record.path)
        if lines:
            try:
                self._file.write_lines(lines)
            except OSError as problem:
                self.dropped += len(lines)
                log.error("audit log %s: %s; %d events lost", self.path, problem, len(lines))

    def close(self) -> None:
        """Write what is buffered and stop the writer."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        else:
            self._flush()
        self._file.close()
