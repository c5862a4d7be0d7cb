"""A throwaway PostgreSQL + PostGIS cluster for the benches, with durable settings.

Not ``tests/pg_cluster.py``: the tests turn fsync and synchronous_commit off and build a template
per session, which is right for tests and wrong for write throughput. Here the cluster keeps
PostgreSQL's defaults (fsync on, synchronous_commit on: each commit waits for its WAL flush) except
``shared_buffers`` (512 MB, the order a small production server would get; SQLite's store maps up to
1 GiB of its file) and ``max_connections`` (4 server processes x a pool of 10, plus the bench).

initdb refuses root, so the cluster belongs to ``postgres`` and its commands run through ``su``
when the bench runs as root. Debian's binaries are used (``/usr/lib/postgresql/<version>/bin``, the
newest version with PostGIS installed); ``KIZUNA_PG_BINDIR`` names another directory.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

DATABASE = "kizuna_bench"
SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "shared_buffers": "512MB",
    "max_connections": "200",
    "log_min_messages": "fatal",
}


def find_bindir() -> Path:
    """The bin directory of the newest PostgreSQL that has PostGIS, or exit with what to install."""
    if os.environ.get("KIZUNA_PG_BINDIR"):
        return Path(os.environ["KIZUNA_PG_BINDIR"])
    for bindir in sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True
    ):
        version = bindir.split("/")[-2]
        if glob.glob(f"/usr/share/postgresql/{version}/extension/postgis.control"):
            return Path(bindir)
    raise SystemExit("bench: no PostgreSQL with PostGIS found (apt-get install postgresql-15-postgis-3)")


class Cluster:
    """initdb + pg_ctl in a temp dir on a free loopback port; :meth:`stop` removes everything."""

    def __init__(self) -> None:
        self.bindir = find_bindir()
        self.version = self.bindir.parent.name
        self.root = Path(tempfile.mkdtemp(prefix="kizuna-bench-pg-"))
        self.data = self.root / "data"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port: int = s.getsockname()[1]
        self.started = False

    def _as_postgres(self, *command: str) -> None:
        line = " ".join(shlex.quote(c) for c in command)
        argv = (
            ["su", "postgres", "-s", "/bin/sh", "-c", line] if os.geteuid() == 0 else ["/bin/sh", "-c", line]
        )
        result = subprocess.run(argv, capture_output=True, text=True, timeout=180, cwd=self.root)
        if result.returncode != 0:
            raise SystemExit(f"bench: {line} failed: {result.stderr.strip() or result.stdout.strip()}")

    def start(self) -> str:
        """Create and start the cluster and an empty database; its URL for ``kizuna serve``."""
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        initdb = [str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust"]
        self._as_postgres(*initdb, "-E", "UTF8", "--locale=C.UTF-8")
        options = f"-p {self.port} -k {self.root} " + " ".join(f"-c {k}={v}" for k, v in SETTINGS.items())
        pg_ctl = [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log")]
        self._as_postgres(*pg_ctl, "-w", "-t", "60", "-o", options, "start")
        self.started = True
        self.psql("postgres", f"CREATE DATABASE {DATABASE}")
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE}"

    def psql(self, database: str, sql: str) -> str:
        command = [str(self.bindir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"]
        command += ["-h", str(self.root), "-p", str(self.port), "-U", "postgres", "-d", database, "-c", sql]
        return subprocess.run(command, check=True, capture_output=True, text=True, timeout=600).stdout

    def stop(self) -> None:
        if self.started:
            with contextlib.suppress(SystemExit, subprocess.TimeoutExpired):
                self._as_postgres(
                    str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"
                )
            self.started = False
        shutil.rmtree(self.root, ignore_errors=True)
