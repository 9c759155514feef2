"""Address pools: private IPv4 addresses per zone subnet, public IPv4 addresses from one pool.

Owned by one controller each and held in memory: an address is taken and given back between
two awaits, so two owners can never be handed the same one.  At start the pool is primed with
every address already recorded on objects, so a restart never hands out an address in use.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator


class PoolExhausted(Exception):
    pass


class AddressPool:
    """Hands out the host addresses of `network` (the first one, the gateway, is kept back)."""

    def __init__(self, network: ipaddress.IPv4Network) -> None:
        self.network = network
        self._owner_of: dict[str, str] = {}  # address -> owner
        self._address_of: dict[str, str] = {}  # owner -> address
        self._candidates: Iterator[ipaddress.IPv4Address] = self._scan()

    def _scan(self) -> Iterator[ipaddress.IPv4Address]:
        while True:
            hosts = self.network.hosts()
            next(hosts, None)  # .1 is the subnet's gateway
            yield from hosts

    def claim(self, owner: str, address: str) -> bool:
        """Record that `owner` holds `address` (from a stored object); False if another does."""
        if ipaddress.IPv4Address(address) not in self.network:
            return False
        holder = self._owner_of.get(address)
        if holder is not None and holder != owner:
            return False
        self._owner_of[address], self._address_of[owner] = owner, address
        return True

    def allocate(self, owner: str) -> str:
        """The owner's address, allocating a free one if it has none."""
        held = self._address_of.get(owner)
        if held is not None:
            return held
        for _ in range(self.network.num_addresses):
            candidate = str(next(self._candidates))
            if candidate not in self._owner_of:
                self._owner_of[candidate], self._address_of[owner] = owner, candidate
                return candidate
        raise PoolExhausted(f"every address of {self.network} is in use")

    def release(self, owner: str) -> None:
        address = self._address_of.pop(owner, None)
        if address is not None:
            self._owner_of.pop(address, None)

    def __len__(self) -> int:
        return len(self._owner_of)
