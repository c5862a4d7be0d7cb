"""The simulator's only contact with the world: it writes the model's changes to a node through
the public NGSI-LD API, paced by a clock that runs ``speed`` times faster than the wall's.

Creation is a batch upsert; later changes are batch updates of the changed attributes only,
and entities born during the run (accidents) are upserted. Every ``interval`` real seconds the
model is advanced to the simulated now and what changed since is written, each entity at most
once, so a fast clock coalesces updates instead of falling behind. A node slower than the
clock makes the clock slip: one tick advances the model at most ``MAX_TICK_INTERVALS``
intervals' worth of simulated time. With ``lockstep`` the clock follows the writes instead: each
tick advances one interval of simulated time and the next begins when its writes are done, so
the history a run leaves depends on the seed alone, not on the machine. 429 and 503 answers are
retried with back-off; anything else the node refuses is counted, shown and makes the run fail.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TextIO

import httpx
import orjson

from kizuna.client import NodeError, Target, check, post
from kizuna.sim.city import STEP, City
from kizuna.sim.ngsi import Entity, iso

API = "/ngsi-ld/v1/entityOperations"
MAX_TICK_INTERVALS = 10
"""At most this many intervals of simulated time per tick. After a write that took minutes (the
city's dusk, 45,000 lights switched on, on a slow node) the next tick would otherwise step the
model minute by minute through hours of simulated time, in Python, before writing anything,
and the node would sit idle while the simulator catches up with a clock it cannot keep."""


@dataclass(slots=True)
class Progress:
    entities: int = 0
    updates: int = 0
    errors: int = 0
    first_error: str = ""


class Driver:
    def __init__(
        self,
        city: City,
        target: Target,
        speed: float,
        duration: timedelta | None,
        interval: float = 1.0,
        out: TextIO = sys.stderr,
        lockstep: bool = False,
    ) -> None:
        self.city = city
        self.target = target
        self.speed = speed
        self.end = None if duration is None else city.now + duration
        self.interval = interval
        self.lockstep = lockstep
        self.out = out
        self.progress = Progress()
        self.known: set[str] = set()
        self.real_start = self.shown = time.monotonic()  # reset once the city is created

    async def run(self) -> Progress:
        """Create the city, then keep it up to date until the simulated end (or forever)."""
        async with self.target.client() as client:
            await check(client, self.target)
            created = time.monotonic()
            initial = self.city.entities()
            await self._write(client, "upsert", initial)
            self.known.update(e["id"] for e in initial)
            self.progress.entities = len(self.known)
            # At city scale the first upsert takes a while: say what it cost, once, apart from
            # the running figures (bench/city.py reads it).
            self.out.write(
                f"kizuna simulate: created {len(initial)} entities in {time.monotonic() - created:.1f} s\n"
            )
            self.real_start, sim_start = time.monotonic(), self.city.now
            self.shown = time.monotonic()
            while True:
                tick = time.monotonic()
                if self.lockstep:  # one interval of simulated time per tick (a model step at least)
                    to = self.city.now + max(timedelta(seconds=self.interval * self.speed), STEP)
                else:
                    to = sim_start + timedelta(seconds=(tick - self.real_start) * self.speed)
                    furthest = self.city.now + timedelta(
                        seconds=MAX_TICK_INTERVALS * self.interval * self.speed
                    )
                    if to > furthest:  # the clock slips by what the node could not keep up with
                        self.real_start += (to - furthest).total_seconds() / self.speed
                        to = furthest
                if self.end is not None:
                    to = min(to, self.end)
                changes = self.city.advance(to)
                fresh = {i for i in changes if i not in self.known}
                await self._write(client, "upsert?options=update", [changes[i] for i in fresh])
                await self._write(client, "update", [e for i, e in changes.items() if i not in fresh])
                self.known |= fresh
                self.progress.entities = len(self.known)
                if self.end is not None and self.city.now + timedelta(minutes=1) > self.end:
                    break
                if not self.lockstep:
                    await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - tick)))
            self._show()
            self.out.write("\n")
        return self.progress

    async def _write(self, client: httpx.AsyncClient, operation: str, entities: list[Entity]) -> None:
        for chunk in _chunks(entities, self.target.batch_size):
            answer = await post(client, f"{API}/{operation}", orjson.dumps(chunk))
            if operation != "upsert":
                # Counted and shown per batch, not per tick: at city scale one tick (dusk, 45,000
                # lights) takes many seconds, and the progress line should not freeze meanwhile.
                self.progress.updates += len(chunk)
                if time.monotonic() - self.shown >= 2:
                    self._show()
                    self.shown = time.monotonic()
            if answer.status_code in (200, 201, 204):
                continue
            if answer.status_code == 207:
                errors = answer.json().get("errors", [])
                self._refused(len(errors), orjson.dumps(errors[:1]).decode())
                continue
            if answer.status_code in (401, 403):
                raise NodeError(f"the node refuses the simulator ({answer.status_code}): {answer.text[:300]}")
            self._refused(len(chunk), f"{answer.status_code} {answer.text[:300]}")

    def _refused(self, count: int, detail: str) -> None:
        self.progress.errors += count
        if not self.progress.first_error:
            self.progress.first_error = detail
            self.out.write(f"\nkizuna simulate: the node refused a write: {detail}\n")

    def _show(self) -> None:
        elapsed = max(time.monotonic() - self.real_start, 1e-9)
        p = self.progress
        self.out.write(
            f"\r{iso(self.city.now)}  entities {p.entities}  updates {p.updates}"
            f" ({p.updates / elapsed:.0f}/s)  errors {p.errors}   "
        )
        self.out.flush()


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for first in range(0, len(items), size):
        yield items[first : first + size]
