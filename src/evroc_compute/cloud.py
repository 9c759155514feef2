"""The whole cloud in one command: the API server, the control plane and the fleet's agents.

`Cloud` is the ASGI application `serve` runs.  At start the API server opens its store; what
runs the control plane (controlplane.py) depends on `controllers`:

- `in-process`: this process registers the fleet's Host objects (existing ones are left as the
  operator edited them) and campaigns for the controller lease; the leader runs the
  controllers, the scheduler, the simulated hosts' agent and, with `serve --driver qemu`, the
  agent of this machine, all through in-process clients that go through the same handlers
  (admission, concurrency) as kubectl.
- `process`: a child process, `evroc-compute controllers --server <this server>`, does all of
  that over HTTP with the PKI's controller-manager and fleet-simulator certificates, on the
  second core; this process supervises it (restarts it, logs its output, ends it).
- `none`: the API is served with only the namespace controller behind it (status is whatever
  clients write), which the API-level tests use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from evroc_compute import controlplane
from evroc_compute.client.inprocess import InProcessClient
from evroc_compute.controllers.leader import LeaderElector
from evroc_compute.controllers.namespace import NamespaceController
from evroc_compute.hosts.agent import Agent
from evroc_compute.hosts.drivers.qemu.driver import QemuDriver, QemuHostConfig, register_host
from evroc_compute.hosts.fleet import Fleet, default_fleet
from evroc_compute.runtime.world import World
from evroc_compute.server import channel, fairness
from evroc_compute.server.app import App
from evroc_compute.server.auth.users import (
    CONTROLLER_MANAGER,
    CONTROLLERS,
    FLEET_SIMULATOR,
    FLEET_SIMULATOR_USER,
    host_user,
)
from evroc_compute.server.http import Receive, Scope, Send, lifespan
from evroc_compute.supervisor import Supervisor

log = logging.getLogger(__name__)

LEADER_LEASE = controlplane.LEADER_LEASE
ControllersMode = Literal["in-process", "process", "none"]
CONTROLLERS_MODES: tuple[ControllersMode, ...] = ("in-process", "process", "none")


class Limits(fairness.Limits):
    """The per-user limits of fairness.py, which do not count the control plane's own users.

    In-process, their requests never reach the limits; from a controllers process they come
    over HTTP and are bounded the same way, by the controllers' workers and queues. Counted,
    the scheduler's batches of binds and the event recorder's bursts would queue behind a cap
    of 100 in flight, and every write would wait for several group commits instead of one."""

    EXEMPT = frozenset({CONTROLLER_MANAGER, FLEET_SIMULATOR})

    def admit(self, user: str, watch: bool) -> None:
        if user not in self.EXEMPT:
            super().admit(user, watch)

    def release(self, user: str, watch: bool) -> None:
        if user not in self.EXEMPT:
            super().release(user, watch)


class Cloud:
    def __init__(self, data_dir: Path, *, fleet: Fleet | None = None,
                 controllers: ControllersMode | bool = "in-process",
                 qemu_host: QemuHostConfig | None = None,
                 controllers_command: Sequence[str] = (), **app_options: Any) -> None:
        """`controllers_command`: with `process`, the command line of the controllers process
        (cli.py makes it; this process's identity is appended)."""
        mode = controllers if isinstance(controllers, str) \
            else ("in-process" if controllers else "none")
        self.mode: ControllersMode = mode
        self.app = App(data_dir, control_plane=mode != "none", **app_options)
        self.fleet = fleet or default_fleet()
        self.qemu_host = qemu_host
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
        # several machines) campaign, so each process is a candidate of its own. A controllers
        # process campaigns with its server's identity, so a restarted one takes the lease back
        # at once too.
        self.identity = f"{socket.gethostname()}:{data_dir.resolve()}" \
            if self.app.store_url.startswith("sqlite:") \
            else f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.supervisor = Supervisor("controllers", [*controllers_command,
                                                     "--identity", self.identity],
                                     self._channels) if mode == "process" else None
        self._task: asyncio.Task[None] | None = None
        self._serving: set[asyncio.Task[None]] = set()

    def _channels(self) -> tuple[list[str], list[socket.socket]]:
        """A new controllers process's sockets to this server: one per identity, each served
        as that identity (server/channel.py)."""
        theirs = []
        for user in (CONTROLLERS, FLEET_SIMULATOR_USER):
            ours, their_end = socket.socketpair()
            task = asyncio.create_task(channel.serve(self.app, ours, user),
                                       name=f"channel-{user.name}")
            self._serving.add(task)
            task.add_done_callback(self._served)
            theirs.append(their_end)
        return ["--channels", ",".join(str(s.fileno()) for s in theirs)], theirs

    def _served(self, task: asyncio.Task[None]) -> None:
        self._serving.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", task.get_name(), exc_info=task.exception())

    async def start(self) -> None:
        await self.app.start()
        if self.supervisor is not None:
            self.supervisor.start()
            return
        if self.mode == "in-process":
            await self.register_hosts()
        elector = LeaderElector(self.client, LEADER_LEASE, self.identity)
        self._task = asyncio.create_task(elector.run(self._lead), name="leader-election")

    async def register_hosts(self) -> None:
        if self.host_client is not None and self.qemu_host is not None:
            # this machine registers its Host and the images it has, as a separate agent does
            await register_host(self.host_client, self.qemu_host)
            return
        await controlplane.register_hosts(self.client, self.fleet)

    async def _lead(self) -> None:
        """The leader's work: the namespace controller always (deleting a namespace finishes
        even when the API is served alone, as kube-controller-manager's would finish it), the
        compute controllers, the scheduler and the hosts' agents unless `none`."""
        if self.mode == "none":
            await NamespaceController(self.client).run()
            return
        await controlplane.lead(self.client, self.simulator, self.fleet, self._qemu_agent)

    def _qemu_agent(self, world: World) -> list[Agent]:
        if self.host_client is None or self.qemu_host is None:
            return []
        settings = self.fleet.settings
        return [Agent("qemu-agent", self.host_client, world, settings,
                      QemuDriver(world, settings, self.qemu_host))]

    def stopping(self) -> None:
        """The server is about to shut down (a signal): the controllers process goes first."""
        if self.supervisor is not None:
            self.supervisor.terminate()

    async def stop(self) -> None:
        if self.supervisor is not None:
            await self.supervisor.stop()
        for task in list(self._serving):
            task.cancel()
        await asyncio.gather(*self._serving, return_exceptions=True)
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
