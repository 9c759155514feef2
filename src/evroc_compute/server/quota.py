"""Quota admission: a write that would take a project past a ResourceQuota is refused (403).

Atomic under concurrent writes, in two layers:

- On one server, quota-checked writes of a namespace are serialized (one asyncio lock per
  namespace, held from the check until the object is stored), and the use is counted again
  inside that section from the store's memory, which holds every write this server made. So
  50 concurrent creates cannot both see the last free vCPU.
- Across servers sharing PostgreSQL, each admitted write first charges the quota: its
  status.used goes up by what the write adds, by compare-and-swap on the quota's
  resourceVersion (kube's quota admission does the same). Two servers racing for one quota
  conflict on that swap; the loser reads again (after syncing its memory with the database)
  and counts the winner's charge. The use checked is the larger of the count and the recorded
  status.used, so a charge of another server whose object this server has not yet seen still
  counts. A write that fails after its charge gives the charge back; the quota controller
  recounts status.used from the objects after every change, which also frees what deleted or
  stopped objects held.

Only writes that raise a limited resource take the lock: status writes, deletes, and writes
in namespaces without a quota on what they change do not wait.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson

from evroc_compute.api import catalog, quota
from evroc_compute.api.kinds import Kind
from evroc_compute.server import errors
from evroc_compute.store.base import Entry, KeyNotFound, RevisionConflict, Store

CHARGE_ATTEMPTS = 8


@dataclass
class QuotaAdmission:
    """One server's quota admission: the per-namespace locks."""

    locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    @asynccontextmanager
    async def admitted(self, store: Store, kind: Kind, namespace: str | None, name: str,
                       old: dict[str, Any] | None, new: dict[str, Any], *,
                       dry_run: bool = False) -> AsyncIterator[None]:
        """Refuse (403) if `new` replacing `old` exceeds a quota; else charge it and hold the
        namespace's quota lock while the caller stores the object (the body of the `with`)."""
        added = _added(store, kind, old, new) if namespace else {}
        if not added or not limiting(store, namespace or "", added):
            yield
            return
        assert namespace is not None
        async with self.locks.setdefault(namespace, asyncio.Lock()):
            charges = await _check_and_charge(store, kind, namespace, name, added,
                                              dry_run=dry_run)
            try:
                yield
            except BaseException:
                await _refund(store, charges)
                raise


def store_catalog(store: Store) -> quota.Catalog:
    def spec_of(kind: Kind) -> Any:
        def read(name: str) -> Any:
            entry = store.get(kind.key("", name))
            return entry.obj.get("spec") if entry is not None else None
        return read
    return quota.Catalog(profile=spec_of(catalog.VM_VIRTUAL_RESOURCES),
                         image=spec_of(catalog.DISK_IMAGE))


def _added(store: Store, kind: Kind, old: dict[str, Any] | None,
           new: dict[str, Any]) -> quota.Usage:
    if kind.qualified_resource not in quota.COUNTED:
        return {}
    known = store_catalog(store)
    return quota.increase(quota.usage(kind, new, known),
                          quota.usage(kind, old, known) if old is not None else None)


def _quotas(store: Store, namespace: str) -> list[Entry]:
    return sorted(store.current(quota.RESOURCE_QUOTA.key_prefix(namespace)), key=lambda e: e.key)


def limiting(store: Store, namespace: str, added: quota.Usage) -> list[Entry]:
    """The namespace's quotas that limit something `added` raises."""
    return [e for e in _quotas(store, namespace)
            if set(added) & set((e.obj.get("spec") or {}).get("hard") or {})]


def namespace_usage(store: Store, namespace: str) -> quota.Usage:
    """What the namespace holds now, counted from the store's memory."""
    known = store_catalog(store)
    return quota.total(quota.usage(kind, entry.obj, known) for kind in quota.COUNTED_KINDS
                       for entry in store.current(kind.key_prefix(namespace)))


def _recorded(entry: Entry) -> quota.Usage:
    used: quota.Usage = {}
    for resource, value in ((entry.obj.get("status") or {}).get("used") or {}).items():
        try:
            used[resource] = math.ceil(quota.parse_quantity(value))
        except quota.QuantityError:
            continue
    return used


Charge = tuple[Entry, Entry]  # (the quota before the charge, the quota charged)


async def _check_and_charge(store: Store, kind: Kind, namespace: str, name: str,
                            added: quota.Usage, *, dry_run: bool) -> list[Charge]:
    for _ in range(CHARGE_ATTEMPTS):
        await store.sync()  # every other server's charges and objects committed so far
        counted = namespace_usage(store, namespace)
        planned: list[tuple[Entry, quota.Usage]] = []
        for entry in limiting(store, namespace, added):
            hard = quota.hard_limits(entry.obj)
            recorded = _recorded(entry)
            in_use = {r: max(counted.get(r, 0), recorded.get(r, 0)) for r in hard}
            refusal = quota.excess(entry.obj["metadata"]["name"], hard, in_use, added)
            if refusal is not None:
                raise _forbidden(kind, name, refusal)
            planned.append((entry, quota.total([in_use, {r: a for r, a in added.items()
                                                         if r in hard}])))
        if dry_run:
            return []
        charges: list[Charge] = []
        try:
            for entry, used in planned:
                charged = orjson.loads(entry.raw)
                charged["status"] = quota.quota_status(charged, used)
                charges.append((entry, await store.update(entry.key, charged, entry.revision)))
            return charges
        except RevisionConflict:  # the controller or another server wrote it: count again
            await _refund(store, charges)
    raise errors.ApiError(409, "Conflict", f'{kind.qualified_resource} "{name}": the quotas of '
                          f'namespace "{namespace}" changed {CHARGE_ATTEMPTS} times while this '
                          "write was being checked; retry it", kind=kind, name=name)


async def _refund(store: Store, charges: list[Charge]) -> None:
    """Give back charges of a write that was not stored (a quota rewritten since by the
    controller already counts without it)."""
    for before, charged in reversed(charges):
        try:
            await store.update(before.key, orjson.loads(before.raw), charged.revision)
        except (RevisionConflict, KeyNotFound):
            continue


def _forbidden(kind: Kind, name: str, refusal: quota.Excess) -> errors.ApiError:
    return errors.ApiError(
        403, "Forbidden", f'{kind.qualified_resource} "{name}" is forbidden: {refusal.message}',
        kind=kind, name=name, causes=[{
            "type": "FieldValueForbidden", "field": quota.field_at_fault(resource),
            "message": f"{resource}: {quota.format_quantity(refusal.used[resource])} of "
                       f"{quota.format_quantity(refusal.limited[resource])} used in quota "
                       f"{refusal.quota}; free some (delete or stop what uses it) or ask an "
                       "administrator to raise the quota"}
            for resource in sorted(refusal.requested)])
