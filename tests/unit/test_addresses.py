"""Address pools: unique addresses, the gateway kept back, restarts never hand out one in use."""

from __future__ import annotations

import ipaddress

import pytest

from evroc_compute.controllers.addresses import AddressPool, PoolExhausted


def pool(cidr: str = "10.0.1.0/29") -> AddressPool:
    return AddressPool(ipaddress.IPv4Network(cidr))


def test_addresses_are_unique_skip_the_gateway_and_are_stable_per_owner() -> None:
    p = pool()
    given = [p.allocate(f"vm{i}") for i in range(5)]  # a /29 has 6 hosts, .1 is the gateway
    assert given == ["10.0.1.2", "10.0.1.3", "10.0.1.4", "10.0.1.5", "10.0.1.6"]
    assert p.allocate("vm0") == "10.0.1.2"
    with pytest.raises(PoolExhausted, match=r"10\.0\.1\.0/29"):
        p.allocate("vm5")
    p.release("vm3")
    assert p.allocate("vm5") == "10.0.1.5"


def test_claims_from_stored_objects_are_respected_after_a_restart() -> None:
    p = pool()
    assert p.claim("old", "10.0.1.2")
    assert not p.claim("other", "10.0.1.2")  # already held
    assert not p.claim("stray", "192.168.0.9")  # not in this subnet
    assert p.allocate("new") == "10.0.1.3"
    assert len(p) == 2
