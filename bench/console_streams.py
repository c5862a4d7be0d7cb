"""What open console event streams cost the writers: wrk's PATCH req/s with and without them.

For each store (``--store``, several allowed) a fresh node is loaded with ``--entities`` street
lights; then wrk (one thread, ``--connections``, ``--seconds`` each) PATCHes one attribute of
random lights, alternately with no stream open and with ``--streams`` console streams open
(``GET /console/events?type=Streetlight``, read by a separate Python process, as browser tabs
would), ``--rounds`` times, starting and ending without. The figure is the ratio of the mean
req/s with streams to the mean without, in the one run (issue 17's target: at least 0.8;
alternating runs keeps a machine whose load changes from deciding it), and each stream's
events per write of its run (against wrk's rate times the duration), which shows that the
streams kept up (about 1.00: every change reached every stream). Beside it, the CPU the
node (and a throwaway PostgreSQL cluster) spent per write in each run, from ``/proc``: on a
machine shared with other work, req/s follow the neighbours' load, CPU per write much less, so
the ratio of CPU per write without streams to with them is the figure to compare across days.

    .venv/bin/python bench/console_streams.py [--store sqlite --store postgresql] \\
        [--entities 5000] [--seconds 8] [--connections 32] [--streams 10] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
from pathlib import Path

import httpx

import _wrk
from _city import API
from _server import Store, add_stores_option, backing_store, machine, scratch, serve_process, stores_of
from throughput import PATCH_ONE_OF, light_id, lines, load

MARK = b"\nevent: change\n"
ROW = "{:<20} {:>7} {:>8} {:>8} {:>13} {:>13}"
TICKS = os.sysconf("SC_CLK_TCK")


async def read_streams(port: int, streams: int) -> None:
    """The readers' process: open ``streams`` streams, say ``ready`` once all are open, count
    each one's change events until stdin closes, then print the counts."""
    counts = [0] * streams
    opened = asyncio.Semaphore(0)

    async def read(client: httpx.AsyncClient, n: int) -> None:
        url = f"http://127.0.0.1:{port}/console/events?type=Streetlight"
        async with client.stream("GET", url, headers={"Accept": "text/event-stream"}) as answer:
            opened.release()
            tail = b""  # counted on raw bytes: the readers share the cores with the node
            async for chunk in answer.aiter_raw():
                data = tail + chunk
                counts[n] += data.count(MARK)
                tail = data[-len(MARK) + 1 :]  # too short to hold a whole mark counted already

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
    _wrk.add_options(parser, seconds=8.0, connections=32)
    parser.add_argument("--streams", type=int, default=10, help="console streams open (default 10)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the random ids")
    parser.add_argument("--rounds", type=int, default=2, help="runs with streams, each between two without")
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
            with serve_process(store, tmp) as (port, server):
                load(port, args.entities)
                store.analyze()
                runs = []  # (streams open, measurement, events each stream got, node CPU s)
                for streams in [0, args.streams] * args.rounds + [0]:
                    before = cpu_seconds(node_processes(server.pid, store))
                    run = watched(port, streams, env, args, tmp)
                    runs.append((*run, cpu_seconds(node_processes(server.pid, store)) - before))
        print(f"\n{store.description}")
        print(ROW.format("run", "req/s", "p50 ms", "p99 ms", "CPU ms/write", "events/write"))
        for streams, m, counts, cpu in runs:
            written = m.rate * args.seconds  # wrk's rate is of the requests it completed
            per_write = f"{min(counts) / written:.2f}-{max(counts) / written:.2f}" if counts else "-"
            name = f"{streams} streams" if streams else "no stream"
            row = (f"{m.rate:.0f}", f"{m.p50:.2f}", f"{m.p99:.2f}", f"{1000 * cpu / written:.2f}", per_write)
            print(ROW.format(name, *row))
        alone = [m.rate for streams, m, _, _ in runs if not streams]
        streaming = [m.rate for streams, m, _, _ in runs if streams]
        ratio = (sum(streaming) / len(streaming)) / (sum(alone) / len(alone))
        print(f"ratio of the mean req/s with {args.streams} streams to the mean without: {ratio:.2f}")
        cost = {
            bool(n): sum(c for s, _, _, c in runs if bool(s) == bool(n))
            / sum(m.rate * args.seconds for s, m, _, _ in runs if bool(s) == bool(n))
            for n in (0, 1)
        }
        print(
            f"ratio of the node's CPU per write without streams to with them: {cost[False] / cost[True]:.2f}"
        )


def node_processes(pid: int, store: Store) -> list[int]:
    """The node's process and, on a throwaway PostgreSQL cluster, the cluster's: the CPU that
    serves the writes (the readers stand for browsers, elsewhere in a real deployment)."""
    if store.cluster is None:
        return [pid]
    postmaster = int((store.cluster.data / "postmaster.pid").read_text().split()[0])
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                children.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return [pid, postmaster, *children]


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU of ``pids`` so far, with their children's that ended (the cluster's
    backends come and go)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return total / TICKS


def watched(
    port: int, streams: int, env: dict[str, str], args: argparse.Namespace, tmp: Path
) -> tuple[int, _wrk.Measurement, list[int]]:
    """One wrk run with ``streams`` streams open in a reader process (none: no process)."""
    if not streams:
        return 0, _wrk.measure(port, PATCH_ONE_OF, args.seconds, args.connections, tmp, env), []
    readers = subprocess.Popen(
        [sys.executable, __file__, "--read-streams", str(port), "--streams", str(streams)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert readers.stdin is not None and readers.stdout is not None
    if readers.stdout.readline().strip() != "ready":
        raise SystemExit("bench: the stream readers did not start")
    measured = _wrk.measure(port, PATCH_ONE_OF, args.seconds, args.connections, tmp, env)
    readers.stdin.close()
    counts = [int(c) for c in readers.stdout.readline().split()]
    readers.wait(timeout=30)
    return streams, measured, counts


if __name__ == "__main__":
    main()
