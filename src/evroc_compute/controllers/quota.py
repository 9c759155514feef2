"""The ResourceQuota controller: status.used counted again from the objects of the project.

Admission charges a quota when it admits a write (server/quota.py); only this count gives
back what deleted or stopped objects held, and corrects a charge whose write never landed.
A quota is recounted when it changes and whenever an object of its namespace starts or stops
counting for something (its usage, `api/quota.usage`, changed), not on every status write.
"""

from __future__ import annotations

from typing import Any

from evroc_compute.api import compute, networking, quota
from evroc_compute.api.kinds import Kind
from evroc_compute.client.base import Client
from evroc_compute.runtime.controller import Key, Result
from evroc_compute.runtime.informer import Informer
from evroc_compute.runtime.world import World, key_of
from evroc_compute.runtime.writes import write_status


class QuotaController:
    def __init__(self, client: Client, world: World) -> None:
        self.client, self.world = client, world
        self.counted: tuple[tuple[Kind, Informer], ...] = (
            (compute.VIRTUAL_MACHINE, world.vms), (compute.DISK, world.disks),
            (compute.HOTSWAP_DISK_ATTACHMENT, world.attachments),
            (compute.PLACEMENT_GROUP, world.groups),
            (networking.PUBLIC_IP, world.public_ips))
        for _, informer in self.counted:
            informer.add_index("namespace", lambda o: [key_of(o)[0]])
        self._usage: dict[tuple[str, Key], quota.Usage] = {}  # what each object last counted

    def catalog(self) -> quota.Catalog:
        def spec_of(informer: Informer) -> Any:
            return lambda name: (informer.get("", name) or {}).get("spec")
        return quota.Catalog(profile=spec_of(self.world.profiles), image=spec_of(self.world.images))

    def quotas_of(self, namespace: str) -> list[Key]:
        return [key for key in self.world.quotas.cache if key[0] == namespace]

    def affected(self, kind: Kind, event: str, obj: dict[str, Any]) -> list[Key]:
        """The quotas to recount after `event` on `obj`: those of its namespace, if what the
        object counts for changed."""
        key = key_of(obj)
        seen = (kind.plural, key)
        before = self._usage.pop(seen, None)
        now = None if event == "DELETED" else quota.usage(kind, obj, self.catalog())
        if now is not None:
            self._usage[seen] = now
        return [] if now == before else self.quotas_of(key[0])

    async def reconcile(self, key: Key) -> Result:
        item = self.world.quotas.get(*key)
        if item is None:
            return Result()
        known = self.catalog()
        used = quota.total(quota.usage(kind, obj, known) for kind, informer in self.counted
                           for obj in informer.by_index("namespace", key[0]))
        await write_status(self.client, quota.RESOURCE_QUOTA, item, quota.quota_status(item, used))
        return Result()
