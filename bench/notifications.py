"""Notification benchmark: in one run, against a real ``kizuna serve`` on a fresh store,

1. write throughput (PATCH /entities/{id}/attrs) with no subscription,
2. write throughput with 100 matching subscriptions (every write queues 100 notifications in its
   transaction) and its ratio to (1),
3. notifications delivered per second to a local receiver while (2) runs and until the outbox
   is drained (HTTP requests, and entity changes they carried).

    .venv/bin/python bench/notifications.py [--writes 2000] [--subscriptions 100] [--clients 8] \
        [--store sqlite|postgresql|postgresql://user@host:port/db]
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import orjson

from _server import add_store_option, backing_store, machine, scratch, serve

CITY = "https://example.org/city#"
ENTITIES = 50


class Counter:
    def __init__(self) -> None:
        self.requests = 0
        self.entities = 0
        self.lock = threading.Lock()
        self.last = 0.0


def receiver(counter: Counter) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            return None

        def do_POST(self) -> None:
            body = orjson.loads(self.rfile.read(int(self.headers["content-length"])))
            with counter.lock:
                counter.requests += 1
                counter.entities += len(body["data"])
                counter.last = time.perf_counter()
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

    ThreadingHTTPServer.request_queue_size = 1024  # 100 subscribers connect at once
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


async def writes(base: str, count: int, clients: int, offset: int) -> float:
    """Writes per second: ``count`` PATCHes over ``clients`` keep-alive connections."""

    async def client_task(values: range) -> None:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            for value in values:
                entity = f"urn:ngsi-ld:Streetlight:{value % ENTITIES}"
                response = await client.patch(
                    f"/ngsi-ld/v1/entities/{entity}/attrs",
                    json={f"{CITY}counter": {"type": "Property", "value": value}},
                )
                assert response.status_code == 204, response.text

    started = time.perf_counter()
    await asyncio.gather(*(client_task(range(offset + i, offset + count, clients)) for i in range(clients)))
    return count / (time.perf_counter() - started)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--writes", type=int, default=2000)
    parser.add_argument("--subscriptions", type=int, default=100)
    parser.add_argument("--clients", type=int, default=8)
    add_store_option(parser)
    args = parser.parse_args()

    counter = Counter()
    server = receiver(counter)
    target = f"http://127.0.0.1:{server.server_address[1]}/notify"
    try:
        with (
            scratch("kizuna-bench-n-") as tmp,
            backing_store(args.store, tmp) as store,
            serve(store, tmp) as port,
        ):
            base = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(base_url=base) as client:
                for n in range(ENTITIES):
                    entity = {"id": f"urn:ngsi-ld:Streetlight:{n}", "type": f"{CITY}Streetlight"}
                    assert (await client.post("/ngsi-ld/v1/entities", json=entity)).status_code == 201
                await writes(base, 200, args.clients, 0)  # warm-up
                plain = await writes(base, args.writes, args.clients, 0)
                for n in range(args.subscriptions):
                    sub = {
                        "id": f"urn:ngsi-ld:Subscription:bench-{n}",
                        "type": "Subscription",
                        "entities": [{"type": f"{CITY}Streetlight"}],
                        "watchedAttributes": [f"{CITY}counter"],
                        "notification": {"format": "keyValues", "endpoint": {"uri": target}},
                    }
                    assert (await client.post("/ngsi-ld/v1/subscriptions", json=sub)).status_code == 201
                started = time.perf_counter()
                subscribed = await writes(base, args.writes, args.clients, args.writes)
                expected = args.writes * args.subscriptions
                deadline = time.perf_counter() + 600
                while counter.entities < expected and time.perf_counter() < deadline:
                    await asyncio.sleep(0.05)
                elapsed = counter.last - started
            where = machine()
    finally:
        server.shutdown()
    print(f"kizuna notification bench on {store.description}: 1 server worker, {where}")
    print(f"writes/s, no subscription:         {plain:8.0f}")
    print(f"writes/s, {args.subscriptions} matching subscriptions: {subscribed:8.0f}")
    print(f"ratio (with / without):            {subscribed / plain:8.2f}")
    print(f"notifications delivered:           {counter.requests:8d} requests, {counter.entities} changes")
    print(f"notifications/s to the receiver:   {counter.requests / elapsed:8.0f} requests/s")
    print(f"entity changes notified/s:         {counter.entities / elapsed:8.0f} /s")
    if counter.entities < expected:
        print(f"INCOMPLETE: {counter.entities} of {expected} delivered")


if __name__ == "__main__":
    asyncio.run(main())
