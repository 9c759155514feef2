"""The SecurityGroup controller: the VMs a group applies to, and whether their hosts enforce it.

A group applies to the VMs that name it; a group named `default` also to the VMs that name no
group (evroc's default group, which exists without an object: its rules are built in until a
project creates a SecurityGroup called `default`, whose rules then replace them).  Each host
agent reports in its Host's `status.securityGroups` the generation of every group it has
programmed (the simulated fleet reports what it would program, at once); the group is Ready
when every host running one of its VMs reports the group's current generation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from evroc_compute.api.meta import now_rfc3339
from evroc_compute.api.networking import MAX_LISTED_MEMBERS, SECURITY_GROUP
from evroc_compute.client.base import Client
from evroc_compute.controllers.vmstatus import Condition, conditions_to_dicts
from evroc_compute.runtime.controller import Key, Result
from evroc_compute.runtime.world import World, get, key_of, ns_name
from evroc_compute.runtime.writes import write_status

NAMED_LAGGING = 5  # hosts named in the message; the rest are counted
NIC_PHASES = frozenset({"Running", "Paused", "Migrating"})  # an instance whose NIC is plugged


@dataclass(frozen=True)
class Member:
    name: str
    host: str | None  # the host its NIC is on, if it runs


def group_status(generation: int, members: Iterable[Member],
                 programmed: Mapping[str, int | None]) -> tuple[dict[str, Any], Condition]:
    """The group's status without conditions, and its Ready condition.

    `programmed` maps each host running a member to the group's generation it reports (None:
    it reports none)."""
    ordered = sorted(members, key=lambda m: m.name)
    status: dict[str, Any] = {"appliesTo": [{"name": m.name} for m in ordered[:MAX_LISTED_MEMBERS]],
                              "appliesToCount": len(ordered)}
    hosts = sorted({m.host for m in ordered if m.host})
    lagging = [h for h in hosts if (programmed.get(h) or 0) < generation]

    def ready(reason: str, message: str) -> Condition:
        return Condition(type="Ready", status="False" if lagging else "True", reason=reason,
                         message=message, observed_generation=generation)

    if not ordered:
        return status, ready("NoMembers", "applies to no VM")
    if not hosts:
        return status, ready("NoRunningMembers", f"none of its {len(ordered)} VMs runs; a host "
                             "programs it when it starts one")
    if lagging:
        named = ", ".join(lagging[:NAMED_LAGGING])
        more = f" and {len(lagging) - NAMED_LAGGING} more" if len(lagging) > NAMED_LAGGING else ""
        return status, ready("Programming", f"{len(lagging)} of {len(hosts)} hosts running its "
                             f"VMs have not programmed generation {generation} yet: {named}{more}")
    return status, ready("Programmed", "programmed on the host running its VMs" if len(hosts) == 1
                         else f"programmed on the {len(hosts)} hosts running its VMs")


def reported(host: dict[str, Any] | None, namespace: str, name: str) -> int | None:
    """The generation of a group a Host's agent reports programmed."""
    return next((int(g["generation"]) for g in get(host, "status", "securityGroups") or []
                 if g.get("namespace") == namespace and g.get("name") == name), None)


class SecurityGroupController:
    def __init__(self, client: Client, world: World) -> None:
        self.client, self.world = client, world

    def members(self, namespace: str, name: str) -> list[Member]:
        found = []
        for vm in self.world.vms.by_index("securitygroup", ns_name(namespace, name)):
            instance = self.world.instances.get(*key_of(vm))
            running = get(instance, "status", "phase") in NIC_PHASES
            found.append(Member(vm["metadata"]["name"],
                                get(instance, "spec", "host") if running else None))
        return found

    async def reconcile(self, key: Key) -> Result:
        group = self.world.security_groups.get(*key)
        if group is None:
            return Result()
        members = self.members(*key)
        programmed = {m.host: reported(self.world.hosts.get("", m.host), *key)
                      for m in members if m.host}
        status, ready = group_status(group["metadata"].get("generation", 1), members, programmed)
        status["conditions"] = conditions_to_dicts([ready], now_rfc3339(),
                                                   get(group, "status", "conditions") or [])
        await write_status(self.client, SECURITY_GROUP, group, status)
        return Result()
