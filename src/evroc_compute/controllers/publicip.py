"""The PublicIP controller: an address from the pool, and the one VM that uses it.

The address is allocated once and kept for the PublicIP's life (a static address survives the
VM's stops).  `status.usedBy` names the VM that refers to it (the oldest, if several do; the
others cannot start and say why); deleting a PublicIP in use is refused by the API server.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from evroc_compute.api.meta import now_rfc3339
from evroc_compute.api.networking import PUBLIC_IP
from evroc_compute.client.base import Client
from evroc_compute.controllers.addresses import AddressPool, PoolExhausted
from evroc_compute.controllers.vmstatus import Condition, conditions_to_dicts
from evroc_compute.runtime.controller import Key, Result
from evroc_compute.runtime.settings import Settings
from evroc_compute.runtime.world import World, get, ns_name
from evroc_compute.runtime.writes import write_status


def _owner(pip: dict[str, Any]) -> str:
    return str(pip["metadata"]["uid"])


class PublicIPController:
    def __init__(self, client: Client, world: World, settings: Settings) -> None:
        self.client, self.world = client, world
        self.pool = AddressPool(ipaddress.IPv4Network(settings.public_ip_pool))

    def prime(self) -> None:
        for pip in self.world.public_ips.cache.values():
            address = get(pip, "status", "publicIPv4Address")
            if address:
                self.pool.claim(_owner(pip), address)

    def release(self, pip: dict[str, Any]) -> None:
        self.pool.release(_owner(pip))

    async def reconcile(self, key: Key) -> Result:
        pip = self.world.public_ips.get(*key)
        if pip is None:
            return Result()
        status = dict(pip.get("status") or {})
        generation = pip["metadata"].get("generation", 1)
        try:
            status["publicIPv4Address"] = self.pool.allocate(_owner(pip))
        except PoolExhausted as problem:
            ready = Condition(type="Ready", status="False", reason="PoolExhausted",
                              message=f"no address is free: {problem}; delete an unused PublicIP",
                              observed_generation=generation)
            status["conditions"] = conditions_to_dicts([ready], now_rfc3339(),
                                                       status.get("conditions") or [])
            await write_status(self.client, PUBLIC_IP, pip, status)
            return Result(requeue_after=30)
        users = sorted(self.world.vms.by_index("publicip", ns_name(*key)),
                       key=lambda vm: (vm["metadata"].get("creationTimestamp", ""),
                                       vm["metadata"]["name"]))
        if users:
            status["usedBy"] = users[0]["metadata"]["name"]
            message = f'{status["publicIPv4Address"]} is used by VirtualMachine "{status["usedBy"]}"'
        else:
            status.pop("usedBy", None)
            message = f'{status["publicIPv4Address"]} is allocated and not in use'
        ready = Condition(type="Ready", status="True", reason="Allocated", message=message,
                          observed_generation=generation)
        status["conditions"] = conditions_to_dicts([ready], now_rfc3339(),
                                                   status.get("conditions") or [])
        await write_status(self.client, PUBLIC_IP, pip, status)
        return Result()
