"""The embedded store assembled: :class:`SqliteStore` is the connection base with one mixin per
concern, and :class:`SqliteWrite` the transaction with the write half of each (see the package
docstring for the design)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from kizuna.files import create_private
from kizuna.store import ChangeListener
from kizuna.store.common import stop_task, tell
from kizuna.store.sqlite.changes import ChangeWrites, SqliteChanges
from kizuna.store.sqlite.connection import (
    CHANGE_POLL,
    SqliteBase,
    _announce,
    _connect,
    log,
)
from kizuna.store.sqlite.documents import DocumentWrites, SqliteDocuments
from kizuna.store.sqlite.entities import EntityWrites, SqliteEntities
from kizuna.store.sqlite.history import HistoryWrites, SqliteHistory
from kizuna.store.sqlite.outbox import OutboxWrites, SqliteOutbox
from kizuna.store.sqlite.schema import migrate, mismatch
from kizuna.store.sqlite.vitals import SqliteVitals


def sqlite_path(url: str) -> str:
    """The file of sqlite:///relative.db or sqlite:////absolute.db; sqlite:///:memory: is none."""
    path = url.removeprefix("sqlite:").removeprefix("//")
    if path.startswith("/") and not path.startswith("//"):
        return path[1:] or ":memory:"
    return path.removeprefix("/")


class SqliteWrite(EntityWrites, HistoryWrites, OutboxWrites, ChangeWrites, DocumentWrites):
    """One write transaction; every call runs inside the BEGIN IMMEDIATE of :meth:`SqliteStore.write`."""

    __slots__ = ()


class SqliteStore(
    SqliteEntities, SqliteHistory, SqliteOutbox, SqliteChanges, SqliteDocuments, SqliteVitals, SqliteBase
):
    """One SQLite file in WAL mode; see the package docstring."""

    @classmethod
    def from_url(cls, url: str) -> SqliteStore:
        return cls(sqlite_path(url))

    async def open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            create_private(self.path)
        db = _connect(self.path, writer=True)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        try:
            migrate(db, self.path)
        except BaseException:
            db.close()
            raise
        self._db = db
        seen = db.execute("SELECT max(seq) FROM changes").fetchone()[0] or 0
        logged = db.execute("SELECT max(seq) FROM entity_changes").fetchone()[0] or 0
        queued = db.execute("SELECT max(seq) FROM notification_changes").fetchone()[0] or 0
        self._follower = asyncio.create_task(self._follow(seen, logged, queued), name="kizuna-sqlite-changes")

    async def schema_mismatch(self) -> str | None:
        return mismatch(self.db)

    def listen(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    async def announce(self, topic: str, key: str) -> None:
        async with self._immediate() as db:
            _announce(db, topic, key)

    async def _follow(self, seen: int, logged: int, queued: int) -> None:
        """Poll the ``changes`` table that other processes on this file (``--workers``) append to
        in their commits. Sequence numbers are gap-free (AUTOINCREMENT, rolled back with their
        transaction), so a gap means pruned rows were missed: then everything may have changed.
        The entity change log is its own feed: the tenants it grew in are told ``entities``
        (this process's own writes were told at their commit, and are told again). So is the
        outbox: ``outbox`` when changes were queued (seqs only grow, AUTOINCREMENT), which wakes
        a delivery process (``--notify-delivery process``) without a feed row per write."""
        while True:
            await asyncio.sleep(CHANGE_POLL)
            try:
                rows = self.db.execute(
                    "SELECT seq, topic, key FROM changes WHERE seq > ? ORDER BY seq", (seen,)
                ).fetchall()
                grown = self.db.execute(
                    "SELECT tenant, max(seq) FROM entity_changes WHERE seq > ? GROUP BY tenant", (logged,)
                ).fetchall()
                top = self.db.execute("SELECT max(seq) FROM notification_changes").fetchone()[0] or 0
            except sqlite3.Error:
                log.exception("cannot read the change feed")
                continue
            if rows and rows[0][0] != seen + 1:
                tell(self._listeners, "*", "")
            for seq, topic, key in rows:
                tell(self._listeners, topic, key)
                seen = seq
            for tenant, last in grown:
                tell(self._listeners, "entities", tenant)
                logged = max(logged, last)
            if top > queued:
                tell(self._listeners, "outbox", "")
                queued = top

    async def close(self) -> None:
        await stop_task(self._follower)
        self._follower = None
        if self._db is not None:
            self._db.close()
            self._db = None
        while self._readers:
            self._readers.pop().close()

    async def has_tenant(self, tenant: str) -> bool:
        if tenant == "":
            return True
        return self.db.execute("SELECT 1 FROM tenants WHERE name = ?", (tenant,)).fetchone() is not None

    async def tenants(self) -> list[str]:
        return [row[0] for row in self.db.execute("SELECT name FROM tenants ORDER BY name")]

    # -- writes ----------------------------------------------------------------------------------

    @asynccontextmanager
    async def write(self, tenant: str) -> AsyncIterator[SqliteWrite]:
        async with self._timed(self._immediate(tenant)) as db:
            tx = SqliteWrite(db, tenant)
            yield tx
            tx.log_changes()
        if tx.changes:
            tell(self._listeners, "entities", tenant)
