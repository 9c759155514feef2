"""The whole cloud in one process: the API server, the control plane and the fleet's agents.

`Cloud` is the ASGI application `serve` runs.  At start the API server opens its store; then the
fleet's Host objects are registered (existing ones are left as the operator edited them) and
the process campaigns for the controller lease.  The leader runs the controllers, the scheduler,
the simulated hosts' agent and, with `serve --driver qemu`, the agent of this machine, all
through an in-process client that goes through the same handlers (admission, concurrency) as
kubectl.  With `controllers=False` the server serves the API with only the namespace
controller behind it (status is whatever clients write), which the API-level tests use.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from pathlib import Path
from typing import Any

from evroc_compute.api.infra import HOST
from evroc_compute.client.base import ClientError
from evroc_compute.client.inprocess import InProcessClient
from evroc_compute.controllers.leader import LeaderElector
from evroc_compute.controllers.manager import Manager
from evroc_compute.controllers.namespace import NamespaceController
from evroc_compute.hosts.agent import Agent
from evroc_compute.hosts.drivers.qemu.driver import QemuDriver, QemuHostConfig, register_host
from evroc_compute.hosts.drivers.sim import SimDriver
from evroc_compute.hosts.fleet import Fleet, default_fleet
from evroc_compute.server.app import App
from evroc_compute.server.auth.users import FLEET_SIMULATOR_USER, host_user
from evroc_compute.server.http import Receive, Scope, Send, lifespan

LEADER_LEASE = "evroc-compute-controllers"


class Cloud:
    def __init__(self, data_dir: Path, *, fleet: Fleet | None = None, controllers: bool = True,
                 qemu_host: QemuHostConfig | None = None, **app_options: Any) -> None:
        self.app = App(data_dir, **app_options)
        self.fleet = fleet or default_fleet()
        self.qemu_host = qemu_host
        self.controllers = controllers
        self.client = InProcessClient(self.app, "evroc-compute-controllers")
        # The agents write as hosts do, through the host authorizer: the simulated fleet's as
        # system:fleet-simulator (it serves every simulated host), this machine's as its host.
        self.simulator = InProcessClient(self.app, "evroc-compute-fleet-simulator",
                                         FLEET_SIMULATOR_USER)
        self.host_client = InProcessClient(self.app, "evroc-compute-agent",
                                           host_user(qemu_host.name)) if qemu_host else None
        # Embedded store: stable across restarts of the server on this data, so a restarted
        # leader (after kill -9) takes its lease back at once; no two servers share the file.
        # Shared store: several servers (maybe with one data dir each, maybe the same path on
        # several machines) campaign, so each process is a candidate of its own.
        self.identity = f"{socket.gethostname()}:{data_dir.resolve()}" \
            if self.app.store_url.startswith("sqlite:") \
            else f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.manager: Manager | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.app.start()
        if self.controllers:
            await self.register_hosts()
        elector = LeaderElector(self.client, LEADER_LEASE, self.identity)
        self._task = asyncio.create_task(elector.run(self._lead), name="leader-election")

    async def register_hosts(self) -> None:
        if self.host_client is not None and self.qemu_host is not None:
            # this machine registers its Host and the images it has, as a separate agent does
            await register_host(self.host_client, self.qemu_host)
            return
        for host in self.fleet.hosts:
            try:
                await self.client.create(HOST, host.to_object())
            except ClientError as problem:
                if problem.code != 409:
                    raise

    async def _lead(self) -> None:
        """The leader's work: the namespace controller always (deleting a namespace finishes
        even when the API is served alone, as kube-controller-manager's would finish it), the
        compute controllers, the scheduler and the hosts' agents unless `controllers=False`."""
        namespaces = NamespaceController(self.client)
        if not self.controllers:
            await namespaces.run()
            return
        manager = self.manager = Manager(self.client, self.fleet.settings)
        world, settings = manager.world, self.fleet.settings
        agents = [Agent("sim-agent", self.simulator, world, settings, SimDriver(settings))]
        if self.host_client is not None and self.qemu_host is not None:
            agents.append(Agent("qemu-agent", self.host_client, world, settings,
                                QemuDriver(world, settings, self.qemu_host)))
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(namespaces.run())
                group.create_task(manager.run())
                await manager.world.synced.wait()
                for agent in agents:
                    group.create_task(agent.run())
        finally:
            for agent in agents:
                agent.stop()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.app.stop()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        await lifespan(receive, send, self.start, self.stop)
