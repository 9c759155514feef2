"""The controller runtime's contract: de-duplication, one worker per key, back-off, requeue, stop.

Everything runs on `FakeClock`: time moves only when a test says so, and the tests wait for the
runtime by yielding to the loop (`until`, `settle`), never by sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable

import pytest

from evroc_compute.client.base import ClientError
from evroc_compute.runtime.controller import (
    Controller,
    ExponentialBackoff,
    FakeClock,
    Key,
    QueueShutDown,
    Result,
    TerminalError,
    WorkQueue,
    format_key,
)

A: Key = ("team-a", "vm-a")
B: Key = ("team-a", "vm-b")
C: Key = ("team-b", "vm-a")
CLUSTER_A: Key = ("", "vm-a")  # cluster-scoped, same name as A: a different key

Outcome = Result | Exception


class Script:
    """A reconciler that records every call and returns (or raises) what the test scripted.

    `outcomes[key]` is used call by call, then `default`; a key in `gates` waits for its event
    before finishing, so a test can hold a key "in reconcile" as long as it likes.
    """

    def __init__(
        self,
        clock: FakeClock,
        outcomes: dict[Key, list[Outcome]] | None = None,
        default: Outcome | None = None,
        gates: dict[Key, asyncio.Event] | None = None,
        turns: int = 1,
    ) -> None:
        self.clock = clock
        self.outcomes = {key: list(values) for key, values in (outcomes or {}).items()}
        self.default = default if default is not None else Result()
        self.gates = gates or {}
        self.turns = turns  # loop turns each reconcile takes, so workers overlap
        self.calls: list[tuple[Key, float]] = []  # (key, clock time when called)
        self.events: list[tuple[str, Key]] = []  # ("start" | "end", key); tests may add ("add", key)
        self.in_flight: Counter[Key] = Counter()
        self.max_in_flight_per_key = 0
        self.max_in_flight = 0

    async def reconcile(self, key: Key) -> Result:
        self.calls.append((key, self.clock.now()))
        self.events.append(("start", key))
        self.in_flight[key] += 1
        self.max_in_flight_per_key = max(self.max_in_flight_per_key, self.in_flight[key])
        self.max_in_flight = max(self.max_in_flight, sum(self.in_flight.values()))
        try:
            if key in self.gates:
                await self.gates[key].wait()
            for _ in range(self.turns):
                await asyncio.sleep(0)
            scripted = self.outcomes.get(key)
            outcome = scripted.pop(0) if scripted else self.default
            if isinstance(outcome, Exception):
                raise outcome
            return outcome
        finally:
            self.in_flight[key] -= 1
            self.events.append(("end", key))

    def keys(self) -> list[Key]:
        return [key for key, _ in self.calls]

    def times(self) -> list[float]:
        return [when for _, when in self.calls]


async def until(condition: Callable[[], bool], turns: int = 2000) -> None:
    """Yield to the loop until `condition` holds; fail (not hang) if it never does."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"not reached after {turns} loop turns")


async def settle(turns: int = 50) -> None:
    """Let every runnable task run, to show that something does *not* happen."""
    for _ in range(turns):
        await asyncio.sleep(0)


@contextlib.asynccontextmanager
async def running(controller: Controller) -> AsyncIterator[Controller]:
    task = asyncio.create_task(controller.run())
    try:
        yield controller
    finally:
        controller.stop()
        await settle()
        if not task.done():  # a test left a reconcile blocked on its gate
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task  # a bug inside the runtime fails the test here


def step_to_next_deadline(clock: FakeClock) -> None:
    deadline = clock.next_deadline()
    assert deadline is not None, "nothing is waiting for time to move"
    clock.advance_to(deadline)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=1000.0)


# --- de-duplication ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("added", "reconciled"),
    [
        pytest.param([A, A], [A], id="the same key twice: once"),
        pytest.param([A, B, A, B, A], [A, B], id="two keys interleaved: once each, first-added first"),
        pytest.param([A, CLUSTER_A], [A, CLUSTER_A], id="same name, other namespace: two keys"),
    ],
)
async def test_a_key_added_twice_before_processing_is_reconciled_once(
    clock: FakeClock, added: list[Key], reconciled: list[Key]
) -> None:
    queue = WorkQueue(clock)
    for key in added:
        queue.add(key)
    assert len(queue) == len(reconciled)
    script = Script(clock)
    async with running(Controller("vms", script, queue)) as controller:
        await until(lambda: len(script.calls) == len(reconciled))
        await settle()
    assert script.keys() == reconciled
    assert controller.metrics == {"reconciled": len(reconciled), "requeued": 0, "errors": 0,
                                  "terminal": 0, "conflicts": 0}


