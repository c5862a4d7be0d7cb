"""What matching subscriptions cost a write: wrk against ``kizuna serve``, in one run per store.

For each store (``--store``, several allowed) a fresh node on a fresh store gets ``ENTITIES``
street lights; then wrk (one thread, ``--connections``, ``--seconds`` each) PATCHes one
attribute of random lights, a new value each request:

1. with no subscription;
2. with ``--subscriptions`` subscriptions that every write matches, each notifying a local
   receiver (a thread of this process that answers 204 and counts), while the node delivers.

It prints both writes/s, their ratio (the figure to compare across runs and machines: both
measured in the same run), the changes not yet delivered when the writes of (2) stopped (a
higher write rate that only defers deliveries shows there) and, once the outbox is empty (read
from the node's ``/metrics``), the notifications and entity changes delivered per second from
the start of (2). ``--delivery`` (repeatable) measures each store with each
``--notify-delivery`` of the node, a fresh node each.

    .venv/bin/python bench/notifications.py [--store sqlite --store postgresql] \\
        [--delivery inline --delivery process] [--subscriptions 100] [--seconds 8] [--connections 8]
"""

from __future__ import annotations

import argparse
import itertools
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import orjson

import _wrk
from _city import API
from _server import add_stores_option, backing_store, machine, scratch, serve, stores_of

CITY = "https://example.org/city#"
ENTITIES = 50
ROW = "{:<28} {:>9} {:>8} {:>8} {:>7}"
PATCH_COUNTER = f"""
local n = 0
local headers = {{["Content-Type"] = "application/json"}}
request = function()
  n = n + 1
  local path = "{API}/entities/urn:ngsi-ld:Streetlight:" .. (n % {ENTITIES}) .. "/attrs"
  return wrk.format("PATCH", path, headers, '{{"{CITY}counter":{{"type":"Property","value":' .. n .. '}}}}')
end
"""


class Counter:
    """What the receiver was sent: notifications, the entity changes in them, when the last came."""

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


def pending(client: httpx.Client) -> float:
    """The node's undelivered outbox rows, as its /metrics says."""
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("kizuna_notification_outbox_rows "):
            return float(line.split()[1])
    raise SystemExit("bench: /metrics has no kizuna_notification_outbox_rows")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_stores_option(parser)
    parser.add_argument("--subscriptions", type=int, default=100, help="matching subscriptions (default 100)")
    parser.add_argument("--seconds", type=float, default=8.0, help="duration of each wrk run (default 8)")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections (default 8)")
    parser.add_argument(
        "--delivery",
        action="append",
        choices=("inline", "process"),
        help="the node's --notify-delivery; repeat for both (default: inline, the node's default)",
    )
    args = parser.parse_args()
    _wrk.require()
    print(
        f"kizuna notification bench: wrk, 1 thread, {args.connections} connections, {args.seconds:g} s"
        f" per run, one run each; {ENTITIES} street lights, {args.subscriptions} matching"
        f" subscriptions; 1 server worker; {machine()}"
    )
    counter = Counter()
    server = receiver(counter)
    target = f"http://127.0.0.1:{server.server_address[1]}/notify"
    try:
        for spec, delivery in itertools.product(stores_of(args), args.delivery or ["inline"]):
            counter.requests = counter.entities = 0
            # inline is not passed: the code of a release without the setting can be measured
            extra = ["--notify-delivery", delivery] if delivery != "inline" else []
            with (
                scratch("kizuna-bench-n-") as tmp,
                backing_store(spec, tmp) as store,
                serve(store, tmp, extra=extra) as port,
                httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client,
            ):
                for n in range(ENTITIES):
                    entity = {"id": f"urn:ngsi-ld:Streetlight:{n}", "type": f"{CITY}Streetlight"}
                    assert client.post(f"{API}/entities", json=entity).status_code == 201
                plain = _wrk.measure(port, PATCH_COUNTER, args.seconds, args.connections, tmp)
                for n in range(args.subscriptions):
                    sub = {
                        "id": f"urn:ngsi-ld:Subscription:bench-{n}",
                        "type": "Subscription",
                        "entities": [{"type": f"{CITY}Streetlight"}],
                        "watchedAttributes": [f"{CITY}counter"],
                        "notification": {"format": "keyValues", "endpoint": {"uri": target}},
                    }
                    assert client.post(f"{API}/subscriptions", json=sub).status_code == 201
                started = time.perf_counter()
                subscribed = _wrk.measure(port, PATCH_COUNTER, args.seconds, args.connections, tmp)
                backlog = pending(client)
                deadline = time.monotonic() + 600
                while (left := pending(client)) and time.monotonic() < deadline:
                    time.sleep(0.2)
            elapsed = counter.last - started
            print(f"\n{store.description}; --notify-delivery {delivery}")
            print(ROW.format("PATCH /entities/{id}/attrs", "writes/s", "p50 ms", "p99 ms", "ratio"))
            for name, m in (("no subscription", plain), (f"{args.subscriptions} matching", subscribed)):
                print(
                    ROW.format(
                        name, f"{m.rate:.0f}", f"{m.p50:.2f}", f"{m.p99:.2f}", f"{m.rate / plain.rate:.2f}"
                    )
                )
            print(
                f"delivered: {counter.requests} notifications ({counter.requests / elapsed:.0f}/s),"
                f" {counter.entities} entity changes ({counter.entities / elapsed:.0f}/s);"
                f" {backlog:.0f} changes undelivered when the writes stopped, all delivered"
                f" {elapsed - args.seconds:.1f} s after"
            )
            if left:
                print(f"INCOMPLETE: {left:.0f} outbox rows not delivered after 600 s")
    finally:
        server.shutdown()


if __name__ == "__main__":
    main()
