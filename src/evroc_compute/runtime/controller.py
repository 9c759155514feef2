"""The controller runtime: a de-duplicating, rate-limited work queue and the workers that drain it.

Why this module exists: every controller (Disk, VirtualMachine, HotswapDiskAttachment, ...) is
level-triggered (DESIGN.md): it is handed only a key, reads the world, moves it one step and
says when to look again.  What is left over is the same for all of them and easy to get subtly
wrong, so it lives here once, shaped after client-go's workqueue and controller-runtime:

- `WorkQueue` hands each key to one worker at a time.  A key added twice before it is picked up
  is processed once; a key added while it is being processed is queued again when the worker
  calls `done`, so it is never reconciled by two workers at once and never misses a change.
- Failures are retried with per-key exponential back-off (client-go's
  ItemExponentialFailureRateLimiter: 5 ms, doubling, capped at 60 s); a success `forget`s it.
  A `TerminalError` is logged and not retried: trying again cannot help until the object
  changes, and a change adds the key anew.
- A crash in one reconcile is caught, logged and counted; the worker goes on with the next key.
- All timing goes through a `Clock`, so back-off and requeue delays are tested on `FakeClock`
  without sleeping.

Deliberate difference from client-go: `shutdown()` drops the keys still waiting instead of
draining them.  Reconcilers are level-triggered, so a restarted controller lists everything
again and nothing is lost.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
import weakref
from dataclasses import dataclass
from typing import Protocol, TypeAlias

from prometheus_client import Histogram

from evroc_compute.client.base import ClientError

logger = logging.getLogger(__name__)

Key: TypeAlias = tuple[str, str]
"""(namespace, name); the namespace is "" for cluster-scoped objects."""

BASE_DELAY = 0.005  # seconds before the first retry of a failed key
MAX_DELAY = 60.0  # the longest a failing key waits between retries


def format_key(key: Key) -> str:
    """`namespace/name`, or `name` for a cluster-scoped object, as kubectl prints it."""
    namespace, name = key
    return f"{namespace}/{name}" if namespace else name


# --- time -------------------------------------------------------------------------------------


class Clock(Protocol):
    """Where the runtime reads the time and waits; seconds, monotonic."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class MonotonicClock:
    """The real clock: `time.monotonic` and `asyncio.sleep`."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0))


class FakeClock:
    """A clock that moves only when told to: `sleep` returns once `advance` reaches its deadline.

    Sleepers are woken in deadline order when time is moved; they run on the loop's next turns,
    so a test yields (`await asyncio.sleep(0)`) after advancing.  A sleep of zero or less only
    yields.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._order = itertools.count()  # breaks ties between equal deadlines, first come first
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []  # a heap by deadline

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), waiter))
        await waiter  # a cancelled sleep cancels the future; the heap skips it

    @property
    def sleepers(self) -> int:
        """How many sleeps are waiting for time to move."""
        return sum(1 for _, _, waiter in self._sleepers if not waiter.done())

    def next_deadline(self) -> float | None:
        """When the earliest waiting sleep ends, or None when nothing sleeps."""
        self._drop_finished()
        return self._sleepers[0][0] if self._sleepers else None

    def advance(self, seconds: float) -> None:
        """Move time forward by `seconds` and wake every sleep that has ended."""
        if seconds < 0:
            raise ValueError(f"time does not go back: advance({seconds})")
        self.advance_to(self._now + seconds)

    def advance_to(self, when: float) -> None:
        """Move time forward to exactly `when` (no rounding from adding up intervals)."""
        if when < self._now:
            raise ValueError(f"time does not go back: {when} < {self._now}")
        self._now = when
        self._drop_finished()
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, waiter = heapq.heappop(self._sleepers)
            if not waiter.done():
                waiter.set_result(None)
            self._drop_finished()

    def _drop_finished(self) -> None:
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)


# --- back-off ---------------------------------------------------------------------------------


class RateLimiter(Protocol):
    """Decides how long a failed key waits before it is retried."""

    def when(self, key: Key) -> float:
        """Record one more failure of `key` and return the delay before its retry."""
        ...

    def forget(self, key: Key) -> None:
        """Forget the failures of `key`: its next failure starts from the base delay again."""
        ...

    def num_requeues(self, key: Key) -> int:
        """How many failures of `key` are being remembered."""
        ...