async def test_a_key_added_during_reconcile_is_reconciled_again_after(clock: FakeClock) -> None:
    gate = asyncio.Event()
    script = Script(clock, gates={A: gate})
    queue = WorkQueue(clock)
    async with running(Controller("vms", script, queue, workers=2)):
        queue.add(A)
        await until(lambda: script.in_flight[A] == 1)
        queue.add(A)  # the object changed while it was being reconciled
        queue.add(A)
        assert len(queue) == 0, "a held key is not handed out again before done()"
        await settle()
        assert script.keys() == [A], "the idle second worker must not take A"
        gate.set()
        await until(lambda: len(script.calls) == 2)
        await settle()
    assert script.events == [("start", A), ("end", A), ("start", A), ("end", A)]


async def test_len_counts_the_keys_ready_to_be_handed_out(clock: FakeClock) -> None:
    queue = WorkQueue(clock)
    queue.add(A)
    queue.add(B)
    assert len(queue) == 2
    assert await queue.get() == A
    assert len(queue) == 1
    queue.add(A)  # held: waits for done(), not in the ready queue
    queue.add_after(C, 5.0)  # delayed: not ready yet
    assert len(queue) == 1
    queue.done(A)
    assert len(queue) == 2
    assert [await queue.get(), await queue.get()] == [B, A]


# --- one worker per key -----------------------------------------------------------------------


async def test_two_workers_never_reconcile_the_same_key_at_once(clock: FakeClock) -> None:
    gate = asyncio.Event()
    script = Script(clock, gates={A: gate})
    queue = WorkQueue(clock)
    async with running(Controller("vms", script, queue, workers=2)):
        queue.add(A)
        await until(lambda: script.in_flight[A] == 1)
        queue.add(A)
        queue.add(B)
        await until(lambda: script.keys() == [A, B])
        await settle()
        assert script.keys() == [A, B], "the free worker took B and then waited, it did not take A"
        gate.set()
        await until(lambda: script.keys() == [A, B, A])
    assert script.max_in_flight_per_key == 1


async def test_many_workers_under_churn_hold_a_key_one_at_a_time_and_miss_no_add(clock: FakeClock) -> None:
    keys = [A, B, C, CLUSTER_A]
    script = Script(clock, turns=3)
    queue = WorkQueue(clock)
    rng = random.Random(20240611)
    async with running(Controller("vms", script, queue, workers=4)):
        for _ in range(300):
            key = rng.choice(keys)
            script.events.append(("add", key))
            queue.add(key)
            for _ in range(rng.randrange(3)):
                await asyncio.sleep(0)
        await until(lambda: len(queue) == 0 and not any(script.in_flight.values()))
        await settle()
    assert script.max_in_flight_per_key == 1
    assert script.max_in_flight >= 2, "the workers never overlapped, so the test proved nothing"
    for key in keys:
        last_add = max(i for i, event in enumerate(script.events) if event == ("add", key))
        assert ("start", key) in script.events[last_add:], f"{format_key(key)}: its last add was lost"


# --- errors and back-off ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failures_before", "delay"),
    [(0, 0.005), (1, 0.01), (2, 0.02), (3, 0.04), (12, 20.48), (13, 40.96), (14, 60.0), (15, 60.0),
     (5000, 60.0)],
    ids=lambda value: str(value),
)
def test_backoff_doubles_from_5ms_per_failure_and_is_capped_at_60s(
    failures_before: int, delay: float
) -> None:
    backoff = ExponentialBackoff()
    for _ in range(failures_before):
        backoff.when(A)
    assert backoff.when(A) == delay
    assert backoff.num_requeues(A) == failures_before + 1


def test_backoff_is_counted_per_key() -> None:
    backoff = ExponentialBackoff()
    assert [backoff.when(A), backoff.when(A), backoff.when(B), backoff.when(A)] == [0.005, 0.01, 0.005, 0.02]
    backoff.forget(A)
    assert (backoff.num_requeues(A), backoff.num_requeues(B)) == (0, 1)


