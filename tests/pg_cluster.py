"""A throwaway PostgreSQL + PostGIS cluster for the tests: initdb/pg_ctl from the Debian packages,
in a temp dir, on a free loopback port, with fsync off (nothing here must survive a crash).

Everything runs as root in CI and initdb refuses root: the cluster belongs to the ``postgres``
user, and the server is started through ``su``. Each test gets its own database, copied from a
template that already has PostGIS and Kizuna's schema migrations.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import glob
import itertools
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

TEMPLATE = "kizuna_template"


def find_bindir() -> Path | None:
    """The newest Debian PostgreSQL bin dir with a PostGIS extension installed, or None;
    ``KIZUNA_PG_BINDIR`` names another (a non-Debian install)."""
    if os.environ.get("KIZUNA_PG_BINDIR"):
        chosen = Path(os.environ["KIZUNA_PG_BINDIR"])
        return chosen if (chosen / "initdb").exists() else None
    for bindir in sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True
    ):
        version = bindir.split("/")[-2]
        if (Path(bindir) / "initdb").exists() and glob.glob(
            f"/usr/share/postgresql/{version}/extension/postgis.control"
        ):
            return Path(bindir)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="kizuna-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.started = False
        self._names = itertools.count(1)
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kizuna-pg")
        self._spare: concurrent.futures.Future[str] | None = None

    def _run_as_postgres(self, command: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
        line = " ".join(shlex.quote(c) for c in command)
        if os.geteuid() == 0:
            argv = ["su", "postgres", "-s", "/bin/sh", "-c", line]
        else:
            argv = ["/bin/sh", "-c", line]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=self.root)
        if result.returncode != 0:
            raise RuntimeError(
                f"{line} failed ({result.returncode}): {result.stderr.strip() or result.stdout.strip()}"
            )
        return result

    def start(self) -> None:
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self._run_as_postgres(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ]
        )
        self.start_server()
        self.psql("postgres", f"CREATE DATABASE {TEMPLATE}")
        self.psql(TEMPLATE, "CREATE EXTENSION postgis")
        # In a thread of its own: the first test to ask may already be running an event loop.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, _migrate(self.url(TEMPLATE))).result(timeout=120)

    def start_server(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
            " -c shared_buffers=64MB -c log_min_messages=fatal"
        )
        self._run_as_postgres(
            [
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.root / "log"),
                "-w",
                "-t",
                "60",
                "-o",
                options,
                "start",
            ]
        )
        self.started = True

    def stop_server(self) -> None:
        """A clean shutdown (what is committed stays); :meth:`start_server` brings it back."""
        self._worker.submit(lambda: None).result(timeout=120)  # no create or drop under way
        self._run_as_postgres([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])
        self.started = False

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def psql(self, database: str, sql: str) -> None:
        subprocess.run(
            [
                str(self.bindir / "psql"),
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                str(self.root),
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
                "-c",
                sql,
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def new_database(self) -> str:
        """A database copied from the template. The next one is made in the background while
        the test runs (one worker: creates and drops never overlap), so a test waits for none."""
        spare, name = self._spare, None
        if spare is not None:
            with contextlib.suppress(Exception):  # e.g. made while a test had stopped the server
                name = spare.result(timeout=120)
        if name is None:
            name = self._create()
        self._spare = self._worker.submit(self._create)
        return name

    def _create(self) -> str:
        name = f"kizuna_test_{next(self._names)}"
        self.psql("postgres", f"CREATE DATABASE {name} TEMPLATE {TEMPLATE} STRATEGY FILE_COPY")
        return name

    def drop_database(self, name: str) -> None:
        self._worker.submit(self.psql, "postgres", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        self._worker.shutdown(wait=True, cancel_futures=True)
        if self.started:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self._run_as_postgres(
                    [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"]
                )
            self.started = False
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join((self.root / "log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


async def _migrate(url: str) -> None:
    from kizuna.store.postgres import PostgresStore

    store = PostgresStore.from_url(url)
    await store.open()
    await store.close()
