"""A million street lights through ``kizuna import``: entities/s, and what memory it takes.

For each store (``--store``) a fresh node is started on a fresh store; ``--entities`` Smart
Data Models street lights (15 attributes each, on a grid over Duisburg) are written as JSON
Lines to a file first (so that generating them costs the run nothing), then ``kizuna import``
reads that file in a separate process and batch-upserts it (``--batch-size`` per request).

It prints the import's entities/s over the whole file, the importer's peak RSS (from the
kernel's accounting of the child, ``wait4``), and the node's resident and peak memory after the
import and again after a count over every light and a near query, so that the figures say
whether a million entities stream through bounded memory on both sides. The importer and the
node share the machine's cores: the rate is what the pair gives together.

    .venv/bin/python bench/bulk.py [--store sqlite --store postgresql] [--entities 1000000] \\
        [--batch-size 1000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import orjson

from _server import add_stores_option, backing_store, machine, scratch, serve_process, stores_of
from throughput import light_id, streetlight

API = "/ngsi-ld/v1"


def write_lights(path: Path, count: int) -> None:
    with path.open("wb") as out:
        for n in range(count):
            out.write(orjson.dumps(streetlight(light_id(n), n)) + b"\n")


def memory(pid: int) -> tuple[int, int, int, int]:
    """(resident, peak resident, anonymous, file-backed) in MB of a running process, from
    ``/proc``: the file-backed part is the store file's pages mapped by SQLite's ``mmap_size``,
    which the kernel shares with its page cache and may drop; the anonymous part is the
    process's own (Python's heap, SQLite's page caches)."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    return tuple(int(fields[name].split()[0]) // 1024 for name in ("VmRSS", "VmHWM", "RssAnon", "RssFile"))  # type: ignore[return-value]


def run_import(port: int, file: Path, batch_size: int) -> tuple[float, int, str]:
    """Seconds, peak RSS in MB and the last line of ``kizuna import``'s report."""
    script = Path(sys.executable).with_name("kizuna")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "kizuna"]
    command += ["import", str(file), "--url", f"http://127.0.0.1:{port}", "--batch-size", str(batch_size)]
    began = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.monotonic() - began
    process.returncode = os.waitstatus_to_exitcode(status)
    out = (process.stdout.read() + process.stderr.read()).decode(errors="replace")  # type: ignore[union-attr]
    if process.returncode != 0:
        raise SystemExit(f"bench: kizuna import failed ({process.returncode}):\n{out[-2000:]}")
    return seconds, usage.ru_maxrss // 1024, out.strip().splitlines()[-1] if out.strip() else ""


def query(port: int, count: int) -> None:
    """A count over every light and a near query: what a node does with what it loaded."""
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as client:
        answer = client.get(f"{API}/entities", params={"type": "Streetlight", "count": "true", "limit": "0"})
        answer.raise_for_status()
        if int(answer.headers["NGSILD-Results-Count"]) != count:
            raise SystemExit(
                f"bench: the node holds {answer.headers['NGSILD-Results-Count']} lights, not {count}"
            )
        near = f"{API}/entities?type=Streetlight&georel={quote('near;maxDistance==200')}"
        client.get(f"{near}&geometry=Point&coordinates={quote('[6.77,51.43]')}&limit=20").raise_for_status()


def run(spec: str, args: argparse.Namespace, file: Path) -> None:
    with (
        scratch("kizuna-bench-bulk-") as tmp,
        backing_store(spec, tmp) as store,
        serve_process(store, tmp) as (port, server),
    ):
        seconds, importer_mb, report = run_import(port, file, args.batch_size)
        after_import = memory(server.pid)
        query(port, args.entities)
        after_queries = memory(server.pid)
        print(f"\n{store.description}: {report}")
        print(
            f"imported {args.entities} lights in {seconds:.0f} s: {args.entities / seconds:,.0f} entities/s"
        )
        print(f"kizuna import peak RSS {importer_mb} MB")
        for when, (rss, peak, anon, mapped) in (
            ("the import", after_import),
            ("count + near", after_queries),
        ):
            print(f"node RSS after {when} {rss} MB (peak {peak} MB; {anon} MB anonymous, {mapped} MB file)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_stores_option(parser)
    parser.add_argument("--entities", type=int, default=1_000_000, help="street lights (default 1000000)")
    parser.add_argument("--batch-size", type=int, default=1000, help="entities per upsert (default 1000)")
    args = parser.parse_args()
    print(
        f"kizuna bulk bench: {args.entities} street lights of 15 attributes through kizuna import,"
        f" batches of {args.batch_size}, one worker, one run; {machine()}"
    )
    with scratch("kizuna-bench-bulk-lights-") as tmp:
        file = tmp / "lights.jsonl"
        write_lights(file, args.entities)
        print(f"{file.stat().st_size / 1e6:.0f} MB of JSON Lines")
        for spec in stores_of(args):
            run(spec, args, file)


if __name__ == "__main__":
    main()
