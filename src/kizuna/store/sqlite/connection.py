"""The SQLite file and its connections: the schema, the pragmas every statement relies on, the
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

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS tenants (
    name TEXT PRIMARY KEY
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS entities (
    pk INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    doc BLOB NOT NULL,
    UNIQUE (tenant, id)
);
CREATE TABLE IF NOT EXISTS entity_types (
    tenant TEXT NOT NULL,
    type TEXT NOT NULL,
    pk INTEGER NOT NULL,
    owner TEXT,
    PRIMARY KEY (tenant, type, pk)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entity_types_by_pk ON entity_types (pk);
CREATE TABLE IF NOT EXISTS attr_values (
    tenant TEXT NOT NULL,
    attribute TEXT NOT NULL,
    kind INTEGER NOT NULL,
    val NOT NULL,
    pk INTEGER NOT NULL,
    inst INTEGER NOT NULL,
    PRIMARY KEY (tenant, attribute, kind, val, pk, inst)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS attr_values_by_pk ON attr_values (pk, attribute, inst);
CREATE TABLE IF NOT EXISTS geo_entries (
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    pk INTEGER NOT NULL,
    geoproperty TEXT NOT NULL,
    shapes BLOB
);
CREATE INDEX IF NOT EXISTS geo_entries_by_pk ON geo_entries (pk);
CREATE VIRTUAL TABLE IF NOT EXISTS geo_rtree USING rtree(id, min_x, max_x, min_y, max_y);
CREATE TABLE IF NOT EXISTS store_indexes (
    name TEXT PRIMARY KEY
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hosted_contexts (
    local_id TEXT PRIMARY KEY,
    document BLOB NOT NULL,
    created_at REAL NOT NULL,
    owner TEXT,
    tenant TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS subscriptions (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    doc BLOB NOT NULL,
    PRIMARY KEY (tenant, id)
);
CREATE TABLE IF NOT EXISTS documents (
    kind TEXT NOT NULL,
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    doc BLOB NOT NULL,
    PRIMARY KEY (kind, tenant, id)
);
CREATE TABLE IF NOT EXISTS temporal_entities (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    types TEXT NOT NULL,
    scope TEXT,
    created_at TEXT NOT NULL,
    modified_at TEXT NOT NULL,
    PRIMARY KEY (tenant, id)
);
CREATE TABLE IF NOT EXISTS attribute_history (
    pk INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    attribute TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    dataset_id TEXT,
    observed_at REAL,
    created_at REAL NOT NULL,
    modified_at REAL NOT NULL,
    deleted_at REAL,
    value_number REAL,
    value_key TEXT,
    doc BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS attribute_history_observed
    ON attribute_history (tenant, entity_id, attribute, observed_at);
CREATE INDEX IF NOT EXISTS attribute_history_created
    ON attribute_history (tenant, entity_id, attribute, created_at);
CREATE UNIQUE INDEX IF NOT EXISTS attribute_history_instance ON attribute_history (tenant, instance_id);
CREATE TABLE IF NOT EXISTS subscription_versions (
    tenant TEXT PRIMARY KEY,
    version INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS notification_outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    trigger TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS notification_outbox_by_subscription
    ON notification_outbox (tenant, subscription_id, seq);
CREATE TABLE IF NOT EXISTS notification_leases (
    tenant TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    owner TEXT NOT NULL,
    until REAL NOT NULL,
    PRIMARY KEY (tenant, subscription_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    key TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_trail (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    subject TEXT NOT NULL,
    tenant TEXT NOT NULL,
    operation TEXT NOT NULL,
    target TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_trail_by_subject ON audit_trail (subject, at);
CREATE INDEX IF NOT EXISTS audit_trail_by_time ON audit_trail (at);
CREATE TABLE IF NOT EXISTS notification_status (
    tenant TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    doc BLOB NOT NULL,
    PRIMARY KEY (tenant, subscription_id)
) WITHOUT ROWID;
"""

# -- the entity change log (kizuna.store.ChangeLog): every entity write with its commit's sequence.
# Writers are serialised (BEGIN IMMEDIATE), so AUTOINCREMENT numbers changes in commit order,
# one sequence over all tenants. ``doc`` and ``owner`` are kept for deletes only (the entity as
# it was, for the access decision); the horizon is the newest seq pruned per tenant.
ENTITY_CHANGES = """
CREATE TABLE IF NOT EXISTS entity_changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    op TEXT NOT NULL,
    at REAL NOT NULL,
    types BLOB NOT NULL,
    doc BLOB,
    owner TEXT
);
CREATE INDEX IF NOT EXISTS entity_changes_by_tenant ON entity_changes (tenant, seq);
CREATE INDEX IF NOT EXISTS entity_changes_by_time ON entity_changes (at);
CREATE INDEX IF NOT EXISTS entity_changes_deletes
    ON entity_changes (tenant, entity_id, seq) WHERE op = 'delete';
CREATE TABLE IF NOT EXISTS entity_change_horizon (
    tenant TEXT PRIMARY KEY,
    pruned INTEGER NOT NULL
) WITHOUT ROWID;
"""

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
        self.touched: set[TemporalTouch] = set()  # see HistoryWrites.append_history
        self.changes: list[PendingChange] = []  # see ChangeWrites.log_changes


def _connect(path: str) -> sqlite3.Connection:
    """A connection with what every statement of this store relies on."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA busy_timeout=10000")
    # Reads through a memory map: a query that visits thousands of rows spends most of its time
    # in read() calls without it (address space only; pages stay in the OS page cache).
    db.execute("PRAGMA mmap_size=1073741824")
    db.create_function("regexp", 2, _regexp, deterministic=True)
    return db


def _announce(db: sqlite3.Connection, topic: str, key: str) -> None:
    """Append to the change feed in the caller's transaction, forgetting what everyone has read."""
    now = time.time()
    db.execute("DELETE FROM changes WHERE at < ?", (now - CHANGE_KEEP,))
    db.execute("INSERT INTO changes (topic, key, at) VALUES (?, ?, ?)", (topic, key, now))