class ExponentialBackoff:
    """client-go's ItemExponentialFailureRateLimiter: `base * 2**failures`, at most `cap`."""

    def __init__(self, base: float = BASE_DELAY, cap: float = MAX_DELAY) -> None:
        if base <= 0 or cap < base:
            raise ValueError(f"need 0 < base <= cap, got base={base} cap={cap}")
        self.base = base
        self.cap = cap
        self._failures: dict[Key, int] = {}

    def when(self, key: Key) -> float:
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        # the exponent is bounded so a key failing for days cannot overflow a float
        return min(self.base * 2.0 ** min(failures, 256), self.cap)

    def forget(self, key: Key) -> None:
        self._failures.pop(key, None)

    def num_requeues(self, key: Key) -> int:
        return self._failures.get(key, 0)


# --- the queue --------------------------------------------------------------------------------


class QueueShutDown(Exception):
    """`WorkQueue.get` after `shutdown`: the worker should exit."""


class WorkQueue:
    """Keys waiting to be reconciled; each key is held by at most one worker at a time.

    The bookkeeping is client-go's: `_dirty` holds the keys that need processing, `_processing`
    the keys handed to a worker and not yet `done`, and `_queue` the dirty keys that are not
    being processed, in the order they were added.
    """

    def __init__(self, clock: Clock | None = None, rate_limiter: RateLimiter | None = None) -> None:
        self.clock: Clock = clock or MonotonicClock()
        self.rate_limiter: RateLimiter = rate_limiter or ExponentialBackoff()
        self._queue: list[Key] = []  # ready keys, oldest first (a list: queues are short)
        self._dirty: set[Key] = set()  # keys that need processing (queued, or re-added while held)
        self._processing: set[Key] = set()  # keys a worker holds between get() and done()
        self._timers: dict[Key, tuple[float, asyncio.Task[None]]] = {}  # delayed adds: ready at
        self._ready = asyncio.Event()  # set while a key is ready or the queue is shut down
        self._shutting_down = False

    def __len__(self) -> int:
        """The keys ready to be handed out (not those being processed or delayed)."""
        return len(self._queue)

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def add(self, key: Key) -> None:
        """Mark `key` for processing; a no-op if it is already waiting or after shutdown."""
        if self._shutting_down or key in self._dirty:
            return
        self._dirty.add(key)
        if key in self._processing:
            return  # queued again by done(), so two workers never hold the same key
        self._queue.append(key)
        self._ready.set()

    def add_after(self, key: Key, delay: float) -> None:
        """Add `key` once `delay` seconds have passed; a key waiting already keeps the earlier time."""
        if self._shutting_down:
            return
        if delay <= 0:
            self.add(key)
            return
        ready_at = self.clock.now() + delay
        waiting = self._timers.get(key)
        if waiting is not None:
            if waiting[0] <= ready_at:
                return
            waiting[1].cancel()
        task = asyncio.get_running_loop().create_task(self._add_at(key, ready_at))
        self._timers[key] = (ready_at, task)

    async def _add_at(self, key: Key, ready_at: float) -> None:
        await self.clock.sleep(ready_at - self.clock.now())
        waiting = self._timers.get(key)
        if waiting is not None and waiting[1] is asyncio.current_task():
            del self._timers[key]
        self.add(key)

    def add_rate_limited(self, key: Key) -> None:
        """Add `key` after the back-off its failures so far have earned."""
        self.add_after(key, self.rate_limiter.when(key))

    def forget(self, key: Key) -> None:
        """Reset the back-off of `key` (it succeeded, or retrying is pointless)."""
        self.rate_limiter.forget(key)

    def num_requeues(self, key: Key) -> int:
        return self.rate_limiter.num_requeues(key)

    async def get(self) -> Key:
        """Wait for a ready key and hold it until `done`; raises `QueueShutDown` after shutdown."""
        while not self._queue:
            if self._shutting_down:
                raise QueueShutDown()
            await self._ready.wait()
        key = self._queue.pop(0)
        if not self._queue:
            self._ready.clear()
        self._processing.add(key)
        self._dirty.discard(key)
        return key

    def done(self, key: Key) -> None:
        """Release `key`; if it was added while held, it is ready again now."""
        self._processing.discard(key)
        if self._shutting_down:
            return
        if key in self._dirty:
            self._queue.append(key)
            self._ready.set()

    def shutdown(self) -> None:
        """Stop handing out keys: every waiting and later `get` raises `QueueShutDown`.

        Keys still waiting are dropped and delayed adds cancelled; keys added later are ignored.
        """
        self._shutting_down = True
        self._queue.clear()
        self._dirty.clear()
        for _, task in self._timers.values():
            task.cancel()
        self._timers.clear()
        self._ready.set()


