"""Leader election through a Lease, as client-go's leaderelection does it.

Several server processes may share one store; only the holder of the lease runs the
controllers.  The holder renews every `renew` seconds with compare-and-swap on the lease's
resourceVersion; a candidate takes the lease over only once it has not been renewed for
`duration` seconds.  A holder that cannot renew within `duration` stops leading before anyone
else can start, so two leaders never act at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from evroc_compute.api.infra import LEASE
from evroc_compute.api.meta import format_time, parse_time
from evroc_compute.client.base import Client, ClientError

log = logging.getLogger(__name__)


class LeaderElector:
    def __init__(self, client: Client, name: str, identity: str, *, duration: float = 15.0,
                 renew: float = 5.0, wall: Callable[[], float] = time.time) -> None:
        self.client, self.name, self.identity = client, name, identity
        self.duration, self.renew, self.wall = duration, renew, wall
        self.leading = False

    def _spec(self, old: dict[str, Any] | None, now: float) -> dict[str, Any]:
        previous = (old or {}).get("spec") or {}
        taking_over = previous.get("holderIdentity") != self.identity
        return {"holderIdentity": self.identity, "leaseDurationSeconds": round(self.duration),
                "renewTime": format_time(now),
                "acquireTime": format_time(now) if taking_over else previous.get("acquireTime"),
                "leaseTransitions": previous.get("leaseTransitions", 0) + (
                    1 if taking_over and previous else 0)}

    async def try_acquire_or_renew(self) -> bool:
        now = self.wall()
        try:
            lease = await self.client.get(LEASE, None, self.name)
        except ClientError as problem:
            if not problem.not_found:
                raise
            try:
                await self.client.create(LEASE, {
                    "apiVersion": LEASE.api_version, "kind": "Lease",
                    "metadata": {"name": self.name}, "spec": self._spec(None, now)})
                return True
            except ClientError as lost:
                if lost.code == 409:
                    return False
                raise
        spec = lease.get("spec") or {}
        renewed = parse_time(spec.get("renewTime")) or 0.0
        if spec.get("holderIdentity") != self.identity and now - renewed < self.duration:
            return False
        try:
            await self.client.update(LEASE, {**lease, "spec": self._spec(lease, now)})
            return True
        except ClientError as problem:
            if problem.conflict:
                return False
            raise

    async def run(self, lead: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Campaign forever; while leading, run `lead()` (cancelled when leadership is lost)."""
        while True:
            if await self._attempt():
                log.info("%s: leading as %s", self.name, self.identity)
                self.leading = True
                task = asyncio.create_task(lead(), name=f"{self.name}-leader")
                try:
                    await self._keep(task)
                finally:
                    self.leading = False
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                log.warning("%s: lost leadership", self.name)
            await asyncio.sleep(self.renew)

    async def _attempt(self) -> bool:
        try:
            return await self.try_acquire_or_renew()
        except ClientError as problem:
            log.warning("%s: cannot reach the lease: %s", self.name, problem)
            return False

    async def _keep(self, task: asyncio.Task[None]) -> None:
        last = self.wall()
        while not task.done():
            await asyncio.sleep(self.renew)
            if await self._attempt():
                last = self.wall()
            elif self.wall() - last >= self.duration - self.renew:
                return
