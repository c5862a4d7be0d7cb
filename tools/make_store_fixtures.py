"""Make tests/data/store-COMMIT.db and tests/data/store-COMMIT.sql: a small store (see
tests/store_fixtures.py) as the release at COMMIT writes it, on SQLite and on PostgreSQL (a plain
pg_dump of Kizuna's schemas), for tests/test_store_upgrade.py to open with today's code.

Run it on that release's code, not today's::

    mkdir /tmp/kizuna-c2d3ca2 && git archive c2d3ca2 src | tar -x -C /tmp/kizuna-c2d3ca2
    PYTHONPATH=/tmp/kizuna-c2d3ca2/src:tests python tools/make_store_fixtures.py c2d3ca2

PostgreSQL comes from a throwaway cluster (tests/pg_cluster.py: the Debian server packages).
"""

from __future__ import annotations

import argparse
import sqlite3
import subprocess
import tempfile
from pathlib import Path

from starlette.testclient import TestClient

from kizuna.app import create_app
from kizuna.config import Settings
from pg_cluster import Cluster, find_bindir
from store_fixtures import populate

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"


def fill(url: str) -> None:
    settings = Settings(store=url, outbound_allow="127.0.0.1/32")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        populate(client)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("commit", help="the commit whose code runs this (names the files)")
    commit = parser.parse_args().commit
    with tempfile.TemporaryDirectory() as work:
        made = Path(work) / "kizuna.db"
        fill(f"sqlite:///{made}")
        target = DATA / f"store-{commit}.db"
        target.unlink(missing_ok=True)
        source, copy = sqlite3.connect(made), sqlite3.connect(target)
        source.backup(copy)  # one file, the WAL folded in
        copy.execute("VACUUM")
        source.close()
        copy.close()
    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("no PostgreSQL with PostGIS (tests/pg_cluster.py)")
    cluster = Cluster(bindir)
    cluster.start()
    try:
        name = cluster.new_database()
        fill(cluster.url(name))
        dump = DATA / f"store-{commit}.sql"
        command = [str(bindir / "pg_dump"), "--format=plain", "--no-owner", "--no-privileges"]
        command += ["--schema=kizuna", "--schema=tenant_*", f"--file={dump}", cluster.url(name)]
        subprocess.run(command, check=True)
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
