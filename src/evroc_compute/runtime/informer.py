"""An informer: a local cache of one kind, kept current by list + watch through the API client.

Handlers receive every change as (event type, object) and usually just turn it into a work
queue key (controllers are level-triggered: they re-read the cache, never trust the event).
A watch that ends is resumed from the last resourceVersion seen (bookmarks included); a 410
means history is gone, so the informer lists again and reports what changed meanwhile,
including deletions it never saw as events.

Cached objects drop `metadata.managedFields`, as kube's controllers' informers do
(client-go's TransformStripManagedFields): no reconciler reads them, they are a third of a
VM's memory, and a write that omits them keeps the stored ones.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from evroc_compute.api.kinds import Kind
from evroc_compute.client.base import Client, ClientError
from evroc_compute.runtime.controller import Key

log = logging.getLogger(__name__)
Handler = Callable[[str, dict[str, Any]], None]
IndexFunc = Callable[[dict[str, Any]], list[str]]


def _strip(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
    return obj


def key_of(obj: dict[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


class Informer:
    def __init__(self, client: Client, kind: Kind, namespace: str | None = None, *,
                 watch_timeout: int = 300, retry_delay: float = 1.0) -> None:
        self.client, self.kind, self.namespace = client, kind, namespace
        self.watch_timeout, self.retry_delay = watch_timeout, retry_delay
        self.cache: dict[Key, dict[str, Any]] = {}
        self.synced = asyncio.Event()
        self.relists = 0
        self._handlers: list[Handler] = []
        self._version = ""
        self._index_funcs: dict[str, IndexFunc] = {}
        self._indexes: dict[str, dict[str, set[Key]]] = {}
        self._indexed: dict[str, dict[Key, list[str]]] = {}

    def add_handler(self, handler: Handler) -> None:
        self._handlers.append(handler)

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.cache.get((namespace, name))

    def add_index(self, name: str, func: IndexFunc) -> None:
        """Index the cache by `func(obj)`'s values (add before the informer runs)."""
        self._index_funcs[name] = func
        self._indexes[name] = {}
        self._indexed[name] = {}

    def by_index(self, name: str, value: str) -> list[dict[str, Any]]:
        """The cached objects whose index `name` includes `value`."""
        keys = self._indexes[name].get(value, ())
        return [self.cache[k] for k in sorted(keys) if k in self.cache]

    def _reindex(self, key: Key, obj: dict[str, Any] | None) -> None:
        for name, func in self._index_funcs.items():
            index, indexed = self._indexes[name], self._indexed[name]
            for value in indexed.pop(key, ()):
                members = index.get(value)
                if members is not None:
                    members.discard(key)
                    if not members:
                        del index[value]
            if obj is not None:
                values = func(obj)
                indexed[key] = values
                for value in values:
                    index.setdefault(value, set()).add(key)

    def _emit(self, kind: str, obj: dict[str, Any]) -> None:
        for handler in self._handlers:
            try:
                handler(kind, obj)
            except Exception:  # a broken handler must not stop the informer
                log.exception("%s informer handler failed", self.kind.plural)

    async def _relist(self) -> None:
        items, self._version = await self.client.list(self.kind, self.namespace)
        fresh = {key_of(item): _strip(item) for item in items}
        gone = [obj for key, obj in self.cache.items() if key not in fresh]
        previous, self.cache = self.cache, fresh
        for key in previous:
            if key not in fresh:
                self._reindex(key, None)
        for key, obj in fresh.items():
            self._reindex(key, obj)
        for obj in gone:
            self._emit("DELETED", obj)
        for key, obj in fresh.items():
            old = previous.get(key)
            if old is None:
                self._emit("ADDED", obj)
            elif old["metadata"].get("resourceVersion") != obj["metadata"].get("resourceVersion"):
                self._emit("MODIFIED", obj)
        self.relists += 1
        self.synced.set()

    async def _watch(self) -> None:
        """Apply events until the stream ends; raise ClientError(410) when history is gone."""
        async for event in self.client.watch(self.kind, self.namespace,
                                             resource_version=self._version,
                                             timeout_seconds=self.watch_timeout):
            if event.type == "ERROR":
                raise ClientError(event.object)
            if event.resource_version:
                self._version = event.resource_version
            if event.type == "BOOKMARK":
                continue
            key = key_of(_strip(event.object))
            if event.type == "DELETED":
                self.cache.pop(key, None)
                self._reindex(key, None)
            else:
                self.cache[key] = event.object
                self._reindex(key, event.object)
            self._emit(event.type, event.object)

    async def run(self) -> None:
        relist = not self.synced.is_set()  # a synced cache resumes from its version
        while True:
            try:
                if relist:
                    await self._relist()
                    relist = False
                await self._watch()
            except ClientError as problem:
                relist = True
                if not problem.expired:
                    log.warning("%s informer: %s; retrying", self.kind.plural, problem)
                    await asyncio.sleep(self.retry_delay)
