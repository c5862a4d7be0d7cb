"""Query latency of a real Kizuna node holding 100,000 entities over a Duisburg-sized box.

Starts ``kizuna serve`` (as ``bench/entities.py`` does) with a fresh store (``--store``: SQLite
by default, or PostgreSQL), loads street lights and traffic flow observations spread over
6.68-6.83 E, 51.33-51.53 N through ``POST /entityOperations/create`` in chunks of 1,000, then runs
each query for a fixed time with concurrent keep-alive clients (in this process) and prints
p50/p95 latency, queries/s and the ratio of each query's p50 and queries/s to retrieve-by-id in
the same run.

    .venv/bin/python bench/queries.py --entities 100000 --seconds 5 --concurrency 8 [--store postgresql]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from typing import Any

import httpx

from _load import Call, Maker, run_phase
from _server import add_store_option, backing_store, machine, scratch, serve

BASE = "/ngsi-ld/v1"
WEST, EAST, SOUTH, NORTH = 6.68, 6.83, 51.33, 51.53
# Duisburg-Mitte, roughly: a district polygon of about 2.5 km x 2.2 km.
DISTRICT = [
    [[6.750, 51.420], [6.785, 51.420], [6.790, 51.435], [6.770, 51.440], [6.750, 51.438], [6.750, 51.420]]
]
ROW = "{:<32} {:>8} {:>6} {:>7} {:>8} {:>8} {:>7} {:>10} {:>10}"


def prop(value: Any, **extra: Any) -> dict[str, Any]:
    return {"type": "Property", "value": value, **extra}


def point(rng: random.Random) -> dict[str, Any]:
    lon, lat = rng.uniform(WEST, EAST), rng.uniform(SOUTH, NORTH)
    return {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [round(lon, 6), round(lat, 6)]}}


def streetlight(n: int, rng: random.Random) -> dict[str, Any]:
    return {
        "id": f"urn:ngsi-ld:Streetlight:dui-{n:06d}",
        "type": "Streetlight",
        "location": point(rng),
        "status": prop(rng.choice(["ok", "ok", "ok", "defectiveLamp", "columnIssue", "brokenLantern"])),
        "powerState": prop(rng.choice(["on", "off"])),
        "lanternHeight": prop(rng.choice([6, 8, 10, 12]), unitCode="MTR"),
        "illuminanceLevel": prop(round(rng.random(), 2)),
        "circuit": prop(f"C-{n % 40}"),
        "refStreetlightGroup": {"type": "Relationship", "object": f"urn:ngsi-ld:StreetlightGroup:g{n % 500}"},
    }


def traffic(n: int, rng: random.Random) -> dict[str, Any]:
    return {
        "id": f"urn:ngsi-ld:TrafficFlowObserved:dui-{n:06d}",
        "type": "TrafficFlowObserved",
        "location": point(rng),
        "intensity": prop(rng.randint(0, 2000), observedAt="2026-11-22T08:00:00Z"),
        "averageVehicleSpeed": prop(round(rng.uniform(5, 70), 1)),
        "occupancy": prop(round(rng.random(), 2)),
        "laneId": prop(rng.randint(1, 4)),
        "congested": prop(rng.random() < 0.2),
    }


def load(port: int, total: int) -> float:
    """Create ``total`` entities (half street lights, half traffic observations); seconds taken."""
    rng = random.Random(20261122)
    start = time.perf_counter()
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120.0) as client:
        for chunk in range(0, total, 1000):
            batch = [
                streetlight(n // 2, rng) if n % 2 == 0 else traffic(n // 2, rng)
                for n in range(chunk, min(chunk + 1000, total))
            ]
            response = client.post(f"{BASE}/entityOperations/create", json=batch)
            if response.status_code != 201:
                raise SystemExit(f"bench: batch create: {response.status_code} {response.text[:200]}")
    return time.perf_counter() - start


# -- the queries (module-level ``Maker``s; ``total`` is the number of entities loaded) -------------


def by_id(rng: random.Random, serial: str, total: int) -> Call:
    return Call("GET", f"{BASE}/entities/urn:ngsi-ld:Streetlight:dui-{rng.randrange(total // 2):06d}")


def q_range(rng: random.Random, serial: str, total: int) -> Call:
    low = rng.randrange(0, 1800)
    q = f"intensity=={low}..{low + 200};averageVehicleSpeed<20"
    return Call("GET", f"{BASE}/entities", params={"type": "TrafficFlowObserved", "q": q})


def near(rng: random.Random, serial: str, total: int) -> Call:
    lon, lat = rng.uniform(WEST, EAST), rng.uniform(SOUTH, NORTH)
    params = {"type": "Streetlight", "georel": "near;maxDistance==300", "geometry": "Point"}
    return Call("GET", f"{BASE}/entities", params={**params, "coordinates": json.dumps([lon, lat])})


def within(rng: random.Random, serial: str, total: int) -> Call:
    params = {"type": "Streetlight", "georel": "within", "geometry": "Polygon", "count": "true"}
    return Call("GET", f"{BASE}/entities", params={**params, "coordinates": json.dumps(DISTRICT)})


def id_pattern(rng: random.Random, serial: str, total: int) -> Call:
    pattern = f"^urn:ngsi-ld:Streetlight:dui-{rng.randrange(total // 200):04d}[0-4]"
    return Call("GET", f"{BASE}/entities", params={"type": "Streetlight", "idPattern": pattern})


def listing(rng: random.Random, serial: str, total: int) -> Call:
    offset = str(rng.randrange(0, max(1, total // 2 - 100), 100))
    params = {"type": "Streetlight", "limit": "100", "offset": offset, "count": "true"}
    return Call("GET", f"{BASE}/entities", params=params)


QUERIES: dict[str, Maker] = {
    "retrieve by id": by_id,
    "type + q range": q_range,
    "geoQ near 300 m": near,
    "geoQ within district (count)": within,
    "idPattern (prefix)": id_pattern,
    "type listing, limit 100 (count)": listing,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entities", type=int, default=100_000, help="entities to load (default 100000)")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each query (default 5)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent requests (default 8)")
    add_store_option(parser)
    args = parser.parse_args()
    if args.entities < 200 or args.seconds <= 0 or args.concurrency < 1:
        parser.error("--entities must be at least 200, --seconds and --concurrency positive")

    with (
        scratch("kizuna-bench-q-") as tmp,
        backing_store(args.store, tmp) as store,
        serve(store, tmp) as port,
    ):
        took = load(port, args.entities)
        store.analyze()
        results = {
            name: run_phase(make, args.entities, port, args.seconds, args.concurrency)
            for name, make in QUERIES.items()
        }
        where = machine()

    print(
        f"kizuna query bench on {store.description}: {args.entities} entities loaded in {took:.1f} s "
        f"({args.entities / took:.0f}/s, batches of 1,000); {args.seconds:g} s per query, "
        f"{args.concurrency} concurrent requests, 1 server worker, {where}"
    )
    base = results["retrieve by id"]
    head = ("query", "requests", "errors", "q/s", "p50 ms", "p95 ms", "results", "q/s ratio", "p50 ratio")
    print(ROW.format(*head))
    for name, r in results.items():
        print(
            ROW.format(
                name,
                r.requests,
                r.errors,
                f"{r.rate:.0f}",
                f"{r.p50:.2f}",
                f"{r.p95:.2f}",
                f"{r.results:.1f}",
                f"{r.rate / base.rate:.2f}",
                f"{r.p50 / base.p50:.2f}",
            )
        )
        if r.errors:
            print(f"  first error: {r.first_error}")


if __name__ == "__main__":
    main()
