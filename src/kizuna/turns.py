"""Taking turns on the event loop: long work pauses between its chunks so others can run.

``await asyncio.sleep(0)`` is not enough: it gives the loop one iteration, and a waiting
request needs several (read the socket, run the route, write the answer), so it advanced one
step per chunk and a 1,000-entity batch still held ``/health`` for 124 ms. A pause of a
millisecond lets the loop poll its sockets and run every request that is ready, each to its
next await, before the long work goes on."""

from __future__ import annotations

import asyncio

PAUSE = 0.001  # seconds; per chunk, so a 1,000-entity batch in 10 chunks waits 9 ms in all


async def let_others_run() -> None:
    await asyncio.sleep(PAUSE)
