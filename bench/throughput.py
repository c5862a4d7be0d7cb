"""Throughput of a node as clients see it: wrk against ``kizuna serve``, each route a ratio to /health.

For each store (``--store``, several allowed) and each number of workers (``--workers 1,2``), a
fresh node is started on a fresh store and loaded with ``--entities`` street lights (15
attributes each, as the Smart Data Models example, spread over Duisburg); then wrk (one thread,
``--connections``, ``--seconds`` each, one run) measures, one after the other:

- ``GET /health`` (the HTTP stack alone: the yardstick of the run);
- ``GET /entities/{id}`` of random lights;
- ``POST /entities`` of a new light each request;
- ``PATCH /entities/{id}/attrs`` of one attribute of random lights;
- ``GET /entities?type=Streetlight&q=powerState=="on"`` (first 20, a q on the index);
- ``GET /entities?type=Streetlight&georel=near;maxDistance==200`` around random points (first 20).

Each route's req/s is printed with its p50 and p99 and its ratio to ``/health`` in the same run,
so that figures from runs on different days or machines can be compared by their ratios.
wrk and the node share the machine's cores: the absolute figures are what this machine gives
with the load generator on it.

    .venv/bin/python bench/throughput.py [--store sqlite --store postgresql] [--workers 1,2] \\
        [--entities 20000] [--seconds 8] [--connections 32]
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson

import _wrk
from _city import API, JSON, sdm_streetlight
from _server import add_stores_option, backing_store, machine, scratch, serve, stores_of

ROW = "{:<42} {:>9} {:>8} {:>8} {:>7}"
ON = 'powerState=="on"'
WEST, EAST, SOUTH, NORTH = 6.70, 6.82, 51.38, 51.50  # Duisburg, roughly

GET_ONE_OF = """
local paths = {}
for line in io.lines(os.getenv("PATHS")) do paths[#paths + 1] = line end
request = function() return wrk.format("GET", paths[math.random(#paths)]) end
"""
PATCH_ONE_OF = """
local paths = {}
for line in io.lines(os.getenv("PATHS")) do paths[#paths + 1] = line end
local body = '{"powerState":{"type":"Property","value":"off"}}'
local headers = {["Content-Type"] = "application/json"}
request = function()
  return wrk.format("PATCH", paths[math.random(#paths)] .. "/attrs", headers, body)
end
"""
CREATE = """
local n = 0
local template = io.open(os.getenv("BODY")):read("a")
request = function()
  n = n + 1
  local body = template:gsub("NEW", os.getenv("PREFIX") .. "-" .. n, 1)
  return wrk.format("POST", "/ngsi-ld/v1/entities", {["Content-Type"] = "application/json"}, body)
end
"""


def streetlight(entity_id: str, n: int) -> dict[str, Any]:
    """The Smart Data Models street light, on a grid over Duisburg, every other one on."""
    rows = 150
    lon = WEST + (EAST - WEST) * (n % rows) / rows
    lat = SOUTH + (NORTH - SOUTH) * ((n // rows) % rows) / rows
    return sdm_streetlight(entity_id, n, (lon, lat), "on" if n % 2 else "off")


def light_id(n: int) -> str:
    return f"urn:ngsi-ld:Streetlight:duisburg-{n:07d}"


def load(port: int, count: int) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300.0) as client:
        for first in range(0, count, 1000):
            batch = [streetlight(light_id(n), n) for n in range(first, min(first + 1000, count))]
            answer = client.post(f"{API}/entityOperations/upsert", content=orjson.dumps(batch), headers=JSON)
            if answer.status_code not in (201, 204):
                raise SystemExit(f"bench: load: {answer.status_code} {answer.text[:300]}")


def lines(tmp: Path, name: str, paths: list[str]) -> dict[str, str]:
    """The environment of a script that picks from ``paths``: a file of them, one per line."""
    file = tmp / f"{name}.txt"
    file.write_text("".join(f"{path}\n" for path in paths))
    return {"PATHS": str(file)}


def requests(tmp: Path, entities: int, seed: int) -> list[tuple[str, str, dict[str, str]]]:
    """(name, wrk script, its environment) of each route, /health first."""
    pick = random.Random(seed)
    ids = [f"{API}/entities/{light_id(n)}" for n in pick.sample(range(entities), min(entities, 5000))]
    near = [
        f"{API}/entities?type=Streetlight&georel={quote('near;maxDistance==200')}&geometry=Point"
        f"&coordinates={quote(f'[{pick.uniform(WEST, EAST):.5f},{pick.uniform(SOUTH, NORTH):.5f}]')}&limit=20"
        for _ in range(1000)
    ]
    body = tmp / "create.json"
    body.write_bytes(orjson.dumps(streetlight("urn:ngsi-ld:Streetlight:NEW", 7)))
    return [
        ("GET /health", GET_ONE_OF, lines(tmp, "health", ["/health"])),
        ("GET /entities/{id}", GET_ONE_OF, lines(tmp, "ids", ids)),
        ("POST /entities", CREATE, {"BODY": str(body)}),
        ("PATCH /entities/{id}/attrs", PATCH_ONE_OF, lines(tmp, "patch", ids)),
        (
            'GET ?type=Streetlight&q=powerState=="on"',
            GET_ONE_OF,
            lines(tmp, "q", [f"{API}/entities?type=Streetlight&q={quote(ON)}&limit=20"]),
        ),
        ("GET ?type=Streetlight&georel=near", GET_ONE_OF, lines(tmp, "near", near)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_stores_option(parser)
    parser.add_argument("--workers", default="1", help="comma-separated worker counts (default 1)")
    parser.add_argument("--entities", type=int, default=20_000, help="street lights loaded (default 20000)")
    _wrk.add_options(parser, seconds=8.0, connections=32)
    parser.add_argument("--seed", type=int, default=7, help="seed of the random ids and points")
    parser.add_argument("--extra", default="", help="more `kizuna serve` flags, e.g. '--http granian'")
    args = parser.parse_args()
    _wrk.require()
    workers = [int(w) for w in args.workers.split(",")]
    print(
        f"kizuna throughput bench: wrk, 1 thread, {args.connections} connections, {args.seconds:g} s"
        f" per route, one run each; {args.entities} street lights; {machine()}"
    )
    for spec in stores_of(args):
        for count in workers:
            with scratch("kizuna-bench-throughput-") as tmp, backing_store(spec, tmp) as store:
                routes = requests(tmp, args.entities, args.seed)
                with serve(store, tmp, workers=count, extra=args.extra.split()) as port:
                    load(port, args.entities)
                    store.analyze()
                    results = []
                    for name, script, env in routes:
                        env = {**env, "PREFIX": f"{spec}-{count}"}
                        results.append(
                            (name, _wrk.measure(port, script, args.seconds, args.connections, tmp, env))
                        )
            print(f"\n{store.description}, {count} worker{'s' if count > 1 else ''} {args.extra}".rstrip())
            print(ROW.format("route", "req/s", "p50 ms", "p99 ms", "ratio"))
            health = results[0][1].rate
            for name, m in results:
                print(
                    ROW.format(
                        name, f"{m.rate:.0f}", f"{m.p50:.2f}", f"{m.p99:.2f}", f"{m.rate / health:.2f}"
                    )
                )


if __name__ == "__main__":
    main()
