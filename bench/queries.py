"""Query latency of a real Kizuna node holding 100,000 entities over a Duisburg-sized box.

Starts ``kizuna serve`` (as ``bench/throughput.py`` does) with a fresh store (``--store``: SQLite
by default, or PostgreSQL), loads street lights and traffic flow observations spread over
6.68-6.83 E, 51.33-51.53 N through ``POST /entityOperations/create`` in chunks of 1,000, then runs
wrk (native, one thread, keep-alive connections; ``bench/_wrk.py``) on each query in turn, each
request one of 1,000 random variants, and prints req/s, p50/p99 latency and the ratio of each
query's req/s and p50 to retrieve-by-id in the same run. ``--store`` may be given more than once
(``--store sqlite --store postgresql``): each store gets its own fresh node and its own ratios.

    .venv/bin/python bench/queries.py --entities 100000 --seconds 5 --connections 8 \\
        [--store sqlite --store postgresql]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from typing import Any
from urllib.parse import quote, urlencode

import httpx

import _wrk
from _server import add_stores_option, backing_store, machine, scratch, serve, stores_of
from throughput import GET_ONE_OF, lines

BASE = "/ngsi-ld/v1"
WEST, EAST, SOUTH, NORTH = 6.68, 6.83, 51.33, 51.53
# Duisburg-Mitte, roughly: a district polygon of about 2.5 km x 2.2 km.
DISTRICT = [
    [[6.750, 51.420], [6.785, 51.420], [6.790, 51.435], [6.770, 51.440], [6.750, 51.438], [6.750, 51.420]]
]
ROW = "{:<32} {:>14} {:>8} {:>8} {:>8} {:>11} {:>10}"
PATHS = 1000  # random variants of each query, wrk picks one per request


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


# -- the queries: each a list of request paths that wrk picks from at random -----------------------


def entities_path(params: dict[str, str]) -> str:
    return f"{BASE}/entities?{urlencode(params, quote_via=quote)}"


def queries(rng: random.Random, total: int) -> dict[str, list[str]]:
    """The paths of each query, retrieve-by-id (the yardstick of the run) first; ``total`` is
    the number of entities loaded (half of them street lights)."""
    lights = total // 2
    by_id = [f"{BASE}/entities/urn:ngsi-ld:Streetlight:dui-{rng.randrange(lights):06d}" for _ in range(PATHS)]
    q_range = []
    near = []
    id_pattern = []
    listing = []
    for _ in range(PATHS):
        low = rng.randrange(0, 1800)
        q = f"intensity=={low}..{low + 200};averageVehicleSpeed<20"
        q_range.append(entities_path({"type": "TrafficFlowObserved", "q": q}))
        lon, lat = rng.uniform(WEST, EAST), rng.uniform(SOUTH, NORTH)
        geo = {"georel": "near;maxDistance==300", "geometry": "Point", "coordinates": json.dumps([lon, lat])}
        near.append(entities_path({"type": "Streetlight", **geo}))
        pattern = f"^urn:ngsi-ld:Streetlight:dui-{rng.randrange(max(1, lights // 100)):04d}[0-4]"
        id_pattern.append(entities_path({"type": "Streetlight", "idPattern": pattern}))
        offset = str(rng.randrange(0, max(1, lights - 100), 100))
        listing.append(
            entities_path({"type": "Streetlight", "limit": "100", "offset": offset, "count": "true"})
        )
    within = {"georel": "within", "geometry": "Polygon", "coordinates": json.dumps(DISTRICT), "count": "true"}
    return {
        "retrieve by id": by_id,
        "type + q range": q_range,
        "geoQ near 300 m": near,
        "geoQ within district (count)": [entities_path({"type": "Streetlight", **within})],
        "idPattern (prefix)": id_pattern,
        "type listing, limit 100 (count)": listing,
    }


def sample(port: int, path: str) -> str:
    """What one request of a query answers (entities, and the count if asked): a check that the
    query is the one meant, not part of the measurement."""
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120.0) as client:
        answer = client.get(path)
    if answer.status_code != 200:
        raise SystemExit(f"bench: {path}: {answer.status_code} {answer.text[:200]}")
    body = answer.json()
    found = str(len(body)) if isinstance(body, list) else "1"
    count = answer.headers.get("NGSILD-Results-Count")
    return found if count is None else f"{found} of {count}"


def measure(
    spec: str, entities: int, seconds: float, connections: int, seed: int
) -> tuple[str, float, list[tuple[str, str, _wrk.Measurement]]]:
    """Load a fresh node on ``spec`` and run wrk on each query: (store, load seconds, results)."""
    with scratch("kizuna-bench-q-") as tmp, backing_store(spec, tmp) as store, serve(store, tmp) as port:
        took = load(port, entities)
        store.analyze()
        results = []
        for name, paths in queries(random.Random(seed), entities).items():
            found = sample(port, paths[0])
            env = lines(tmp, f"q{len(results)}", paths)
            results.append((name, found, _wrk.measure(port, GET_ONE_OF, seconds, connections, tmp, env)))
        return store.description, took, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entities", type=int, default=100_000, help="entities to load (default 100000)")
    _wrk.add_options(parser, seconds=5.0, connections=8)
    parser.add_argument("--seed", type=int, default=20261207, help="seed of the random query values")
    add_stores_option(parser)
    args = parser.parse_args()
    if args.entities < 200 or args.seconds <= 0 or args.connections < 1:
        parser.error("--entities must be at least 200, --seconds and --connections positive")
    _wrk.require()
    print(
        f"kizuna query bench: wrk, 1 thread, {args.connections} connections, {args.seconds:g} s per query,"
        f" one run each, 1 server worker; {args.entities} entities; {machine()}"
    )
    for spec in stores_of(args):
        description, took, results = measure(spec, args.entities, args.seconds, args.connections, args.seed)
        print(
            f"\n{description}: loaded in {took:.1f} s ({args.entities / took:.0f}/s, batches of 1,000"
            " from a Python client: a load time, not a throughput figure)"
        )
        print(ROW.format("query", "answer", "req/s", "p50 ms", "p99 ms", "req/s ratio", "p50 ratio"))
        base = results[0][2]
        for name, found, m in results:
            print(
                ROW.format(
                    name,
                    found,
                    f"{m.rate:.0f}",
                    f"{m.p50:.2f}",
                    f"{m.p99:.2f}",
                    f"{m.rate / base.rate:.2f}",
                    f"{m.p50 / base.p50:.2f}",
                )
            )


if __name__ == "__main__":
    main()
