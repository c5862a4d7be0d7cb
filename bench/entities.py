"""Throughput of a real Kizuna node: GET /health, POST /entities, GET /entities/{id}.

Starts ``kizuna serve`` on a free loopback port with a fresh SQLite store, waits for /health, then
runs each operation for a fixed time with many concurrent HTTP/1.1 keep-alive clients and prints
requests, req/s, p50 and p95 latency, and the ratio of req/s to GET /health (the cost of the HTTP
stack alone). The server is stopped at the end, whatever happens.

    .venv/bin/python bench/entities.py --seconds 10 --concurrency 48 --workers 1 --clients 2

Read the numbers with the machine in mind: the load generator runs on the same host and shares
its CPU cores with the server, so on a small machine (e.g. 2 cores) httpx's own per-request cost
is part of what is measured and the absolute req/s are a floor. ``--clients N`` spreads the load
over N client processes; ``--workers N`` is passed to the server.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import httpx

BASE = "/ngsi-ld/v1"
ROW = "{:<20} {:>9} {:>7} {:>9} {:>8} {:>8} {:>10}"


def streetlight(entity_id: str, n: int) -> dict[str, Any]:
    """A Streetlight with 15 attributes, like the Smart Data Models example."""

    def prop(value: Any, **extra: str) -> dict[str, Any]:
        return {"type": "Property", "value": value, **extra}

    return {
        "id": entity_id,
        "type": "Streetlight",
        "location": {
            "type": "GeoProperty",
            "value": {"type": "Point", "coordinates": [6.76 + n * 1e-6, 51.43]},
        },
        "status": prop("ok", observedAt="2026-11-01T20:00:00Z"),
        "powerState": prop("on"),
        "circuit": prop(f"C-{n % 40}"),
        "lanternHeight": prop(10, unitCode="MTR"),
        "illuminanceLevel": prop(0.8),
        "powerConsumption": prop(120.5, unitCode="WTT", observedAt="2026-11-01T20:00:00Z"),
        "lampTechnology": prop("LED"),
        "lampBrandName": prop("Philips"),
        "workingMode": prop("automatic"),
        "dateLastLampChange": prop("2026-03-01T10:00:00Z"),
        "areaServed": prop("Duisburg Zoo"),
        "address": prop({"streetAddress": "Mülheimer Str. 273", "addressLocality": "Duisburg"}),
        "refStreetlightGroup": {"type": "Relationship", "object": "urn:ngsi-ld:StreetlightGroup:zoo"},
        "refDevice": {"type": "Relationship", "object": f"urn:ngsi-ld:Device:lamp-{n}"},
    }


# -- one client process: `tasks` concurrent loops for `seconds` ------------------------------------


async def _load(op: str, port: int, seconds: float, tasks: int, ids: list[str], tag: str) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    created: list[str] = []
    numbers = itertools.count()

    async def worker() -> None:
        nonlocal errors
        # One client, i.e. one keep-alive connection, per task: a single httpx pool shared by dozens
        # of connections slows the client down sharply, and the bench would measure httpx instead.
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=one, timeout=30.0) as client:
            deadline = time.perf_counter() + seconds
            while time.perf_counter() < deadline:
                if op == "create":
                    n = next(numbers)
                    entity_id = f"urn:ngsi-ld:Streetlight:bench-{tag}-{n}"
                    request = client.post(f"{BASE}/entities", json=streetlight(entity_id, n))
                    expected = 201
                elif op == "retrieve":
                    request = client.get(f"{BASE}/entities/{random.choice(ids)}")
                    expected = 200
                else:
                    request = client.get("/health")
                    expected = 200
                start = time.perf_counter()
                response = await request
                latencies.append(time.perf_counter() - start)
                if response.status_code != expected:
                    errors += 1
                elif op == "create":
                    created.append(entity_id)

    one = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    await asyncio.gather(*(worker() for _ in range(tasks)))
    return {"latencies": latencies, "errors": errors, "created": created}


def client_process(
    op: str, port: int, seconds: float, tasks: int, ids: list[str], tag: str
) -> dict[str, Any]:
    return asyncio.run(_load(op, port, seconds, tasks, ids, tag))


def run_phase(op: str, args: argparse.Namespace, port: int, ids: list[str]) -> dict[str, Any]:
    """Run one operation in ``args.clients`` processes (or in this one) and merge the results."""
    per_client = max(1, args.concurrency // args.clients)
    if args.clients == 1:
        parts = [client_process(op, port, args.seconds, per_client, ids, "c0")]
    else:
        with ProcessPoolExecutor(args.clients) as pool:
            futures = [
                pool.submit(client_process, op, port, args.seconds, per_client, ids, f"c{i}")
                for i in range(args.clients)
            ]
            parts = [f.result() for f in futures]
    latencies = sorted(x for p in parts for x in p["latencies"])
    return {
        "requests": len(latencies),
        "errors": sum(p["errors"] for p in parts),
        "rate": len(latencies) / args.seconds,
        "p50": 1000 * latencies[len(latencies) // 2] if latencies else float("nan"),
        "p95": 1000 * latencies[int(len(latencies) * 0.95)] if latencies else float("nan"),
        "created": [x for p in parts for x in p["created"]],
    }


# -- the server --------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, store: str, workers: int, log: Path) -> subprocess.Popen[bytes]:
    script = Path(sys.executable).with_name("kizuna")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "kizuna"]
    command += ["serve", "--host", "127.0.0.1", "--port", str(port), "--store", store]
    command += ["--workers", str(workers), "--log-level", "warning"]
    with log.open("wb") as stderr:
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)


def wait_healthy(port: int, server: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"bench: the server exited with status {server.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"bench: no healthy server on port {port} after {timeout:.0f} s")


def stop_server(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


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
    args = parser.parse_args()
    if args.seconds <= 0 or args.concurrency < 1 or args.clients < 1 or args.workers < 1:
        parser.error("--seconds, --concurrency, --clients and --workers must be positive")

    tmp = Path(tempfile.mkdtemp(prefix="kizuna-bench-"))
    port = free_port()
    server = start_server(port, f"sqlite:///{tmp}/bench.db", args.workers, tmp / "server.log")
    try:
        wait_healthy(port, server)
        results = {}
        results["GET /health"] = run_phase("health", args, port, [])
        results["POST /entities"] = run_phase("create", args, port, [])
        ids = results["POST /entities"]["created"]
        if not ids:
            raise SystemExit("bench: no entity was created")
        results["GET /entities/{id}"] = run_phase("retrieve", args, port, ids)
    except BaseException:
        sys.stderr.write("bench: server log:\n" + (tmp / "server.log").read_text(errors="replace")[-3000:])
        raise
    finally:
        stop_server(server)
        shutil.rmtree(tmp, ignore_errors=True)

    print(
        f"kizuna bench: {args.seconds:g} s per operation, {args.concurrency} concurrent requests in "
        f"{args.clients} client process(es), {args.workers} server worker(s), {os.cpu_count()} CPU cores "
        "shared by client and server"
    )
    health = results["GET /health"]["rate"]
    print(ROW.format("operation", "requests", "errors", "req/s", "p50 ms", "p95 ms", "vs health"))
    for name, r in results.items():
        ratio = f"{r['rate'] / health:.2f}" if health else "-"
        print(
            ROW.format(
                name,
                r["requests"],
                r["errors"],
                f"{r['rate']:.0f}",
                f"{r['p50']:.2f}",
                f"{r['p95']:.2f}",
                ratio,
            )
        )


if __name__ == "__main__":
    main()
