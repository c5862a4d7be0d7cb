"""The load generator the throughput benches share: many keep-alive clients for a fixed time.

A phase runs one kind of request (``make`` draws each one) for ``seconds`` with ``concurrency``
requests in flight, spread over ``clients`` processes: the Python client costs about as much CPU
per request as the server, so one process would measure httpx rather than Kizuna. Each in-flight
request has its own client with one keep-alive connection; one httpx pool shared by dozens of
connections slows the client down sharply.

``make`` must be a module-level function (it is sent to the client processes) taking a random
generator, a string unique to this request across processes and runs (for new entity ids), and
``arg``, any picklable value the bench passes (existing ids, the dataset size, ...).
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass(frozen=True)
class Call:
    """One request to make, what it must answer, and what to remember when it succeeds."""

    method: str
    path: str
    expected: int = 200
    params: dict[str, str] | None = None
    body: Any = None
    created: str | None = None


Maker = Callable[[random.Random, str, Any], Call]


@dataclass
class Phase:
    requests: int
    errors: int
    rate: float
    p50: float
    p95: float
    results: float  # mean entities per answer (1 for a single entity), 0 if no body was a list
    created: list[str] = field(default_factory=list)
    first_error: str = ""
    latencies: list[float] = field(default_factory=list, repr=False)  # seconds, sorted
    seconds: float = 0.0


async def _client(make: Maker, arg: Any, port: int, seconds: float, tasks: int, tag: str) -> dict[str, Any]:
    latencies: list[float] = []
    sizes: list[int] = []
    created: list[str] = []
    errors: list[str] = []
    one = httpx.Limits(max_connections=1, max_keepalive_connections=1)

    async def task(number: int) -> None:
        rng = random.Random(f"{tag}-{number}")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=one, timeout=60.0) as client:
            deadline = time.perf_counter() + seconds
            serial = 0
            while time.perf_counter() < deadline:
                serial += 1
                call = make(rng, f"{tag}-{number}-{serial}", arg)
                start = time.perf_counter()
                try:
                    response = await client.request(
                        call.method, call.path, params=call.params, json=call.body
                    )
                except httpx.HTTPError as exc:  # a timeout is a failed request, not a failed bench
                    latencies.append(time.perf_counter() - start)
                    errors.append(f"{call.method} {call.path}: {exc!r}")
                    continue
                latencies.append(time.perf_counter() - start)
                if response.status_code != call.expected:
                    errors.append(f"{call.method} {call.path}: {response.status_code} {response.text[:200]}")
                    continue
                if call.created is not None:
                    created.append(call.created)
                if call.method == "GET" and response.content:
                    body = response.json()
                    sizes.append(len(body) if isinstance(body, list) else 1)

    await asyncio.gather(*(task(n) for n in range(tasks)))
    return {"latencies": latencies, "sizes": sizes, "created": created, "errors": errors}


def _client_process(make: Maker, arg: Any, port: int, seconds: float, tasks: int, tag: str) -> dict[str, Any]:
    return asyncio.run(_client(make, arg, port, seconds, tasks, tag))


def run_phase(make: Maker, arg: Any, port: int, seconds: float, concurrency: int, clients: int = 1) -> Phase:
    """Run ``make``'s requests in ``clients`` processes (or in this one if 1) and merge the results."""
    per_client = max(1, concurrency // clients)
    run = secrets.token_hex(3)  # new ids never collide with an earlier run's on a reused database
    if clients == 1:
        parts = [_client_process(make, arg, port, seconds, per_client, f"{run}c0")]
    else:
        with ProcessPoolExecutor(clients) as pool:
            futures = [
                pool.submit(_client_process, make, arg, port, seconds, per_client, f"{run}c{i}")
                for i in range(clients)
            ]
            parts = [f.result() for f in futures]
    return _phase(
        [x for p in parts for x in p["latencies"]],
        [x for p in parts for x in p["sizes"]],
        [x for p in parts for x in p["errors"]],
        [x for p in parts for x in p["created"]],
        seconds,
    )


def merge(phases: list[Phase]) -> Phase:
    """Several runs of one phase as one (rounds interleaved with other phases: a burst of load
    from elsewhere on the machine then weighs on every phase alike, not on whichever ran in it)."""
    sizes = [p.results for p in phases if p.results]
    merged = _phase(
        [x for p in phases for x in p.latencies],
        [],
        [p.first_error for p in phases if p.first_error],
        [x for p in phases for x in p.created],
        sum(p.seconds for p in phases),
    )
    merged.errors = sum(p.errors for p in phases)
    merged.results = sum(sizes) / len(sizes) if sizes else 0.0
    return merged


def _phase(
    latencies: list[float], sizes: list[int], errors: list[str], created: list[str], seconds: float
) -> Phase:
    latencies = sorted(latencies)
    return Phase(
        requests=len(latencies),
        errors=len(errors),
        rate=len(latencies) / seconds,
        p50=1000 * latencies[len(latencies) // 2] if latencies else float("nan"),
        p95=1000 * latencies[int(len(latencies) * 0.95)] if latencies else float("nan"),
        results=sum(sizes) / len(sizes) if sizes else 0.0,
        created=created,
        first_error=errors[0] if errors else "",
        latencies=latencies,
        seconds=seconds,
    )


async def _warm_up(make: Maker, arg: Any, port: int, requests: int, concurrency: int) -> None:
    async def task(number: int) -> None:
        rng = random.Random(number)
        # A new connection per request: with several server workers sharing the socket, each
        # worker gets some of them.
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60.0) as client:
            for serial in range(number, requests, concurrency):
                call = make(rng, f"warm{secrets.token_hex(3)}-{serial}", arg)
                headers = {"Connection": "close"}
                await client.request(
                    call.method, call.path, params=call.params, json=call.body, headers=headers
                )

    await asyncio.gather(*(task(n) for n in range(concurrency)))


def warm_up(make: Maker, arg: Any, port: int, requests: int = 100, concurrency: int = 4) -> None:
    """Send ``requests`` of ``make``'s at low concurrency before measuring, so that every worker
    has opened its store connections and filled its caches (the subscription cache of a write is
    filled from a second pool connection: a cold cache under more concurrent writes than the pool
    has connections stalls the PostgreSQL store until its command timeout)."""
    asyncio.run(_warm_up(make, arg, port, requests, concurrency))