# --- reconcilers and the controller -----------------------------------------------------------


@dataclass(frozen=True)
class Result:
    """What a successful reconcile asks for next."""

    requeue_after: float | None = None  # seconds until the key is looked at again; None: not

    def __post_init__(self) -> None:
        if self.requeue_after is not None and self.requeue_after < 0:
            raise ValueError(f"requeue_after must be >= 0, got {self.requeue_after}")


class TerminalError(Exception):
    """A reconcile failure that retrying cannot fix (e.g. an invalid spec): logged, not retried."""


class Reconciler(Protocol):
    """Moves the object named by `key` one step towards its spec; idempotent."""

    async def reconcile(self, key: Key) -> Result: ...


METRICS = ("reconciled", "requeued", "errors", "terminal", "conflicts")
"""reconciled: successful reconciles; requeued: of those, the ones that asked to be looked at
again; errors: failures retried with back-off (crashes included); terminal: failures not retried;
conflicts: writes refused because the object changed or went away meanwhile (409 or 404; retried
with back-off, quietly)."""


RECONCILE_TIME = Histogram("controller_runtime_reconcile_time_seconds",
                           "Time per reconcile, by controller.", ("controller",))
LIVE: weakref.WeakSet[Controller] = weakref.WeakSet()  # read by runtime/metrics.py


class Controller:
    """Runs `workers` tasks that take keys from `queue` and reconcile them, until `stop()`."""

    def __init__(
        self,
        name: str,
        reconciler: Reconciler,
        queue: WorkQueue,
        workers: int = 1,
        clock: Clock | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"a controller needs at least one worker, got {workers}")
        self.name = name
        self.reconciler = reconciler
        self.queue = queue
        self.workers = workers
        self.clock: Clock = clock or queue.clock  # times each reconcile, for the logs
        self.metrics: dict[str, int] = dict.fromkeys(METRICS, 0)
        self._running = False
        self._reconcile_time = RECONCILE_TIME.labels(name)
        LIVE.add(self)

    async def run(self) -> None:
        """Reconcile keys until `stop()`; returns once every worker has finished its key."""
        if self._running:
            raise RuntimeError(f"controller {self.name} is already running")
        self._running = True
        logger.info("controller %s: starting %d worker(s)", self.name, self.workers)
        try:
            async with asyncio.TaskGroup() as group:
                for number in range(self.workers):
                    group.create_task(self._work(), name=f"{self.name}-worker-{number}")
        finally:
            self._running = False
            logger.info("controller %s: stopped", self.name)

    def stop(self) -> None:
        """Shut the queue down; workers finish the key they hold and exit."""
        self.queue.shutdown()

    async def _work(self) -> None:
        while True:
            try:
                key = await self.queue.get()
            except QueueShutDown:
                return
            started = self.clock.now()
            try:
                await self._process(key)
            finally:
                self.queue.done(key)
                self._reconcile_time.observe(self.clock.now() - started)

    async def _process(self, key: Key) -> None:
        started = self.clock.now()
        try:
            result = await self.reconciler.reconcile(key)
        except TerminalError as error:
            self.metrics["terminal"] += 1
            self.queue.forget(key)
            logger.error("controller %s: %s: terminal error, not retried: %s",
                         self.name, format_key(key), error)
            return
        except Exception as error:
            if isinstance(error, ClientError) and (error.conflict or error.not_found):
                # Acted on a stale cache (the object changed or went away): expected under
                # concurrency; look again shortly, from fresher facts.
                self.metrics["conflicts"] += 1
                self.queue.add_rate_limited(key)
                logger.debug("controller %s: %s: conflict, retrying", self.name, format_key(key))
                return
            self.metrics["errors"] += 1
            retries = self.queue.num_requeues(key)
            self.queue.add_rate_limited(key)
            logger.exception("controller %s: %s: reconcile failed (retry %d)",
                             self.name, format_key(key), retries + 1)
            return
        self.metrics["reconciled"] += 1
        self.queue.forget(key)
        if result.requeue_after is not None:
            self.metrics["requeued"] += 1
            self.queue.add_after(key, result.requeue_after)
        logger.debug("controller %s: %s: reconciled in %.3fs%s", self.name, format_key(key),
                     self.clock.now() - started,
                     "" if result.requeue_after is None else f", again in {result.requeue_after}s")
