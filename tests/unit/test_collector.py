"""The collector policy: a quiet process frees its dead cycles rather than freezing them."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from evroc_compute import collector


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def restored_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


async def test_a_quiet_process_frees_a_dead_cycle_and_freezes_what_lives(
        restored_collector: None) -> None:
    task = asyncio.create_task(collector.keep_collections_short(freeze_every=0.05))
    await asyncio.sleep(0.01)
    assert gc.get_threshold()[0] == collector.YOUNG_THRESHOLD
    dead, kept = Node(), Node()
    dead.other, kept.other = Node(), Node()
    dead.other.other, kept.other.other = dead, kept  # two cycles; one is dropped
    died = weakref.ref(dead)
    del dead
    assert died() is not None  # a cycle: reference counting alone does not free it
    await asyncio.sleep(0.2)  # a few freezes
    task.cancel()
    assert died() is None
    assert gc.get_freeze_count() > 0
    assert kept.other is not None and kept.other.other is kept
