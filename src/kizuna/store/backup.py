"""Backups of a store while its node serves, and restores into an empty one (docs/operations.md).

SQLite: the online backup API copies the file page by page under one read transaction, so the
copy is the database as of one commit, whatever the node writes meanwhile (WAL readers never
block the writer). PostgreSQL: ``pg_dump`` of Kizuna's schemas (``kizuna`` and one
``tenant_*`` per tenant), which also reads one snapshot; PostGIS stays an extension of the
target database, created there before ``pg_restore``. A restore refuses a store that already
holds a node's data: merging two nodes' data is not a restore.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from pathlib import Path

from kizuna.files import create_private
from kizuna.store.postgres.store import pool_options
from kizuna.store.sqlite.store import sqlite_path

SCHEMAS = ("kizuna", "tenant_*")
# Data a node wrote: tenants besides the default, entities or documents in the default one.
OPENED = "SELECT to_regclass('kizuna.tenants') IS NOT NULL"
HOLDS_DATA = """SELECT EXISTS (SELECT 1 FROM kizuna.tenants WHERE name <> '')
    OR EXISTS (SELECT 1 FROM tenant_default.entities)
    OR EXISTS (SELECT 1 FROM tenant_default.documents)"""


def backup(url: str, file: Path) -> None:
    """Write a consistent copy of the store at ``url`` to ``file`` (replaced if it exists)."""
    if url.startswith("sqlite:"):
        source = sqlite3.connect(f"file:{_sqlite_path(url)}?mode=ro", uri=True)
        try:
            create_private(str(file))
            target = sqlite3.connect(file)
            try:
                source.backup(target)
            finally:
                target.close()
        finally:
            source.close()
        return
    args = [f"--schema={schema}" for schema in SCHEMAS]
    _run(["pg_dump", "--format=custom", "--no-owner", *args, f"--file={file}", _dsn(url)])


def restore(url: str, file: Path) -> None:
    """Load a backup into the store at ``url``, which must hold no node's data yet."""
    if url.startswith("sqlite:"):
        path = Path(_sqlite_path(url))
        if path.exists() and path.stat().st_size > 0:
            raise SystemExit(f"kizuna restore: {path} exists; restore into a new file")
        path.parent.mkdir(parents=True, exist_ok=True)
        create_private(str(path))
        source = sqlite3.connect(f"file:{file}?mode=ro", uri=True)
        try:
            target = sqlite3.connect(path)
            try:
                source.backup(target)
                target.execute("PRAGMA journal_mode=WAL")
            finally:
                target.close()
        finally:
            source.close()
        return
    dsn = _dsn(url)
    if _query(dsn, OPENED) == "t" and _query(dsn, HOLDS_DATA) != "f":
        raise SystemExit("kizuna restore: the database holds a node's data; restore into an empty one")
    _run(["psql", "--no-psqlrc", "-qc", "CREATE EXTENSION IF NOT EXISTS postgis", dsn])
    # --clean: a database a node has only opened holds Kizuna's empty tables; they are replaced.
    command = ["pg_restore", "--no-owner", "--clean", "--if-exists", "--exit-on-error"]
    _run([*command, f"--dbname={dsn}", str(file)])


def _sqlite_path(url: str) -> str:
    path = sqlite_path(url)
    if path == ":memory:":
        raise SystemExit("kizuna: an in-memory store has nothing to back up or restore into")
    return path


def _dsn(url: str) -> str:
    return pool_options(url)[0]


def _query(dsn: str, sql: str) -> str:
    return _run(["psql", "--no-psqlrc", "-tAc", sql, dsn]).strip()


def _run(command: list[str]) -> str:
    if shutil.which(command[0]) is None:
        raise SystemExit(f"kizuna: {command[0]} is needed (Debian: postgresql-client)")
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"kizuna: {command[0]} failed: {done.stderr.strip()[-500:]}")
    return done.stdout
