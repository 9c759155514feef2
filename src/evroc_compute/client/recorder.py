"""EventRecorder: post Events about objects without making the caller wait, as client-go does.

A reconcile calls `record(...)`, which only queues; one task writes the queue through the
client, many writes at once so the store commits them in one batch. Repeats of an event (same
object, type, reason and message) are aggregated: while queued they only bump a count, and once
written they PATCH the stored event's `count` and `lastTimestamp` instead of creating another.
The queue is bounded: past `capacity` distinct pending events new ones are dropped and counted
(events are a record for people, never a reason to slow or stop a controller).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

from evroc_compute.api.events import EVENT
from evroc_compute.api.kinds import Kind
from evroc_compute.api.meta import rfc3339_second
from evroc_compute.client.base import Client, ClientError

log = logging.getLogger(__name__)

EventKind = Literal["Normal", "Warning"]
# Cluster-scoped objects' events live here, as kube's Node events live in `default`.
CLUSTER_EVENTS_NAMESPACE = "default"
# Written together, so one commit takes them; at 64 a 10,000-VM fleet outran the writer and
# events were dropped.
_WRITES_AT_ONCE = 512
_REMEMBERED = 4096  # written events whose repeats are aggregated into them


@dataclass(frozen=True, slots=True)
class _Key:
    namespace: str
    uid: str
    type: str
    reason: str
    message: str


@dataclass(slots=True)
class _Pending:
    reference: dict[str, Any]
    count: int  # occurrences not yet written
    first: float
    last: float


@dataclass(slots=True)
class _Written:
    name: str
    count: int


class EventRecorder:
    def __init__(self, client: Client, component: str, host: str = "", *,
                 capacity: int = 10_000) -> None:
        self.client, self.component, self.host, self.capacity = client, component, host, capacity
        self.dropped = 0
        self._pending: dict[_Key, _Pending] = {}
        self._written: OrderedDict[_Key, _Written] = OrderedDict()
        self._wake = asyncio.Event()
        self._last_ns = 0

    def record(self, kind: Kind, obj: dict[str, Any], type: EventKind, reason: str,
               message: str) -> None:
        """Queue one occurrence of an event about `obj`; never blocks, never raises."""
        meta = obj["metadata"]
        namespace = meta.get("namespace") or CLUSTER_EVENTS_NAMESPACE
        key = _Key(namespace, meta.get("uid", ""), type, reason, message)
        now = time.time()
        pending = self._pending.get(key)
        if pending is not None:
            pending.count += 1
            pending.last = now
            return
        if len(self._pending) >= self.capacity:
            self.dropped += 1
            if self.dropped % 1000 == 1:
                log.warning("event queue full: dropped %d events so far", self.dropped)
            return
        reference = {"apiVersion": kind.api_version, "kind": kind.kind, "name": meta["name"],
                     "uid": meta.get("uid", ""), "resourceVersion": meta.get("resourceVersion", "")}
        if meta.get("namespace"):
            reference["namespace"] = meta["namespace"]
        self._pending[key] = _Pending(reference, 1, now, now)
        self._wake.set()

    async def run(self) -> None:
        """Write queued events until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        """Write everything queued now."""
        while self._pending:
            batch = list(itertools.islice(self._pending.items(), _WRITES_AT_ONCE))
            for key, _ in batch:
                del self._pending[key]
            await asyncio.gather(*(self._write(key, pending) for key, pending in batch))

    async def _write(self, key: _Key, pending: _Pending) -> None:
        try:
            written = self._written.get(key)
            if written is not None:
                try:
                    await self._bump(key, written, pending)
                    return
                except ClientError as problem:
                    if not problem.not_found:  # expired or deleted: start a new event
                        raise
                    del self._written[key]
            await self._create(key, pending)
        except Exception as problem:  # an event is never worth stopping the recorder for
            log.info("event %s about %s/%s not recorded: %s", key.reason, key.namespace,
                     pending.reference["name"], problem)

    async def _bump(self, key: _Key, written: _Written, pending: _Pending) -> None:
        count = written.count + pending.count
        await self.client.patch(EVENT, key.namespace, written.name, {
            "count": count, "lastTimestamp": rfc3339_second(pending.last)})
        written.count = count
        self._written.move_to_end(key)

    async def _create(self, key: _Key, pending: _Pending) -> None:
        self._last_ns = max(time.time_ns(), self._last_ns + 1)  # unique, like kube's names
        name = f"{pending.reference['name']}.{self._last_ns:x}"
        source = {"component": self.component, **({"host": self.host} if self.host else {})}
        try:
            await self.client.create(EVENT, {
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": name, "namespace": key.namespace},
                "involvedObject": pending.reference, "reason": key.reason,
                "message": key.message, "type": key.type, "count": pending.count,
                "source": source, "firstTimestamp": rfc3339_second(pending.first),
                "lastTimestamp": rfc3339_second(pending.last), "reportingComponent": self.component,
                "reportingInstance": self.host or self.component})
        except ClientError as problem:
            # The name is this recorder's own: taken means a create resent after a failover
            # landed the first time.
            if problem.reason != "AlreadyExists":
                raise
        self._written[key] = _Written(name, pending.count)
        if len(self._written) > _REMEMBERED:
            self._written.popitem(last=False)