async def test_errors_requeue_with_exponential_backoff_capped_at_60s(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    script = Script(clock, default=RuntimeError("host agent unreachable"))
    queue = WorkQueue(clock)
    async with running(Controller("vms", script, queue)) as controller:
        queue.add(A)
        for attempt in range(1, 17):
            await until(lambda: len(script.calls) == attempt and clock.sleepers == 1)  # noqa: B023
            step_to_next_deadline(clock)
        await until(lambda: len(script.calls) == 17)
    times = script.times()
    delays = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert delays == pytest.approx([0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12,
                                    10.24, 20.48, 40.96, 60.0, 60.0], rel=1e-9)
    assert controller.metrics["errors"] == 17
    assert controller.metrics["reconciled"] == 0
    assert "host agent unreachable" in caplog.text


async def test_success_forgets_the_backoff(clock: FakeClock) -> None:
    boom = RuntimeError("boom")
    script = Script(clock, outcomes={A: [boom, boom, Result(), boom]})
    queue = WorkQueue(clock)
    async with running(Controller("vms", script, queue)):
        queue.add(A)
        for attempt in (1, 2):
            await until(lambda: len(script.calls) == attempt and clock.sleepers == 1)  # noqa: B023
            step_to_next_deadline(clock)
        await until(lambda: len(script.calls) == 3)
        await settle()
        assert queue.num_requeues(A) == 0
        assert clock.sleepers == 0, "a success is not retried"
        queue.add(A)  # the object changes again and the next reconcile fails
        await until(lambda: len(script.calls) == 4 and clock.sleepers == 1)
        deadline = clock.next_deadline()
        assert deadline is not None
        assert deadline - clock.now() == pytest.approx(0.005), "back-off starts from the base again"


async def test_a_crash_in_one_key_is_caught_logged_and_counted_and_the_others_go_on(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    script = Script(clock, outcomes={A: [ZeroDivisionError("bug in the reconciler")]})
    queue = WorkQueue(clock)
    async with running(Controller("vms", script, queue)) as controller:
        queue.add(A)
        queue.add(B)
        await until(lambda: script.keys() == [A, B])
        await settle()
    assert controller.metrics == {"reconciled": 1, "requeued": 0, "errors": 1, "terminal": 0, "conflicts": 0}
    failure = next(record for record in caplog.records if record.levelno == logging.ERROR)
    assert "vms" in failure.getMessage() and "team-a/vm-a" in failure.getMessage()
    assert failure.exc_info is not None and isinstance(failure.exc_info[1], ZeroDivisionError)


@pytest.mark.parametrize("code", [409, 404], ids=["changed meanwhile", "gone meanwhile"])
async def test_a_stale_cache_write_is_retried_quietly(
    clock: FakeClock, caplog: pytest.LogCaptureFixture, code: int
) -> None:
    stale = ClientError({"kind": "Status", "code": code, "message": "stale"})
    script = Script(clock, outcomes={A: [stale]})
    queue = WorkQueue(clock)
    async with running(Controller("vms", script, queue)) as controller:
        queue.add(A)
        await until(lambda: clock.sleepers == 1)
        step_to_next_deadline(clock)
        await until(lambda: len(script.calls) == 2)
        await settle()
    assert controller.metrics == {"reconciled": 1, "requeued": 0, "errors": 0, "terminal": 0, "conflicts": 1}
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], "no error, no traceback"


async def test_terminal_errors_are_not_retried(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    invalid = TerminalError("spec.diskSize: must be at least the image's 20Gi")
    script = Script(clock, outcomes={A: [RuntimeError("transient"), invalid]})
    queue = WorkQueue(clock)
    async with running(Controller("disks", script, queue)) as controller:
        queue.add(A)
        await until(lambda: clock.sleepers == 1)
        step_to_next_deadline(clock)  # the transient error is retried...
        await until(lambda: len(script.calls) == 2)
        await settle()
        assert clock.sleepers == 0  # ...the terminal one is not
        clock.advance(3600)
        await settle()
        assert queue.num_requeues(A) == 0
    assert len(script.calls) == 2
    assert controller.metrics == {"reconciled": 0, "requeued": 0, "errors": 1, "terminal": 1, "conflicts": 0}
    assert "must be at least the image's 20Gi" in caplog.text


# --- requeue ----------------------------------------------------------------------------------


@pytest.mark.parametrize("requeue_after", [0.0, 0.25, 30.0])
async def test_requeue_after_is_honoured(clock: FakeClock, requeue_after: float) -> None:
    script = Script(clock, outcomes={A: [Result(requeue_after=requeue_after)]})
    queue = WorkQueue(clock)
    started = clock.now()
    async with running(Controller("vms", script, queue)) as controller:
        queue.add(A)
        if requeue_after > 0:
            await until(lambda: len(script.calls) == 1 and clock.sleepers == 1)
            clock.advance(requeue_after - 0.001)
            await settle()
            assert len(script.calls) == 1, "requeued before its time"
            clock.advance(0.001)
        await until(lambda: len(script.calls) == 2)
        await settle()
    assert script.times() == pytest.approx([started, started + requeue_after])
    assert controller.metrics == {"reconciled": 2, "requeued": 1, "errors": 0, "terminal": 0, "conflicts": 0}


def test_a_negative_requeue_after_is_refused() -> None:
    with pytest.raises(ValueError):
        Result(requeue_after=-1.0)


@pytest.mark.parametrize(
    ("delays", "ready_at"),
    [
        pytest.param([5.0, 1.0], 1.0, id="a sooner time replaces a later one"),
        pytest.param([1.0, 5.0], 1.0, id="a later time does not postpone a sooner one"),
    ],
)
async def test_add_after_adds_a_key_once_at_its_earliest_time(
    clock: FakeClock, delays: list[float], ready_at: float
) -> None:
    queue = WorkQueue(clock)
    for delay in delays:
        queue.add_after(A, delay)
    await until(lambda: clock.sleepers == 1)
    clock.advance(ready_at - 0.001)
    await settle()
    assert len(queue) == 0
    clock.advance(0.001)
    await until(lambda: len(queue) == 1)
    clock.advance(max(delays))
    await settle()
    assert len(queue) == 1 and clock.sleepers == 0


# --- shutdown ---------------------------------------------------------------------------------


async def test_shutdown_stops_workers(clock: FakeClock) -> None:
    gate = asyncio.Event()
    script = Script(clock, gates={A: gate})
    queue = WorkQueue(clock)
    controller = Controller("vms", script, queue, workers=3)
    run = asyncio.create_task(controller.run())
    queue.add(A)
    queue.add_after(C, 10.0)
    await until(lambda: script.in_flight[A] == 1 and clock.sleepers == 1)
    controller.stop()
    queue.add(B)  # ignored: the queue is shut down
    await settle()
    assert not run.done(), "the worker holding A finishes it before the controller stops"
    assert clock.sleepers == 0, "delayed adds are dropped"
    gate.set()
    await until(run.done)
    assert run.result() is None
    assert script.keys() == [A]
    with pytest.raises(QueueShutDown):
        await queue.get()


async def test_shutdown_wakes_a_waiting_get(clock: FakeClock) -> None:
    queue = WorkQueue(clock)
    waiting = asyncio.create_task(queue.get())
    await settle()
    assert not waiting.done(), "get blocks while the queue is empty"
    queue.shutdown()
    await until(waiting.done)
    assert isinstance(waiting.exception(), QueueShutDown)


def test_a_controller_needs_at_least_one_worker(clock: FakeClock) -> None:
    with pytest.raises(ValueError):
        Controller("vms", Script(clock), WorkQueue(clock), workers=0)


# --- the fake clock itself --------------------------------------------------------------------


async def test_fake_clock_sleep_ends_when_time_reaches_its_deadline_and_not_before(clock: FakeClock) -> None:
    order: list[str] = []

    async def nap(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        order.append(name)

    naps = [asyncio.create_task(nap("long", 2.0)), asyncio.create_task(nap("short", 1.0))]
    await until(lambda: clock.sleepers == 2)
    assert clock.next_deadline() == 1001.0
    clock.advance(0.999)
    await settle()
    assert order == []
    clock.advance(5.0)
    await asyncio.gather(*naps)
    assert order == ["short", "long"]
    assert clock.now() == pytest.approx(1005.999)
    with pytest.raises(ValueError):
        clock.advance(-1.0)
