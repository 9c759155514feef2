"""Work done again and again: every so often, forever, a failure logged and tried next time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable


async def every(seconds: float, work: Callable[[], Awaitable[object]], log: logging.Logger,
                what: str) -> None:
    """Await `work()`, then wait `seconds`, forever; a failure is logged as `what` failing
    (on the caller's logger) and the work is done again at the next turn."""
    while True:
        try:
            await work()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed; retrying", what)
        await asyncio.sleep(seconds)
