"""The loop that keeps a store's records for a retention period and no longer (attribute
history, the entity change log): each is one ``prune(before)`` run now and then."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger("kizuna.retention")


async def prune_forever(
    prune: Callable[[float], Awaitable[int]], retention: float, what: str, *, every: float | None = None
) -> None:
    """``prune`` what is older than ``retention`` seconds, at start and then every ``every``
    seconds (by default a 24th of the retention, at least a second and at most an hour). Runs
    until cancelled; a failed round is logged (``what`` names the records) and retried at the
    next one, so that a database away for a while does not end the loop."""
    interval = every if every is not None else min(3600.0, max(retention / 24, 1.0))
    while True:
        try:
            pruned = await prune(time.time() - retention)
            if pruned:
                log.info("retention: deleted %d %s", pruned, what)
        except Exception:
            log.exception("retention: pruning %s failed", what)
        await asyncio.sleep(interval)
