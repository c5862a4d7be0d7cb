"""How long one heavy request keeps every other request waiting (the event loop it blocks).

Starts ``kizuna serve`` on a fresh store (``--store``), loads ``--entities`` Streetlights (each
with a little history), then runs each heavy request below once while a probe sends
``GET /health`` every 10 ms on its own connection, and prints how long the heavy request took
and the slowest and median /health answer during it. A node that never blocks its loop for
long answers /health within milliseconds whatever runs beside it; the figure to watch is the
slowest probe ("health max").

- ``idPattern`` ``a*a*a*a*a*a*a*a*a*a*a*a*b`` over every entity (backtracking took 2.5 s);
- the same pattern in ``q=name~=``;
- a batch upsert of ``--batch`` entities (the most ``--max-batch-entities`` allows);
- an entity with a ``--max-array-items`` array;
- a temporal ``count=true`` over every entity;
- a page of 1000 entities in keyValues.

The probe measures latency only (one request at a time); it is no throughput figure.

    .venv/bin/python bench/stalls.py --entities 20000 [--store postgresql]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Callable

import httpx
import orjson

from _city import load, streetlight
from _server import add_store_option, backing_store, machine, scratch, serve

API = "/ngsi-ld/v1"
JSON = {"Content-Type": "application/json"}
EVIL = "a*a*a*a*a*a*a*a*a*a*a*a*b"


def probe(port: int, stop: threading.Event, out: list[float]) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60.0) as client:
        while not stop.is_set():
            started = time.perf_counter()
            client.get("/health")
            out.append(time.perf_counter() - started)
            time.sleep(0.01)


def measure(
    port: int, name: str, request: Callable[[httpx.Client], httpx.Response], idle: float = 0.0
) -> float:
    """Prints one row and returns the median probe during ``request``; ``idle`` is the median
    on a node doing nothing else, against which the slowest probe is given as a ratio."""
    latencies: list[float] = []
    stop = threading.Event()
    prober = threading.Thread(target=probe, args=(port, stop, latencies))
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300.0) as client:
        prober.start()
        time.sleep(0.2)  # the probe's connection is open and answering
        before = len(latencies)
        started = time.perf_counter()
        answer = request(client)
        took = time.perf_counter() - started
        stop.set()
        prober.join()
    during = latencies[before:] or [0.0]
    ratio = f"{max(during) / idle:>9.0f}x" if idle else f"{'':>10}"
    print(
        f"{name:<44} {answer.status_code:>4} {took * 1000:>9.0f} {max(during) * 1000:>11.1f}"
        f" {statistics.median(during) * 1000:>11.1f} {ratio} {len(during):>7}"
    )
    return statistics.median(during)


def rest(client: httpx.Client) -> httpx.Response:
    """No heavy request: what /health answers while the node does nothing else."""
    time.sleep(0.5)
    return client.get("/health")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--array", type=int, default=10_000)
    add_store_option(parser)
    args = parser.parse_args()
    with scratch("kizuna-stalls") as tmp, backing_store(args.store, tmp) as store, serve(store, tmp) as port:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300.0) as client:
            load(client, args.entities)
        store.analyze()
        print(f"# {machine()}; {store.description}; {args.entities} entities")
        print(
            f"{'request':<44} {'code':>4} {'took ms':>9} {'health max':>11} {'health p50':>11}"
            f" {'max/idle':>10} {'probes':>7}"
        )
        idle = measure(port, "nothing (0.5 s idle)", rest)
        types = {"type": "Streetlight"}
        measure(
            port,
            "idPattern a*...*b over every entity",
            lambda c: c.get(f"{API}/entities", params={**types, "idPattern": EVIL, "limit": "1000"}),
            idle,
        )
        measure(
            port,
            "q=name~=a*...*b over every entity",
            lambda c: c.get(f"{API}/entities", params={**types, "q": f"name~={EVIL}", "limit": "1000"}),
            idle,
        )
        batch = [streetlight(args.entities + n) for n in range(args.batch)]
        measure(
            port,
            f"batch upsert of {args.batch} entities",
            lambda c: c.post(f"{API}/entityOperations/upsert", content=orjson.dumps(batch), headers=JSON),
            idle,
        )
        big = {
            "id": "urn:ngsi-ld:Thing:big",
            "type": "Thing",
            "readings": {"type": "Property", "value": list(range(args.array))},
        }
        measure(
            port,
            f"entity with a {args.array}-item array",
            lambda c: c.post(f"{API}/entities", content=orjson.dumps(big), headers=JSON),
            idle,
        )
        measure(
            port,
            "temporal count=true over every entity",
            lambda c: c.get(f"{API}/temporal/entities", params={**types, "count": "true", "limit": "1"}),
            idle,
        )
        measure(
            port,
            "1000 entities, keyValues",
            lambda c: c.get(f"{API}/entities", params={**types, "limit": "1000", "format": "keyValues"}),
            idle,
        )


if __name__ == "__main__":
    main()
