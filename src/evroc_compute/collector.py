"""How this process's cyclic garbage collector runs: seldom, and not over the stored objects.

A server (or controllers process) holds hundreds of thousands of long-lived, acyclic objects
(stored objects, informer caches) and allocates fast. With CPython's defaults the collector
ran a young pass every 700 allocations and walked the survivors again and again in the older
generations: at 10,000 VMs (bench/fleet.py) its passes took 9.3 s of the server's 80.8 s of
CPU (13,298 young, 1,169 middle and 79 full passes); with this policy, about 0.1 s.

- Young passes run every 50,000 (net) allocations of container objects instead of 700. What
  a pass walks is what is young, so fewer passes walk less in all.
- Each second whatever survived is frozen: moved out of the collector's view (gc.freeze is
  O(1); reference counting still frees frozen objects, so acyclic ones die as usual). A quiet
  process, where young passes seldom run, first collects its youngest generation, so its dead
  cycles are freed rather than frozen. A busy one does not: its young passes run several times
  a second, and collecting before every freeze cost 2 - 2.3 s at 10,000 VMs, in pauses of up
  to 49 ms.
- No full pass runs: frozen objects are never examined again, and everything else is at most
  a second old. The price: in a busy process a cycle that dies after a young pass, or is
  still young at a freeze, is never freed.
  The stored objects are acyclic; in one 5,000-VM run, freezing without collecting for 30 s
  and then unfreezing everything and collecting found no such garbage (0 of 499,949 objects).
"""

from __future__ import annotations

import asyncio
import gc

YOUNG_THRESHOLD = 50_000  # allocations between young passes (CPython's default: 700)
QUIET = 5_000  # young allocations at a freeze under which the youngest generation is collected
MIDDLE_THRESHOLD = 20  # young passes per middle pass
NO_AUTOMATIC_FULL_PASS = 1_000_000  # middle passes per full pass: never, in practice


async def keep_collections_short(freeze_every: float = 1.0) -> None:
    """Run for the life of the process (a background task)."""
    gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, NO_AUTOMATIC_FULL_PASS)
    gc.collect()
    gc.freeze()
    while True:
        await asyncio.sleep(freeze_every)
        if gc.get_count()[0] < QUIET:
            gc.collect(0)
        gc.freeze()
