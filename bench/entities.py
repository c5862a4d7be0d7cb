"""Throughput of a real Kizuna node: GET /health, POST /entities, GET /entities/{id}.

Starts ``kizuna serve`` on a free loopback port with a fresh store (``--store``: a SQLite temp
file by default, or PostgreSQL), waits for /health, then runs each operation for a fixed time with
many concurrent HTTP/1.1 keep-alive clients and prints requests, req/s, p50 and p95 latency, and
the ratio of req/s to GET /health (the cost of the HTTP stack alone). The server is stopped at the
end, whatever happens.

    .venv/bin/python bench/entities.py --seconds 10 --concurrency 48 --workers 1 --clients 2 \
        [--rounds 1] [--store sqlite|postgresql|postgresql://user@host:port/db]

Read the numbers with the machine in mind: the load generator runs on the same host and shares
its CPU cores with the server, so on a small machine (e.g. 2 cores) httpx's own per-request cost
is part of what is measured and the absolute req/s are a floor. ``--clients N`` spreads the load
over N client processes; ``--workers N`` is passed to the server.
"""

from __future__ import annotations

import argparse
import random
from typing import Any

from _city import sdm_streetlight
from _load import Call, Phase, merge, run_phase, warm_up
from _server import add_store_option, backing_store, machine, scratch, serve

BASE = "/ngsi-ld/v1"
ROW = "{:<20} {:>9} {:>7} {:>9} {:>8} {:>8} {:>10}"


def streetlight(entity_id: str, n: int) -> dict[str, Any]:
    return sdm_streetlight(entity_id, n, (6.76 + n * 1e-6, 51.43))


# -- the requests (module-level: they are sent to the client processes) ----------------------------


def health(rng: random.Random, serial: str, arg: Any) -> Call:
    return Call("GET", "/health")


def create(rng: random.Random, serial: str, arg: Any) -> Call:
    entity_id = f"urn:ngsi-ld:Streetlight:bench-{serial}"
    body = streetlight(entity_id, rng.randrange(1_000_000))
    return Call("POST", f"{BASE}/entities", 201, body=body, created=entity_id)


def retrieve(rng: random.Random, serial: str, ids: list[str]) -> Call:
    return Call("GET", f"{BASE}/entities/{rng.choice(ids)}")


def print_table(results: dict[str, Phase], baseline: str, ratio_head: str) -> None:
    """requests, errors, req/s, p50, p95 of each phase and its req/s over ``baseline``'s."""
    base = results[baseline].rate
    print(ROW.format("operation", "requests", "errors", "req/s", "p50 ms", "p95 ms", ratio_head))
    for name, r in results.items():
        ratio = f"{r.rate / base:.2f}" if base else "-"
        print(ROW.format(name, r.requests, r.errors, f"{r.rate:.0f}", f"{r.p50:.2f}", f"{r.p95:.2f}", ratio))
    for name, r in results.items():
        if r.errors:
            print(f"first error of {name}: {r.first_error}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each operation (default 10)")
    parser.add_argument(
        "--concurrency", type=int, default=48, help="concurrent requests in flight (default 48)"
    )
    parser.add_argument(
        "--clients", type=int, default=2, help="client processes sharing that load (default 2)"
    )
    parser.add_argument("--workers", type=int, default=1, help="server worker processes (default 1)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the three operations this many times in turn, --seconds each time, and merge "
        "(on a busy machine: bursts of other load then weigh on all three alike; default 1)",
    )
    add_store_option(parser)
    args = parser.parse_args()
    if min(args.seconds, args.concurrency, args.clients, args.workers, args.rounds) <= 0:
        parser.error("--seconds, --concurrency, --clients, --workers and --rounds must be positive")

    def phase(make: Any, arg: Any = None) -> Phase:
        return run_phase(make, arg, port, args.seconds, args.concurrency, args.clients)

    with (
        scratch("kizuna-bench-") as tmp,
        backing_store(args.store, tmp) as store,
        serve(store, tmp, args.workers) as port,
    ):
        warm_up(create, None, port)
        rounds: dict[str, list[Phase]] = {"GET /health": [], "POST /entities": [], "GET /entities/{id}": []}
        ids: list[str] = []
        for _ in range(args.rounds):
            rounds["GET /health"].append(phase(health))
            rounds["POST /entities"].append(phase(create))
            ids += rounds["POST /entities"][-1].created
            if not ids:
                raise SystemExit(f"bench: no entity was created: {rounds['POST /entities'][-1].first_error}")
            rounds["GET /entities/{id}"].append(phase(retrieve, ids))
        where = machine()

    print(
        f"kizuna bench on {store.description}: {args.rounds} x {args.seconds:g} s per operation, "
        f"{args.concurrency} concurrent requests in {args.clients} client process(es), {args.workers} "
        "server worker(s), "
        f"{where}"
    )
    print_table({name: merge(phases) for name, phases in rounds.items()}, "GET /health", "vs health")
    if args.rounds > 1:
        health_rates = [p.rate for p in rounds["GET /health"]]
        for name in ("POST /entities", "GET /entities/{id}"):
            each = " ".join(f"{p.rate / h:.2f}" for p, h in zip(rounds[name], health_rates, strict=True))
            print(f"{name} vs health, round by round: {each}")


if __name__ == "__main__":
    main()
