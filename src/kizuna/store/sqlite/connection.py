"""The SQLite file and its connections: the pragmas every statement relies on, the
writer connection with its lock, the reader connections of :meth:`SqliteBase._read`, and the
change feed table that the other processes on the file poll.

The concerns of the store (:mod:`.entities`, :mod:`.history`, :mod:`.outbox`,
:mod:`.documents`) are mixins on :class:`SqliteBase`, and the parts of a write transaction
mixins on :class:`SqliteTransaction`; :mod:`.store` assembles them.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sized
from contextlib import asynccontextmanager
from typing import Any

from kizuna.patterns import search
from kizuna.store import ChangeListener
from kizuna.store.common import PendingChange, TemporalTouch

log = logging.getLogger("kizuna.store")
_PAGE = 500
CHANGE_POLL = 0.5  # seconds between reads of the change feed (see SqliteStore.listen)
CHANGE_KEEP = 300.0  # seconds a change stays in the feed for processes that poll late


def marks(values: Sized | int) -> str:
    """``?, ?, ...``: one placeholder per value (or ``values`` of them), for ``IN (...)``."""
    return ",".join("?" * (values if isinstance(values, int) else len(values)))


def _regexp(pattern: str, value: str | None) -> bool:
    return value is not None and search(pattern, value)


class SqliteBase:
    """What every concern of the store shares: the path, the writer connection (opened by
    :meth:`SqliteStore.open`), the write lock that serialises this process's transactions, and
    the reader connections that long reads run on in a worker thread."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._readers: list[sqlite3.Connection] = []  # idle reader connections (see _read)
        self._write_lock = asyncio.Lock()
        self._listeners: list[ChangeListener] = []
        self._follower: asyncio.Task[None] | None = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("store is not open")
        return self._db

    async def _read(self, read: Callable[..., Any], *args: Any) -> Any:
        """``read(connection, *args)`` in a worker thread, on a reader connection of its own.

        SQLite's calls block the thread that makes them, and a query that walks 20,000 rows
        (a regular expression or a q on each) held the event loop, and every other request,
        for as long. A reader connection sees every committed write (WAL); a file store opens
        readers as reads overlap and keeps them for the next. ``:memory:`` has no second
        connection to the same database, so there the read runs on the loop."""
        if self.path == ":memory:":
            return read(self.db, *args)
        reader = self._readers.pop() if self._readers else _connect(self.path)
        try:
            return await asyncio.to_thread(read, reader, *args)
        finally:
            if self._db is None:
                reader.close()
            else:
                self._readers.append(reader)

    @asynccontextmanager
    async def _immediate(self, tenant: str = "") -> AsyncIterator[sqlite3.Connection]:
        """The writer connection inside ``BEGIN IMMEDIATE`` (the file's write lock, so atomic
        across processes too), with ``tenant`` created if it is new; commits on a clean exit,
        rolls back on any exception."""
        async with self._write_lock:
            db = self.db
            db.execute("BEGIN IMMEDIATE")
            try:
                if tenant:
                    db.execute("INSERT OR IGNORE INTO tenants (name) VALUES (?)", (tenant,))
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")


class SqliteTransaction:
    """The state of one write transaction (see :meth:`SqliteStore.write`): the connection, inside
    its ``BEGIN IMMEDIATE``, and the tenant written to. The concerns add their methods as mixins."""

    __slots__ = ("changes", "db", "tenant", "touched")

    def __init__(self, db: sqlite3.Connection, tenant: str) -> None:
        self.db = db
        self.tenant = tenant
        self.touched: set[TemporalTouch] = set()  # see common.TouchesOnce
        self.changes: list[PendingChange] = []  # see ChangeWrites.log_changes


WRITER_CACHE_KIB = 32 * 1024  # the writer's page cache (SQLite's default is 2 MB)


def _connect(path: str, *, writer: bool = False) -> sqlite3.Connection:
    """A connection with what every statement of this store relies on.

    Readers read through a memory map: a query that visits thousands of rows spends most of its
    time in read() calls without it. The writer does not: every page a write visits through the
    map stays resident in the node's process (its RSS) until the kernel needs the memory, and a
    bulk load visits every page of every index, so 1,000,000 street lights left 461 MB resident
    after their import. Its statements touch a few pages each, which a page cache of
    ``WRITER_CACHE_KIB`` (bounded, and large enough for the upper levels of the index trees a
    batch of a thousand entities descends) serves as well."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA busy_timeout=10000")
    if writer:
        db.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")
    else:
        db.execute("PRAGMA mmap_size=1073741824")  # address space; pages stay in the OS page cache
    db.create_function("regexp", 2, _regexp, deterministic=True)
    return db


def _announce(db: sqlite3.Connection, topic: str, key: str) -> None:
    """Append to the change feed in the caller's transaction, forgetting what everyone has read."""
    now = time.time()
    db.execute("DELETE FROM changes WHERE at < ?", (now - CHANGE_KEEP,))
    db.execute("INSERT INTO changes (topic, key, at) VALUES (?, ?, ?)", (topic, key, now))
