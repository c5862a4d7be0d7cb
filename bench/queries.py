"""Query latency of a real Kizuna node holding 100,000 entities over a Duisburg-sized box.

Starts ``kizuna serve`` (as ``bench/entities.py`` does) with a fresh SQLite store, loads street
lights and traffic flow observations spread over 6.68-6.83 E, 51.33-51.53 N through
``POST /entityOperations/create`` in chunks of 1,000, then runs each query for a fixed time with
concurrent keep-alive clients and prints p50/p95 latency, queries/s and the ratio of each
query's p50 and queries/s to retrieve-by-id in the same run.

    .venv/bin/python bench/queries.py --entities 100000 --seconds 5 --concurrency 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from entities import free_port, start_server, stop_server, wait_healthy

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


def queries(total: int) -> dict[str, Callable[[random.Random], tuple[str, dict[str, str]]]]:
    half = total // 2

    def by_id(rng: random.Random) -> tuple[str, dict[str, str]]:
        return f"{BASE}/entities/urn:ngsi-ld:Streetlight:dui-{rng.randrange(half):06d}", {}

    def q_range(rng: random.Random) -> tuple[str, dict[str, str]]:
        low = rng.randrange(0, 1800)
        return f"{BASE}/entities", {
            "type": "TrafficFlowObserved",
            "q": f"intensity=={low}..{low + 200};averageVehicleSpeed<20",
        }

    def near(rng: random.Random) -> tuple[str, dict[str, str]]:
        lon, lat = rng.uniform(WEST, EAST), rng.uniform(SOUTH, NORTH)
        return f"{BASE}/entities", {
            "type": "Streetlight",
            "georel": "near;maxDistance==300",
            "geometry": "Point",
            "coordinates": json.dumps([lon, lat]),
        }

    def within(rng: random.Random) -> tuple[str, dict[str, str]]:
        return f"{BASE}/entities", {
            "type": "Streetlight",
            "georel": "within",
            "geometry": "Polygon",
            "coordinates": json.dumps(DISTRICT),
            "count": "true",
        }

    def id_pattern(rng: random.Random) -> tuple[str, dict[str, str]]:
        return f"{BASE}/entities", {
            "type": "Streetlight",
            "idPattern": f"^urn:ngsi-ld:Streetlight:dui-{rng.randrange(half // 100):04d}[0-4]",
        }

    def listing(rng: random.Random) -> tuple[str, dict[str, str]]:
        return f"{BASE}/entities", {
            "type": "Streetlight",
            "limit": "100",
            "offset": str(rng.randrange(0, max(1, half - 100), 100)),
            "count": "true",
        }

    return {
        "retrieve by id": by_id,
        "type + q range": q_range,
        "geoQ near 300 m": near,
        "geoQ within district (count)": within,
        "idPattern (prefix)": id_pattern,
        "type listing, limit 100 (count)": listing,
    }


async def run_query(
    port: int, make: Callable[[random.Random], tuple[str, dict[str, str]]], seconds: float, tasks: int
) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    sizes: list[int] = []

    async def worker(seed: int) -> None:
        nonlocal errors
        rng = random.Random(seed)
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
            deadline = time.perf_counter() + seconds
            while time.perf_counter() < deadline:
                path, params = make(rng)
                start = time.perf_counter()
                response = await client.get(path, params=params)
                latencies.append(time.perf_counter() - start)
                if response.status_code != 200:
                    errors += 1
                else:
                    body = response.json()
                    sizes.append(len(body) if isinstance(body, list) else 1)

    await asyncio.gather(*(worker(seed) for seed in range(tasks)))
    latencies.sort()
    return {
        "requests": len(latencies),
        "errors": errors,
        "rate": len(latencies) / seconds,
        "p50": 1000 * latencies[len(latencies) // 2],
        "p95": 1000 * latencies[int(len(latencies) * 0.95)],
        "results": sum(sizes) / len(sizes) if sizes else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entities", type=int, default=100_000, help="entities to load (default 100000)")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each query (default 5)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent requests (default 8)")
    args = parser.parse_args()
    if args.entities < 2 or args.seconds <= 0 or args.concurrency < 1:
        parser.error("--entities must be at least 2, --seconds and --concurrency positive")

    tmp = Path(tempfile.mkdtemp(prefix="kizuna-bench-q-"))
    port = free_port()
    server = start_server(port, f"sqlite:///{tmp}/bench.db", 1, tmp / "server.log")
    try:
        wait_healthy(port, server)
        took = load(port, args.entities)
        results = {
            name: asyncio.run(run_query(port, make, args.seconds, args.concurrency))
            for name, make in queries(args.entities).items()
        }
    except BaseException:
        sys.stderr.write("bench: server log:\n" + (tmp / "server.log").read_text(errors="replace")[-3000:])
        raise
    finally:
        stop_server(server)
        shutil.rmtree(tmp, ignore_errors=True)

    print(
        f"kizuna query bench: {args.entities} entities loaded in {took:.1f} s "
        f"({args.entities / took:.0f}/s, batches of 1,000); {args.seconds:g} s per query, "
        f"{args.concurrency} concurrent requests, 1 server worker, {os.cpu_count()} CPU cores "
        f"shared by client and server ({platform.processor() or platform.machine()})"
    )
    base = results["retrieve by id"]
    head = ("query", "requests", "errors", "q/s", "p50 ms", "p95 ms", "results", "q/s ratio", "p50 ratio")
    print(ROW.format(*head))
    for name, r in results.items():
        print(
            ROW.format(
                name,
                r["requests"],
                r["errors"],
                f"{r['rate']:.0f}",
                f"{r['p50']:.2f}",
                f"{r['p95']:.2f}",
                f"{r['results']:.1f}",
                f"{r['rate'] / base['rate']:.2f}",
                f"{r['p50'] / base['p50']:.2f}",
            )
        )


if __name__ == "__main__":
    main()
