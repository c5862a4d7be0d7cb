"""What one write costs SQLite: the pages a ``POST /entities`` of a street light changes, by table.

At commit SQLite writes every page the transaction changed to its WAL (and the checkpoint later
copies each into the file), so on a small write the time goes with the number of pages, not
bytes: ``docs/benchmarks.md`` profiles a create at ~40% in COMMIT. This bench counts them. It
runs the app in this process on a fresh SQLite file with automatic checkpoints off, loads
``--entities`` Smart Data Models street lights (15 attributes), then creates ``--creates`` more
one request each and reads the WAL's frames, naming each page's table or index with SQLite's
``dbstat``. It measures pages, not time: throughput is ``bench/throughput.py``'s (wrk).

    .venv/bin/python bench/pages.py [--entities 5000] [--creates 200]
"""

from __future__ import annotations

import argparse
import collections
import struct
from pathlib import Path

import orjson
from starlette.testclient import TestClient

from _city import API, JSON, sdm_streetlight
from _server import scratch
from kizuna.app import create_app
from kizuna.config import Settings

WAL_HEADER, FRAME_HEADER = 32, 24


def light(n: int) -> dict[str, object]:
    where = (6.7 + n % 997 * 1e-4, 51.4 + n // 997 * 1e-4)
    return sdm_streetlight(f"urn:ngsi-ld:Streetlight:p{n:07d}", n, where)


def frames(wal: Path) -> list[int]:
    """The page number of each frame of a WAL file (its format: sqlite.org/fileformat.html)."""
    data = wal.read_bytes()
    page_size = struct.unpack(">I", data[8:12])[0]
    step = FRAME_HEADER + page_size
    return [struct.unpack(">I", data[at : at + 4])[0] for at in range(WAL_HEADER, len(data) - step + 1, step)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entities", type=int, default=5000, help="street lights loaded first")
    parser.add_argument("--creates", type=int, default=200, help="creates whose pages are counted")
    args = parser.parse_args()
    with scratch("kizuna-bench-pages-") as tmp:
        path = tmp / "pages.db"
        app = create_app(Settings(store=f"sqlite:///{path}", log_level="warning"))
        with TestClient(app) as client:
            for start in range(0, args.entities, 1000):
                batch = [light(n) for n in range(start, min(start + 1000, args.entities))]
                client.post(f"{API}/entityOperations/upsert", content=orjson.dumps(batch), headers=JSON)
            writer = app.state.store.db
            writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            writer.execute("PRAGMA wal_autocheckpoint=0")
            for n in range(args.entities, args.entities + args.creates):
                answer = client.post(f"{API}/entities", content=orjson.dumps(light(n)), headers=JSON)
                answer.raise_for_status()
            written = frames(Path(f"{path}-wal"))
            owner = dict(writer.execute("SELECT pageno, name FROM dbstat"))
        by_table = collections.Counter(owner.get(page, "(freed)") for page in written)
        print(
            f"kizuna pages bench: {args.creates} creates of a 15-attribute street light after"
            f" {args.entities} loaded, SQLite WAL frames per create (each a page written at commit)"
        )
        for name, count in by_table.most_common():
            print(f"{count / args.creates:8.1f}  {name}")
        print(f"{len(written) / args.creates:8.1f}  in all")


if __name__ == "__main__":
    main()
