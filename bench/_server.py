"""What every bench shares: the store it runs on (``--store``) and a real ``kizuna serve`` on it.

The benches measure the node as it is deployed, a separate ``kizuna serve`` process on a loopback
port, so that the HTTP stack, the worker processes and the store's driver are all in the figures.
The server is always stopped and the scratch files removed, whatever happens; if the bench fails,
the tail of the server's log is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from _pg import Cluster


@dataclass(frozen=True)
class Store:
    """The store a bench runs on: the URL ``kizuna serve --store`` takes, and how to describe it."""

    url: str
    description: str
    cluster: Cluster | None = None  # the throwaway PostgreSQL cluster, if the bench started one

    @property
    def postgres(self) -> bool:
        return self.url.startswith("postgresql")

    @property
    def sqlite_path(self) -> Path | None:
        return Path(self.url.removeprefix("sqlite:///")) if self.url.startswith("sqlite:///") else None

    def analyze(self) -> None:
        """Planner statistics as autovacuum leaves them about a minute after a bulk load.
        PostgreSQL plans a freshly loaded table blind (a q range then probes the wrong index,
        60x slower); measuring before autovacuum runs would time that minute, not the node.
        SQLite's store picks its own driving index and needs none."""
        if self.postgres:
            import asyncpg

            async def run() -> None:
                conn = await asyncpg.connect(self.url)
                try:
                    await conn.execute("ANALYZE")
                finally:
                    await conn.close()

            asyncio.run(run())


def add_store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        default="sqlite",
        help="sqlite (a fresh temp file, the default), postgresql (a throwaway PostgreSQL + PostGIS "
        "cluster started by the bench) or postgresql://user@host:port/db (your own, empty database)",
    )


def add_stores_option(parser: argparse.ArgumentParser) -> None:
    """``--store``, repeatable, for benches that measure several stores in one run; read the
    specs with :func:`stores_of`."""
    parser.add_argument(
        "--store",
        action="append",
        help="sqlite (a fresh temp file), postgresql (a throwaway cluster) or postgresql://...; "
        "repeat for several (default: sqlite)",
    )


def stores_of(args: argparse.Namespace) -> list[str]:
    return args.store or ["sqlite"]


@contextmanager
def scratch(prefix: str, keep: bool = False) -> Iterator[Path]:
    """A temp dir for the store and the server log, removed at the end unless ``keep``."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


@contextmanager
def backing_store(spec: str, tmp: Path) -> Iterator[Store]:
    """The store ``--store`` names, created fresh (SQLite file, throwaway cluster) and cleaned up."""
    if spec == "sqlite":
        yield Store(f"sqlite:///{tmp}/bench.db", "SQLite file (WAL, synchronous=NORMAL)")
    elif spec == "postgresql":
        cluster = Cluster()
        try:
            url = cluster.start()
            yield Store(
                url,
                f"PostgreSQL {cluster.version} + PostGIS, throwaway cluster on the same host "
                "(fsync on, synchronous_commit on, shared_buffers 512MB)",
                cluster,
            )
        finally:
            cluster.stop()
    elif spec.startswith(("postgresql://", "postgres://")):
        parts = urlsplit(spec)
        host = parts.hostname or "localhost"
        yield Store(spec, f"PostgreSQL at {host}:{parts.port or 5432}{parts.path} (yours)")
    else:
        raise SystemExit(f"bench: --store must be sqlite, postgresql or postgresql://...: {spec!r}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    port: int,
    store: str,
    workers: int,
    log: Path,
    extra: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    script = Path(sys.executable).with_name("kizuna")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "kizuna"]
    command += ["serve", "--host", "127.0.0.1", "--port", str(port), "--store", store]
    command += ["--workers", str(workers), "--log-level", "warning", *extra]
    environment = None if env is None else {**os.environ, **env}
    with log.open("ab") as stderr:
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, env=environment)


def wait_healthy(port: int, server: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"bench: the server exited with status {server.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"bench: no healthy server on port {port} after {timeout:.0f} s")


def stop_server(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@contextmanager
def serve_process(
    store: Store,
    tmp: Path,
    workers: int = 1,
    extra: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """:func:`serve`, with the server's process too (a bench that reads its memory)."""
    port = free_port()
    log = tmp / "server.log"
    server = start_server(port, store.url, workers, log, extra, env)
    try:
        wait_healthy(port, server)
        yield port, server
    except BaseException:
        sys.stderr.write("bench: server log:\n" + log.read_text(errors="replace")[-3000:])
        raise
    finally:
        stop_server(server)


@contextmanager
def serve(
    store: Store,
    tmp: Path,
    workers: int = 1,
    extra: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> Iterator[int]:
    """A healthy ``kizuna serve --workers N [extra flags]`` on ``store``, with ``env`` added to
    its environment; its port. Stopped on the way out."""
    with serve_process(store, tmp, workers, extra, env) as (port, _):
        yield port


REPOSITORY = Path(__file__).resolve().parent.parent


def export(revision: str, into: Path) -> Path:
    """The source tree of ``revision``, for ``PYTHONPATH``."""
    into.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPOSITORY), "archive", revision, "src"], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into / "src"


def machine() -> str:
    """The part of every report that says what the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    load = os.getloadavg()[0]
    return f"{os.cpu_count()} CPU cores shared by client and server ({cpu}), load average {load:.1f}"
