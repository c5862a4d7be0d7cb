"""Write and query throughput of 1, 2 and 4 Kizuna processes on one PostgreSQL database.

In one run: loads ``--entities`` street lights and traffic observations (as ``bench/queries.py``
does) through one server, then for each N of ``--processes`` starts ``kizuna serve --workers N``
on the same database (uvicorn's workers share one listening socket, as behind one port in a
deployment), warms it up, and drives it with the same client load for each operation:

- GET /health (the HTTP stack alone: how far the processes scale before the store is involved),
- POST /ngsi-ld/v1/entities (a new 15-attribute street light each time),
- PATCH /ngsi-ld/v1/entities/{id}/attrs (two attributes of a random loaded street light),
- GET /ngsi-ld/v1/entities?type=TrafficFlowObserved&q=intensity==a..a+200;averageVehicleSpeed<20,
- GET /ngsi-ld/v1/entities/{id} (a random loaded street light).

It prints req/s and p50 per N and the ratio of req/s to the first N (1 by default). The load
generator runs on the same host, in ``--clients`` processes: on a machine with few cores the
clients take a large share of the CPU, so the ratios are capped well below N (the script says so
with the core count). ``--processes 1,2,4,1`` measures N=1 again at the end, to see how much the
machine drifted during the run.

    .venv/bin/python bench/scale_out.py --store postgresql --processes 1,2,4 --seconds 10
"""

from __future__ import annotations

import argparse
import os
import random

from _load import Call, Maker, Phase, run_phase, warm_up
from _server import add_store_option, backing_store, machine, scratch, serve
from entities import create, health
from queries import BASE, by_id, load, q_range


def patch(rng: random.Random, serial: str, total: int) -> Call:
    entity_id = f"urn:ngsi-ld:Streetlight:dui-{rng.randrange(total // 2):06d}"
    body = {
        "powerState": {"type": "Property", "value": rng.choice(["on", "off"])},
        "illuminanceLevel": {"type": "Property", "value": round(rng.random(), 2)},
    }
    return Call("PATCH", f"{BASE}/entities/{entity_id}/attrs", 204, body=body)


OPERATIONS: dict[str, Maker] = {
    "GET /health": health,
    "POST /entities": create,
    "PATCH /entities/{id}/attrs": patch,
    "GET /entities?type&q": q_range,
    "GET /entities/{id}": by_id,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--processes", default="1,2,4", help="server processes to compare, in order (default 1,2,4)")
    add("--entities", type=int, default=20_000, help="entities loaded first (default 20000)")
    add("--seconds", type=float, default=10.0, help="duration of each operation (default 10)")
    add("--concurrency", type=int, default=48, help="concurrent requests in flight (default 48)")
    add("--clients", type=int, default=2, help="client processes sharing that load (default 2)")
    add_store_option(parser)
    parser.set_defaults(store="postgresql")
    args = parser.parse_args()
    counts = [int(n) for n in args.processes.split(",")]
    if (
        min(counts) < 1
        or args.entities < 200
        or args.seconds <= 0
        or args.concurrency < 1
        or args.clients < 1
    ):
        parser.error(
            "process counts, --seconds, --concurrency and --clients must be positive, --entities >= 200"
        )

    runs: list[tuple[int, dict[str, Phase]]] = []
    with scratch("kizuna-bench-s-") as tmp, backing_store(args.store, tmp) as store:
        with serve(store, tmp) as port:
            took = load(port, args.entities)
        store.analyze()
        for n in counts:
            with serve(store, tmp, workers=n) as port:
                for make, arg in ((create, None), (patch, args.entities), (q_range, args.entities)):
                    warm_up(make, arg, port, requests=25 * n)
                results: dict[str, Phase] = {}
                for name, make in OPERATIONS.items():
                    results[name] = run_phase(
                        make, args.entities, port, args.seconds, args.concurrency, args.clients
                    )
                runs.append((n, results))
        where = machine()

    print(
        f"kizuna scale-out bench on {store.description}: {args.entities} entities loaded first in "
        f"{took:.0f} s; {args.seconds:g} s per operation and process count, {args.concurrency} concurrent "
        f"requests from {args.clients} client processes; {where}"
    )
    cores = os.cpu_count() or 1
    if cores < 2 * max(counts):
        print(
            f"WARNING: {cores} cores for up to {max(counts)} server processes and {args.clients} client "
            "processes on the same host: the ratios are capped by the cores the clients take, they are "
            "not what the processes would give on a machine of their own"
        )
    print_table(runs)


def print_table(runs: list[tuple[int, dict[str, Phase]]]) -> None:
    """One row per operation: req/s, p50 and the req/s ratio to the first run, for each run."""
    first = runs[0][1]
    head = f"{'operation':<28}" + "".join(
        f" | {f'N={n} req/s':>12} {'p50 ms':>7} {'ratio':>5}" for n, _ in runs
    )
    print(head)
    for name in first:
        cells = []
        for _, results in runs:
            r = results[name]
            ratio = r.rate / first[name].rate if first[name].rate else float("nan")
            cells.append(f" | {r.rate:>12.0f} {r.p50:>7.1f} {ratio:>5.2f}")
        print(f"{name:<28}" + "".join(cells))
    for n, results in runs:
        for name, r in results.items():
            if r.errors:
                print(f"N={n} {name}: {r.errors} errors of {r.requests}, first: {r.first_error}")


if __name__ == "__main__":
    main()
