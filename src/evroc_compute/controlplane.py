"""The control plane: what the holder of the controllers lease runs, over any client.

`serve` runs it inside the API server's process through in-process clients (`--controllers
in-process`), or `evroc-compute controllers --server URL` runs it in a process of its own over
HTTP (`serve --controllers process` starts that process itself). Either way the same pieces do
the same work under the same identities: the controllers and the scheduler write as
`system:controller-manager`, the simulated fleet's agent as `system:fleet-simulator` (through
the host authorizer), and only the holder of the lease `evroc-compute-controllers` acts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from evroc_compute.api.infra import HOST, LEASE
from evroc_compute.client.base import Client, ClientError
from evroc_compute.controllers.leader import LeaderElector
from evroc_compute.controllers.manager import Manager
from evroc_compute.controllers.namespace import NamespaceController
from evroc_compute.hosts.agent import Agent
from evroc_compute.hosts.drivers.sim import SimDriver
from evroc_compute.hosts.fleet import Fleet
from evroc_compute.runtime.world import World

LEADER_LEASE = "evroc-compute-controllers"
# In a process of its own, each reconcile waits a round trip longer for its writes (the channel
# or HTTPS): more of them at once keep the pace, on the core the server does not use. In the
# server's process, 32 are faster: more only add to the one loop's work (docs/benchmarks.md).
APART_WORKERS = 128

log = logging.getLogger(__name__)


async def register_hosts(client: Client, fleet: Fleet) -> None:
    """The fleet file's Hosts, created if missing (existing ones stay as the operator left them)."""
    for host in fleet.hosts:
        try:
            await client.create(HOST, host.to_object())
        except ClientError as problem:
            if problem.code != 409:
                raise


async def lead(client: Client, simulator: Client, fleet: Fleet,
               more_agents: Callable[[World], list[Agent]] = lambda world: [], *,
               workers: int = 32) -> None:
    """The leader's work: the namespace controller, the compute controllers and the scheduler
    (`client`), the simulated hosts' agent (`simulator`) and `more_agents`, on shared caches;
    the VM and Disk controllers and the simulated agent with `workers` reconciles at once."""
    manager = Manager(client, fleet.settings, workers=workers)
    world, settings = manager.world, fleet.settings
    agents = [Agent("sim-agent", simulator, world, settings, SimDriver(settings),
                    workers=workers),
              *more_agents(world)]
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(NamespaceController(client).run())
            group.create_task(manager.run())
            await world.synced.wait()
            for agent in agents:
                group.create_task(agent.run())
    finally:
        for agent in agents:
            agent.stop()


async def wait_for_server(client: Client, every: float = 0.1) -> None:
    """Until the server answers (a process started beside its server may be up first)."""
    waited = 0.0
    while True:
        try:
            await client.get(LEASE, None, LEADER_LEASE)
            return
        except ClientError as problem:
            if problem.code != 503:
                return  # it answered (404: nobody leads yet)
            if waited % 10 < every:
                log.info("waiting for the API server: %s", problem)
        await asyncio.sleep(every)
        waited += every


async def run(client: Client, simulator: Client, fleet: Fleet, identity: str) -> None:
    """`evroc-compute controllers`: register the fleet's Hosts, then campaign for the lease
    and, while holding it, lead."""
    await wait_for_server(client)
    await register_hosts(client, fleet)
    elector = LeaderElector(client, LEADER_LEASE, identity)
    await elector.run(lambda: lead(client, simulator, fleet, workers=APART_WORKERS))
