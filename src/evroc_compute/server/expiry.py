"""Events expire: the server forgets an event a TTL after it last happened, as kube-apiserver
does with `--event-ttl` (events are a recent history, not a log to keep forever).

An event's age is read from the newest of its times (the writer's lastTimestamp, series or
eventTime, or the server's creationTimestamp), so a repeat that bumps an event keeps it alive.
Every server may sweep: deleting is compare-and-swapped, so two sweepers never disagree.
"""

from __future__ import annotations

import asyncio
import logging
import time

from evroc_compute.api.events import EVENT, last_seen
from evroc_compute.api.tables import parse_rfc3339
from evroc_compute.store.base import Entry, Store, StoreError

log = logging.getLogger(__name__)


def expired(entry: Entry, now: float, ttl: float) -> bool:
    event = entry.obj
    newest = 0.0
    for stamp in (last_seen(event), event["metadata"].get("creationTimestamp")):
        try:
            newest = max(newest, parse_rfc3339(stamp))  # type: ignore[arg-type]
        except (TypeError, ValueError, IndexError):
            continue  # a time the writer garbled: the server's own creation time decides
    return newest + ttl < now


async def sweep(store: Store, ttl: float, now: float) -> int:
    """Delete every expired event; returns how many went."""
    gone = 0
    for entry in store.current(EVENT.key_prefix(None)):
        if expired(entry, now, ttl):
            try:
                await store.delete(entry.key, entry.revision)
                gone += 1
            except StoreError:  # changed or deleted meanwhile: the next sweep decides
                pass
    return gone


async def sweep_forever(store: Store, ttl: float) -> None:
    interval = min(60.0, max(ttl / 10, 0.5))
    while True:
        await asyncio.sleep(interval)
        try:
            await sweep(store, ttl, time.time())
        except Exception:
            log.exception("expiring events failed")
