"""The simulated city against one node: the updates it absorbs and the queries it answers meanwhile.

For each store (``--store``, several allowed) a fresh node is started on a fresh store with the
Smart Data Models @contexts mapped to local files, and ``kizuna simulate duisburg`` (a separate
process, as in ``make demo``) creates the city at ``--scale`` (``city``: 45,000 street lights in
1,500 cabinets, 1,200 road segments, 300 access points, 1,600 classrooms) and then drives it at
``--speed``. Once the city is created, wrk (native, one thread, ``--connections``) measures for
``--seconds`` each, one after the other and while the simulator keeps writing:

- a near query: ``GET /entities?type=Streetlight&georel=near;maxDistance==500`` around
  ``[6.77,51.43]`` (Duisburg-Mitte), first 20, with the Streetlighting @context as ``Link``;
- a temporal query: ``GET /temporal/entities/{id}?timerel=after&timeAt={start}&attrs=intensity``
  of random ``TrafficFlowObserved`` entities, with the Transportation @context.

The write figure is the simulator's own counter: entity updates (one entity's changed
attributes in a batch update or upsert) per second, from the progress lines it prints, between
the last line before each wrk window and the first after it. The simulator writes one batch
at a time and coalesces what changed while a batch was in flight, so at a ``--speed`` it cannot
keep up with, it writes as fast as the node takes its batches: that rate is what the node
absorbs from one such client. The simulator, the node and wrk share the machine's cores, and
the figures are what they give together.

    .venv/bin/python bench/city.py [--store sqlite --store postgresql] [--scale small|city] \\
        [--seconds 20] [--speed 600] [--connections 8] [--workers 1]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import _wrk
from _server import Store, add_stores_option, backing_store, machine, scratch, serve, stores_of

REPO = Path(__file__).resolve().parent.parent
CONTEXT_MAP = REPO / "tests" / "data" / "smart-data-models" / "context-map.json"
API = "/ngsi-ld/v1"
SDM = "https://raw.githubusercontent.com/smart-data-models/dataModel.{}/master/context.jsonld"
START = "2026-01-14T17:00:00Z"  # 18:00 in Duisburg on a winter Wednesday, after dusk
ROW = "{:<44} {:>10} {:>9} {:>9} {:>13}"
PROGRESS = re.compile(r"(\S+)  entities (\d+)  updates (\d+) \(\d+/s\)  errors (\d+)")
CREATED = re.compile(r"created (\d+) entities in ([\d.]+) s")

GET_ONE_OF = """
local paths = {}
for line in io.lines(os.getenv("PATHS")) do paths[#paths + 1] = line end
local headers = {["Link"] = os.getenv("LINK")}
request = function() return wrk.format("GET", paths[math.random(#paths)], headers) end
"""


def link(domain: str) -> str:
    return f'<{SDM.format(domain)}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'


@dataclass
class Simulator:
    """``kizuna simulate duisburg`` as a child process, its progress lines read as they come.

    Each progress line is kept with the monotonic time it was read, so that the updates made
    during a window are the difference of the counters at its two ends."""

    process: subprocess.Popen[bytes]
    samples: list[tuple[float, str, int, int]] = field(default_factory=list)  # (t, sim now, updates, errors)
    created: tuple[int, float] | None = None  # (entities, seconds)
    lines: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def read(self) -> None:
        assert self.process.stderr is not None
        buffer = b""
        while chunk := self.process.stderr.read1(4096):  # type: ignore[attr-defined]
            buffer += chunk
            *complete, buffer = re.split(rb"[\r\n]", buffer)
            if re.search(rb"errors \d+ +$", buffer):  # a progress line ends with no newline
                complete, buffer = [*complete, buffer], b""
            for raw in complete:
                self._line(raw.decode(errors="replace"))

    def _line(self, line: str) -> None:
        now = time.monotonic()
        with self.lock:
            if line.strip():
                self.lines.append(line)
            if found := CREATED.search(line):
                self.created = (int(found.group(1)), float(found.group(2)))
            elif found := PROGRESS.search(line):
                self.samples.append((now, found.group(1), int(found.group(3)), int(found.group(4))))

    def wait_created(self, timeout: float) -> tuple[int, float]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"bench: the simulator exited:\n{self.tail()}")
            with self.lock:
                if self.created is not None:
                    return self.created
            time.sleep(0.2)
        raise SystemExit(f"bench: the simulator did not create the city in {timeout:.0f} s:\n{self.tail()}")

    def wait_updates(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"bench: the simulator exited:\n{self.tail()}")
            with self.lock:
                if self.samples and self.samples[-1][2] >= count:
                    return
            time.sleep(0.2)
        raise SystemExit(f"bench: the simulator wrote fewer than {count} updates in {timeout:.0f} s")

    def window(self, start: float, end: float, timeout: float = 120.0) -> tuple[float, str, str, int]:
        """Entity updates/s from the last progress line read at or before ``start`` to the first
        read at or after ``end``; the simulated times at both ends; the errors so far.

        The simulator prints after a batch is answered, and under a query load one batch can
        take longer than a window: the lines that bracket the window measure it whatever the
        batches' timing (a window with no line inside it failed the run before)."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                before = [s for s in self.samples if s[0] <= start]
                after = [s for s in self.samples if s[0] >= end]
                first = before[-1] if before else next((s for s in self.samples if s[0] > start), None)
            if after and first is not None and after[0][0] > first[0]:
                break
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise SystemExit(f"bench: no progress line after the window:\n{self.tail()}")
            time.sleep(0.2)
        (t0, sim0, u0, _), (t1, sim1, u1, errors) = first, after[0]
        return (u1 - u0) / (t1 - t0), sim0, sim1, errors

    def tail(self) -> str:
        with self.lock:
            return "\n".join(self.lines[-10:])

    def stop(self) -> None:
        """Ctrl-C, as a user stops it (it exits cleanly on KeyboardInterrupt); killed if it hangs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def simulate(port: int, scale: str, speed: float, seed: int) -> Simulator:
    script = Path(sys.executable).with_name("kizuna")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "kizuna"]
    command += ["simulate", "duisburg", "--url", f"http://127.0.0.1:{port}", "--scale", scale]
    command += ["--speed", f"{speed:g}", "--start", START, "--seed", str(seed)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    sim = Simulator(process)
    threading.Thread(target=sim.read, daemon=True).start()
    return sim


def flows(scale: str) -> int:
    """How many TrafficFlowObserved the scale has (one per road segment)."""
    from kizuna.sim.city import SCALES

    return SCALES[scale].segments


def lights(scale: str) -> int:
    from kizuna.sim.city import SCALES

    return SCALES[scale].lights


def queries(tmp: Path, scale: str, seed: int) -> list[tuple[str, dict[str, str]]]:
    """(name, wrk environment) of the two queries."""
    near = (
        f"{API}/entities?type=Streetlight&georel={quote('near;maxDistance==500')}"
        f"&geometry=Point&coordinates={quote('[6.77,51.43]')}&limit=20"
    )
    pick = random.Random(seed)
    ids = pick.sample(range(flows(scale)), min(200, flows(scale)))
    temporal = [
        f"{API}/temporal/entities/urn:ngsi-ld:TrafficFlowObserved:duisburg-{n:04d}"
        f"?timerel=after&timeAt={quote(START)}&attrs=intensity"
        for n in ids
    ]
    out = []
    for name, paths, domain in (
        ("GET ?type=Streetlight&georel=near, first 20", [near], "Streetlighting"),
        ("GET /temporal/entities/{id}?attrs=intensity", temporal, "Transportation"),
    ):
        file = tmp / f"{domain}.txt"
        file.write_text("".join(f"{p}\n" for p in paths))
        out.append((name, {"PATHS": str(file), "LINK": link(domain)}))
    return out


def run(spec: str, args: argparse.Namespace) -> None:
    with scratch("kizuna-bench-city-") as tmp, backing_store(spec, tmp) as store:
        extra = ["--context-map", str(CONTEXT_MAP), *args.extra.split()]
        with serve(store, tmp, workers=args.workers, extra=extra) as port:
            sim = simulate(port, args.scale, args.speed, args.seed)
            try:
                measure(store, port, sim, tmp, args)
            finally:
                sim.stop()


def measure(store: Store, port: int, sim: Simulator, tmp: Path, args: argparse.Namespace) -> None:
    entities, seconds = sim.wait_created(args.load_timeout)
    store.analyze()
    # The first tick switches every light on (it is dark at START): a one-off burst, waited
    # out so that the windows below all see the same night-time load (traffic, Wi-Fi, rooms,
    # meters), not one of them the burst.
    sim.wait_updates(lights(args.scale), args.load_timeout)
    rows: list[tuple[str, _wrk.Measurement | None, float, str, str]] = []
    for name, env in [("none: the simulator alone", None), *queries(tmp, args.scale, args.seed)]:
        began = time.monotonic()
        if env is None:
            time.sleep(args.seconds)  # the yardstick: what the node absorbs with no queries
            m = None
        else:
            m = _wrk.measure(port, GET_ONE_OF, args.seconds, args.connections, tmp, env)
        rate, sim0, sim1, errors = sim.window(began, time.monotonic())
        rows.append((name, m, rate, sim0, sim1))
        if errors:
            raise SystemExit(f"bench: the node refused {errors} writes:\n{sim.tail()}")
    if sim.process.poll() is not None:
        raise SystemExit(f"bench: the simulator stopped:\n{sim.tail()}")
    print(f"\n{store.description}, {args.workers} worker{'s' if args.workers > 1 else ''}")
    print(f"created {entities} entities in {seconds:.1f} s ({entities / seconds:.0f} entities/s)")
    print(ROW.format("query (wrk) while the simulator writes", "req/s", "p50 ms", "p99 ms", "updates/s"))
    for name, m, rate, _, _ in rows:
        if m is None:
            print(ROW.format(name, "", "", "", f"{rate:.0f}"))
        else:
            print(ROW.format(name, f"{m.rate:.0f}", f"{m.p50:.2f}", f"{m.p99:.2f}", f"{rate:.0f}"))
    print(f"simulated time {rows[0][3]} to {rows[-1][4]}; load average {os.getloadavg()[0]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_stores_option(parser)
    parser.add_argument("--scale", choices=("small", "city"), default="city", help="default city")
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of each wrk run (default 20)")
    parser.add_argument(
        "--speed", type=float, default=600.0, help="simulated seconds per real second (default 600)"
    )
    parser.add_argument("--connections", type=int, default=8, help="wrk connections (default 8)")
    parser.add_argument("--workers", type=int, default=1, help="node worker processes (default 1)")
    parser.add_argument("--seed", type=int, default=7, help="the city's seed and the ids' (default 7)")
    parser.add_argument(
        "--load-timeout", type=float, default=900.0, help="seconds the city may take to create (default 900)"
    )
    parser.add_argument("--extra", default="", help="more `kizuna serve` flags")
    args = parser.parse_args()
    _wrk.require()
    print(
        f"kizuna city bench: {args.scale} scale at {args.speed:g}x from {START}; wrk, 1 thread,"
        f" {args.connections} connections, {args.seconds:g} s per query, one run; {machine()}"
    )
    for spec in stores_of(args):
        run(spec, args)


if __name__ == "__main__":
    main()
