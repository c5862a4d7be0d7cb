"""What counting costs: req/s of ``GET /health`` and ``GET /entities/{id}`` with ``--metrics on``
and ``--metrics off``, in one run.

For each round a node with metrics off and one with metrics on are started, one after the other,
on the same store file (loaded once with ``--entities`` street lights), and wrk measures both
routes on each (as bench/throughput.py does). Rounds alternate the order, so that a machine
that slows down during the run does not favour one mode; the median round of each mode is
compared (on a shared machine throughput drifts by tens of percent within minutes). With
``--workers 2`` the multiprocess files are in the figures.

The same drift hides a cost of a few microseconds, so the bench also times, in this process,
:class:`~kizuna.middleware.metrics.RequestMetrics` around an endpoint that does nothing against
that endpoint alone (interleaved, median of 7): the microseconds counting adds to each request.

    .venv/bin/python bench/metrics.py [--store sqlite] [--workers 1] [--rounds 5] \\
        [--entities 5000] [--seconds 5] [--connections 32]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from typing import Any

from starlette.routing import Route

import _wrk
from _city import API
from _server import add_store_option, backing_store, machine, scratch, serve
from kizuna.middleware.metrics import RequestMetrics
from throughput import GET_ONE_OF, light_id, lines, load

ROW = "{:<22} {:>12} {:>12} {:>8}"


def per_request_cost(calls: int = 100_000, rounds: int = 7) -> float:
    """Microseconds RequestMetrics adds to one request, on an endpoint that does nothing."""

    async def endpoint(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    route = Route("/health", endpoint)

    async def routed(scope: Any, receive: Any, send: Any) -> None:
        scope["route"] = route  # as the router leaves it
        await endpoint(scope, receive, send)

    counted = RequestMetrics(routed, [route])

    async def nothing(*_: Any) -> Any:
        return {}

    async def run(app: Any) -> float:
        started = time.perf_counter()
        for _ in range(calls):
            await app({"type": "http", "method": "GET", "path": "/health"}, nothing, nothing)
        return (time.perf_counter() - started) / calls * 1e6

    async def rounds_of() -> list[float]:
        return [await run(counted) - await run(routed) for _ in range(rounds)]

    return statistics.median(asyncio.run(rounds_of()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_store_option(parser)
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--rounds", type=int, default=5, help="off/on pairs measured (default 5)")
    parser.add_argument("--entities", type=int, default=5000, help="street lights loaded (default 5000)")
    _wrk.add_options(parser, seconds=5.0, connections=32)
    args = parser.parse_args()
    _wrk.require()
    print(
        f"kizuna metrics bench: wrk, 1 thread, {args.connections} connections, {args.seconds:g} s per"
        f" route, {args.rounds} rounds; {args.entities} street lights; {args.workers} worker(s); {machine()}"
    )
    rates: dict[tuple[str, str], list[float]] = {}
    with scratch("kizuna-bench-metrics-") as tmp, backing_store(args.store, tmp) as store:
        pick = random.Random(7)
        ids = [f"{API}/entities/{light_id(n)}" for n in pick.sample(range(args.entities), args.entities)]
        routes = [
            ("GET /health", lines(tmp, "health", ["/health"])),
            ("GET /entities/{id}", lines(tmp, "ids", ids)),
        ]
        loaded = False
        for round_ in range(args.rounds):
            for mode in ("off", "on") if round_ % 2 == 0 else ("on", "off"):
                with serve(store, tmp, workers=args.workers, extra=["--metrics", mode]) as port:
                    if not loaded:
                        load(port, args.entities)
                        store.analyze()
                        loaded = True
                    for name, env in routes:
                        m = _wrk.measure(port, GET_ONE_OF, args.seconds, args.connections, tmp, env)
                        print(f"round {round_ + 1} metrics {mode:<3} {name:<20} {m.rate:>9.0f} req/s")
                        rates.setdefault((name, mode), []).append(m.rate)
    print(f"\nRequestMetrics adds {per_request_cost():.2f} µs to each request (in-process, median of 7)")
    print(f"\n{store.description}")
    print(ROW.format("route", "off req/s", "on req/s", "on/off"))
    for name, _ in routes:
        off, on = statistics.median(rates[(name, "off")]), statistics.median(rates[(name, "on")])
        print(ROW.format(name, f"{off:.0f}", f"{on:.0f}", f"{on / off:.3f}"))


if __name__ == "__main__":
    main()
