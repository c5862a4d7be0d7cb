"""What open console event streams cost the writers: wrk's PATCH req/s with and without them.

For each store (``--store``, several allowed) a fresh node is loaded with ``--entities`` street
lights; then wrk (one thread, ``--connections``, ``--seconds`` each) PATCHes one attribute of
random lights three times in a row: with no stream open, with ``--streams`` console streams
open (``GET /console/events?type=Streetlight``, read by a separate Python process, as browser
tabs would), and with none again. The figure is the ratio of the middle run's req/s to the
mean of the other two (issue 17's target: at least 0.8), and each stream's events per write
of its run (against wrk's rate times the duration), which shows that the streams kept up
(about 1.00: every change reached every stream).

    .venv/bin/python bench/console_streams.py [--store sqlite --store postgresql] \\
        [--entities 5000] [--seconds 8] [--connections 32] [--streams 10]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import subprocess
import sys

import httpx

import _wrk
from _city import API
from _server import add_stores_option, backing_store, machine, scratch, serve, stores_of
from throughput import PATCH_ONE_OF, light_id, lines, load

ROW = "{:<34} {:>9} {:>8} {:>8} {:>16}"


async def read_streams(port: int, streams: int) -> None:
    """The readers' process: open ``streams`` streams, say ``ready`` once all are open, count
    each one's change events until stdin closes, then print the counts."""
    counts = [0] * streams
    opened = asyncio.Semaphore(0)

    async def read(client: httpx.AsyncClient, n: int) -> None:
        url = f"http://127.0.0.1:{port}/console/events?type=Streetlight"
        async with client.stream("GET", url, headers={"Accept": "text/event-stream"}) as answer:
            opened.release()
            async for line in answer.aiter_lines():
                if line == "event: change":
                    counts[n] += 1

    async with httpx.AsyncClient(timeout=None) as client:
        readers = [asyncio.create_task(read(client, n)) for n in range(streams)]
        for _ in range(streams):
            await opened.acquire()
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.read)  # until the bench closes our stdin
        await asyncio.sleep(1.0)  # the last changes in flight reach the streams
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    print(" ".join(str(c) for c in counts), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_stores_option(parser)
    parser.add_argument("--entities", type=int, default=5_000, help="street lights loaded (default 5000)")
    parser.add_argument("--seconds", type=float, default=8.0, help="duration of each wrk run (default 8)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--streams", type=int, default=10, help="console streams open (default 10)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the random ids")
    parser.add_argument("--read-streams", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.read_streams:
        asyncio.run(read_streams(args.read_streams, args.streams))
        return
    _wrk.require()
    print(
        f"kizuna console streams bench: wrk, 1 thread, {args.connections} connections, {args.seconds:g} s"
        f" per run; PATCH of random lights among {args.entities}; {args.streams} streams; {machine()}"
    )
    for spec in stores_of(args):
        with scratch("kizuna-bench-console-") as tmp, backing_store(spec, tmp) as store:
            pick = random.Random(args.seed)
            ids = [f"{API}/entities/{light_id(n)}" for n in pick.sample(range(args.entities), args.entities)]
            env = lines(tmp, "patch", ids)
            with serve(store, tmp) as port:
                load(port, args.entities)
                store.analyze()
                alone = _wrk.measure(port, PATCH_ONE_OF, args.seconds, args.connections, tmp, env)
                readers = subprocess.Popen(
                    [sys.executable, __file__, "--read-streams", str(port), "--streams", str(args.streams)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                assert readers.stdin is not None and readers.stdout is not None
                if readers.stdout.readline().strip() != "ready":
                    raise SystemExit("bench: the stream readers did not start")
                watched = _wrk.measure(port, PATCH_ONE_OF, args.seconds, args.connections, tmp, env)
                readers.stdin.close()
                counts = [int(c) for c in readers.stdout.readline().split()]
                readers.wait(timeout=30)
                again = _wrk.measure(port, PATCH_ONE_OF, args.seconds, args.connections, tmp, env)
        print(f"\n{store.description}")
        print(ROW.format("run", "req/s", "p50 ms", "p99 ms", "events/write"))
        print(ROW.format("no stream", f"{alone.rate:.0f}", f"{alone.p50:.2f}", f"{alone.p99:.2f}", "-"))
        written = watched.rate * args.seconds  # wrk's rate is of the requests it completed
        per_write = f"{min(counts) / written:.2f}-{max(counts) / written:.2f}"
        print(
            ROW.format(
                f"{args.streams} streams",
                f"{watched.rate:.0f}",
                f"{watched.p50:.2f}",
                f"{watched.p99:.2f}",
                per_write,
            )
        )
        print(ROW.format("no stream again", f"{again.rate:.0f}", f"{again.p50:.2f}", f"{again.p99:.2f}", "-"))
        baseline = (alone.rate + again.rate) / 2
        print(f"ratio with {args.streams} streams / without: {watched.rate / baseline:.2f}")


if __name__ == "__main__":
    main()
