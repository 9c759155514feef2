"""The PlacementGroup controller: its members and its zone.

A spread group is zonal: its zone is spec.placement.zone, or else the zone of its first placed
member.  The scheduler keeps its members on different hosts and refuses members beyond
`MAX_GROUP_MEMBERS`; admission lets a VM join or leave only while it is stopped.
"""

from __future__ import annotations

from typing import Any

from evroc_compute.api.compute import PLACEMENT_GROUP
from evroc_compute.api.meta import now_rfc3339
from evroc_compute.client.base import Client
from evroc_compute.controllers.vmstatus import Condition, conditions_to_dicts
from evroc_compute.runtime.controller import Key, Result
from evroc_compute.runtime.world import World, get, ns_name
from evroc_compute.runtime.writes import write_status
from evroc_compute.scheduler.placement import MAX_GROUP_MEMBERS


def members(world: World, namespace: str, group: str) -> list[dict[str, Any]]:
    """The group's VMs, oldest first: the first MAX_GROUP_MEMBERS are its members."""
    return sorted(world.vms.by_index("group", ns_name(namespace, group)),
                  key=lambda vm: (vm["metadata"].get("creationTimestamp", ""),
                                  vm["metadata"]["name"]))


class PlacementGroupController:
    def __init__(self, client: Client, world: World) -> None:
        self.client, self.world = client, world

    async def reconcile(self, key: Key) -> Result:
        pg = self.world.groups.get(*key)
        if pg is None:
            return Result()
        vms = members(self.world, *key)
        zone = get(pg, "spec", "placement", "zone") or next(
            (z for vm in vms if (z := get(vm, "status", "placement", "zone"))), None)
        status: dict[str, Any] = {"virtualMachines": [{"name": vm["metadata"]["name"]}
                                                      for vm in vms]}
        if zone:
            status["placement"] = {"zone": zone}
        generation = pg["metadata"].get("generation", 1)
        if len(vms) > MAX_GROUP_MEMBERS:
            extra = ", ".join(vm["metadata"]["name"] for vm in vms[MAX_GROUP_MEMBERS:])
            ready = Condition(type="Ready", status="False", reason="TooManyMembers",
                              message=f"a spread placement group holds at most "
                                      f"{MAX_GROUP_MEMBERS} VMs; {extra} cannot be placed until "
                                      "members leave", observed_generation=generation)
        else:
            ready = Condition(type="Ready", status="True", reason="Ready",
                              message=f"{len(vms)} of at most {MAX_GROUP_MEMBERS} members",
                              observed_generation=generation)
        status["conditions"] = conditions_to_dicts([ready], now_rfc3339(),
                                                   get(pg, "status", "conditions") or [])
        await write_status(self.client, PLACEMENT_GROUP, pg, status)
        return Result()
