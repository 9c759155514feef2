"""Leader election over the API: one leader at a time, takeover only after the lease expires."""

from __future__ import annotations

import asyncio

from evroc_compute.api.infra import LEASE
from evroc_compute.client.inprocess import InProcessClient
from evroc_compute.controllers.leader import LeaderElector


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_only_one_candidate_leads_until_the_lease_expires(client: InProcessClient) -> None:
    clock = Clock()
    first = LeaderElector(client, "ctl", "first", duration=15, wall=clock)
    second = LeaderElector(client, "ctl", "second", duration=15, wall=clock)
    assert await first.try_acquire_or_renew()
    assert not await second.try_acquire_or_renew()
    clock.now += 10
    assert await first.try_acquire_or_renew()  # a renewal
    clock.now += 14
    assert not await second.try_acquire_or_renew()  # renewed 14 s ago: still held
    clock.now += 2
    assert await second.try_acquire_or_renew()  # 16 s without renewal: taken over
    assert not await first.try_acquire_or_renew()
    lease = await client.get(LEASE, None, "ctl")
    assert lease["spec"]["holderIdentity"] == "second"
    assert lease["spec"]["leaseTransitions"] == 1


async def test_two_candidates_racing_for_a_free_lease_get_one_leader(client: InProcessClient) -> None:
    clock = Clock()
    candidates = [LeaderElector(client, "race", f"c{i}", wall=clock) for i in range(5)]
    won = await asyncio.gather(*(c.try_acquire_or_renew() for c in candidates))
    assert sum(won) == 1
